//! Metrics end to end: values, not just names. Record counts equal what
//! was inserted, a slow operator shows itself busy and its upstream
//! backpressured, restarts and failures are counted, and the Prometheus
//! endpoint (checked by `promtool check metrics`) agrees with
//! `system.metrics`.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::task::block_in_place;
use tokio_postgres::Client;
use weir_sql_tests::sql::{exec, rows};
use weir_sql_tests::TestServer;

/// `GET /metrics`: the body, after checking the status and content type.
async fn scrape(server: &TestServer) -> String {
    let (head, body) = server.scrape_metrics().await.unwrap();
    assert!(
        head.starts_with("HTTP/1.0 200") || head.starts_with("HTTP/1.1 200"),
        "{head}"
    );
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    body
}

/// Runs `promtool check metrics` on an exposition (its strict parser
/// and linter).
fn promtool_check(body: &str) {
    use std::io::Write;
    let mut child = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect(
            "promtool (Debian's prometheus package; scripts/ensure-deps.sh --test installs it)",
        );
    child
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Samples of one metric: labels → value.
fn samples(body: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            let (n, labels) = match series.split_once('{') {
                Some((n, rest)) => (n, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if n != name {
                return None;
            }
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (k, v) = p.split_once("=\"").unwrap();
                    (k.to_string(), v.trim_end_matches('"').to_string())
                })
                .collect();
            Some((labels, value.parse().unwrap()))
        })
        .collect()
}

/// One value of `system.metrics`.
async fn metric(client: &Client, filter: &str) -> f64 {
    let r = rows(
        client,
        &format!("SELECT value FROM system.metrics WHERE {filter}"),
    )
    .await;
    assert_eq!(r.len(), 1, "{filter}: {r:?}");
    r[0][0].as_deref().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_restarts_and_failures_counted_and_endpoint_agrees() {
    let server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    exec(&client, "CREATE TABLE t (k int, v int)").await;
    exec(
        &client,
        "CREATE STREAMING QUERY q WITH (parallelism = 2) AS SELECT k, v FROM t WHERE v >= 0",
    )
    .await;
    // Fails twice, transiently, then goes on.
    exec(
        &client,
        "CREATE STREAMING QUERY r WITH (parallelism = 2, restart_strategy = 'fixed-delay', \
         restart_strategy.attempts = 5, restart_strategy.delay = '50ms') AS \
         SELECT k, count(*) AS n FROM t WHERE NOT fail_if(v = 13, 'flaky', 2) GROUP BY k",
    )
    .await;
    let n = 1234;
    exec(
        &client,
        &format!("INSERT INTO t SELECT i % 7, i FROM generate_series(1, {n}) AS s(i)"),
    )
    .await;
    exec(&client, "FLUSH").await;

    let op = |operator: &str, name: &str| {
        format!(
            "scope = 'operator' AND query = 'q' AND operator = '{operator}' AND name = '{name}'"
        )
    };
    assert_eq!(
        metric(&client, &op("StreamTableScan", "numRecordsIn")).await,
        n as f64
    );
    assert_eq!(
        metric(&client, &op("StreamMaterialize", "numRecordsOut")).await,
        n as f64
    );
    assert_eq!(
        metric(&client, &op("StreamFilter", "numRecordsIn")).await,
        n as f64
    );
    // The subtasks add up to their operator.
    let per_subtask = rows(
        &client,
        "SELECT sum(value), count(*) FROM system.metrics WHERE scope = 'subtask' AND query = 'q' \
         AND operator = 'StreamTableScan' AND name = 'numRecordsIn'",
    )
    .await;
    assert_eq!(per_subtask[0][0].as_deref(), Some("1234"));
    assert_eq!(per_subtask[0][1].as_deref(), Some("2"));
    // system.tasks shows the same counts per subtask.
    let tasks = rows(
        &client,
        "SELECT sum(records_in), count(*) FROM system.tasks \
         WHERE query = 'q' AND operator = 'StreamTableScan'",
    )
    .await;
    assert_eq!(tasks[0], [Some(n.to_string()), Some("2".to_string())]);
    let query = |name: &str| format!("scope = 'query' AND query = 'r' AND name = '{name}'");
    assert_eq!(metric(&client, &query("numRestarts")).await, 2.0);
    assert_eq!(metric(&client, &query("numFailures")).await, 2.0);
    assert_eq!(
        metric(
            &client,
            "scope = 'query' AND query = 'r' AND name = 'numFailuresByLabel' \
             AND labels = '{\"label\":\"failure.type\",\"value\":\"ExternalError\"}'"
        )
        .await,
        2.0
    );
    assert!(metric(&client, &query("numberOfCompletedCheckpoints")).await >= 1.0);
    assert_eq!(
        metric(&client, "scope = 'server' AND name = 'openSessions'").await,
        1.0
    );
    assert!(
        metric(
            &client,
            "scope = 'server' AND name = 'processResidentMemory'"
        )
        .await
            > 1e6
    );

    // The endpoint: valid for promtool, and the same values.
    let body = scrape(&server).await;
    promtool_check(&body);
    let scanned: f64 = samples(&body, "weir_operator_num_records_in_total")
        .iter()
        .filter(|(l, _)| l["query"] == "q" && l["operator"] == "StreamTableScan")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(scanned, n as f64);
    let emitted: f64 = samples(&body, "weir_operator_num_records_out_total")
        .iter()
        .filter(|(l, _)| l["query"] == "q" && l["operator"] == "StreamMaterialize")
        .map(|(_, v)| v)
        .sum();
    assert_eq!(emitted, n as f64);
    let restarts = samples(&body, "weir_query_num_restarts_total");
    assert!(
        restarts.iter().any(|(l, v)| l["query"] == "r" && *v == 2.0),
        "{restarts:?}"
    );
    let by_label = samples(&body, "weir_query_num_failures_by_label_total");
    assert!(
        by_label.iter().any(|(l, v)| l["query"] == "r"
            && l["label"] == "failure.type"
            && l["value"] == "ExternalError"
            && *v == 2.0),
        "{by_label:?}"
    );
    // Every subtask counter of the endpoint equals its row in system.metrics.
    let table = rows(
        &client,
        "SELECT query, operator_id, subtask, value FROM system.metrics \
         WHERE scope = 'subtask' AND name = 'numRecordsOut'",
    )
    .await;
    let scraped = samples(&body, "weir_operator_num_records_out_total");
    assert_eq!(table.len(), scraped.len());
    for r in &table {
        let hit = scraped.iter().find(|(l, _)| {
            Some(&l["query"]) == r[0].as_ref()
                && Some(&l["operator_id"]) == r[1].as_ref()
                && Some(&l["subtask"]) == r[2].as_ref()
        });
        let (_, v) = hit.unwrap_or_else(|| panic!("{r:?} not scraped"));
        let want: f64 = r[3].as_deref().unwrap().parse().unwrap();
        assert_eq!(*v, want, "{r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_operator_is_busy_and_backpressures_its_upstream() {
    let server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    exec(&client, "CREATE TABLE t (k int, v int)").await;
    exec(
        &client,
        "CREATE STREAMING QUERY slow WITH (parallelism = 1) AS \
         SELECT k, v FROM t WHERE pg_sleep(0.0002) IS NULL",
    )
    .await;
    // In writes of 5,000 rows: a table source may pass one write on as one
    // chunk, and a single 40 s call of the slow filter shows no busy time
    // until it returns.
    for b in 0..40 {
        exec(
            &client,
            &format!(
                "INSERT INTO t SELECT i % 7, i FROM generate_series({}, {}) AS s(i)",
                b * 5000 + 1,
                (b + 1) * 5000
            ),
        )
        .await;
    }
    let value = |operator: &'static str, name: &'static str| {
        let client = &client;
        async move {
            let r = rows(
                client,
                &format!(
                    "SELECT value FROM system.metrics WHERE scope = 'operator' AND query = 'slow' \
                     AND operator = '{operator}' AND name = '{name}'"
                ),
            )
            .await;
            r.first()
                .and_then(|r| r[0].as_deref())
                .map_or(0.0, |v| v.parse::<f64>().unwrap())
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let seen = (
            value("StreamFilter", "busyTimeMsPerSecond").await,
            value("StreamProject", "backPressuredTimeMsPerSecond").await,
            value("StreamTableScan", "backPressuredTimeMsPerSecond").await,
        );
        if seen.0 > 500.0 && seen.1 > 500.0 && seen.2 > 500.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the filter never busy with its upstream backpressured: (busy, project bp, scan bp) = {seen:?}\n{:?}\n{:?}",
            rows(&client, "SELECT count(*) FROM slow").await,
            rows(&client, "SELECT operator, name, value FROM system.metrics WHERE query = 'slow' AND scope = 'operator' AND name LIKE 'numRecords%'").await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The three shares add up to about a second per second.
    let sum = value("StreamFilter", "busyTimeMsPerSecond").await
        + value("StreamFilter", "backPressuredTimeMsPerSecond").await
        + value("StreamFilter", "idleTimeMsPerSecond").await;
    assert!((900.0..1100.0).contains(&sum), "{sum}");
    // system.tasks shows the busy subtask too.
    let busy = rows(
        &client,
        "SELECT busy_ms_per_second FROM system.tasks WHERE query = 'slow' AND operator = 'StreamFilter'",
    )
    .await;
    assert!(
        busy[0][0].as_deref().unwrap().parse::<i64>().unwrap() > 500,
        "{busy:?}"
    );
    // The backlog shows as source lag.
    assert!(value("StreamTableScan", "pendingRecords").await > 0.0);
    assert!(value("StreamFilter", "idleTimeMsPerSecond").await < 500.0);
}
