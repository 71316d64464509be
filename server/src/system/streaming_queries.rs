//! `system.streaming_queries`: one row per streaming query (and
//! materialized view) with its status, health and restart counters.

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::Result;

use super::{Columns, RegisteredQuery, Runtimes, SystemTable};

pub struct StreamingQueries {
    runtimes: Runtimes,
}

impl StreamingQueries {
    pub fn new(runtimes: Runtimes) -> Self {
        StreamingQueries { runtimes }
    }
}

fn batch(queries: &[RegisteredQuery]) -> Result<RecordBatch> {
    let stats: Vec<_> = queries.iter().map(|q| q.handle.stats()).collect();
    let text = |f: &dyn Fn(usize) -> Option<String>| (0..queries.len()).map(f).collect::<Vec<_>>();
    Columns::new()
        .text("name", text(&|i| Some(queries[i].handle.name.to_string())))
        .text("kind", text(&|i| Some(queries[i].kind.clone())))
        .text("status", text(&|i| Some(stats[i].status.to_string())))
        .text("health", text(&|i| Some(stats[i].health.to_string())))
        .text(
            "restart_strategy",
            text(&|i| Some(stats[i].restart_strategy.clone())),
        )
        .text(
            "failover_strategy",
            text(&|i| Some(stats[i].failover_strategy.to_string())),
        )
        .text("on_error", text(&|i| Some(stats[i].on_error.to_string())))
        .int(
            "num_restarts",
            stats.iter().map(|s| Some(s.num_restarts as i64)),
        )
        .int(
            "full_restarts",
            stats.iter().map(|s| Some(s.full_restarts as i64)),
        )
        .int(
            "restarts_in_window",
            stats.iter().map(|s| Some(s.restarts_in_window as i64)),
        )
        .int("attempt", stats.iter().map(|s| Some(s.attempt as i64)))
        .int(
            "skipped_records",
            stats.iter().map(|s| Some(s.skipped_records as i64)),
        )
        .int(
            "dead_letter_records",
            stats.iter().map(|s| Some(s.dead_letter_records as i64)),
        )
        .int("uptime_ms", stats.iter().map(|s| Some(s.uptime_ms as i64)))
        .int(
            "restarting_time_ms",
            stats.iter().map(|s| Some(s.restarting_ms as i64)),
        )
        .timestamp("last_failure_at", stats.iter().map(|s| s.last_failure_at))
        .text("last_failure", stats.iter().map(|s| s.last_failure.clone()))
        .text(
            "last_failure_sqlstate",
            stats.iter().map(|s| {
                s.last_failure_sqlstate
                    .as_ref()
                    .map(|c| c.code().to_string())
            }),
        )
        .text(
            "last_failure_domain",
            stats
                .iter()
                .map(|s| s.last_failure_domain.map(|d| d.as_str().to_string())),
        )
        .text(
            "failed_reason",
            stats.iter().map(|s| s.failed_reason.clone()),
        )
        .text(
            "options",
            text(&|i| {
                Some(
                    queries[i]
                        .options
                        .iter()
                        .map(|(k, v)| format!("{k} = '{v}'"))
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            }),
        )
        .text("definition", text(&|i| Some(queries[i].sql.clone())))
        .finish()
}

impl SystemTable for StreamingQueries {
    fn name(&self) -> &'static str {
        "streaming_queries"
    }

    fn schema(&self) -> SchemaRef {
        batch(&[]).expect("empty batch").schema()
    }

    fn rows(&self) -> Result<RecordBatch> {
        let queries: Vec<RegisteredQuery> = self.runtimes.read().values().cloned().collect();
        batch(&queries)
    }
}
