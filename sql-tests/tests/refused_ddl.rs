//! A refused ALTER or DROP leaves everything as it was: the catalog (what
//! `SHOW` lists), each query's status and options, and its results — right
//! after the refusal and after a server restart. Each path that can refuse
//! has its own case; results are checked against the defining query run ad
//! hoc over the inputs.

use std::time::Duration;

use tokio::task::block_in_place;
use tokio_postgres::Client;
use weir_sql_tests::sql::{assert_view_matches, eventually, exec, rows, Rows};
use weir_sql_tests::TestServer;

/// What a user sees of the catalog and the queries.
#[derive(Debug, PartialEq)]
struct Catalog {
    tables: Rows,
    views: Rows,
    queries: Rows,
}

async fn catalog(client: &Client) -> Catalog {
    Catalog {
        tables: rows(client, "SHOW TABLES").await,
        views: rows(client, "SHOW MATERIALIZED VIEWS").await,
        queries: rows(
            client,
            "SELECT name, status, options FROM system.streaming_queries ORDER BY name",
        )
        .await,
    }
}

/// Runs `sql`, which must be refused with `sqlstate`.
async fn refused(client: &Client, sql: &str, sqlstate: &str) {
    let err = client
        .batch_execute(sql)
        .await
        .expect_err(&format!("{sql} should be refused"));
    let code = err.code().map(|c| c.code().to_string());
    assert_eq!(code.as_deref(), Some(sqlstate), "{sql}: {err:?}");
}

async fn wait_running(client: &Client, names: &[&str]) {
    for q in names {
        eventually(&format!("{q} to run"), Duration::from_secs(60), || async {
            rows(
                client,
                &format!("SELECT status FROM system.streaming_queries WHERE name = '{q}'"),
            )
            .await
            .first()
            .and_then(|r| r[0].clone())
            .as_deref()
                == Some("RUNNING")
        })
        .await;
    }
}

/// The views still equal their queries, and the catalog is `before`.
async fn unchanged(client: &Client, before: &Catalog, views: &[(&str, &str)]) {
    exec(client, "FLUSH").await;
    assert_eq!(&catalog(client).await, before);
    for (view, query) in views {
        assert_view_matches(client, view, query).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_alter_set_keeps_options_and_results() {
    let mut server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    exec(&client, "CREATE TABLE t (k int, v int)").await;
    exec(
        &client,
        "INSERT INTO t SELECT v % 5, v FROM (SELECT unnest(range(0, 200)) AS v)",
    )
    .await;
    let query = "SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k";
    exec(
        &client,
        &format!(
            "CREATE MATERIALIZED VIEW agg WITH (parallelism = 2, checkpoint_interval = '500ms') AS {query}"
        ),
    )
    .await;
    wait_running(&client, &["agg"]).await;
    let views = [("agg", query)];
    let before = catalog(&client).await;
    for (sql, code) in [
        (
            "ALTER MATERIALIZED VIEW agg SET (checkpoint_interval = 'soon')",
            "22023",
        ),
        ("ALTER MATERIALIZED VIEW agg SET (parallelism = 0)", "22023"),
        (
            "ALTER MATERIALIZED VIEW agg SET (no_such_option = 1)",
            "22023",
        ),
        (
            "ALTER MATERIALIZED VIEW agg SET (parallelism = 3, restart_strategy = 'sometimes')",
            "22023",
        ),
        (
            "ALTER MATERIALIZED VIEW agg SET (path = '/tmp/elsewhere')",
            "0A000",
        ),
        (
            "ALTER MATERIALIZED VIEW nope SET (parallelism = 1)",
            "42P01",
        ),
        ("ALTER MATERIALIZED VIEW t SET (parallelism = 1)", "42809"),
    ] {
        refused(&client, sql, code).await;
        unchanged(&client, &before, &views).await;
    }
    // A rescale that is allowed still works after all that.
    exec(&client, "ALTER MATERIALIZED VIEW agg SET (parallelism = 1)").await;
    exec(&client, "INSERT INTO t VALUES (9, 9)").await;
    exec(&client, "FLUSH").await;
    assert_view_matches(&client, "agg", query).await;
    let after = catalog(&client).await;

    block_in_place(|| server.restart()).unwrap();
    let client = server.connect().await.unwrap();
    wait_running(&client, &["agg"]).await;
    unchanged(&client, &after, &views).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_drop_drops_nothing() {
    let mut server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    exec(&client, "CREATE TABLE t (k int PRIMARY KEY, v int)").await;
    exec(&client, "CREATE TABLE u (k int)").await;
    exec(&client, "CREATE TABLE lone (x int)").await;
    exec(&client, "INSERT INTO t VALUES (1, 10), (2, 20), (3, 30)").await;
    exec(&client, "INSERT INTO u VALUES (1), (1), (2)").await;
    let base = "SELECT k, v * 2 AS w FROM t";
    let dep = "SELECT sum(w) AS total FROM base";
    let other = "SELECT k, count(*) AS n FROM u GROUP BY k";
    exec(&client, &format!("CREATE MATERIALIZED VIEW base AS {base}")).await;
    exec(&client, &format!("CREATE MATERIALIZED VIEW dep AS {dep}")).await;
    exec(
        &client,
        &format!("CREATE MATERIALIZED VIEW other AS {other}"),
    )
    .await;
    exec(&client, "FLUSH").await;
    let views = [
        ("base", base),
        ("dep", "SELECT sum(v * 2) AS total FROM t"),
        ("other", other),
    ];
    let before = catalog(&client).await;
    assert_eq!(before.views.len(), 3);
    for (sql, code) in [
        // The first name exists: nothing may be dropped before the second is found missing.
        ("DROP MATERIALIZED VIEW other, nope", "42P01"),
        ("DROP MATERIALIZED VIEW other, t", "42809"),
        ("DROP MATERIALIZED VIEW base", "2BP01"),
        ("DROP MATERIALIZED VIEW other, base", "2BP01"),
        ("DROP TABLE lone, nope", "42P01"),
        ("DROP TABLE lone, t", "2BP01"),
        ("DROP TABLE lone, other", "42809"),
        ("DROP MATERIALIZED VIEW other CASCADE", "0A000"),
    ] {
        refused(&client, sql, code).await;
        unchanged(&client, &before, &views).await;
    }
    block_in_place(|| server.restart()).unwrap();
    let client = server.connect().await.unwrap();
    unchanged(&client, &before, &views).await;

    // A view and the one that reads it may go together, in either order.
    exec(&client, "DROP MATERIALIZED VIEW base, dep").await;
    exec(&client, "DROP MATERIALIZED VIEW IF EXISTS nope, other").await;
    exec(&client, "DROP TABLE t, u, lone").await;
    let empty = catalog(&client).await;
    assert!(
        empty.tables.is_empty() && empty.views.is_empty() && empty.queries.is_empty(),
        "{empty:?}"
    );
}
