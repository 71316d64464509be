#!/usr/bin/env python3
"""Benchmark 1: throughput of a keyed aggregation with checkpoints every
second vs. effectively without (checkpoint_interval = '1h'; only the
checkpoint FLUSH takes).

Per interval, on a fresh server:
  1. backfill: load ROWS rows into t (KEYS distinct keys), CREATE the view,
     time CREATE .. FLUSH returning;
  2. stream: insert STREAM_BATCH-row batches from one client for STREAM_SECS
     (as fast as possible, or at STREAM_RATE rows/s), then FLUSH; time from
     the first insert to FLUSH returning.

Env (defaults): ROWS=500000 KEYS=100000 PARALLELISM=2 INTERVALS="1s 1h"
STATE_BACKEND=rocksdb STREAM_SECS=20 STREAM_BATCH=5000 STREAM_RATE=0
LOAD_BATCH=100000 REPEATS=1
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import weirbench as wb  # noqa: E402

P = {
    "ROWS": wb.env_int("ROWS", 500_000),
    "KEYS": wb.env_int("KEYS", 100_000),
    "PARALLELISM": wb.env_int("PARALLELISM", 2),
    "INTERVALS": wb.env_str("INTERVALS", "1s 1h"),
    "STATE_BACKEND": wb.env_str("STATE_BACKEND", "rocksdb"),
    "STREAM_SECS": wb.env_float("STREAM_SECS", 20),
    "STREAM_BATCH": wb.env_int("STREAM_BATCH", 5000),
    "STREAM_RATE": wb.env_int("STREAM_RATE", 0),
    "LOAD_BATCH": wb.env_int("LOAD_BATCH", 100_000),
    "REPEATS": wb.env_int("REPEATS", 1),
}


def run_one(interval):
    rows, keys = P["ROWS"], P["KEYS"]
    cols = f"g % {keys} AS k, g AS v"
    with wb.Server("throughput") as srv:
        srv.launch()
        with srv.connect() as c:
            c.execute("CREATE TABLE t (k bigint, v bigint)")
            load_s = wb.load_rows(c, "t", cols, rows, P["LOAD_BATCH"])

            t0 = time.monotonic()
            c.execute(
                f"CREATE MATERIALIZED VIEW agg WITH (parallelism = {P['PARALLELISM']}, "
                f"checkpoint_interval = '{interval}', state_backend = '{P['STATE_BACKEND']}') AS "
                "SELECT k, count(*) AS c, sum(v) AS s FROM t GROUP BY k")
            c.execute("FLUSH")
            backfill_s = time.monotonic() - t0
            groups, total = c.execute("SELECT count(*), sum(c) FROM agg").fetchone()
            assert groups == min(keys, rows) and total == rows, (groups, total)
            chk_backfill = len(wb.checkpoints(c, "agg"))

            # Steady stream of inserts.
            next_g = rows + 1
            sent = 0
            batch = P["STREAM_BATCH"]
            t_start = time.monotonic()
            while time.monotonic() - t_start < P["STREAM_SECS"]:
                c.execute(f"INSERT INTO t SELECT {cols} FROM generate_series({next_g}, {next_g + batch - 1}) AS s(g)")
                next_g += batch
                sent += batch
                if P["STREAM_RATE"] > 0:
                    ahead = t_start + sent / P["STREAM_RATE"] - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
            t_sent = time.monotonic()
            c.execute("FLUSH")
            t_done = time.monotonic()
            groups, total = c.execute("SELECT count(*), sum(c) FROM agg").fetchone()
            assert total == rows + sent, (total, rows + sent)
            chks = wb.checkpoints(c, "agg")
        srv.stop()
    return {
        "interval": interval,
        "load_s": load_s,
        "backfill_s": backfill_s,
        "backfill_rps": rows / backfill_s,
        "stream_rows": sent,
        "insert_rps": sent / (t_sent - t_start),
        "stream_rps": sent / (t_done - t_start),
        "drain_s": t_done - t_sent,
        "chk_backfill": chk_backfill,
        "chk_total": len(chks),
        "chk_failed": sum(1 for x in chks if x["status"] in ("failed", "expired")),
    }


def main():
    wb.header("Benchmark 1: keyed aggregation throughput, checkpoint_interval 1s vs 1h", P)
    intervals = P["INTERVALS"].split()
    results = []
    for rep in range(P["REPEATS"]):
        order = intervals if rep % 2 == 0 else list(reversed(intervals))
        for iv in order:
            print(f"  run {rep + 1}/{P['REPEATS']} checkpoint_interval={iv} ...", flush=True)
            r = wb.with_retry(lambda: run_one(iv), f"interval {iv}")
            results.append(r)
    print()
    print("SELECT k, count(*), sum(v) FROM t GROUP BY k  "
          f"({P['ROWS']:,} rows backfilled, {P['KEYS']:,} keys, parallelism {P['PARALLELISM']}, "
          f"state_backend {P['STATE_BACKEND']})")
    print()
    wb.print_table(
        ["checkpoint_interval", "backfill s", "backfill rows/s", "stream rows", "insert rows/s",
         "stream rows/s (to FLUSH)", "FLUSH after stream s", "checkpoints", "failed"],
        [[r["interval"], f"{r['backfill_s']:.2f}", wb.fmt_num(r["backfill_rps"]), wb.fmt_num(r["stream_rows"]),
          wb.fmt_num(r["insert_rps"]), wb.fmt_num(r["stream_rps"]), f"{r['drain_s']:.2f}",
          r["chk_total"], r["chk_failed"]] for r in results])
    by = {}
    for r in results:
        by.setdefault(r["interval"], []).append(r)
    if len(intervals) >= 2:
        base_iv, test_iv = intervals[-1], intervals[0]
        print()
        for key, label in (("backfill_rps", "backfill"), ("stream_rps", "stream")):
            base = wb.median([r[key] for r in by[base_iv]])
            test = wb.median([r[key] for r in by[test_iv]])
            change = (test / base - 1) * 100
            print(f"{label:8s} throughput with checkpoint_interval={test_iv} relative to {base_iv} (median rows/s): "
                  f"{test:,.0f} vs {base:,.0f} = {change:+.1f}%  (negative = cost of checkpointing)")
    wb.footer(__file__, P)


if __name__ == "__main__":
    main()
