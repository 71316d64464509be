#!/usr/bin/env python3
"""Runs one Nexmark query on Weir over the shared harness's CSV files.

Starts a weir server (WEIR_BIN, default the release build) on a fresh data
dir, creates the sources person / auction / bid over DATA (one file per
table, or gen.sh's SPLIT=K part-file directories) with the Nexmark 4 s
watermark, and runs the query's SELECT: the part after `INSERT INTO
nexmark_qN` of queries/flink/qN.sql, looked up in this project's
bench/nexmark/queries/flink (q9, q14-q22) and then in the shared
harness's (the others). Flink's `quoted` identifiers become "quoted".

Queries with window table functions get EMIT ON WINDOW CLOSE, as Flink's
window aggregations emit each window once.

- bench mode: `CREATE STREAMING QUERY ... WITH (connector = 'blackhole')`,
  timed from CREATE until every subtask FINISHED (the end of the files
  ends the stream);
- result mode (--result FILE): a materialized view; when it has finished,
  FLUSH and write its rows, normalised and sorted as compare.py expects.

With --generator --events N (instead of --data) the sources are Weir's
built-in nexmark generator (`connector = 'nexmark'`, 'nexmark.event.num' =
N): the same rows as gen.sh's files for N events, made in the source
subtasks; the end of the N events ends the stream.

Prints one line for run_flink.sh's RUNNER protocol:
  engine=weir query=qN events=N par=P exec_s=X status=ok peak_rss_mb=M
"""

import argparse
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "bench", "checkpoints"))
import weirbench as wb  # noqa: E402

SHARED = os.environ.get("WEIR_SHARED_BENCH", os.path.join(ROOT, "..", "shared", "bench"))
sys.path.insert(0, SHARED)

SOURCES = {
    "person": "id bigint, name text, email_address text, credit_card text, city text, state text, "
              "date_time timestamp, extra text",
    "auction": "id bigint, item_name text, description text, initial_bid bigint, reserve bigint, "
               "date_time timestamp, expires timestamp, seller bigint, category bigint, extra text",
    "bid": "auction bigint, bidder bigint, price bigint, channel text, url text, date_time timestamp, "
           "extra text",
}


def table_path(data, table):
    d = os.path.join(data, table)
    if os.path.isdir(d):
        return d
    return os.path.join(data, f"{table}.csv")


def source_with(args, table):
    """The WITH options of source `table`: the files under --data, or the
    nexmark generator for --events events."""
    if args.generator:
        return (f"connector = 'nexmark', 'nexmark.table.type' = '{table}', "
                f"'nexmark.event.num' = '{args.events}'")
    return f"connector = 'file', path = '{table_path(args.data, table)}', format = 'csv'"


def events_of(data):
    with open(os.path.join(data, "manifest.txt")) as f:
        for line in f:
            if line.startswith("events="):
                return int(line.split("=", 1)[1])
    return 0


SINK_TYPES = {"BIGINT": "bigint", "INT": "int", "STRING": "text", "VARCHAR": "text",
              "DOUBLE": "double precision", "TIMESTAMP(3)": "timestamp", "TIMESTAMP": "timestamp"}


QUERY_DIRS = [os.path.join(HERE, "queries", "flink"), os.path.join(SHARED, "queries", "flink")]


def query_file(queries_dirs, query):
    """The first <query>.sql in the directories."""
    for d in queries_dirs:
        f = os.path.join(d, f"{query}.sql")
        if os.path.isfile(f):
            return f
    sys.exit(f"no {query}.sql in {', '.join(queries_dirs)}")


def query_select(queries_dirs, query):
    """The SELECT of queries/flink/<query>.sql (after INSERT INTO ...), its
    columns cast to the types of the sink table it inserts into (as Flink's
    INSERT INTO does: e.g. q4's AVG over BIGINT becomes BIGINT)."""
    text = open(query_file(queries_dirs, query)).read()
    text = "\n".join(line for line in text.splitlines() if not line.strip().startswith("--"))
    # Flink quotes identifiers (`day`) with backticks, SQL with double quotes.
    text = re.sub(r"`([^`]*)`", r'"\1"', text)
    m = re.search(r"INSERT\s+INTO\s+\w+\s+(.*?);?\s*$", text, re.S | re.I)
    if not m:
        sys.exit(f"no INSERT INTO ... SELECT in {query}.sql")
    select = m.group(1).strip().rstrip(";")
    sink = re.search(r"CREATE\s+TABLE\s+\w+\s*\((.*?)\)\s*WITH", text, re.S | re.I)
    if not sink:
        return select
    cols = []
    for line in sink.group(1).split(","):
        parts = line.split()
        if len(parts) >= 2:
            cols.append((parts[0], SINK_TYPES.get(parts[1].upper(), None)))
    if any(t is None for _, t in cols):
        return select
    names = ", ".join(n for n, _ in cols)
    casts = ", ".join(f"CAST({n} AS {t}) AS {n}" for n, t in cols)
    if any(n.startswith('"') for n, _ in cols):
        names = ", ".join(n.strip('"') for n, _ in cols)
        casts = ", ".join(f'CAST("{n.strip(chr(34))}" AS {t}) AS "{n.strip(chr(34))}"' for n, t in cols)
    return f"SELECT {casts} FROM ({select}) AS sink_row({names})"


def with_window_emission(select):
    """Flink's window TVF aggregations emit each window once, when it
    closes; the Weir equivalent is EMIT ON WINDOW CLOSE (same final
    result, no updates in between)."""
    if re.search(r"\b(TUMBLE|HOP|SESSION)\s*\(", select, re.I):
        return select + " EMIT ON WINDOW CLOSE"
    return select


def peak_rss_mb(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def cpu_seconds(pid):
    """User + system CPU time of the process so far (s)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return float("nan")


def wait_finished(c, name, srv, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = c.execute(
            "SELECT status, count(*) FROM system.tasks WHERE query = %s GROUP BY status", (name,)
        ).fetchall()
        states = {s: n for s, n in rows}
        if states and set(states) == {"FINISHED"}:
            return "ok"
        q = c.execute("SELECT status FROM system.streaming_queries WHERE name = %s", (name,)).fetchone()
        if q and q[0] in ("FAILED", "FAILING", "RESTARTING"):
            return "failed"
        if srv.proc.poll() is not None:
            return "failed"
        time.sleep(0.02)
    return "timeout"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="the gen.sh data directory (file sources)")
    ap.add_argument("--generator", action="store_true", help="built-in nexmark sources instead of files")
    ap.add_argument("--events", type=int, help="with --generator: events of all types")
    ap.add_argument("--query", required=True)
    ap.add_argument("--par", type=int, default=2)
    ap.add_argument("--result", metavar="FILE")
    ap.add_argument("--queries-dir", action="append",
                    help="where qN.sql is (may repeat; default: this project's "
                         "bench/nexmark/queries/flink, then the shared harness's)")
    ap.add_argument("--timeout", type=float, default=900)
    ap.add_argument("--with", dest="with_opts", default=os.environ.get("WEIR_QUERY_WITH", ""),
                    help="extra WITH options of the query, e.g. \"state_backend = 'memory'\" "
                         "(default: $WEIR_QUERY_WITH)")
    args = ap.parse_args()
    os.environ.setdefault("WEIR_BIN", os.path.expanduser("~/.cache/weir-target-release/release/weir"))
    select = with_window_emission(query_select(args.queries_dir or QUERY_DIRS, args.query))
    if args.generator != (args.events is not None) or args.generator == bool(args.data):
        ap.error("give --data DIR, or --generator --events N")
    events = args.events if args.generator else events_of(args.data)
    status, exec_s, cpu_s, rows_out = "failed", float("nan"), float("nan"), None
    with wb.Server(f"nexmark-{args.query}", log_level="warn") as srv:
        srv.launch()
        with srv.connect() as c:
            for t, cols in SOURCES.items():
                c.execute(
                    f"CREATE SOURCE {t} ({cols}, WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) "
                    f"WITH ({source_with(args, t)})")
            name = args.query
            extra = f", {args.with_opts}" if args.with_opts else ""
            if args.result:
                ddl = f"CREATE MATERIALIZED VIEW {name} WITH (parallelism = {args.par}{extra}) AS {select}"
            else:
                ddl = (f"CREATE STREAMING QUERY {name} WITH (parallelism = {args.par}, "
                       f"connector = 'blackhole'{extra}) AS {select}")
            t1 = time.monotonic()
            cpu1 = cpu_seconds(srv.proc.pid)
            try:
                c.execute(ddl)
                status = wait_finished(c, name, srv, args.timeout)
            except Exception as e:  # noqa: BLE001 - reported in the status line
                print(f"[weir] {args.query}: {e}", file=sys.stderr)
                status = "failed"
            exec_s = time.monotonic() - t1
            cpu_s = cpu_seconds(srv.proc.pid) - cpu1
            if status != "ok":
                for (msg,) in c.execute(
                        "SELECT message FROM system.exceptions WHERE query = %s LIMIT 3", (name,)).fetchall():
                    print(f"[weir] {args.query}: {msg}", file=sys.stderr)
            if status == "ok" and args.result:
                from compare import canon_line  # the shared harness's normalisation
                c.execute("FLUSH")
                cur = c.execute(f"SELECT * FROM {name}")
                lines = []
                for row in cur:
                    lines.append(canon_line("" if v is None else
                                            (v.strftime("%Y-%m-%d %H:%M:%S.") + "%03d" % (v.microsecond // 1000)
                                             if hasattr(v, "microsecond") else str(v)) for v in row))
                lines.sort()
                with open(args.result, "w") as out:
                    for line in lines:
                        out.write(line + "\n")
                rows_out = len(lines)
        rss = peak_rss_mb(srv.proc.pid)
        srv.stop()
    line = (f"engine=weir query={args.query} events={events} par={args.par} exec_s={exec_s:.3f} "
            f"status={status} peak_rss_mb={rss:.0f} cpu_s={cpu_s:.3f}")
    if rows_out is not None:
        line += f" mode=result rows={rows_out}"
    print(line, flush=True)


if __name__ == "__main__":
    main()
