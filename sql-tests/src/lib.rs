//! End-to-end test harness for the Weir server.
//!
//! * [`TestServer`] starts the `weir` binary on a free loopback port with a
//!   fresh temporary data directory, and can stop, crash and restart it on
//!   the same data directory.
//! * [`WeirDb`] is a sqllogictest [`sqllogictest::AsyncDB`] over
//!   tokio-postgres, in [`QueryMode::Simple`] (text results) or
//!   [`QueryMode::Extended`] (binary results rendered to Postgres text by
//!   [`pgtext`]). It intercepts the statements `RESTART SERVER` and
//!   `CRASH SERVER`.
//! * [`run_slt_file`] runs one `.slt` file against a target in a mode.
//! * [`ReferencePostgres`] starts a real PostgreSQL in a temporary
//!   directory, against which the files under `slt/postgres/` also run.
//!
//! See `sql-tests/README.md` for how to run the suites.

pub mod bids;
pub mod db;
pub mod pgtext;
pub mod postgres;
pub mod reference;
pub mod server;
pub mod sql;

use std::path::Path;

pub use db::{
    lock, parse_special, share, simple_query_rows, DbError, QueryMode, ServerHandle, SharedServer,
    SpecialStatement, Target, WeirDb,
};
pub use postgres::ReferencePostgres;
pub use server::{connect_session, connect_with_retry, free_port, weir_binary, TestServer};

/// Maximum number of failed records reported per file.
const MAX_REPORTED_FAILURES: usize = 10;

/// Runs one sqllogictest file against `target` in `mode`. Every
/// `connection` in the file gets its own session. The labels `simple` /
/// `extended` (the mode) and `weir` / `postgres` (the engine) can be used
/// with `onlyif` / `skipif`.
///
/// A failed record does not stop the file: all failures are reported
/// (later ones may be consequences of earlier ones). Set
/// `WEIR_SLT_FAIL_FAST=1` to stop at the first failure.
pub async fn run_slt_file(path: &Path, target: Target, mode: QueryMode) -> Result<(), String> {
    let records = sqllogictest::parse_file::<sqllogictest::DefaultColumnType>(path)
        .map_err(|e| format!("cannot parse {}: {e}", path.display()))?;
    let fail_fast = std::env::var_os("WEIR_SLT_FAIL_FAST").is_some_and(|v| !v.is_empty());
    let make_target = target.clone();
    let mut runner = sqllogictest::Runner::new(move || {
        let target = make_target.clone();
        async move { WeirDb::connect(target, mode).await }
    });
    runner.add_label(mode.name());
    let mut checked = 0;
    let mut failures = Vec::new();
    for record in records {
        match record {
            sqllogictest::Record::Halt { .. } => break,
            sqllogictest::Record::Statement { .. } | sqllogictest::Record::Query { .. } => {
                checked += 1
            }
            _ => {}
        }
        if let Err(e) = runner.run_async(record).await {
            failures.push(e.display(false).to_string());
            if fail_fast {
                break;
            }
        }
    }
    runner.shutdown_async().await;
    if failures.is_empty() {
        return Ok(());
    }
    let mut report = format!(
        "{} of {checked} records failed{}:\n",
        failures.len(),
        if failures.len() > 1 {
            " (later failures may follow from earlier ones)"
        } else {
            ""
        }
    );
    for (i, f) in failures.iter().take(MAX_REPORTED_FAILURES).enumerate() {
        report.push_str(&format!("\n[failure {}] {}\n", i + 1, f.trim_end()));
    }
    if failures.len() > MAX_REPORTED_FAILURES {
        report.push_str(&format!(
            "\n... and {} more\n",
            failures.len() - MAX_REPORTED_FAILURES
        ));
    }
    Err(report)
}

/// The reference Postgres connection string from `WEIR_REFERENCE_PG`, if
/// set: the suites then run against that Postgres instead of weir.
pub fn reference_postgres() -> Option<String> {
    std::env::var(reference::REFERENCE_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// Creates a fresh database `name` on the reference Postgres described by
/// `base` (a connection string) and returns a connection string for it.
pub async fn create_reference_database(base: &str, name: &str) -> anyhow::Result<String> {
    let admin = connect_with_retry(base, std::time::Duration::from_secs(5)).await?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name}"))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    Ok(format!("{base} dbname={name} options='-c TimeZone=UTC'"))
}

/// Drops a database created by [`create_reference_database`].
pub async fn drop_reference_database(base: &str, name: &str) -> anyhow::Result<()> {
    let admin = connect_with_retry(base, std::time::Duration::from_secs(5)).await?;
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    Ok(())
}

/// Rows only in `left` and only in `right`, as multisets (a row twice in
/// one and once in the other is once in the difference).
pub fn multiset_diff<R: Ord + Clone>(left: &[R], right: &[R]) -> (Vec<R>, Vec<R>) {
    let mut counts: std::collections::BTreeMap<&R, i64> = std::collections::BTreeMap::new();
    for r in left {
        *counts.entry(r).or_default() += 1;
    }
    for r in right {
        *counts.entry(r).or_default() -= 1;
    }
    let mut only_left = Vec::new();
    let mut only_right = Vec::new();
    for (row, n) in counts {
        for _ in 0..n.max(0) {
            only_left.push(row.clone());
        }
        for _ in 0..(-n).max(0) {
            only_right.push(row.clone());
        }
    }
    (only_left, only_right)
}
