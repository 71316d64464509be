//! `system.checkpoints`: one row per checkpoint of every streaming query —
//! completed ones as recorded, plus those in progress, failed or expired
//! since the server started.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::error::Result;
use weir_executor::checkpoint::CheckpointStats;

use super::{Runtimes, SystemTable};

pub struct Checkpoints {
    runtimes: Runtimes,
    schema: SchemaRef,
}

impl Checkpoints {
    pub fn new(runtimes: Runtimes) -> Self {
        let ts = || DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from("+00:00")));
        let schema = Arc::new(Schema::new(vec![
            Field::new("query", DataType::Utf8, false),
            Field::new("checkpoint_id", DataType::Int64, false),
            Field::new("kind", DataType::Utf8, false),
            Field::new("mode", DataType::Utf8, false),
            Field::new("timed_out_to_unaligned", DataType::Boolean, false),
            Field::new("status", DataType::Utf8, false),
            Field::new("triggered_at", ts(), false),
            Field::new("completed_at", ts(), true),
            Field::new("duration_ms", DataType::Int64, true),
            Field::new("state_bytes", DataType::Int64, false),
            Field::new("incremental_bytes", DataType::Int64, false),
            Field::new("persisted_in_flight_bytes", DataType::Int64, false),
            Field::new("alignment_ms", DataType::Int64, false),
            Field::new("failure", DataType::Utf8, true),
        ]));
        Checkpoints { runtimes, schema }
    }
}

fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl SystemTable for Checkpoints {
    fn name(&self) -> &'static str {
        "checkpoints"
    }

    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn rows(&self) -> Result<RecordBatch> {
        let runtimes: Vec<_> = self.runtimes.read().values().cloned().collect();
        let rows: Vec<CheckpointStats> = runtimes
            .iter()
            .flat_map(|rt| rt.handle.checkpoint_history())
            .collect();
        let i64s = |f: &dyn Fn(&CheckpointStats) -> i64| -> ArrayRef {
            Arc::new(Int64Array::from_iter_values(rows.iter().map(f)))
        };
        let strs = |f: &dyn Fn(&CheckpointStats) -> String| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
        };
        let columns: Vec<ArrayRef> = vec![
            strs(&|r| r.query.clone()),
            i64s(&|r| r.checkpoint_id as i64),
            strs(&|r| r.kind.to_string()),
            strs(&|r| r.mode.name().to_string()),
            Arc::new(BooleanArray::from_iter(
                rows.iter().map(|r| Some(r.timed_out_to_unaligned)),
            )),
            strs(&|r| r.status.name().to_string()),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(
                    rows.iter().map(|r| micros(r.triggered_at)),
                )
                .with_timezone("+00:00"),
            ),
            Arc::new(
                TimestampMicrosecondArray::from_iter(
                    rows.iter().map(|r| r.completed_at.map(micros)),
                )
                .with_timezone("+00:00"),
            ),
            Arc::new(Int64Array::from_iter(
                rows.iter().map(|r| r.duration_ms.map(|d| d as i64)),
            )),
            i64s(&|r| r.state_bytes as i64),
            i64s(&|r| r.incremental_bytes as i64),
            i64s(&|r| r.persisted_in_flight_bytes as i64),
            i64s(&|r| r.alignment_ms as i64),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| r.failure.clone()),
            )),
        ];
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}
