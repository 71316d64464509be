//! Enricher rules declared in SQL: `CREATE FAILURE ENRICHER name WHEN
//! predicate SET LABELS (...)`. The predicate is a SQL expression over the
//! failure's own columns (those of [`FailureContext::schema`]: query,
//! operator, subtask, region, error_class, message, root_cause, domain,
//! sqlstate, retryable), compiled once with DataFusion and evaluated on a
//! one-row batch per failure.

use std::sync::Arc;
use weir_executor::SqlState;

use datafusion::arrow::array::{Array, BooleanArray};
use datafusion::common::DFSchema;
use datafusion::physical_expr::PhysicalExpr;
use datafusion::prelude::SessionContext;
use serde::{Deserialize, Serialize};
use weir_executor::failure::{FailureContext, FailureEnricher, Labels};

use crate::error::{SqlError, SqlResult};

/// A rule as stored in the catalog.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RuleMeta {
    pub name: String,
    pub predicate: String,
    pub labels: Labels,
}

pub struct SqlRule {
    meta: RuleMeta,
    predicate: Arc<dyn PhysicalExpr>,
}

impl std::fmt::Debug for SqlRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SqlRule({})", self.meta.name)
    }
}

impl SqlRule {
    /// Compiles a rule; a predicate that does not parse, names unknown
    /// columns or is not boolean is refused.
    pub fn compile(ctx: &SessionContext, meta: RuleMeta) -> SqlResult<SqlRule> {
        let schema = FailureContext::schema();
        let df = DFSchema::try_from(schema.as_ref().clone())?;
        let expr = ctx.parse_sql_expr(&meta.predicate, &df).map_err(|e| {
            SqlError::from(e).with_hint(
                "The condition may use: query, operator, subtask, region, error_class, message, root_cause, domain, sqlstate, retryable.",
            )
        })?;
        let predicate = ctx.create_physical_expr(expr, &df).map_err(|e| {
            SqlError::from(e).with_hint(
                "The condition may use: query, operator, subtask, region, error_class, message, root_cause, domain, sqlstate, retryable.",
            )
        })?;
        let t = predicate.data_type(&schema)?;
        if t != datafusion::arrow::datatypes::DataType::Boolean {
            return Err(SqlError::new(
                SqlState::DATATYPE_MISMATCH,
                format!(
                    "argument of WHEN must be type boolean, not type {}",
                    crate::types::sql_type_name(&t)
                ),
            ));
        }
        Ok(SqlRule { meta, predicate })
    }

    pub fn meta(&self) -> &RuleMeta {
        &self.meta
    }
}

impl FailureEnricher for SqlRule {
    fn name(&self) -> &str {
        &self.meta.name
    }

    fn output_keys(&self) -> Vec<String> {
        self.meta.labels.keys().cloned().collect()
    }

    fn kind(&self) -> &'static str {
        "sql"
    }

    fn definition(&self) -> String {
        let labels: Vec<String> = self
            .meta
            .labels
            .iter()
            .map(|(k, v)| format!("'{k}' = '{}'", v.replace('\'', "''")))
            .collect();
        format!(
            "WHEN {} SET LABELS ({})",
            self.meta.predicate,
            labels.join(", ")
        )
    }

    fn enrich(&self, f: &FailureContext) -> Result<Labels, String> {
        let batch = f.to_batch();
        let value = self
            .predicate
            .evaluate(&batch)
            .and_then(|v| v.into_array(1))
            .map_err(|e| e.to_string())?;
        let hit = value
            .as_any()
            .downcast_ref::<BooleanArray>()
            .is_some_and(|b| b.is_valid(0) && b.value(0));
        Ok(if hit {
            self.meta.labels.clone()
        } else {
            Labels::new()
        })
    }
}
