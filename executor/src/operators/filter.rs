//! Keeps the rows whose predicate is true (NULL counts as false).

use std::sync::Arc;

use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::physical_expr::PhysicalExpr;

use crate::chunk::Chunk;
use crate::error::{ExecError, ExecResult};
use crate::operator::{Operator, Output};

pub struct FilterOperator {
    predicate: Arc<dyn PhysicalExpr>,
}

impl FilterOperator {
    pub fn new(predicate: Arc<dyn PhysicalExpr>) -> Self {
        FilterOperator { predicate }
    }
}

impl Operator for FilterOperator {
    fn on_chunk(&mut self, _input: usize, chunk: Chunk, out: &mut Output) -> ExecResult<()> {
        let mask = self
            .predicate
            .evaluate(&chunk.batch)
            .and_then(|v| v.into_array(chunk.num_rows()))
            .map_err(ExecError::rejected)?;
        let mask = mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| ExecError::internal("filter predicate is not boolean"))?;
        if mask.null_count() == 0 && mask.true_count() == chunk.num_rows() {
            out.push(chunk);
        } else {
            out.push(chunk.filter(mask)?);
        }
        Ok(())
    }
}
