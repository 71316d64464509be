//! The key a keyed operator (join, top-N, session window) keeps its state
//! by: the row encoding of its key expressions — the same bytes the hash
//! exchange in front of it hashes, so that the key group of a state entry
//! is the one the router sends the key to. An operator without key
//! expressions (its input comes over a Single edge) gets one constant
//! `true` column, in key group 0: a row converter over zero columns would
//! encode zero rows whatever the input's length.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BooleanArray, RecordBatch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{OwnedRow, Rows};
use datafusion::physical_expr::PhysicalExpr;

use crate::error::ExecResult;
use crate::keys::{key_group_of, KeyEncoder};
use crate::operators::state_codec::RowCodec;

pub struct PartitionKey {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    enc: KeyEncoder,
    codec: RowCodec,
}

impl PartitionKey {
    /// Key expressions over `input`.
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, input: &SchemaRef) -> ExecResult<Self> {
        let types = exprs
            .iter()
            .map(|e| e.data_type(input))
            .collect::<Result<Vec<_>, _>>()?;
        Self::with_types(exprs, types)
    }

    /// Key expressions whose results have `types` (a join casts one side's
    /// keys to the other's types).
    pub fn with_types(exprs: Vec<Arc<dyn PhysicalExpr>>, types: Vec<DataType>) -> ExecResult<Self> {
        let types = if exprs.is_empty() {
            vec![DataType::Boolean]
        } else {
            types
        };
        Ok(PartitionKey {
            exprs,
            enc: KeyEncoder::new(&types)?,
            codec: RowCodec::new(&types)?,
        })
    }

    /// No key expressions: one constant key.
    pub fn is_constant(&self) -> bool {
        self.exprs.is_empty()
    }

    /// The key columns of a batch.
    pub fn columns(&self, batch: &RecordBatch) -> ExecResult<Vec<ArrayRef>> {
        let n = batch.num_rows();
        if self.is_constant() {
            return Ok(vec![Arc::new(BooleanArray::from(vec![true; n]))]);
        }
        Ok(self
            .exprs
            .iter()
            .map(|e| e.evaluate(batch).and_then(|v| v.into_array(n)))
            .collect::<Result<Vec<_>, _>>()?)
    }

    /// The encoded key of each row of a batch.
    pub fn encode(&self, batch: &RecordBatch) -> ExecResult<Rows> {
        self.enc.encode(&self.columns(batch)?)
    }

    /// The encoded keys of key columns.
    pub fn encode_columns(&self, columns: &[ArrayRef]) -> ExecResult<Rows> {
        self.enc.encode(columns)
    }

    /// The key group a key's state belongs to.
    pub fn key_group(&self, key: &[u8]) -> usize {
        if self.is_constant() {
            0
        } else {
            key_group_of(key)
        }
    }

    /// Keys read back from state bytes.
    pub fn rehydrate(&self, keys: &[&[u8]]) -> ExecResult<Vec<OwnedRow>> {
        self.codec.rehydrate(&self.enc, keys)
    }
}
