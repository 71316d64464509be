//! Connectors end to end: a `file` source over CSV part files (event time,
//! windows that all fire when the files end, a restart after the end), a
//! `blackhole` sink, and the errors of bad sources. Results are checked
//! against the same rows inserted into an ordinary table and queried as a
//! batch.

use std::fmt::Write as _;
use std::time::Duration;

use tokio::task::block_in_place;
use weir_sql_tests::bids::{chrono_like, create_bid_source, oracle_table, write_parts, COLUMNS};
use weir_sql_tests::sql::{assert_view_matches, eventually, exec, int, rows, wait_finished};
use weir_sql_tests::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_source_windows_fire_at_the_end_and_survive_a_restart() {
    let mut server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let dir = server.root_dir().join("bids");
    let rows = write_parts(&dir, 2, 3000);
    let client = server.connect().await.unwrap();
    oracle_table(&client, &rows).await;
    create_bid_source(&client, &dir).await;
    let windowed = "SELECT auction, window_start, window_end, count(*) AS bids, sum(price) AS total \
         FROM tumble({t}, date_time, INTERVAL '10' SECOND) GROUP BY auction, window_start, window_end";
    exec(
        &client,
        &format!(
            "CREATE MATERIALIZED VIEW w WITH (parallelism = 2) AS {} EMIT ON WINDOW CLOSE",
            windowed.replace("{t}", "bid")
        ),
    )
    .await;
    exec(
        &client,
        "CREATE STREAMING QUERY bh WITH (parallelism = 2, connector = 'blackhole') AS \
         SELECT auction, price * 2 AS p FROM bid",
    )
    .await;
    // Top 3 bids per auction and the last bid per auction: over a source,
    // the top-N keeps only its top rows (append-only input).
    let top3 = "SELECT * FROM (SELECT auction, price, date_time, ROW_NUMBER() OVER \
         (PARTITION BY auction ORDER BY price DESC, date_time) AS rn FROM {t}) x WHERE rn <= 3";
    let last = "SELECT auction, price FROM (SELECT auction, price, ROW_NUMBER() OVER \
         (PARTITION BY auction ORDER BY date_time DESC, price) AS rn FROM {t}) x WHERE rn = 1";
    let plan = weir_sql_tests::sql::rows(
        &client,
        &format!(
            "EXPLAIN CREATE MATERIALIZED VIEW t3 AS {}",
            top3.replace("{t}", "bid")
        ),
    )
    .await;
    assert!(
        plan.iter().any(|r| r
            .iter()
            .flatten()
            .any(|c| c.contains("StreamTopN") && c.contains("append_only"))),
        "{plan:?}"
    );
    for (name, sql) in [("top3", top3), ("last_bid", last)] {
        exec(
            &client,
            &format!(
                "CREATE MATERIALIZED VIEW {name} WITH (parallelism = 2) AS {}",
                sql.replace("{t}", "bid")
            ),
        )
        .await;
    }
    wait_finished(&client, &["w", "bh", "top3", "last_bid"]).await;
    // The end of the files closed every window, the last ones included.
    let oracle = windowed.replace("{t}", "bid_t");
    assert_view_matches(&client, "w", &oracle).await;
    assert_view_matches(&client, "top3", &top3.replace("{t}", "bid_t")).await;
    assert_view_matches(&client, "last_bid", &last.replace("{t}", "bid_t")).await;
    // The blackhole read every row and kept none.
    assert_eq!(int(&client, "SELECT count(*) FROM bh").await, 0);
    let sunk = int(
        &client,
        "SELECT CAST(sum(value) AS bigint) FROM system.metrics WHERE query = 'bh' \
         AND operator LIKE 'StreamBlackholeSink%' AND name = 'numRecordsIn' AND scope = 'subtask'",
    )
    .await;
    assert_eq!(sunk, rows.len() as i64);

    // Restarted after the end: nothing is read or emitted twice.
    drop(client);
    block_in_place(|| server.kill()).unwrap();
    block_in_place(|| server.start_again()).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    wait_finished(&client, &["w"]).await;
    assert_view_matches(&client, "w", &oracle).await;
    assert_view_matches(&client, "top3", &top3.replace("{t}", "bid_t")).await;

    // Sources take no writes; bad definitions are refused.
    for (sql, code) in [
        ("INSERT INTO bid VALUES (1, 1, TIMESTAMP '2025-01-01 00:00:00')".to_string(), "42809"),
        (
            format!("CREATE SOURCE s1 ({COLUMNS}) WITH (connector = 'file', path = '/nonexistent/weir')"),
            "58P01",
        ),
        (
            format!(
                "CREATE SOURCE s2 ({COLUMNS}) WITH (connector = 'file', path = '{}', colour = 'red')",
                dir.display()
            ),
            "22023",
        ),
        (format!("CREATE SOURCE s3 ({COLUMNS}) WITH (connector = 'kafka')"), "22023"),
        (
            "CREATE STREAMING QUERY s4 WITH (connector = 'printer') AS SELECT * FROM bid_t".to_string(),
            "22023",
        ),
    ] {
        let err = client.batch_execute(&sql).await.expect_err(&sql);
        assert_eq!(err.code().map(|c| c.code()), Some(code), "{sql}: {err}");
    }
    block_in_place(|| server.stop()).unwrap();
}

/// A directory `bad` with one CSV file whose second record has a bad
/// `auction` (the first column).
fn bad_csv(server: &TestServer) -> std::path::PathBuf {
    let dir = server.root_dir().join("bad");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("a.csv"),
        "1,10,2025-01-01 00:00:00.000\nnot-a-number,3,2025-01-01 00:00:01.000\n",
    )
    .unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_record_in_a_file_fails_the_query_with_22p04() {
    let server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let dir = bad_csv(&server);
    let client = server.connect().await.unwrap();
    exec(
        &client,
        &format!(
            "CREATE SOURCE s ({COLUMNS}) WITH (connector = 'file', path = '{}')",
            dir.display()
        ),
    )
    .await;
    exec(
        &client,
        "CREATE STREAMING QUERY q WITH (restart_strategy = 'none') AS SELECT * FROM s",
    )
    .await;
    eventually("the query to fail", Duration::from_secs(30), || async {
        int(
            &client,
            "SELECT count(*) FROM system.exceptions WHERE query = 'q' AND sqlstate = '22P04' \
             AND message LIKE '%a.csv%'",
        )
        .await
            > 0
    })
    .await;
}

/// A CSV source decodes only the columns its query reads (EXPLAIN lists
/// them): the columns it does read arrive in their places, so a self-join
/// reading different columns on each side and an aggregate over a middle
/// column equal the batch query over the same rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_source_reads_only_the_columns_a_query_uses() {
    let server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let dir = server.root_dir().join("wide");
    std::fs::create_dir_all(&dir).unwrap();
    let client = server.connect().await.unwrap();
    exec(
        &client,
        "CREATE TABLE wide_t (auction bigint, note text, price bigint, date_time timestamp)",
    )
    .await;
    let mut csv = String::new();
    let mut values = Vec::new();
    for i in 0..2000i64 {
        let (a, p, t) = (
            i % 7,
            (i * 31) % 500,
            chrono_like(1_735_689_600 + i / 10, i % 1000),
        );
        writeln!(csv, "{a},note {i},{p},{t}").unwrap();
        values.push(format!("({a}, 'note {i}', {p}, TIMESTAMP '{t}')"));
    }
    std::fs::write(dir.join("part-0.csv"), csv).unwrap();
    for chunk in values.chunks(500) {
        exec(
            &client,
            &format!("INSERT INTO wide_t VALUES {}", chunk.join(", ")),
        )
        .await;
    }
    exec(
        &client,
        &format!(
            "CREATE SOURCE wide (auction bigint, note text, price bigint, date_time timestamp, \
             WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND) \
             WITH (connector = 'file', path = '{}', format = 'csv')",
            dir.display()
        ),
    )
    .await;
    let sums = "SELECT auction, sum(price) AS total, count(*) AS n FROM {t} GROUP BY auction";
    let pairs = "SELECT x.auction, count(*) AS n, max(y.note) AS note FROM {t} x JOIN {t} y \
                 ON x.price = y.price AND x.auction = y.auction GROUP BY x.auction";
    let plan = weir_sql_tests::sql::rows(
        &client,
        &format!(
            "EXPLAIN CREATE MATERIALIZED VIEW s AS {}",
            sums.replace("{t}", "wide")
        ),
    )
    .await;
    let text: Vec<String> = plan.into_iter().flatten().flatten().collect();
    assert!(
        text.iter()
            .any(|l| l.contains("StreamTableScan wide reads=[auction, price, date_time]")),
        "{text:#?}"
    );
    for (name, sql) in [("sums", sums), ("pairs", pairs)] {
        exec(
            &client,
            &format!(
                "CREATE MATERIALIZED VIEW {name} WITH (parallelism = 2) AS {}",
                sql.replace("{t}", "wide")
            ),
        )
        .await;
    }
    wait_finished(&client, &["sums", "pairs"]).await;
    assert_view_matches(&client, "sums", &sums.replace("{t}", "wide_t")).await;
    assert_view_matches(&client, "pairs", &pairs.replace("{t}", "wide_t")).await;
}

/// An interval join of two sources (Nexmark q4's shape: a bid joins its
/// auction while the auction runs): the join cleans its state by the
/// watermark (EXPLAIN says so) and loses no match — the result equals the
/// batch query over the same rows in ordinary tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interval_join_of_sources_matches_the_batch_join() {
    let mut server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let root = server.root_dir().to_path_buf();
    let base = 1_735_689_600_000i64;
    // Every 10th event is an auction lasting 2..20 s; bids name one of the
    // last 30 auctions (so some have ended, some not begun).
    let (mut auctions, mut bids) = (Vec::new(), Vec::new());
    for i in 0..4000i64 {
        let ms = base + i * 50;
        if i % 10 == 0 {
            auctions.push((i / 10, ms, ms + 2_000 + (i * 7919) % 18_000));
        } else {
            let newest = i / 10;
            let a = newest - (i * 31) % 30;
            bids.push((a, (i * 37) % 1000, ms));
        }
    }
    let write = |dir: &str, rows: Vec<String>| {
        let d = root.join(dir);
        std::fs::create_dir_all(&d).unwrap();
        for p in 0..2 {
            let part: Vec<&String> = rows.iter().skip(p).step_by(2).collect();
            let text: String = part.iter().map(|r| format!("{r}\n")).collect();
            std::fs::write(d.join(format!("part-{p}.csv")), text).unwrap();
        }
        d
    };
    let ts = |ms: i64| chrono_like(ms / 1000, ms % 1000);
    let adir = write(
        "auctions",
        auctions
            .iter()
            .map(|(id, s, e)| format!("{id},{},{}", ts(*s), ts(*e)))
            .collect(),
    );
    let bdir = write(
        "ibids",
        bids.iter()
            .map(|(a, p, t)| format!("{a},{p},{}", ts(*t)))
            .collect(),
    );
    let client = server.connect().await.unwrap();
    let wm = "WATERMARK FOR date_time AS date_time - INTERVAL '1' SECOND";
    exec(
        &client,
        &format!(
            "CREATE SOURCE auction (id bigint, date_time timestamp, expires timestamp, {wm}) \
             WITH (connector = 'file', path = '{}')",
            adir.display()
        ),
    )
    .await;
    exec(
        &client,
        &format!(
            "CREATE SOURCE bid ({COLUMNS}, {wm}) WITH (connector = 'file', path = '{}')",
            bdir.display()
        ),
    )
    .await;
    exec(
        &client,
        "CREATE TABLE auction_t (id bigint, date_time timestamp, expires timestamp)",
    )
    .await;
    exec(&client, &format!("CREATE TABLE bid_t ({COLUMNS})")).await;
    for chunk in auctions.chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|(id, s, e)| {
                format!(
                    "({id}, CAST(to_timestamp_millis({s}) AS timestamp), CAST(to_timestamp_millis({e}) AS timestamp))"
                )
            })
            .collect();
        exec(
            &client,
            &format!("INSERT INTO auction_t VALUES {}", values.join(", ")),
        )
        .await;
    }
    for chunk in bids.chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|(a, p, t)| format!("({a}, {p}, CAST(to_timestamp_millis({t}) AS timestamp))"))
            .collect();
        exec(
            &client,
            &format!("INSERT INTO bid_t VALUES {}", values.join(", ")),
        )
        .await;
    }
    let q = "SELECT a.id, max(b.price) AS final, count(*) AS bids FROM {a} a, {b} b \
             WHERE a.id = b.auction AND b.date_time BETWEEN a.date_time AND a.expires \
             GROUP BY a.id";
    let streaming = q.replace("{a}", "auction").replace("{b}", "bid");
    let oracle = q.replace("{a}", "auction_t").replace("{b}", "bid_t");
    interval_join_matches(&client, "q4ish", &streaming, &oracle, 100).await;
    // q7's shape: bids joined with the final maximum of their window, the
    // bound written `b1.t - c <= b.t`; both sides are cleaned.
    let q7 = "SELECT b.auction, b.price, b.date_time FROM {b} b JOIN (\
              SELECT max(price) AS maxprice, window_end AS date_time \
              FROM TABLE(TUMBLE(TABLE {b}, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) \
              GROUP BY window_start, window_end) b1 ON b.price = b1.maxprice \
              WHERE b.date_time BETWEEN b1.date_time - INTERVAL '10' SECOND AND b1.date_time";
    let streaming = format!("{} EMIT ON WINDOW CLOSE", q7.replace("{b}", "bid"));
    interval_join_matches(
        &client,
        "q7ish",
        &streaming,
        &q7.replace("{b}", "bid_t"),
        10,
    )
    .await;
    // q5's shape: two final window results joined on the window's end.
    let counts = "SELECT auction, count(*) AS num, window_end AS endtime FROM \
                  TABLE(TUMBLE(TABLE {b}, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) \
                  GROUP BY auction, window_start, window_end";
    let q5 = format!(
        "SELECT a.auction, a.num FROM ({counts}) a JOIN (SELECT max(num) AS maxn, endtime \
         FROM ({counts}) c GROUP BY endtime) m ON a.endtime = m.endtime AND a.num >= m.maxn"
    );
    let streaming = format!("{} EMIT ON WINDOW CLOSE", q5.replace("{b}", "bid"));
    interval_join_matches(
        &client,
        "q5ish",
        &streaming,
        &q5.replace("{b}", "bid_t"),
        10,
    )
    .await;
    block_in_place(|| server.stop()).unwrap();
}

/// Plans `streaming` as an interval join (EXPLAIN says so), runs it as view
/// `name` to the end of its sources, and compares it with `oracle` (which
/// must give more than `min_rows` rows).
async fn interval_join_matches(
    client: &tokio_postgres::Client,
    name: &str,
    streaming: &str,
    oracle: &str,
    min_rows: i64,
) {
    let plan = weir_sql_tests::sql::rows(
        client,
        &format!("EXPLAIN CREATE MATERIALIZED VIEW x AS {streaming}"),
    )
    .await;
    assert!(
        plan.iter()
            .any(|r| r.iter().flatten().any(|c| c.contains("interval"))),
        "{plan:?}"
    );
    exec(
        client,
        &format!("CREATE MATERIALIZED VIEW {name} WITH (parallelism = 2) AS {streaming}"),
    )
    .await;
    wait_finished(client, &[name]).await;
    assert!(int(client, &format!("SELECT count(*) FROM ({oracle}) o")).await > min_rows);
    assert_view_matches(client, name, oracle).await;
}

/// An ad hoc SELECT reads a source that ends from its start, as a batch:
/// over CSV parts it equals the same query over the rows inserted into a
/// table, and over a Nexmark generator with an event count it equals a
/// materialized view streamed from that source. A bad record fails it
/// with 22P04; a generator without an end is refused with 0A000 (the
/// SELECT would never finish) rather than returning nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ad_hoc_select_reads_a_source_that_ends() {
    let server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let dir = server.root_dir().join("bids");
    let written = write_parts(&dir, 2, 1500);
    let client = server.connect().await.unwrap();
    oracle_table(&client, &written).await;
    create_bid_source(&client, &dir).await;
    let q = "SELECT auction, count(*), sum(price), min(date_time), max(date_time) \
             FROM {t} GROUP BY auction ORDER BY auction";
    let want = rows(&client, &q.replace("{t}", "bid_t")).await;
    assert!(want.len() > 1, "{want:?}");
    assert_eq!(rows(&client, &q.replace("{t}", "bid")).await, want);
    assert_eq!(
        int(&client, "SELECT count(*) FROM bid").await,
        written.len() as i64
    );
    // A LIMIT stops the read early.
    assert_eq!(rows(&client, "SELECT * FROM bid LIMIT 3").await.len(), 3);

    let bad = bad_csv(&server);
    exec(
        &client,
        &format!(
            "CREATE SOURCE bad ({COLUMNS}) WITH (connector = 'file', path = '{}')",
            bad.display()
        ),
    )
    .await;
    let sqlstate = |e: tokio_postgres::Error| e.as_db_error().map(|d| d.code().code().to_string());
    let e = client
        .simple_query("SELECT sum(auction) FROM bad")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(e), Some("22P04".to_string()));

    let generator = |name: &str, events: &str| {
        format!(
            "CREATE SOURCE {name} (auction bigint, price bigint) WITH (connector = 'nexmark', \
             'nexmark.table.type' = 'bid'{events})"
        )
    };
    exec(
        &client,
        &generator("gen", ", 'nexmark.event.num' = '20000'"),
    )
    .await;
    let agg = "SELECT count(*) AS n, count(DISTINCT auction) AS a, sum(price) AS p FROM gen";
    exec(
        &client,
        &format!("CREATE MATERIALIZED VIEW streamed WITH (parallelism = 2) AS {agg}"),
    )
    .await;
    wait_finished(&client, &["streamed"]).await;
    let batch = rows(&client, agg).await;
    assert_eq!(rows(&client, "SELECT * FROM streamed").await, batch);
    assert!(int(&client, "SELECT count(*) FROM gen").await > 10_000);
    exec(&client, &generator("endless", "")).await;
    let e = client
        .simple_query("SELECT count(*) FROM endless")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(e), Some("0A000".to_string()));
}
