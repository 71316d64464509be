//! Applies a query's output changes to its result table.

use std::sync::Arc;

use crate::chunk::Chunk;
use crate::error::ExecResult;
use crate::operator::{Operator, Output};
use crate::table::{Table, WriteCheck};

pub struct ResultSinkOperator {
    table: Arc<Table>,
}

impl ResultSinkOperator {
    pub fn new(table: Arc<Table>) -> Self {
        ResultSinkOperator { table }
    }
}

impl Operator for ResultSinkOperator {
    fn on_chunk(&mut self, _input: usize, chunk: Chunk, _out: &mut Output) -> ExecResult<()> {
        self.table.write(chunk, WriteCheck::None)?;
        Ok(())
    }
}
