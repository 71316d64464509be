//! Event time end to end: `WATERMARK FOR` on tables, watermarks flowing to
//! the operators (`system.tasks`), and the window table functions in
//! Flink's and RisingWave's forms, checked against window bounds computed
//! independently (epoch arithmetic instead of `date_bin`).

use tokio::task::block_in_place;
use weir_sql_tests::sql::{assert_view_matches, eventually, exec, int, rows};
use weir_sql_tests::TestServer;

const BIDS: &str = "CREATE TABLE bid (auction bigint, price bigint, date_time timestamp, \
     WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)";

/// 20 auctions, bids over 95 seconds of event time from `start_s` seconds
/// after 2025-01-01, in time order; every auction bids last at the same
/// final time (`start_s` + 95 s).
async fn insert_bids(client: &tokio_postgres::Client, start_s: i64) {
    let base = 1_735_689_600_000i64 + start_s * 1000;
    exec(
        client,
        &format!(
            "INSERT INTO bid SELECT i % 20, i * 7 % 101, \
             CAST(to_timestamp_millis({base} + i * 100) AS timestamp) \
             FROM generate_series(0, 949) AS s(i)"
        ),
    )
    .await;
    exec(
        client,
        &format!(
            "INSERT INTO bid SELECT a, 1, CAST(to_timestamp_millis({}) AS timestamp) \
             FROM generate_series(0, 19) AS s(a)",
            base + 95_000
        ),
    )
    .await;
}

/// A view of bids per auction and 10 s tumbling window, `WITH (options)`,
/// optionally `EMIT ON WINDOW CLOSE`.
async fn create_tumble_view(
    client: &tokio_postgres::Client,
    name: &str,
    options: &str,
    on_close: bool,
) {
    let emit = if on_close {
        " EMIT ON WINDOW CLOSE"
    } else {
        ""
    };
    exec(
        client,
        &format!(
            "CREATE MATERIALIZED VIEW {name} WITH ({options}) AS \
             SELECT auction, window_start, window_end, count(*) AS bids, sum(price) AS total \
             FROM tumble(bid, date_time, INTERVAL '10' SECOND) \
             GROUP BY auction, window_start, window_end{emit}"
        ),
    )
    .await;
}

/// The input watermark of every aggregation subtask of `view`.
async fn agg_watermarks(client: &tokio_postgres::Client, view: &str) -> Vec<Option<String>> {
    rows(
        client,
        &format!(
            "SELECT input_watermark_ms FROM system.tasks WHERE query = '{view}' AND operator LIKE '%Agg%'"
        ),
    )
    .await
    .into_iter()
    .map(|r| r[0].clone())
    .collect()
}

/// Waits until every aggregation subtask of `view` has the watermark
/// `ts` (a timestamp literal), in epoch milliseconds.
async fn await_agg_watermark(client: &tokio_postgres::Client, view: &str, ts: &str) {
    let expected_ms = int(
        client,
        &format!("SELECT CAST(extract(epoch FROM TIMESTAMP '{ts}') * 1000 AS bigint)"),
    )
    .await
    .to_string();
    eventually(
        &format!("watermark {ts} at the aggregation of {view}"),
        std::time::Duration::from_secs(10),
        || async {
            let w = agg_watermarks(client, view).await;
            !w.is_empty() && w.iter().all(|v| v.as_deref() == Some(expected_ms.as_str()))
        },
    )
    .await;
}

/// Tumbling windows of 10 s, computed from the epoch seconds.
const TUMBLE_ORACLE: &str = "SELECT auction, \
     CAST(to_timestamp_seconds(CAST(floor(extract(epoch FROM date_time) / 10) * 10 AS bigint)) AS timestamp) AS window_start, \
     CAST(to_timestamp_seconds(CAST(floor(extract(epoch FROM date_time) / 10) * 10 + 10 AS bigint)) AS timestamp) AS window_end, \
     count(*) AS bids, sum(price) AS total \
     FROM bid GROUP BY 1, 2, 3";

/// Hopping windows of 10 s every 2 s: each bid is in the 5 windows that
/// start at the 2 s boundaries at most 8 s before it.
const HOP_ORACLE: &str = "SELECT \
     CAST(to_timestamp_seconds(CAST(floor(extract(epoch FROM date_time) / 2) * 2 - 2 * k AS bigint)) AS timestamp) AS window_start, \
     max(price) AS top \
     FROM bid CROSS JOIN generate_series(0, 4) AS h(k) GROUP BY 1";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tumble_and_hop_windows_in_both_forms_match_epoch_arithmetic() {
    let server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    exec(&client, BIDS).await;
    // Half the data before the views start (snapshot), half after (log,
    // later in event time: earlier rows would be late for the windows).
    insert_bids(&client, 0).await;
    exec(
        &client,
        "CREATE MATERIALIZED VIEW tumble_flink WITH (parallelism = 2) AS \
         SELECT auction, window_start, window_end, count(*) AS bids, sum(price) AS total \
         FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) \
         GROUP BY auction, window_start, window_end",
    )
    .await;
    exec(
        &client,
        "CREATE MATERIALIZED VIEW tumble_rw WITH (parallelism = 2) AS \
         SELECT auction, window_start, window_end, count(*) AS bids, sum(price) AS total \
         FROM tumble(bid, date_time, INTERVAL '10' SECOND) \
         GROUP BY auction, window_start, window_end",
    )
    .await;
    exec(
        &client,
        "CREATE MATERIALIZED VIEW hop_flink WITH (parallelism = 2) AS \
         SELECT window_start, max(price) AS top \
         FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND)) \
         GROUP BY window_start",
    )
    .await;
    exec(
        &client,
        "CREATE MATERIALIZED VIEW hop_rw WITH (parallelism = 2) AS \
         SELECT h.window_start, max(h.price) AS top \
         FROM hop(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) AS h \
         GROUP BY h.window_start",
    )
    .await;
    insert_bids(&client, 100).await;
    exec(&client, "FLUSH").await;
    for view in ["tumble_flink", "tumble_rw"] {
        assert_view_matches(&client, view, TUMBLE_ORACLE).await;
    }
    for view in ["hop_flink", "hop_rw"] {
        assert_view_matches(&client, view, HOP_ORACLE).await;
    }
    assert_eq!(
        int(&client, "SELECT count(*) FROM tumble_rw").await,
        20 * 20
    );

    // The watermark (last bid at 00:03:15, minus 4 s) reached every
    // operator downstream of the sources.
    await_agg_watermark(&client, "tumble_rw", "2025-01-01 00:03:11").await;
    drop(client);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_watermarks_and_windows_are_refused_with_a_sqlstate() {
    let mut server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    exec(&client, "CREATE TABLE t (k bigint, ts timestamp)").await;
    for (sql, code) in [
        (
            "CREATE TABLE a (ts timestamp, WATERMARK FOR nope AS ts)",
            "42703",
        ),
        ("CREATE TABLE b (k bigint, WATERMARK FOR k AS k)", "42804"),
        (
            "CREATE TABLE c (ts timestamp, WATERMARK FOR ts AS ts + 1)",
            "42804",
        ),
        (
            "SELECT * FROM hop(t, ts, INTERVAL '3' SECOND, INTERVAL '10' SECOND)",
            "22023",
        ),
        ("SELECT * FROM tumble(t, ts, 10)", "22007"),
    ] {
        let err = client.batch_execute(sql).await.expect_err(sql);
        let got = err.code().map(|c| c.code().to_string());
        assert_eq!(got.as_deref(), Some(code), "{sql}: {err}");
    }
    // A table with a watermark comes back after a restart, watermark
    // included (a view over it sees it).
    exec(
        &client,
        "CREATE TABLE w (k bigint, ts timestamp, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)",
    )
    .await;
    // Rows for every source subtask (an empty one would hold the watermark
    // back).
    exec(
        &client,
        "INSERT INTO w SELECT k, TIMESTAMP '2025-01-01 00:00:10' FROM generate_series(1, 20) AS s(k)",
    )
    .await;
    drop(client);
    block_in_place(|| server.kill()).unwrap();
    block_in_place(|| server.start_again()).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    exec(
        &client,
        "CREATE MATERIALIZED VIEW wv AS SELECT window_start, count(*) AS n \
         FROM tumble(w, ts, INTERVAL '1' MINUTE) GROUP BY window_start",
    )
    .await;
    exec(&client, "FLUSH").await;
    await_agg_watermark(&client, "wv", "2025-01-01 00:00:09").await;
    block_in_place(|| server.stop()).unwrap();
}

/// `EMIT ON WINDOW CLOSE`: a window's rows appear once, when the watermark
/// passes its end; a row for a closed window is late, dropped and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_on_window_close_emits_closed_windows_once_and_drops_late_rows() {
    let server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    exec(&client, BIDS).await;
    create_tumble_view(&client, "closed", "parallelism = 2", true).await;
    create_tumble_view(&client, "updating", "parallelism = 2", false).await;
    // With late_records = 'keep', late rows count (state is kept).
    create_tumble_view(
        &client,
        "closed_keep",
        "parallelism = 2, late_records = 'keep'",
        true,
    )
    .await;
    insert_bids(&client, 0).await;
    exec(&client, "FLUSH").await;
    // Watermark 00:01:31: the windows ending by then, and only those.
    let closed_by = |wm: &str| {
        format!("SELECT * FROM ({TUMBLE_ORACLE}) AS o WHERE window_end <= TIMESTAMP '{wm}'")
    };
    assert_view_matches(&client, "closed", &closed_by("2025-01-01 00:01:31")).await;
    assert_eq!(int(&client, "SELECT count(*) FROM closed").await, 20 * 9);
    assert_view_matches(&client, "updating", TUMBLE_ORACLE).await;

    // A bid for a closed window (00:00:05) is late: both views drop it.
    exec(
        &client,
        "INSERT INTO bid VALUES (1, 999, TIMESTAMP '2025-01-01 00:00:05')",
    )
    .await;
    // Then time moves on to 00:02:00 for every auction.
    exec(
        &client,
        "INSERT INTO bid SELECT a, 2, TIMESTAMP '2025-01-01 00:02:00' FROM generate_series(0, 19) AS s(a)",
    )
    .await;
    exec(&client, "FLUSH").await;
    let on_time = TUMBLE_ORACLE.replace("FROM bid", "FROM bid WHERE price <> 999");
    let closed_on_time = format!(
        "SELECT * FROM ({on_time}) AS o WHERE window_end <= TIMESTAMP '2025-01-01 00:01:56'"
    );
    assert_view_matches(&client, "closed", &closed_on_time).await;
    // 00:01:40 - 00:01:50 had no bids; 00:02:00 - 00:02:10 is open.
    assert_eq!(int(&client, "SELECT count(*) FROM closed").await, 20 * 10);
    assert_view_matches(&client, "updating", &on_time).await;
    // Kept: the closed window of auction 1 was updated by the late row.
    let closed_all = format!(
        "SELECT * FROM ({TUMBLE_ORACLE}) AS o WHERE window_end <= TIMESTAMP '2025-01-01 00:01:56'"
    );
    assert_view_matches(&client, "closed_keep", &closed_all).await;
    eventually(
        "the late row to be counted in both views",
        std::time::Duration::from_secs(10),
        || async {
            int(
                &client,
                "SELECT CAST(coalesce(sum(value), 0) AS bigint) FROM system.metrics \
                 WHERE name = 'numLateRecordsDropped' AND scope = 'subtask'",
            )
            .await
                == 2
        },
    )
    .await;
    // Without a window to close, the clause is refused.
    let err = client
        .batch_execute(
            "CREATE MATERIALIZED VIEW nope AS SELECT auction, count(*) FROM bid GROUP BY auction EMIT ON WINDOW CLOSE",
        )
        .await
        .expect_err("no window");
    assert_eq!(err.code().map(|c| c.code()), Some("0A000"), "{err}");
}

/// Window state and the watermark survive `kill -9`: open windows resume
/// from the checkpoint (every group of a window aggregation is read back
/// from the store), closed ones are not emitted twice, and a row late
/// before the crash is still late after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_state_and_watermark_survive_a_crash() {
    let mut server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    exec(&client, BIDS).await;
    for backend in ["rocksdb", "memory"] {
        let options = format!("parallelism = 2, state_backend = '{backend}', state_cache_keys = 4");
        create_tumble_view(&client, &format!("closed_{backend}"), &options, true).await;
    }
    insert_bids(&client, 0).await;
    exec(&client, "FLUSH").await;
    drop(client);
    block_in_place(|| server.kill()).unwrap();
    block_in_place(|| server.start_again()).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    // Late for the windows closed before the crash.
    exec(
        &client,
        "INSERT INTO bid VALUES (1, 999, TIMESTAMP '2025-01-01 00:00:05')",
    )
    .await;
    insert_bids(&client, 100).await;
    exec(&client, "FLUSH").await;
    let on_time = TUMBLE_ORACLE.replace("FROM bid", "FROM bid WHERE price <> 999");
    let closed = format!(
        "SELECT * FROM ({on_time}) AS o WHERE window_end <= TIMESTAMP '2025-01-01 00:03:11'"
    );
    for backend in ["rocksdb", "memory"] {
        assert_view_matches(&client, &format!("closed_{backend}"), &closed).await;
    }
    block_in_place(|| server.stop()).unwrap();
}

/// A source subtask without rows holds the watermark back, unless the
/// query sets `source_idle_timeout`: then it declares itself idle and the
/// others' watermark goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_source_subtasks_stop_holding_the_watermark_back() {
    let server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    exec(
        &client,
        "CREATE TABLE ev (k bigint, ts timestamp, WATERMARK FOR ts AS ts - INTERVAL '1' SECOND)",
    )
    .await;
    for (name, options) in [
        ("stalled", "parallelism = 2"),
        ("flowing", "parallelism = 2, source_idle_timeout = '200ms'"),
    ] {
        exec(
            &client,
            &format!(
                "CREATE MATERIALIZED VIEW {name} WITH ({options}) AS \
                 SELECT window_end, count(*) AS n FROM tumble(ev, ts, INTERVAL '10' SECOND) GROUP BY window_end"
            ),
        )
        .await;
    }
    // One row: one source subtask has it, the other has nothing.
    exec(
        &client,
        "INSERT INTO ev VALUES (1, TIMESTAMP '2025-01-01 00:00:05')",
    )
    .await;
    exec(&client, "FLUSH").await;
    // The idle subtask lets the other's watermark through.
    await_agg_watermark(&client, "flowing", "2025-01-01 00:00:04").await;
    // Without the timeout the empty subtask still holds it back.
    let stalled = agg_watermarks(&client, "stalled").await;
    assert!(
        stalled.iter().all(|v| v.is_none()),
        "watermark moved without an idle timeout: {stalled:?}"
    );
}

/// Sessions per bidder computed independently of both of Weir's session
/// implementations: a new session where the gap to the bidder's previous
/// bid exceeds 10 s (LAG and a running sum), as the Nexmark harness's
/// DuckDB q11 does.
const SESSION_ORACLE: &str = "SELECT bidder, count(*) AS bid_count, min(date_time) AS starttime, \
     max(date_time) + INTERVAL '10' SECOND AS endtime FROM (\
       SELECT bidder, date_time, sum(new_session) OVER (PARTITION BY bidder ORDER BY date_time \
         ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) AS sid FROM (\
         SELECT bidder, date_time, CASE WHEN date_time - lag(date_time) OVER \
           (PARTITION BY bidder ORDER BY date_time) <= INTERVAL '10' SECOND THEN 0 ELSE 1 END \
           AS new_session FROM sbid) g) s \
     GROUP BY bidder, sid";

const SESSION_QUERY: &str = "SELECT bidder, count(*) AS bid_count, window_start AS starttime, \
     window_end AS endtime \
     FROM TABLE(SESSION(TABLE sbid PARTITION BY bidder, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) \
     GROUP BY bidder, window_start, window_end";

/// 7 bidders bidding in turn every 300 ms from `start_s`; each pauses for
/// 15 s (one 50-row stretch in five, shifted per bidder), which ends its
/// session.
async fn insert_session_bids(client: &tokio_postgres::Client, start_s: i64, rows: i64) {
    let base = 1_735_689_600_000i64 + start_s * 1000;
    exec(
        client,
        &format!(
            "INSERT INTO sbid SELECT i % 7, i % 100, CAST(to_timestamp_millis({base} + i * 300) AS timestamp) \
             FROM generate_series(0, {}) AS s(i) WHERE (i / 50 + i % 7) % 5 <> 0",
            rows - 1
        ),
    )
    .await;
}

/// Flink's SESSION windows: the streaming view holds exactly the sessions
/// the watermark has closed, equal to the independent oracle's, before and
/// after a crash; the ad hoc query over the same table function gives every
/// session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_windows_match_the_gap_oracle_and_survive_a_crash() {
    let mut server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    exec(
        &client,
        "CREATE TABLE sbid (bidder bigint, price bigint, date_time timestamp, \
         WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND)",
    )
    .await;
    for backend in ["rocksdb", "memory"] {
        exec(
            &client,
            &format!(
                "CREATE MATERIALIZED VIEW sessions_{backend} WITH (parallelism = 2, \
                 state_backend = '{backend}') AS {SESSION_QUERY} EMIT ON WINDOW CLOSE"
            ),
        )
        .await;
    }
    // Closed: ended at or before the watermark (4 s behind the latest bid).
    let closed = format!(
        "SELECT * FROM ({SESSION_ORACLE}) o \
         WHERE endtime <= (SELECT max(date_time) - INTERVAL '4' SECOND FROM sbid)"
    );
    insert_session_bids(&client, 0, 1500).await;
    exec(&client, "FLUSH").await;
    let open = int(
        &client,
        &format!("SELECT count(*) FROM ({SESSION_ORACLE}) o"),
    )
    .await
        - int(&client, &format!("SELECT count(*) FROM ({closed}) c")).await;
    assert!(open > 0, "some sessions are still open");
    for backend in ["rocksdb", "memory"] {
        assert_view_matches(&client, &format!("sessions_{backend}"), &closed).await;
    }
    assert_view_matches(
        &client,
        &format!("({SESSION_ORACLE}) AS all_sessions"),
        SESSION_QUERY,
    )
    .await;

    drop(client);
    block_in_place(|| server.kill()).unwrap();
    block_in_place(|| server.start_again()).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    // Continues the same bids, so the open sessions grow across the crash.
    exec(
        &client,
        "INSERT INTO sbid SELECT i % 7, i % 100, \
         CAST(to_timestamp_millis(1735689600000 + i * 300) AS timestamp) \
         FROM generate_series(1500, 2999) AS s(i) WHERE (i / 50 + i % 7) % 5 <> 0",
    )
    .await;
    exec(&client, "FLUSH").await;
    for backend in ["rocksdb", "memory"] {
        assert_view_matches(&client, &format!("sessions_{backend}"), &closed).await;
    }
    let err = client
        .batch_execute(
            "CREATE TABLE nowm (k int, ts timestamp); \
             CREATE MATERIALIZED VIEW s AS SELECT k, window_end FROM \
             TABLE(SESSION(TABLE nowm PARTITION BY k, DESCRIPTOR(ts), INTERVAL '1' SECOND))",
        )
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("0A000"), "{err}");
    block_in_place(|| server.stop()).unwrap();
}
