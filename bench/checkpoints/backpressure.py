#!/usr/bin/env python3
"""Benchmark 4: aligned vs. unaligned checkpoints under backpressure.

A fast source feeds a slow operator: the aggregation below evaluates a slow
expression per row (pg_sleep(SLEEP_S) if weir has pg_sleep, else an
expensive regexp over CPU_REPEAT md5 digests), so the channels in front of
it stay full while the table scan has a backlog:

  SELECT k, count(*) AS c, sum(v) AS s, sum(<slow per-row expression>) AS z
  FROM t GROUP BY k          -- parallelism 2, checkpoint_interval INTERVAL

Per mode, on a fresh server: CREATE the view over an empty table, then
insert INSERT_RATE rows/s (more than the slow operator can take, so the
backlog grows in the table log and the channels stay full) for MEASURE_SECS
(no FLUSH: FLUSH always takes an aligned checkpoint); then read the periodic
checkpoints from system.checkpoints and kill the server.
SOURCE=backfill instead loads ROWS rows before CREATE and inserts nothing
(the initial snapshot is queued in the source's output at once, so the
first aligned checkpoint waits for the whole backfill and unaligned ones
persist all of the remaining backfill as in-flight data).
Modes: aligned, unaligned, and aligned_timeout (aligned with
aligned_checkpoint_timeout = ALIGNED_TIMEOUT, switching to unaligned).
Every second, SELECT 1 is timed on an open connection (session latency).

WORKER_THREADS, if > 0, is passed to the server as TOKIO_WORKER_THREADS
(default 0: weir's default, one async worker per core). Operators run on
those workers and do not yield while they have input: with SOURCE=backfill
two slow aggregation subtasks occupy both workers of this 2-core machine,
and the checkpoint timer, the sources and client sessions stall until the
backlog is gone (see README); WORKER_THREADS=4 avoids that.

Env (defaults): SOURCE=stream INSERT_RATE=20000 ROWS=600000 (backfill only)
KEYS=10000 MODES="aligned unaligned aligned_timeout"
MEASURE_SECS=30 INTERVAL=1s ALIGNED_TIMEOUT=1s SLOW=auto (auto|sleep|cpu)
SLEEP_S=0.0002 CPU_REPEAT=10 PARALLELISM=2 CHECKPOINT_TIMEOUT=10min WARMUP_SECS=3
WORKER_THREADS=0 LOAD_BATCH=100000
"""

import os
import sys
import time

import psycopg

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import weirbench as wb  # noqa: E402

P = {
    "SOURCE": wb.env_str("SOURCE", "stream"),
    "INSERT_RATE": wb.env_int("INSERT_RATE", 20_000),
    "ROWS": wb.env_int("ROWS", 600_000),
    "KEYS": wb.env_int("KEYS", 10_000),
    "MODES": wb.env_str("MODES", "aligned unaligned aligned_timeout"),
    "MEASURE_SECS": wb.env_float("MEASURE_SECS", 30),
    "INTERVAL": wb.env_str("INTERVAL", "1s"),
    "ALIGNED_TIMEOUT": wb.env_str("ALIGNED_TIMEOUT", "1s"),
    "SLOW": wb.env_str("SLOW", "auto"),
    "SLEEP_S": wb.env_float("SLEEP_S", 0.0002),
    "CPU_REPEAT": wb.env_int("CPU_REPEAT", 10),
    "WARMUP_SECS": wb.env_float("WARMUP_SECS", 3),
    "PARALLELISM": wb.env_int("PARALLELISM", 2),
    "CHECKPOINT_TIMEOUT": wb.env_str("CHECKPOINT_TIMEOUT", "10min"),
    "LOAD_BATCH": wb.env_int("LOAD_BATCH", 100_000),
    "WORKER_THREADS": wb.env_int("WORKER_THREADS", 0),
}


def sleep_expr(var, secs):
    # "v * 0.0" keeps the argument a column (DataFusion folds "0 * v" for a
    # bigint v to a constant, evaluated once).
    return f"CASE WHEN pg_sleep(CAST({var} AS double precision) * 0.0 + {secs}) IS NULL THEN 1 ELSE 0 END"


def cpu_expr(var):
    return (f"length(regexp_replace(repeat(md5(CAST({var} AS text)), {P['CPU_REPEAT']}), "
            "'(a|b)+c', 'x', 'g'))")


def choose_slow(conn):
    """Returns (kind, expression over v, note)."""
    want = P["SLOW"]
    if want in ("auto", "sleep"):
        try:
            conn.execute("SELECT pg_sleep(0.001)")
            # Does it sleep per row when given a column (not once per batch)?
            n, s = 50, 0.002
            t0 = time.monotonic()
            conn.execute(f"SELECT sum({sleep_expr('g', s)}) FROM generate_series(1, {n}) AS s(g)").fetchone()
            took = time.monotonic() - t0
            if took >= 0.5 * n * s:
                return "sleep", sleep_expr("v", P["SLEEP_S"]), f"pg_sleep({P['SLEEP_S']}) per row"
            note = f"pg_sleep exists but {n} rows x {s}s took {took:.3f}s (not per row)"
        except psycopg.Error as e:
            note = f"pg_sleep not available ({str(e).splitlines()[0]})"
        if want == "sleep":
            sys.exit(f"SLOW=sleep: {note}")
        return "cpu", cpu_expr("v"), note + f"; using regexp over md5 x {P['CPU_REPEAT']} per row"
    return "cpu", cpu_expr("v"), f"regexp over md5 x {P['CPU_REPEAT']} per row"


def mode_options(mode):
    if mode == "aligned":
        return "checkpoint_mode = 'aligned'"
    if mode == "unaligned":
        return "checkpoint_mode = 'unaligned'"
    if mode == "aligned_timeout":
        return f"checkpoint_mode = 'aligned', aligned_checkpoint_timeout = '{P['ALIGNED_TIMEOUT']}'"
    sys.exit(f"unknown mode {mode} (aligned | unaligned | aligned_timeout)")


def run_one(mode):
    extra = {"TOKIO_WORKER_THREADS": str(P["WORKER_THREADS"])} if P["WORKER_THREADS"] > 0 else {}
    cols = f"g % {P['KEYS']} AS k, g AS v"
    with wb.Server(f"backpressure-{mode}", extra_env=extra) as srv:
        srv.launch()
        with srv.connect() as c, srv.connect() as probe:
            kind, expr, note = choose_slow(c)
            c.execute("CREATE TABLE t (k bigint, v bigint)")
            loaded = 0
            if P["SOURCE"] == "backfill":
                wb.load_rows(c, "t", cols, P["ROWS"], P["LOAD_BATCH"])
                loaded = P["ROWS"]
            sql = (f"CREATE MATERIALIZED VIEW bp WITH (parallelism = {P['PARALLELISM']}, "
                   f"checkpoint_interval = '{P['INTERVAL']}', checkpoint_timeout = '{P['CHECKPOINT_TIMEOUT']}', "
                   f"{mode_options(mode)}) AS "
                   f"SELECT k, count(*) AS c, sum(v) AS s, sum({expr}) AS z FROM t GROUP BY k")
            t0 = time.monotonic()
            c.execute(sql)
            created = c.execute("SELECT now()").fetchone()[0]
            lat = []
            next_probe = t0 + 1
            tick = 0.25
            rate = P["INSERT_RATE"] if P["SOURCE"] == "stream" else 0
            g = loaded + 1
            while time.monotonic() - t0 < P["MEASURE_SECS"]:
                now = time.monotonic()
                if rate > 0:
                    due = int((now - t0) * rate) + loaded - (g - 1)
                    if due > 0:
                        c.execute(f"INSERT INTO t SELECT {cols} FROM generate_series({g}, {g + due - 1}) AS s(g)")
                        g += due
                if now >= next_probe:
                    s0 = time.monotonic()
                    probe.execute("SELECT 1")
                    lat.append(time.monotonic() - s0)
                    next_probe = time.monotonic() + 1
                time.sleep(max(0.0, tick - (time.monotonic() - now)))
            elapsed = time.monotonic() - t0
            chks = wb.checkpoints(c, "bp")
            now_ts = c.execute("SELECT now()").fetchone()[0]
            committed = c.execute("SELECT coalesce(sum(c), 0) FROM bp").fetchone()[0]
        srv.kill()  # do not wait for the backlog
    return {"mode": mode, "kind": kind, "note": note, "sql": sql, "chks": chks, "now": now_ts, "created": created,
            "committed": int(committed), "input": g - 1, "loaded": loaded, "elapsed": elapsed, "lat": lat}


def summarize(r):
    chks = r["chks"]
    warm = [x for x in chks if (x["triggered_at"] - r["created"]).total_seconds() >= P["WARMUP_SECS"]]
    done = [x for x in warm if x["status"] == "completed"]
    failed = [x for x in warm if x["status"] in ("failed", "expired")]
    running = [x for x in chks if x["status"] == "in_progress"]
    col = lambda k: [x[k] for x in done]  # noqa: E731
    mx = lambda xs: max(xs) if xs else None  # noqa: E731
    open_s = None
    if running:
        open_s = (r["now"] - running[0]["triggered_at"]).total_seconds()
    return [
        r["mode"], len(done), len(failed), f"{open_s:.1f}" if open_s is not None else "-",
        sum(1 for x in done if x["mode"] == "unaligned"),
        sum(1 for x in done if x["timed_out_to_unaligned"]),
        wb.fmt_num(wb.median(col("duration_ms"))), wb.fmt_num(mx(col("duration_ms"))),
        wb.fmt_num(wb.median(col("alignment_ms"))), wb.fmt_num(mx(col("alignment_ms"))),
        wb.fmt_bytes(wb.median(col("persisted_in_flight_bytes"))), wb.fmt_bytes(mx(col("persisted_in_flight_bytes"))),
        wb.fmt_num((r["input"] - r["loaded"]) / r["elapsed"]) if P["SOURCE"] == "stream" else "-",
        wb.fmt_num(r["committed"] / r["elapsed"]),
        wb.fmt_num(r["input"] - r["committed"]),
        f"{1000 * wb.median(r['lat']):.0f}/{1000 * max(r['lat']):.0f}" if r["lat"] else "-",
    ]


def main():
    wb.header("Benchmark 4: aligned vs unaligned checkpoints under backpressure", P)
    results = []
    for mode in P["MODES"].split():
        print(f"  mode={mode}: running {P['MEASURE_SECS']:.0f}s ...", flush=True)
        results.append(wb.with_retry(lambda: run_one(mode), mode))
    print()
    print(f"slow operator: {results[0]['note']}")
    print("server async worker threads: " + (f"{P['WORKER_THREADS']} (TOKIO_WORKER_THREADS)" if P["WORKER_THREADS"] > 0
                                             else f"weir default ({os.cpu_count()})"))
    print(f"view ({results[0]['mode']}): {results[0]['sql']}")
    if P["SOURCE"] == "stream":
        print(f"input: t empty at CREATE, then inserts at {P['INSERT_RATE']:,} rows/s for {P['MEASURE_SECS']:.0f}s "
              "(more than the slow operator takes)")
    else:
        print(f"input: {P['ROWS']:,} rows in t when the view is created (backfill), no inserts")
    print(f"periodic checkpoints every {P['INTERVAL']} during {P['MEASURE_SECS']:.0f}s; statistics over the completed ones "
          f"triggered at least {P['WARMUP_SECS']:.0f}s after CREATE;\n"
          "'open chk age' = how long the checkpoint in progress at the end had been running")
    print()
    wb.print_table(
        ["mode", "completed", "failed/expired", "open chk age s", "unaligned", "timed_out_to_unaligned",
         "duration ms (median)", "max", "alignment ms (median)", "max",
         "in-flight bytes (median)", "max", "inserted rows/s", "committed rows/s", "backlog at end (rows)",
         "SELECT 1 ms median/max"],
        [summarize(r) for r in results])
    if os.environ.get("VERBOSE") == "1":
        for r in results:
            print(f"\n{r['mode']}:")
            wb.print_table(["id", "mode", "timed_out", "status", "duration_ms", "alignment_ms", "in_flight", "state"],
                           [[x["checkpoint_id"], x["mode"], x["timed_out_to_unaligned"], x["status"],
                             x["duration_ms"], x["alignment_ms"], x["persisted_in_flight_bytes"],
                             x["state_bytes"]] for x in r["chks"]])
    wb.footer(__file__, P)


if __name__ == "__main__":
    main()
