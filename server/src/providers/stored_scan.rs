//! An ad hoc read of a stored table: the rows in the key ranges the WHERE
//! clause allows (`key_ranges.rs`), from one RocksDB snapshot taken when
//! the statement is planned, decoded a batch at a time on a blocking
//! thread as the query pulls them.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::physical_plan::stream::RecordBatchReceiverStream;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::ExecutionPlan;
use weir_executor::table::{KeyRange, Table, TableScan, SCAN_BATCH_ROWS};
use weir_storage::StoreSnapshot;

/// The scan of `ranges` of `table` (`None`: all of it).
pub fn scan(
    table: &Arc<Table>,
    ranges: Option<Vec<KeyRange>>,
    projection: Option<&Vec<usize>>,
    limit: Option<usize>,
) -> Result<Arc<dyn ExecutionPlan>> {
    let snapshot = table.storage_snapshot().map(Arc::new);
    let partition = StoredPartition {
        table: table.clone(),
        schema: table.schema(),
        snapshot,
        ranges: ranges.unwrap_or_else(|| vec![KeyRange::all()]),
        limit,
    };
    Ok(Arc::new(StreamingTableExec::try_new(
        table.schema(),
        vec![Arc::new(partition)],
        projection,
        Vec::new(),
        false,
        limit,
    )?))
}

struct StoredPartition {
    table: Arc<Table>,
    schema: SchemaRef,
    /// `None`: a table without storage, always empty.
    snapshot: Option<Arc<StoreSnapshot>>,
    ranges: Vec<KeyRange>,
    limit: Option<usize>,
}

impl std::fmt::Debug for StoredPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StoredPartition({}, {} key ranges)",
            self.table.desc.name,
            self.ranges.len()
        )
    }
}

impl PartitionStream for StoredPartition {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let mut builder = RecordBatchReceiverStream::builder(self.schema.clone(), 2);
        let Some(snapshot) = self.snapshot.clone() else {
            return builder.build();
        };
        let tx = builder.tx();
        let table = self.table.clone();
        let ranges = self.ranges.clone();
        let mut left = self.limit.unwrap_or(usize::MAX);
        let external = |e: weir_executor::ExecError| DataFusionError::External(Box::new(e));
        builder.spawn_blocking(move || {
            for range in ranges {
                let mut scan = TableScan::new(range);
                while left > 0 {
                    let Some(batch) = scan
                        .next_batch(&table, &snapshot, SCAN_BATCH_ROWS.min(left))
                        .map_err(external)?
                    else {
                        break;
                    };
                    left = left.saturating_sub(batch.num_rows());
                    if tx.blocking_send(Ok(batch)).is_err() {
                        // The query stopped reading (a LIMIT, a cancel).
                        return Ok(());
                    }
                }
            }
            Ok(())
        });
        builder.build()
    }
}
