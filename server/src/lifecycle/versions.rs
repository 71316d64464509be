//! The versions of a streaming query (`version/<query>/<n>`): each
//! `ALTER ... AS SELECT` and each rollback starts a new one; the one
//! running is `active`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const ACTIVE: &str = "active";
pub const SUPERSEDED: &str = "superseded";
pub const ROLLED_BACK: &str = "rolled_back";
pub const FAILED: &str = "failed";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VersionMeta {
    pub query: String,
    pub version: u64,
    pub definition: String,
    pub options: BTreeMap<String, String>,
    pub created_at_ms: i64,
    pub status: String,
    /// The savepoint it started from (`None`: from its inputs).
    pub started_from: Option<String>,
    /// The savepoint taken when it was replaced: where a rollback to it
    /// resumes.
    pub replaced_at: Option<String>,
    /// Its streaming plan as EXPLAIN shows it, and the plan's node
    /// fingerprints (`StreamGraph::fingerprints`), as planned when the
    /// version was made (`None` / empty for versions made before).
    #[serde(default)]
    pub plan: Option<String>,
    #[serde(default)]
    pub fingerprints: Vec<String>,
}

impl VersionMeta {
    /// The row of a new running version of `meta`, planned into `graph`.
    pub fn active(
        meta: &crate::catalog::QueryMeta,
        started_from: Option<String>,
        graph: &weir_executor::graph::StreamGraph,
    ) -> Self {
        VersionMeta {
            query: meta.name.clone(),
            version: meta.version,
            definition: meta.sql.clone(),
            options: meta.options.clone(),
            created_at_ms: crate::lifecycle::now_ms(),
            status: ACTIVE.into(),
            started_from,
            replaced_at: None,
            plan: Some(graph.explain()),
            fingerprints: graph.fingerprints(),
        }
    }
}

pub fn key(query: &str, version: u64) -> String {
    format!("version/{query}/{version:010}")
}

pub fn prefix(query: &str) -> String {
    format!("version/{query}/")
}

pub const PREFIX: &str = "version/";

/// Automatic rollback after an upgrade (query options `auto_rollback`,
/// `auto_rollback.window`, `auto_rollback.restarts`).
#[derive(Debug, Clone)]
pub struct AutoRollback {
    pub enabled: bool,
    /// How long after the upgrade the new version is watched.
    pub window: std::time::Duration,
    /// Restarts within the window that count as a restart loop.
    pub restarts: u64,
}

impl AutoRollback {
    pub fn from_options(options: &BTreeMap<String, String>) -> Result<Self, String> {
        let mut c = AutoRollback {
            enabled: true,
            window: std::time::Duration::from_secs(600),
            restarts: 3,
        };
        if let Some(v) = options.get("auto_rollback") {
            c.enabled = match v.trim().to_ascii_lowercase().as_str() {
                "on" | "true" => true,
                "off" | "false" => false,
                _ => {
                    return Err(format!(
                        "invalid value for auto_rollback: \"{v}\" (expected 'on' or 'off')"
                    ))
                }
            };
        }
        if let Some(v) = options.get("auto_rollback.window") {
            c.window = weir_executor::checkpoint::config::duration("auto_rollback.window", v)?;
        }
        if let Some(v) = options.get("auto_rollback.restarts") {
            c.restarts = v
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|n| *n > 0)
                .ok_or_else(|| {
                    format!(
                        "invalid value for auto_rollback.restarts: \"{v}\" (a positive integer)"
                    )
                })?;
        }
        Ok(c)
    }
}
