//! Nexmark q9 and q14–q22 as streaming queries, over the wire: the
//! query texts are the benchmark's (`bench/nexmark/queries/flink/qN.sql`,
//! the SELECT of its `INSERT INTO`), run over small deterministic Nexmark
//! tables `bid` and `auction` (the benchmark's columns, types and
//! watermark; no query here reads `person`) filled with `generate_series`
//! expressions (the string columns cast to text: an INSERT does not cast
//! DataFusion's Utf8View results to the table's type yet). Each streaming query's result table must equal the same
//! SELECT run ad hoc over the base tables (as multisets): after it started
//! on the first half of the rows, after the second half was inserted, and
//! after deletes (the aggregates' DISTINCT and FILTER state must retract)
//! and duplicates.

use tokio::task::block_in_place;
use tokio_postgres::Client;
use weir_sql_tests::sql::{assert_view_matches, exec, int};
use weir_sql_tests::TestServer;

const BID: &str = "CREATE TABLE bid (auction bigint, bidder bigint, price bigint, channel text, \
     url text, date_time timestamp, extra text, \
     WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)";

const AUCTION: &str = "CREATE TABLE auction (id bigint, item_name text, description text, \
     initial_bid bigint, reserve bigint, date_time timestamp, expires timestamp, seller bigint, \
     category bigint, extra text, \
     WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)";

/// 2025-01-01 00:00:00 UTC in epoch milliseconds.
const BASE_MS: i64 = 1_735_689_600_000;

/// Bids `from..to`: one every 37 s from 2025-01-01 00:00, so 3,000 bids
/// span 31 hours (two days, every hour of the day for q14). 200 auctions
/// with 15 bids each, 999 bidders with 3 bids each (one bidder's bids in
/// different price ranges); prices in all three of q15's ranges and across
/// q14's; the four named channels and others; URLs with and without a
/// `channel_id` parameter, and a short one (no directories, for q22);
/// `extra` with 0 to 4 'c's, NULL in every 50th bid.
async fn insert_bids(client: &Client, from: i64, to: i64) {
    exec(
        client,
        &format!(
            "INSERT INTO bid SELECT \
               1000 + (i * 7 + i / 13) % 200, \
               2000 + (i * 17) % 999, \
               CASE i % 4 WHEN 0 THEN (i * 37) % 10000 \
                          WHEN 1 THEN 10000 + (i * 7919) % 990000 \
                          WHEN 2 THEN 1000000 + (i * 104729) % 60000000 \
                          ELSE (i * 31) % 2000000 END, \
               CAST(CASE i % 6 WHEN 0 THEN 'Apple' WHEN 1 THEN 'Google' WHEN 2 THEN 'Facebook' \
                          WHEN 3 THEN 'Baidu' ELSE 'channel-' || CAST(i % 7 AS text) END AS text), \
               CAST(CASE WHEN i % 11 = 0 THEN 'https://x' \
                    WHEN i % 6 < 4 OR i % 5 = 0 \
                      THEN 'https://www.nexmark.com/d' || CAST(i % 3 AS text) || '/e_' \
                           || CAST(i % 4 AS text) || '/f/item.htm?query=1' \
                    ELSE 'https://www.nexmark.com/d/e/f/item.htm?query=1&channel_id=' \
                         || CAST(i % 9 AS text) END AS text), \
               CAST(to_timestamp_millis({BASE_MS} + i * 37000) AS timestamp), \
               CAST(CASE WHEN i % 50 = 0 THEN NULL \
                    ELSE substr('abcxcycczcc', 1 + CAST(i % 5 AS int), 2 + CAST(i % 7 AS int)) END \
                    AS text) \
             FROM generate_series({from}, {to} - 1) AS s(i)"
        ),
    )
    .await;
}

/// Auctions `from..to` (ids 1000 + j), one every 10 minutes, categories
/// 10..14 (200 auctions span 33 hours).
async fn insert_auctions(client: &Client, from: i64, to: i64) {
    exec(
        client,
        &format!(
            "INSERT INTO auction SELECT \
               1000 + j, CAST('item' || CAST(j AS text) AS text), 'desc', 100 + j, 1000 + 7 * j, \
               CAST(to_timestamp_millis({BASE_MS} + j * 600000) AS timestamp), \
               CAST(to_timestamp_millis({BASE_MS} + j * 600000 + 3600000 + j * 100000) AS timestamp), \
               3000 + j % 7, 10 + j % 5, 'x' \
             FROM generate_series({from}, {to} - 1) AS s(j)"
        ),
    )
    .await;
}

/// The SELECT of the benchmark's Flink query file: what follows
/// `INSERT INTO <sink>`, comments dropped, Flink's `quoted` identifiers
/// in double quotes.
fn query(file: &str) -> String {
    let text: String = file
        .lines()
        .filter(|l| !l.trim_start().starts_with("--"))
        .collect::<Vec<_>>()
        .join("\n");
    let at = text.find("INSERT INTO").expect("an INSERT INTO");
    let after = &text[at + "INSERT INTO".len()..];
    let sink = after.trim_start();
    let select = sink[sink.find(char::is_whitespace).expect("a sink name")..]
        .trim()
        .trim_end_matches(';');
    select.replace('`', "\"")
}

const QUERIES: [(&str, &str); 10] = [
    (
        "q9",
        include_str!("../../bench/nexmark/queries/flink/q9.sql"),
    ),
    (
        "q14",
        include_str!("../../bench/nexmark/queries/flink/q14.sql"),
    ),
    (
        "q15",
        include_str!("../../bench/nexmark/queries/flink/q15.sql"),
    ),
    (
        "q16",
        include_str!("../../bench/nexmark/queries/flink/q16.sql"),
    ),
    (
        "q17",
        include_str!("../../bench/nexmark/queries/flink/q17.sql"),
    ),
    (
        "q18",
        include_str!("../../bench/nexmark/queries/flink/q18.sql"),
    ),
    (
        "q19",
        include_str!("../../bench/nexmark/queries/flink/q19.sql"),
    ),
    (
        "q20",
        include_str!("../../bench/nexmark/queries/flink/q20.sql"),
    ),
    (
        "q21",
        include_str!("../../bench/nexmark/queries/flink/q21.sql"),
    ),
    (
        "q22",
        include_str!("../../bench/nexmark/queries/flink/q22.sql"),
    ),
];

async fn assert_all_match(client: &Client, stage: &str) {
    exec(client, "FLUSH").await;
    for (name, file) in QUERIES {
        eprintln!("{stage}: {name}");
        assert_view_matches(client, name, &query(file)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nexmark_queries_stream_the_same_result_as_a_batch_select() {
    let server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    exec(&client, BID).await;
    exec(&client, AUCTION).await;
    insert_auctions(&client, 0, 120).await;
    insert_bids(&client, 0, 1500).await;
    for (name, file) in QUERIES {
        exec(
            &client,
            &format!(
                "CREATE STREAMING QUERY {name} WITH (parallelism = 2) AS {}",
                query(file)
            ),
        )
        .await;
    }
    assert_all_match(&client, "started").await;

    // More rows after the start, later in event time.
    insert_auctions(&client, 120, 200).await;
    insert_bids(&client, 1500, 3000).await;
    assert_all_match(&client, "inserted").await;

    // The data covers what the queries distinguish.
    assert_eq!(int(&client, "SELECT count(*) FROM q15").await, 2);
    assert_eq!(
        int(
            &client,
            "SELECT count(DISTINCT bid_time_type) FROM q14 WHERE c_counts > 0"
        )
        .await,
        3
    );
    assert!(int(&client, "SELECT count(*) FROM q14 WHERE c_counts IS NULL").await > 0);
    assert!(int(&client, "SELECT count(*) FROM q20").await > 0);
    assert!(int(&client, "SELECT count(*) FROM q9").await > 10);
    assert_eq!(int(&client, "SELECT max(rank_number) FROM q19").await, 10);
    assert!(int(&client, "SELECT count(DISTINCT channel_id) FROM q21").await > 6);
    assert!(int(&client, "SELECT count(*) FROM q22 WHERE dir1 IS NULL").await > 0);
    assert!(int(&client, "SELECT min(rank3_bidders) FROM q15").await > 0);

    // Deletes: bidders and auctions leave some groups' DISTINCT sets and
    // FILTERed counts, and some groups empty; then some bids again (the
    // tables have no primary key: duplicates).
    exec(
        &client,
        "DELETE FROM bid WHERE bidder % 3 = 0 OR auction = 1007",
    )
    .await;
    exec(&client, "DELETE FROM auction WHERE id % 4 = 2").await;
    insert_bids(&client, 0, 200).await;
    assert_all_match(&client, "deleted and inserted again").await;
    drop(client);
}

/// The functions' errors over the wire: a wrong number or type of
/// arguments is an undefined function (42883), a literal argument they
/// cannot use an invalid parameter value (22023), also at CREATE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn function_errors_have_a_sqlstate() {
    let server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    exec(&client, BID).await;
    for (sql, code) in [
        ("SELECT split_index('a/b', '/')", "42883"),
        ("SELECT count_char('abc', 'c', 1)", "42883"),
        ("SELECT hour(1)", "42883"),
        ("SELECT regexp_extract('abc')", "42883"),
        ("SELECT regexp_extract('abc', '(b', 1)", "22023"),
        ("SELECT regexp_extract('abc', '(b)', 2)", "22023"),
        ("SELECT date_format(date_time, 'yyyy-QQ') FROM bid", "22023"),
        ("SELECT split_index(url, '', 1) FROM bid", "22023"),
        ("SELECT count_char(extra, 'cc') FROM bid", "22023"),
        (
            "CREATE STREAMING QUERY bad AS SELECT regexp_extract(url, '[', 0) FROM bid",
            "22023",
        ),
    ] {
        let err = client.batch_execute(sql).await.expect_err(sql);
        let got = err.code().map(|c| c.code().to_string());
        assert_eq!(got.as_deref(), Some(code), "{sql}: {err}");
    }
    // A value from a column is checked per row.
    exec(&client, "INSERT INTO bid (url, extra) VALUES ('a/b', 'c')").await;
    let err = client
        .batch_execute("SELECT count_char(url, extra || 'x') FROM bid")
        .await
        .expect_err("two characters");
    assert_eq!(err.code().map(|c| c.code()), Some("22023"), "{err}");
    assert_eq!(
        int(&client, "SELECT count_char(url, '/') FROM bid").await,
        1
    );
    drop(client);
}

#[test]
fn the_query_text_is_the_select_of_the_insert() {
    let q = query(
        "-- comment\nCREATE TABLE s (`day` STRING) WITH ('connector' = 'blackhole');\n\n\
         INSERT INTO s\nSELECT x AS `day` FROM t;\n",
    );
    assert_eq!(q, "SELECT x AS \"day\" FROM t");
}
