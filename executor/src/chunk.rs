//! A chunk of changes: an Arrow record batch plus, for updating streams, the
//! change kind of each row.

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, Int8Array, RecordBatch};
use datafusion::arrow::compute::{concat_batches, filter_record_batch, take};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::error::ExecResult;

/// The change kind of one row. An update travels as a delete of the old row
/// followed by an insert of the new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Insert,
    Delete,
}

impl Op {
    pub fn sign(self) -> i64 {
        match self {
            Op::Insert => 1,
            Op::Delete => -1,
        }
    }
}

/// Name of the op column when a chunk is stored as one batch.
pub const OP_COLUMN: &str = "__weir_op";

/// Rows and their change kinds. `ops == None` means every row is an insert
/// (append-only streams skip the side array).
#[derive(Debug, Clone)]
pub struct Chunk {
    pub batch: RecordBatch,
    pub ops: Option<Arc<Vec<Op>>>,
}

impl Chunk {
    pub fn inserts(batch: RecordBatch) -> Chunk {
        Chunk { batch, ops: None }
    }

    pub fn deletes(batch: RecordBatch) -> Chunk {
        let n = batch.num_rows();
        Chunk {
            batch,
            ops: Some(Arc::new(vec![Op::Delete; n])),
        }
    }

    pub fn new(batch: RecordBatch, ops: Vec<Op>) -> Chunk {
        debug_assert_eq!(batch.num_rows(), ops.len());
        if ops.iter().all(|o| *o == Op::Insert) {
            Chunk { batch, ops: None }
        } else {
            Chunk {
                batch,
                ops: Some(Arc::new(ops)),
            }
        }
    }

    pub fn num_rows(&self) -> usize {
        self.batch.num_rows()
    }

    pub fn is_empty(&self) -> bool {
        self.batch.num_rows() == 0
    }

    pub fn op(&self, row: usize) -> Op {
        match &self.ops {
            None => Op::Insert,
            Some(ops) => ops[row],
        }
    }

    /// Rows `offset..offset + len` (no copy).
    pub fn slice(&self, offset: usize, len: usize) -> Chunk {
        Chunk {
            batch: self.batch.slice(offset, len),
            ops: self
                .ops
                .as_ref()
                .map(|ops| Arc::new(ops[offset..offset + len].to_vec())),
        }
    }

    pub fn is_append_only(&self) -> bool {
        self.ops.is_none()
    }

    /// Keeps the rows where `mask` is true.
    pub fn filter(&self, mask: &BooleanArray) -> ExecResult<Chunk> {
        let batch = filter_record_batch(&self.batch, mask)?;
        let ops = self.ops.as_ref().map(|ops| {
            Arc::new(
                ops.iter()
                    .enumerate()
                    .filter(|(i, _)| mask.is_valid(*i) && mask.value(*i))
                    .map(|(_, o)| *o)
                    .collect::<Vec<_>>(),
            )
        });
        Ok(Chunk { batch, ops })
    }

    /// Picks the given rows, in order.
    pub fn take(&self, indices: &[u32]) -> ExecResult<Chunk> {
        let idx = datafusion::arrow::array::UInt32Array::from(indices.to_vec());
        let columns = self
            .batch
            .columns()
            .iter()
            .map(|c| take(c.as_ref(), &idx, None))
            .collect::<Result<Vec<ArrayRef>, _>>()?;
        let batch = RecordBatch::try_new_with_options(
            self.batch.schema(),
            columns,
            &datafusion::arrow::array::RecordBatchOptions::new()
                .with_row_count(Some(indices.len())),
        )?;
        let ops = self
            .ops
            .as_ref()
            .map(|ops| Arc::new(indices.iter().map(|i| ops[*i as usize]).collect()));
        Ok(Chunk { batch, ops })
    }

    /// The same rows under another schema (same types, other names).
    pub fn with_schema(self, schema: SchemaRef) -> ExecResult<Chunk> {
        let batch = RecordBatch::try_new_with_options(
            schema,
            self.batch.columns().to_vec(),
            &datafusion::arrow::array::RecordBatchOptions::new()
                .with_row_count(Some(self.batch.num_rows())),
        )?;
        Ok(Chunk {
            batch,
            ops: self.ops,
        })
    }

    /// One batch with an extra Int8 op column (1 insert, -1 delete), for storage.
    pub fn to_stored_batch(&self) -> ExecResult<RecordBatch> {
        let Some(ops) = &self.ops else {
            return Ok(self.batch.clone());
        };
        let mut fields: Vec<Field> = self
            .batch
            .schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        fields.push(Field::new(OP_COLUMN, DataType::Int8, false));
        let mut cols = self.batch.columns().to_vec();
        cols.push(Arc::new(Int8Array::from(
            ops.iter().map(|o| o.sign() as i8).collect::<Vec<_>>(),
        )));
        Ok(RecordBatch::try_new_with_options(
            Arc::new(Schema::new(fields)),
            cols,
            &datafusion::arrow::array::RecordBatchOptions::new()
                .with_row_count(Some(self.batch.num_rows())),
        )?)
    }

    /// Inverse of [`Chunk::to_stored_batch`]; `schema` is the table schema.
    pub fn from_stored_batch(batch: RecordBatch, schema: &SchemaRef) -> ExecResult<Chunk> {
        let n = schema.fields().len();
        let ops = if batch.num_columns() == n + 1 {
            let col = batch.column(n);
            let arr = col
                .as_any()
                .downcast_ref::<Int8Array>()
                .ok_or_else(|| crate::ExecError::internal("stored op column is not int8"))?;
            Some(Arc::new(
                arr.values()
                    .iter()
                    .map(|v| if *v < 0 { Op::Delete } else { Op::Insert })
                    .collect::<Vec<_>>(),
            ))
        } else {
            None
        };
        let batch = RecordBatch::try_new_with_options(
            schema.clone(),
            batch.columns()[..n].to_vec(),
            &datafusion::arrow::array::RecordBatchOptions::new()
                .with_row_count(Some(batch.num_rows())),
        )?;
        Ok(Chunk { batch, ops })
    }

    /// Concatenates chunks of one schema.
    pub fn concat(schema: &SchemaRef, chunks: &[Chunk]) -> ExecResult<Chunk> {
        let batch = concat_batches(schema, chunks.iter().map(|c| &c.batch))?;
        let ops = if chunks.iter().all(|c| c.ops.is_none()) {
            None
        } else {
            Some(Arc::new(
                chunks
                    .iter()
                    .flat_map(|c| (0..c.num_rows()).map(move |i| c.op(i)))
                    .collect(),
            ))
        };
        Ok(Chunk { batch, ops })
    }
}
