//! The operations history (`operation/<id>`): every lifecycle operation
//! on a streaming query, written when it begins (`in progress`) and again
//! when it ends (`succeeded` / `failed`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use weir_storage::Store;

use super::{json, now_ms};

pub const CREATE: &str = "create";
pub const ALTER: &str = "alter";
pub const UPGRADE: &str = "upgrade";
pub const STOP: &str = "stop";
pub const START: &str = "start";
pub const SAVEPOINT: &str = "savepoint";
pub const ROLLBACK: &str = "rollback";
pub const AUTOMATIC_ROLLBACK: &str = "automatic rollback";
pub const RESTART: &str = "restart";
pub const RESCALE: &str = "rescale";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OperationMeta {
    pub id: u64,
    pub query: String,
    pub operation: String,
    pub started_at_ms: i64,
    pub finished_at_ms: Option<i64>,
    pub status: String,
    pub detail: String,
}

pub const PREFIX: &str = "operation/";

fn key(id: u64) -> String {
    format!("operation/{id:020}")
}

/// An operation under way; [`Operation::finish`] records how it ended.
pub struct Operation {
    store: Arc<Store>,
    meta: OperationMeta,
}

impl Operation {
    /// Records the start of an operation. A failure to record it is
    /// logged, never fails the operation itself.
    pub fn begin(
        store: &Arc<Store>,
        id: u64,
        query: &str,
        operation: &str,
        detail: String,
    ) -> Self {
        let meta = OperationMeta {
            id,
            query: query.to_string(),
            operation: operation.to_string(),
            started_at_ms: now_ms(),
            finished_at_ms: None,
            status: "in progress".into(),
            detail,
        };
        let op = Operation {
            store: store.clone(),
            meta,
        };
        op.write();
        op
    }

    fn write(&self) {
        if let Err(e) = self
            .store
            .put_catalog(&key(self.meta.id), &json(&self.meta))
        {
            tracing::warn!(error = %e, "could not record an operation");
        }
    }

    /// Records the outcome; `detail` replaces the detail when given.
    pub fn finish<T, E: std::fmt::Display>(
        mut self,
        outcome: &Result<T, E>,
        detail: Option<String>,
    ) {
        self.meta.finished_at_ms = Some(now_ms());
        match outcome {
            Ok(_) => {
                self.meta.status = "succeeded".into();
                if let Some(d) = detail {
                    self.meta.detail = d;
                }
            }
            Err(e) => {
                self.meta.status = "failed".into();
                self.meta.detail = match detail {
                    Some(d) => format!("{d}: {e}"),
                    None if self.meta.detail.is_empty() => e.to_string(),
                    None => format!("{}: {e}", self.meta.detail),
                };
            }
        }
        self.write();
    }
}

/// Operations left `in progress` by a crash are marked `interrupted` at
/// start: whether their change took effect is for the catalog to say (the
/// query's status and versions), as it may have committed just before.
pub fn settle_interrupted(store: &Arc<Store>) -> crate::error::SqlResult<()> {
    for mut op in super::list::<OperationMeta>(store, PREFIX)? {
        if op.finished_at_ms.is_none() {
            op.status = "interrupted".into();
            op.finished_at_ms = Some(now_ms());
            op.detail = format!("{} (interrupted: the server stopped)", op.detail);
            store.put_catalog(&key(op.id), &json(&op))?;
        }
    }
    Ok(())
}
