//! `system.metrics`: every metric as a row — scope (server, query,
//! operator, subtask), where, Flink's name, value and when it was read.
//! The Prometheus endpoint shows the same points. "Which operator is
//! backpressured" is
//! `SELECT query, operator, subtask, value FROM system.metrics
//!  WHERE name = 'backPressuredTimeMsPerSecond' AND value > 500`.

use std::sync::Arc;
use std::time::SystemTime;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::Result;
use weir_executor::metrics::MetricPoint;
use weir_storage::Store;

use super::{Columns, Runtimes, SystemTable};
use crate::metrics::ServerMetrics;

pub struct Metrics {
    runtimes: Runtimes,
    server: Arc<ServerMetrics>,
    store: Arc<Store>,
}

impl Metrics {
    pub fn new(runtimes: Runtimes, server: Arc<ServerMetrics>, store: Arc<Store>) -> Self {
        Metrics {
            runtimes,
            server,
            store,
        }
    }
}

fn batch(points: &[MetricPoint]) -> Result<RecordBatch> {
    let now = SystemTime::now();
    let f = |g: &dyn Fn(&MetricPoint) -> Option<String>| points.iter().map(g).collect::<Vec<_>>();
    Columns::new()
        .text("scope", f(&|p| Some(p.scope.as_str().to_string())))
        .text("query", f(&|p| p.query.clone()))
        .text("operator", f(&|p| p.operator.clone()))
        .int(
            "operator_id",
            points.iter().map(|p| p.operator_id.map(|i| i as i64)),
        )
        .int(
            "subtask",
            points.iter().map(|p| p.subtask.map(|i| i as i64)),
        )
        .text("name", f(&|p| Some(p.name.to_string())))
        .float("value", points.iter().map(|p| Some(p.value)))
        .text(
            "labels",
            f(&|p| {
                (!p.labels.is_empty()).then(|| {
                    serde_json::to_string(
                        &p.labels
                            .iter()
                            .cloned()
                            .collect::<std::collections::BTreeMap<_, _>>(),
                    )
                    .expect("labels are strings")
                })
            }),
        )
        .timestamp("updated_at", points.iter().map(|_| Some(now)))
        .finish()
}

impl SystemTable for Metrics {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn schema(&self) -> SchemaRef {
        batch(&[]).expect("empty batch").schema()
    }

    fn rows(&self) -> Result<RecordBatch> {
        batch(&crate::metrics::collect(
            &self.server,
            &self.store,
            &self.runtimes,
        ))
    }
}
