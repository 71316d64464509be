//! A FAILED query keeps what is known of its failure across a server
//! restart: its SQLSTATE (any code, not only the ones Weir happens to
//! raise often), its domain and its exception rows.

use std::time::Duration;

use tokio::task::block_in_place;
use tokio_postgres::Client;
use weir_sql_tests::sql::{eventually, exec, rows, text, Rows};
use weir_sql_tests::TestServer;

async fn failure(client: &Client, q: &str) -> Rows {
    rows(
        client,
        &format!(
            "SELECT status, last_failure_sqlstate, last_failure_domain, last_failure \
             FROM system.streaming_queries WHERE name = '{q}'"
        ),
    )
    .await
}

async fn exception_rows(client: &Client, q: &str) -> Rows {
    rows(
        client,
        &format!(
            "SELECT sqlstate, domain, error_class, message, action FROM system.exceptions \
             WHERE query = '{q}' ORDER BY occurred_at"
        ),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_query_keeps_its_sqlstate_and_domain_across_a_restart() {
    let mut server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    exec(&client, "CREATE TABLE t (k int, v bigint)").await;
    // 54000: a value over the size bound; a user error.
    exec(
        &client,
        "CREATE STREAMING QUERY big WITH (restart_strategy = 'none') AS \
         SELECT k, length(repeat('x', v)) AS n FROM t",
    )
    .await;
    // An injected transient failure: external, and FAILED only because
    // the strategy allows no restart.
    exec(
        &client,
        "CREATE STREAMING QUERY flaky WITH (restart_strategy = 'none') AS \
         SELECT k FROM t WHERE NOT fail_if(k = 7, 'broker went away', 1)",
    )
    .await;
    exec(&client, "INSERT INTO t VALUES (7, 4000000000)").await;
    for q in ["big", "flaky"] {
        eventually(&format!("{q} to fail"), Duration::from_secs(60), || async {
            text(
                &client,
                &format!("SELECT status FROM system.streaming_queries WHERE name = '{q}'"),
            )
            .await
            .as_deref()
                == Some("FAILED")
        })
        .await;
    }
    let big = failure(&client, "big").await;
    assert_eq!(big[0][1].as_deref(), Some("54000"), "{big:?}");
    assert_eq!(big[0][2].as_deref(), Some("user"));
    let flaky = failure(&client, "flaky").await;
    assert_eq!(flaky[0][1].as_deref(), Some("P0001"), "{flaky:?}");
    assert_eq!(flaky[0][2].as_deref(), Some("external"));
    let exceptions = (
        exception_rows(&client, "big").await,
        exception_rows(&client, "flaky").await,
    );
    assert_eq!(exceptions.0.len(), 1, "{:?}", exceptions.0);
    assert_eq!(exceptions.0[0][0].as_deref(), Some("54000"));

    block_in_place(|| server.restart()).unwrap();
    let client = server.connect().await.unwrap();
    assert_eq!(failure(&client, "big").await, big);
    assert_eq!(failure(&client, "flaky").await, flaky);
    assert_eq!(
        (
            exception_rows(&client, "big").await,
            exception_rows(&client, "flaky").await
        ),
        exceptions
    );
}
