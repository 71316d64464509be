//! `system.backfills`: one row per streaming query created since the
//! server started, with how far its first catch-up with its inputs got
//! (see `backfill.rs`).

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::Result;

use super::{Columns, RegisteredQuery, Runtimes, SystemTable};
use crate::backfill::BackfillState;

pub struct Backfills {
    runtimes: Runtimes,
}

impl Backfills {
    pub fn new(runtimes: Runtimes) -> Self {
        Backfills { runtimes }
    }
}

fn batch(queries: &[RegisteredQuery]) -> Result<RecordBatch> {
    let rows: Vec<_> = queries
        .iter()
        .filter_map(|q| {
            let b = q.backfill.as_ref()?;
            let done = b.rows_done(&q.handle);
            let state = b.state();
            let progress = match (&state, b.rows_total) {
                (BackfillState::Done(_), _) => Some(100.0),
                (_, Some(0)) | (_, None) => None,
                (_, Some(total)) => Some((done as f64 / total as f64 * 100.0).min(99.9)),
            };
            let (status, finished_at, error) = match state {
                BackfillState::Running => ("running", None, None),
                BackfillState::Done(at) => ("done", Some(at), None),
                BackfillState::Failed(at, e) => ("failed", Some(at), Some(e)),
            };
            Some((
                q.handle.name.to_string(),
                status,
                b.started_at,
                finished_at,
                b.rows_total,
                done,
                progress,
                error,
            ))
        })
        .collect();
    Columns::new()
        .text("query", rows.iter().map(|r| Some(r.0.clone())))
        .text("status", rows.iter().map(|r| Some(r.1.to_string())))
        .timestamp("started_at", rows.iter().map(|r| Some(r.2)))
        .timestamp("finished_at", rows.iter().map(|r| r.3))
        .int("rows_total", rows.iter().map(|r| r.4.map(|t| t as i64)))
        .int("rows_done", rows.iter().map(|r| Some(r.5 as i64)))
        .float("progress_percent", rows.iter().map(|r| r.6))
        .text("error", rows.iter().map(|r| r.7.clone()))
        .finish()
}

impl SystemTable for Backfills {
    fn name(&self) -> &'static str {
        "backfills"
    }

    fn schema(&self) -> SchemaRef {
        batch(&[]).expect("empty batch").schema()
    }

    fn rows(&self) -> Result<RecordBatch> {
        let queries: Vec<RegisteredQuery> = self.runtimes.read().values().cloned().collect();
        batch(&queries)
    }
}
