//! Per-connection state: session parameters and a pending COPY.

use std::collections::BTreeMap;
use std::sync::Arc;

use weir_executor::table::Table;

use crate::copy::CopyFormat;

pub struct PendingCopy {
    pub table: Arc<Table>,
    /// Target column index for each input field.
    pub columns: Vec<usize>,
    pub format: CopyFormat,
    pub data: Vec<u8>,
}

pub struct Session {
    pub vars: BTreeMap<String, String>,
    pub copy: Option<PendingCopy>,
}

impl Default for Session {
    fn default() -> Self {
        let mut vars = BTreeMap::new();
        for (k, v) in [
            ("application_name", ""),
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
        Session { vars, copy: None }
    }
}
