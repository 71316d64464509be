//! Truncating the change logs of tables and results.
//!
//! A table's rows are stored apart from its log (`executor/src/table.rs`),
//! so the log is kept only for its readers:
//! - each retained checkpoint of every query restores its sources at the
//!   offsets in its record (`CheckpointRecord::table_offsets`; a record
//!   written before those were kept holds every log its query reads);
//! - each savepoint, likewise, from the record in its manifest;
//! - a query's own retained checkpoints read its result table's log back to
//!   their `result_version` (`START ... FROM CHECKPOINT n`);
//! - the readers running in this process (a query reading the table now),
//!   which `Table::truncate_log_through` accounts for.
//!
//! A new reader starts from a snapshot of the stored rows, so it needs none
//! of the log before it. Truncation runs every few seconds and on `VACUUM`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use weir_executor::checkpoint::savepoint::read_manifest;
use weir_executor::checkpoint::CheckpointRecord;
use weir_executor::table::Table;

use super::Engine;
use crate::error::SqlResult;
use crate::lifecycle::savepoints::{SavepointMeta, PREFIX as SAVEPOINT_PREFIX};

/// How often logs are truncated in the background.
pub const TRUNCATE_INTERVAL: Duration = Duration::from_secs(5);

/// Log entries of one table needed from `offset` on: keep the lowest.
fn need(needed: &mut HashMap<u64, u64>, log: u64, offset: u64) {
    let n = needed.entry(log).or_insert(offset);
    *n = (*n).min(offset);
}

impl Engine {
    /// Starts the background truncation; it stops with the engine.
    pub(super) fn schedule_log_truncation(&self) {
        let engine = self.me.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(TRUNCATE_INTERVAL).await;
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                if let Err(e) = engine.truncate_logs().await {
                    tracing::warn!(error = %e, "log truncation failed; it is retried");
                }
            }
        });
    }

    /// Truncates every durable table's log below what its readers need.
    /// Returns the number of logs truncated.
    pub async fn truncate_logs(&self) -> SqlResult<usize> {
        // Catalog changes (a query created, a savepoint taken) do not
        // interleave with the computation.
        let _ddl = self.ddl.lock().await;
        type Inputs = Vec<(u64, Vec<String>)>;
        let (tables, queries): (Vec<Arc<Table>>, Inputs) = {
            let st = self.state.lock();
            let mut tables: Vec<Arc<Table>> = st.tables.values().map(|(_, t)| t.clone()).collect();
            tables.extend(st.queries.values().map(|q| q.table.clone()));
            let queries = st
                .queries
                .values()
                .map(|q| (q.meta.id, q.meta.depends_on.clone()))
                .collect();
            (tables, queries)
        };
        let by_name: HashMap<String, u64> = tables
            .iter()
            .map(|t| (t.desc.name.clone(), t.log_id()))
            .collect();
        let depends: HashMap<u64, Vec<u64>> = queries
            .into_iter()
            .map(|(id, deps)| {
                let logs = deps
                    .iter()
                    .filter_map(|d| by_name.get(d).copied())
                    .collect();
                (id, logs)
            })
            .collect();
        let store = self.store.clone();
        let truncated = tokio::task::spawn_blocking(move || -> SqlResult<usize> {
            let mut needed: HashMap<u64, u64> = HashMap::new();
            let mut note = |rec: &CheckpointRecord| {
                for (log, offset) in &rec.table_offsets {
                    need(&mut needed, *log, *offset);
                }
                if rec.table_offsets.is_empty() && !rec.sources.is_empty() {
                    // An older record: it may read any log of its query.
                    for log in depends.get(&rec.query_id).into_iter().flatten() {
                        need(&mut needed, *log, 0);
                    }
                }
                if let Some(v) = rec.result_version {
                    need(&mut needed, rec.query_id, v);
                }
            };
            for (key, value) in store.list_checkpoint_records("q/")? {
                // Records only: q/<query id>/<epoch>.
                if key.matches('/').count() != 2 {
                    continue;
                }
                if let Ok(rec) = serde_json::from_slice::<CheckpointRecord>(&value) {
                    note(&rec);
                }
            }
            for (key, value) in store.list_catalog()? {
                if !key.starts_with(SAVEPOINT_PREFIX) {
                    continue;
                }
                let Ok(meta) = serde_json::from_slice::<SavepointMeta>(&value) else {
                    continue;
                };
                match read_manifest(std::path::Path::new(&meta.path)) {
                    Ok(m) => {
                        let mut rec = m.record;
                        // A savepoint holds its own results.
                        rec.result_version = None;
                        note(&rec);
                    }
                    Err(e) => tracing::debug!(savepoint = %meta.name, error = %e,
                        "savepoint manifest unreadable; it holds no log"),
                }
            }
            let mut truncated = 0;
            for t in &tables {
                if !t.is_durable() {
                    continue;
                }
                let through = needed.get(&t.log_id()).copied().unwrap_or(u64::MAX);
                let Some(first) = t.log_start()? else {
                    continue;
                };
                if first <= through.min(t.version()) {
                    t.truncate_log_through(through)?;
                    truncated += 1;
                }
            }
            Ok(truncated)
        })
        .await
        .map_err(|e| crate::error::SqlError::internal(format!("log truncation panicked: {e}")))??;
        Ok(truncated)
    }
}
