//! Server settings: defaults, then the TOML file, then `WEIR_*` environment
//! variables and flags (clap reads both).

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone)]
pub struct Config {
    pub data_dir: PathBuf,
    pub listen: String,
    pub metrics_listen: String,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./weir-data"),
            listen: "127.0.0.1:4566".into(),
            metrics_listen: "127.0.0.1:9249".into(),
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
