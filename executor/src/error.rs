//! Executor errors. Each error knows its domain (whose fault it is), whether
//! a retry can help, and the SQLSTATE a client should see.

use datafusion::error::DataFusionError;
use thiserror::Error;
pub use tokio_postgres::error::SqlState;
use weir_storage::StorageError;

/// Whose fault an error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorDomain {
    /// Bad data or a failing expression: retrying the same input fails again.
    User,
    /// A bug in Weir or exhausted resources.
    System,
    /// A source, sink or the disk.
    External,
}

impl ErrorDomain {
    /// The domain named by [`ErrorDomain::as_str`] (as stored); an unknown
    /// name is a system error.
    pub fn parse(name: &str) -> ErrorDomain {
        match name {
            "user" => ErrorDomain::User,
            "external" => ErrorDomain::External,
            _ => ErrorDomain::System,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorDomain::User => "user",
            ErrorDomain::System => "system",
            ErrorDomain::External => "external",
        }
    }
}

#[derive(Debug, Error)]
pub enum ExecError {
    /// An error the user caused, with its SQLSTATE.
    #[error("{message}")]
    User {
        sqlstate: SqlState,
        message: String,
        hint: Option<String>,
    },
    /// A failure recorded before a restart of the server (a FAILED query's
    /// last error): what was stored of it, unchanged.
    #[error("{message}")]
    Recorded {
        sqlstate: SqlState,
        message: String,
        domain: ErrorDomain,
        error_class: String,
    },
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
    #[error("{0}")]
    Arrow(#[from] datafusion::arrow::error::ArrowError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// A broken invariant inside Weir.
    #[error("internal error: {0}")]
    Internal(String),
    /// Checkpointing failed beyond what the query tolerates.
    #[error("{0}")]
    Checkpoint(String),
    /// The query was stopped (dropped or server shutdown).
    #[error("streaming query was canceled")]
    Canceled,
    /// An operator refused a chunk before changing anything, because an
    /// expression failed on one of its rows: the chunk may be retried in
    /// parts to find the bad record (`on_error = 'skip' | 'dead_letter'`).
    /// Everything else about the error is its inner error's.
    #[error("{0}")]
    Rejected(Box<ExecError>),
}

pub type ExecResult<T> = Result<T, ExecError>;

/// A failure caused on purpose (`fail_if(...)`), for tests and drills.
/// A transient one stands for an infrastructure hiccup: it is external and
/// retryable; a permanent one is a user error.
#[derive(Debug, Clone)]
pub struct InjectedFailure {
    pub message: String,
    pub transient: bool,
}

impl std::fmt::Display for InjectedFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InjectedFailure {}

impl ExecError {
    pub fn user(sqlstate: SqlState, message: impl Into<String>) -> Self {
        ExecError::User {
            sqlstate,
            message: message.into(),
            hint: None,
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        ExecError::Internal(message.into())
    }

    /// Marks an error raised before the operator changed anything.
    pub fn rejected(e: impl Into<ExecError>) -> Self {
        match e.into() {
            r @ ExecError::Rejected(_) => r,
            e => ExecError::Rejected(Box::new(e)),
        }
    }

    /// The error itself, without a [`ExecError::Rejected`] wrapper.
    pub fn inner(&self) -> &ExecError {
        match self {
            ExecError::Rejected(e) => e.inner(),
            e => e,
        }
    }

    /// The Weir error a DataFusion error carries (`External`), as when a
    /// scan inside an ad hoc query fails: it keeps its own SQLSTATE,
    /// message and domain.
    fn carried(&self) -> Option<&ExecError> {
        match self {
            ExecError::DataFusion(e) => match root(e) {
                DataFusionError::External(b) => b.downcast_ref::<ExecError>(),
                _ => None,
            },
            _ => None,
        }
    }

    /// The failure injected with `fail_if`, if this is one.
    pub fn injected(&self) -> Option<&InjectedFailure> {
        if let ExecError::Rejected(e) = self {
            return e.injected();
        }
        match self {
            ExecError::DataFusion(e) => match root(e) {
                DataFusionError::External(b) => b.downcast_ref::<InjectedFailure>(),
                _ => None,
            },
            _ => None,
        }
    }

    /// A short name for the kind of error, e.g. `division_by_zero`, `cast`,
    /// `storage`: what `system.exceptions.error_class` shows.
    pub fn error_class(&self) -> &str {
        if let Some(e) = self.carried() {
            return e.error_class();
        }
        if let ExecError::Rejected(e) = self {
            return e.error_class();
        }
        if self.injected().is_some() {
            return "injected";
        }
        match self {
            ExecError::Recorded { error_class, .. } => return error_class,
            ExecError::Storage(e) if e.is_disk_full() => return "disk_full",
            ExecError::Storage(_) => return "storage",
            ExecError::Checkpoint(_) => return "checkpoint",
            ExecError::Canceled => return "canceled",
            ExecError::Internal(m) if m.starts_with("subtask panicked") => return "panic",
            ExecError::Internal(_) => return "internal",
            _ => {}
        }
        match self.sqlstate().code() {
            "22012" => "division_by_zero",
            "22P02" => "cast",
            "22003" => "numeric_overflow",
            "22023" => "invalid_argument",
            s if s.starts_with("23") => "constraint",
            s if s.starts_with("22") => "data",
            s if s.starts_with("53") => "resources",
            s if s.starts_with("58") => "io",
            s if s.starts_with("42") || s.starts_with("0A") => "plan",
            _ => "execution",
        }
    }

    /// The innermost error of the chain, as text.
    pub fn root_cause(&self) -> String {
        if let ExecError::Rejected(e) = self {
            return e.root_cause();
        }
        if let Some(i) = self.injected() {
            return i.message.clone();
        }
        if let ExecError::DataFusion(_) | ExecError::Arrow(_) = self {
            return self.message();
        }
        let mut cur: &dyn std::error::Error = self;
        let mut depth = 0;
        while let Some(next) = cur.source() {
            cur = next;
            depth += 1;
        }
        if depth == 0 {
            self.message()
        } else {
            lower_first(&cur.to_string())
        }
    }

    pub fn domain(&self) -> ErrorDomain {
        if let Some(e) = self.carried() {
            return e.domain();
        }
        if let ExecError::Rejected(e) = self {
            return e.domain();
        }
        if let Some(i) = self.injected() {
            return if i.transient {
                ErrorDomain::External
            } else {
                ErrorDomain::User
            };
        }
        match self {
            ExecError::User { .. } => ErrorDomain::User,
            ExecError::Recorded { domain, .. } => *domain,
            ExecError::DataFusion(e) => datafusion_domain(e),
            ExecError::Arrow(e) => {
                arrow_sqlstate(e).map_or(ErrorDomain::System, |_| ErrorDomain::User)
            }
            ExecError::Storage(_) => ErrorDomain::External,
            ExecError::Internal(_) | ExecError::Checkpoint(_) | ExecError::Canceled => {
                ErrorDomain::System
            }
            ExecError::Rejected(e) => e.domain(),
        }
    }

    /// Whether trying again (restarting) may succeed.
    pub fn retryable(&self) -> bool {
        !matches!(self.domain(), ErrorDomain::User)
    }

    pub fn sqlstate(&self) -> SqlState {
        if let Some(e) = self.carried() {
            return e.sqlstate();
        }
        if let ExecError::Rejected(e) = self {
            return e.sqlstate();
        }
        if self.injected().is_some() {
            return SqlState::RAISE_EXCEPTION;
        }
        match self {
            ExecError::User { sqlstate, .. } | ExecError::Recorded { sqlstate, .. } => {
                sqlstate.clone()
            }
            ExecError::DataFusion(e) => datafusion_sqlstate(e),
            ExecError::Arrow(e) => arrow_sqlstate(e).unwrap_or(SqlState::INTERNAL_ERROR),
            ExecError::Storage(e) if e.is_disk_full() => SqlState::DISK_FULL,
            ExecError::Storage(_) => SqlState::IO_ERROR,
            ExecError::Internal(_) => SqlState::INTERNAL_ERROR,
            ExecError::Checkpoint(_) => SqlState::SYSTEM_ERROR,
            ExecError::Canceled => SqlState::QUERY_CANCELED,
            ExecError::Rejected(e) => e.sqlstate(),
        }
    }

    /// The message without DataFusion's "Arrow error: " style prefixes.
    pub fn message(&self) -> String {
        if let Some(e) = self.carried() {
            return e.message();
        }
        if let ExecError::Rejected(e) = self {
            return e.message();
        }
        if let Some(i) = self.injected() {
            return i.message.clone();
        }
        match self {
            ExecError::DataFusion(e) => clean_datafusion_message(e),
            ExecError::Arrow(e) => clean_arrow_message(e),
            other => other.to_string(),
        }
    }

    pub fn hint(&self) -> Option<&str> {
        if let Some(e) = self.carried() {
            return e.hint();
        }
        if let ExecError::Rejected(e) = self {
            return e.hint();
        }
        match self {
            ExecError::User { hint, .. } => hint.as_deref(),
            _ => None,
        }
    }
}

fn arrow_sqlstate(e: &datafusion::arrow::error::ArrowError) -> Option<SqlState> {
    use datafusion::arrow::error::ArrowError as A;
    match e {
        A::DivideByZero => Some(SqlState::DIVISION_BY_ZERO),
        A::CastError(_) | A::ParseError(_) => Some(SqlState::INVALID_TEXT_REPRESENTATION),
        A::ArithmeticOverflow(_) => Some(SqlState::NUMERIC_VALUE_OUT_OF_RANGE),
        A::ComputeError(m) if m.contains("overflow") => Some(SqlState::NUMERIC_VALUE_OUT_OF_RANGE),
        A::InvalidArgumentError(_) => Some(SqlState::INVALID_PARAMETER_VALUE),
        _ => None,
    }
}

fn clean_arrow_message(e: &datafusion::arrow::error::ArrowError) -> String {
    use datafusion::arrow::error::ArrowError as A;
    match e {
        A::DivideByZero => "division by zero".into(),
        A::CastError(m) | A::ParseError(m) => invalid_input(m).unwrap_or_else(|| lower_first(m)),
        A::ArithmeticOverflow(m) => lower_first(m),
        A::ComputeError(m) if m.contains("overflow") => lower_first(m),
        other => lower_first(&other.to_string()),
    }
}

fn root(e: &DataFusionError) -> &DataFusionError {
    match e {
        DataFusionError::Context(_, inner) => root(inner),
        DataFusionError::Shared(inner) => root(inner),
        DataFusionError::Diagnostic(_, inner) => root(inner),
        other => other,
    }
}

/// SQLSTATE for a DataFusion error.
pub fn datafusion_sqlstate(e: &DataFusionError) -> SqlState {
    match root(e) {
        DataFusionError::ArrowError(a, _) => arrow_sqlstate(a).unwrap_or(SqlState::INTERNAL_ERROR),
        DataFusionError::SQL(..) => SqlState::SYNTAX_ERROR,
        DataFusionError::SchemaError(s, _) => match **s {
            datafusion::common::SchemaError::FieldNotFound { .. } => SqlState::UNDEFINED_COLUMN,
            datafusion::common::SchemaError::AmbiguousReference { .. } => {
                SqlState::AMBIGUOUS_COLUMN
            }
            datafusion::common::SchemaError::DuplicateQualifiedField { .. }
            | datafusion::common::SchemaError::DuplicateUnqualifiedField { .. } => {
                SqlState::DUPLICATE_COLUMN
            }
        },
        DataFusionError::Plan(m) => plan_sqlstate(m),
        DataFusionError::NotImplemented(_) => SqlState::FEATURE_NOT_SUPPORTED,
        DataFusionError::Execution(m) => {
            let l = m.to_ascii_lowercase();
            if l.starts_with("invalid argument for ") {
                SqlState::INVALID_PARAMETER_VALUE
            } else if l.contains("divide by zero") || l.contains("division by zero") {
                SqlState::DIVISION_BY_ZERO
            } else if l.contains("overflow") {
                SqlState::NUMERIC_VALUE_OUT_OF_RANGE
            } else if l.contains("cast") || l.contains("invalid input") || l.contains("parse") {
                SqlState::INVALID_TEXT_REPRESENTATION
            } else {
                SqlState::DATA_EXCEPTION
            }
        }
        DataFusionError::ResourcesExhausted(_) => SqlState::INSUFFICIENT_RESOURCES,
        _ => SqlState::INTERNAL_ERROR,
    }
}

fn plan_sqlstate(m: &str) -> SqlState {
    let l = m.to_ascii_lowercase();
    // A function called with the wrong number or types of arguments, and
    // an argument value a function refuses (`server/src/functions`).
    if l.contains("no function matches") {
        SqlState::UNDEFINED_FUNCTION
    } else if l.starts_with("invalid argument for ") {
        SqlState::INVALID_PARAMETER_VALUE
    } else if l.contains("table") && l.contains("not found") {
        SqlState::UNDEFINED_TABLE
    } else if l.contains("no field named") || l.contains("column") && l.contains("not found") {
        SqlState::UNDEFINED_COLUMN
    } else if l.contains("function") && (l.contains("invalid") || l.contains("not found")) {
        SqlState::UNDEFINED_FUNCTION
    } else if l.contains("coerc") || l.contains("cannot") && l.contains("type") {
        SqlState::DATATYPE_MISMATCH
    } else {
        SqlState::INVALID_COLUMN_REFERENCE
    }
}

fn datafusion_domain(e: &DataFusionError) -> ErrorDomain {
    match root(e) {
        DataFusionError::ArrowError(a, _) if arrow_sqlstate(a).is_some() => ErrorDomain::User,
        DataFusionError::Execution(_)
        | DataFusionError::Plan(_)
        | DataFusionError::SQL(..)
        | DataFusionError::SchemaError(..)
        | DataFusionError::NotImplemented(_) => ErrorDomain::User,
        DataFusionError::IoError(_) | DataFusionError::ObjectStore(_) => ErrorDomain::External,
        _ => ErrorDomain::System,
    }
}

fn clean_datafusion_message(e: &DataFusionError) -> String {
    match root(e) {
        DataFusionError::ArrowError(a, _) => clean_arrow_message(a),
        DataFusionError::Plan(m)
        | DataFusionError::Execution(m)
        | DataFusionError::NotImplemented(m) => lower_first(m),
        DataFusionError::SQL(p, _) => lower_first(&p.to_string()),
        DataFusionError::SchemaError(se, _) => match se.as_ref() {
            datafusion::common::SchemaError::FieldNotFound { field, .. } => match &field.relation {
                Some(rel) => format!("column {}.{} does not exist", rel.table(), field.name),
                None => format!("column \"{}\" does not exist", field.name),
            },
            other => lower_first(&other.to_string()),
        },
        other => lower_first(&other.strip_backtrace()),
    }
}

fn lower_first(s: &str) -> String {
    let s = s.trim();
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_uppercase() && !chars.clone().next().is_some_and(|n| n.is_uppercase()) => {
            c.to_lowercase().chain(chars).collect()
        }
        _ => s.to_string(),
    }
}

/// "Cannot cast string 'abc' to value of Int32 type" → PostgreSQL's
/// `invalid input syntax for type integer: "abc"`.
fn invalid_input(m: &str) -> Option<String> {
    let rest = m.strip_prefix("Cannot cast string '")?;
    let (value, tail) = rest.rsplit_once("' to value of ")?;
    let arrow = tail.trim_end_matches(" type").trim();
    let pg = match arrow {
        "Int16" => "smallint",
        "Int32" => "integer",
        "Int64" => "bigint",
        "Float32" => "real",
        "Float64" => "double precision",
        "Boolean" => "boolean",
        "Date32" => "date",
        a if a.starts_with("Decimal") => "numeric",
        a if a.starts_with("Timestamp") => "timestamp",
        a if a.starts_with("Interval") => "interval",
        other => other,
    };
    Some(format!("invalid input syntax for type {pg}: \"{value}\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cast_errors_read_like_postgres() {
        let e = ExecError::Arrow(datafusion::arrow::error::ArrowError::CastError(
            "Cannot cast string 'abc' to value of Int32 type".into(),
        ));
        assert_eq!(
            e.message(),
            "invalid input syntax for type integer: \"abc\""
        );
        assert_eq!(e.sqlstate(), SqlState::INVALID_TEXT_REPRESENTATION);
        assert_eq!(e.domain(), ErrorDomain::User);
    }
}
