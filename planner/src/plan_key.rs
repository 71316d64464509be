//! Comparing sub-plans for reuse.
//!
//! DataFusion's common-subexpression pass names what it factors out
//! `__common_expr_<n>`, numbered across the whole query: the same window
//! count written twice (Nexmark q5) becomes two sub-plans that differ only
//! in that number. [`plan_key`] renames those columns by their first
//! appearance within the sub-plan, so that such sub-plans compare equal and
//! are planned once.

use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{Column, HashMap, Result};
use datafusion::logical_expr::expr::Alias;
use datafusion::logical_expr::{Expr, LogicalPlan};

const GENERATED: &str = "__common_expr_";

/// `plan` with its generated common-expression names numbered from 1 in
/// the order they first appear (children before parents, left to right).
/// Two sub-plans with equal keys compute the same rows in the same column
/// order.
pub fn plan_key(plan: &LogicalPlan) -> Result<LogicalPlan> {
    let mut names: HashMap<String, String> = HashMap::default();
    let mut rename = |name: &str| -> Option<String> {
        if !name.starts_with(GENERATED) {
            return None;
        }
        let next = names.len() + 1;
        Some(
            names
                .entry(name.to_string())
                .or_insert_with(|| format!("__shared_expr_{next}"))
                .clone(),
        )
    };
    let renamed = plan.clone().transform_up(|node| {
        let node = node.map_expressions(|expr| {
            expr.transform_up(|e| {
                Ok(match e {
                    Expr::Column(c) => match rename(&c.name) {
                        Some(name) => Transformed::yes(Expr::Column(Column::new(c.relation, name))),
                        None => Transformed::no(Expr::Column(c)),
                    },
                    Expr::Alias(a) => match rename(&a.name) {
                        Some(name) => Transformed::yes(Expr::Alias(Alias { name, ..a })),
                        None => Transformed::no(Expr::Alias(a)),
                    },
                    other => Transformed::no(other),
                })
            })
        })?;
        // Renamed expressions change a node's schema, and a renamed
        // input changes the schema of a node above it (a filter).
        Ok(Transformed::yes(node.data.recompute_schema()?))
    })?;
    Ok(renamed.data)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::SessionContext;

    /// The two inputs of `SELECT ... UNION ALL SELECT ...` over a table
    /// `t (a, b)`, optimized.
    async fn union_halves(sql: &str) -> (LogicalPlan, LogicalPlan) {
        let ctx = SessionContext::new();
        ctx.sql("CREATE TABLE t (a BIGINT, b BIGINT) AS VALUES (1, 2)")
            .await
            .unwrap();
        let plan = ctx.sql(sql).await.unwrap().into_optimized_plan().unwrap();
        let LogicalPlan::Union(u) = &plan else {
            panic!("not a union: {plan}");
        };
        (u.inputs[0].as_ref().clone(), u.inputs[1].as_ref().clone())
    }

    #[tokio::test]
    async fn generated_names_do_not_tell_equal_sub_plans_apart() {
        // The common expression (a + b) gets a different number in each
        // half of the union.
        let (left, right) = union_halves(
            "SELECT (a + b) * 2 AS x, (a + b) * 3 AS y FROM t \
             UNION ALL SELECT (a + b) * 2 AS x, (a + b) * 3 AS y FROM t",
        )
        .await;
        assert_ne!(left, right, "the halves should differ in their names");
        assert!(format!("{left}").contains(GENERATED), "{left}");
        assert_eq!(plan_key(&left).unwrap(), plan_key(&right).unwrap());
    }

    #[tokio::test]
    async fn different_sub_plans_keep_different_keys() {
        let (left, right) = union_halves(
            "SELECT (a + b) * 2 AS x, (a + b) * 3 AS y FROM t \
             UNION ALL SELECT (a - b) * 2 AS x, (a - b) * 3 AS y FROM t",
        )
        .await;
        assert_ne!(plan_key(&left).unwrap(), plan_key(&right).unwrap());
    }
}
