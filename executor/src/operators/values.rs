//! A constant relation (`VALUES`, or a SELECT without FROM): emits its rows
//! once when opened. It has no inputs, so it ends right away.

use datafusion::arrow::array::RecordBatch;

use crate::chunk::Chunk;
use crate::error::ExecResult;
use crate::operator::{Operator, OperatorContext, Output, StateSnapshot};

pub struct ValuesOperator {
    batch: RecordBatch,
}

impl ValuesOperator {
    pub fn new(batch: RecordBatch) -> Self {
        ValuesOperator { batch }
    }
}

impl Operator for ValuesOperator {
    fn open(
        &mut self,
        ctx: &OperatorContext,
        _restored: Option<StateSnapshot>,
        out: &mut Output,
    ) -> ExecResult<()> {
        if ctx.subtask == 0 {
            out.push(Chunk::inserts(self.batch.clone()));
        }
        Ok(())
    }

    fn on_chunk(&mut self, _input: usize, _chunk: Chunk, _out: &mut Output) -> ExecResult<()> {
        Ok(())
    }
}
