//! Small helpers for end-to-end tests that talk SQL to a server: run a
//! statement or query and panic with the SQL on error, read a number,
//! compare a view with its query run ad hoc, wait for a condition.

use std::future::Future;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use crate::simple_query_rows;

/// Rows as text (NULL = None), as the simple query protocol returns them.
pub type Rows = Vec<Vec<Option<String>>>;

pub async fn rows(client: &Client, sql: &str) -> Rows {
    simple_query_rows(client, sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

pub async fn exec(client: &Client, sql: &str) {
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {}", crate::db::describe_pg_error(&e)));
}

/// The first column of the first row as an integer (NULL = 0).
pub async fn int(client: &Client, sql: &str) -> i64 {
    rows(client, sql).await[0][0]
        .as_deref()
        .map_or(0, |v| v.parse().unwrap())
}

/// The first column of the first row as text.
pub async fn text(client: &Client, sql: &str) -> Option<String> {
    rows(client, sql).await.first().and_then(|r| r[0].clone())
}

/// The view equals its defining query run over the base tables, as a
/// multiset of rows; a mismatch shows the rows only on one side.
pub async fn assert_view_matches(client: &Client, view: &str, query: &str) {
    let mut got = rows(client, &format!("SELECT * FROM {view}")).await;
    let mut want = rows(client, query).await;
    got.sort();
    want.sort();
    if got != want {
        let (only_view, only_query) = crate::multiset_diff(&got, &want);
        panic!(
            "view {view} differs from its query ({} vs {} rows)\nonly in the view: {:?}\nonly in the query: {:?}",
            got.len(),
            want.len(),
            &only_view[..only_view.len().min(20)],
            &only_query[..only_query.len().min(20)]
        );
    }
}

/// Polls `check` until it holds; panics with `what` after `timeout`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Whether every subtask of streaming query `query` has finished (its
/// bounded sources reached their end).
async fn finished(client: &Client, query: &str) -> bool {
    int(
        client,
        &format!(
            "SELECT count(*) FROM system.tasks WHERE query = '{query}' AND status <> 'FINISHED'"
        ),
    )
    .await
        == 0
}

/// Waits until the queries read all their input, then FLUSHes: the
/// checkpoint commits what they produced up to the end.
pub async fn wait_finished(client: &Client, queries: &[&str]) {
    for q in queries {
        eventually(
            &format!("query {q} to reach the end of its input"),
            Duration::from_secs(60),
            || finished(client, q),
        )
        .await;
    }
    exec(client, "FLUSH").await;
}
