//! `system.tasks`: one row per subtask of every streaming query — its
//! operator, failover region, status (INITIALIZING while it restores
//! state), the run (attempt) it belongs to, and its records in and out,
//! busy / backpressured / idle time per second and input watermark, so
//! that a subtask much busier than its siblings (a hot key) shows at a
//! glance.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::Result;
use weir_executor::runtime::TaskInfo;

use super::{Columns, Runtimes, SystemTable};

pub struct Tasks {
    runtimes: Runtimes,
}

impl Tasks {
    pub fn new(runtimes: Runtimes) -> Self {
        Tasks { runtimes }
    }
}

fn batch(rows: &[(String, TaskInfo)]) -> Result<RecordBatch> {
    Columns::new()
        .text("query", rows.iter().map(|(q, _)| Some(q.clone())))
        .int("node_id", rows.iter().map(|(_, t)| Some(t.node as i64)))
        .text(
            "operator",
            rows.iter().map(|(_, t)| Some(t.operator.clone())),
        )
        .int("subtask", rows.iter().map(|(_, t)| Some(t.subtask as i64)))
        .int(
            "parallelism",
            rows.iter().map(|(_, t)| Some(t.parallelism as i64)),
        )
        .int("region", rows.iter().map(|(_, t)| Some(t.region as i64)))
        .text(
            "status",
            rows.iter().map(|(_, t)| Some(t.status.to_string())),
        )
        .int("attempt", rows.iter().map(|(_, t)| Some(t.attempt as i64)))
        .int(
            "records_in",
            rows.iter().map(|(_, t)| Some(t.totals.records_in as i64)),
        )
        .int(
            "records_out",
            rows.iter().map(|(_, t)| Some(t.totals.records_out as i64)),
        )
        .int(
            "busy_ms_per_second",
            rows.iter()
                .map(|(_, t)| Some(t.rates.busy_ms_per_second.round() as i64)),
        )
        .int(
            "backpressured_ms_per_second",
            rows.iter()
                .map(|(_, t)| Some(t.rates.backpressured_ms_per_second.round() as i64)),
        )
        .int(
            "idle_ms_per_second",
            rows.iter()
                .map(|(_, t)| Some(t.rates.idle_ms_per_second.round() as i64)),
        )
        .int(
            "input_watermark_ms",
            rows.iter().map(|(_, t)| t.input_watermark),
        )
        .finish()
}

impl SystemTable for Tasks {
    fn name(&self) -> &'static str {
        "tasks"
    }

    fn schema(&self) -> SchemaRef {
        batch(&[]).expect("empty batch").schema()
    }

    fn rows(&self) -> Result<RecordBatch> {
        let queries: Vec<_> = self.runtimes.read().values().cloned().collect();
        let rows: Vec<(String, TaskInfo)> = queries
            .iter()
            .flat_map(|q| {
                let name = q.handle.name.to_string();
                q.handle.tasks().into_iter().map(move |t| (name.clone(), t))
            })
            .collect();
        batch(&rows)
    }
}
