#!/usr/bin/env python3
"""Point and range SELECT by primary key, Weir next to PostgreSQL.

Both servers get the same table, loaded by COPY:

    CREATE TABLE pt (id bigint PRIMARY KEY, k bigint, v text)   -- ROWS rows: id, id % 1000, md5(id)

then VACUUM ANALYZE pt (PostgreSQL) and VACUUM (Weir), and REPEATS times,
alternating which server goes first, pgbench -M prepared -c CLIENTS
-j THREADS -T SECS -n -D rows=ROWS with

    point (point.sql):  \\set id random(1, :rows)       SELECT v FROM pt WHERE id = :id;
    range (range.sql):  \\set id random(1, :rows - 99)  SELECT v FROM pt WHERE id BETWEEN :id AND :id + 99;

after an unreported warm-up of WARMUP_SECS per query and server. Reports
tps of each run, the medians and their ratio (Weir / PostgreSQL), the
latency, and the server's CPU time per transaction (Weir: its process;
PostgreSQL: the postmaster and its backends). Before the runs it shows
Weir's EXPLAIN of both queries and single-statement timings (simple
protocol, median of 5) of a key lookup, a key range, a lookup on the
non-key column k (a full scan) and count(*), which tell whether the key
conditions narrow the scan.

Env (defaults): ROWS=1000000 QUERIES="point range" CLIENTS=4
THREADS=2 SECS=15 REPEATS=3 WARMUP_SECS=3; PG_OPTS="name=value ..."
(PostgreSQL settings; default: its defaults), WEIR_BIN, KEEP_DATA=1.
"""

import os
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import storagebench as sb  # noqa: E402
from storagebench import wb  # noqa: E402

P = {
    "ROWS": wb.env_int("ROWS", 1_000_000),
    "QUERIES": wb.env_str("QUERIES", "point range"),
        "CLIENTS": wb.env_int("CLIENTS", 4),
    "THREADS": wb.env_int("THREADS", 2),
    "SECS": wb.env_int("SECS", 15),
    "REPEATS": wb.env_int("REPEATS", 3),
    "WARMUP_SECS": wb.env_int("WARMUP_SECS", 3),
}


SCRIPTS = {"point": "point.sql", "range": "range.sql"}


def stmt_ms(conn, sql, n=5):
    ts = []
    for _ in range(n):
        t0 = time.monotonic()
        conn.execute(sql).fetchall()
        ts.append((time.monotonic() - t0) * 1000)
    return statistics.median(ts)


def main():
    sb.header("Storage benchmark 1: point and range SELECT by primary key (pgbench), Weir vs PostgreSQL", P)
    rows = P["ROWS"]
    path = sb.data_file(rows)
    queries = P["QUERIES"].split()
    defines = {"rows": rows}
    with sb.Weir("select") as weir, sb.Postgres("select", sb.pg_settings()) as pg:
        weir.launch()
        pg.launch()
        print(f"postgres settings: {pg.describe()}")
        servers = {
            "weir": {"target": (sb.HOST, weir.port), "db": "weir", "user": "weir",
                     "connect": weir.connect, "cpu": weir.cpu_seconds},
            "postgres": {"target": (sb.HOST, pg.port), "db": "postgres", "user": sb.PG_USER,
                         "connect": pg.connect, "cpu": pg.cpu_seconds},
        }
        want = sb.expected_sums(rows)
        for name, s in servers.items():
            with s["connect"]() as c:
                c.execute(sb.TABLE_DDL)
                secs = sb.copy_file(c, "pt", path)
                got = tuple(int(x) for x in c.execute("SELECT count(*), sum(id) FROM pt").fetchone())
                one = c.execute("SELECT v FROM pt WHERE id = 4242").fetchone()
                print(f"  {name}: COPY of {rows:,} rows {secs:.1f} s; count, sum(id) = {got}"
                      f"{' ok' if got == want else ' WRONG, expected ' + str(want)}; id 4242 -> {one[0] if one else None}")
        # As one would after a bulk load: PostgreSQL gets its statistics and
        # visibility map, Weir truncates the table's log (it also does so
        # every 5 s by itself).
        with pg.connect() as c:
            c.execute("VACUUM ANALYZE pt")
        with weir.connect() as c:
            c.execute("VACUUM")
        mem = weir.memory()
        print(f"  weir after load: VmHWM {wb.fmt_bytes(mem.get('VmHWM'))}, VmRSS {wb.fmt_bytes(mem.get('VmRSS'))}")
        print()

        print("Weir's plans:")
        with weir.connect() as c:
            for sql in (f"SELECT v FROM pt WHERE id = 4242",
                        f"SELECT v FROM pt WHERE id BETWEEN 4242 AND {4242 + 99}"):
                print(f"  EXPLAIN {sql}")
                for kind, plan in c.execute("EXPLAIN " + sql).fetchall():
                    for line in plan.rstrip().splitlines():
                        print(f"    {kind:14} {line}")
        print()
        print("Single statements (psycopg's default: extended protocol, unnamed statement, so parsed and planned\n"
              "at every execution; one connection, median of 5, ms):")
        diag = [
            ("key =", "SELECT v FROM pt WHERE id = 4242"),
            (f"key BETWEEN ({100} rows)", f"SELECT v FROM pt WHERE id BETWEEN 4242 AND {4242 + 99}"),
            ("key IN (3 keys)", "SELECT v FROM pt WHERE id IN (17, 4242, 99999)"),
            ("non-key k = (full scan)", "SELECT v FROM pt WHERE k = 42 LIMIT 1"),
            ("count(*)", "SELECT count(*) FROM pt"),
        ]
        drows = []
        conns = {n: s["connect"]() for n, s in servers.items()}
        try:
            for label, sql in diag:
                drows.append([label, f"{stmt_ms(conns['weir'], sql):.2f}", f"{stmt_ms(conns['postgres'], sql):.2f}", sql])
        finally:
            for c in conns.values():
                c.close()
        wb.print_table(["statement", "weir ms", "postgres ms", "sql"], drows)
        print()
        print("Rows Weir's scan returned (EXPLAIN ANALYZE: output_rows of the node above the stored scan),\n"
              "which shows whether the WHERE clause became key ranges:")
        with weir.connect() as c:
            for sql in ("SELECT v FROM pt WHERE id = 4242",
                        "SELECT v FROM pt WHERE id BETWEEN 4242 AND 4341",
                        "SELECT v FROM pt WHERE id IN (17, 4242, 99999)",
                        "SELECT v FROM pt WHERE id > 999990",
                        "SELECT v FROM pt WHERE k = 42"):
                text = "\n".join(str(r[-1]) for r in c.execute("EXPLAIN ANALYZE " + sql).fetchall())
                scan = [l for l in text.splitlines() if "RepartitionExec" in l or "StreamingTableExec" in l]
                m = re.search(r"output_rows=([\d.]+(?: [KMG])?)", scan[0]) if scan else None
                f = re.search(r"fetch_time=([^,\]]+)", scan[0]) if scan else None
                print(f"  {sql:52} rows from scan: {m.group(1) if m else '?':>9}"
                      f"   fetch_time {f.group(1) if f else '?'}")
        print()
        print("The pgbench queries with parameters (extended protocol, as pgbench -M prepared sends them):")
        for name, s in servers.items():
            with s["connect"]() as c:
                n1 = len(c.execute("SELECT v FROM pt WHERE id = %s", (4242,), prepare=True).fetchall())
                n2 = len(c.execute("SELECT v FROM pt WHERE id BETWEEN %s AND %s + 99", (4242, 4242),
                                   prepare=True).fetchall())
                print(f"  {name}: point -> {n1} row(s), range -> {n2} rows"
                      f"{'' if (n1, n2) == (1, 100) else '  WRONG (expected 1 and 100)'}")
        print(flush=True)

        if P["WARMUP_SECS"] > 0:
            for q in queries:
                for name, s in servers.items():
                    sb.pgbench(s["target"], SCRIPTS[q], P["CLIENTS"], P["THREADS"], P["WARMUP_SECS"],
                               s["db"], s["user"], defines)

        results = {q: {"weir": [], "postgres": []} for q in queries}
        rows_out = []
        cmds = {}
        for rep in range(P["REPEATS"]):
            order = ["weir", "postgres"] if rep % 2 == 0 else ["postgres", "weir"]
            for q in queries:
                for name in order:
                    s = servers[name]
                    sb.wait_for_quiet()
                    load0 = sb.load_note()
                    r = sb.pgbench(s["target"], SCRIPTS[q], P["CLIENTS"], P["THREADS"], P["SECS"],
                                   s["db"], s["user"], defines, cpu_of=s["cpu"])
                    cmds[(q, name)] = r["cmd"]
                    ok = r["rc"] == 0 and not r["failed"] and r["tps"] is not None
                    results[q][name].append(r["tps"] if ok else None)
                    rows_out.append([
                        q, rep + 1, name, wb.fmt_num(r["tps"], 1) if r["tps"] else "-",
                        f"{r['latency_ms']:.3f}" if r["latency_ms"] is not None else "-",
                        wb.fmt_num(r["txns"]),
                        f"{r['cpu_ms_per_txn']:.3f}" if "cpu_ms_per_txn" in r else "-",
                        f"{r['cpu_cores']:.2f}" if "cpu_cores" in r else "-",
                        load0, "ok" if ok else "FAILED: " + sb.describe_pgbench_failure(r)])
                    print(f"  {q} run {rep + 1} {name}: {wb.fmt_num(r['tps'], 1) if r['tps'] else '-'} tps",
                          flush=True)
        print()
        wb.print_table(["query", "run", "server", "tps", "latency ms", "transactions",
                        "server CPU ms/txn", "server cores busy", "machine load before", "result"], rows_out)
        print()
        summary = []
        for q in queries:
            w = [x for x in results[q]["weir"] if x is not None]
            p = [x for x in results[q]["postgres"] if x is not None]
            mw = statistics.median(w) if w else None
            mp = statistics.median(p) if p else None
            summary.append([q, len(w), wb.fmt_num(mw, 1), wb.fmt_num(max(w), 1) if w else "-",
                            len(p), wb.fmt_num(mp, 1), wb.fmt_num(max(p), 1) if p else "-",
                            sb.fmt_ratio(mw, mp)])
        print(f"Summary over {P['REPEATS']} runs of {P['SECS']} s ({rows:,} rows, -c {P['CLIENTS']} -j {P['THREADS']}):")
        wb.print_table(["query", "weir runs", "weir median tps", "weir best", "pg runs", "pg median tps",
                        "pg best", "weir/pg (medians)"], summary)
        print()
        print("pgbench commands (ports of this run; the scripts are in bench/storage/):")
        for (q, name), cmd in sorted(cmds.items()):
            print(f"  {q} {name}: {cmd}")
        mem = weir.memory()
        print(f"weir at end: VmHWM {wb.fmt_bytes(mem.get('VmHWM'))}, VmRSS {wb.fmt_bytes(mem.get('VmRSS'))}")
        warn = [l for l in weir.log_tail(400).splitlines() if " WARN " in l or " ERROR " in l]
        if warn:
            print("weir log warnings/errors (last 5):")
            for l in warn[-5:]:
                print("  " + l)
        weir.stop()
        pg.stop()
    sb.footer(__file__, P)


if __name__ == "__main__":
    main()
