#!/usr/bin/env python3
"""Benchmark 5: state_backend 'rocksdb' vs 'memory', per query.

Per query and backend, on a fresh server:
  1. backfill: load ROWS rows into t (KEYS distinct keys; for the join also
     KEYS rows into d), CREATE the view, time CREATE .. FLUSH returning;
  2. stream: insert STREAM_BATCH-row batches from one client for
     STREAM_SECS as fast as it goes, then FLUSH; rows/s from the first
     insert to FLUSH returning.
Checkpoints every CHECKPOINT_INTERVAL in both phases. The view is checked
against the same query run as a batch SELECT.

Backends: "rocksdb" (state in a store per subtask, default cache),
"memory" (hash maps, full snapshots), and "rocksdb-cache<N>" (rocksdb with
state_cache_keys = N, so that most state is read from the stores).

Queries:
  agg:  SELECT k, count(*), sum(v) FROM t GROUP BY k
  join: SELECT t.k, t.v, d.name FROM t JOIN d ON t.k = d.k

Env (defaults): ROWS=500000 KEYS=100000 QUERIES="agg join"
BACKENDS="memory rocksdb rocksdb-cache10000" PARALLELISM=2
CHECKPOINT_INTERVAL=1s STREAM_SECS=15 STREAM_BATCH=5000 LOAD_BATCH=100000
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import weirbench as wb  # noqa: E402

P = {
    "ROWS": wb.env_int("ROWS", 500_000),
    "KEYS": wb.env_int("KEYS", 100_000),
    "QUERIES": wb.env_str("QUERIES", "agg join"),
    "BACKENDS": wb.env_str("BACKENDS", "memory rocksdb rocksdb-cache10000"),
    "PARALLELISM": wb.env_int("PARALLELISM", 2),
    "CHECKPOINT_INTERVAL": wb.env_str("CHECKPOINT_INTERVAL", "1s"),
    "STREAM_SECS": wb.env_float("STREAM_SECS", 15),
    "STREAM_BATCH": wb.env_int("STREAM_BATCH", 5000),
    "LOAD_BATCH": wb.env_int("LOAD_BATCH", 100_000),
}

QUERIES = {
    "agg": "SELECT k, count(*) AS c, sum(v) AS s FROM t GROUP BY k",
    "join": "SELECT t.k, t.v, d.name FROM t JOIN d ON t.k = d.k",
}


def backend_options(backend):
    if backend.startswith("rocksdb-cache"):
        return f"state_backend = 'rocksdb', state_cache_keys = {int(backend[len('rocksdb-cache'):])}"
    return f"state_backend = '{backend}'"


def matches(c, sql):
    """The view equals the batch query (as multisets)."""
    diff = c.execute(
        f"SELECT count(*) FROM ((SELECT * FROM v EXCEPT ALL ({sql})) "
        f"UNION ALL (({sql}) EXCEPT ALL SELECT * FROM v)) AS x").fetchone()[0]
    return diff == 0


def run_one(query, backend):
    rows, keys = P["ROWS"], P["KEYS"]
    cols = f"g % {keys} AS k, g AS v"
    sql = QUERIES[query]
    with wb.Server(f"backends-{query}-{backend}") as srv:
        srv.launch()
        with srv.connect() as c:
            c.execute("CREATE TABLE t (k bigint, v bigint)")
            c.execute("CREATE TABLE d (k bigint, name text)")
            wb.load_rows(c, "t", cols, rows, P["LOAD_BATCH"])
            if query == "join":
                wb.load_rows(c, "d", "g - 1 AS k, md5(CAST(g AS text)) AS name", keys, P["LOAD_BATCH"])
            t0 = time.monotonic()
            c.execute(
                f"CREATE MATERIALIZED VIEW v WITH (parallelism = {P['PARALLELISM']}, "
                f"checkpoint_interval = '{P['CHECKPOINT_INTERVAL']}', {backend_options(backend)}) AS {sql}")
            c.execute("FLUSH")
            backfill_s = time.monotonic() - t0
            next_g = rows + 1
            sent = 0
            batch = P["STREAM_BATCH"]
            t_start = time.monotonic()
            while time.monotonic() - t_start < P["STREAM_SECS"]:
                c.execute(f"INSERT INTO t SELECT {cols} FROM generate_series({next_g}, {next_g + batch - 1}) AS s(g)")
                next_g += batch
                sent += batch
            c.execute("FLUSH")
            stream_s = time.monotonic() - t_start
            ok = matches(c, sql)
            last = wb.last_completed(c, "v")
        srv.stop()
    return {
        "query": query, "backend": backend,
        "backfill_rps": rows / backfill_s, "stream_rps": sent / stream_s, "stream_rows": sent,
        "state_bytes": last["state_bytes"] if last else 0, "ok": ok,
    }


def main():
    wb.header("Benchmark 5: state_backend rocksdb vs memory per query", P)
    results = []
    for q in P["QUERIES"].split():
        for b in P["BACKENDS"].split():
            print(f"  {q} with {b} ...", flush=True)
            results.append(wb.with_retry(lambda: run_one(q, b), f"{q}/{b}"))
    print()
    for q in P["QUERIES"].split():
        print(f"{q}: {QUERIES[q]}")
    print(f"({P['ROWS']:,} rows backfilled, {P['KEYS']:,} keys, parallelism {P['PARALLELISM']}, "
          f"checkpoint_interval {P['CHECKPOINT_INTERVAL']})")
    print()
    wb.print_table(
        ["query", "backend", "backfill rows/s", "stream rows", "stream rows/s (to FLUSH)", "state_bytes", "result"],
        [[r["query"], r["backend"], wb.fmt_num(r["backfill_rps"]), wb.fmt_num(r["stream_rows"]),
          wb.fmt_num(r["stream_rps"]), wb.fmt_bytes(r["state_bytes"]), "ok" if r["ok"] else "WRONG"]
         for r in results])
    wb.footer(__file__, P)


if __name__ == "__main__":
    main()
