#!/usr/bin/env python3
"""Benchmark 2: checkpoint duration and size vs. state size, incremental
(state_backend = 'rocksdb') vs. full (state_backend = 'memory').

Per backend and state size, on a fresh server:
  1. load KEYS rows into t (one row per key) and build the state with
     CREATE MATERIALIZED VIEW ... WITH (checkpoint_interval = '1h',
     state_backend = B) AS SELECT k, count(*), sum(v) FROM t GROUP BY k; FLUSH
     (no periodic checkpoints: every checkpoint below is one FLUSH takes);
  2. CHECKPOINTS times: insert CHANGE_ROWS rows for existing keys (a small
     change), FLUSH, and read that checkpoint's duration_ms, state_bytes and
     incremental_bytes from system.checkpoints.

Env (defaults): KEYS_LIST="10000 100000 500000" BACKENDS="rocksdb memory"
CHANGE_ROWS=100 CHECKPOINTS=5 PARALLELISM=2 LOAD_BATCH=100000
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import weirbench as wb  # noqa: E402

P = {
    "KEYS_LIST": wb.env_str("KEYS_LIST", "10000 100000 500000"),
    "BACKENDS": wb.env_str("BACKENDS", "rocksdb memory"),
    "CHANGE_ROWS": wb.env_int("CHANGE_ROWS", 100),
    "CHECKPOINTS": wb.env_int("CHECKPOINTS", 5),
    "PARALLELISM": wb.env_int("PARALLELISM", 2),
    "LOAD_BATCH": wb.env_int("LOAD_BATCH", 100_000),
}


def run_one(backend, keys):
    with wb.Server(f"chksize-{backend}") as srv:
        srv.launch()
        with srv.connect() as c:
            c.execute("CREATE TABLE t (k bigint, v bigint)")
            wb.load_rows(c, "t", "g AS k, g AS v", keys, P["LOAD_BATCH"])
            t0 = time.monotonic()
            c.execute(
                f"CREATE MATERIALIZED VIEW agg WITH (parallelism = {P['PARALLELISM']}, "
                f"checkpoint_interval = '1h', state_backend = '{backend}') AS "
                "SELECT k, count(*) AS c, sum(v) AS s FROM t GROUP BY k")
            c.execute("FLUSH")
            build_s = time.monotonic() - t0
            first = wb.last_completed(c, "agg")
            samples = []
            g = keys + 1
            n = P["CHANGE_ROWS"]
            for i in range(P["CHECKPOINTS"]):
                # n rows spread over existing keys 1..keys
                c.execute(f"INSERT INTO t SELECT ((g * 7919) % {keys}) + 1 AS k, 1 AS v "
                          f"FROM generate_series({g}, {g + n - 1}) AS s(g)")
                g += n
                before = wb.last_completed(c, "agg")["checkpoint_id"]
                flush_s = wb.timed(c, "FLUSH")
                chk = wb.last_completed(c, "agg")
                assert chk["checkpoint_id"] > before, (chk, before)
                chk["flush_s"] = flush_s
                samples.append(chk)
            groups, total = c.execute("SELECT count(*), sum(c) FROM agg").fetchone()
            assert groups == keys and total == keys + n * P["CHECKPOINTS"], (groups, total)
        on_disk = srv.du("checkpoints")
        srv.stop()
    return {
        "backend": backend, "keys": keys, "build_s": build_s, "first": first,
        "samples": samples, "on_disk": on_disk,
    }


def main():
    wb.header("Benchmark 2: checkpoint duration and size vs state size, rocksdb (incremental) vs memory (full)", P)
    results = []
    for backend in P["BACKENDS"].split():
        for keys in [int(k) for k in P["KEYS_LIST"].split()]:
            print(f"  state_backend={backend} keys={keys:,} ...", flush=True)
            results.append(wb.with_retry(lambda: run_one(backend, keys), f"{backend}/{keys}"))
    print()
    print("SELECT k, count(*), sum(v) FROM t GROUP BY k, one row per key; "
          f"each measured checkpoint follows an insert of {P['CHANGE_ROWS']} rows to existing keys "
          f"(median of {P['CHECKPOINTS']}; first = the checkpoint that built the state)")
    print()
    rows = []
    for r in results:
        s = r["samples"]
        state = s[-1]["state_bytes"]
        incr = wb.median([x["incremental_bytes"] for x in s])
        rows.append([
            r["backend"], wb.fmt_num(r["keys"]), wb.fmt_bytes(state),
            f"{r['build_s']:.2f}", wb.fmt_num(r["first"]["duration_ms"]), wb.fmt_bytes(r["first"]["incremental_bytes"]),
            wb.fmt_num(wb.median([x["duration_ms"] for x in s])),
            wb.fmt_num(max(x["duration_ms"] for x in s)),
            wb.fmt_bytes(incr), f"{100.0 * incr / state:.1f}%" if state else "-",
            f"{1000 * wb.median([x['flush_s'] for x in s]):.0f}",
            wb.fmt_bytes(r["on_disk"]),
        ])
    wb.print_table(
        ["backend", "keys", "state_bytes", "build s", "first chk ms", "first chk written",
         "chk duration ms (median)", "max ms", "incremental_bytes (median)", "incr/state",
         "FLUSH ms", "checkpoints dir"], rows)
    wb.footer(__file__, P)


if __name__ == "__main__":
    main()
