//! Server settings: defaults, then the TOML file, then `WEIR_*` environment
//! variables and flags (clap reads both).

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: String,
    pub metrics_listen: String,
    /// Failure enricher plugins, in the order they run.
    pub failure_enrichers: Vec<EnricherConfig>,
    /// How long one enricher may take before it is skipped.
    pub enricher_timeout: std::time::Duration,
    /// What one connection may make the server hold: a message, a COPY.
    pub limits: crate::pg::Limits,
}

/// One `[[failure_enrichers]]` entry of the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnricherConfig {
    /// Its name in `system.failure_enrichers`.
    pub name: String,
    /// Which compiled-in plugin: `sqlstate` or `command`.
    pub plugin: String,
    /// `command`: the program and its arguments.
    #[serde(default)]
    pub command: Vec<String>,
    /// `command`: the label keys it may set.
    #[serde(default)]
    pub output_keys: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./weir-data"),
            listen: "127.0.0.1:4566".into(),
            metrics_listen: "127.0.0.1:9249".into(),
            failure_enrichers: Vec::new(),
            enricher_timeout: std::time::Duration::from_secs(1),
            limits: crate::pg::Limits::default(),
        }
    }
}

/// The TOML file's shape; every key optional.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    pub metrics_listen: Option<String>,
    /// e.g. "500ms"
    pub enricher_timeout: Option<String>,
    #[serde(default)]
    pub failure_enrichers: Vec<EnricherConfig>,
    /// One message from a client, in bytes (default 64 MiB).
    pub message_bytes_max: Option<usize>,
    /// One line of COPY input, in bytes (default 64 MiB).
    pub copy_line_bytes_max: Option<usize>,
    /// What one COPY holds until its end, in bytes (default 1 GiB).
    pub copy_input_bytes_max: Option<usize>,
}

impl Config {
    /// Layers: defaults < file < explicit flags/env (the `Option`s).
    pub fn resolve(
        file: Option<&std::path::Path>,
        data_dir: Option<PathBuf>,
        listen: Option<String>,
        metrics_listen: Option<String>,
    ) -> anyhow::Result<Config> {
        let mut c = Config::default();
        if let Some(path) = file {
            let text = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read config file {}: {e}", path.display()))?;
            let f: FileConfig = toml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("invalid config file {}: {e}", path.display()))?;
            if let Some(v) = f.data_dir {
                c.data_dir = v;
            }
            if let Some(v) = f.listen {
                c.listen = v;
            }
            if let Some(v) = f.metrics_listen {
                c.metrics_listen = v;
            }
            if let Some(v) = f.enricher_timeout {
                c.enricher_timeout = humantime::parse_duration(&v).map_err(|e| {
                    anyhow::anyhow!(
                        "invalid enricher_timeout \"{v}\" in {}: {e}",
                        path.display()
                    )
                })?;
            }
            c.failure_enrichers = f.failure_enrichers;
            if let Some(v) = f.message_bytes_max {
                c.limits.message_bytes_max = v;
            }
            if let Some(v) = f.copy_line_bytes_max {
                c.limits.copy.line_bytes_max = v;
            }
            if let Some(v) = f.copy_input_bytes_max {
                c.limits.copy.input_bytes_max = v;
            }
        }
        if let Some(v) = data_dir {
            c.data_dir = v;
        }
        if let Some(v) = listen {
            c.listen = v;
        }
        if let Some(v) = metrics_listen {
            c.metrics_listen = v;
        }
        Ok(c)
    }
}
