//! The `sqlstate` plugin: labels a failure with its SQLSTATE, the name of
//! the SQLSTATE class (as in PostgreSQL's appendix A) and whether a retry
//! can help — handy for grouping failures in dashboards.

use weir_executor::failure::{FailureContext, FailureEnricher, Labels};

pub struct SqlstateEnricher {
    name: String,
}

impl SqlstateEnricher {
    pub fn new(name: &str) -> Self {
        SqlstateEnricher {
            name: name.to_string(),
        }
    }
}

fn class_name(sqlstate: &str) -> &'static str {
    match sqlstate.get(..2).unwrap_or("") {
        "08" => "connection_exception",
        "0A" => "feature_not_supported",
        "22" => "data_exception",
        "23" => "integrity_constraint_violation",
        "40" => "transaction_rollback",
        "42" => "syntax_error_or_access_rule_violation",
        "53" => "insufficient_resources",
        "54" => "program_limit_exceeded",
        "57" => "operator_intervention",
        "58" => "system_error",
        "P0" => "plpgsql_error",
        "XX" => "internal_error",
        _ => "other",
    }
}

impl FailureEnricher for SqlstateEnricher {
    fn name(&self) -> &str {
        &self.name
    }

    fn output_keys(&self) -> Vec<String> {
        vec![
            "sqlstate".into(),
            "sqlstate.class".into(),
            "retryable".into(),
        ]
    }

    fn definition(&self) -> String {
        "plugin sqlstate: SQLSTATE, its class name, and whether a retry can help".into()
    }

    fn enrich(&self, f: &FailureContext) -> Result<Labels, String> {
        let mut l = Labels::new();
        l.insert("sqlstate".into(), f.sqlstate.clone());
        l.insert("sqlstate.class".into(), class_name(&f.sqlstate).to_string());
        l.insert("retryable".into(), f.retryable.to_string());
        Ok(l)
    }
}
