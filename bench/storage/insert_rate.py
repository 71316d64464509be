#!/usr/bin/env python3
"""Single-row INSERT throughput, Weir next to PostgreSQL.

Both servers get an empty table

    CREATE TABLE ins (id bigint PRIMARY KEY, k bigint, v text)

and, REPEATS times alternating which server goes first, pgbench -M prepared
-c CLIENTS -j THREADS -T SECS -n -D n=0 -D base=<run * 10^12> with
insert.sql:

    \\set n :n + 1                                   -- per client, kept across transactions
    \\set id :base + :client_id * 1000000000 + :n    -- unique, ascending per client
    \\set k :id % 1000
    INSERT INTO ins (id, k, v) VALUES (:id, :k, 'abcdefghijklmnopqrstuvwxyz012345');

Every INSERT is its own transaction. Both are durable at commit: Weir
syncs the table's log before answering INSERT 0 1, PostgreSQL runs with
its defaults (fsync = on, synchronous_commit = on) unless PG_OPTS says
otherwise. After each run the table's row count is checked against the
transactions pgbench counted. Reports tps, latency and server CPU per
insert.

Env (defaults): CLIENTS=4 THREADS=2 SECS=15 REPEATS=3; PG_OPTS, WEIR_BIN,
KEEP_DATA=1.
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import storagebench as sb  # noqa: E402
from storagebench import wb  # noqa: E402

P = {
    "CLIENTS": wb.env_int("CLIENTS", 4),
    "THREADS": wb.env_int("THREADS", 2),
    "SECS": wb.env_int("SECS", 15),
    "REPEATS": wb.env_int("REPEATS", 3),
}

DDL = "CREATE TABLE ins (id bigint PRIMARY KEY, k bigint, v text)"


def main():
    sb.header("Storage benchmark 4: single-row INSERT throughput (pgbench), Weir vs PostgreSQL", P)
    with sb.Weir("insert") as weir, sb.Postgres("insert", sb.pg_settings()) as pg:
        weir.launch()
        pg.launch()
        print(f"postgres settings: {pg.describe()}")
        print()
        servers = {
            "weir": {"target": (sb.HOST, weir.port), "db": "weir", "user": "weir",
                     "connect": weir.connect, "cpu": weir.cpu_seconds},
            "postgres": {"target": (sb.HOST, pg.port), "db": "postgres", "user": sb.PG_USER,
                         "connect": pg.connect, "cpu": pg.cpu_seconds},
        }
        for s in servers.values():
            with s["connect"]() as c:
                c.execute(DDL)
        results = {"weir": [], "postgres": []}
        rows_out = []
        cmds = {}
        counts = {"weir": 0, "postgres": 0}
        for rep in range(P["REPEATS"]):
            order = ["weir", "postgres"] if rep % 2 == 0 else ["postgres", "weir"]
            for name in order:
                s = servers[name]
                sb.wait_for_quiet()
                load0 = sb.load_note()
                r = sb.pgbench(s["target"], "insert.sql", P["CLIENTS"], P["THREADS"], P["SECS"],
                               s["db"], s["user"], {"n": 0, "base": (rep + 1) * 10**12}, cpu_of=s["cpu"])
                cmds[name] = r["cmd"]
                with s["connect"]() as c:
                    n = c.execute("SELECT count(*) FROM ins").fetchone()[0]
                added = n - counts[name]
                counts[name] = n
                ok = r["rc"] == 0 and not r["failed"] and r["tps"] is not None and added == r["txns"]
                results[name].append(r["tps"] if ok else None)
                note = "ok"
                if r["rc"] != 0 or r["failed"]:
                    note = "FAILED: " + sb.describe_pgbench_failure(r)
                elif added != r["txns"]:
                    note = f"WRONG: {added} rows added, pgbench counted {r['txns']}"
                rows_out.append([rep + 1, name, wb.fmt_num(r["tps"], 1) if r["tps"] else "-",
                                 f"{r['latency_ms']:.3f}" if r["latency_ms"] is not None else "-",
                                 wb.fmt_num(r["txns"]), wb.fmt_num(added),
                                 f"{r['cpu_ms_per_txn']:.3f}" if "cpu_ms_per_txn" in r else "-",
                                 f"{r['cpu_cores']:.2f}" if "cpu_cores" in r else "-", load0, note])
                print(f"  run {rep + 1} {name}: {wb.fmt_num(r['tps'], 1) if r['tps'] else '-'} tps", flush=True)
        print()
        wb.print_table(["run", "server", "tps", "latency ms", "transactions", "rows added",
                        "server CPU ms/insert", "server cores busy", "machine load before", "result"], rows_out)
        print()
        w = [x for x in results["weir"] if x is not None]
        p = [x for x in results["postgres"] if x is not None]
        mw = statistics.median(w) if w else None
        mp = statistics.median(p) if p else None
        print(f"Summary over {P['REPEATS']} runs of {P['SECS']} s (-c {P['CLIENTS']} -j {P['THREADS']}):")
        wb.print_table(["weir runs", "weir median tps", "weir best", "pg runs", "pg median tps", "pg best",
                        "weir/pg (medians)"],
                       [[len(w), wb.fmt_num(mw, 1), wb.fmt_num(max(w), 1) if w else "-",
                         len(p), wb.fmt_num(mp, 1), wb.fmt_num(max(p), 1) if p else "-", sb.fmt_ratio(mw, mp)]])
        print()
        print("pgbench commands (ports of this run; base changes per run):")
        for name, cmd in sorted(cmds.items()):
            print(f"  {name}: {cmd}")
        mem = weir.memory()
        print(f"weir at end: VmHWM {wb.fmt_bytes(mem.get('VmHWM'))}, VmRSS {wb.fmt_bytes(mem.get('VmRSS'))}")
        weir.stop()
        pg.stop()
    sb.footer(__file__, P)


if __name__ == "__main__":
    main()
