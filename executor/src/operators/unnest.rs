//! `StreamUnnest`: one output row per element of a list column (SQL
//! `unnest`), the other columns repeated; a row's change kind goes with
//! each of its output rows. Used by HOP windows (one row per window a row
//! falls in).

use datafusion::arrow::array::{Array, ArrayRef, AsArray, RecordBatch, UInt32Array};
use datafusion::arrow::compute::take;
use datafusion::arrow::datatypes::{DataType, SchemaRef};

use crate::chunk::{Chunk, Op};
use crate::error::{ExecError, ExecResult};
use crate::operator::{Operator, Output};

pub struct UnnestOperator {
    /// Input column holding the lists.
    list: usize,
    /// Per output column: the input column it comes from (the list column
    /// means its elements).
    sources: Vec<usize>,
    /// A NULL list gives one row with a NULL element (else none).
    preserve_nulls: bool,
    schema: SchemaRef,
}

impl UnnestOperator {
    pub fn new(list: usize, sources: Vec<usize>, preserve_nulls: bool, schema: SchemaRef) -> Self {
        UnnestOperator {
            list,
            sources,
            preserve_nulls,
            schema,
        }
    }
}

impl Operator for UnnestOperator {
    fn on_chunk(&mut self, _input: usize, chunk: Chunk, out: &mut Output) -> ExecResult<()> {
        let lists = chunk.batch.column(self.list);
        let (offsets, values): (Vec<usize>, ArrayRef) = match lists.data_type() {
            DataType::List(_) => {
                let l = lists.as_list::<i32>();
                (
                    l.value_offsets().iter().map(|o| *o as usize).collect(),
                    l.values().clone(),
                )
            }
            DataType::LargeList(_) => {
                let l = lists.as_list::<i64>();
                (
                    l.value_offsets().iter().map(|o| *o as usize).collect(),
                    l.values().clone(),
                )
            }
            other => return Err(ExecError::internal(format!("unnest of a {other} column"))),
        };
        // Row i repeats once per element; `elements` indexes the values
        // (None: the NULL element of a preserved NULL list).
        let mut rows: Vec<u32> = Vec::new();
        let mut elements: Vec<Option<u32>> = Vec::new();
        for i in 0..chunk.num_rows() {
            if lists.is_null(i) {
                if self.preserve_nulls {
                    rows.push(i as u32);
                    elements.push(None);
                }
                continue;
            }
            for e in offsets[i]..offsets[i + 1] {
                rows.push(i as u32);
                elements.push(Some(e as u32));
            }
        }
        if rows.is_empty() {
            return Ok(());
        }
        let rows_idx = UInt32Array::from(rows.clone());
        let elements_idx = UInt32Array::from(elements);
        let columns = self
            .sources
            .iter()
            .map(|&c| {
                if c == self.list {
                    take(values.as_ref(), &elements_idx, None)
                } else {
                    take(chunk.batch.column(c).as_ref(), &rows_idx, None)
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let columns = columns
            .into_iter()
            .zip(self.schema.fields())
            .map(|(c, f)| {
                if c.data_type() == f.data_type() {
                    Ok(c)
                } else {
                    datafusion::arrow::compute::cast(&c, f.data_type())
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        let ops: Vec<Op> = rows.iter().map(|r| chunk.op(*r as usize)).collect();
        out.push(Chunk::new(batch, ops));
        Ok(())
    }
}
