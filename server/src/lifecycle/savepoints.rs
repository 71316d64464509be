//! Savepoints as the catalog lists them (`savepoint/<name>`; names are
//! unique on the server). The savepoint itself is a directory
//! (`weir_executor::checkpoint::savepoint`) under `<data>/savepoints/`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Why a savepoint was taken.
pub const MANUAL: &str = "manual";
pub const SCHEDULED: &str = "scheduled";
pub const STOP: &str = "stop";
pub const BEFORE_UPGRADE: &str = "before-upgrade";
pub const BEFORE_ROLLBACK: &str = "before-rollback";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavepointMeta {
    pub name: String,
    pub query: String,
    pub query_id: u64,
    /// The query's version when it was taken.
    pub version: u64,
    pub trigger: String,
    pub created_at_ms: i64,
    pub path: String,
    pub bytes: u64,
    /// The checkpoint it copies.
    pub checkpoint_id: u64,
    pub status: String,
}

pub fn key(name: &str) -> String {
    format!("savepoint/{name}")
}

pub const PREFIX: &str = "savepoint/";

/// The directory of a new savepoint: its name with anything but letters,
/// digits, `-`, `_` and `.` replaced, made unique.
pub fn directory(data_dir: &Path, name: &str) -> PathBuf {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = safe.trim_start_matches('.').to_string();
    let root = data_dir.join("savepoints");
    let mut dir = root.join(&safe);
    let mut n = 1;
    while dir.exists() {
        n += 1;
        dir = root.join(format!("{safe}-{n}"));
    }
    dir
}
