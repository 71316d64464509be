//! Per-query checkpoint settings: `WITH (checkpoint_interval = '500ms', ...)`
//! at CREATE, changed by `ALTER STREAMING QUERY q SET (...)`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::message::CheckpointMode;

/// Where keyed state lives between checkpoints and how it is snapshotted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StateBackendKind {
    /// Keyed state lives in one RocksDB per stateful subtask, with a
    /// bounded cache in the operator; checkpoints are incremental cuts of
    /// the stores (shared SST files).
    Rocksdb,
    /// Keyed state lives in the operators' hash maps; each checkpoint is a
    /// full snapshot into one checksummed file.
    Memory,
}

impl StateBackendKind {
    pub fn name(self) -> &'static str {
        match self {
            StateBackendKind::Rocksdb => "rocksdb",
            StateBackendKind::Memory => "memory",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckpointConfig {
    #[serde(with = "millis")]
    pub interval: Duration,
    pub mode: CheckpointMode,
    /// Aligned checkpoints switch to unaligned when alignment takes longer.
    #[serde(with = "opt_millis")]
    pub aligned_timeout: Option<Duration>,
    #[serde(with = "millis")]
    pub timeout: Duration,
    /// Consecutive failed checkpoints tolerated before the query fails.
    pub tolerable_failed: u32,
    /// Completed checkpoints kept on disk (at least 1).
    pub retained: usize,
    pub backend: StateBackendKind,
    /// RocksDB backend: keys per operator map kept in memory (the rest
    /// stays in the store until touched).
    #[serde(default = "default_cache_keys")]
    pub state_cache_keys: usize,
    /// A table source subtask without new rows for this long tells its
    /// downstream it is idle (its watermark stops holding theirs back).
    #[serde(default, with = "opt_millis")]
    pub source_idle_timeout: Option<Duration>,
}

fn default_cache_keys() -> usize {
    crate::state::DEFAULT_STATE_CACHE_KEYS
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            interval: Duration::from_secs(1),
            mode: CheckpointMode::Aligned,
            aligned_timeout: None,
            timeout: Duration::from_secs(60),
            tolerable_failed: 3,
            retained: 3,
            backend: StateBackendKind::Rocksdb,
            state_cache_keys: default_cache_keys(),
            source_idle_timeout: None,
        }
    }
}

/// The option names [`CheckpointConfig::set`] understands.
pub const OPTION_NAMES: &[&str] = &[
    "checkpoint_interval",
    "checkpoint_mode",
    "aligned_checkpoint_timeout",
    "checkpoint_timeout",
    "tolerable_failed_checkpoints",
    "checkpoints_retained",
    "state_backend",
    "state_cache_keys",
    "source_idle_timeout",
];

/// A duration option: milliseconds, or a humantime duration (`2s`,
/// `1 min`).
pub fn duration(name: &str, value: &str) -> Result<Duration, String> {
    let v = value.trim();
    let parsed = v
        .parse::<u64>()
        .map(Duration::from_millis)
        .or_else(|_| humantime::parse_duration(&v.replace(' ', "")));
    parsed.map_err(|_| {
        format!("invalid value for option \"{name}\": \"{value}\" (expected a duration such as '500ms', '2s' or '1min')")
    })
}

pub(crate) fn count(name: &str, value: &str) -> Result<u64, String> {
    value.trim().parse::<u64>().map_err(|_| {
        format!(
            "invalid value for option \"{name}\": \"{value}\" (expected a non-negative integer)"
        )
    })
}

impl CheckpointConfig {
    /// Applies one option; `Ok(false)` when the name is not a checkpoint option.
    pub fn set(&mut self, name: &str, value: &str) -> Result<bool, String> {
        match name {
            "checkpoint_interval" => {
                let d = duration(name, value)?;
                if d < Duration::from_millis(10) {
                    return Err(format!("checkpoint_interval must be at least 10ms, got \"{value}\""));
                }
                self.interval = d;
            }
            "checkpoint_mode" => {
                self.mode = match value.trim().to_ascii_lowercase().as_str() {
                    "aligned" => CheckpointMode::Aligned,
                    "unaligned" => CheckpointMode::Unaligned,
                    _ => {
                        return Err(format!(
                            "invalid value for option \"checkpoint_mode\": \"{value}\" (expected 'aligned' or 'unaligned')"
                        ))
                    }
                }
            }
            "aligned_checkpoint_timeout" => {
                let d = duration(name, value)?;
                self.aligned_timeout = (!d.is_zero()).then_some(d);
            }
            "checkpoint_timeout" => {
                let d = duration(name, value)?;
                if d.is_zero() {
                    return Err("checkpoint_timeout must be greater than zero".into());
                }
                self.timeout = d;
            }
            "tolerable_failed_checkpoints" => {
                self.tolerable_failed = count(name, value)?.min(u32::MAX as u64) as u32;
            }
            "checkpoints_retained" => {
                let n = count(name, value)?;
                if n == 0 {
                    return Err("checkpoints_retained must be at least 1".into());
                }
                self.retained = n as usize;
            }
            "state_backend" => {
                self.backend = match value.trim().to_ascii_lowercase().as_str() {
                    "rocksdb" => StateBackendKind::Rocksdb,
                    "memory" | "hashmap" => StateBackendKind::Memory,
                    _ => {
                        return Err(format!(
                            "invalid value for option \"state_backend\": \"{value}\" (expected 'rocksdb' or 'memory')"
                        ))
                    }
                }
            }
            "source_idle_timeout" => {
                let d = duration(name, value)?;
                self.source_idle_timeout = (!d.is_zero()).then_some(d);
            }
            "state_cache_keys" => {
                let n = count(name, value)?;
                if n == 0 {
                    return Err("state_cache_keys must be at least 1".into());
                }
                self.state_cache_keys = n.min(usize::MAX as u64) as usize;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }
}

mod millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

mod opt_millis {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&(d.as_millis() as u64)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(d)?.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_options() {
        let mut c = CheckpointConfig::default();
        assert!(c.set("checkpoint_interval", "500ms").unwrap());
        assert_eq!(c.interval, Duration::from_millis(500));
        c.set("checkpoint_interval", "2 s").unwrap();
        assert_eq!(c.interval, Duration::from_secs(2));
        c.set("checkpoint_mode", "UNALIGNED").unwrap();
        assert_eq!(c.mode, CheckpointMode::Unaligned);
        c.set("aligned_checkpoint_timeout", "2s").unwrap();
        assert_eq!(c.aligned_timeout, Some(Duration::from_secs(2)));
        c.set("checkpoints_retained", "5").unwrap();
        c.set("state_backend", "memory").unwrap();
        assert_eq!(c.backend, StateBackendKind::Memory);
        assert!(!c.set("parallelism", "2").unwrap());
        assert!(c.set("checkpoint_interval", "soon").is_err());
        assert!(c.set("checkpoints_retained", "0").is_err());
        assert!(c.set("checkpoint_mode", "sideways").is_err());
        let json = serde_json::to_string(&c).unwrap();
        assert_eq!(serde_json::from_str::<CheckpointConfig>(&json).unwrap(), c);
    }
}
