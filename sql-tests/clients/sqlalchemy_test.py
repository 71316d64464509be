#!/usr/bin/env python3
"""SQLAlchemy 2 (psycopg 3 driver) and pandas against weir: connecting,
the inspector's catalog queries (tables, materialized views, columns with
types and nullability, primary keys), reflecting a table and querying it
with SQLAlchemy Core, and pandas' read_sql_table, read_sql_query and to_sql.

Usage: sqlalchemy_test.py PORT [--dbname NAME] [--user NAME] [--reference-postgres]

--reference-postgres runs against a real Postgres to check this script:
FLUSH is skipped there (its materialized view is refreshed instead).
Exits 0 when every check passes.
"""

import argparse
import datetime
import sys
from decimal import Decimal

import pandas as pd
import sqlalchemy as sa
from sqlalchemy import types as satypes


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int)
    parser.add_argument("--dbname", default="weir")
    parser.add_argument("--user", default="weir")
    parser.add_argument("--reference-postgres", action="store_true")
    args = parser.parse_args()
    ref = args.reference_postgres

    engine = sa.create_engine(
        f"postgresql+psycopg://{args.user}@127.0.0.1:{args.port}/{args.dbname}",
        connect_args={"connect_timeout": 10},
    )

    # -- connecting: the dialect's first queries (version, hstore lookup
    #    through an unqualified pg_type, standard_conforming_strings) -----------
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
        version = conn.dialect.server_version_info
        assert version >= (12,), version

        # unqualified catalog relations resolve to pg_catalog, as in PostgreSQL
        n = conn.execute(
            sa.text("SELECT count(*) FROM pg_type WHERE typname = 'int4'")
        ).scalar()
        assert n == 1, n
        # weir tables, in a transaction as SQLAlchemy begins one
        conn.exec_driver_sql(
            "CREATE TABLE orders (id int PRIMARY KEY, customer text NOT NULL, "
            "amount numeric(10,2), placed timestamp)"
        )
        conn.exec_driver_sql("CREATE TABLE events (kind text, n bigint)")
        conn.execute(
            sa.text("INSERT INTO orders VALUES (:id, :customer, :amount, :placed)"),
            [
                {"id": 1, "customer": "ada", "amount": Decimal("12.50"),
                 "placed": datetime.datetime(2026, 11, 1, 10, 0)},
                {"id": 2, "customer": "bob", "amount": Decimal("3.00"),
                 "placed": datetime.datetime(2026, 11, 1, 10, 5)},
                {"id": 3, "customer": "ada", "amount": None,
                 "placed": datetime.datetime(2026, 11, 1, 11, 0)},
            ],
        )
        conn.exec_driver_sql("INSERT INTO events VALUES ('click', 1), ('view', 2)")
        view_kind = "MATERIALIZED VIEW"
        conn.exec_driver_sql(
            f"CREATE {view_kind} totals AS SELECT customer, count(*) AS orders, "
            "sum(amount) AS total FROM orders GROUP BY customer"
        )
        if ref:
            conn.exec_driver_sql("REFRESH MATERIALIZED VIEW totals")
        else:
            conn.exec_driver_sql("FLUSH")
        conn.commit()

    # -- the inspector ------------------------------------------------------------
    insp = sa.inspect(engine)
    got = sorted(insp.get_table_names())
    assert got == ["events", "orders"], got
    got = insp.get_materialized_view_names()
    assert got == ["totals"], got
    got = insp.get_view_names()
    assert got == [], got
    assert insp.has_table("orders")
    assert not insp.has_table("nope")
    assert "public" in insp.get_schema_names(), insp.get_schema_names()

    cols = insp.get_columns("orders")
    got = [(c["name"], c["nullable"]) for c in cols]
    assert got == [
        ("id", False),
        ("customer", False),
        ("amount", True),
        ("placed", True),
    ], got
    types = [c["type"] for c in cols]
    assert isinstance(types[0], satypes.INTEGER), types
    assert isinstance(types[1], satypes.TEXT), types
    assert isinstance(types[2], satypes.NUMERIC), types
    assert (types[2].precision, types[2].scale) == (10, 2), types[2]
    assert isinstance(types[3], satypes.TIMESTAMP), types
    assert not types[3].timezone, types[3]
    assert all(c["default"] is None for c in cols), cols

    cols = insp.get_columns("totals")
    got = [(c["name"], type(c["type"]).__name__) for c in cols]
    assert [g[0] for g in got] == ["customer", "orders", "total"], got
    assert isinstance(cols[1]["type"], satypes.BIGINT), got
    assert isinstance(cols[2]["type"], satypes.NUMERIC), got

    pk = insp.get_pk_constraint("orders")
    assert pk["constrained_columns"] == ["id"], pk
    assert pk["name"] == "orders_pkey", pk
    pk = insp.get_pk_constraint("events")
    assert pk["constrained_columns"] == [], pk
    assert insp.get_indexes("orders") == [], insp.get_indexes("orders")
    assert insp.get_foreign_keys("orders") == []
    assert insp.get_unique_constraints("orders") == []

    # -- reflection and SQLAlchemy Core ------------------------------------------
    meta = sa.MetaData()
    orders = sa.Table("orders", meta, autoload_with=engine)
    assert [c.name for c in orders.primary_key.columns] == ["id"]
    assert orders.c.customer.nullable is False
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(orders.c.id, orders.c.amount)
            .where(orders.c.customer == "ada")
            .order_by(orders.c.id)
        ).all()
        assert [tuple(r) for r in rows] == [(1, Decimal("12.50")), (3, None)], rows
        conn.execute(orders.update().where(orders.c.id == 2).values(amount=Decimal("4.25")))
        conn.execute(orders.insert(), [{"id": 4, "customer": "cy", "amount": Decimal("1.00")}])
        conn.execute(orders.delete().where(orders.c.id == 3))
        conn.commit()
        got = conn.execute(
            sa.select(sa.func.count(), sa.func.sum(orders.c.amount)).select_from(orders)
        ).one()
        assert tuple(got) == (3, Decimal("17.75")), got
    totals = sa.Table("totals", meta, autoload_with=engine)
    assert [c.name for c in totals.columns] == ["customer", "orders", "total"]

    # -- pandas ----------------------------------------------------------------------
    if ref:
        with engine.begin() as conn:
            conn.exec_driver_sql("REFRESH MATERIALIZED VIEW totals")
    else:
        with engine.begin() as conn:
            conn.exec_driver_sql("FLUSH")

    df = pd.read_sql_table("orders", engine).sort_values("id").reset_index(drop=True)
    assert list(df.columns) == ["id", "customer", "amount", "placed"], df.columns
    assert df["id"].tolist() == [1, 2, 4], df
    assert df["customer"].tolist() == ["ada", "bob", "cy"], df
    assert pd.api.types.is_datetime64_any_dtype(df["placed"]), df.dtypes
    assert df["placed"][0] == pd.Timestamp("2026-11-01 10:00:00"), df
    assert pd.isna(df["placed"][2]), df

    df = pd.read_sql_table("totals", engine).sort_values("customer").reset_index(drop=True)
    assert df["customer"].tolist() == ["ada", "bob", "cy"], df
    assert df["orders"].tolist() == [1, 1, 1], df
    assert [float(x) for x in df["total"]] == [12.5, 4.25, 1.0], df

    df = pd.read_sql_query(
        sa.text("SELECT id, customer FROM orders WHERE id > :lo ORDER BY id"),
        engine,
        params={"lo": 1},
    )
    assert df.to_dict("list") == {"id": [2, 4], "customer": ["bob", "cy"]}, df

    # to_sql: creates the table (SQLAlchemy's CREATE TABLE) and inserts the rows
    # in a transaction; weir commits each statement on its own.
    scores = pd.DataFrame(
        {
            "name": ["a", "b", "c"],
            "score": [1, 2, 3],
            "ratio": [0.5, 1.5, None],
            "seen": pd.to_datetime(["2026-01-01", "2026-01-02", None]),
            "ok": [True, False, True],
        }
    )
    # (to_sql returns the driver's row count, -1 for SQLAlchemy's batched
    # "insertmanyvalues" INSERTs; the rows are checked by reading them)
    scores.to_sql("scores", engine, index=False)
    scores.to_sql("scores", engine, index=False, if_exists="append")
    back = pd.read_sql_query(
        "SELECT name, count(*) AS n, sum(score) AS s FROM scores GROUP BY name ORDER BY name",
        engine,
    )
    assert back.to_dict("list") == {"name": ["a", "b", "c"], "n": [2, 2, 2], "s": [2, 4, 6]}, back
    back = pd.read_sql_table("scores", engine).sort_values("name").drop_duplicates()
    assert back["ratio"].tolist()[:2] == [0.5, 1.5], back
    assert pd.isna(back["ratio"].tolist()[2]), back
    assert back["ok"].tolist() == [True, False, True], back
    assert back["seen"].tolist()[0] == pd.Timestamp("2026-01-01"), back
    # replace: DROP TABLE, then CREATE TABLE again
    scores.head(1).to_sql("scores", engine, index=False, if_exists="replace")
    n = pd.read_sql_query("SELECT count(*) AS n FROM scores", engine)["n"][0]
    assert n == 1, n
    try:
        scores.to_sql("scores", engine, index=False)
        raise AssertionError("expected an error: the table exists")
    except ValueError as e:
        assert "already exists" in str(e), str(e)

    assert sorted(sa.inspect(engine).get_table_names()) == ["events", "orders", "scores"]

    engine.dispose()
    print("sqlalchemy: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
