#!/usr/bin/env python3
"""Benchmark 3: recovery time after kill -9 with a large keyed state.

Per backend, on a fresh server:
  1. load KEYS rows with distinct KEY_BYTES-byte text keys into t and build
     SELECT k, count(*), sum(v) FROM t GROUP BY k (parallelism 2,
     checkpoint_interval CHECKPOINT_INTERVAL); FLUSH, so that the latest
     checkpoint covers everything; its state_bytes is the state size;
  2. RESTARTS times: insert TAIL_ROWS rows (input after the checkpoint, to be
     replayed), kill -9 the server, start it again on the same data dir, and
     time (a) until it accepts a connection and (b) until a FLUSH returns;
     then check the view's contents.
The server log (WEIR_LOG=info) gives a breakdown of the start: tables
replayed, query planned ("resuming from checkpoint"), query started,
listening.

Env (defaults, ~100 MB of rocksdb state): KEYS=800000 KEY_BYTES=96
BACKENDS=rocksdb RESTARTS=2 TAIL_ROWS=0 PARALLELISM=2 CHECKPOINT_INTERVAL=1h
LOAD_BATCH=50000
"""

import math
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import weirbench as wb  # noqa: E402

P = {
    "KEYS": wb.env_int("KEYS", 800_000),
    "KEY_BYTES": wb.env_int("KEY_BYTES", 96),
    "BACKENDS": wb.env_str("BACKENDS", "rocksdb"),
    "RESTARTS": wb.env_int("RESTARTS", 2),
    "TAIL_ROWS": wb.env_int("TAIL_ROWS", 0),
    "PARALLELISM": wb.env_int("PARALLELISM", 2),
    "CHECKPOINT_INTERVAL": wb.env_str("CHECKPOINT_INTERVAL", "1h"),
    "LOAD_BATCH": wb.env_int("LOAD_BATCH", 50_000),
}


def key_expr(g="g"):
    """Distinct, poorly compressible text keys of KEY_BYTES bytes: md5 hex
    digests of g, g + 1e9, g + 2e9, ... concatenated."""
    parts = max(1, math.ceil(P["KEY_BYTES"] / 32))
    e = " || ".join(f"md5(CAST({g} + {i * 1_000_000_000} AS text))" for i in range(parts))
    return f"substr({e}, 1, {P['KEY_BYTES']})"


def breakdown(events):
    """Seconds after spawn of the milestones in the server log."""
    out = {}
    for t, _level, msg in events:
        if "table recovered" in msg:
            out["tables"] = t
        elif "resuming from checkpoint" in msg:
            out.setdefault("planned", t)
        elif "streaming query restarted" in msg:
            out["started"] = t
        elif "keyed state restored" in msg:
            out["state"] = t
        elif "listening on" in msg:
            out["listening"] = t
        elif "recomputing" in msg or "not usable" in msg or "could not restart" in msg:
            out.setdefault("warnings", []).append(msg)
    return out


def run_backend(backend):
    keys = P["KEYS"]
    cols = f"{key_expr()} AS k, g AS v"
    res = {"backend": backend, "restarts": []}
    with wb.Server(f"recovery-{backend}") as srv:
        srv.launch()
        with srv.connect() as c:
            c.execute("CREATE TABLE t (k text, v bigint)")
            res["load_s"] = wb.load_rows(c, "t", cols, keys, P["LOAD_BATCH"])
            t0 = time.monotonic()
            c.execute(
                f"CREATE MATERIALIZED VIEW agg WITH (parallelism = {P['PARALLELISM']}, "
                f"checkpoint_interval = '{P['CHECKPOINT_INTERVAL']}', state_backend = '{backend}') AS "
                "SELECT k, count(*) AS c, sum(v) AS s FROM t GROUP BY k")
            c.execute("FLUSH")
            res["build_s"] = time.monotonic() - t0
            chk = wb.last_completed(c, "agg")
            res["state_bytes"] = chk["state_bytes"]
            res["checkpoint_id"] = chk["checkpoint_id"]
        total_rows = keys
        next_g = keys + 1
        for i in range(P["RESTARTS"]):
            tail = P["TAIL_ROWS"]
            if tail:
                with srv.connect() as c:
                    # existing keys again: the state size stays the same
                    c.execute(f"INSERT INTO t SELECT {key_expr(f'(((g - 1) % {keys}) + 1)')} AS k, 1 AS v "
                              f"FROM generate_series({next_g}, {next_g + tail - 1}) AS s(g)")
                next_g += tail
                total_rows += tail
            with srv.connect() as c:
                last = wb.last_completed(c, "agg")
            srv.kill()
            disk_chk = srv.du("checkpoints")
            disk_db = srv.du("db")
            accept_s = srv.launch()
            spawn_wall = srv.spawn_wall
            t_acc = time.monotonic()
            with srv.connect() as c:
                c.execute("FLUSH")
                flush_s = time.monotonic() - t_acc + accept_s
                groups, total = c.execute("SELECT count(*), sum(c) FROM agg").fetchone()
                ok = groups == keys and total == total_rows
                after = wb.last_completed(c, "agg")
            res["restarts"].append({
                "restored_from": last["checkpoint_id"], "state_bytes": last["state_bytes"],
                "accept_s": accept_s, "flush_s": flush_s, "ok": ok,
                "check": f"{groups} groups, {total} rows",
                "disk_chk": disk_chk, "disk_db": disk_db,
                "log": breakdown(srv.log_events(spawn_wall)),
                "after_chk_ms": after["duration_ms"] if after else None,
            })
        srv.stop()
    return res


def main():
    wb.header("Benchmark 3: recovery time after kill -9", P)
    results = []
    for backend in P["BACKENDS"].split():
        print(f"  state_backend={backend}: loading {P['KEYS']:,} keys and building the state ...", flush=True)
        results.append(wb.with_retry(lambda: run_backend(backend), backend, attempts=2))
    print()
    print(f"SELECT k, count(*), sum(v) FROM t GROUP BY k: {P['KEYS']:,} distinct {P['KEY_BYTES']}-byte text keys, "
          f"parallelism {P['PARALLELISM']}, tail of {P['TAIL_ROWS']} rows after the checkpoint")
    print()
    for r in results:
        print(f"{r['backend']}: load {r['load_s']:.1f} s, build (CREATE..FLUSH) {r['build_s']:.1f} s, "
              f"checkpoint {r['checkpoint_id']} state_bytes {wb.fmt_bytes(r['state_bytes'])}")
    print()
    rows = []
    for r in results:
        for i, x in enumerate(r["restarts"]):
            lg = x["log"]
            f = lambda k: f"{lg[k]:.2f}" if k in lg else "-"  # noqa: E731
            rows.append([
                r["backend"], i + 1, x["restored_from"], wb.fmt_bytes(x["state_bytes"]),
                wb.fmt_bytes(x["disk_chk"]), wb.fmt_bytes(x["disk_db"]),
                f("tables"), f("planned"), f("started"), f("state"), f("listening"),
                f"{x['accept_s']:.2f}", f"{x['flush_s']:.2f}",
                wb.fmt_num(x["after_chk_ms"]), "ok" if x["ok"] else "WRONG: " + x["check"],
            ])
    wb.print_table(
        ["backend", "restart", "from chk", "state_bytes", "checkpoints dir", "store (db) dir",
         "tables replayed s", "checkpoint chosen s", "tasks spawned s", "state restored s", "listening s",
         "accepts s", "FLUSH done s",
         "1st chk ms", "result"], rows)
    print()
    print("All times in seconds after the restarted process was spawned. From the server log (WEIR_LOG=info):\n"
          "  tables replayed = last 'table recovered' (table logs read back),\n"
          "  checkpoint chosen = 'resuming from checkpoint' (query planned, checkpoint files checked),\n"
          "  tasks spawned   = 'streaming query restarted',\n"
          "  state restored  = last 'keyed state restored' (every stateful subtask has its state: rocksdb links\n"
          "                    the checkpoint's files, memory reads every entry),\n"
          "  listening = 'weir listening'.\n"
          "  accepts = first successful connection + SELECT 1 (client side). FLUSH done = restart until FLUSH returned.\n"
          "  1st chk ms = duration_ms of the checkpoint that FLUSH took after the restart.")
    for r in results:
        for x in r["restarts"]:
            for w in x["log"].get("warnings", []):
                print(f"  log warning ({r['backend']}): {w}")
    wb.footer(__file__, P)


if __name__ == "__main__":
    main()
