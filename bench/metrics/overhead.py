#!/usr/bin/env python3
"""Cost of task metrics: throughput of a Nexmark-style aggregation (per
auction: bid count and highest price, as in Nexmark's q4/q5 building
blocks) with the per-subtask metrics on (the default) vs. off
(WEIR_TASK_METRICS=off: no time accounting, record or byte counting).

Per setting, on a fresh server: load ROWS bids into `bid`, CREATE the view,
time CREATE .. FLUSH (backfill); then insert STREAM_BATCH-row batches for
STREAM_SECS and time from the first insert to FLUSH (stream). Settings
alternate between repeats so drift does not favour one.

Env (defaults): ROWS=1000000 AUCTIONS=10000 PARALLELISM=2 STREAM_SECS=15
STREAM_BATCH=5000 LOAD_BATCH=100000 REPEATS=3; WEIR_BIN picks the binary
(use a release build: see the README).
"""

import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "checkpoints"))
import weirbench as wb  # noqa: E402

P = {
    "ROWS": wb.env_int("ROWS", 1_000_000),
    "AUCTIONS": wb.env_int("AUCTIONS", 10_000),
    "PARALLELISM": wb.env_int("PARALLELISM", 2),
    "STREAM_SECS": wb.env_float("STREAM_SECS", 15),
    "STREAM_BATCH": wb.env_int("STREAM_BATCH", 5000),
    "LOAD_BATCH": wb.env_int("LOAD_BATCH", 100_000),
    "REPEATS": wb.env_int("REPEATS", 3),
}

SETTINGS = {"on": {}, "off": {"WEIR_TASK_METRICS": "off"}}


def run_one(setting):
    rows, auctions = P["ROWS"], P["AUCTIONS"]
    cols = f"g % {auctions} AS auction, g % 997 AS bidder, (g * 7919) % 100000 AS price"
    with wb.Server("metrics", extra_env=SETTINGS[setting]) as srv:
        srv.launch()
        with srv.connect() as c:
            c.execute("CREATE TABLE bid (auction bigint, bidder bigint, price bigint)")
            wb.load_rows(c, "bid", cols, rows, P["LOAD_BATCH"])
            t0 = time.monotonic()
            c.execute(
                f"CREATE MATERIALIZED VIEW per_auction WITH (parallelism = {P['PARALLELISM']}) AS "
                "SELECT auction, count(*) AS bids, max(price) AS top FROM bid GROUP BY auction")
            c.execute("FLUSH")
            backfill_s = time.monotonic() - t0
            total = c.execute("SELECT sum(bids) FROM per_auction").fetchone()[0]
            assert total == rows, (total, rows)
            next_g, sent = rows + 1, 0
            batch = P["STREAM_BATCH"]
            t_start = time.monotonic()
            while time.monotonic() - t_start < P["STREAM_SECS"]:
                c.execute(f"INSERT INTO bid SELECT {cols} FROM generate_series({next_g}, {next_g + batch - 1}) AS s(g)")
                next_g += batch
                sent += batch
            c.execute("FLUSH")
            t_done = time.monotonic()
            total = c.execute("SELECT sum(bids) FROM per_auction").fetchone()[0]
            assert total == rows + sent, (total, rows + sent)
            metric_rows = c.execute(
                "SELECT count(*) FROM system.metrics WHERE name = 'numRecordsIn' AND value > 0").fetchone()[0]
        srv.stop()
    return {
        "setting": setting,
        "backfill_rps": rows / backfill_s,
        "stream_rps": sent / (t_done - t_start),
        "metric_rows": metric_rows,
    }


def main():
    wb.header("Cost of task metrics: per-auction aggregation, metrics on vs off", P)
    results = []
    for rep in range(P["REPEATS"]):
        order = ["on", "off"] if rep % 2 == 0 else ["off", "on"]
        for s in order:
            print(f"  run {rep + 1}/{P['REPEATS']} metrics {s} ...", flush=True)
            results.append(wb.with_retry(lambda: run_one(s), f"metrics {s}"))
    print()
    wb.print_table(
        ["metrics", "backfill rows/s", "stream rows/s (to FLUSH)", "numRecordsIn rows > 0"],
        [[r["setting"], wb.fmt_num(r["backfill_rps"]), wb.fmt_num(r["stream_rps"]), r["metric_rows"]]
         for r in results])
    print()
    for key, label in (("backfill_rps", "backfill"), ("stream_rps", "stream")):
        on = wb.median([r[key] for r in results if r["setting"] == "on"])
        off = wb.median([r[key] for r in results if r["setting"] == "off"])
        print(f"{label:8s} median rows/s with metrics on vs off: {on:,.0f} vs {off:,.0f} = "
              f"{(on / off - 1) * 100:+.1f}%  (negative = cost of metrics)")
    wb.footer(__file__, P)


if __name__ == "__main__":
    main()
