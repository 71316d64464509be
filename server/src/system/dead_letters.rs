//! `system.dead_letters`: the bad records of queries with `on_error =
//! 'dead_letter'` — the record as JSON text, the error it caused, where and
//! when. Committed with checkpoints, so a record appears once even when the
//! query restarted and met it again; kept until the query is dropped.

use std::time::{Duration, UNIX_EPOCH};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::Result;
use weir_executor::runtime::DeadLetter;

use super::{Columns, Runtimes, SystemTable};

pub struct DeadLetters {
    runtimes: Runtimes,
}

impl DeadLetters {
    pub fn new(runtimes: Runtimes) -> Self {
        DeadLetters { runtimes }
    }
}

fn batch(rows: &[DeadLetter]) -> Result<RecordBatch> {
    let f = |g: &dyn Fn(&DeadLetter) -> Option<String>| rows.iter().map(g).collect::<Vec<_>>();
    Columns::new()
        .text("query", f(&|r| Some(r.query.clone())))
        .timestamp(
            "occurred_at",
            rows.iter()
                .map(|r| Some(UNIX_EPOCH + Duration::from_millis(r.occurred_at_ms))),
        )
        .text("operator", f(&|r| Some(r.operator.clone())))
        .int("subtask", rows.iter().map(|r| Some(r.subtask as i64)))
        .text("change", f(&|r| Some(r.change.clone())))
        .text("record", f(&|r| r.record.clone()))
        .text("error_class", f(&|r| Some(r.error_class.clone())))
        .text("message", f(&|r| Some(r.message.clone())))
        .text("sqlstate", f(&|r| Some(r.sqlstate.clone())))
        .finish()
}

impl SystemTable for DeadLetters {
    fn name(&self) -> &'static str {
        "dead_letters"
    }

    fn schema(&self) -> SchemaRef {
        batch(&[]).expect("empty batch").schema()
    }

    fn rows(&self) -> Result<RecordBatch> {
        let queries: Vec<_> = self.runtimes.read().values().cloned().collect();
        let mut rows = Vec::new();
        for q in queries {
            rows.extend(
                q.handle
                    .dead_letters()
                    .map_err(|e| datafusion::error::DataFusionError::External(Box::new(e)))?,
            );
        }
        batch(&rows)
    }
}
