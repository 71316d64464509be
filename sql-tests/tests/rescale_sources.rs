//! Rescaling streaming queries over connector sources from a checkpoint:
//! `ALTER STREAMING QUERY q SET (parallelism = N)` in the middle of a
//! `file`, `nexmark` and `datagen` source (each paced, so that the
//! rescales come before its end), 1 → 4 → 2 subtasks. A source's
//! checkpoint keeps the position of each split (a file's rows, a generator
//! layout's rows), which another number of subtasks takes over. Each query
//! must equal the same SELECT run ad hoc over the whole bounded source once
//! the input ended: no row lost, none counted twice, and with windows that
//! fire on the watermark, no row late after a rescale.

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use tokio::task::block_in_place;
use tokio_postgres::Client;
use weir_sql_tests::sql::{assert_view_matches, eventually, exec, int, wait_finished};
use weir_sql_tests::TestServer;

/// Rows the aggregate `{q}_agg` has counted so far (committed).
async fn counted(client: &Client, q: &str) -> i64 {
    int(
        client,
        &format!("SELECT CAST(sum(n) AS bigint) FROM {q}_agg"),
    )
    .await
}

/// Source subtasks of streaming query `q` that run now.
async fn source_subtasks(client: &Client, q: &str) -> i64 {
    int(
        client,
        &format!(
            "SELECT count(*) FROM system.tasks WHERE query = '{q}' \
             AND operator LIKE 'StreamTableScan%'"
        ),
    )
    .await
}

/// Streaming queries `{q}_agg` (`agg`, whose column `n` counts rows) and
/// `{q}_win` (`win`, windows that fire on the watermark), over `source`
/// (`{t}`), at parallelism 1; both go to 4, then to 2 subtasks while the
/// (paced) source is in the middle of its `total` rows; then they must
/// equal their SELECTs run ad hoc over the source.
async fn rescale_mid_stream(
    client: &Client,
    q: &str,
    source: &str,
    agg: &str,
    win: &str,
    total: i64,
) {
    let sql = |query: &str| query.replace("{t}", source);
    for (name, query) in [(format!("{q}_agg"), agg), (format!("{q}_win"), win)] {
        exec(
            client,
            &format!(
                "CREATE STREAMING QUERY {name} WITH (parallelism = 1, \
                 checkpoint_interval = '100ms') AS {}",
                sql(query)
            ),
        )
        .await;
    }
    let mut before = 0;
    for parallelism in [4, 2] {
        // Rows went through at the current parallelism first.
        eventually(
            &format!("{q}: progress before the rescale to {parallelism}"),
            Duration::from_secs(120),
            || async { counted(client, q).await > before },
        )
        .await;
        for name in [format!("{q}_agg"), format!("{q}_win")] {
            exec(
                client,
                &format!("ALTER STREAMING QUERY {name} SET (parallelism = {parallelism})"),
            )
            .await;
            assert_eq!(
                source_subtasks(client, &name).await,
                parallelism,
                "{name} runs at its new parallelism"
            );
        }
        // The rescale took its checkpoint in the middle of the source.
        before = counted(client, q).await;
        assert!(
            before < total,
            "{q}: the source ended ({before} of {total} rows) before the rescale to \
             {parallelism}; the test needs it in the middle"
        );
    }
    wait_finished(client, &[&format!("{q}_agg"), &format!("{q}_win")]).await;
    assert_eq!(counted(client, q).await, total, "{q}: every row once");
    assert_view_matches(client, &format!("{q}_agg"), &sql(agg)).await;
    let oracle = sql(win).replace(" EMIT ON WINDOW CLOSE", "");
    assert_view_matches(client, &format!("{q}_win"), &oracle).await;
}

/// `files` CSV files of `k,v,at` rows: row `i` (of `rows`) goes to file
/// `i % files`, so every file spans the whole time range, in time order.
fn write_files(dir: &Path, first_file: usize, files: usize, rows: usize) {
    std::fs::create_dir_all(dir).unwrap();
    for f in 0..files {
        let mut csv = String::new();
        for i in (f..rows).step_by(files) {
            let ms = i as i64 * 3;
            writeln!(
                csv,
                "{},{},2025-01-01 {:02}:{:02}:{:02}.{:03}",
                i % 17,
                (i * 31) % 1000,
                ms / 3_600_000,
                ms / 60_000 % 60,
                ms / 1000 % 60,
                ms % 1000
            )
            .unwrap();
        }
        // Written whole, then renamed: the source never sees half a file.
        let name = format!("part-{:02}.csv", first_file + f);
        let tmp = dir.join(format!(".{name}"));
        std::fs::write(&tmp, csv).unwrap();
        std::fs::rename(&tmp, dir.join(name)).unwrap();
    }
}

const AGG: &str = "SELECT k, count(*) AS n, sum(v) AS s FROM {t} GROUP BY k";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_source_query_rescales_mid_stream_and_takes_new_files_after_a_restart() {
    let mut server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let dir = server.root_dir().join("parts");
    // 60,000 rows at 10,000 a second: 6 s.
    let (files, rows) = (12, 60_000);
    write_files(&dir, 0, files, rows);
    let client = server.connect().await.unwrap();
    exec(
        &client,
        &format!(
            "CREATE SOURCE s (k int, v int, at timestamp, \
             WATERMARK FOR at AS at - INTERVAL '1' SECOND) \
             WITH (connector = 'file', path = '{}', format = 'csv', \
             'rows-per-second' = '10000')",
            dir.display()
        ),
    )
    .await;
    let win = "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s \
               FROM tumble({t}, at, INTERVAL '10' SECOND) \
               GROUP BY k, window_start, window_end EMIT ON WINDOW CLOSE";
    rescale_mid_stream(&client, "f", "s", AGG, win, rows as i64).await;

    // A file added by the restart is a new split: read from its start,
    // while the others stay at their end.
    write_files(&dir, files, 1, 1000);
    drop(client);
    block_in_place(|| server.restart()).unwrap();
    let client = server.connect().await.unwrap();
    wait_finished(&client, &["f_agg"]).await;
    assert_eq!(counted(&client, "f").await, rows as i64 + 1000);
    assert_view_matches(&client, "f_agg", &AGG.replace("{t}", "s")).await;
    block_in_place(|| server.stop()).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nexmark_source_query_rescales_mid_stream() {
    let server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    // 120,000 events (110,400 bids) at 20,000 events a second: 6 s.
    let (events, bids) = (120_000, 110_400);
    exec(
        &client,
        &format!(
            "CREATE SOURCE bid (auction bigint, bidder bigint, price bigint, channel text, \
             url text, date_time timestamp, extra text, \
             WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) \
             WITH (connector = 'nexmark', 'nexmark.table.type' = 'bid', \
             'nexmark.event.num' = '{events}', 'nexmark.min.event.gap.in.ns' = '50000')"
        ),
    )
    .await;
    let agg = "SELECT auction % 10 AS k, count(*) AS n, sum(price) AS s FROM {t} \
               GROUP BY auction % 10";
    let win = "SELECT auction, window_start, window_end, count(*) AS n, sum(price) AS total, \
               max(date_time) AS last FROM tumble({t}, date_time, INTERVAL '1' SECOND) \
               GROUP BY auction, window_start, window_end EMIT ON WINDOW CLOSE";
    rescale_mid_stream(&client, "nx", "bid", agg, win, bids).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datagen_source_query_rescales_mid_stream() {
    let server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    // 60,000 rows at 10,000 a second: 6 s.
    let rows = 60_000;
    exec(
        &client,
        &format!(
            "CREATE SOURCE g (id bigint, k integer, v integer, at timestamp, \
             WATERMARK FOR at AS at - INTERVAL '1' SECOND) \
             WITH ('connector' = 'datagen', 'rows-per-second' = '10000', \
             'number-of-rows' = '{rows}', 'seed' = '7', \
             'fields.id.kind' = 'sequence', 'fields.k.min' = '0', 'fields.k.max' = '9', \
             'fields.v.min' = '-1000', 'fields.v.max' = '1000', \
             'fields.at.kind' = 'sequence', 'fields.at.start' = '2025-01-01 00:00:00', \
             'fields.at.step' = '10ms')"
        ),
    )
    .await;
    let agg = "SELECT k, count(*) AS n, sum(v) AS s, count(DISTINCT id) AS ids FROM {t} \
               GROUP BY k";
    let win = "SELECT k, window_start, window_end, count(*) AS n, sum(v) AS s, \
               min(id) AS lo, max(id) AS hi FROM tumble({t}, at, INTERVAL '10' SECOND) \
               GROUP BY k, window_start, window_end EMIT ON WINDOW CLOSE";
    rescale_mid_stream(&client, "dg", "g", agg, win, rows).await;
}
