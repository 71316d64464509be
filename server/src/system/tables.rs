//! `system.tables`: one row per table, source and result table, with its
//! rows and the part of its change log still kept (`log_start` to
//! `log_end`; the log is truncated once no reader needs its front, see
//! `engine/log_truncation.rs`), and about how many bytes it takes on disk
//! (flushed data: recent writes still in RocksDB's memtables are not
//! counted yet).

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result};
use weir_executor::table::Table;

use super::{Columns, SystemTable};
use crate::providers::Relations;

pub struct Tables {
    relations: Relations,
}

impl Tables {
    pub fn new(relations: Relations) -> Self {
        Tables { relations }
    }
}

fn kind(t: &Table) -> &'static str {
    if t.connector().is_some() {
        "source"
    } else if t.is_result() {
        "result"
    } else {
        "table"
    }
}

fn batch(tables: &[std::sync::Arc<Table>]) -> Result<RecordBatch> {
    let mut rows = Vec::with_capacity(tables.len());
    for t in tables {
        let (start, end) = t
            .log_range()
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let key: Vec<String> = t
            .primary_key()
            .iter()
            .map(|i| t.desc.schema.field(*i).name().clone())
            .collect();
        rows.push((
            t.desc.name.clone(),
            kind(t),
            t.row_count() as i64,
            (!key.is_empty()).then(|| key.join(", ")),
            t.is_durable().then_some(end as i64),
            start.map(|s| s as i64),
            t.disk_bytes()
                .map_err(|e| DataFusionError::External(Box::new(e)))? as i64,
        ));
    }
    Columns::new()
        .text("name", rows.iter().map(|r| Some(r.0.clone())))
        .text("kind", rows.iter().map(|r| Some(r.1.to_string())))
        .int("rows", rows.iter().map(|r| Some(r.2)))
        .text("primary_key", rows.iter().map(|r| r.3.clone()))
        .int("log_end", rows.iter().map(|r| r.4))
        .int("log_start", rows.iter().map(|r| r.5))
        .int("disk_bytes", rows.iter().map(|r| Some(r.6)))
        .finish()
}

impl SystemTable for Tables {
    fn name(&self) -> &'static str {
        "tables"
    }

    fn schema(&self) -> SchemaRef {
        batch(&[]).expect("empty batch").schema()
    }

    fn rows(&self) -> Result<RecordBatch> {
        let tables: Vec<_> = self.relations.read().values().cloned().collect();
        batch(&tables)
    }
}
