//! Extended-protocol details that the .slt files do not reach: parameters
//! bound in binary format (tokio-postgres sends them so), Describe of
//! parameter types, and cancel requests.

use std::time::Duration;

use tokio::task::block_in_place;
use tokio_postgres::NoTls;
use weir_sql_tests::TestServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_parameters_round_trip() {
    let server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    client
        .batch_execute("CREATE TABLE p (id int PRIMARY KEY, big bigint, f double precision, s text, b boolean)")
        .await
        .unwrap();
    let stmt = client
        .prepare("INSERT INTO p VALUES ($1, $2, $3, $4, $5)")
        .await
        .unwrap();
    // The server inferred the parameter types from the table.
    let types: Vec<String> = stmt.params().iter().map(|t| t.name().to_string()).collect();
    assert_eq!(types, ["int4", "int8", "float8", "text", "bool"]);
    for i in 0..3i32 {
        let n = client
            .execute(
                &stmt,
                &[
                    &i,
                    &(i as i64 * 1_000_000_000_000),
                    &(i as f64 / 4.0),
                    &format!("row {i}"),
                    &(i % 2 == 0),
                ],
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
    let rows = client
        .query(
            "SELECT id, big, f, s, b FROM p WHERE id >= $1 AND s <> $2 ORDER BY id",
            &[&1i32, &"row 2"],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i32>(0), 1);
    assert_eq!(rows[0].get::<_, i64>(1), 1_000_000_000_000);
    assert_eq!(rows[0].get::<_, f64>(2), 0.25);
    assert_eq!(rows[0].get::<_, String>(3), "row 1");
    assert!(!rows[0].get::<_, bool>(4));
    // An error while executing with a bound parameter reaches the client
    // with its SQLSTATE, and the session survives it.
    let err = client
        .query("SELECT id / $1 FROM p", &[&0i32])
        .await
        .unwrap_err();
    assert_eq!(err.code().map(|c| c.code()), Some("22012"), "{err}");
    // The session still works.
    let n: i64 = client
        .query_one("SELECT count(*) FROM p", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_stops_a_running_query() {
    let server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    let token = client.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(NoTls).await
    });
    // Long enough that it is still running when the cancel arrives.
    let result = tokio::time::timeout(
        Duration::from_secs(120),
        client.simple_query("SELECT count(*) FROM range(100000000000) AS t(x) WHERE x % 7 = 3"),
    )
    .await
    .expect("the cancel request did not stop the query");
    canceller.await.unwrap().unwrap();
    let err = result.expect_err("a canceled query must fail");
    let code = err.code().map(|c| c.code().to_string());
    assert_eq!(code.as_deref(), Some("57014"), "{err}");
    // The connection is usable afterwards.
    let rows = client.simple_query("SELECT 1").await.unwrap();
    assert!(!rows.is_empty());
}
