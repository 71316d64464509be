//! UNION ALL: every input's changes, under the output schema.

use datafusion::arrow::datatypes::SchemaRef;

use crate::chunk::Chunk;
use crate::error::ExecResult;
use crate::operator::{Operator, Output};

pub struct UnionOperator {
    schema: SchemaRef,
}

impl UnionOperator {
    pub fn new(schema: SchemaRef) -> Self {
        UnionOperator { schema }
    }
}

impl Operator for UnionOperator {
    fn on_chunk(&mut self, _input: usize, chunk: Chunk, out: &mut Output) -> ExecResult<()> {
        out.push(chunk.with_schema(self.schema.clone())?);
        Ok(())
    }
}
