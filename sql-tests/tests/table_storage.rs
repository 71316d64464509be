//! Tables on disk over the wire: primary-key point and range SELECTs return
//! what a full scan does; change logs are truncated once no reader needs
//! them, and queries, new readers and a killed server still give results
//! equal to the batch oracle.

use std::time::Duration;

use tokio::task::block_in_place;
use tokio_postgres::Client;
use weir_sql_tests::sql::{assert_view_matches, eventually, exec, int, rows, Rows};
use weir_sql_tests::TestServer;

const SUMS: &str = "SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k";

/// `SELECT * FROM t WHERE cond` equals the same condition applied above a
/// LIMIT, which no condition passes: a full scan filtered afterwards.
async fn assert_lookup_matches_scan(c: &Client, table: &str, cond: &str) -> usize {
    let mut got = rows(c, &format!("SELECT * FROM {table} WHERE {cond}")).await;
    let mut want = rows(
        c,
        &format!("SELECT * FROM (SELECT * FROM {table} LIMIT 1000000000) AS s WHERE {cond}"),
    )
    .await;
    got.sort();
    want.sort();
    assert_eq!(got, want, "WHERE {cond} on {table}");
    got.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_lookups_and_ranges_return_what_a_full_scan_does() {
    let server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let c = server.connect().await.unwrap();
    exec(&c, "CREATE TABLE a (id bigint PRIMARY KEY, v text)").await;
    exec(
        &c,
        "INSERT INTO a SELECT id * 3 - 600, 'v' || id FROM generate_series(0, 999) AS g(id)",
    )
    .await;
    exec(&c, "DELETE FROM a WHERE id % 7 = 0").await;
    exec(&c, "UPDATE a SET v = 'updated' WHERE id % 5 = 0").await;
    exec(&c, "CREATE TABLE s (name text PRIMARY KEY, n int)").await;
    exec(
        &c,
        "INSERT INTO s SELECT 'name' || id, CAST(id AS int) FROM generate_series(0, 299) AS g(id)",
    )
    .await;
    exec(
        &c,
        "INSERT INTO s VALUES ('', -1), ('name', -2), ('name1\u{e9}', -3)",
    )
    .await;
    exec(
        &c,
        "CREATE TABLE c (a int, b text, v int, PRIMARY KEY (a, b))",
    )
    .await;
    exec(
        &c,
        "INSERT INTO c SELECT CAST(id % 10 AS int), 'b' || (id / 10), CAST(id AS int) \
         FROM generate_series(0, 199) AS g(id)",
    )
    .await;
    exec(&c, "CREATE TABLE m (x bigint, y bigint)").await;
    exec(
        &c,
        "INSERT INTO m SELECT id % 20, id % 3 FROM generate_series(0, 399) AS g(id)",
    )
    .await;

    let mut nonempty = 0;
    for cond in [
        "id = 42",
        "id = 43",
        "id = -600",
        "id = 2397",
        "id = 100000",
        "id IN (0, 3, 6, 9, 12, -3, 99999)",
        "id BETWEEN 100 AND 200",
        "id BETWEEN 200 AND 100",
        "id > 2300",
        "id >= 2394",
        "id < -550",
        "id <= -597",
        "id > 10 AND id < 40",
        "id > 10 AND id < 40 AND v = 'updated'",
        "id = 12 OR id = 15 OR id > 2390",
        "42 = id",
        "100 < id AND id <= 130",
        "id > 100 OR v = 'updated'",
    ] {
        if assert_lookup_matches_scan(&c, "a", cond).await > 0 {
            nonempty += 1;
        }
    }
    for cond in [
        "name = 'name7'",
        "name = 'name'",
        "name = ''",
        "name >= 'name29' AND name < 'name3'",
        "name > 'name9'",
        "name IN ('name1', 'name10', 'missing', 'name1\u{e9}')",
        "name BETWEEN 'name1' AND 'name2'",
    ] {
        if assert_lookup_matches_scan(&c, "s", cond).await > 0 {
            nonempty += 1;
        }
    }
    for cond in [
        "a = 3",
        "a = 3 AND b = 'b7'",
        "a BETWEEN 2 AND 4",
        "a > 8",
        "b = 'b3'",
    ] {
        if assert_lookup_matches_scan(&c, "c", cond).await > 0 {
            nonempty += 1;
        }
    }
    for cond in ["x = 4", "x IN (1, 19)", "x < 3", "x = 4 AND y = 1"] {
        if assert_lookup_matches_scan(&c, "m", cond).await > 0 {
            nonempty += 1;
        }
    }
    assert!(nonempty >= 25, "most conditions match rows: {nonempty}");

    // A multiset keeps its duplicates; a point lookup finds the one row.
    assert_eq!(
        int(&c, "SELECT count(*) FROM m WHERE x = 4 AND y = 1").await,
        7
    );
    assert_eq!(
        rows(&c, "SELECT v FROM a WHERE id = 48").await,
        vec![vec![Some("v216".to_string())]]
    );
    // The extended protocol with a parameter, as drivers send it (a
    // prepared point lookup reads the key without planning again).
    async fn lookups(c: &Client, want_v: &str) {
        for id in [42_i64, 45, 48, 49, -600, 7777] {
            for sql in [
                "SELECT v FROM a WHERE id = $1",
                "SELECT * FROM a WHERE $1 = id",
                "SELECT v, id, v FROM a WHERE id = $1",
            ] {
                let got: Vec<Vec<Option<String>>> = c
                    .query(sql, &[&id])
                    .await
                    .unwrap()
                    .iter()
                    .map(|r| {
                        (0..r.len())
                            .map(|i| match r.columns()[i].type_() {
                                &tokio_postgres::types::Type::INT8 => {
                                    r.get::<_, Option<i64>>(i).map(|v| v.to_string())
                                }
                                _ => r.get::<_, Option<String>>(i),
                            })
                            .collect()
                    })
                    .collect();
                let literal = sql.replace("$1", &id.to_string());
                let want = rows(
                    c,
                    &literal.replace("FROM a", "FROM (SELECT * FROM a LIMIT 1000000000) AS s"),
                )
                .await;
                assert_eq!(got, want, "{sql} with {id}");
            }
        }
        let v = c
            .query_opt("SELECT v FROM a WHERE id = $1", &[&45_i64])
            .await
            .unwrap()
            .map(|r| r.get::<_, String>(0));
        assert_eq!(v.as_deref(), Some(want_v));
    }
    lookups(&c, "updated").await;
    exec(&c, "UPDATE a SET v = 'changed' WHERE id = 45").await;
    lookups(&c, "changed").await;
    // The same text over a table created again reads the new table.
    exec(&c, "CREATE TABLE a2 (id bigint PRIMARY KEY, v text)").await;
    exec(&c, "INSERT INTO a2 SELECT * FROM a").await;
    exec(&c, "DROP TABLE a").await;
    exec(&c, "CREATE TABLE a (id bigint PRIMARY KEY, v text)").await;
    exec(&c, "INSERT INTO a SELECT * FROM a2").await;
    exec(&c, "UPDATE a SET v = 'again' WHERE id = 45").await;
    lookups(&c, "again").await;
    // Counts kept with the rows.
    for t in ["a", "s", "c", "m"] {
        assert_eq!(
            int(
                &c,
                &format!("SELECT rows FROM system.tables WHERE name = '{t}'")
            )
            .await,
            int(&c, &format!("SELECT count(*) FROM {t}")).await,
            "rows of {t}"
        );
    }
}

/// The first offset still in a table's log (one past its end when the
/// whole log is truncated).
async fn log_start(c: &Client, table: &str) -> i64 {
    int(
        c,
        &format!(
            "SELECT coalesce(log_start, log_end + 1) FROM system.tables WHERE name = '{table}'"
        ),
    )
    .await
}

/// Inserts rows `from..to` in one statement each of `step` rows: k = id %
/// 5, v = id.
async fn insert(c: &Client, from: i64, to: i64, step: i64) {
    let mut at = from;
    while at < to {
        let end = (at + step).min(to) - 1;
        exec(
            c,
            &format!("INSERT INTO t SELECT id, id % 5, id * 1 FROM generate_series({at}, {end}) AS g(id)"),
        )
        .await;
        at += step;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truncated_logs_feed_queries_new_readers_and_a_killed_server() {
    let mut server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let c = server.connect().await.unwrap();
    exec(
        &c,
        "CREATE TABLE t (id bigint PRIMARY KEY, k bigint, v bigint)",
    )
    .await;
    exec(&c, &format!("CREATE MATERIALIZED VIEW mv AS {SUMS}")).await;
    insert(&c, 0, 400, 20).await;
    exec(&c, "UPDATE t SET v = v + 1000 WHERE id % 4 = 0").await;
    exec(&c, "DELETE FROM t WHERE id % 9 = 0").await;
    exec(&c, "FLUSH").await;
    let end: i64 = int(&c, "SELECT log_end FROM system.tables WHERE name = 't'").await;
    assert!(end >= 22, "one log entry per statement: {end}");
    // Once the query's retained checkpoints are all past them, the entries
    // go (VACUUM truncates now; the background does it every few seconds).
    eventually(
        "the log of t to be truncated",
        Duration::from_secs(60),
        || async {
            exec(&c, "VACUUM").await;
            log_start(&c, "t").await > 20
        },
    )
    .await;
    assert_view_matches(&c, "mv", SUMS).await;
    // VACUUM also writes what RocksDB holds in memory to files.
    for name in ["t", "mv"] {
        let bytes = int(
            &c,
            &format!("SELECT disk_bytes FROM system.tables WHERE name = '{name}'"),
        )
        .await;
        assert!(bytes > 0, "{name} takes {bytes} bytes on disk");
    }

    // A query created now starts from the stored rows, not the log.
    let filtered = "SELECT k, count(*) AS n FROM t WHERE v > 100 GROUP BY k";
    exec(&c, &format!("CREATE MATERIALIZED VIEW mv2 AS {filtered}")).await;
    exec(&c, "FLUSH").await;
    assert_view_matches(&c, "mv2", filtered).await;
    // The result table's log is truncated too; a view over it still reads it.
    exec(
        &c,
        "CREATE MATERIALIZED VIEW top AS SELECT k, s FROM mv WHERE s > 1000",
    )
    .await;
    insert(&c, 400, 500, 25).await;
    exec(&c, "FLUSH").await;
    assert_view_matches(&c, "top", "SELECT k, s FROM mv WHERE s > 1000").await;

    // A stopped query and a savepoint hold the log after their offsets.
    exec(&c, "ALTER MATERIALIZED VIEW mv SAVEPOINT AS 'old'").await;
    insert(&c, 500, 540, 10).await;
    exec(&c, "STOP MATERIALIZED VIEW mv").await;
    insert(&c, 540, 600, 10).await;
    exec(&c, "DELETE FROM t WHERE id % 13 = 0").await;
    exec(&c, "FLUSH").await;
    exec(&c, "VACUUM").await;
    exec(&c, "START MATERIALIZED VIEW mv").await;
    exec(&c, "FLUSH").await;
    assert_view_matches(&c, "mv", SUMS).await;
    exec(&c, "STOP MATERIALIZED VIEW mv").await;
    exec(&c, "VACUUM").await;
    exec(&c, "START MATERIALIZED VIEW mv FROM SAVEPOINT 'old'").await;
    exec(&c, "FLUSH").await;
    assert_view_matches(&c, "mv", SUMS).await;

    // Killed: the tables open from their stored rows, the queries from their
    // checkpoints over the truncated logs.
    block_in_place(|| server.crash_and_restart()).unwrap_or_else(|e| panic!("{e:#}"));
    let c = server.connect().await.unwrap();
    exec(&c, "FLUSH").await;
    assert_view_matches(&c, "mv", SUMS).await;
    assert_view_matches(&c, "mv2", filtered).await;
    insert(&c, 600, 700, 50).await;
    exec(&c, "DELETE FROM t WHERE id % 11 = 0").await;
    exec(&c, "FLUSH").await;
    assert_view_matches(&c, "mv", SUMS).await;
    assert_view_matches(&c, "mv2", filtered).await;
    assert_view_matches(&c, "top", "SELECT k, s FROM mv WHERE s > 1000").await;
    let before: Rows = rows(&c, "SELECT * FROM t ORDER BY id").await;
    eventually(
        "the log of t to be truncated again",
        Duration::from_secs(60),
        || async {
            exec(&c, "VACUUM").await;
            log_start(&c, "t").await > end
        },
    )
    .await;
    block_in_place(|| server.crash_and_restart()).unwrap_or_else(|e| panic!("{e:#}"));
    let c = server.connect().await.unwrap();
    assert_eq!(rows(&c, "SELECT * FROM t ORDER BY id").await, before);
    exec(&c, "FLUSH").await;
    assert_view_matches(&c, "mv", SUMS).await;
    assert_view_matches(&c, "top", "SELECT k, s FROM mv WHERE s > 1000").await;
}
