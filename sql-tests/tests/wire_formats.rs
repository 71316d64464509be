//! Text and binary encodings of the same value must agree: for each
//! expression, the text the server sends with the simple protocol must
//! equal the binary value sent with the extended protocol, rendered by
//! `weir_sql_tests::pgtext` (which mirrors the Postgres output functions).
//!
//! Against weir this checks the server's two encoders against each other
//! (and both against the Postgres text format). With `WEIR_REFERENCE_PG`
//! set, it runs against real Postgres and checks `pgtext` itself, including
//! the extra edge cases in `REFERENCE_ONLY`.

use std::time::Duration;

use tokio_postgres::Client;
use weir_sql_tests::pgtext::RawValue;
use weir_sql_tests::{
    connect_with_retry, create_reference_database, db::describe_pg_error, drop_reference_database,
    reference_postgres, simple_query_rows, TestServer,
};

/// Values of the foundation types, checked on every target.
const CORE: &[&str] = &[
    // integers
    "0::smallint",
    "(-32768)::smallint",
    "32767::smallint",
    "(-2147483648)::int",
    "2147483647::int",
    "(-9223372036854775808)::bigint",
    "9223372036854775807::bigint",
    // double precision
    "0.1::double precision",
    "(0.1::double precision + 0.2::double precision)",
    "(1::double precision / 3)",
    "1.5::double precision",
    "100::double precision",
    "123.456::double precision",
    "0.0001::double precision",
    "0.00001::double precision",
    "123456789012345::double precision",
    "1234567890123456::double precision",
    "1e15::double precision",
    "1e20::double precision",
    "(-2.5e-7)::double precision",
    "1e300::double precision",
    "'NaN'::double precision",
    "'Infinity'::double precision",
    "'-Infinity'::double precision",
    // real
    "0.1::real",
    "1.5::real",
    "123456::real",
    "1234567::real",
    "(-0.25)::real",
    "0.000123::real",
    // numeric
    "0::numeric",
    "0::numeric(10,2)",
    "(-0.01)::numeric(10,2)",
    "12345678.91::numeric(10,2)",
    "1.5::numeric(10,3)",
    "10000::numeric",
    "100000000::numeric",
    "0.0001::numeric",
    "(-123.456)::numeric",
    "12345678901234567890.123456789::numeric",
    // boolean, text
    "true",
    "false",
    "'hello'::text",
    "'with space'::text",
    "'ünïcödé'::varchar(20)",
    // date and time
    "DATE '2024-01-31'",
    "DATE '1970-01-01'",
    "DATE '1999-12-31'",
    "DATE '2000-01-01'",
    "DATE '2024-02-29'",
    "DATE '1900-03-01'",
    "TIMESTAMP '2024-01-31 10:00:00'",
    "TIMESTAMP '2000-02-29 23:59:59.5'",
    "TIMESTAMP '1969-12-31 23:59:59.999999'",
    "TIMESTAMP '2000-01-01 00:00:00.000001'",
    "TIMESTAMP '1900-02-28 12:34:56.25'",
    "TIMESTAMPTZ '2024-01-31 10:00:00+00'",
    "TIMESTAMPTZ '2024-06-01 12:30:45.123456+02'",
    "TIMESTAMPTZ '1960-06-01 00:00:00+00'",
    // intervals
    "INTERVAL '1 day 2 hours'",
    "INTERVAL '1 year 2 months'",
    "INTERVAL '1.5 seconds'",
    "INTERVAL '0 seconds'",
    "INTERVAL '-1 day'",
    "INTERVAL '30 hours'",
    "INTERVAL '3 days 04:05:06'",
    "INTERVAL '1 month 1 day 1 microsecond'",
    // bytea
    "'\\x'::bytea",
    "'\\x00ff10'::bytea",
    "'\\xdeadbeef'::bytea",
];

/// Edge cases only checked against the reference Postgres (they validate
/// the harness's renderer rather than core weir functionality).
const REFERENCE_ONLY: &[&str] = &[
    "'-0'::double precision",
    "'5e-324'::double precision",
    "'1.7976931348623157e308'::double precision",
    "1e22::double precision",
    "1e-300::double precision",
    "16777217::real",
    "'3.4028235e38'::real",
    "'NaN'::real",
    "(1::real / 3)",
    "'NaN'::numeric",
    "1e-20::numeric",
    "'Infinity'::numeric",
    "DATE '0001-01-01'",
    "DATE '0044-03-15 BC'",
    "DATE '9999-12-31'",
    "'infinity'::date",
    "'-infinity'::date",
    "TIMESTAMP '0044-03-15 12:00:00 BC'",
    "'infinity'::timestamp",
    "TIMESTAMPTZ '0044-03-15 12:00:00+00 BC'",
    "INTERVAL '-1 day +1 hour'",
    "INTERVAL '1 day -1 hour'",
    "INTERVAL '-1.5 seconds'",
    "INTERVAL '-13 months'",
    "INTERVAL '-2 years -3 mons -4 days -05:06:07.89'",
    "INTERVAL '100 years'",
    "INTERVAL '1 year -1 day'",
    "TIME '10:11:12.5'",
    "TIMETZ '10:11:12+05:30'",
    "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'::uuid",
    "'{\"a\": [1, 2]}'::jsonb",
    "'{\"a\": 1}'::json",
    "ARRAY[1, 2, NULL]",
    "ARRAY['a b', '', 'NULL', 'x\"y', 'c']",
    "ARRAY[[1, 2], [3, 4]]",
    "'{}'::int[]",
    "'[0:1]={1,2}'::int[]",
    "'abc'::name",
    "'x'::\"char\"",
    "'ab'::char(4)",
    "42::oid",
];

async fn compare(client: &Client, exprs: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    for expr in exprs {
        let sql = format!("SELECT {expr}");
        let text = match simple_query_rows(client, &sql).await {
            Ok(rows) => rows
                .into_iter()
                .next()
                .and_then(|r| r.into_iter().next())
                .flatten(),
            Err(e) => {
                problems.push(format!("{sql}: simple protocol error: {e}"));
                continue;
            }
        };
        let binary = match client.query(sql.as_str(), &[]).await {
            Ok(rows) => match rows.first().map(|r| r.try_get::<_, RawValue>(0)) {
                Some(Ok(raw)) => raw.to_pg_text(),
                Some(Err(e)) => Err(e.to_string()),
                None => Err("no rows".to_string()),
            },
            Err(e) => Err(format!(
                "extended protocol error: {}",
                describe_pg_error(&e)
            )),
        };
        match binary {
            Ok(b) if b == text => {}
            Ok(b) => problems.push(format!(
                "{sql}: text protocol sent {text:?}, binary value renders as {b:?}"
            )),
            Err(e) => problems.push(format!("{sql}: {e}")),
        }
    }
    problems
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_and_binary_encodings_agree() {
    let problems = match reference_postgres() {
        Some(base) => {
            let db = "weir_wire_formats";
            let conn = create_reference_database(&base, db).await.unwrap();
            let client = connect_with_retry(&conn, Duration::from_secs(10))
                .await
                .unwrap();
            let mut problems = compare(&client, CORE).await;
            problems.extend(compare(&client, REFERENCE_ONLY).await);
            drop(client);
            drop_reference_database(&base, db).await.unwrap();
            problems
        }
        None => {
            let server =
                tokio::task::block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
            let client = server.connect().await.unwrap();
            compare(&client, CORE).await
        }
    };
    assert!(
        problems.is_empty(),
        "{} of the values differ between the text and binary formats:\n{}",
        problems.len(),
        problems.join("\n")
    );
}
