//! Per-connection state: session parameters and a pending COPY.

use std::collections::BTreeMap;
use std::sync::Arc;
use weir_executor::SqlState;

use weir_executor::table::Table;

use crate::copy::{CopyFormat, CopyIn};
use crate::error::{SqlError, SqlResult};

/// Every write returns once the streaming queries reflect it (as if each
/// were followed by `FLUSH`).
pub const IMPLICIT_FLUSH: &str = "implicit_flush";
/// `CREATE STREAMING QUERY` / `MATERIALIZED VIEW` return at once instead
/// of when the new query has caught up with its inputs.
pub const BACKGROUND_DDL: &str = "background_ddl";

/// Weir's name for a parameter that scripts written for other systems set
/// under their own name (RisingWave's `RW_IMPLICIT_FLUSH`).
pub fn canonical_name(name: &str) -> &str {
    match name {
        "rw_implicit_flush" => IMPLICIT_FLUSH,
        "time zone" => "timezone",
        "transaction isolation level" => "transaction_isolation",
        other => other,
    }
}

/// A boolean parameter's value as PostgreSQL reads it (`on`, `true`,
/// `yes`, `1` and their opposites); `None` for another parameter.
pub fn boolean_setting(name: &str, value: &str) -> Option<SqlResult<&'static str>> {
    if ![IMPLICIT_FLUSH, BACKGROUND_DDL].contains(&name) {
        return None;
    }
    Some(match value.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "yes" | "1" | "t" | "y" => Ok("on"),
        "off" | "false" | "no" | "0" | "f" | "n" => Ok("off"),
        _ => Err(SqlError::new(
            SqlState::INVALID_PARAMETER_VALUE,
            format!("parameter \"{name}\" requires a Boolean value"),
        )),
    })
}

/// A COPY FROM STDIN waiting for its input: the table it writes and the
/// input parsed so far.
pub struct PendingCopy {
    pub table: Arc<Table>,
    pub input: CopyIn,
}

impl PendingCopy {
    /// `columns`: the target column index of each input field.
    pub fn new(table: Arc<Table>, columns: Vec<usize>, format: CopyFormat) -> Self {
        let input = CopyIn::new(&table.desc.name, table.schema(), columns, format);
        PendingCopy { table, input }
    }
}

pub struct Session {
    pub vars: BTreeMap<String, String>,
    pub copy: Option<PendingCopy>,
    /// Warnings for the client, sent before the current statement's result.
    pub notices: Vec<SqlError>,
}

impl Session {
    /// Whether a boolean parameter is on.
    pub fn flag(&self, name: &str) -> bool {
        self.vars.get(name).is_some_and(|v| v == "on")
    }
}

impl Default for Session {
    fn default() -> Self {
        let mut vars = BTreeMap::new();
        for (k, v) in [
            ("application_name", ""),
            (BACKGROUND_DDL, "off"),
            (IMPLICIT_FLUSH, "off"),
            ("client_encoding", "UTF8"),
            ("datestyle", "ISO, MDY"),
            ("default_transaction_isolation", "read committed"),
            ("extra_float_digits", "1"),
            ("integer_datetimes", "on"),
            ("intervalstyle", "postgres"),
            ("search_path", "public"),
            ("server_encoding", "UTF8"),
            ("server_version", crate::SERVER_VERSION),
            ("standard_conforming_strings", "on"),
            ("statement_timeout", "0"),
            ("timezone", "UTC"),
            ("transaction_isolation", "read committed"),
        ] {
            vars.insert(k.to_string(), v.to_string());
        }
        Session {
            vars,
            copy: None,
            notices: Vec::new(),
        }
    }
}
