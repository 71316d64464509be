//! `system.savepoints`: every savepoint the server keeps, of queries that
//! exist or were dropped (see `lifecycle/savepoints.rs`).

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result};
use weir_storage::Store;

use super::{Columns, SystemTable};
use crate::lifecycle::savepoints::{SavepointMeta, PREFIX};

pub struct Savepoints {
    store: Arc<Store>,
}

impl Savepoints {
    pub fn new(store: Arc<Store>) -> Self {
        Savepoints { store }
    }
}

pub(super) fn at(ms: i64) -> std::time::SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

fn batch(rows: &[SavepointMeta]) -> Result<RecordBatch> {
    Columns::new()
        .text("query", rows.iter().map(|r| Some(r.query.clone())))
        .text("name", rows.iter().map(|r| Some(r.name.clone())))
        .int("query_version", rows.iter().map(|r| Some(r.version as i64)))
        .text("trigger", rows.iter().map(|r| Some(r.trigger.clone())))
        .timestamp("created_at", rows.iter().map(|r| Some(at(r.created_at_ms))))
        .int(
            "checkpoint_id",
            rows.iter().map(|r| Some(r.checkpoint_id as i64)),
        )
        .text("path", rows.iter().map(|r| Some(r.path.clone())))
        .int("bytes", rows.iter().map(|r| Some(r.bytes as i64)))
        .text("status", rows.iter().map(|r| Some(r.status.clone())))
        .finish()
}

impl SystemTable for Savepoints {
    fn name(&self) -> &'static str {
        "savepoints"
    }

    fn schema(&self) -> SchemaRef {
        batch(&[]).expect("empty batch").schema()
    }

    fn rows(&self) -> Result<RecordBatch> {
        let mut rows: Vec<SavepointMeta> = crate::lifecycle::list(&self.store, PREFIX)
            .map_err(|e| DataFusionError::External(e.message.into()))?;
        rows.sort_by(|a, b| (a.created_at_ms, &a.name).cmp(&(b.created_at_ms, &b.name)));
        batch(&rows)
    }
}
