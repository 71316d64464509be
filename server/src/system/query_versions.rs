//! `system.query_versions`: the versions of every streaming query, with the
//! savepoint each started from and the one taken when it was replaced (see
//! `lifecycle/versions.rs`).

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result};
use weir_storage::Store;

use super::savepoints::at;
use super::{Columns, SystemTable};
use crate::lifecycle::versions::{VersionMeta, PREFIX};

pub struct QueryVersions {
    store: Arc<Store>,
}

impl QueryVersions {
    pub fn new(store: Arc<Store>) -> Self {
        QueryVersions { store }
    }
}

fn batch(rows: &[VersionMeta]) -> Result<RecordBatch> {
    Columns::new()
        .text("query", rows.iter().map(|r| Some(r.query.clone())))
        .int("version", rows.iter().map(|r| Some(r.version as i64)))
        .text(
            "definition",
            rows.iter().map(|r| Some(r.definition.clone())),
        )
        .text(
            "options",
            rows.iter()
                .map(|r| Some(serde_json::to_string(&r.options).expect("json"))),
        )
        .timestamp("created_at", rows.iter().map(|r| Some(at(r.created_at_ms))))
        .text("status", rows.iter().map(|r| Some(r.status.clone())))
        .text("started_from", rows.iter().map(|r| r.started_from.clone()))
        .text("replaced_at", rows.iter().map(|r| r.replaced_at.clone()))
        .text("plan", rows.iter().map(|r| r.plan.clone()))
        .finish()
}

impl SystemTable for QueryVersions {
    fn name(&self) -> &'static str {
        "query_versions"
    }

    fn schema(&self) -> SchemaRef {
        batch(&[]).expect("empty batch").schema()
    }

    fn rows(&self) -> Result<RecordBatch> {
        let rows: Vec<VersionMeta> = crate::lifecycle::list(&self.store, PREFIX)
            .map_err(|e| DataFusionError::External(e.message.into()))?;
        batch(&rows)
    }
}
