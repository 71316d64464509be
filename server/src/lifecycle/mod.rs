//! What the catalog keeps about the life of a streaming query besides its
//! definition: its versions, its savepoints, the operations run on it, and
//! whether it was stopped. Each kind is a JSON value under its own key
//! prefix in the catalog (see each file); `engine/lifecycle.rs` runs the
//! statements that change them.

pub mod operations;
pub mod savepoints;
pub mod versions;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use weir_storage::Store;

use crate::error::SqlResult;

/// Every catalog value under `prefix`, decoded (unreadable ones skipped
/// with a warning), in key order.
pub fn list<T: DeserializeOwned>(store: &Store, prefix: &str) -> SqlResult<Vec<T>> {
    let mut out = Vec::new();
    for (key, value) in store.list_catalog()? {
        if !key.starts_with(prefix) {
            continue;
        }
        match serde_json::from_slice(&value) {
            Ok(v) => out.push(v),
            Err(e) => tracing::warn!(%key, error = %e, "unreadable catalog entry skipped"),
        }
    }
    Ok(out)
}

/// A query stopped by `STOP`: it stays stopped across server restarts
/// until `START`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stopped {
    pub stopped_at_ms: i64,
    /// The savepoint taken when it stopped (`None`: `STOP ... FORCE`).
    pub savepoint: Option<String>,
}

pub fn stopped_key(query: &str) -> String {
    format!("stopped/{query}")
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("json")
}
