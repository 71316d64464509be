//! A constant relation (`VALUES`, or a SELECT without FROM): emits its rows
//! once when first opened (not again when resumed from a checkpoint). It
//! has no inputs, so it ends right away.

use datafusion::arrow::array::RecordBatch;

use crate::chunk::Chunk;
use crate::error::ExecResult;
use crate::operator::{Operator, OperatorContext, Output};

pub struct ValuesOperator {
    batch: RecordBatch,
}

impl ValuesOperator {
    pub fn new(batch: RecordBatch) -> Self {
        ValuesOperator { batch }
    }
}

impl Operator for ValuesOperator {
    fn open(&mut self, ctx: &OperatorContext, restored: bool, out: &mut Output) -> ExecResult<()> {
        // Resumed from a checkpoint: the rows went out before it.
        if ctx.subtask == 0 && !restored {
            out.push(Chunk::inserts(self.batch.clone()));
        }
        Ok(())
    }

    fn on_chunk(&mut self, _input: usize, _chunk: Chunk, _out: &mut Output) -> ExecResult<()> {
        Ok(())
    }
}
