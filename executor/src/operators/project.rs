//! Evaluates scalar expressions row by row; change kinds pass through.

use std::sync::Arc;

use datafusion::arrow::array::{RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::physical_expr::PhysicalExpr;

use crate::chunk::Chunk;
use crate::error::{ExecError, ExecResult};
use crate::operator::{Operator, Output};

pub struct ProjectOperator {
    exprs: Vec<Arc<dyn PhysicalExpr>>,
    schema: SchemaRef,
}

impl ProjectOperator {
    pub fn new(exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef) -> Self {
        ProjectOperator { exprs, schema }
    }
}

impl Operator for ProjectOperator {
    fn on_chunk(&mut self, _input: usize, chunk: Chunk, out: &mut Output) -> ExecResult<()> {
        let n = chunk.num_rows();
        let columns = self
            .exprs
            .iter()
            .map(|e| e.evaluate(&chunk.batch).and_then(|v| v.into_array(n)))
            .collect::<Result<Vec<_>, _>>()
            .map_err(ExecError::rejected)?;
        let batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        out.push(Chunk {
            batch,
            ops: chunk.ops,
        });
        Ok(())
    }
}
