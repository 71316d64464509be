#!/usr/bin/env python3
"""Restart after kill -9 with a table of N rows and an aggregate
materialized view over it, Weir next to PostgreSQL.

For each N in ROWS_LIST, on a fresh Weir server and a fresh PostgreSQL
server:

    CREATE TABLE pt (id bigint PRIMARY KEY, k bigint, v text);
    COPY pt (id, k, v) FROM STDIN;       -- N rows: id, id % 1000, md5(id)
    CREATE MATERIALIZED VIEW agg AS SELECT k, count(*) AS c, sum(id) AS s FROM pt GROUP BY k;
    FLUSH;                               -- Weir only: its latest checkpoint covers everything

then RESTARTS times, Weir and PostgreSQL one after the other: insert
TAIL_ROWS new rows (default 0), kill -9 the server (Weir: its process;
PostgreSQL: the postmaster and every backend at once), start it again on
the same data dir and time from spawning the process:

  Weir:       accepts = first connection + SELECT 1 succeeded;
              FLUSH done = a FLUSH on that connection returned (every query
              restored from its checkpoint, caught up, and a new checkpoint
              completed); then agg and a point SELECT are checked, and the
              peak RSS of the restarted process (VmHWM) is read;
              breakdown from the server log (bench/checkpoints/recovery.py's):
              last 'table recovered', 'resuming from checkpoint',
              'streaming query restarted', last 'keyed state restored',
              'listening'.
  PostgreSQL: accepts = the same (crash recovery replays the WAL since its
              last checkpoint first: "redo done ... elapsed" from its log);
              agg read = SELECT count(*), sum(c), sum(s) FROM agg returned.
              A PostgreSQL materialized view is not maintained, so there is
              nothing to catch up; REFRESH MATERIALIZED VIEW agg is timed once
              at the end as what recomputing it costs.

The first PostgreSQL restart follows the load without a CHECKPOINT in
between (its WAL is replayed unless a checkpoint was triggered by itself);
later restarts follow the end-of-recovery checkpoint.

All of it ROUNDS times per size (fresh servers, fresh load each round);
the summary gives medians over the rounds of the first restart (right
after the load) and of the later ones.

Env (defaults): ROWS_LIST="1000000 4000000" ROUNDS=3 RESTARTS=3 TAIL_ROWS=0;
PG_OPTS, WEIR_BIN, KEEP_DATA=1.
"""

import importlib.util
import os
import re
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import storagebench as sb  # noqa: E402
from storagebench import wb  # noqa: E402

# bench/checkpoints/recovery.py, for its log breakdown (loaded under another
# name: this directory has no module of that name, but keep it explicit).
_spec = importlib.util.spec_from_file_location(
    "checkpoints_recovery", os.path.join(HERE, "..", "checkpoints", "recovery.py"))
ckpt_recovery = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ckpt_recovery)

P = {
    "ROWS_LIST": wb.env_str("ROWS_LIST", "1000000 4000000"),
    "ROUNDS": wb.env_int("ROUNDS", 3),
    "RESTARTS": wb.env_int("RESTARTS", 3),
    "TAIL_ROWS": wb.env_int("TAIL_ROWS", 0),
}

MV = "CREATE MATERIALIZED VIEW agg AS SELECT k, count(*) AS c, sum(id) AS s FROM pt GROUP BY k"
PG_LOG = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+) UTC \[\d+\] LOG:  (.*)$")


def pg_milestones(pg):
    """Seconds after spawn of PostgreSQL's start-up steps, from its log
    (log_timezone is UTC here): 'automatic recovery in progress' (after
    the fsync of the whole data directory that follows a crash,
    recovery_init_sync_method=fsync), the end of redo, ready."""
    import datetime
    out = {}
    for line in pg.log_since_launch().splitlines():
        m = PG_LOG.match(line)
        if not m:
            continue
        ts = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(
            tzinfo=datetime.timezone.utc).timestamp() - pg.spawn_wall
        msg = m.group(2)
        if "automatic recovery in progress" in msg:
            out["synced"] = ts
        elif msg.startswith("redo done") or msg.startswith("redo is not required"):
            out["redo_end"] = ts
            e = re.search(r"elapsed: ([\d.]+) s", msg)
            out["redo_s"] = float(e.group(1)) if e else 0.0
        elif "ready to accept connections" in msg:
            out["ready"] = ts
    return out


def rocksdb_wal_bytes(w):
    """Bytes of RocksDB write-ahead log files (*.log) in the store (<data>/db):
    what RocksDB replays when it opens after a kill."""
    d = os.path.join(w.data_dir, "db")
    try:
        return sum(os.path.getsize(os.path.join(d, f)) for f in os.listdir(d) if f.endswith(".log"))
    except OSError:
        return None


def agg_check(conn, total_rows):
    got = conn.execute("SELECT count(*), sum(c), sum(s) FROM agg").fetchone()
    got = tuple(int(x) if x is not None else None for x in got)
    want = (min(1000, total_rows), total_rows, total_rows * (total_rows + 1) // 2)
    return got == want, got


def insert_tail(conn, start, n):
    if n:
        conn.execute(f"INSERT INTO pt SELECT g, g % 1000, md5(CAST(g AS text)) "
                     f"FROM generate_series({start}, {start + n - 1}) AS s(g)")


def run_size(rows):
    path = sb.data_file(rows)
    res = {"rows": rows, "weir": [], "pg": []}
    with sb.Weir(f"recovery-{rows}") as w, sb.Postgres(f"recovery-{rows}", sb.pg_settings()) as pg:
        w.launch()
        pg.launch()
        res["pg_settings"] = pg.describe()
        with w.connect() as c:
            c.execute(sb.TABLE_DDL)
            res["weir_copy_s"] = sb.copy_file(c, "pt", path)
            t0 = time.monotonic()
            c.execute(MV)
            c.execute("FLUSH")
            res["weir_build_s"] = time.monotonic() - t0
            ok, got = agg_check(c, rows)
            res["weir_build_ok"] = (ok, got)
            chk = wb.last_completed(c, "agg")
            res["weir_state_bytes"] = chk["state_bytes"] if chk else None
            try:
                cur = c.execute("SELECT * FROM system.tables")
                names = [d.name for d in cur.description]
                res["system_tables"] = (names, cur.fetchall())
            except Exception as e:  # noqa: BLE001 (informational only)
                res["system_tables"] = (["error"], [[repr(e)]])
        res["weir_mem_after_build"] = w.memory()
        with pg.connect() as c:
            c.execute(sb.TABLE_DDL)
            res["pg_copy_s"] = sb.copy_file(c, "pt", path)
            t0 = time.monotonic()
            c.execute(MV)
            res["pg_build_s"] = time.monotonic() - t0
            res["pg_build_ok"] = agg_check(c, rows)

        total = rows
        next_id = rows + 1
        for i in range(P["RESTARTS"]):
            tail = P["TAIL_ROWS"]
            # ---- Weir
            with w.connect() as c:
                insert_tail(c, next_id, tail)
                last = wb.last_completed(c, "agg")
            sb.wait_for_quiet()
            w_total = total + tail
            load = sb.load_note()
            w.kill()
            disk = {"all": w.du(), "checkpoints": w.du("checkpoints"), "db": w.du("db"),
                    "wal": rocksdb_wal_bytes(w)}
            accept_s = w.launch()
            spawn_wall = w.spawn_wall
            t_acc = time.monotonic()
            with w.connect() as c:
                c.execute("FLUSH")
                flush_s = time.monotonic() - t_acc + accept_s
                ok, got = agg_check(c, w_total)
                t0 = time.monotonic()
                one = c.execute("SELECT v FROM pt WHERE id = 777").fetchone()
                point_ms = (time.monotonic() - t0) * 1000
            mem = w.memory()
            res["weir"].append({
                "from": last["checkpoint_id"] if last else None, "accept_s": accept_s, "flush_s": flush_s,
                "ok": ok, "got": got, "point_ms": point_ms, "point_ok": one is not None,
                "hwm": mem.get("VmHWM"), "rss": mem.get("VmRSS"), "disk": disk, "load": load,
                "log": ckpt_recovery.breakdown(w.log_events(spawn_wall)),
            })
            print(f"    restart {i + 1} weir: accepts {accept_s:.2f} s, FLUSH done {flush_s:.2f} s", flush=True)
            # ---- PostgreSQL
            with pg.connect() as c:
                insert_tail(c, next_id, tail)
            sb.wait_for_quiet()
            load = sb.load_note()
            pg.kill()
            accept_s = pg.launch()
            t_acc = time.monotonic()
            with pg.connect() as c:
                # Not maintained: agg still holds the rows at its creation.
                ok, got = agg_check(c, rows)
                agg_s = time.monotonic() - t_acc + accept_s
                t0 = time.monotonic()
                one = c.execute("SELECT v FROM pt WHERE id = 777").fetchone()
                point_ms = (time.monotonic() - t0) * 1000
            res["pg"].append({
                "accept_s": accept_s, "agg_s": agg_s, "ok": ok, "got": got, "point_ms": point_ms,
                "point_ok": one is not None, "load": load, "log": pg_milestones(pg),
            })
            print(f"    restart {i + 1} postgres: accepts {accept_s:.2f} s, agg read {agg_s:.2f} s", flush=True)
            total = w_total
            next_id += tail
        with pg.connect() as c:
            t0 = time.monotonic()
            c.execute("REFRESH MATERIALIZED VIEW agg")
            res["pg_refresh_s"] = time.monotonic() - t0
            res["pg_refresh_ok"] = agg_check(c, total)
        w.stop()
        pg.stop()
    return res


def main():
    sb.header("Storage benchmark 3: restart after kill -9 with an aggregate materialized view, Weir vs PostgreSQL", P)
    results = []
    for rows in [int(x) for x in P["ROWS_LIST"].split()]:
        for rnd in range(P["ROUNDS"]):
            print(f"  {rows:,} rows, round {rnd + 1}: loading both servers and building agg ...", flush=True)
            r = run_size(rows)
            r["round"] = rnd + 1
            results.append(r)
    print()
    print(MV)
    print(f"postgres settings: {results[0]['pg_settings']}" if results else "")
    print()
    build = []
    for r in results:
        mem = r["weir_mem_after_build"]
        build.append([f"{r['rows']:,}", r["round"], f"{r['weir_copy_s']:.1f}", f"{r['weir_build_s']:.1f}",
                      wb.fmt_bytes(r["weir_state_bytes"]), wb.fmt_bytes(mem.get("VmHWM")),
                      "ok" if r["weir_build_ok"][0] else f"WRONG {r['weir_build_ok'][1]}",
                      f"{r['pg_copy_s']:.1f}", f"{r['pg_build_s']:.1f}",
                      "ok" if r["pg_build_ok"][0] else f"WRONG {r['pg_build_ok'][1]}",
                      f"{r['pg_refresh_s']:.1f}"])
    wb.print_table(["rows", "round", "weir COPY s", "weir CREATE..FLUSH s", "weir agg state_bytes", "weir VmHWM",
                    "weir agg", "pg COPY s", "pg CREATE MV s", "pg agg", "pg REFRESH MV s"], build)
    print()
    rows_out = []
    for r in results:
        for i, x in enumerate(r["weir"]):
            lg = x["log"]
            f = lambda k: f"{lg[k]:.2f}" if k in lg else "-"  # noqa: E731
            rows_out.append([
                f"{r['rows']:,}", r["round"], i + 1, "weir", f"{x['accept_s']:.2f}", f"{x['flush_s']:.2f}",
                f"{x['point_ms']:.1f}", f("tables"), f("planned"), f("started"), f("state"),
                f("listening"), "-", "-", "-", wb.fmt_bytes(x["hwm"]),
                f"{wb.fmt_bytes(x['disk']['all'])} (WAL {wb.fmt_bytes(x['disk']['wal'])}, "
                f"chk {wb.fmt_bytes(x['disk']['checkpoints'])})",
                x["load"], "ok" if x["ok"] and x["point_ok"] else f"WRONG {x['got']}"])
        for i, x in enumerate(r["pg"]):
            lg = x["log"]
            f = lambda k: f"{lg[k]:.2f}" if k in lg else "-"  # noqa: E731
            rows_out.append([
                f"{r['rows']:,}", r["round"], i + 1, "postgres", f"{x['accept_s']:.2f}", f"{x['agg_s']:.2f}",
                f"{x['point_ms']:.1f}", "-", "-", "-", "-", "-",
                f("synced"), f("redo_s"), f("ready"),
                "-", "-", x["load"], "ok" if x["ok"] and x["point_ok"] else f"WRONG {x['got']}"])
    wb.print_table(["rows", "round", "restart", "server", "accepts s", "FLUSH done / agg read s", "point SELECT ms",
                    "tables s", "chk chosen s", "tasks spawned s", "state restored s", "listening s",
                    "pg dir synced s", "pg redo took s", "pg ready s",
                    "weir VmHWM", "weir data dir at kill", "machine load before", "check"],
                   rows_out)
    print()
    print("Times in seconds after the restarted process was spawned. FLUSH done (Weir) = a FLUSH returned;\n"
          "agg read (PostgreSQL) = SELECT over agg returned. point SELECT = one SELECT v FROM pt WHERE id = 777\n"
          "after that. tables .. listening: from Weir's log (see bench/checkpoints/README.md, recovery).\n"
          "From PostgreSQL's log: dir synced = 'automatic recovery in progress' (after crash recovery's fsync of\n"
          "  every file in the data dir), redo took = 'redo done ... elapsed' (0: not required), ready = 'ready to\n"
          "  accept connections'.\n"
          "weir VmHWM: peak RSS of the restarted process up to the check. weir data dir at kill: all of it,\n"
          "  with the RocksDB write-ahead log files in <data>/db (replayed by RocksDB when it opens) and the\n"
          "  checkpoints.")
    print()
    print(f"Summary: medians over {P['ROUNDS']} rounds (seconds after spawn; 'later' = restarts 2..{P['RESTARTS']}"
          " of every round):")
    summary = []
    for rows in sorted({r["rows"] for r in results}):
        rs = [r for r in results if r["rows"] == rows]
        for name, key, ready in (("weir", "weir", "flush_s"), ("postgres", "pg", "agg_s")):
            first = [r[key][0] for r in rs if r[key]]
            later = [x for r in rs for x in r[key][1:]]
            med = lambda xs, k: f"{sb.statistics.median(x[k] for x in xs):.2f}" if xs else "-"  # noqa: E731
            summary.append([f"{rows:,}", name, len(first), med(first, "accept_s"), med(first, ready),
                            len(later), med(later, "accept_s"), med(later, ready),
                            "ok" if all(x["ok"] and x["point_ok"] for x in first + later) else "WRONG"])
    wb.print_table(["rows", "server", "first restarts", "accepts s", "FLUSH done / agg read s",
                    "later restarts", "accepts s", "FLUSH done / agg read s", "checks"], summary)
    seen = set()
    for r in results:
        names, trows = r.get("system_tables", ([], []))
        if trows and r["rows"] not in seen:
            seen.add(r["rows"])
            print()
            print(f"system.tables after the load of {r['rows']:,} rows (Weir):")
            wb.print_table(names, [[("-" if v is None else v) for v in t] for t in trows])
        for x in r["weir"]:
            for warn in x["log"].get("warnings", []):
                print(f"  log warning: {warn}")
    sb.footer(__file__, P)


if __name__ == "__main__":
    main()
