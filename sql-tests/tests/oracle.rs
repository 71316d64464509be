//! Randomized oracle test: materialized views maintained incrementally by
//! weir must always equal their defining query run ad hoc.
//!
//! Two primary-key tables get random batches of INSERT / UPDATE / DELETE
//! (single-row and bulk); after each batch and `FLUSH`, every view's
//! contents are compared with its defining SELECT as multisets of text
//! rows. The server is crashed (SIGKILL) and restarted (SIGTERM) in the
//! middle of the run.
//!
//! Environment:
//! * `WEIR_ORACLE_SEED`: seed to reproduce a run (printed at the start).
//! * `WEIR_ORACLE_ROUNDS`: number of rounds (default 12).
//! * `WEIR_REFERENCE_PG`: run against this Postgres instead (views instead
//!   of materialized views); checks the test itself.
//!
//! Every executed statement is written to
//! `$TMPDIR/weir-oracle-<seed>.sql` so a failure can be replayed by hand.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tokio_postgres::Client;
use weir_sql_tests::multiset_diff;
use weir_sql_tests::reference::{rewrite_for_postgres, Rewritten};
use weir_sql_tests::{
    connect_session, connect_with_retry, create_reference_database, db::describe_pg_error,
    drop_reference_database, reference_postgres, simple_query_rows, TestServer,
};

const A_ID_RANGE: std::ops::Range<i32> = 0..60;
const B_ID_RANGE: std::ops::Range<i32> = 0..40;

struct View {
    name: &'static str,
    /// Defining query of the materialized view.
    definition: &'static str,
    /// Equivalent query over the base tables only (defaults to `definition`).
    adhoc: Option<&'static str>,
    /// Created before the initial data is loaded (pure incremental
    /// maintenance) instead of after (backfill).
    before_data: bool,
}

const VIEWS: &[View] = &[
    View {
        name: "a_by_k",
        definition:
            "SELECT k, count(*) AS cnt, sum(v) AS sum_v, min(v) AS min_v, max(v) AS max_v, \
                     round(avg(v)::numeric, 6) AS avg_v, count(DISTINCT s) AS distinct_s, \
                     min(s) AS min_s, max(s) AS max_s \
                     FROM a GROUP BY k",
        adhoc: None,
        before_data: true,
    },
    View {
        name: "b_by_k",
        definition: "SELECT k, count(*) AS cnt, count(w) AS cnt_w, sum(w) AS sum_w, \
                     min(w) AS min_w, max(w) AS max_w \
                     FROM b GROUP BY k",
        adhoc: None,
        before_data: false,
    },
    View {
        name: "ab_join_agg",
        definition: "SELECT a.k, count(*) AS cnt, sum(a.v) AS sum_v, sum(b.w) AS sum_w, \
                     count(DISTINCT b.id) AS b_ids \
                     FROM a JOIN b ON a.k = b.k GROUP BY a.k",
        adhoc: None,
        before_data: false,
    },
    View {
        name: "ab_left",
        definition: "SELECT a.id, a.k, a.v, a.s, b.id AS b_id, b.w \
                     FROM a LEFT JOIN b ON a.id = b.id",
        adhoc: None,
        before_data: true,
    },
    View {
        name: "a_filtered",
        definition: "SELECT id, k, v * 2 AS v2, upper(s) AS us, length(s) AS len \
                     FROM a WHERE v > 10 AND s <> 'z'",
        adhoc: None,
        before_data: false,
    },
    View {
        name: "ab_union",
        definition: "SELECT id, k, 'a' AS src FROM a WHERE k < 3 \
                     UNION ALL \
                     SELECT id, k, 'b' AS src FROM b WHERE k >= 2",
        adhoc: None,
        before_data: true,
    },
    View {
        name: "a_totals",
        definition: "SELECT count(*) AS cnt, sum(v) AS sum_v, count(DISTINCT k) AS ks, \
                     max(s) AS max_s FROM a",
        adhoc: None,
        before_data: false,
    },
    View {
        name: "a_having",
        definition: "SELECT k, s, count(*) AS cnt, sum(v) AS sum_v FROM a \
                     GROUP BY k, s HAVING count(*) > 1",
        adhoc: None,
        before_data: false,
    },
    View {
        name: "a_top3_by_k",
        definition: "SELECT k, id, v, rn FROM (SELECT k, id, v, \
                     ROW_NUMBER() OVER (PARTITION BY k ORDER BY v DESC NULLS LAST, id) AS rn \
                     FROM a) t WHERE rn <= 3",
        adhoc: None,
        before_data: true,
    },
    View {
        name: "b_last_by_k",
        definition: "SELECT id, k, w FROM (SELECT *, \
                     ROW_NUMBER() OVER (PARTITION BY k ORDER BY id DESC) AS rn FROM b) t \
                     WHERE rn = 1",
        adhoc: None,
        before_data: false,
    },
    View {
        name: "ab_top2",
        definition: "SELECT * FROM (SELECT a.id, b.id AS b_id, a.v, \
                     ROW_NUMBER() OVER (ORDER BY a.v, a.id, b.id) AS rn \
                     FROM a JOIN b ON a.k = b.k) t WHERE 2 >= rn",
        adhoc: None,
        before_data: false,
    },
    View {
        name: "a_top5",
        definition: "SELECT id, v, s FROM a ORDER BY v DESC NULLS LAST, id LIMIT 5",
        adhoc: None,
        before_data: false,
    },
    View {
        name: "a_by_k_hist",
        definition: "SELECT cnt, count(*) AS groups FROM a_by_k GROUP BY cnt",
        adhoc: Some(
            "SELECT cnt, count(*) AS groups \
             FROM (SELECT k, count(*) AS cnt FROM a GROUP BY k) s GROUP BY cnt",
        ),
        before_data: false,
    },
];

enum Backend {
    Weir(TestServer),
    Postgres { base: String, db: String },
}

struct Oracle {
    backend: Backend,
    client: Client,
    /// Task driving the weir connection; aborted before a restart so the
    /// server is not kept waiting by an idle session.
    session: Option<tokio::task::JoinHandle<()>>,
    rng: StdRng,
    seed: u64,
    log: Vec<String>,
    log_path: std::path::PathBuf,
    a_ids: BTreeSet<i32>,
    b_ids: BTreeSet<i32>,
}

impl Oracle {
    async fn start(seed: u64) -> Oracle {
        let (backend, client, session) = match reference_postgres() {
            Some(base) => {
                let db = format!("weir_oracle_{seed}");
                let conn = create_reference_database(&base, &db)
                    .await
                    .expect("create reference database");
                let client = connect_with_retry(&conn, Duration::from_secs(10))
                    .await
                    .expect("connect to reference Postgres");
                (Backend::Postgres { base, db }, client, None)
            }
            None => {
                let server = tokio::task::block_in_place(TestServer::start)
                    .unwrap_or_else(|e| panic!("starting weir: {e:#}"));
                let (client, session) =
                    connect_session(&server.connection_string(), Duration::from_secs(10))
                        .await
                        .unwrap_or_else(|e| panic!("connecting to weir: {e:#}"));
                (Backend::Weir(server), client, Some(session))
            }
        };
        Oracle {
            backend,
            client,
            session,
            rng: StdRng::seed_from_u64(seed),
            seed,
            log: Vec::new(),
            log_path: std::env::temp_dir().join(format!("weir-oracle-{seed}.sql")),
            a_ids: BTreeSet::new(),
            b_ids: BTreeSet::new(),
        }
    }

    fn save_log(&self) {
        let mut text = String::new();
        for stmt in &self.log {
            let _ = writeln!(text, "{stmt};");
        }
        let _ = std::fs::write(&self.log_path, text);
    }

    fn fail(&self, msg: String) -> ! {
        self.save_log();
        panic!(
            "{msg}\n\nseed {seed}: rerun with WEIR_ORACLE_SEED={seed}; all statements are in {}",
            self.log_path.display(),
            seed = self.seed
        );
    }

    /// Executes a statement, alternating randomly between the simple and
    /// the extended protocol.
    async fn exec(&mut self, sql: &str) {
        self.log.push(sql.to_string());
        let sql = match (&self.backend, rewrite_for_postgres(sql)) {
            (Backend::Weir(_), _) => sql.to_string(),
            (Backend::Postgres { .. }, Rewritten::Sql(s)) => s,
            (Backend::Postgres { .. }, Rewritten::Skip) => return,
        };
        let result = if self.rng.random_bool(0.5) {
            self.client.batch_execute(&sql).await
        } else {
            self.client.execute(sql.as_str(), &[]).await.map(|_| ())
        };
        if let Err(e) = result {
            self.fail(format!(
                "statement failed: {sql}\n{}",
                describe_pg_error(&e)
            ));
        }
    }

    async fn rows(&self, sql: &str) -> Vec<Row> {
        match simple_query_rows(&self.client, sql).await {
            Ok(mut rows) => {
                rows.sort();
                rows
            }
            Err(e) => self.fail(format!("query failed: {sql}\n{e}")),
        }
    }

    async fn refresh_ids(&mut self) {
        let parse = |rows: Vec<Row>| -> BTreeSet<i32> {
            rows.into_iter()
                .filter_map(|r| r.into_iter().next().flatten())
                .map(|s| s.parse().expect("integer id"))
                .collect()
        };
        self.a_ids = parse(self.rows("SELECT id FROM a").await);
        self.b_ids = parse(self.rows("SELECT id FROM b").await);
    }

    async fn reconnect(&mut self) {
        let Backend::Weir(server) = &self.backend else {
            return;
        };
        match connect_session(&server.connection_string(), Duration::from_secs(10)).await {
            Ok((client, session)) => {
                self.client = client;
                self.session = Some(session);
            }
            Err(e) => self.fail(format!("reconnecting after restart: {e:#}")),
        }
    }

    fn close_session(&mut self) {
        if let Some(session) = self.session.take() {
            session.abort();
        }
    }

    async fn crash_and_restart(&mut self) {
        self.log.push("-- CRASH SERVER".to_string());
        self.close_session();
        if let Backend::Weir(server) = &mut self.backend {
            if let Err(e) = tokio::task::block_in_place(|| server.crash_and_restart()) {
                self.fail(format!("crash restart failed: {e:#}"));
            }
        }
        self.reconnect().await;
    }

    async fn restart(&mut self) {
        self.log.push("-- RESTART SERVER".to_string());
        self.close_session();
        if let Backend::Weir(server) = &mut self.backend {
            if let Err(e) = tokio::task::block_in_place(|| server.restart()) {
                self.fail(format!("restart failed: {e:#}"));
            }
        }
        self.reconnect().await;
    }

    fn a_values(&mut self, id: i32) -> String {
        let k = self.random_k();
        let v = if self.rng.random_bool(0.1) {
            "NULL".to_string()
        } else {
            self.rng.random_range(-20..=60).to_string()
        };
        let s = self.random_s();
        format!("({id}, {k}, {v}, {s})")
    }

    fn b_values(&mut self, id: i32) -> String {
        let k = self.random_k();
        let w = self.random_w();
        format!("({id}, {k}, {w})")
    }

    fn random_k(&mut self) -> String {
        if self.rng.random_bool(0.05) {
            "NULL".to_string()
        } else {
            self.rng.random_range(0..6).to_string()
        }
    }

    fn random_s(&mut self) -> String {
        const S: &[&str] = &["'x'", "'y'", "'z'", "'xy'", "''", "NULL"];
        S.choose(&mut self.rng).unwrap().to_string()
    }

    /// Multiples of 0.25: exactly representable, so float sums do not
    /// depend on the order of additions and retractions.
    fn random_w(&mut self) -> String {
        if self.rng.random_bool(0.1) {
            "NULL".to_string()
        } else {
            format!("{}", f64::from(self.rng.random_range(-40..=40)) / 4.0)
        }
    }

    fn fresh_ids(&mut self, table: char, max: usize) -> Vec<i32> {
        let (used, range) = match table {
            'a' => (&self.a_ids, A_ID_RANGE),
            _ => (&self.b_ids, B_ID_RANGE),
        };
        let free: Vec<i32> = range.filter(|id| !used.contains(id)).collect();
        let n = self.rng.random_range(1..=max).min(free.len());
        let mut picked: Vec<i32> = free.choose_multiple(&mut self.rng, n).copied().collect();
        picked.sort();
        picked
    }

    fn existing_id(&mut self, table: char) -> Option<i32> {
        let ids: Vec<i32> = match table {
            'a' => self.a_ids.iter().copied().collect(),
            _ => self.b_ids.iter().copied().collect(),
        };
        ids.choose(&mut self.rng).copied()
    }

    async fn insert(&mut self, table: char, max_rows: usize) {
        let ids = self.fresh_ids(table, max_rows);
        if ids.is_empty() {
            return;
        }
        let values: Vec<String> = ids
            .iter()
            .map(|&id| match table {
                'a' => self.a_values(id),
                _ => self.b_values(id),
            })
            .collect();
        self.exec(&format!("INSERT INTO {table} VALUES {}", values.join(", ")))
            .await;
        let set = if table == 'a' {
            &mut self.a_ids
        } else {
            &mut self.b_ids
        };
        set.extend(ids);
    }

    async fn random_op(&mut self) {
        let table = if self.rng.random_bool(0.6) { 'a' } else { 'b' };
        match self.rng.random_range(0..100) {
            0..=34 => self.insert(table, 4).await,
            35..=59 => {
                let Some(id) = self.existing_id(table) else {
                    return self.insert(table, 2).await;
                };
                let sets = if table == 'a' {
                    let mut sets = Vec::new();
                    if self.rng.random_bool(0.5) {
                        sets.push(format!("k = {}", self.random_k()));
                    }
                    if self.rng.random_bool(0.6) {
                        let v = self.rng.random_range(-20..=60);
                        sets.push(format!("v = {v}"));
                    }
                    if sets.is_empty() || self.rng.random_bool(0.3) {
                        sets.push(format!("s = {}", self.random_s()));
                    }
                    sets
                } else {
                    let mut sets = vec![format!("w = {}", self.random_w())];
                    if self.rng.random_bool(0.5) {
                        sets.push(format!("k = {}", self.random_k()));
                    }
                    sets
                };
                self.exec(&format!(
                    "UPDATE {table} SET {} WHERE id = {id}",
                    sets.join(", ")
                ))
                .await;
            }
            60..=79 => {
                let Some(id) = self.existing_id(table) else {
                    return;
                };
                self.exec(&format!("DELETE FROM {table} WHERE id = {id}"))
                    .await;
                let set = if table == 'a' {
                    &mut self.a_ids
                } else {
                    &mut self.b_ids
                };
                set.remove(&id);
            }
            80..=91 => {
                let k = self.rng.random_range(0..6);
                let sql = if table == 'a' {
                    let d = self.rng.random_range(-3..=3);
                    format!("UPDATE a SET v = v + {d} WHERE k = {k}")
                } else {
                    format!("UPDATE b SET w = w * -1 WHERE k = {k}")
                };
                self.exec(&sql).await;
            }
            _ => {
                let sql = if table == 'a' {
                    let t = self.rng.random_range(-20..0);
                    format!("DELETE FROM a WHERE v < {t} OR (k = 5 AND s = 'y')")
                } else {
                    let t = f64::from(self.rng.random_range(-40..-20)) / 4.0;
                    format!("DELETE FROM b WHERE w < {t}")
                };
                self.exec(&sql).await;
                self.refresh_ids().await;
            }
        }
    }

    /// Compares every view with its ad hoc query; fails with a diff.
    async fn check(&mut self, when: &str) {
        let mut problems = String::new();
        for view in VIEWS {
            let mv = self.rows(&format!("SELECT * FROM {}", view.name)).await;
            let adhoc = self.rows(view.adhoc.unwrap_or(view.definition)).await;
            if mv != adhoc {
                let (only_mv, only_adhoc) = multiset_diff(&mv, &adhoc);
                let _ = writeln!(
                    problems,
                    "view {} differs from its query ({} vs {} rows)\n  only in view:\n{}  only in ad hoc query:\n{}",
                    view.name,
                    mv.len(),
                    adhoc.len(),
                    render(&only_mv),
                    render(&only_adhoc)
                );
            }
        }
        if !problems.is_empty() {
            let last_round: Vec<&str> = self
                .log
                .iter()
                .rev()
                .take_while(|s| !s.starts_with("-- round"))
                .map(String::as_str)
                .collect();
            let mut recent = String::new();
            for s in last_round.iter().rev() {
                let _ = writeln!(recent, "  {s};");
            }
            self.fail(format!(
                "{when}: materialized views diverged\n{problems}\nstatements of this round:\n{recent}"
            ));
        }
    }

    async fn flush_and_check(&mut self, when: &str) {
        self.exec("FLUSH").await;
        self.check(when).await;
    }

    async fn finish(self) {
        self.save_log();
        if let Backend::Postgres { base, db } = &self.backend {
            drop(self.client);
            if let Err(e) = drop_reference_database(base, db).await {
                eprintln!("warning: dropping {db}: {e:#}");
            }
        }
    }
}

/// A result row as text (`None` is SQL NULL).
type Row = Vec<Option<String>>;

fn render(rows: &[Row]) -> String {
    let mut s = String::new();
    for row in rows {
        let cols: Vec<&str> = row.iter().map(|v| v.as_deref().unwrap_or("NULL")).collect();
        let _ = writeln!(s, "    ({})", cols.join(", "));
    }
    if rows.is_empty() {
        s.push_str("    (none)\n");
    }
    s
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn materialized_views_match_adhoc_queries() {
    let seed = env_u64("WEIR_ORACLE_SEED").unwrap_or_else(rand::random);
    let rounds = env_u64("WEIR_ORACLE_ROUNDS").unwrap_or(12);
    println!("oracle: seed {seed}, {rounds} rounds (reproduce with WEIR_ORACLE_SEED={seed})");

    let mut o = Oracle::start(seed).await;
    o.exec("CREATE TABLE a (id int PRIMARY KEY, k int, v bigint, s text)")
        .await;
    o.exec("CREATE TABLE b (id int PRIMARY KEY, k int, w double precision)")
        .await;
    for view in VIEWS.iter().filter(|v| v.before_data) {
        o.exec(&format!(
            "CREATE MATERIALIZED VIEW {} AS {}",
            view.name, view.definition
        ))
        .await;
    }
    o.log.push("-- round 0 (initial data)".to_string());
    for _ in 0..6 {
        o.insert('a', 5).await;
        o.insert('b', 4).await;
    }
    for view in VIEWS.iter().filter(|v| !v.before_data) {
        o.exec(&format!(
            "CREATE MATERIALIZED VIEW {} AS {}",
            view.name, view.definition
        ))
        .await;
    }
    o.flush_and_check("after initial load").await;

    let crash_after = rounds / 3;
    let restart_after = 2 * rounds / 3;
    for round in 1..=rounds {
        o.log.push(format!("-- round {round}"));
        o.refresh_ids().await;
        let ops = o.rng.random_range(1..=25);
        for _ in 0..ops {
            o.random_op().await;
        }
        o.flush_and_check(&format!("round {round} ({ops} operations)"))
            .await;
        if round == crash_after {
            o.crash_and_restart().await;
            o.flush_and_check(&format!("after crash following round {round}"))
                .await;
        }
        if round == restart_after {
            o.restart().await;
            o.flush_and_check(&format!("after restart following round {round}"))
                .await;
        }
    }

    // Finally: writes acknowledged but not flushed before a crash must be
    // reflected in the views after recovery.
    o.log.push(format!("-- round {}", rounds + 1));
    for _ in 0..10 {
        o.random_op().await;
    }
    o.crash_and_restart().await;
    o.flush_and_check("after a crash with unflushed writes")
        .await;
    println!("oracle: {rounds} rounds passed (seed {seed})");
    o.finish().await;
}
