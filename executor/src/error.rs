//! Executor errors. Each error knows its domain (whose fault it is), whether
//! a retry can help, and the SQLSTATE a client should see.

use datafusion::error::DataFusionError;
use thiserror::Error;
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
        sqlstate: &'static str,
        message: String,
        hint: Option<String>,
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

/// The `&'static str` for a SQLSTATE read back from storage.
pub fn static_sqlstate(code: &str) -> &'static str {
    const KNOWN: &[&str] = &[
        "22000", "22003", "22012", "22023", "22P02", "22P04", "23502", "23505", "42601", "42703",
        "42804", "42883", "53000", "57014", "58000", "58030", "P0001", "0A000",
    ];
    KNOWN
        .iter()
        .find(|k| **k == code)
        .copied()
        .unwrap_or("XX000")
}

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
    pub fn user(sqlstate: &'static str, message: impl Into<String>) -> Self {
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
    pub fn error_class(&self) -> &'static str {
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
            ExecError::Storage(_) => return "storage",
            ExecError::Checkpoint(_) => return "checkpoint",
            ExecError::Canceled => return "canceled",
            ExecError::Internal(m) if m.starts_with("subtask panicked") => return "panic",
            ExecError::Internal(_) => return "internal",
            _ => {}
        }
        match self.sqlstate() {
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

    pub fn sqlstate(&self) -> &'static str {
        if let Some(e) = self.carried() {
            return e.sqlstate();
        }
        if let ExecError::Rejected(e) = self {
            return e.sqlstate();
        }
        if self.injected().is_some() {
            // PostgreSQL's raise_exception.
            return "P0001";
        }
        match self {
            ExecError::User { sqlstate, .. } => sqlstate,
            ExecError::DataFusion(e) => datafusion_sqlstate(e),
            ExecError::Arrow(e) => arrow_sqlstate(e).unwrap_or("XX000"),
            ExecError::Storage(_) => "58030",
            ExecError::Internal(_) => "XX000",
            ExecError::Checkpoint(_) => "58000",
            ExecError::Canceled => "57014",
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

fn arrow_sqlstate(e: &datafusion::arrow::error::ArrowError) -> Option<&'static str> {
    use datafusion::arrow::error::ArrowError as A;
    match e {
        A::DivideByZero => Some("22012"),
        A::CastError(_) | A::ParseError(_) => Some("22P02"),
        A::ArithmeticOverflow(_) => Some("22003"),
        A::ComputeError(m) if m.contains("overflow") => Some("22003"),
        A::InvalidArgumentError(_) => Some("22023"),
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
pub fn datafusion_sqlstate(e: &DataFusionError) -> &'static str {
    match root(e) {
        DataFusionError::ArrowError(a, _) => arrow_sqlstate(a).unwrap_or("XX000"),
        DataFusionError::SQL(..) => "42601",
        DataFusionError::SchemaError(s, _) => match **s {
            datafusion::common::SchemaError::FieldNotFound { .. } => "42703",
            datafusion::common::SchemaError::AmbiguousReference { .. } => "42702",
            datafusion::common::SchemaError::DuplicateQualifiedField { .. }
            | datafusion::common::SchemaError::DuplicateUnqualifiedField { .. } => "42701",
        },
        DataFusionError::Plan(m) => plan_sqlstate(m),
        DataFusionError::NotImplemented(_) => "0A000",
        DataFusionError::Execution(m) => {
            let l = m.to_ascii_lowercase();
            if l.starts_with("invalid argument for ") {
                "22023"
            } else if l.contains("divide by zero") || l.contains("division by zero") {
                "22012"
            } else if l.contains("overflow") {
                "22003"
            } else if l.contains("cast") || l.contains("invalid input") || l.contains("parse") {
                "22P02"
            } else {
                "22000"
            }
        }
        DataFusionError::ResourcesExhausted(_) => "53000",
        _ => "XX000",
    }
}

fn plan_sqlstate(m: &str) -> &'static str {
    let l = m.to_ascii_lowercase();
    // A function called with the wrong number or types of arguments, and
    // an argument value a function refuses (`server/src/functions`).
    if l.contains("no function matches") {
        "42883"
    } else if l.starts_with("invalid argument for ") {
        "22023"
    } else if l.contains("table") && l.contains("not found") {
        "42P01"
    } else if l.contains("no field named") || l.contains("column") && l.contains("not found") {
        "42703"
    } else if l.contains("function") && (l.contains("invalid") || l.contains("not found")) {
        "42883"
    } else if l.contains("coerc") || l.contains("cannot") && l.contains("type") {
        "42804"
    } else {
        "42P10"
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
        assert_eq!(e.sqlstate(), "22P02");
        assert_eq!(e.domain(), ErrorDomain::User);
    }
}
