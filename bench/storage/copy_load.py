#!/usr/bin/env python3
"""COPY of N rows into an empty table, Weir next to PostgreSQL, and Weir's
peak memory.

For each N in ROWS_LIST, REPEATS times (alternating which server goes
first): on a fresh Weir server (so that its peak RSS is this load's), and
on one PostgreSQL server for the whole run (DROP TABLE, CHECKPOINT, then
the same):

    CREATE TABLE pt (id bigint PRIMARY KEY, k bigint, v text);
    COPY pt (id, k, v) FROM STDIN;      -- N rows: id, id % 1000, md5(id) (text format, 1 MiB writes)

Timed from sending COPY until its CommandComplete (psycopg 3 copy). Then
count(*) and sum(id) are checked, and Weir's VmHWM (peak RSS since its
start) and VmRSS are read from /proc/<pid>/status, with the size of its
data dir; for PostgreSQL pg_total_relation_size('pt') and the WAL written
(pg_current_wal_lsn difference).

Env (defaults): ROWS_LIST="1000000 4000000" REPEATS=3; PG_OPTS, WEIR_BIN,
KEEP_DATA=1.
"""

import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import storagebench as sb  # noqa: E402
from storagebench import wb  # noqa: E402

P = {
    "ROWS_LIST": wb.env_str("ROWS_LIST", "1000000 4000000"),
    "REPEATS": wb.env_int("REPEATS", 3),
}


def weir_copy(rows, path):
    with sb.Weir(f"copy-{rows}") as w:
        w.launch()
        before = w.memory()
        with w.connect() as c:
            c.execute(sb.TABLE_DDL)
            secs = sb.copy_file(c, "pt", path)
            mem = w.memory()
            got = tuple(int(x) for x in c.execute("SELECT count(*), sum(id) FROM pt").fetchone())
        disk = w.du()
        w.stop()
    return {"secs": secs, "hwm": mem.get("VmHWM"), "rss": mem.get("VmRSS"),
            "hwm0": before.get("VmHWM"), "ok": got == sb.expected_sums(rows), "got": got, "disk": disk}


def pg_copy(pg, rows, path):
    with pg.connect() as c:
        c.execute("DROP TABLE IF EXISTS pt")
        c.execute("CHECKPOINT")
        c.execute(sb.TABLE_DDL)
        lsn0 = c.execute("SELECT pg_current_wal_lsn()").fetchone()[0]
        secs = sb.copy_file(c, "pt", path)
        wal = c.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s)", (lsn0,)).fetchone()[0]
        got = tuple(int(x) for x in c.execute("SELECT count(*), sum(id) FROM pt").fetchone())
        size = c.execute("SELECT pg_total_relation_size('pt')").fetchone()[0]
    return {"secs": secs, "ok": got == sb.expected_sums(rows), "got": got, "size": size, "wal": int(wal)}


def main():
    sb.header("Storage benchmark 2: COPY into an empty table, Weir vs PostgreSQL", P)
    sizes = [int(x) for x in P["ROWS_LIST"].split()]
    out_rows = []
    summary = []
    with sb.Postgres("copy", sb.pg_settings()) as pg:
        pg.launch()
        print(f"postgres settings: {pg.describe()}")
        for rows in sizes:
            path = sb.data_file(rows)
            print(f"  {rows:,} rows: input file {path} ({wb.fmt_bytes(os.path.getsize(path))})", flush=True)
            ws, ps = [], []
            for rep in range(P["REPEATS"]):
                order = ["weir", "postgres"] if rep % 2 == 0 else ["postgres", "weir"]
                for name in order:
                    sb.wait_for_quiet()
                    load = sb.load_note()
                    if name == "weir":
                        r = wb.with_retry(lambda: weir_copy(rows, path), "weir copy", attempts=2)
                        ws.append(r)
                        out_rows.append([f"{rows:,}", rep + 1, "weir", f"{r['secs']:.2f}",
                                         wb.fmt_num(rows / r["secs"]), wb.fmt_bytes(r["hwm0"]),
                                         wb.fmt_bytes(r["hwm"]), wb.fmt_bytes(r["rss"]),
                                         wb.fmt_bytes(r["disk"]), "-", load,
                                         "ok" if r["ok"] else f"WRONG {r['got']}"])
                    else:
                        r = pg_copy(pg, rows, path)
                        ps.append(r)
                        out_rows.append([f"{rows:,}", rep + 1, "postgres", f"{r['secs']:.2f}",
                                         wb.fmt_num(rows / r["secs"]), "-", "-", "-",
                                         wb.fmt_bytes(r["size"]), wb.fmt_bytes(r["wal"]), load,
                                         "ok" if r["ok"] else f"WRONG {r['got']}"])
                    print(f"    run {rep + 1} {name}: {r['secs']:.2f} s", flush=True)
            mw = statistics.median(x["secs"] for x in ws)
            mp = statistics.median(x["secs"] for x in ps)
            summary.append([f"{rows:,}", len(ws), f"{mw:.2f}", f"{min(x['secs'] for x in ws):.2f}",
                            wb.fmt_bytes(statistics.median(x["hwm"] for x in ws)),
                            wb.fmt_bytes(max(x["hwm"] for x in ws)),
                            len(ps), f"{mp:.2f}", f"{min(x['secs'] for x in ps):.2f}",
                            f"{mw / mp:.2f}x"])
        pg.stop()
    print()
    wb.print_table(["rows", "run", "server", "COPY s", "rows/s", "weir VmHWM before", "weir VmHWM after",
                    "weir VmRSS after", "weir data dir / pg relation size", "pg WAL written",
                    "machine load before", "check"], out_rows)
    print()
    print(f"Summary (medians over {P['REPEATS']} runs; VmHWM = Weir's peak RSS from start through the COPY):")
    wb.print_table(["rows", "weir runs", "weir median s", "weir best s", "weir median VmHWM", "weir max VmHWM",
                    "pg runs", "pg median s", "pg best s", "weir/pg time (medians)"], summary)
    sb.footer(__file__, P)


if __name__ == "__main__":
    main()
