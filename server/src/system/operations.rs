//! `system.operations`: the history of lifecycle operations on streaming
//! queries (create, upgrade, stop, start, savepoint, rollback, automatic
//! rollback, ...), oldest first (see `lifecycle/operations.rs`).

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result};
use weir_storage::Store;

use super::savepoints::at;
use super::{Columns, SystemTable};
use crate::lifecycle::operations::{OperationMeta, PREFIX};

pub struct Operations {
    store: Arc<Store>,
}

impl Operations {
    pub fn new(store: Arc<Store>) -> Self {
        Operations { store }
    }
}

fn batch(rows: &[OperationMeta]) -> Result<RecordBatch> {
    Columns::new()
        .int("id", rows.iter().map(|r| Some(r.id as i64)))
        .text("query", rows.iter().map(|r| Some(r.query.clone())))
        .text("operation", rows.iter().map(|r| Some(r.operation.clone())))
        .timestamp("started_at", rows.iter().map(|r| Some(at(r.started_at_ms))))
        .timestamp("finished_at", rows.iter().map(|r| r.finished_at_ms.map(at)))
        .text("status", rows.iter().map(|r| Some(r.status.clone())))
        .text("detail", rows.iter().map(|r| Some(r.detail.clone())))
        .finish()
}

impl SystemTable for Operations {
    fn name(&self) -> &'static str {
        "operations"
    }

    fn schema(&self) -> SchemaRef {
        batch(&[]).expect("empty batch").schema()
    }

    fn rows(&self) -> Result<RecordBatch> {
        let rows: Vec<OperationMeta> = crate::lifecycle::list(&self.store, PREFIX)
            .map_err(|e| DataFusionError::External(e.message.into()))?;
        batch(&rows)
    }
}
