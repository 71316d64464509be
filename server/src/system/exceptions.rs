//! `system.exceptions`: the failure history of every streaming query,
//! newest first, at most `exception_history_size` rows per query. Each row
//! says where the failure happened, whose fault it was (domain), the labels
//! the failure enrichers gave it and what the query did about it.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::Result;
use weir_executor::failure::ExceptionRow;

use super::{Columns, Runtimes, SystemTable};

pub struct Exceptions {
    runtimes: Runtimes,
}

impl Exceptions {
    pub fn new(runtimes: Runtimes) -> Self {
        Exceptions { runtimes }
    }
}

fn batch(rows: &[ExceptionRow]) -> Result<RecordBatch> {
    let f = |g: &dyn Fn(&ExceptionRow) -> Option<String>| rows.iter().map(g).collect::<Vec<_>>();
    Columns::new()
        .text("query", f(&|r| Some(r.failure.query.clone())))
        .timestamp(
            "occurred_at",
            rows.iter().map(|r| Some(r.failure.occurred_at)),
        )
        .text("operator", f(&|r| r.failure.operator.clone()))
        .int(
            "subtask",
            rows.iter().map(|r| r.failure.subtask.map(|s| s as i64)),
        )
        .int(
            "region",
            rows.iter().map(|r| r.failure.region.map(|s| s as i64)),
        )
        .text("error_class", f(&|r| Some(r.failure.error_class.clone())))
        .text("message", f(&|r| Some(r.failure.message.clone())))
        .text("root_cause", f(&|r| Some(r.failure.root_cause.clone())))
        .text("domain", f(&|r| Some(r.failure.domain.clone())))
        .text("sqlstate", f(&|r| Some(r.failure.sqlstate.clone())))
        .boolean("retryable", rows.iter().map(|r| Some(r.failure.retryable)))
        .text("labels", f(&|r| Some(r.labels_json())))
        .int(
            "restart_attempt",
            rows.iter().map(|r| Some(r.restart_attempt as i64)),
        )
        .text("action", f(&|r| Some(r.action.clone())))
        .int(
            "restart_delay_ms",
            rows.iter().map(|r| r.restart_delay_ms.map(|d| d as i64)),
        )
        .finish()
}

impl SystemTable for Exceptions {
    fn name(&self) -> &'static str {
        "exceptions"
    }

    fn schema(&self) -> SchemaRef {
        batch(&[]).expect("empty batch").schema()
    }

    fn rows(&self) -> Result<RecordBatch> {
        let queries: Vec<_> = self.runtimes.read().values().cloned().collect();
        let mut rows: Vec<ExceptionRow> =
            queries.iter().flat_map(|q| q.handle.exceptions()).collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.failure.occurred_at));
        batch(&rows)
    }
}
