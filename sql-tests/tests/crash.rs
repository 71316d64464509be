//! Exactly-once crash test: streaming queries must neither lose nor
//! duplicate input across crashes.
//!
//! Two primary-key tables, `orders` and `customers`, feed six materialized
//! views (aggregates, an inner join + aggregate, a global aggregate, a view
//! on a view, a row-level left join, and a filter whose lanes fail
//! transiently with `fail_if` and restart on their own, region by region),
//! all with `parallelism = 2` and a checkpoint configuration. Writer tasks send a steady stream of small
//! INSERT / UPDATE / DELETE statements (each writer owns its own order ids,
//! writer 0 also changes `customers`) and keep a model of every
//! acknowledged statement. At random moments the server is killed with
//! SIGKILL and restarted on the same data dir; the writers reconnect.
//!
//! A statement in flight at a kill is unacknowledged: it may or may not have
//! been applied. Its writer resolves it before sending anything else, by
//! reading the rows it touches: they must show the statement either fully
//! applied or not at all, and the model follows. So the model is exact at
//! every moment, and after `FLUSH`:
//!
//! * (a) each base table equals the model: every acknowledged change is
//!   there, and nothing that was neither acknowledged nor resolved as
//!   applied;
//! * (b) each view equals its defining query run ad hoc over the base
//!   tables, as multisets of text rows (no loss, no duplicates).
//!
//! Both are checked after the initial load, after some restarts in the
//! middle of the run (writers paused) and after the last restart.
//!
//! The queries run over truncated change logs: the writers send `VACUUM`
//! every few statements (it truncates each log below what the retained
//! checkpoints and the running readers need), some kills come right after
//! a `VACUUM` answered and some with one in flight (at least one of the
//! former in every test), so a restored query resumes from checkpointed
//! offsets just above a cut. The controller samples the front of every log
//! (`coalesce(log_start, log_end + 1)` in `system.tables`) throughout: it
//! must never move back, and each base table's must have risen at least
//! `MIN_TRUNCATIONS` times by the end (the run goes on a little longer if
//! needed; the test fails if it never gets there).
//!
//! Each checkpoint configuration is its own test (they run in parallel):
//! `checkpoint_mode` aligned / unaligned × `state_backend` rocksdb /
//! memory, all with `checkpoint_interval = '200ms'` so that checkpoints
//! complete between kills. The RocksDB ones keep only 8 or 64 keys per
//! operator map in memory (`state_cache_keys`), so most state is read back
//! from the stores and written out by eviction between checkpoints.
//!
//! Environment:
//! * `WEIR_CRASH_SEED`: seed of the random choices (printed; timing is not
//!   reproducible, so a seed narrows a failure down but may not replay it).
//! * `WEIR_CRASH_KILLS`: kills in the whole suite, split evenly over the
//!   four configurations (rounded up). Default: 3 per configuration, 12 in
//!   all. Long run: `WEIR_CRASH_KILLS=100` (25 per configuration).
//! * `WEIR_CRASH_NO_OPTIONS=1`: drop the checkpoint options from the WITH
//!   clauses (keep `parallelism`). An escape hatch for servers that do not
//!   know the options yet (they recover by recomputing from scratch, which
//!   must pass too). Off by default.
//!
//! On failure the server's temp dir is kept; the message names its
//! `server.log` and a `statements.log` journal of every statement, its
//! outcome and every kill.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};
use tokio::task::{block_in_place, JoinHandle};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, SimpleQueryMessage};
use weir_sql_tests::multiset_diff;
use weir_sql_tests::{connect_session, db::describe_pg_error, TestServer};

/// One checkpoint configuration: the options added to every view's WITH
/// clause. The server rejects unknown options, so these only pass once the
/// checkpoint work has landed (see `WEIR_CRASH_NO_OPTIONS`).
struct Config {
    name: &'static str,
    options: &'static str,
}

const ALIGNED_ROCKSDB: Config = Config {
    name: "aligned_rocksdb",
    options:
        "checkpoint_mode = 'aligned', state_backend = 'rocksdb', state_cache_keys = 8, checkpoint_interval = '200ms', \
         restart_strategy = 'fixed-delay', restart_strategy.attempts = 1000, restart_strategy.delay = '50ms'",
};
const ALIGNED_MEMORY: Config = Config {
    name: "aligned_memory",
    options: "checkpoint_mode = 'aligned', state_backend = 'memory', checkpoint_interval = '200ms', \
         restart_strategy = 'fixed-delay', restart_strategy.attempts = 1000, restart_strategy.delay = '50ms'",
};
const UNALIGNED_ROCKSDB: Config = Config {
    name: "unaligned_rocksdb",
    options:
        "checkpoint_mode = 'unaligned', state_backend = 'rocksdb', state_cache_keys = 64, checkpoint_interval = '200ms', \
         restart_strategy = 'fixed-delay', restart_strategy.attempts = 1000, restart_strategy.delay = '50ms'",
};
const UNALIGNED_MEMORY: Config = Config {
    name: "unaligned_memory",
    options:
        "checkpoint_mode = 'unaligned', state_backend = 'memory', checkpoint_interval = '200ms', \
         restart_strategy = 'fixed-delay', restart_strategy.attempts = 1000, restart_strategy.delay = '50ms'",
};

/// Number of configurations (tests) in this file.
const CONFIGURATIONS: u64 = 4;
/// Default kills per configuration: 3 × 4 = 12 kills in the suite.
const DEFAULT_KILLS_PER_CONFIGURATION: u64 = 3;

/// Parallelism of every view.
const PARALLELISM: usize = 2;
/// Concurrent writer tasks (order ids are `seq * WRITERS + writer`).
const WRITERS: usize = 4;
/// Order rows each writer inserts before the views are backfilled.
const INITIAL_ORDERS_PER_WRITER: usize = 40;
/// `orders.customer` is drawn from `0..CUSTOMER_IDS`; customers
/// `0..INITIAL_CUSTOMERS` exist at the start, so some orders have no
/// customer (left join).
const CUSTOMER_IDS: i64 = 40;
const INITIAL_CUSTOMERS: i64 = 30;
const REGIONS: &[&str] = &["north", "south", "east", "west"];
/// Chance that writer 0's next statement changes `customers` (often
/// enough for its log to be truncated several times in a short run).
const CUSTOMER_OP_PROBABILITY: f64 = 0.2;

/// Time the writers run between two kills (uniform, milliseconds).
const KILL_GAP_MS: std::ops::Range<u64> = 100..1800;
/// Time the writers run after the last restart before the final check.
const FINAL_RUN_MS: std::ops::Range<u64> = 200..800;
/// Chance of a mid-run check after a restart (the first restart is always
/// checked).
const MID_CHECK_PROBABILITY: f64 = 0.4;

/// Chance that a writer sends `VACUUM` before its next statement (about
/// every 12 statements per writer, a few times a second in all).
const VACUUM_PROBABILITY: f64 = 1.0 / 12.0;
/// Chance that a kill comes right after a `VACUUM` answered (one kill per
/// test always does), and that it comes with one in flight instead.
const KILL_AFTER_VACUUM_PROBABILITY: f64 = 0.4;
const KILL_DURING_VACUUM_PROBABILITY: f64 = 0.3;
/// How long a `VACUUM` in flight at a kill had been sent (microseconds).
const VACUUM_IN_FLIGHT_US: std::ops::Range<u64> = 0..4000;
/// How often the controller samples the logs' fronts while writers run.
const LOG_SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// Times each base table's log must have been seen truncated (its front
/// rising) over a run.
const BASE_TABLES: &[&str] = &["orders", "customers"];
const MIN_TRUNCATIONS: u32 = 3;
/// How much longer the writers may run after the last kill for the logs to
/// get there.
const TRUNCATION_WAIT: Duration = Duration::from_secs(30);

const STATEMENT_TIMEOUT: Duration = Duration::from_secs(60);
const FLUSH_TIMEOUT: Duration = Duration::from_secs(180);
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(120);
/// Rows shown per side of a diff.
const MAX_DIFF_ROWS: usize = 15;

struct View {
    name: &'static str,
    definition: &'static str,
    /// Equivalent query over the base tables (defaults to `definition`).
    adhoc: Option<&'static str>,
    /// Created before the initial load (pure incremental maintenance)
    /// instead of after it (backfill).
    before_data: bool,
}

/// In creation order (`customer_hist` reads `by_customer`).
const VIEWS: &[View] = &[
    View {
        name: "by_customer",
        definition: "SELECT customer, count(*) AS n, sum(amount) AS total \
                     FROM orders GROUP BY customer",
        adhoc: None,
        before_data: false,
    },
    View {
        name: "by_region",
        definition: "SELECT c.region, count(*) AS n, sum(o.amount) AS total \
                     FROM orders o JOIN customers c ON o.customer = c.id GROUP BY c.region",
        adhoc: None,
        before_data: true,
    },
    View {
        name: "totals",
        definition: "SELECT count(*) AS n, sum(amount) AS total, min(amount) AS lo, \
                     max(amount) AS hi FROM orders",
        adhoc: None,
        before_data: true,
    },
    View {
        name: "customer_hist",
        definition: "SELECT n, count(*) AS customers, sum(total) AS total \
                     FROM by_customer GROUP BY n",
        adhoc: Some(
            "SELECT n, count(*) AS customers, sum(total) AS total \
             FROM (SELECT customer, count(*) AS n, sum(amount) AS total \
                   FROM orders GROUP BY customer) s GROUP BY n",
        ),
        before_data: false,
    },
    // Forward-only (one failover region per lane), with transient failures:
    // lanes restart on their own between the kills.
    View {
        name: "big_orders",
        definition: "SELECT id, customer, amount FROM orders \
                     WHERE amount > 500 AND NOT fail_if(amount % 97 = 0, 'crash-test flake', 4)",
        adhoc: Some("SELECT id, customer, amount FROM orders WHERE amount > 500"),
        before_data: true,
    },
    View {
        name: "orders_left",
        definition: "SELECT o.id, o.customer, o.amount, c.region \
                     FROM orders o LEFT JOIN customers c ON o.customer = c.id",
        adhoc: None,
        before_data: true,
    },
];

/// A result row as text (`None` is SQL NULL).
type Row = Vec<Option<String>>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tbl {
    Orders,
    Customers,
}

impl Tbl {
    fn name(self) -> &'static str {
        match self {
            Tbl::Orders => "orders",
            Tbl::Customers => "customers",
        }
    }

    fn columns(self) -> &'static str {
        match self {
            Tbl::Orders => "id, customer, amount",
            Tbl::Customers => "id, region",
        }
    }
}

/// Expected contents of the base tables: every acknowledged statement, and
/// every unacknowledged one that turned out to be applied. Keyed by id.
#[derive(Default)]
struct Model {
    orders: BTreeMap<i64, Row>,
    customers: BTreeMap<i64, Row>,
}

impl Model {
    fn table(&self, t: Tbl) -> &BTreeMap<i64, Row> {
        match t {
            Tbl::Orders => &self.orders,
            Tbl::Customers => &self.customers,
        }
    }

    fn table_mut(&mut self, t: Tbl) -> &mut BTreeMap<i64, Row> {
        match t {
            Tbl::Orders => &mut self.orders,
            Tbl::Customers => &mut self.customers,
        }
    }

    fn rows_for(&self, t: Tbl, keys: &[i64]) -> Vec<Row> {
        let mut rows: Vec<Row> = keys
            .iter()
            .filter_map(|k| self.table(t).get(k).cloned())
            .collect();
        rows.sort();
        rows
    }

    fn apply(&mut self, op: &Op) {
        let table = self.table_mut(op.table);
        for k in &op.keys {
            table.remove(k);
        }
        for (k, row) in &op.after {
            table.insert(*k, row.clone());
        }
    }
}

/// The front of one change log over a run: the first offset it still
/// holds, `coalesce(log_start, log_end + 1)` in `system.tables`.
///
/// `system.tables` reads `log_start` and then `log_end`, not atomically: a
/// write between the two after the whole log was truncated makes
/// `log_end + 1` overshoot the front. So a NULL `log_start` only bounds the
/// front, between `log_end + 1` read just before (`lo`) and `log_end + 1`
/// of the same row (`hi`); a non-NULL one is the front (`lo == hi`).
struct LogFront {
    kind: String,
    first: i64,
    /// The highest lower bound seen: the front can never be below it.
    lo: i64,
    /// The upper bound of the sample that last counted as a rise.
    counted: i64,
    /// Samples whose front was surely above that of the last counted one.
    rises: u32,
}

/// The fronts of all durable logs (base and result tables), sampled by the
/// controller.
#[derive(Default)]
struct LogFronts {
    logs: BTreeMap<String, LogFront>,
    samples: u64,
}

fn parse_offset(v: &Option<String>, what: &str) -> Result<Option<i64>, String> {
    v.as_deref()
        .map(|s| {
            s.parse()
                .map_err(|e| format!("system.tables: {what} {s:?}: {e}"))
        })
        .transpose()
}

impl LogFronts {
    /// Takes one sample: `ends` are `(name, log_end)` rows read before
    /// `rows`, `(name, kind, log_start, log_end)` rows. The journal notes
    /// every rise. Errs if a front surely moved back (truncated entries
    /// came back, or offsets were reused).
    fn sample(&mut self, ends: &[Row], rows: &[Row], journal: &Shared) -> Result<(), String> {
        self.samples += 1;
        let mut end_before: BTreeMap<&str, i64> = BTreeMap::new();
        for row in ends {
            if let (Some(name), Some(end)) = (&row[0], parse_offset(&row[1], "log_end")?) {
                end_before.insert(name, end);
            }
        }
        for row in rows {
            let (Some(name), Some(kind)) = (&row[0], &row[1]) else {
                continue;
            };
            let start = parse_offset(&row[2], "log_start")?;
            let Some(end) = parse_offset(&row[3], "log_end")? else {
                continue; // not durable
            };
            let (lo, hi) = match start {
                Some(s) => (s, s),
                None => (end_before.get(name.as_str()).map_or(1, |e| e + 1), end + 1),
            };
            match self.logs.get_mut(name) {
                None => {
                    self.logs.insert(
                        name.clone(),
                        LogFront {
                            kind: kind.clone(),
                            first: hi,
                            lo,
                            counted: hi,
                            rises: 0,
                        },
                    );
                }
                Some(log) => {
                    if hi < log.lo {
                        return Err(format!(
                            "the log of {name} moved back: its first offset was at least {}, \
                             now {} (log_start {}, log_end {end})",
                            log.lo,
                            hi,
                            start.map_or("NULL".to_string(), |s| s.to_string()),
                        ));
                    }
                    if lo > log.counted {
                        journal.note(format!(
                            "ctl   log of {name} truncated: front {} -> {}",
                            log.counted,
                            if lo == hi {
                                lo.to_string()
                            } else {
                                format!("{lo}..{hi}")
                            }
                        ));
                        log.counted = hi;
                        log.rises += 1;
                    }
                    log.lo = log.lo.max(lo);
                }
            }
        }
        Ok(())
    }

    fn rises(&self, name: &str) -> u32 {
        self.logs.get(name).map_or(0, |l| l.rises)
    }

    fn base_tables_done(&self) -> bool {
        BASE_TABLES.iter().all(|t| self.rises(t) >= MIN_TRUNCATIONS)
    }

    fn summary(&self) -> String {
        let logs: Vec<String> = self
            .logs
            .iter()
            .map(|(name, l)| {
                format!(
                    "{name} ({}): {} truncations, front {} -> {}",
                    l.kind, l.rises, l.first, l.lo
                )
            })
            .collect();
        format!("{} samples; {}", self.samples, logs.join("; "))
    }
}

/// One write statement and its effect on the rows with ids `keys` of
/// `table` (afterwards exactly the rows `after` exist among them).
struct Op {
    table: Tbl,
    sql: String,
    keys: Vec<i64>,
    after: Vec<(i64, Row)>,
}

impl Op {
    fn after_rows(&self) -> Vec<Row> {
        let mut rows: Vec<Row> = self.after.iter().map(|(_, r)| r.clone()).collect();
        rows.sort();
        rows
    }

    /// Reads the current rows of the keys this statement touches.
    fn read_sql(&self) -> String {
        let keys: Vec<String> = self.keys.iter().map(i64::to_string).collect();
        format!(
            "SELECT {} FROM {} WHERE id IN ({})",
            self.table.columns(),
            self.table.name(),
            keys.join(", ")
        )
    }
}

/// State shared by the controlling test and the writer tasks.
struct Shared {
    start: Instant,
    /// Connection string of the running server; `None` while it is down
    /// (so a writer never connects to a port another test took over).
    conn: Mutex<Option<String>>,
    /// Writers hold it shared for each statement (including its
    /// resolution); the controller takes it exclusively to pause them.
    gate: tokio::sync::RwLock<()>,
    stop: AtomicBool,
    failure: Mutex<Option<String>>,
    model: Mutex<Model>,
    journal: Mutex<Vec<String>>,
}

fn locked<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn note(&self, entry: impl AsRef<str>) {
        let t = self.start.elapsed().as_secs_f64();
        locked(&self.journal).push(format!("{t:9.3}s {}", entry.as_ref()));
    }

    fn failure(&self) -> Option<String> {
        locked(&self.failure).clone()
    }

    fn set_failure(&self, msg: String) {
        locked(&self.failure).get_or_insert(msg);
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// A connection whose driving task is aborted (socket closed) on drop.
struct Session {
    client: Client,
    task: JoinHandle<()>,
}

impl Drop for Session {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Connects to whatever server is current, waiting while it is down.
async fn reconnect(shared: &Shared) -> Result<Session, String> {
    let deadline = Instant::now() + RECONNECT_TIMEOUT;
    let mut last = "the server was not running".to_string();
    loop {
        let conn = locked(&shared.conn).clone();
        if let Some(conn) = conn {
            match connect_session(&conn, Duration::from_millis(500)).await {
                Ok((client, task)) => return Ok(Session { client, task }),
                Err(e) => last = format!("{e:#}"),
            }
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "could not reconnect within {RECONNECT_TIMEOUT:?}: {last}"
            ));
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Whether an error means the connection went away (the statement's fate
/// is unknown) rather than the server refusing the statement.
fn is_connection_loss(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        None => true,
        Some(code) => {
            *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::CRASH_SHUTDOWN
                || *code == SqlState::CANNOT_CONNECT_NOW
                || code.code().starts_with("08")
        }
    }
}

/// Runs a query with the simple protocol; rows sorted.
async fn query_rows(client: &Client, sql: &str) -> Result<Vec<Row>, tokio_postgres::Error> {
    let mut rows = Vec::new();
    for message in client.simple_query(sql).await? {
        if let SimpleQueryMessage::Row(row) = message {
            rows.push(
                (0..row.len())
                    .map(|i| row.get(i).map(str::to_string))
                    .collect(),
            );
        }
    }
    rows.sort();
    Ok(rows)
}

#[derive(Default, Clone, Copy)]
struct WriterStats {
    acknowledged: u64,
    unacknowledged_applied: u64,
    unacknowledged_lost: u64,
    /// `VACUUM`s answered (those cut off by a kill are not counted).
    vacuums: u64,
}

struct Writer {
    index: usize,
    rng: StdRng,
    next_seq: i64,
    shared: Arc<Shared>,
    session: Option<Session>,
    stats: WriterStats,
}

impl Writer {
    fn new(index: usize, seed: u64, shared: Arc<Shared>) -> Writer {
        Writer {
            index,
            rng: StdRng::seed_from_u64(
                seed ^ (0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(index as u64 + 1)),
            ),
            next_seq: 0,
            shared,
            session: None,
            stats: WriterStats::default(),
        }
    }

    fn order_row(id: i64, customer: i64, amount: Option<i64>) -> Row {
        vec![
            Some(id.to_string()),
            Some(customer.to_string()),
            amount.map(|a| a.to_string()),
        ]
    }

    fn random_amount(&mut self) -> Option<i64> {
        if self.rng.random_bool(0.05) {
            None
        } else {
            Some(self.rng.random_range(-50..=1000))
        }
    }

    fn random_region(&mut self) -> Option<String> {
        if self.rng.random_bool(0.1) {
            None
        } else {
            Some(REGIONS.choose(&mut self.rng).unwrap().to_string())
        }
    }

    fn sql_value(v: &Option<String>, quoted: bool) -> String {
        match (v, quoted) {
            (None, _) => "NULL".to_string(),
            (Some(s), true) => format!("'{s}'"),
            (Some(s), false) => s.clone(),
        }
    }

    fn insert_op(&mut self, rows: usize) -> Op {
        let mut keys = Vec::new();
        let mut after = Vec::new();
        let mut values = Vec::new();
        for _ in 0..rows {
            let id = self.next_seq * WRITERS as i64 + self.index as i64;
            self.next_seq += 1;
            let customer = self.rng.random_range(0..CUSTOMER_IDS);
            let amount = self.random_amount();
            let row = Self::order_row(id, customer, amount);
            values.push(format!(
                "({id}, {customer}, {})",
                Self::sql_value(&row[2], false)
            ));
            keys.push(id);
            after.push((id, row));
        }
        Op {
            table: Tbl::Orders,
            sql: format!("INSERT INTO orders VALUES {}", values.join(", ")),
            keys,
            after,
        }
    }

    /// Up to `n` distinct live ids of this writer, biased to recent ones.
    fn existing_ids(&mut self, n: usize) -> Vec<i64> {
        let shared = self.shared.clone();
        let model = locked(&shared.model);
        let mut ids = Vec::new();
        if self.next_seq == 0 {
            return ids;
        }
        for _ in 0..n * 4 {
            if ids.len() == n {
                break;
            }
            let seq = if self.rng.random_bool(0.5) {
                self.rng
                    .random_range(self.next_seq.saturating_sub(64)..self.next_seq)
            } else {
                self.rng.random_range(0..self.next_seq)
            };
            let id = seq * WRITERS as i64 + self.index as i64;
            if model.orders.contains_key(&id) && !ids.contains(&id) {
                ids.push(id);
            }
        }
        ids.sort();
        ids
    }

    fn update_op(&mut self, id: i64) -> Op {
        let old = locked(&self.shared.model).orders[&id].clone();
        let amount = self.random_amount();
        let (customer, sql) = if self.rng.random_bool(0.5) {
            let c = self.rng.random_range(0..CUSTOMER_IDS);
            (
                c,
                format!(
                    "UPDATE orders SET customer = {c}, amount = {} WHERE id = {id}",
                    Self::sql_value(&amount.map(|a| a.to_string()), false)
                ),
            )
        } else {
            let c: i64 = old[1].as_deref().unwrap().parse().unwrap();
            (
                c,
                format!(
                    "UPDATE orders SET amount = {} WHERE id = {id}",
                    Self::sql_value(&amount.map(|a| a.to_string()), false)
                ),
            )
        };
        Op {
            table: Tbl::Orders,
            sql,
            keys: vec![id],
            after: vec![(id, Self::order_row(id, customer, amount))],
        }
    }

    fn delete_op(ids: Vec<i64>) -> Op {
        let list: Vec<String> = ids.iter().map(i64::to_string).collect();
        let sql = if ids.len() == 1 {
            format!("DELETE FROM orders WHERE id = {}", list[0])
        } else {
            format!("DELETE FROM orders WHERE id IN ({})", list.join(", "))
        };
        Op {
            table: Tbl::Orders,
            sql,
            keys: ids,
            after: Vec::new(),
        }
    }

    /// Writer 0 only: insert, update or delete one customer.
    fn customer_op(&mut self) -> Op {
        let c = self.rng.random_range(0..CUSTOMER_IDS);
        let exists = locked(&self.shared.model).customers.contains_key(&c);
        let region = self.random_region();
        let row = vec![Some(c.to_string()), region.clone()];
        let region_sql = Self::sql_value(&region, true);
        let (sql, after) = if !exists {
            (
                format!("INSERT INTO customers VALUES ({c}, {region_sql})"),
                vec![(c, row)],
            )
        } else if self.rng.random_bool(0.6) {
            (
                format!("UPDATE customers SET region = {region_sql} WHERE id = {c}"),
                vec![(c, row)],
            )
        } else {
            (format!("DELETE FROM customers WHERE id = {c}"), Vec::new())
        };
        Op {
            table: Tbl::Customers,
            sql,
            keys: vec![c],
            after,
        }
    }

    fn next_op(&mut self) -> Op {
        if self.index == 0 && self.rng.random_bool(CUSTOMER_OP_PROBABILITY) {
            return self.customer_op();
        }
        match self.rng.random_range(0..100) {
            0..70 => {
                let n = self.rng.random_range(1..=8);
                self.insert_op(n)
            }
            70..85 => match self.existing_ids(1).first() {
                Some(&id) => self.update_op(id),
                None => self.insert_op(1),
            },
            _ => {
                let n = if self.rng.random_bool(0.7) { 1 } else { 3 };
                let ids = self.existing_ids(n);
                if ids.is_empty() {
                    self.insert_op(1)
                } else {
                    Self::delete_op(ids)
                }
            }
        }
    }

    async fn client(&mut self) -> Result<&Client, String> {
        if self.session.is_none() {
            self.session = Some(reconnect(&self.shared).await?);
        }
        Ok(&self.session.as_ref().unwrap().client)
    }

    async fn run(mut self) -> WriterStats {
        let shared = self.shared.clone();
        while !shared.stop.load(Ordering::SeqCst) {
            let _running = shared.gate.read().await;
            if shared.stop.load(Ordering::SeqCst) {
                break;
            }
            if self.rng.random_bool(VACUUM_PROBABILITY) {
                if let Err(msg) = self.vacuum().await {
                    shared.set_failure(format!("writer {}: {msg}", self.index));
                    break;
                }
                continue;
            }
            let op = self.next_op();
            if let Err(msg) = self.perform(&op).await {
                shared.set_failure(format!("writer {}: {msg}", self.index));
                break;
            }
        }
        self.stats
    }

    /// Truncates the logs. It changes no rows, so one cut off by a kill
    /// needs no resolving.
    async fn vacuum(&mut self) -> Result<(), String> {
        let w = self.index;
        let client = self.client().await?;
        let result = tokio::time::timeout(STATEMENT_TIMEOUT, client.batch_execute("VACUUM"))
            .await
            .map_err(|_| format!("no answer within {STATEMENT_TIMEOUT:?} to: VACUUM"))?;
        match result {
            Ok(()) => {
                self.stats.vacuums += 1;
                self.shared.note(format!("w{w} ack   VACUUM"));
                Ok(())
            }
            Err(e) if is_connection_loss(&e) => {
                self.session = None;
                self.shared
                    .note(format!("w{w} LOST  VACUUM ({})", describe_pg_error(&e)));
                Ok(())
            }
            Err(e) => Err(format!("VACUUM failed: {}", describe_pg_error(&e))),
        }
    }

    /// Sends one statement; on a lost connection, finds out (after
    /// reconnecting) whether it was applied.
    async fn perform(&mut self, op: &Op) -> Result<(), String> {
        let w = self.index;
        let extended = self.rng.random_bool(0.5);
        let client = self.client().await?;
        let sent = async {
            if extended {
                client.execute(op.sql.as_str(), &[]).await.map(|_| ())
            } else {
                client.batch_execute(&op.sql).await
            }
        };
        let result = tokio::time::timeout(STATEMENT_TIMEOUT, sent)
            .await
            .map_err(|_| format!("no answer within {STATEMENT_TIMEOUT:?} to: {}", op.sql))?;
        match result {
            Ok(()) => {
                locked(&self.shared.model).apply(op);
                self.stats.acknowledged += 1;
                self.shared.note(format!("w{w} ack   {}", op.sql));
                Ok(())
            }
            Err(e) if is_connection_loss(&e) => {
                self.session = None;
                self.shared
                    .note(format!("w{w} LOST  {} ({})", op.sql, describe_pg_error(&e)));
                let applied = self.resolve(op).await?;
                if applied {
                    locked(&self.shared.model).apply(op);
                    self.stats.unacknowledged_applied += 1;
                } else {
                    self.stats.unacknowledged_lost += 1;
                }
                self.shared.note(format!(
                    "w{w} resolved: {}",
                    if applied { "applied" } else { "not applied" }
                ));
                Ok(())
            }
            Err(e) => Err(format!(
                "error response (not a lost connection) to a valid statement: {}\n{}",
                op.sql,
                describe_pg_error(&e)
            )),
        }
    }

    /// Reads the rows an unacknowledged statement touches: true if it was
    /// applied, false if not, an error if neither (partly applied, or
    /// acknowledged changes lost).
    async fn resolve(&mut self, op: &Op) -> Result<bool, String> {
        let before = locked(&self.shared.model).rows_for(op.table, &op.keys);
        let after = op.after_rows();
        let sql = op.read_sql();
        let deadline = Instant::now() + RECONNECT_TIMEOUT;
        loop {
            let client = self.client().await?;
            let read = tokio::time::timeout(STATEMENT_TIMEOUT, query_rows(client, &sql))
                .await
                .map_err(|_| format!("no answer within {STATEMENT_TIMEOUT:?} to: {sql}"))?;
            match read {
                Ok(rows) if rows == after => return Ok(true),
                Ok(rows) if rows == before => return Ok(false),
                Ok(rows) => {
                    return Err(format!(
                        "an unacknowledged statement was neither fully applied nor not at all:\n  \
                         {}\n  rows before it (acknowledged state):\n{}  rows if applied:\n{}  \
                         rows found after the restart:\n{}",
                        op.sql,
                        render(&before),
                        render(&after),
                        render(&rows)
                    ))
                }
                Err(e) if is_connection_loss(&e) && Instant::now() < deadline => {
                    // Killed again while resolving, or not ready yet.
                    self.session = None;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(format!("{sql}: {}", describe_pg_error(&e))),
            }
        }
    }
}

/// One configuration's run: the server, the controller's session, the
/// writers.
struct Run {
    config: &'static Config,
    with: String,
    seed: u64,
    kills: u64,
    kills_done: u64,
    checks: u64,
    rng: StdRng,
    server: TestServer,
    session: Option<Session>,
    shared: Arc<Shared>,
    writers: Vec<JoinHandle<WriterStats>>,
    fronts: LogFronts,
    /// Kills that came right after a `VACUUM` answered, and with one in
    /// flight.
    kills_after_vacuum: u64,
    kills_during_vacuum: u64,
}

/// What the controller does just before a kill.
#[derive(Clone, Copy, PartialEq, Eq)]
enum BeforeKill {
    Nothing,
    /// `VACUUM`, and the kill as soon as it is answered.
    Vacuum,
    /// `VACUUM` sent, the kill a moment later (before or after its answer).
    VacuumInFlight,
}

impl Run {
    async fn start(config: &'static Config, seed: u64, kills: u64) -> Run {
        let no_options = std::env::var_os("WEIR_CRASH_NO_OPTIONS").is_some_and(|v| !v.is_empty());
        let with = if no_options {
            format!("parallelism = {PARALLELISM}")
        } else {
            format!("parallelism = {PARALLELISM}, {}", config.options)
        };
        let server = block_in_place(TestServer::start)
            .unwrap_or_else(|e| panic!("[{}] starting weir: {e:#}", config.name));
        let shared = Arc::new(Shared {
            start: Instant::now(),
            conn: Mutex::new(Some(server.connection_string())),
            gate: tokio::sync::RwLock::new(()),
            stop: AtomicBool::new(false),
            failure: Mutex::new(None),
            model: Mutex::new(Model::default()),
            journal: Mutex::new(Vec::new()),
        });
        let mut run = Run {
            config,
            with,
            seed,
            kills,
            kills_done: 0,
            checks: 0,
            rng: StdRng::seed_from_u64(seed),
            server,
            session: None,
            shared,
            writers: Vec::new(),
            fronts: LogFronts::default(),
            kills_after_vacuum: 0,
            kills_during_vacuum: 0,
        };
        run.reconnect().await;
        run
    }

    fn journal_path(&self) -> std::path::PathBuf {
        self.server.root_dir().join("statements.log")
    }

    fn fail(&mut self, msg: &str) -> ! {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.server.keep_dir_on_drop();
        let mut journal = locked(&self.shared.journal).join("\n");
        journal.push('\n');
        let _ = std::fs::write(self.journal_path(), journal);
        let kills = self.kills * CONFIGURATIONS;
        panic!(
            "crash test failed: {msg}\n\n\
             configuration: {name} (WITH ({with}))\n\
             seed: {seed}\n\
             kills: {done} of {total} done\n\
             server log: {log} (directory kept)\n\
             statement journal: {journal_path}\n\
             rerun: CARGO_TARGET_DIR=$HOME/.cache/weir-target WEIR_CRASH_SEED={seed} \
             WEIR_CRASH_KILLS={kills} cargo test --workspace --test crash -- {name} --exact",
            name = self.config.name,
            with = self.with,
            seed = self.seed,
            done = self.kills_done,
            total = self.kills,
            log = self.server.log_path().display(),
            journal_path = self.journal_path().display(),
        );
    }

    fn check_writers(&mut self) {
        if let Some(msg) = self.shared.failure() {
            self.fail(&msg);
        }
    }

    async fn reconnect(&mut self) {
        self.session = None;
        match reconnect(&self.shared).await {
            Ok(s) => self.session = Some(s),
            Err(e) => self.fail(&format!("controller: {e}")),
        }
    }

    fn client(&self) -> &Client {
        &self.session.as_ref().expect("controller session").client
    }

    async fn exec(&mut self, sql: &str) {
        self.shared.note(format!("ctl   {sql}"));
        let result = tokio::time::timeout(FLUSH_TIMEOUT, self.client().batch_execute(sql)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let mut msg = format!("statement failed: {sql}\n{}", describe_pg_error(&e));
                if msg.contains("unrecognized streaming query option") {
                    msg.push_str(
                        "\n(this server does not know the checkpoint options yet; \
                         WEIR_CRASH_NO_OPTIONS=1 drops them)",
                    );
                }
                self.fail(&msg)
            }
            Err(_) => {
                let state = if self.server.is_running() {
                    "still running"
                } else {
                    "exited"
                };
                self.fail(&format!(
                    "no answer within {FLUSH_TIMEOUT:?} to: {sql} (server {state})"
                ))
            }
        }
    }

    async fn rows(&mut self, sql: &str) -> Vec<Row> {
        match query_rows(self.client(), sql).await {
            Ok(rows) => rows,
            Err(e) => self.fail(&format!("query failed: {sql}\n{}", describe_pg_error(&e))),
        }
    }

    async fn create_views(&mut self, before_data: bool) {
        for view in VIEWS.iter().filter(|v| v.before_data == before_data) {
            let sql = format!(
                "CREATE MATERIALIZED VIEW {} WITH ({}) AS {}",
                view.name, self.with, view.definition
            );
            self.exec(&sql).await;
        }
    }

    async fn setup(&mut self) {
        self.exec("CREATE TABLE orders (id bigint PRIMARY KEY, customer int, amount bigint)")
            .await;
        self.exec("CREATE TABLE customers (id int PRIMARY KEY, region text)")
            .await;
        self.create_views(true).await;

        let mut writers: Vec<Writer> = (0..WRITERS)
            .map(|i| Writer::new(i, self.seed, self.shared.clone()))
            .collect();
        let mut customers = Vec::new();
        for c in 0..INITIAL_CUSTOMERS {
            let region = writers[0].random_region();
            customers.push(format!("({c}, {})", Writer::sql_value(&region, true)));
            locked(&self.shared.model)
                .customers
                .insert(c, vec![Some(c.to_string()), region]);
        }
        self.exec(&format!(
            "INSERT INTO customers VALUES {}",
            customers.join(", ")
        ))
        .await;
        for writer in &mut writers {
            for _ in 0..INITIAL_ORDERS_PER_WRITER / 20 {
                let op = writer.insert_op(20);
                self.exec(&op.sql).await;
                locked(&self.shared.model).apply(&op);
            }
        }
        self.create_views(false).await;
        self.check("after the initial load").await;

        for writer in writers {
            self.writers.push(tokio::spawn(writer.run()));
        }
    }

    /// FLUSH, then compares the base tables with the model and every view
    /// with its ad hoc query. Writers must be paused or stopped.
    async fn check(&mut self, when: &str) {
        self.checks += 1;
        self.exec("FLUSH").await;
        let mut problems = String::new();

        let (orders, customers) = {
            let model = locked(&self.shared.model);
            let mut orders: Vec<Row> = model.orders.values().cloned().collect();
            let mut customers: Vec<Row> = model.customers.values().cloned().collect();
            orders.sort();
            customers.sort();
            (orders, customers)
        };
        for (table, expected) in [(Tbl::Orders, orders), (Tbl::Customers, customers)] {
            let sql = format!("SELECT {} FROM {}", table.columns(), table.name());
            let actual = self.rows(&sql).await;
            if actual != expected {
                let (missing, extra) = multiset_diff(&expected, &actual);
                let _ = writeln!(
                    problems,
                    "base table {} ({}) differs from the acknowledged writes \
                     ({} rows expected, {} found)\n  \
                     acknowledged (or applied) but missing:\n{}  \
                     present but never acknowledged (or resolved as applied):\n{}",
                    table.name(),
                    table.columns(),
                    expected.len(),
                    actual.len(),
                    render(&missing),
                    render(&extra)
                );
            }
        }

        for view in VIEWS {
            let mv = self.rows(&format!("SELECT * FROM {}", view.name)).await;
            let adhoc = self.rows(view.adhoc.unwrap_or(view.definition)).await;
            if mv != adhoc {
                let (only_mv, only_adhoc) = multiset_diff(&mv, &adhoc);
                let _ = writeln!(
                    problems,
                    "view {} differs from its query ({} vs {} rows)\n  \
                     only in the view (duplicated or stale):\n{}  \
                     only in the ad hoc query (lost):\n{}",
                    view.name,
                    mv.len(),
                    adhoc.len(),
                    render(&only_mv),
                    render(&only_adhoc)
                );
            }
        }
        if !problems.is_empty() {
            self.fail(&format!("{when}:\n{problems}"));
        }
        let restarts = self
            .rows("SELECT name, num_restarts FROM system.streaming_queries WHERE num_restarts > 0")
            .await;
        let note = format!(
            "ctl   check passed: {when} (restarts since the server started: {})",
            render(&restarts).trim()
        );
        println!("{}: {note}", self.config.name);
        self.shared.note(note);
        self.sample_logs().await;
    }

    /// Samples the front of every durable log.
    async fn sample_logs(&mut self) {
        let ends = self
            .rows("SELECT name, log_end FROM system.tables WHERE kind IN ('table', 'result')")
            .await;
        let rows = self
            .rows(
                "SELECT name, kind, log_start, log_end FROM system.tables \
                 WHERE kind IN ('table', 'result')",
            )
            .await;
        if let Err(msg) = self.fronts.sample(&ends, &rows, &self.shared) {
            self.fail(&msg);
        }
    }

    /// Fails unless each base table's log was seen truncated
    /// `MIN_TRUNCATIONS` times and some kill came right after a `VACUUM`.
    fn check_truncations(&mut self) {
        let short: Vec<String> = BASE_TABLES
            .iter()
            .filter(|t| self.fronts.rises(t) < MIN_TRUNCATIONS)
            .map(|t| format!("{t} ({} times)", self.fronts.rises(t)))
            .collect();
        if !short.is_empty() {
            let msg = format!(
                "the logs of {} were truncated fewer than {MIN_TRUNCATIONS} times over the run \
                 (VACUUM every few statements, and the logs' fronts sampled every \
                 {LOG_SAMPLE_EVERY:?})\n  {}",
                short.join(", "),
                self.fronts.summary()
            );
            self.fail(&msg);
        }
        if self.kills_after_vacuum == 0 {
            self.fail("no kill came right after a VACUUM");
        }
    }

    /// Sends `VACUUM` before a kill: waits for its answer, or not.
    async fn before_kill(&mut self, what: BeforeKill) {
        match what {
            BeforeKill::Nothing => {}
            BeforeKill::Vacuum => {
                self.exec("VACUUM").await;
                self.kills_after_vacuum += 1;
            }
            BeforeKill::VacuumInFlight => {
                let delay = Duration::from_micros(self.rng.random_range(VACUUM_IN_FLIGHT_US));
                self.shared.note(format!(
                    "ctl   VACUUM (the kill {delay:?} after sending it)"
                ));
                let answer = {
                    let vacuum = self.client().batch_execute("VACUUM");
                    tokio::pin!(vacuum);
                    tokio::select! {
                        biased;
                        r = &mut vacuum => Some(r.map_err(|e| describe_pg_error(&e))),
                        _ = tokio::time::sleep(delay) => None,
                    }
                };
                match answer {
                    None => {
                        self.kills_during_vacuum += 1;
                        self.shared.note("ctl   VACUUM in flight");
                    }
                    Some(Ok(())) => {
                        self.kills_after_vacuum += 1;
                        self.shared.note("ctl   VACUUM answered");
                    }
                    Some(Err(e)) => self.fail(&format!("statement failed: VACUUM\n{e}")),
                }
            }
        }
    }

    /// Pauses the writers (waiting for their statements in flight), checks,
    /// resumes them.
    async fn paused_check(&mut self, when: &str) {
        let shared = self.shared.clone();
        let pause = shared.gate.write().await;
        self.check_writers();
        self.check(when).await;
        drop(pause);
    }

    /// Lets the writers run, sampling the logs' fronts now and then.
    async fn run_writers_for(&mut self, ms: u64) {
        let until = Instant::now() + Duration::from_millis(ms);
        let mut sample_at = Instant::now() + LOG_SAMPLE_EVERY;
        while Instant::now() < until {
            self.check_writers();
            if Instant::now() >= sample_at {
                self.sample_logs().await;
                sample_at = Instant::now() + LOG_SAMPLE_EVERY;
            }
            let left = until.saturating_duration_since(Instant::now());
            tokio::time::sleep(Duration::from_millis(50).min(left)).await;
        }
        self.check_writers();
    }

    async fn kill_and_restart(&mut self) {
        if let Some(status) = self.server.try_exit_status() {
            self.fail(&format!("the server exited on its own with {status}"));
        }
        self.kills_done += 1;
        *locked(&self.shared.conn) = None;
        self.session = None;
        self.shared.note(format!(
            "ctl   SIGKILL #{} (pid {:?})",
            self.kills_done,
            self.server.pid()
        ));
        if let Err(e) = block_in_place(|| self.server.crash_and_restart()) {
            self.fail(&format!("restart after kill #{}: {e:#}", self.kills_done));
        }
        self.shared.note(format!(
            "ctl   restarted (generation {}, pid {:?}, port {})",
            self.server.generation(),
            self.server.pid(),
            self.server.port()
        ));
        *locked(&self.shared.conn) = Some(self.server.connection_string());
        self.reconnect().await;
    }

    async fn stop_writers(&mut self) -> WriterStats {
        self.shared.stop.store(true, Ordering::SeqCst);
        let mut total = WriterStats::default();
        for handle in std::mem::take(&mut self.writers) {
            match tokio::time::timeout(RECONNECT_TIMEOUT + STATEMENT_TIMEOUT, handle).await {
                Ok(Ok(s)) => {
                    total.acknowledged += s.acknowledged;
                    total.unacknowledged_applied += s.unacknowledged_applied;
                    total.unacknowledged_lost += s.unacknowledged_lost;
                    total.vacuums += s.vacuums;
                }
                Ok(Err(e)) => self.fail(&format!("writer task panicked: {e}")),
                Err(_) => self.fail("a writer did not stop"),
            }
        }
        self.check_writers();
        total
    }
}

fn render(rows: &[Row]) -> String {
    let mut s = String::new();
    for row in rows.iter().take(MAX_DIFF_ROWS) {
        let cols: Vec<&str> = row.iter().map(|v| v.as_deref().unwrap_or("NULL")).collect();
        let _ = writeln!(s, "    ({})", cols.join(", "));
    }
    if rows.len() > MAX_DIFF_ROWS {
        let _ = writeln!(s, "    ... and {} more", rows.len() - MAX_DIFF_ROWS);
    }
    if rows.is_empty() {
        s.push_str("    (none)\n");
    }
    s
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Kills for one configuration: `WEIR_CRASH_KILLS` (suite total) split
/// over the configurations, rounded up.
fn kills_per_configuration() -> u64 {
    match env_u64("WEIR_CRASH_KILLS") {
        Some(total) => total.div_ceil(CONFIGURATIONS).max(1),
        None => DEFAULT_KILLS_PER_CONFIGURATION,
    }
}

async fn crash_test(config: &'static Config) {
    let seed = env_u64("WEIR_CRASH_SEED").unwrap_or_else(rand::random);
    let kills = kills_per_configuration();
    println!(
        "crash[{}]: seed {seed}, {kills} kills (reproduce with WEIR_CRASH_SEED={seed})",
        config.name
    );
    let started = Instant::now();
    let mut run = Run::start(config, seed, kills).await;
    run.setup().await;

    // This kill comes right after a VACUUM; others may too.
    let vacuum_kill = run.rng.random_range(1..=kills);
    for k in 1..=kills {
        let gap = run.rng.random_range(KILL_GAP_MS);
        run.run_writers_for(gap).await;
        let before = if k == vacuum_kill || run.rng.random_bool(KILL_AFTER_VACUUM_PROBABILITY) {
            BeforeKill::Vacuum
        } else if run.rng.random_bool(KILL_DURING_VACUUM_PROBABILITY) {
            BeforeKill::VacuumInFlight
        } else {
            BeforeKill::Nothing
        };
        run.before_kill(before).await;
        run.kill_and_restart().await;
        run.sample_logs().await;
        if k < kills && (k == 1 || run.rng.random_bool(MID_CHECK_PROBABILITY)) {
            run.paused_check(&format!("after kill {k} of {kills}"))
                .await;
        }
    }
    let tail = run.rng.random_range(FINAL_RUN_MS);
    run.run_writers_for(tail).await;
    // A short run may not have truncated each log often enough yet.
    let waiting = Instant::now();
    while !run.fronts.base_tables_done() && waiting.elapsed() < TRUNCATION_WAIT {
        run.run_writers_for(200).await;
    }
    let waited = waiting.elapsed();
    let stats = run.stop_writers().await;
    run.check(&format!("after the last of {kills} kills")).await;
    run.check_truncations();

    let (orders, customers) = {
        let model = locked(&run.shared.model);
        (model.orders.len(), model.customers.len())
    };
    println!(
        "crash[{}]: passed in {:.1}s: {kills} kills ({} right after a VACUUM, {} with one in \
         flight), {} checks, {} statements acknowledged, {} unacknowledged ({} applied, {} not), \
         {} VACUUMs answered, {orders} orders and {customers} customers at the end; logs \
         (after {:.1}s more for truncations): {} (seed {seed})",
        config.name,
        started.elapsed().as_secs_f64(),
        run.kills_after_vacuum,
        run.kills_during_vacuum,
        run.checks,
        stats.acknowledged,
        stats.unacknowledged_applied + stats.unacknowledged_lost,
        stats.unacknowledged_applied,
        stats.unacknowledged_lost,
        stats.vacuums,
        waited.as_secs_f64(),
        run.fronts.summary(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aligned_rocksdb() {
    crash_test(&ALIGNED_ROCKSDB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aligned_memory() {
    crash_test(&ALIGNED_MEMORY).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unaligned_rocksdb() {
    crash_test(&UNALIGNED_ROCKSDB).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unaligned_memory() {
    crash_test(&UNALIGNED_MEMORY).await;
}
