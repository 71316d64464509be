//! What a script sees without `FLUSH` between its statements:
//! `CREATE MATERIALIZED VIEW` / `CREATE STREAMING QUERY` return once the
//! result reflects what the inputs held (unless `background_ddl` is on:
//! then `system.backfills` shows the progress), and with `implicit_flush`
//! (RisingWave's `RW_IMPLICIT_FLUSH`) every write returns once the results
//! reflect it. The queries checkpoint once an hour, so nothing but the
//! statement itself can make a result visible in time. Results are checked
//! against the defining query run ad hoc.

use std::time::Duration;

use tokio::task::block_in_place;
use tokio_postgres::Client;
use weir_sql_tests::sql::{assert_view_matches, eventually, exec, int, rows, text};
use weir_sql_tests::TestServer;

const SLOW: &str = "checkpoint_interval = '1h'";

async fn start() -> (TestServer, Client) {
    let server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    (server, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_view_reflects_its_inputs_when_create_returns() {
    let (_server, client) = start().await;
    exec(&client, "CREATE TABLE t (k int PRIMARY KEY, g int, v int)").await;
    exec(
        &client,
        "INSERT INTO t SELECT value, value % 7, value * 3 FROM generate_series(1, 2000)",
    )
    .await;
    let agg = "SELECT g, count(*) AS n, sum(v) AS s FROM t GROUP BY g";
    exec(
        &client,
        &format!("CREATE MATERIALIZED VIEW mv WITH ({SLOW}) AS {agg}"),
    )
    .await;
    assert_view_matches(&client, "mv", agg).await;
    // A query over the new view's result, at once.
    let top = "SELECT max(s) AS m FROM mv";
    exec(
        &client,
        &format!("CREATE STREAMING QUERY q WITH ({SLOW}) AS {top}"),
    )
    .await;
    assert_view_matches(&client, "q", top).await;
    let done = rows(
        &client,
        "SELECT query, status, rows_total, rows_done, progress_percent FROM system.backfills ORDER BY query",
    )
    .await;
    assert_eq!(done.len(), 2, "{done:?}");
    assert_eq!(done[0][0].as_deref(), Some("mv"));
    assert_eq!(done[0][1].as_deref(), Some("done"));
    assert_eq!(done[0][2].as_deref(), Some("2000"));
    assert_eq!(done[0][3].as_deref(), Some("2000"));
    assert_eq!(done[0][4].as_deref(), Some("100"));
    assert_eq!(done[1][1].as_deref(), Some("done"));

    // Writes are not visible before a checkpoint without implicit_flush...
    exec(&client, "INSERT INTO t VALUES (5000, 1, 1)").await;
    assert_eq!(int(&client, "SELECT sum(n) FROM mv").await, 2000);
    // ... and are with it, for every kind of write.
    exec(&client, "SET implicit_flush = on").await;
    assert_eq!(
        text(&client, "SHOW implicit_flush").await.as_deref(),
        Some("on")
    );
    exec(&client, "INSERT INTO t VALUES (5001, 2, 2)").await;
    assert_view_matches(&client, "mv", agg).await;
    assert_eq!(int(&client, "SELECT sum(n) FROM mv").await, 2002);
    exec(&client, "UPDATE t SET v = v + 1000 WHERE g = 3").await;
    assert_view_matches(&client, "mv", agg).await;
    assert_view_matches(&client, "q", top).await;
    exec(&client, "DELETE FROM t WHERE g = 4").await;
    assert_view_matches(&client, "mv", agg).await;
    let sink = client
        .copy_in::<_, std::io::Cursor<Vec<u8>>>("COPY t FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    futures::pin_mut!(sink);
    futures::SinkExt::send(
        &mut sink,
        std::io::Cursor::new(b"6001,4,7\n6002,4,8\n".to_vec()),
    )
    .await
    .unwrap();
    assert_eq!(sink.finish().await.unwrap(), 2);
    assert_view_matches(&client, "mv", agg).await;
    assert_eq!(int(&client, "SELECT n FROM mv WHERE g = 4").await, 2);
    exec(&client, "SET implicit_flush = off").await;
    exec(&client, "DELETE FROM t WHERE g = 5").await;
    assert_eq!(
        int(&client, "SELECT count(*) FROM mv WHERE g = 5").await,
        1,
        "without implicit_flush the delete waits for a checkpoint"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn risingwave_scripts_run_unchanged() {
    let (_server, client) = start().await;
    // As RisingWave's own scripts and docs write it.
    exec(&client, "SET RW_IMPLICIT_FLUSH TO true").await;
    assert_eq!(
        text(&client, "SHOW RW_IMPLICIT_FLUSH").await.as_deref(),
        Some("on")
    );
    exec(&client, "CREATE TABLE orders (id int, amount int)").await;
    exec(&client, "INSERT INTO orders VALUES (1, 10), (2, 20)").await;
    exec(
        &client,
        &format!(
            "CREATE MATERIALIZED VIEW total WITH ({SLOW}) AS SELECT sum(amount) AS s FROM orders"
        ),
    )
    .await;
    assert_eq!(int(&client, "SELECT s FROM total").await, 30);
    exec(&client, "INSERT INTO orders VALUES (3, 30)").await;
    assert_eq!(int(&client, "SELECT s FROM total").await, 60);
    let err = client
        .batch_execute("SET implicit_flush = maybe")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "22023");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_ddl_returns_at_once_and_shows_progress() {
    let (_server, client) = start().await;
    exec(&client, "CREATE TABLE big (k int, v int)").await;
    exec(
        &client,
        "INSERT INTO big SELECT value % 100, value FROM generate_series(1, 5000)",
    )
    .await;
    exec(&client, "SET background_ddl = on").await;
    // A slow operator keeps the backfill from finishing while we look.
    let query = "SELECT k, count(*) AS n FROM big WHERE pg_sleep(0.001) IS NULL GROUP BY k";
    exec(
        &client,
        &format!("CREATE MATERIALIZED VIEW slow WITH ({SLOW}, parallelism = 1) AS {query}"),
    )
    .await;
    let first = rows(
        &client,
        "SELECT status, rows_total, progress_percent FROM system.backfills WHERE query = 'slow'",
    )
    .await;
    assert_eq!(first[0][0].as_deref(), Some("running"), "{first:?}");
    assert_eq!(first[0][1].as_deref(), Some("5000"));
    assert_eq!(int(&client, "SELECT count(*) FROM slow").await, 0);
    eventually(
        "the backfill to finish",
        Duration::from_secs(300),
        || async {
            text(
                &client,
                "SELECT status FROM system.backfills WHERE query = 'slow'",
            )
            .await
            .as_deref()
                == Some("done")
        },
    )
    .await;
    assert_view_matches(
        &client,
        "slow",
        "SELECT k, count(*) AS n FROM big GROUP BY k",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_query_failing_on_existing_rows_is_created_with_a_warning() {
    let (_server, client) = start().await;
    exec(&client, "CREATE TABLE t (k int, v int)").await;
    exec(&client, "INSERT INTO t VALUES (1, 1), (2, 0)").await;
    let messages = client
        .simple_query(
            "CREATE STREAMING QUERY strict WITH (restart_strategy = 'none') AS SELECT k, 10 / v AS r FROM t",
        )
        .await
        .unwrap();
    assert!(!messages.is_empty());
    // CREATE returned at the failure; the supervisor records it next.
    eventually("strict to be FAILED", Duration::from_secs(30), || async {
        text(
            &client,
            "SELECT status FROM system.streaming_queries WHERE name = 'strict'",
        )
        .await
        .as_deref()
            == Some("FAILED")
    })
    .await;
    assert_eq!(
        text(
            &client,
            "SELECT status FROM system.backfills WHERE query = 'strict'"
        )
        .await
        .as_deref(),
        Some("failed")
    );
}
