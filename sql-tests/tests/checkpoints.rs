//! Checkpoints end to end: unaligned vs. aligned under backpressure, resuming
//! from a checkpoint with captured in-flight data, and falling back from a
//! damaged checkpoint. Results are compared with the view's query run ad hoc
//! over the base table.

use std::time::{Duration, Instant};

use tokio::task::block_in_place;
use weir_sql_tests::sql::{assert_view_matches, exec, int, rows};
use weir_sql_tests::TestServer;

const SLOW: &str =
    "SELECT k, count(*) AS n, sum(v) AS s FROM t WHERE pg_sleep(0.00005) IS NULL GROUP BY k";
const ORACLE: &str = "SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unaligned_checkpoints_complete_under_backpressure_while_aligned_wait() {
    let mut server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    exec(&client, "CREATE TABLE t (k int, v bigint)").await;
    // A slow filter (pg_sleep per row) downstream of a fast source.
    for (name, mode) in [("ua", "unaligned"), ("al", "aligned")] {
        exec(
            &client,
            &format!(
                "CREATE MATERIALIZED VIEW {name} WITH (parallelism = 2, checkpoint_mode = '{mode}', \
                 checkpoint_interval = '200ms') AS {SLOW}"
            ),
        )
        .await;
    }
    let total = 240_000;
    exec(
        &client,
        &format!("INSERT INTO t SELECT i % 7, i FROM generate_series(1, {total}) AS s(i)"),
    )
    .await;

    // Wait for the moment that shows the difference: the aligned query has
    // a checkpoint in progress (its barrier queued behind the backlog) while
    // the unaligned one completed a checkpoint after that one started, with
    // the overtaken data persisted, and had not yet processed everything.
    // (Both trigger every 200 ms, the unaligned one a little earlier, so its
    // checkpoint of the same round may have been triggered first.)
    let deadline = Instant::now() + Duration::from_secs(90);
    let seen = loop {
        assert!(
            Instant::now() < deadline,
            "never saw unaligned checkpoints complete while an aligned one waited:\n{:?}",
            rows(&client, "SELECT query, checkpoint_id, mode, status, persisted_in_flight_bytes FROM system.checkpoints ORDER BY 1, 2").await
        );
        let overtaking = int(
            &client,
            "SELECT count(*) FROM system.checkpoints u, system.checkpoints a \
             WHERE u.query = 'ua' AND a.query = 'al' AND a.status = 'in_progress' \
             AND u.status = 'completed' AND u.mode = 'unaligned' \
             AND u.persisted_in_flight_bytes > 0 AND u.completed_at > a.triggered_at",
        )
        .await;
        let processed = int(&client, "SELECT coalesce(sum(n), 0) FROM ua").await;
        if overtaking >= 1 && processed < total {
            break processed;
        }
        if processed >= total {
            panic!(
                "the unaligned query processed the whole backlog before the difference was seen:\n{:?}",
                rows(&client, "SELECT query, checkpoint_id, mode, status, persisted_in_flight_bytes, triggered_at, completed_at FROM system.checkpoints ORDER BY 1, 2").await
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(seen < total);

    // Aligned checkpoints never persist in-flight data.
    assert_eq!(
        int(
            &client,
            "SELECT count(*) FROM system.checkpoints WHERE query = 'al' \
             AND (persisted_in_flight_bytes > 0 OR mode <> 'aligned')"
        )
        .await,
        0
    );

    // Crash in the middle of the backlog: the unaligned query resumes from
    // a checkpoint holding in-flight data, replayed before live input.
    drop(client);
    block_in_place(|| server.crash_and_restart()).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    exec(&client, "FLUSH").await;
    assert_view_matches(&client, "ua", ORACLE).await;
    assert_view_matches(&client, "al", ORACLE).await;
    assert_eq!(int(&client, "SELECT sum(n) FROM ua").await, total);
    block_in_place(|| server.stop()).unwrap();
}

/// The newest checkpoint directory of the only query in the data dir.
fn latest_checkpoint(server: &TestServer) -> std::path::PathBuf {
    let root = server.data_dir().join("checkpoints");
    let query = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .next()
        .expect("a query checkpoint dir")
        .path();
    std::fs::read_dir(&query)
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            name.strip_prefix("chk-")
                .and_then(|n| n.parse::<u64>().ok())
                .map(|n| (n, e.path()))
        })
        .max_by_key(|(n, _)| *n)
        .expect("a checkpoint")
        .1
}

async fn fallback_from_damaged_checkpoint(backend: &str) {
    let mut server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    exec(&client, "CREATE TABLE t (k int, v bigint)").await;
    exec(
        &client,
        &format!(
            "CREATE MATERIALIZED VIEW agg WITH (parallelism = 2, state_backend = '{backend}', \
             checkpoint_interval = '1h') AS {ORACLE}"
        ),
    )
    .await;
    exec(
        &client,
        "INSERT INTO t SELECT i % 5, i FROM generate_series(1, 1000) AS s(i)",
    )
    .await;
    exec(&client, "FLUSH").await;
    exec(
        &client,
        "INSERT INTO t SELECT i % 9, i FROM generate_series(1, 500) AS s(i)",
    )
    .await;
    exec(&client, "FLUSH").await;
    drop(client);
    block_in_place(|| server.kill()).unwrap();

    // Damage the newest checkpoint: its results are committed already, so
    // the query must resume from the previous one and catch up without
    // counting that epoch twice.
    let latest = latest_checkpoint(&server);
    if backend == "memory" {
        let file = latest.join("state.bin");
        let mut bytes = std::fs::read(&file).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        std::fs::write(&file, bytes).unwrap();
    } else {
        // One subtask's store of the aggregate.
        let store = std::fs::read_dir(latest.join("state"))
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .min()
            .expect("a store in the checkpoint");
        std::fs::remove_file(store.join("CURRENT")).unwrap();
    }
    block_in_place(|| server.start_again()).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    exec(&client, "FLUSH").await;
    assert_view_matches(&client, "agg", ORACLE).await;
    let reported = rows(
        &client,
        "SELECT failure FROM system.checkpoints WHERE query = 'agg' AND kind = 'restore' AND status = 'failed'",
    )
    .await;
    assert_eq!(
        reported.len(),
        1,
        "one unusable checkpoint reported: {reported:?}"
    );
    let why = reported[0][0].clone().unwrap_or_default();
    let expected = if backend == "memory" {
        "checksum"
    } else {
        "CURRENT"
    };
    assert!(why.contains(expected), "unclear failure reason: {why}");
    // And it keeps going.
    exec(&client, "INSERT INTO t VALUES (1, 1), (42, 42)").await;
    exec(&client, "FLUSH").await;
    assert_view_matches(&client, "agg", ORACLE).await;
    block_in_place(|| server.stop()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_memory_checkpoint_falls_back_to_previous() {
    fallback_from_damaged_checkpoint("memory").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn damaged_rocksdb_checkpoint_falls_back_to_previous() {
    fallback_from_damaged_checkpoint("rocksdb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkpoint_options_and_alter() {
    let server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    exec(&client, "CREATE TABLE t (k int, v bigint)").await;
    exec(
        &client,
        &format!(
            "CREATE MATERIALIZED VIEW agg WITH (parallelism = 2, checkpoint_interval = '1h', \
             checkpoints_retained = 2) AS {ORACLE}"
        ),
    )
    .await;
    for i in 0..4 {
        exec(&client, &format!("INSERT INTO t VALUES ({i}, {i})")).await;
        exec(&client, "FLUSH").await;
    }
    // Only the retained checkpoints stay on disk.
    let dir = latest_checkpoint(&server);
    let kept = std::fs::read_dir(dir.parent().unwrap())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("chk-"))
        .count();
    assert_eq!(kept, 2);
    // Results are only what completed checkpoints committed: with a 1h
    // interval and no FLUSH, a new row is not visible yet.
    exec(&client, "INSERT INTO t VALUES (100, 100)").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        int(&client, "SELECT count(*) FROM agg WHERE k = 100").await,
        0
    );
    // A shorter interval applies without a restart.
    exec(
        &client,
        "ALTER MATERIALIZED VIEW agg SET (checkpoint_interval = '50ms')",
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while int(&client, "SELECT count(*) FROM agg WHERE k = 100").await == 0 {
        assert!(
            Instant::now() < deadline,
            "the new interval never took effect"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Rescale from a checkpoint: state is redistributed by key group.
    exec(&client, "ALTER MATERIALIZED VIEW agg SET (parallelism = 3)").await;
    exec(
        &client,
        "INSERT INTO t SELECT i % 13, i FROM generate_series(1, 300) AS s(i)",
    )
    .await;
    exec(&client, "FLUSH").await;
    assert_view_matches(&client, "agg", ORACLE).await;
    // Switching the state backend with a rescale: the memory backend reads
    // its key groups out of the RocksDB checkpoint's stores, then RocksDB
    // stores are filled from the memory checkpoint's file.
    for (backend, parallelism, k) in [("memory", 2, 17), ("rocksdb", 3, 19)] {
        exec(
            &client,
            &format!(
                "ALTER MATERIALIZED VIEW agg SET (state_backend = '{backend}', parallelism = {parallelism})"
            ),
        )
        .await;
        exec(
            &client,
            &format!("INSERT INTO t SELECT i % {k}, i FROM generate_series(1, 200) AS s(i)"),
        )
        .await;
        exec(&client, "FLUSH").await;
        assert_view_matches(&client, "agg", ORACLE).await;
        // The new backend wrote the newest completed checkpoint (the
        // newest directory may belong to one being written right now).
        let completed = weir_sql_tests::sql::int(
            &client,
            "SELECT max(checkpoint_id) FROM system.checkpoints WHERE query = 'agg' AND status = 'completed'",
        )
        .await;
        let latest = latest_checkpoint(&server).with_file_name(format!("chk-{completed}"));
        let written = if backend == "memory" {
            "state.bin"
        } else {
            "state"
        };
        assert!(
            latest.join(written).exists(),
            "{} has no {written}",
            latest.display()
        );
    }
    // Bad options are refused with a SQLSTATE, the query unchanged.
    for bad in [
        "ALTER MATERIALIZED VIEW agg SET (checkpoint_mode = 'sideways')",
        "ALTER MATERIALIZED VIEW agg SET (checkpoint_interval = 'soon')",
        "ALTER MATERIALIZED VIEW agg SET (no_such_option = 1)",
        "ALTER MATERIALIZED VIEW missing SET (checkpoint_interval = '1s')",
    ] {
        let err = client.batch_execute(bad).await.expect_err(bad);
        let code = err.code().map(|c| c.code().to_string());
        let want = if bad.contains("missing") {
            "42P01"
        } else {
            "22023"
        };
        assert_eq!(code.as_deref(), Some(want), "{bad}: {err}");
    }
    exec(&client, "INSERT INTO t VALUES (7, 7)").await;
    exec(&client, "FLUSH").await;
    assert_view_matches(&client, "agg", ORACLE).await;
}
