//! A new streaming query's first catch-up with its inputs: `CREATE
//! STREAMING QUERY` / `MATERIALIZED VIEW` returns when it is done (its
//! first checkpoint covers what the inputs held at creation), or at once
//! with `SET background_ddl = on`; `system.backfills` shows its progress.
//! A query that reads only connector sources (files, generators) has no
//! rows already there to catch up with: it returns at once, no checkpoint
//! is asked for, and it is not listed.

use std::sync::Arc;
use std::time::SystemTime;

use parking_lot::Mutex;
use weir_executor::graph::NodeKind;
use weir_executor::runtime::StreamingQuery;

use crate::error::SqlError;

#[derive(Debug, Clone)]
pub enum BackfillState {
    Running,
    Done(SystemTime),
    /// The query failed before it caught up (it may be restarting).
    Failed(SystemTime, String),
}

/// The catch-up of one query, created in this server's lifetime.
pub struct Backfill {
    pub started_at: SystemTime,
    /// Rows its inputs held at creation; `None` when a connector source
    /// (whose size is not known up front) is among them.
    pub rows_total: Option<u64>,
    /// Whether the query reads a table (rows already there to catch up
    /// with), not only connector sources.
    pub reads_tables: bool,
    state: Mutex<BackfillState>,
}

impl Backfill {
    /// Starts tracking `query`, just launched.
    pub fn new(query: &StreamingQuery) -> Arc<Backfill> {
        let mut total = Some(0u64);
        let mut reads_tables = false;
        for node in &query.graph().nodes {
            if let NodeKind::TableSource(table) = &node.kind {
                reads_tables |= table.connector().is_none();
                total = match table.connector() {
                    Some(_) => None,
                    None => total.map(|t| t + table.row_count() as u64),
                };
            }
        }
        Arc::new(Backfill {
            started_at: SystemTime::now(),
            rows_total: total,
            reads_tables,
            state: Mutex::new(BackfillState::Running),
        })
    }

    pub fn state(&self) -> BackfillState {
        self.state.lock().clone()
    }

    /// Rows the query's sources have read so far.
    pub fn rows_done(&self, query: &StreamingQuery) -> u64 {
        let sources: Vec<usize> = query
            .graph()
            .nodes
            .iter()
            .filter(|n| matches!(n.kind, NodeKind::TableSource(_)))
            .map(|n| n.id)
            .collect();
        query
            .tasks()
            .iter()
            .filter(|t| sources.contains(&t.node))
            .map(|t| t.totals.records_out)
            .sum()
    }

    /// Waits until `query` caught up with what its inputs held when it
    /// was created, or failed on the way (then the failure, as a warning
    /// for the client: the query exists either way).
    pub async fn wait(&self, query: &StreamingQuery) -> Option<SqlError> {
        match query.flush_until_failure().await {
            Ok(()) => {
                *self.state.lock() = BackfillState::Done(SystemTime::now());
                None
            }
            Err(e) => {
                *self.state.lock() = BackfillState::Failed(SystemTime::now(), e.message.clone());
                let name = &query.name;
                Some(
                    SqlError::new(e.sqlstate, format!("{name} was created, but {}", e.message))
                        .with_hint(format!(
                            "See SELECT * FROM system.exceptions WHERE query = '{name}'."
                        )),
                )
            }
        }
    }
}
