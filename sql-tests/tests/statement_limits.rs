//! No statement can take the server down or stall other sessions: an
//! expression nested too deeply or with too many operators is refused with
//! 54001 before it is planned, and so is a statement whose parse runs away
//! (nested CASE with a WHEN missing backtracked for minutes while every
//! other session waited). After each, the same session and another one
//! keep working.

use std::time::Duration;

use tokio::task::block_in_place;
use tokio_postgres::Client;
use weir_sql_tests::sql::{exec, int};
use weir_sql_tests::TestServer;

async fn refused_with(client: &Client, sql: &str, sqlstate: &str) {
    let err = client
        .batch_execute(sql)
        .await
        .expect_err("statement should be refused");
    assert_eq!(
        err.code().map(|c| c.code()),
        Some(sqlstate),
        "{}",
        weir_sql_tests::db::describe_pg_error(&err)
    );
}

fn sum_of_ones(terms: usize) -> String {
    vec!["1"; terms].join(" + ")
}

fn nested_case_missing_a_when(depth: usize) -> String {
    let mut sql = format!(
        "SELECT {}1{}",
        "CASE WHEN true THEN ".repeat(depth),
        " END".repeat(depth)
    );
    let middle = sql.len() / 2;
    let at = middle + sql[middle..].find("WHEN").unwrap();
    sql.replace_range(at..at + 4, "");
    sql
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deep_or_runaway_statements_are_refused_and_the_server_stays_up() {
    let server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    let other = server.connect().await.unwrap();
    exec(&client, "CREATE TABLE t (k int, v int)").await;
    exec(&client, "INSERT INTO t VALUES (1, 2), (3, 4)").await;

    // Just under the depth limit: planned and run.
    assert_eq!(
        int(&client, &format!("SELECT {}", sum_of_ones(500))).await,
        500
    );
    let ors: Vec<String> = (0..400).map(|i| format!("k = {i}")).collect();
    assert_eq!(
        int(
            &client,
            &format!("SELECT count(*) FROM t WHERE {}", ors.join(" OR "))
        )
        .await,
        2
    );

    // Too deep: ad hoc, in a view, in a DML statement.
    let deep = sum_of_ones(2000);
    refused_with(&client, &format!("SELECT {deep}"), "54001").await;
    refused_with(
        &client,
        &format!("CREATE MATERIALIZED VIEW v AS SELECT k, {deep} AS x FROM t"),
        "54001",
    )
    .await;
    refused_with(
        &client,
        &format!("INSERT INTO t VALUES ({deep}, 1)"),
        "54001",
    )
    .await;
    // Too many operators to even parse.
    refused_with(
        &client,
        &format!("SELECT {}", sum_of_ones(100_002)),
        "54001",
    )
    .await;
    assert_eq!(int(&other, "SELECT count(*) FROM t").await, 2);

    // A parse that would backtrack for minutes, while another session
    // keeps being answered.
    let runaway = nested_case_missing_a_when(200);
    let bad = server.connect().await.unwrap();
    let stuck = tokio::spawn(async move { bad.batch_execute(&runaway).await });
    for _ in 0..5 {
        assert_eq!(int(&other, "SELECT count(*) FROM t").await, 2);
    }
    let err = tokio::time::timeout(Duration::from_secs(120), stuck)
        .await
        .expect("the runaway statement must be cut short")
        .unwrap()
        .expect_err("refused");
    assert_eq!(err.code().map(|c| c.code()), Some("54001"), "{err:?}");

    // Nothing was created, and the sessions still work.
    assert_eq!(
        int(&client, "SELECT count(*) FROM system.streaming_queries").await,
        0
    );
    exec(&client, "INSERT INTO t VALUES (5, 6)").await;
    assert_eq!(int(&other, "SELECT count(*) FROM t").await, 3);
}
