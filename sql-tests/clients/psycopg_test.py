#!/usr/bin/env python3
"""psycopg 3 against weir: server-side parameter binding, prepared
statements, text and binary results, typed values, errors.

Usage: psycopg_test.py PORT [--dbname NAME] [--reference-postgres]

--reference-postgres runs against a real Postgres to check this script:
materialized views become plain views and FLUSH is skipped.
Exits 0 when every check passes.
"""

import argparse
import datetime
import sys
from decimal import Decimal

import psycopg
from psycopg import errors


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--dbname", default="weir")
    parser.add_argument("--user", default="weir")
    parser.add_argument("--reference-postgres", action="store_true")
    args = parser.parse_args()
    ref = args.reference_postgres

    def mv(name: str, query: str) -> str:
        kind = "VIEW" if ref else "MATERIALIZED VIEW"
        return f"CREATE {kind} {name} AS {query}"

    def flush(cur: psycopg.Cursor) -> None:
        if not ref:
            cur.execute("FLUSH")

    with psycopg.connect(
        host="127.0.0.1",
        port=args.port,
        user=args.user,
        dbname=args.dbname,
        autocommit=True,
        connect_timeout=10,
    ) as conn:
        cur = conn.cursor()

        # -- parameters with server-side binding ------------------------------
        cur.execute("CREATE TABLE t (id int PRIMARY KEY, name text)")
        cur.execute("insert into t values (%s, %s)", (1, "x"))
        assert cur.rowcount == 1, cur.rowcount
        cur.executemany(
            "INSERT INTO t VALUES (%s, %s)",
            [(2, "y"), (3, None), (4, "it's; a \"quote\"")],
        )
        cur.execute("INSERT INTO t (id, name) VALUES (%(id)s, %(name)s)", {"id": 5, "name": "named"})

        cur.execute("SELECT id, name FROM t WHERE id = %s", (1,))
        assert cur.fetchone() == (1, "x")

        cur.execute("SELECT name FROM t WHERE id > %s ORDER BY id", (1,))
        got = cur.fetchall()
        assert got == [("y",), (None,), ("it's; a \"quote\"",), ("named",)], got

        cur.execute("SELECT id FROM t WHERE name = %s", ("y",))
        assert cur.fetchall() == [(2,)]

        cur.execute("SELECT count(*) FROM t WHERE name IS NULL")
        assert cur.fetchone() == (1,)

        cur.execute("SELECT %s::int + %s::int", (2, 3))
        assert cur.fetchone() == (5,)

        cur.execute("UPDATE t SET name = %s WHERE id = %s", ("z", 3))
        assert cur.rowcount == 1, cur.rowcount
        cur.execute("DELETE FROM t WHERE id = %s", (5,))
        assert cur.rowcount == 1, cur.rowcount

        # -- prepared statements (explicitly prepared and reused) -------------
        for i in range(3):
            cur.execute("SELECT name FROM t WHERE id = %s", (i + 1,), prepare=True)
            assert cur.fetchone() == (["x", "y", "z"][i],)

        # -- typed values, in both directions ----------------------------------
        cur.execute(
            "CREATE TABLE typed (id int PRIMARY KEY, b bigint, f double precision, "
            "n numeric(10,2), flag boolean, d date, ts timestamp, s text)"
        )
        row1 = (
            1,
            2**40,
            1.5,
            Decimal("12.34"),
            True,
            datetime.date(2024, 1, 31),
            datetime.datetime(2024, 1, 31, 10, 0, 0, 500000),
            "hello",
        )
        row2 = (2, None, None, None, None, None, None, None)
        cur.executemany("INSERT INTO typed VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", [row1, row2])

        for binary in (False, True):
            bcur = conn.cursor(binary=binary)
            bcur.execute("SELECT * FROM typed WHERE id = %s", (1,))
            got = bcur.fetchone()
            assert got == row1, (binary, got)
            assert isinstance(got[1], int) and isinstance(got[2], float)
            assert isinstance(got[3], Decimal) and str(got[3]) == "12.34", got[3]
            bcur.execute("SELECT * FROM typed WHERE id = %s", (2,))
            assert bcur.fetchone() == row2
            bcur.execute("SELECT id FROM typed WHERE d = %s AND flag = %s", (datetime.date(2024, 1, 31), True))
            assert bcur.fetchall() == [(1,)]

        # -- a materialized view, read with parameters ---------------------------
        cur.execute(mv("t_stats", "SELECT count(*) AS n, max(id) AS max_id FROM t"))
        flush(cur)
        cur.execute("SELECT n, max_id FROM t_stats WHERE n > %s", (0,))
        assert cur.fetchone() == (4, 4)
        cur.execute("INSERT INTO t VALUES (%s, %s)", (10, "ten"))
        flush(cur)
        cur.execute("SELECT n, max_id FROM t_stats")
        assert cur.fetchone() == (5, 10)

        # -- errors carry SQLSTATEs and leave the connection usable -------------
        try:
            cur.execute("SELECT * FROM nope")
            raise AssertionError("expected an error")
        except errors.UndefinedTable as e:
            assert e.sqlstate == "42P01", e.sqlstate
            assert 'relation "nope" does not exist' in str(e), str(e)
        try:
            cur.execute("SELECT 1 / %s::int", (0,))
            raise AssertionError("expected an error")
        except errors.DivisionByZero as e:
            assert e.sqlstate == "22012", e.sqlstate
        cur.execute("SELECT count(*) FROM t")
        assert cur.fetchone() == (5,)

    print("psycopg: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
