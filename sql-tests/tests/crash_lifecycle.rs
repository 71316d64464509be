//! Crashes during lifecycle operations: the server is killed with SIGKILL
//! while it runs `ALTER ... SAVEPOINT`, `STOP`, `START ... FROM SAVEPOINT`,
//! `ALTER ... [WITHOUT STATE] AS SELECT ...` (an upgrade), `ALTER ...
//! ROLLBACK` or `CREATE ... FROM SAVEPOINT` (a clone), then restarted on the
//! same data directory. Afterwards the query must be in a well-defined
//! version and state, never half-way between two:
//!
//! * (a) `system.query_versions` has exactly one `active` version of the
//!   query, the definition `system.streaming_queries` shows is that
//!   version's, and it is the definition from before or after the
//!   statement (after, when the statement was acknowledged); the
//!   savepoints its versions name are listed;
//! * (b) every savepoint `system.savepoints` lists is complete: its
//!   directory (its own) holds a readable `savepoint.json` naming the same
//!   query, name and checkpoint (leftover temporary directories are
//!   allowed, and must not get in the way of later savepoints);
//! * (c) the query is RUNNING or STOPPED (a STOPPED one is started), and
//!   after `FLUSH` its results equal the active definition run ad hoc over
//!   the table (the batch oracle);
//! * (d) `system.operations` has no operation left `in progress`, and an
//!   acknowledged statement's operation `succeeded`.
//!
//! Each case issues the statement on a connection of its own and kills the
//! server after a delay. Between iterations the table changes (INSERT,
//! UPDATE, DELETE), and a writer keeps inserting while the statement runs,
//! so what the query replays after its restore point matters. The delays
//! are spread over twice the time the statement takes without a kill
//! (measured once before the loop, the writer running), one random delay
//! per slice, so that the kills fall into each of its steps over the
//! iterations. The queries checkpoint every 200 ms. Each case prints how
//! many kills ended how: what the client saw, what `system.operations`
//! says, whether the change was made.
//!
//! Three more tests, ignored, reproduce a bug: `savepoint::import` replaces
//! a query's live checkpoint directory `chk-<epoch>` before the commit that
//! replaces its checkpoint record, so a crash in between resumes the old
//! record over the new state (through START FROM SAVEPOINT, ROLLBACK and an
//! upgrade keeping renumbered state; see their comments; run them with
//! `-- --ignored`). Each kills the server right after that step, watched
//! on the file system, and fails at the oracle check.
//!
//! Environment (as `crash.rs`):
//! * `WEIR_CRASH_SEED`: seed of the random choices (printed; timing is not
//!   reproducible, so a seed narrows a failure down but may not replay it);
//! * `WEIR_CRASH_KILLS`: kills in the whole suite, split over the seven
//!   cases (rounded up). Default: 8 per case. A long soak:
//!   `WEIR_CRASH_KILLS=300 cargo test --workspace --test crash_lifecycle`.
//!
//! On failure the server's temp dir is kept and the message names its
//! `server.log` and a `statements.log` journal of the case.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::task::block_in_place;
use tokio_postgres::Client;
use weir_sql_tests::db::describe_pg_error;
use weir_sql_tests::sql::{assert_view_matches, exec, int, rows, text, Rows};
use weir_sql_tests::TestServer;

/// The definitions the query moves between: it is created with the first;
/// the second has the same columns and another plan; the third other
/// columns.
const SUMS: &str = "SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k";
const EVEN: &str = "SELECT k, count(*) AS n, sum(v) AS s FROM t WHERE v % 2 = 0 GROUP BY k";
const BIG: &str = "SELECT k, count(*) AS n FROM t WHERE v > 300 GROUP BY k";
const DEFINITIONS: [&str; 3] = [SUMS, EVEN, BIG];

/// Cases (tests run by default) in this file.
const CASES: u64 = 7;
const DEFAULT_KILLS_PER_CASE: u64 = 8;

/// Bounds of the span the kill delays are spread over.
const MIN_SPAN: Duration = Duration::from_millis(60);
const MAX_SPAN: Duration = Duration::from_millis(700);
const FLUSH_TIMEOUT: Duration = Duration::from_secs(90);
const STATUS_TIMEOUT: Duration = Duration::from_secs(60);
/// First id of the rows the background writer inserts (far above the ids
/// of the rows a case inserts itself).
const WRITER_IDS: i64 = 10_000_000;
/// Rows of 5,000 groups inserted by the tests that need a bigger result.
const BULK: &str = "INSERT INTO t SELECT id, id % 5000 AS k, id % 997 AS v \
                    FROM generate_series(1000000, 1019999) AS g(id)";

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

fn kills_per_case() -> u64 {
    match env_u64("WEIR_CRASH_KILLS") {
        Some(total) => total.div_ceil(CASES).max(1),
        None => DEFAULT_KILLS_PER_CASE,
    }
}

fn normalize(sql: &str) -> String {
    sql.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_ascii_lowercase()
}

fn same(a: &str, b: &str) -> bool {
    normalize(a) == normalize(b)
}

/// How the statement under test ended, as its client saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Outcome {
    /// Acknowledged before the kill: its change must have survived.
    Done,
    /// The connection died first: the change may or may not be made.
    Lost,
}

/// What the checks after a restart found.
struct Settled {
    /// The active version's definition.
    definition: String,
    /// The query's status before the checks started it.
    status: String,
    /// Status of the operation the killed statement began, if it began one.
    operation: Option<String>,
}

/// One case's run: the server, the controlling session, a journal.
struct Case {
    name: &'static str,
    seed: u64,
    kills: u64,
    rng: StdRng,
    server: TestServer,
    c: Client,
    /// Next id the case inserts.
    next_id: i64,
    /// Next id of the background writer.
    writer_id: i64,
    /// Newest operation id before the statement under test.
    operations_before: i64,
    started: Instant,
    journal: Vec<String>,
    /// (outcome, operation status, change made) → kills.
    tally: BTreeMap<(Outcome, String, bool), u64>,
}

impl Drop for Case {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        self.server.keep_dir_on_drop();
        let path = self.server.root_dir().join("statements.log");
        let _ = std::fs::write(&path, self.journal.join("\n") + "\n");
        let tail = self.journal.len().saturating_sub(30);
        eprintln!(
            "crash_lifecycle[{}] failed; seed {} ({} kills per case)\n\
             server log: {}\nstatement journal: {}\n\
             rerun: CARGO_TARGET_DIR=$HOME/.cache/weir-target WEIR_CRASH_SEED={} \
             WEIR_CRASH_KILLS={} cargo test --workspace --test crash_lifecycle -- {} --exact\n\
             ----- last journal entries -----\n{}",
            self.name,
            self.seed,
            self.kills,
            self.server.log_path().display(),
            path.display(),
            self.seed,
            self.kills * CASES,
            self.name,
            self.journal[tail..].join("\n")
        );
    }
}

impl Case {
    /// A server with table `t` (60 rows) and materialized view `mv` (SUMS)
    /// over it, checkpointing every 200 ms.
    async fn start(name: &'static str, state_backend: &str) -> Case {
        Case::start_with(name, state_backend, "200ms").await
    }

    async fn start_with(name: &'static str, state_backend: &str, interval: &str) -> Case {
        let seed = env_u64("WEIR_CRASH_SEED").unwrap_or_else(rand::random);
        let kills = kills_per_case();
        println!("crash_lifecycle[{name}]: seed {seed}, {kills} kills");
        let server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
        let c = server.connect().await.unwrap();
        let mut case = Case {
            name,
            seed,
            kills,
            rng: StdRng::seed_from_u64(
                name.bytes()
                    .fold(seed, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01b3)),
            ),
            server,
            c,
            next_id: 0,
            writer_id: WRITER_IDS,
            operations_before: 0,
            started: Instant::now(),
            journal: Vec::new(),
            tally: BTreeMap::new(),
        };
        case.exec("CREATE TABLE t (id bigint PRIMARY KEY, k bigint, v bigint)")
            .await;
        case.insert(60).await;
        case.exec(&format!(
            "CREATE MATERIALIZED VIEW mv WITH (checkpoint_interval = '{interval}', \
             state_backend = '{state_backend}', parallelism = 2) AS {SUMS}"
        ))
        .await;
        case
    }

    fn note(&mut self, line: String) {
        let at = self.started.elapsed().as_millis();
        self.journal.push(format!("[{at:>6} ms] {line}"));
    }

    async fn exec(&mut self, sql: &str) {
        self.note(sql.to_string());
        exec(&self.c, sql).await;
    }

    async fn rows(&mut self, sql: &str) -> Rows {
        rows(&self.c, sql).await
    }

    async fn status(&mut self, query: &str) -> Option<String> {
        text(
            &self.c,
            &format!("SELECT status FROM system.streaming_queries WHERE name = '{query}'"),
        )
        .await
    }

    async fn flush(&mut self) {
        self.note("FLUSH".into());
        tokio::time::timeout(FLUSH_TIMEOUT, exec(&self.c, "FLUSH"))
            .await
            .unwrap_or_else(|_| panic!("[{}] FLUSH took over {FLUSH_TIMEOUT:?}", self.name));
    }

    /// Inserts `n` new rows: k = id % 5, v a random value below 1000.
    async fn insert(&mut self, n: i64) {
        let values: Vec<String> = (self.next_id..self.next_id + n)
            .map(|id| format!("({id}, {}, {})", id % 5, self.rng.random_range(0..1000)))
            .collect();
        self.next_id += n;
        self.exec(&format!("INSERT INTO t VALUES {}", values.join(", ")))
            .await;
    }

    /// Changes the input: new rows, updated rows, deleted rows.
    async fn churn(&mut self) {
        let n = self.rng.random_range(5..20);
        self.insert(n).await;
        let r = self.rng.random_range(0..7);
        let d = self.rng.random_range(1..200);
        self.exec(&format!(
            "UPDATE t SET v = (v + {d}) % 1000 WHERE id % 7 = {r}"
        ))
        .await;
        let r = self.rng.random_range(0..13);
        self.exec(&format!("DELETE FROM t WHERE id % 13 = {r} AND v < 150"))
            .await;
    }

    /// Inserts a row and flushes, several times, until `mv`'s newest
    /// checkpoint id is `past` or more.
    async fn checkpoints_past(&mut self, past: i64) {
        loop {
            let newest = newest_checkpoint(&self.c, "mv").await;
            if newest >= past {
                return;
            }
            let mut batch = String::new();
            for _ in newest..past {
                let id = self.next_id;
                self.next_id += 1;
                let v = self.rng.random_range(0..1000);
                batch.push_str(&format!(
                    "INSERT INTO t VALUES ({id}, {}, {v}); FLUSH; ",
                    id % 5
                ));
            }
            self.exec(&batch).await;
        }
    }

    /// Runs `sql` without a kill; twice the time it took, the span the
    /// kill delays are spread over.
    async fn span_of(&mut self, sql: &str) -> Duration {
        let (stop, writer) = self.writer().await;
        let t = Instant::now();
        self.exec(sql).await;
        let took = t.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.writer_id = writer.await.unwrap();
        self.note(format!("  took {took:?}"));
        (took * 2).clamp(MIN_SPAN, MAX_SPAN)
    }

    /// A task inserting a row every 5 ms on a connection of its own until
    /// told to stop or the connection dies; it returns the next id.
    async fn writer(&mut self) -> (Arc<AtomicBool>, tokio::task::JoinHandle<i64>) {
        let client = self.server.connect().await.unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let first = self.writer_id;
        let task = tokio::spawn(async move {
            let mut id = first;
            while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
                let sql = format!("INSERT INTO t VALUES ({id}, {}, {})", id % 5, id % 997);
                if client.batch_execute(&sql).await.is_err() {
                    // Unacknowledged: in the table or not, the oracle reads
                    // whichever it is.
                    return id + 1;
                }
                id += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            id
        });
        (stop, task)
    }

    /// Delay of kill `i` of `self.kills`: a random point of slice `i` of
    /// `span`.
    fn delay(&mut self, i: u64, span: Duration) -> Duration {
        let f = (i as f64 + self.rng.random::<f64>()) / self.kills as f64;
        span.mul_f64(f.min(1.0))
    }

    async fn newest_operation(&mut self) -> i64 {
        int(&self.c, "SELECT max(id) FROM system.operations").await
    }

    /// Issues `sql` on a connection of its own, with a writer inserting
    /// rows meanwhile, kills the server after `delay`, and starts it
    /// again.
    async fn kill_during(&mut self, sql: &str, delay: Duration) -> Outcome {
        self.operations_before = self.newest_operation().await;
        self.note(format!("KILL DURING [{delay:?}] {sql}"));
        let op_client = self.server.connect().await.unwrap();
        let (_, writer) = self.writer().await;
        let statement = sql.to_string();
        let op = tokio::spawn(async move {
            let t = Instant::now();
            let r = op_client.batch_execute(&statement).await;
            (r, t.elapsed())
        });
        tokio::time::sleep(delay).await;
        block_in_place(|| self.server.kill()).unwrap_or_else(|e| panic!("{e:#}"));
        let (result, took) = tokio::time::timeout(Duration::from_secs(30), op)
            .await
            .expect("the statement's client to notice the kill")
            .unwrap();
        self.writer_id = tokio::time::timeout(Duration::from_secs(30), writer)
            .await
            .expect("the writer to notice the kill")
            .unwrap();
        let outcome = match result {
            Ok(()) => Outcome::Done,
            Err(e) if e.as_db_error().is_some() => {
                panic!(
                    "[{}] {sql} was refused: {}",
                    self.name,
                    describe_pg_error(&e)
                )
            }
            Err(_) => Outcome::Lost,
        };
        self.note(format!(
            "  killed: {outcome:?} after {took:?}; the writer reached id {}",
            self.writer_id
        ));
        block_in_place(|| self.server.start_again()).unwrap_or_else(|e| panic!("{e:#}"));
        self.c = self.server.connect().await.unwrap();
        self.note("restarted".into());
        outcome
    }

    /// (d): no operation left in progress; the status of the operation
    /// the statement under test began (the first of kind `operation`
    /// after `self.operations_before`), which succeeded if the statement
    /// was acknowledged.
    async fn check_operations(&mut self, operation: &str, outcome: Outcome) -> Option<String> {
        let open = self
            .rows(
                "SELECT id, query, operation, detail FROM system.operations \
                 WHERE status = 'in progress' OR finished_at IS NULL",
            )
            .await;
        assert!(
            open.is_empty(),
            "[{}] operations left in progress after a restart: {open:?}",
            self.name
        );
        let mine = self
            .rows(&format!(
                "SELECT status, detail FROM system.operations \
                 WHERE operation = '{operation}' AND id > {} ORDER BY id LIMIT 1",
                self.operations_before
            ))
            .await;
        self.note(format!("  the '{operation}' operation: {mine:?}"));
        let status = mine.first().and_then(|r| r[0].clone());
        if outcome == Outcome::Done {
            assert_eq!(
                status.as_deref(),
                Some("succeeded"),
                "[{}] the acknowledged {operation} is not recorded as succeeded: {mine:?}",
                self.name
            );
        }
        status
    }

    /// (b): every savepoint listed is complete, each in its own directory.
    async fn check_savepoints(&mut self) {
        let listed = self
            .rows("SELECT query, name, checkpoint_id, path FROM system.savepoints")
            .await;
        let mut paths = std::collections::HashSet::new();
        for row in &listed {
            let [query, name, checkpoint, path] = &row[..] else {
                unreachable!()
            };
            let path = path.clone().unwrap();
            assert!(
                paths.insert(path.clone()),
                "[{}] two savepoints in {path}: {listed:?}",
                self.name
            );
            let manifest = read_manifest(Path::new(&path)).unwrap_or_else(|e| {
                panic!(
                    "[{}] savepoint {name:?} is listed but incomplete: {e}",
                    self.name
                )
            });
            let server = &manifest["server"];
            assert_eq!(
                (
                    server["query"].as_str(),
                    server["name"].as_str(),
                    manifest["record"]["epoch"].as_u64().map(|e| e.to_string()),
                ),
                (query.as_deref(), name.as_deref(), checkpoint.clone()),
                "[{}] savepoint {name:?}: its manifest names another savepoint",
                self.name
            );
        }
        let on_disk = std::fs::read_dir(self.server.data_dir().join("savepoints"))
            .map(|d| d.count())
            .unwrap_or(0);
        self.note(format!(
            "  {} savepoints listed, {on_disk} directories",
            listed.len()
        ));
    }

    /// (a): exactly one active version; the running definition is its and
    /// one of `allowed` (`allowed[0]` when the statement was
    /// acknowledged); the savepoints the versions name exist. Returns the
    /// definition, as the server keeps it.
    async fn check_version(&mut self, query: &str, allowed: &[&str], outcome: Outcome) -> String {
        let all = self
            .rows(&format!(
                "SELECT version, status, started_from, replaced_at, definition \
                 FROM system.query_versions WHERE query = '{query}' ORDER BY version"
            ))
            .await;
        let summary: Vec<_> = all.iter().map(|r| r[..4].to_vec()).collect();
        self.note(format!("  versions of {query}: {summary:?}"));
        let active: Vec<&Vec<Option<String>>> = all
            .iter()
            .filter(|r| r[1].as_deref() == Some("active"))
            .collect();
        assert_eq!(
            active.len(),
            1,
            "[{}] {query} should have exactly one active version: {summary:?}",
            self.name
        );
        let definition = active[0][4].clone().unwrap();
        let running = self
            .rows(&format!(
                "SELECT definition FROM system.streaming_queries WHERE name = '{query}'"
            ))
            .await;
        assert_eq!(
            running,
            vec![vec![Some(definition.clone())]],
            "[{}] the running definition of {query} is not its active version's (version {:?})",
            self.name,
            active[0][0]
        );
        let which = allowed.iter().position(|d| same(d, &definition));
        assert!(
            which.is_some(),
            "[{}] {query} runs {definition:?}, none of {allowed:?}",
            self.name
        );
        if outcome == Outcome::Done {
            assert_eq!(
                which,
                Some(0),
                "[{}] the acknowledged statement's version of {query} is not the active one: {definition:?}",
                self.name
            );
        }
        let names: Vec<Option<String>> = self
            .rows("SELECT name FROM system.savepoints")
            .await
            .into_iter()
            .map(|r| r[0].clone())
            .collect();
        for row in &all {
            for named in [&row[2], &row[3]] {
                assert!(
                    named.is_none() || names.contains(named),
                    "[{}] version {:?} of {query} names savepoint {named:?}, which is not listed",
                    self.name,
                    row[0]
                );
            }
        }
        definition
    }

    /// (c): RUNNING or STOPPED (then started), and after FLUSH the results
    /// equal `definition` run ad hoc. Returns the status it was in.
    async fn check_results(&mut self, query: &str, definition: &str) -> String {
        let deadline = Instant::now() + STATUS_TIMEOUT;
        let status = loop {
            let s = self.status(query).await;
            if let Some(s @ ("RUNNING" | "STOPPED" | "FAILED")) = s.as_deref() {
                break s.to_string();
            }
            assert!(
                Instant::now() < deadline,
                "[{}] {query} neither RUNNING nor STOPPED within {STATUS_TIMEOUT:?} (last: {s:?})",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        self.note(format!("  {query} is {status}"));
        if status == "FAILED" {
            let exceptions = self
                .rows(&format!(
                    "SELECT action, message FROM system.exceptions WHERE query = '{query}' \
                     ORDER BY occurred_at DESC"
                ))
                .await;
            panic!(
                "[{}] {query} FAILED after the restart: {exceptions:?}",
                self.name
            );
        }
        if status == "STOPPED" {
            self.exec(&format!("START MATERIALIZED VIEW {query}")).await;
        }
        self.flush().await;
        assert_view_matches(&self.c, query, definition).await;
        let n = int(&self.c, &format!("SELECT count(*) FROM {query}")).await;
        self.note(format!("  {query} equals its query ({n} rows)"));
        status
    }

    /// Every check after a restart.
    async fn check(
        &mut self,
        query: &str,
        operation: &str,
        allowed: &[&str],
        outcome: Outcome,
    ) -> Settled {
        let operation = self.check_operations(operation, outcome).await;
        self.check_savepoints().await;
        let definition = self.check_version(query, allowed, outcome).await;
        let status = self.check_results(query, &definition).await;
        Settled {
            definition,
            status,
            operation,
        }
    }

    /// Counts a kill by what the client saw, what the history says and
    /// whether the change was made.
    fn count(&mut self, outcome: Outcome, settled: &Settled, made: bool) {
        let operation = settled.operation.clone().unwrap_or_else(|| "none".into());
        self.note(format!(
            "  => {outcome:?}, operation {operation}, change made: {made}"
        ));
        *self.tally.entry((outcome, operation, made)).or_default() += 1;
    }

    fn finish(&mut self) {
        let mut lines = vec![format!(
            "crash_lifecycle[{}]: {} kills in {:.1?} (client saw / operation recorded / change made: kills)",
            self.name,
            self.tally.values().sum::<u64>(),
            self.started.elapsed()
        )];
        for ((outcome, operation, made), n) in &self.tally {
            lines.push(format!("  {outcome:?} / {operation} / {made}: {n}"));
        }
        println!("{}", lines.join("\n"));
    }
}

/// Reads a savepoint's `savepoint.json` (a Weir state file: magic, JSON,
/// length and CRC-32 trailer) and checks its framing.
fn read_manifest(dir: &Path) -> Result<serde_json::Value, String> {
    let path = dir.join("savepoint.json");
    let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() < 20 || &bytes[..8] != b"WEIRST01" {
        return Err(format!("{}: not a Weir state file", path.display()));
    }
    let end = bytes.len() - 12;
    let len = u64::from_le_bytes(bytes[end..end + 8].try_into().unwrap()) as usize;
    if len != end - 8 {
        return Err(format!("{}: truncated", path.display()));
    }
    serde_json::from_slice(&bytes[8..end]).map_err(|e| format!("{}: {e}", path.display()))
}

/// The newest completed checkpoint of `query` (0 without one).
async fn newest_checkpoint(c: &Client, query: &str) -> i64 {
    int(
        c,
        &format!(
            "SELECT max(checkpoint_id) FROM system.checkpoints \
             WHERE query = '{query}' AND status = 'completed'"
        ),
    )
    .await
}

/// Kills during `ALTER ... SAVEPOINT`. After every other restart a
/// savepoint taken without a kill shows that what a crash left (a
/// temporary directory, a directory not listed) does not get in the way;
/// at the end the query starts from the newest savepoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_savepoint() {
    let mut case = Case::start("kill_during_savepoint", "rocksdb").await;
    let span = case.span_of("ALTER MATERIALIZED VIEW mv SAVEPOINT").await;
    for i in 0..case.kills {
        case.churn().await;
        let before = case.rows("SELECT name FROM system.savepoints").await.len();
        let delay = case.delay(i, span);
        let outcome = case
            .kill_during("ALTER MATERIALIZED VIEW mv SAVEPOINT", delay)
            .await;
        let settled = case.check("mv", "savepoint", &[SUMS], outcome).await;
        assert_eq!(settled.status, "RUNNING", "a savepoint does not stop mv");
        let after = case.rows("SELECT name FROM system.savepoints").await.len();
        assert!(after <= before + 1, "one savepoint at most");
        if outcome == Outcome::Done {
            assert_eq!(after, before + 1, "the acknowledged savepoint is listed");
        }
        case.count(outcome, &settled, after > before);
        if i % 2 == 1 {
            case.exec("ALTER MATERIALIZED VIEW mv SAVEPOINT").await;
        }
    }
    let newest = case
        .rows("SELECT name FROM system.savepoints ORDER BY created_at DESC LIMIT 1")
        .await;
    let newest = newest[0][0].clone().unwrap();
    case.churn().await;
    case.exec("STOP MATERIALIZED VIEW mv FORCE").await;
    case.exec(&format!(
        "START MATERIALIZED VIEW mv FROM SAVEPOINT '{newest}'"
    ))
    .await;
    case.flush().await;
    assert_view_matches(&case.c, "mv", SUMS).await;
    case.finish();
}

/// Kills during `STOP` (a savepoint, then the run stops and the STOPPED
/// mark is written): afterwards RUNNING, or STOPPED.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_stop() {
    let mut case = Case::start("kill_during_stop", "memory").await;
    let span = case.span_of("STOP MATERIALIZED VIEW mv").await;
    case.exec("START MATERIALIZED VIEW mv").await;
    for i in 0..case.kills {
        case.churn().await;
        let delay = case.delay(i, span);
        let outcome = case.kill_during("STOP MATERIALIZED VIEW mv", delay).await;
        let settled = case.check("mv", "stop", &[SUMS], outcome).await;
        if outcome == Outcome::Done {
            assert_eq!(settled.status, "STOPPED", "the acknowledged STOP holds");
        }
        let stopped = settled.status == "STOPPED";
        case.count(outcome, &settled, stopped);
    }
    case.finish();
}

/// Kills during `START ... FROM SAVEPOINT` of a stopped query, from an old
/// savepoint and from the one its STOP took.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_start_from_savepoint() {
    let mut case = Case::start("kill_during_start_from_savepoint", "rocksdb").await;
    case.exec("ALTER MATERIALIZED VIEW mv SAVEPOINT AS 'early'")
        .await;
    case.churn().await;
    case.exec("STOP MATERIALIZED VIEW mv").await;
    let span = case
        .span_of("START MATERIALIZED VIEW mv FROM SAVEPOINT 'early'")
        .await;
    for i in 0..case.kills {
        case.churn().await;
        case.flush().await;
        case.exec("STOP MATERIALIZED VIEW mv").await;
        case.churn().await;
        let savepoint = if i % 2 == 0 {
            let newest = case
                .rows(
                    "SELECT name FROM system.savepoints WHERE trigger = 'stop' \
                     ORDER BY created_at DESC LIMIT 1",
                )
                .await;
            newest[0][0].clone().unwrap()
        } else {
            "early".to_string()
        };
        let delay = case.delay(i, span);
        let outcome = case
            .kill_during(
                &format!("START MATERIALIZED VIEW mv FROM SAVEPOINT '{savepoint}'"),
                delay,
            )
            .await;
        let settled = case.check("mv", "start", &[SUMS], outcome).await;
        if outcome == Outcome::Done {
            assert_eq!(settled.status, "RUNNING", "the acknowledged START holds");
        }
        let started = settled.status == "RUNNING";
        case.count(outcome, &settled, started);
    }
    case.finish();
}

/// Kills during upgrades `WITHOUT STATE`, to a definition with the same
/// columns or with others: afterwards the old version or the new one,
/// whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_upgrade() {
    let mut case = Case::start("kill_during_upgrade", "memory").await;
    let span = case
        .span_of(&format!(
            "ALTER MATERIALIZED VIEW mv WITHOUT STATE AS {EVEN}"
        ))
        .await;
    let mut current = EVEN;
    for i in 0..case.kills {
        case.churn().await;
        let others: Vec<&str> = DEFINITIONS.into_iter().filter(|d| *d != current).collect();
        let next = others[case.rng.random_range(0..others.len())];
        let delay = case.delay(i, span);
        let outcome = case
            .kill_during(
                &format!("ALTER MATERIALIZED VIEW mv WITHOUT STATE AS {next}"),
                delay,
            )
            .await;
        let settled = case.check("mv", "upgrade", &[next, current], outcome).await;
        let upgraded = same(&settled.definition, next);
        case.count(outcome, &settled, upgraded);
        if upgraded {
            current = next;
        }
    }
    case.finish();
}

/// Kills during upgrades that keep the aggregation's state (a HAVING
/// above it added, changed or removed; `EXPLAIN ALTER` says whether the
/// state can be kept, and the upgrade is `WITHOUT STATE` when it cannot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_upgrade_keeping_state() {
    const KEEPING: [&str; 3] = [
        SUMS,
        "SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k HAVING sum(v) > 4000",
        "SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k HAVING count(*) > 14",
    ];
    let mut case = Case::start("kill_during_upgrade_keeping_state", "memory").await;
    let mut current = SUMS;
    let mut span = Duration::ZERO;
    let mut i = 0;
    while i < case.kills {
        case.churn().await;
        let others: Vec<&str> = KEEPING.into_iter().filter(|d| *d != current).collect();
        let next = others[case.rng.random_range(0..others.len())];
        let report = case
            .rows(&format!("EXPLAIN ALTER MATERIALIZED VIEW mv AS {next}"))
            .await;
        let verdict = report.last().and_then(|r| r[2].clone());
        case.note(format!("  EXPLAIN ALTER: {verdict:?}"));
        let sql = if verdict.as_deref() == Some("keeps state") {
            format!("ALTER MATERIALIZED VIEW mv AS {next}")
        } else {
            format!("ALTER MATERIALIZED VIEW mv WITHOUT STATE AS {next}")
        };
        if span.is_zero() {
            span = case.span_of(&sql).await;
            current = next;
            continue;
        }
        let delay = case.delay(i, span);
        i += 1;
        let outcome = case.kill_during(&sql, delay).await;
        let settled = case.check("mv", "upgrade", &[next, current], outcome).await;
        let upgraded = same(&settled.definition, next);
        case.count(outcome, &settled, upgraded);
        if upgraded {
            current = next;
        }
    }
    case.finish();
}

/// Kills during `ROLLBACK` right after an upgrade (to a definition with
/// the same columns or with others): afterwards the new version or the old
/// one, whole.
///
/// The new version counts its checkpoints from 1 again, and a rollback
/// whose savepoint has the id of the new version's newest checkpoint
/// meets the bug of the ignored test below; so the version being replaced
/// first checkpoints well past the ids the new one can reach before the
/// rollback, and a rollback that could meet the bug anyway is not killed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_rollback() {
    const PAST: i64 = 30;
    let mut case = Case::start("kill_during_rollback", "rocksdb").await;
    let mut current = SUMS;
    let mut span = Duration::ZERO;
    let mut i = 0;
    let mut rounds = 0;
    while i < case.kills {
        rounds += 1;
        assert!(
            rounds <= 2 * case.kills + 2,
            "too many rollbacks not killed"
        );
        case.checkpoints_past(PAST).await;
        let others: Vec<&str> = DEFINITIONS.into_iter().filter(|d| *d != current).collect();
        let next = others[case.rng.random_range(0..others.len())];
        case.exec(&format!(
            "ALTER MATERIALIZED VIEW mv WITHOUT STATE AS {next}"
        ))
        .await;
        let savepoint = case
            .rows(
                "SELECT s.checkpoint_id FROM system.query_versions v \
                 JOIN system.savepoints s ON s.name = v.replaced_at \
                 WHERE v.query = 'mv' AND v.status = 'superseded' \
                 ORDER BY v.version DESC LIMIT 1",
            )
            .await;
        let savepoint: i64 = savepoint
            .first()
            .and_then(|r| r[0].as_deref())
            .unwrap_or_else(|| panic!("the upgrade took no savepoint"))
            .parse()
            .unwrap();
        case.churn().await;
        if span.is_zero() {
            span = case.span_of("ALTER MATERIALIZED VIEW mv ROLLBACK").await;
            case.flush().await;
            assert_view_matches(&case.c, "mv", current).await;
            continue;
        }
        if newest_checkpoint(&case.c, "mv").await + 10 >= savepoint {
            case.note(format!(
                "  the savepoint is of checkpoint {savepoint}: not killed"
            ));
            case.exec("ALTER MATERIALIZED VIEW mv ROLLBACK").await;
            continue;
        }
        let delay = case.delay(i, span);
        i += 1;
        let outcome = case
            .kill_during("ALTER MATERIALIZED VIEW mv ROLLBACK", delay)
            .await;
        let settled = case
            .check("mv", "rollback", &[current, next], outcome)
            .await;
        let rolled_back = same(&settled.definition, current);
        case.count(outcome, &settled, rolled_back);
        if !rolled_back {
            current = next;
        }
    }
    case.finish();
}

/// Kills during `CREATE ... FROM SAVEPOINT` (a clone): afterwards the
/// clone does not exist at all, or exists whole; it is dropped before the
/// next iteration.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_clone() {
    let mut case = Case::start("kill_during_clone", "rocksdb").await;
    case.exec("ALTER MATERIALIZED VIEW mv SAVEPOINT AS 'origin'")
        .await;
    case.churn().await;
    let clone = format!("CREATE MATERIALIZED VIEW mv2 FROM SAVEPOINT 'origin' AS {SUMS}");
    let span = case.span_of(&clone).await;
    case.exec("DROP MATERIALIZED VIEW mv2").await;
    for i in 0..case.kills {
        case.churn().await;
        let delay = case.delay(i, span);
        let outcome = case.kill_during(&clone, delay).await;
        let exists = case.status("mv2").await.is_some();
        let settled = if exists {
            let settled = case.check("mv2", "create", &[SUMS], outcome).await;
            case.check_results("mv", SUMS).await;
            case.exec("DROP MATERIALIZED VIEW mv2").await;
            settled
        } else {
            assert_eq!(outcome, Outcome::Lost, "the acknowledged clone exists");
            let versions = case
                .rows("SELECT version, status FROM system.query_versions WHERE query = 'mv2'")
                .await;
            assert!(
                versions.is_empty(),
                "no versions of a clone that does not exist: {versions:?}"
            );
            let refused = case.c.batch_execute("SELECT * FROM mv2").await;
            assert!(
                refused.is_err(),
                "no result table of a clone that does not exist"
            );
            case.check("mv", "create", &[SUMS], outcome).await
        };
        case.count(outcome, &settled, exists);
    }
    case.finish();
}

impl Case {
    /// The directory of checkpoint `epoch` of `mv`, whose newest
    /// checkpoint is `newest` (the query with a `chk-<newest>`).
    fn chk_dir(&self, newest: i64, epoch: i64) -> PathBuf {
        std::fs::read_dir(self.server.data_dir().join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.join(format!("chk-{newest}")).exists())
            .unwrap_or_else(|| panic!("no chk-{newest} directory"))
            .join(format!("chk-{epoch}"))
    }

    /// Issues `sql` and kills the server as soon as `savepoint::import`
    /// has renamed its temporary directory for checkpoint `chk`'s epoch
    /// (`chk-<epoch>-r<n>.importing`) into place, before the commit that
    /// names it in the record, then starts it again. Returns whether the
    /// kill came after the rename.
    async fn kill_after_import_rename(&mut self, sql: &str, chk: &Path) -> bool {
        self.operations_before = self.newest_operation().await;
        let parent = chk.parent().unwrap().to_path_buf();
        let prefix = format!("{}-r", chk.file_name().unwrap().to_string_lossy());
        let imports = |suffix: bool| -> std::collections::HashSet<String> {
            std::fs::read_dir(&parent)
                .map(|d| {
                    d.flatten()
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| n.starts_with(&prefix) && n.ends_with(".importing") == suffix)
                        .collect()
                })
                .unwrap_or_default()
        };
        let before = imports(false);
        self.note(format!(
            "KILL AFTER THE RENAME OF {}/{prefix}<n>.importing DURING {sql}",
            parent.display()
        ));
        let client = self.server.connect().await.unwrap();
        let statement = sql.to_string();
        let op = tokio::spawn(async move { client.batch_execute(&statement).await });
        let renamed = block_in_place(|| {
            let mut seen = false;
            loop {
                if !imports(true).is_empty() {
                    seen = true;
                } else if seen && imports(false).difference(&before).next().is_some() {
                    return true;
                }
                if op.is_finished() {
                    return false;
                }
                std::thread::sleep(Duration::from_micros(100));
            }
        });
        block_in_place(|| self.server.kill()).unwrap();
        let result = op.await.unwrap();
        block_in_place(|| self.server.start_again()).unwrap();
        self.c = self.server.connect().await.unwrap();
        self.note(format!(
            "  killed; renamed: {renamed}; the statement: {:?}",
            result.map_err(|e| e.to_string())
        ));
        renamed
    }

    /// Leaves `mv` (which must checkpoint only when asked: FLUSH,
    /// savepoints) STOPPED, its newest checkpoint of the same id as
    /// savepoint `a<n>` but of another timeline: `a<n>` is taken, then `mv`
    /// goes back to an older savepoint `e<n>` and forward again to that
    /// id, over other input. Returns the id.
    async fn same_id_other_timeline(&mut self, n: usize) -> i64 {
        self.exec(&format!("ALTER MATERIALIZED VIEW mv SAVEPOINT AS 'e{n}'"))
            .await;
        for _ in 0..2 {
            self.churn().await;
            self.flush().await;
        }
        self.churn().await;
        self.exec(&format!("ALTER MATERIALIZED VIEW mv SAVEPOINT AS 'a{n}'"))
            .await;
        let epoch = int(
            &self.c,
            &format!("SELECT checkpoint_id FROM system.savepoints WHERE name = 'a{n}'"),
        )
        .await;
        self.exec("STOP MATERIALIZED VIEW mv FORCE").await;
        self.exec(&format!("START MATERIALIZED VIEW mv FROM SAVEPOINT 'e{n}'"))
            .await;
        self.forward_to(epoch).await;
        self.exec("STOP MATERIALIZED VIEW mv FORCE").await;
        self.churn().await;
        epoch
    }

    /// Changes the input and flushes until `mv`'s newest checkpoint is
    /// `epoch`.
    async fn forward_to(&mut self, epoch: i64) {
        loop {
            let newest = newest_checkpoint(&self.c, "mv").await;
            self.note(format!("  newest checkpoint {newest}, going to {epoch}"));
            assert!(newest <= epoch, "went past checkpoint {epoch}");
            if newest == epoch {
                return;
            }
            self.churn().await;
            self.flush().await;
        }
    }
}

/// Regression test (this went wrong before imports used a directory of their own): `START ... FROM SAVEPOINT` of a savepoint whose checkpoint id is
/// the stopped query's own newest one, but of another timeline (taken
/// before the query was restored to an older point), killed right after
/// `savepoint::import` replaced the query's `chk-<epoch>` directory by the
/// savepoint's state files and before its commit replaced the checkpoint
/// record. After the restart the query is STOPPED with its old records, as
/// it should be, but the newest record now points at the savepoint's state:
/// `START` resumes from that record's offsets and result rows with the
/// other timeline's state, and the results go wrong (stale rows that the
/// aggregation's retractions miss). The kill is keyed to the step: the
/// temporary `chk-<epoch>.importing` appears, then is renamed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_start_from_a_savepoint_of_the_same_checkpoint_id() {
    let mut case = Case::start_with("same_id_start", "memory", "1h").await;
    // A bigger result widens the window between the rename and the commit
    // (the result rows are encoded in between).
    case.exec(BULK).await;
    case.flush().await;
    for n in 0..5 {
        let epoch = case.same_id_other_timeline(n).await;
        let chk = case.chk_dir(epoch, epoch);
        let sql = format!("START MATERIALIZED VIEW mv FROM SAVEPOINT 'a{n}'");
        let renamed = case.kill_after_import_rename(&sql, &chk).await;
        let status = case.status("mv").await;
        case.note(format!("  after the restart: {status:?}"));
        // Fails here when the kill fell between the rename and the commit
        // (renamed, yet STOPPED).
        case.check("mv", "start", &[SUMS], Outcome::Lost).await;
        if renamed && status.as_deref() == Some("STOPPED") {
            case.finish();
            return;
        }
    }
    panic!("never killed between the rename and the commit");
}

/// Regression test (this went wrong before imports used a directory of their own): The same through `ROLLBACK`: version 2 (recomputed from nothing,
/// so its checkpoint ids start again from 1) has reached the checkpoint id
/// of the savepoint taken before the upgrade when it is rolled back; the
/// kill comes right after `import` replaced version 2's `chk-<epoch>` by
/// version 1's state and before the commit that makes version 1 active.
/// After the restart version 2 is active, as it should be, and resumes
/// from its newest record over version 1's state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_rollback_to_a_savepoint_of_the_same_checkpoint_id() {
    let mut case = Case::start_with("same_id_rollback", "memory", "1h").await;
    case.exec(BULK).await;
    for _ in 0..5 {
        for _ in 0..3 {
            case.churn().await;
            case.flush().await;
        }
        case.exec(&format!(
            "ALTER MATERIALIZED VIEW mv WITHOUT STATE AS {EVEN}"
        ))
        .await;
        let epoch = int(
            &case.c,
            "SELECT checkpoint_id FROM system.savepoints WHERE trigger = 'before-upgrade' \
             ORDER BY created_at DESC LIMIT 1",
        )
        .await;
        case.forward_to(epoch).await;
        case.churn().await;
        let chk = case.chk_dir(epoch, epoch);
        let renamed = case
            .kill_after_import_rename("ALTER MATERIALIZED VIEW mv ROLLBACK", &chk)
            .await;
        // Fails here when the kill fell between the rename and the commit
        // (renamed, yet version 2 active).
        let settled = case
            .check("mv", "rollback", &[SUMS, EVEN], Outcome::Lost)
            .await;
        if renamed && same(&settled.definition, EVEN) {
            case.finish();
            return;
        }
        if same(&settled.definition, EVEN) {
            case.exec("ALTER MATERIALIZED VIEW mv ROLLBACK").await;
        }
    }
    panic!("never killed between the rename and the commit");
}

/// Regression test (this went wrong before imports used a directory of their own): The same through an upgrade that keeps state while its plan
/// numbers the kept aggregation differently (a join with a new table read
/// first: node 2 becomes node 4). `import` writes the before-upgrade
/// savepoint, renumbered for the new plan, over the running version's own
/// newest checkpoint directory (the savepoint's checkpoint is always the
/// newest one) before the commit that makes the new version active; the
/// kill comes in between. After the restart version 1 is active, as it
/// should be, and resumes from its newest record over state numbered for
/// version 2's plan: its aggregation starts empty under a full result
/// table. No coincidence of checkpoint ids is needed here: any such
/// upgrade killed in that window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_during_upgrade_keeping_renumbered_state() {
    let joined = format!("SELECT a.k, a.n, a.s FROM u JOIN ({SUMS}) a ON a.k = u.k");
    let mut case = Case::start_with("renumbered_upgrade", "memory", "1h").await;
    case.exec("CREATE TABLE u (k bigint PRIMARY KEY, name text)")
        .await;
    case.exec("INSERT INTO u SELECT id, 'k' || id AS name FROM generate_series(0, 4999) AS g(id)")
        .await;
    case.exec(BULK).await;
    for _ in 0..5 {
        case.churn().await;
        case.flush().await;
        let report = case
            .rows(&format!("EXPLAIN ALTER MATERIALIZED VIEW mv AS {joined}"))
            .await;
        let agg: Vec<_> = report
            .iter()
            .filter(|r| r[0].as_deref() == Some("StreamHashAgg"))
            .collect();
        assert_eq!(agg[0][2].as_deref(), Some("kept"), "{report:?}");
        case.note(format!("  the kept aggregation is node {:?}", agg[0][1]));
        case.churn().await;
        // The savepoint before the upgrade is the next checkpoint.
        let newest = newest_checkpoint(&case.c, "mv").await;
        let chk = case.chk_dir(newest, newest + 1);
        let renamed = case
            .kill_after_import_rename(&format!("ALTER MATERIALIZED VIEW mv AS {joined}"), &chk)
            .await;
        // Input after the savepoint's checkpoint, for the aggregation to
        // update. Fails here when the kill fell between the rename and the
        // commit (renamed, yet version 1 active).
        case.churn().await;
        let settled = case
            .check("mv", "upgrade", &[&joined, SUMS], Outcome::Lost)
            .await;
        if renamed && same(&settled.definition, SUMS) {
            case.finish();
            return;
        }
        if same(&settled.definition, &joined) {
            case.exec("ALTER MATERIALIZED VIEW mv ROLLBACK").await;
        }
    }
    panic!("never killed between the rename and the commit");
}
