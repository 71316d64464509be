//! The error a client sees: SQLSTATE, a lowercase message, detail, hint
//! and context.

use weir_executor::{ExecError, SqlState};
use weir_planner::PlanError;

#[derive(Debug, Clone)]
pub struct SqlError {
    pub sqlstate: SqlState,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
    /// Where it happened (PostgreSQL's CONTEXT), e.g. `COPY t, line 3`.
    pub context: Option<String>,
}

pub type SqlResult<T> = Result<T, SqlError>;

impl SqlError {
    pub fn new(sqlstate: SqlState, message: impl Into<String>) -> Self {
        SqlError {
            sqlstate,
            message: message.into(),
            detail: None,
            hint: None,
            context: None,
        }
    }

    pub fn with_context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    pub fn syntax(message: impl Into<String>) -> Self {
        SqlError::new(SqlState::SYNTAX_ERROR, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        SqlError::new(SqlState::FEATURE_NOT_SUPPORTED, message)
    }

    pub fn undefined_table(name: &str) -> Self {
        SqlError::new(
            SqlState::UNDEFINED_TABLE,
            format!("relation \"{name}\" does not exist"),
        )
    }

    pub fn internal(message: impl Into<String>) -> Self {
        SqlError::new(SqlState::INTERNAL_ERROR, message)
    }
}

impl std::fmt::Display for SqlError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.message, self.sqlstate.code())
    }
}

impl From<ExecError> for SqlError {
    fn from(e: ExecError) -> Self {
        let mut err = SqlError::new(e.sqlstate(), rewrite_message(&e.message()));
        if let Some(h) = e.hint() {
            err.hint = Some(h.to_string());
        }
        err
    }
}

impl From<PlanError> for SqlError {
    fn from(e: PlanError) -> Self {
        match e {
            PlanError::Unsupported(m) => SqlError::unsupported(m).with_hint(
                "Run the query as an ad hoc SELECT, or rewrite it without this construct.",
            ),
            PlanError::Exec(e) => e.into(),
        }
    }
}

impl From<datafusion::error::DataFusionError> for SqlError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        ExecError::DataFusion(e).into()
    }
}

impl From<weir_storage::StorageError> for SqlError {
    fn from(e: weir_storage::StorageError) -> Self {
        ExecError::Storage(e).into()
    }
}

/// Turns DataFusion's phrasing into PostgreSQL's where users will look for it.
fn rewrite_message(m: &str) -> String {
    // "table 'datafusion.public.nope' not found" -> relation "nope" does not exist
    let lower = m.to_ascii_lowercase();
    if lower.starts_with("table '") && lower.contains("not found") {
        let name = m
            .split('\'')
            .nth(1)
            .unwrap_or("")
            .rsplit('.')
            .next()
            .unwrap_or("");
        return format!("relation \"{name}\" does not exist");
    }
    if lower.contains("divide by zero") || lower.contains("division by zero") {
        return "division by zero".into();
    }
    let m = m
        .trim_start_matches("Error during planning: ")
        .trim_start_matches("error during planning: ")
        .trim_start_matches("Execution error: ")
        .trim_start_matches("execution error: ")
        .trim_start_matches("This feature is not implemented: ")
        .trim_start_matches("this feature is not implemented: ")
        .trim_start_matches("Arrow error: ")
        .trim_start_matches("arrow error: ");
    let mut chars = m.chars();
    match chars.next() {
        Some(c) if c.is_uppercase() && !chars.clone().next().is_some_and(|n| n.is_uppercase()) => {
            c.to_lowercase().chain(chars).collect()
        }
        _ => m.to_string(),
    }
}
