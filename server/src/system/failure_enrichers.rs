//! `system.failure_enrichers`: the enrichers every failure passes through
//! (built-in, plugins from the config file, SQL rules), with how often
//! each ran, labelled a failure, or was skipped for an error or timeout.

use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::Result;
use weir_executor::failure::{EnricherInfo, Enrichers};

use super::{Columns, SystemTable};

pub struct FailureEnrichers {
    enrichers: Arc<Enrichers>,
}

impl FailureEnrichers {
    pub fn new(enrichers: Arc<Enrichers>) -> Self {
        FailureEnrichers { enrichers }
    }
}

fn batch(rows: &[EnricherInfo]) -> Result<RecordBatch> {
    let f = |g: &dyn Fn(&EnricherInfo) -> Option<String>| rows.iter().map(g).collect::<Vec<_>>();
    Columns::new()
        .text("name", f(&|r| Some(r.name.clone())))
        .text("kind", f(&|r| Some(r.kind.to_string())))
        .text("definition", f(&|r| Some(r.definition.clone())))
        .text("output_keys", f(&|r| Some(r.output_keys.join(", "))))
        .int(
            "invocations",
            rows.iter().map(|r| Some(r.invocations as i64)),
        )
        .int("matched", rows.iter().map(|r| Some(r.matched as i64)))
        .int("errors", rows.iter().map(|r| Some(r.errors as i64)))
        .text("last_error", f(&|r| r.last_error.clone()))
        .finish()
}

impl SystemTable for FailureEnrichers {
    fn name(&self) -> &'static str {
        "failure_enrichers"
    }

    fn schema(&self) -> SchemaRef {
        batch(&[]).expect("empty batch").schema()
    }

    fn rows(&self) -> Result<RecordBatch> {
        batch(&self.enrichers.list())
    }
}
