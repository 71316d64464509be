//! Joins that yield: a physical optimizer rule for ad hoc queries.
//!
//! DataFusion's operators run on the server's tokio runtime and give it
//! back only when they wait for input; its leaves (scans, generators)
//! count each batch against tokio's scheduling budget, so a query yields
//! every so many input batches. A join can turn one input batch into
//! millions of output rows without asking for input again (a nested loop
//! join of 8192 probe rows against a million buffered rows): such a query
//! kept both worker threads of a 2-core machine for minutes, and with them
//! every session, the cancel request meant to stop it included.
//! [`JoinsYield`] puts DataFusion's `CooperativeExec` above every join, so
//! each batch a join emits counts against the budget too and the task
//! yields at least every 128 of them; a cancel request then stops the
//! query within a few batches.
//!
//! A join whose filter keeps nothing emits no batches while it works
//! through one probe batch; it still yields only between probe batches.

use std::sync::Arc;

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coop::CooperativeExec;
use datafusion::physical_plan::joins::{
    CrossJoinExec, HashJoinExec, NestedLoopJoinExec, PiecewiseMergeJoinExec, SortMergeJoinExec,
    SymmetricHashJoinExec,
};
use datafusion::physical_plan::unnest::UnnestExec;
use datafusion::physical_plan::ExecutionPlan;

/// Wraps every join (and unnest) of a physical plan in `CooperativeExec`.
#[derive(Debug, Default)]
pub struct JoinsYield;

/// Whether `plan` can emit many batches per input batch.
fn multiplies_rows(plan: &dyn ExecutionPlan) -> bool {
    plan.is::<NestedLoopJoinExec>()
        || plan.is::<CrossJoinExec>()
        || plan.is::<HashJoinExec>()
        || plan.is::<SortMergeJoinExec>()
        || plan.is::<SymmetricHashJoinExec>()
        || plan.is::<PiecewiseMergeJoinExec>()
        || plan.is::<UnnestExec>()
}

impl PhysicalOptimizerRule for JoinsYield {
    fn name(&self) -> &str {
        "weir_joins_yield"
    }

    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        plan.transform_up(|node| {
            if !multiplies_rows(node.as_ref()) {
                return Ok(Transformed::no(node));
            }
            let wrapped: Arc<dyn ExecutionPlan> = Arc::new(CooperativeExec::new(node));
            Ok(Transformed::yes(wrapped))
        })
        .map(|t| t.data)
    }

    fn schema_check(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::session_state::SessionStateBuilder;
    use datafusion::physical_plan::displayable;
    use datafusion::prelude::{SessionConfig, SessionContext};

    #[test]
    fn joins_are_wrapped() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let state = SessionStateBuilder::new()
            .with_config(SessionConfig::new())
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(JoinsYield))
            .build();
        let ctx = SessionContext::new_with_state(state);
        let plan = rt
            .block_on(async {
                ctx.sql(
                    "SELECT count(*) FROM generate_series(1, 10) AS a(x), \
                     generate_series(1, 10) AS b(y) WHERE a.x % 7 <> b.y % 5",
                )
                .await?
                .create_physical_plan()
                .await
            })
            .unwrap();
        let text = displayable(plan.as_ref()).indent(true).to_string();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        let join = lines
            .iter()
            .position(|l| l.starts_with("NestedLoopJoinExec"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(lines[join - 1].starts_with("CooperativeExec"), "{text}");
    }
}
