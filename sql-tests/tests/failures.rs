//! Failure handling end to end, over the wire: restart strategies (timing
//! and attempt counting), FAILED after exhaustion with results still
//! readable, exponential backoff resetting after a stable period, failure
//! rates, exceptions and their labels (built-in, SQL rules, plugins from the
//! config file), `restart = 'never'`, and exactly-once results across
//! restarts. Failures are caused with `fail_if(...)`.

use std::time::Duration;

use tokio::task::block_in_place;
use tokio_postgres::Client;
use weir_sql_tests::sql::{assert_view_matches, eventually, exec, int, rows, text, Rows};
use weir_sql_tests::TestServer;

async fn start() -> (TestServer, Client) {
    let server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    (server, client)
}

async fn status(client: &Client, q: &str) -> String {
    text(
        client,
        &format!("SELECT status FROM system.streaming_queries WHERE name = '{q}'"),
    )
    .await
    .unwrap_or_default()
}

async fn wait_status(client: &Client, q: &str, want: &str) {
    eventually(
        &format!("{q} to be {want}"),
        Duration::from_secs(30),
        || async { status(client, q).await == want },
    )
    .await;
}

/// (occurred_at in µs, action, restart_delay_ms) of a query's exceptions,
/// oldest first.
async fn exceptions(client: &Client, q: &str) -> Vec<(i64, String, Option<i64>)> {
    rows(
        client,
        &format!(
            "SELECT CAST(occurred_at AS BIGINT), action, restart_delay_ms FROM system.exceptions \
             WHERE query = '{q}' ORDER BY occurred_at"
        ),
    )
    .await
    .into_iter()
    .map(|r| {
        (
            r[0].as_deref().unwrap().parse().unwrap(),
            r[1].clone().unwrap(),
            r[2].as_deref().map(|d| d.parse().unwrap()),
        )
    })
    .collect()
}

const AGG: &str = "SELECT k, count(*) AS n, sum(v) AS s FROM t";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fixed_delay_restarts_then_fails_keeping_results_while_other_queries_run() {
    let (mut server, client) = start().await;
    exec(&client, "CREATE TABLE t (k int, v int)").await;
    exec(
        &client,
        &format!(
            "CREATE STREAMING QUERY q WITH (restart_strategy = 'fixed-delay', \
             'restart_strategy.attempts' = 2, 'restart_strategy.delay' = '400ms') AS \
             {AGG} WHERE NOT fail_if(v = 13, 'unlucky row') GROUP BY k"
        ),
    )
    .await;
    exec(
        &client,
        &format!("CREATE MATERIALIZED VIEW other AS {AGG} GROUP BY k"),
    )
    .await;
    exec(&client, "INSERT INTO t VALUES (1, 1), (1, 2), (2, 5)").await;
    exec(&client, "FLUSH").await;
    let before: Rows = rows(&client, "SELECT * FROM q ORDER BY k").await;
    assert_eq!(before.len(), 2);

    exec(&client, "INSERT INTO t VALUES (2, 13)").await;
    // Bad data: a restart cannot help, so FLUSH reports the failure.
    let err = client.batch_execute("FLUSH").await.unwrap_err();
    let db = err.as_db_error().expect("a server error");
    assert_eq!(db.code().code(), "P0001");
    assert!(db.message().contains("unlucky row"), "{}", db.message());

    wait_status(&client, "q", "FAILED").await;
    let ex = exceptions(&client, "q").await;
    // An aggregation joins the lanes into one region: restarts are full.
    let actions: Vec<&str> = ex.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(actions, ["full restart", "full restart", "query failed"]);
    assert_eq!(ex[0].2, Some(400));
    assert_eq!(ex[1].2, Some(400));
    assert_eq!(ex[2].2, None);
    for pair in ex.windows(2) {
        let gap_ms = (pair[1].0 - pair[0].0) / 1000;
        assert!(gap_ms >= 400, "restarted after {gap_ms} ms, not 400 ms");
    }
    let row = rows(
        &client,
        "SELECT num_restarts, health, failed_reason, last_failure, restart_strategy \
         FROM system.streaming_queries WHERE name = 'q'",
    )
    .await;
    assert_eq!(row[0][0].as_deref(), Some("2"));
    assert_eq!(row[0][1].as_deref(), Some("failed"));
    assert!(row[0][2].as_deref().unwrap().contains("exhausted"));
    assert_eq!(row[0][3].as_deref(), Some("unlucky row"));
    assert_eq!(
        row[0][4].as_deref(),
        Some("fixed-delay(attempts=2, delay=400ms)")
    );
    let classified = rows(
        &client,
        "SELECT DISTINCT operator, error_class, domain, retryable, sqlstate, labels \
         FROM system.exceptions WHERE query = 'q'",
    )
    .await;
    assert_eq!(classified.len(), 1, "{classified:?}");
    let c = &classified[0];
    assert_eq!(c[0].as_deref(), Some("StreamFilter"));
    assert_eq!(c[1].as_deref(), Some("injected"));
    assert_eq!(c[2].as_deref(), Some("user"));
    assert_eq!(c[3].as_deref(), Some("f"));
    assert_eq!(c[4].as_deref(), Some("P0001"));
    assert!(c[5]
        .as_deref()
        .unwrap()
        .contains("\"failure.type\":\"UserError\""));

    // The failed query's last results stay readable.
    assert_eq!(rows(&client, "SELECT * FROM q ORDER BY k").await, before);
    // The other query was never touched and keeps up; FLUSH passes over
    // the FAILED query.
    exec(&client, "INSERT INTO t VALUES (3, 7)").await;
    exec(&client, "FLUSH").await;
    assert_view_matches(&client, "other", &format!("{AGG} GROUP BY k")).await;
    assert_eq!(
        int(
            &client,
            "SELECT num_restarts FROM system.streaming_queries WHERE name = 'other'"
        )
        .await,
        0
    );
    assert_eq!(status(&client, "other").await, "RUNNING");
    // Subtasks of the failed run: the failing one FAILED, the rest CANCELED.
    let tasks = rows(
        &client,
        "SELECT operator, status, attempt FROM system.tasks WHERE query = 'q' AND status = 'FAILED'",
    )
    .await;
    assert_eq!(tasks.len(), 1, "{tasks:?}");
    assert_eq!(tasks[0][2].as_deref(), Some("2"));

    // FAILED is kept across a server restart, with its exceptions.
    drop(client);
    block_in_place(|| server.restart()).unwrap();
    let client = server.connect().await.unwrap();
    assert_eq!(status(&client, "q").await, "FAILED");
    assert_eq!(exceptions(&client, "q").await.len(), 3);
    assert_eq!(rows(&client, "SELECT * FROM q ORDER BY k").await, before);
    // The way out: dead-letter the bad row and restart from the last
    // checkpoint.
    exec(
        &client,
        "ALTER STREAMING QUERY q SET (on_error = 'dead_letter')",
    )
    .await;
    exec(&client, "ALTER STREAMING QUERY q RESTART").await;
    exec(&client, "FLUSH").await;
    assert_eq!(status(&client, "q").await, "RUNNING");
    assert_view_matches(&client, "q", &format!("{AGG} WHERE v <> 13 GROUP BY k")).await;
    assert_eq!(
        text(
            &client,
            "SELECT record FROM system.dead_letters WHERE query = 'q'"
        )
        .await
        .as_deref(),
        Some("{\"k\":2,\"v\":13}")
    );
    let err = client
        .batch_execute("ALTER STREAMING QUERY nosuch RESTART")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42P01");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exponential_backoff_grows_resets_after_stable_period_and_stays_exactly_once() {
    let (_server, client) = start().await;
    exec(&client, "CREATE TABLE t (k int, v int)").await;
    exec(&client, "CREATE TABLE dim (k int, name text)").await;
    // Transient failures: 'flaky-a' fails the first 4 times, 'flaky-b' once.
    exec(
        &client,
        "CREATE STREAMING QUERY q WITH (parallelism = 2, checkpoint_interval = '100ms', \
         restart_strategy = 'exponential-delay', \
         restart_strategy.initial_backoff = '100ms', restart_strategy.max_backoff = '400ms', \
         restart_strategy.backoff_multiplier = 2, restart_strategy.jitter_factor = 0, \
         restart_strategy.reset_backoff_threshold = '2s', restart_loop_threshold = 3) AS \
         SELECT t.k, d.name, count(*) AS n, sum(t.v) AS s FROM t JOIN dim d ON t.k = d.k \
         WHERE NOT fail_if(t.v = 13, 'flaky-a', 4) AND NOT fail_if(t.v = 14, 'flaky-b', 1) \
         GROUP BY t.k, d.name",
    )
    .await;
    let oracle = "SELECT t.k, d.name, count(*) AS n, sum(t.v) AS s FROM t JOIN dim d ON t.k = d.k \
                  GROUP BY t.k, d.name";
    exec(
        &client,
        "INSERT INTO dim VALUES (0, 'zero'), (1, 'one'), (2, 'two')",
    )
    .await;
    exec(
        &client,
        "INSERT INTO t SELECT i % 3, i % 1000 + 20 FROM generate_series(1, 3000) AS s(i)",
    )
    .await;
    exec(&client, "FLUSH").await;
    exec(&client, "INSERT INTO t VALUES (1, 13)").await;
    exec(
        &client,
        "INSERT INTO t SELECT i % 3, i FROM generate_series(20, 500) AS s(i)",
    )
    .await;
    // Retryable failures: FLUSH waits across the restarts.
    exec(&client, "FLUSH").await;
    assert_view_matches(&client, "q", oracle).await;
    let ex = exceptions(&client, "q").await;
    let delays: Vec<Option<i64>> = ex.iter().map(|e| e.2).collect();
    assert_eq!(delays, [Some(100), Some(200), Some(400), Some(400)]);
    let health = rows(
        &client,
        "SELECT status, health, num_restarts FROM system.streaming_queries WHERE name = 'q'",
    )
    .await;
    // Running again, yet in a restart loop by the threshold of 3.
    assert_eq!(
        health[0],
        [
            Some("RUNNING".into()),
            Some("restart_loop".into()),
            Some("4".into())
        ]
    );
    let domain = rows(
        &client,
        "SELECT DISTINCT domain, retryable FROM system.exceptions WHERE query = 'q'",
    )
    .await;
    assert_eq!(domain, [[Some("external".into()), Some("t".into())]]);

    // Stable for longer than reset_backoff_threshold: back to 100 ms.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    exec(&client, "INSERT INTO t VALUES (2, 14), (0, 1)").await;
    exec(&client, "FLUSH").await;
    let ex = exceptions(&client, "q").await;
    assert_eq!(ex.len(), 5);
    assert_eq!(ex[4].2, Some(100), "backoff did not reset: {ex:?}");
    // Exactly once across five restarts.
    assert_view_matches(&client, "q", oracle).await;
    let attempt = int(
        &client,
        "SELECT max(attempt) FROM system.tasks WHERE query = 'q'",
    )
    .await;
    assert_eq!(attempt, 5);
    assert_eq!(
        int(
            &client,
            "SELECT count(*) FROM system.tasks WHERE query = 'q' AND status <> 'RUNNING'"
        )
        .await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_rate_and_none_and_alter() {
    let (_server, client) = start().await;
    exec(&client, "CREATE TABLE t (k int, v int)").await;
    exec(
        &client,
        "CREATE STREAMING QUERY q WITH (restart_strategy = 'failure-rate', \
         restart_strategy.max_failures_per_interval = 2, \
         restart_strategy.failure_rate_interval = '1min', restart_strategy.delay = '100ms') AS \
         SELECT k, v FROM t WHERE NOT fail_if(v = 13, 'always')",
    )
    .await;
    exec(&client, "INSERT INTO t VALUES (1, 13)").await;
    wait_status(&client, "q", "FAILED").await;
    let ex = exceptions(&client, "q").await;
    let actions: Vec<&str> = ex.iter().map(|e| e.1.as_str()).collect();
    assert_eq!(
        actions,
        ["region restart", "region restart", "query failed"]
    );
    let reason = text(
        &client,
        "SELECT failed_reason FROM system.streaming_queries WHERE name = 'q'",
    )
    .await
    .unwrap();
    assert!(reason.contains("failure rate exceeded"), "{reason}");

    // ALTER changes the strategy of a running query: 'none' fails at once.
    exec(
        &client,
        "CREATE STREAMING QUERY r WITH (restart_strategy = 'fixed-delay', restart_strategy.attempts = 5) AS \
         SELECT k, v FROM t WHERE NOT fail_if(v = 14, 'boom')",
    )
    .await;
    exec(
        &client,
        "ALTER STREAMING QUERY r SET (restart_strategy = 'none')",
    )
    .await;
    assert_eq!(
        text(
            &client,
            "SELECT restart_strategy FROM system.streaming_queries WHERE name = 'r'"
        )
        .await
        .as_deref(),
        Some("none")
    );
    exec(&client, "INSERT INTO t VALUES (1, 14)").await;
    wait_status(&client, "r", "FAILED").await;
    let ex = exceptions(&client, "r").await;
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].1, "query failed");

    // Options are checked.
    for (bad, code) in [
        ("restart_strategy = 'sometimes'", "22023"),
        (
            "restart_strategy = 'none', restart_strategy.attempts = 3",
            "22023",
        ),
        ("failover_strategy = 'half'", "22023"),
        ("restart_strategy.jitter_factor = 2", "22023"),
    ] {
        let err = client
            .batch_execute(&format!(
                "CREATE STREAMING QUERY bad WITH ({bad}) AS SELECT k FROM t"
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code().unwrap().code(), code, "{bad}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_enricher_rules_label_failures_and_restart_never_ends_a_loop() {
    let (mut server, client) = start().await;
    exec(&client, "CREATE TABLE t (k int, v int)").await;
    exec(
        &client,
        "CREATE FAILURE ENRICHER poison WHEN error_class = 'injected' AND message LIKE '%poison%' \
         SET LABELS ('priority' = 'High', 'team' = 'ingest', 'restart' = 'never')",
    )
    .await;
    exec(
        &client,
        "CREATE FAILURE ENRICHER casts WHEN error_class = 'cast' SET LABELS (priority = 'Low')",
    )
    .await;
    // Mistakes in a rule are refused when it is created.
    let err = client
        .batch_execute("CREATE FAILURE ENRICHER x WHEN nosuch = 1 SET LABELS (a = 'b')")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42703");
    let err = client
        .batch_execute("CREATE FAILURE ENRICHER x WHEN subtask + 1 SET LABELS (a = 'b')")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42804");
    let err = client
        .batch_execute("CREATE FAILURE ENRICHER casts WHEN true SET LABELS (a = 'b')")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42710");

    // The default strategy would retry for ever; the label stops it.
    exec(
        &client,
        "CREATE STREAMING QUERY q AS SELECT k, v FROM t WHERE NOT fail_if(v = 13, 'poison pill')",
    )
    .await;
    exec(&client, "INSERT INTO t VALUES (1, 13)").await;
    wait_status(&client, "q", "FAILED").await;
    let ex = rows(
        &client,
        "SELECT labels, action FROM system.exceptions WHERE query = 'q'",
    )
    .await;
    assert_eq!(ex.len(), 1, "{ex:?}");
    let labels: serde_json::Value = serde_json::from_str(ex[0][0].as_deref().unwrap()).unwrap();
    assert_eq!(labels["priority"], "High");
    assert_eq!(labels["team"], "ingest");
    assert_eq!(labels["restart"], "never");
    assert_eq!(labels["failure.type"], "UserError");
    assert_eq!(labels["operator"], "StreamFilter");
    assert_eq!(ex[0][1].as_deref(), Some("query failed"));
    let reason = text(
        &client,
        "SELECT failed_reason FROM system.streaming_queries WHERE name = 'q'",
    )
    .await
    .unwrap();
    assert!(reason.contains("restart = 'never'"), "{reason}");
    let listed = rows(
        &client,
        "SELECT name, kind, invocations, matched FROM system.failure_enrichers ORDER BY name",
    )
    .await;
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        listed,
        [
            [s("builtin"), s("builtin"), s("1"), s("1")],
            [s("casts"), s("sql"), s("1"), s("0")],
            [s("poison"), s("sql"), s("1"), s("1")],
        ]
    );

    // Rules are catalog objects: they survive a restart; DROP removes them.
    exec(&client, "DROP FAILURE ENRICHER casts").await;
    drop(client);
    block_in_place(|| server.restart()).unwrap();
    let client = server.connect().await.unwrap();
    let names = rows(
        &client,
        "SELECT name FROM system.failure_enrichers ORDER BY name",
    )
    .await;
    assert_eq!(names, [[s("builtin")], [s("poison")]]);
    let err = client
        .batch_execute("DROP FAILURE ENRICHER casts")
        .await
        .unwrap_err();
    assert_eq!(err.code().unwrap().code(), "42704");
    exec(&client, "DROP FAILURE ENRICHER IF EXISTS casts").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plugin_enrichers_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        r#"
enricher_timeout = "300ms"

[[failure_enrichers]]
name = "codes"
plugin = "sqlstate"

[[failure_enrichers]]
name = "owner"
plugin = "command"
command = ["sh", "-c", "cat > /dev/null; echo '{\"owner\": \"ingest-team\"}'"]
output_keys = ["owner"]

[[failure_enrichers]]
name = "slow"
plugin = "command"
command = ["sh", "-c", "sleep 3; echo '{}'"]
output_keys = ["never"]

[[failure_enrichers]]
name = "broken"
plugin = "command"
command = ["sh", "-c", "echo 'lookup failed' >&2; exit 3"]
output_keys = ["x"]
"#,
    )
    .unwrap();
    let server = block_in_place(|| {
        TestServer::start_with_args(vec!["--config".into(), config.display().to_string()])
    })
    .unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    exec(&client, "CREATE TABLE t (k int, v int)").await;
    exec(
        &client,
        "CREATE STREAMING QUERY q WITH (restart_strategy = 'none') AS \
         SELECT k, v FROM t WHERE NOT fail_if(v = 13, 'boom')",
    )
    .await;
    exec(&client, "INSERT INTO t VALUES (1, 13)").await;
    wait_status(&client, "q", "FAILED").await;
    let labels = text(
        &client,
        "SELECT labels FROM system.exceptions WHERE query = 'q'",
    )
    .await
    .unwrap();
    let labels: serde_json::Value = serde_json::from_str(&labels).unwrap();
    assert_eq!(labels["owner"], "ingest-team");
    assert_eq!(labels["sqlstate"], "P0001");
    assert_eq!(labels["sqlstate.class"], "plpgsql_error");
    assert_eq!(labels["retryable"], "false");
    let errors = labels["enrichment.errors"].as_str().unwrap();
    assert!(errors.contains("slow: timed out after 300ms"), "{errors}");
    assert!(errors.contains("broken: exited with"), "{errors}");
    assert!(errors.contains("lookup failed"), "{errors}");
    let listed = rows(
        &client,
        "SELECT name, kind, invocations, matched, errors FROM system.failure_enrichers ORDER BY name",
    )
    .await;
    let s = |v: &str| Some(v.to_string());
    assert_eq!(
        listed,
        [
            [s("broken"), s("plugin"), s("1"), s("0"), s("1")],
            [s("builtin"), s("builtin"), s("1"), s("1"), s("0")],
            [s("codes"), s("plugin"), s("1"), s("1"), s("0")],
            [s("owner"), s("plugin"), s("1"), s("1"), s("0")],
            [s("slow"), s("plugin"), s("1"), s("0"), s("1")],
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_records_are_skipped_or_dead_lettered_exactly_once() {
    let (mut server, client) = start().await;
    exec(&client, "CREATE TABLE t (k int, v int)").await;
    exec(
        &client,
        "CREATE STREAMING QUERY skipping WITH (on_error = 'skip', parallelism = 2) AS \
         SELECT k, 100 / v AS r FROM t",
    )
    .await;
    // Bad rows inside an aggregate's argument; a transient failure on
    // v = 7 restarts the query twice after bad records were met, which
    // must not count them twice.
    exec(
        &client,
        "CREATE STREAMING QUERY lettering WITH (on_error = 'dead_letter', parallelism = 2, \
         checkpoint_interval = '50ms', restart_strategy = 'fixed-delay', \
         restart_strategy.attempts = 5, restart_strategy.delay = '50ms') AS \
         SELECT k, count(*) AS n, sum(100 / v) AS s FROM t \
         WHERE NOT fail_if(v = 7, 'flaky', 2) GROUP BY k",
    )
    .await;
    // The bad records come before the rows that fail transiently, so the
    // restarts replay them.
    exec(&client, "INSERT INTO t VALUES (1, 0), (2, 0), (3, 0)").await;
    exec(
        &client,
        "INSERT INTO t SELECT i % 5, i % 50 + 1 FROM generate_series(1, 5000) AS s(i)",
    )
    .await;
    exec(&client, "FLUSH").await;
    assert_view_matches(
        &client,
        "skipping",
        "SELECT k, 100 / v AS r FROM t WHERE v <> 0",
    )
    .await;
    assert_view_matches(
        &client,
        "lettering",
        "SELECT k, count(*) AS n, sum(100 / v) AS s FROM t WHERE v <> 0 GROUP BY k",
    )
    .await;
    let counts = |q: &'static str| {
        let client = &client;
        async move {
            rows(
                client,
                &format!(
                    "SELECT skipped_records, dead_letter_records FROM system.streaming_queries \
                     WHERE name = '{q}'"
                ),
            )
            .await[0]
                .clone()
        }
    };
    let s = |v: &str| Some(v.to_string());
    assert_eq!(counts("skipping").await, [s("3"), s("0")]);
    assert_eq!(counts("lettering").await, [s("0"), s("3")]);
    assert!(
        int(
            &client,
            "SELECT num_restarts FROM system.streaming_queries WHERE name = 'lettering'"
        )
        .await
            >= 1
    );
    let letters = rows(
        &client,
        "SELECT query, operator, change, record, error_class, sqlstate FROM system.dead_letters ORDER BY record",
    )
    .await;
    assert_eq!(letters.len(), 3, "{letters:?}");
    for (i, k) in ["1", "2", "3"].iter().enumerate() {
        assert_eq!(letters[i][0], s("lettering"));
        assert_eq!(letters[i][1], s("StreamHashAgg"));
        assert_eq!(letters[i][2], s("insert"));
        assert_eq!(letters[i][3], Some(format!("{{\"k\":{k},\"v\":0}}")));
        assert_eq!(letters[i][4], s("division_by_zero"));
        assert_eq!(letters[i][5], s("22012"));
    }
    let skipped = rows(
        &client,
        "SELECT action, error_class, count(*) FROM system.exceptions \
         WHERE query = 'skipping' GROUP BY action, error_class",
    )
    .await;
    assert_eq!(
        skipped,
        [[s("skipped record"), s("division_by_zero"), s("3")]]
    );

    // After kill -9, the committed counts and letters come back, and a new
    // bad record adds one, no more.
    drop(client);
    block_in_place(|| server.crash_and_restart()).unwrap();
    let client = server.connect().await.unwrap();
    exec(&client, "INSERT INTO t VALUES (4, 0), (4, 2)").await;
    exec(&client, "FLUSH").await;
    let counts = rows(
        &client,
        "SELECT name, skipped_records, dead_letter_records FROM system.streaming_queries ORDER BY name",
    )
    .await;
    assert_eq!(
        counts,
        [
            [s("lettering"), s("0"), s("4")],
            [s("skipping"), s("4"), s("0")]
        ]
    );
    assert_eq!(
        int(&client, "SELECT count(*) FROM system.dead_letters").await,
        4
    );
    assert_view_matches(
        &client,
        "skipping",
        "SELECT k, 100 / v AS r FROM t WHERE v <> 0",
    )
    .await;
    // Without on_error, bad data fails the query as before.
    let err = client
        .batch_execute("CREATE STREAMING QUERY strict WITH (restart_strategy = 'none') AS SELECT k, 100 / v AS r FROM t")
        .await;
    assert!(err.is_ok());
    wait_status(&client, "strict", "FAILED").await;
    assert_eq!(
        text(
            &client,
            "SELECT error_class FROM system.exceptions WHERE query = 'strict'"
        )
        .await
        .as_deref(),
        Some("division_by_zero")
    );
}

/// Region of the subtasks with the given attempt, as (region, attempt).
async fn task_attempts(client: &Client, q: &str) -> Vec<(i64, i64)> {
    rows(
        client,
        &format!(
            "SELECT DISTINCT region, attempt FROM system.tasks WHERE query = '{q}' ORDER BY 1, 2"
        ),
    )
    .await
    .into_iter()
    .map(|r| {
        (
            r[0].as_deref().unwrap().parse().unwrap(),
            r[1].as_deref().unwrap().parse().unwrap(),
        )
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn region_failover_restarts_one_lane_and_full_failover_restarts_all() {
    let (_server, client) = start().await;
    exec(&client, "CREATE TABLE t (k int, v int)").await;
    // A forward-only pipeline with parallelism 2: two lanes, two regions.
    for (name, failover, msg) in [("lanes", "region", "flake-a"), ("whole", "full", "flake-b")] {
        exec(
            &client,
            &format!(
                "CREATE STREAMING QUERY {name} WITH (parallelism = 2, failover_strategy = '{failover}', \
                 restart_strategy = 'fixed-delay', restart_strategy.attempts = 3, \
                 restart_strategy.delay = '1500ms', checkpoint_interval = '100ms') AS \
                 SELECT k, v, 100 / v AS r FROM t WHERE NOT fail_if(v = 13, '{msg}', 1)"
            ),
        )
        .await;
    }
    assert_eq!(task_attempts(&client, "lanes").await, [(0, 0), (1, 0)]);
    exec(
        &client,
        "INSERT INTO t SELECT i % 10, i % 100 + 20 FROM generate_series(1, 2000) AS s(i)",
    )
    .await;
    exec(&client, "FLUSH").await;
    exec(&client, "INSERT INTO t VALUES (3, 13)").await;

    // While the failed lane waits out its restart delay, the other lane
    // is still running.
    eventually(
        "the failure to be recorded",
        Duration::from_secs(20),
        || async {
            int(
                &client,
                "SELECT count(*) FROM system.exceptions WHERE query = 'lanes'",
            )
            .await
                == 1
        },
    )
    .await;
    let failed_region = int(
        &client,
        "SELECT region FROM system.exceptions WHERE query = 'lanes'",
    )
    .await;
    let during = rows(
        &client,
        &format!(
            "SELECT region = {failed_region}, status FROM system.tasks WHERE query = 'lanes' \
             GROUP BY 1, 2 ORDER BY 1, 2"
        ),
    )
    .await;
    let s = |v: &str| Some(v.to_string());
    assert!(
        during.contains(&vec![s("f"), s("RUNNING")])
            && !during.contains(&vec![s("t"), s("RUNNING")]),
        "{during:?}"
    );
    assert_eq!(status(&client, "lanes").await, "RUNNING");

    exec(&client, "INSERT INTO t VALUES (4, 21)").await;
    exec(&client, "FLUSH").await;
    let oracle = "SELECT k, v, 100 / v AS r FROM t";
    assert_view_matches(&client, "lanes", oracle).await;
    assert_view_matches(&client, "whole", oracle).await;

    // Region failover: only the failed lane's subtasks were restarted.
    let other = 1 - failed_region;
    let mut want = vec![(failed_region, 1), (other, 0)];
    want.sort();
    assert_eq!(task_attempts(&client, "lanes").await, want);
    let ex = exceptions(&client, "lanes").await;
    assert_eq!(ex.len(), 1);
    assert_eq!(ex[0].1, "region restart");
    // Full failover: every subtask was.
    assert_eq!(task_attempts(&client, "whole").await, [(0, 1), (1, 1)]);
    assert_eq!(exceptions(&client, "whole").await[0].1, "full restart");
    let counters = rows(
        &client,
        "SELECT name, num_restarts, full_restarts FROM system.streaming_queries ORDER BY name",
    )
    .await;
    assert_eq!(
        counters,
        [[s("lanes"), s("1"), s("0")], [s("whole"), s("1"), s("1")]]
    );
}
