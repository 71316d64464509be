//! Failure enrichers of the server: the compiled-in plugins one can name
//! in the config file, and the rules declared in SQL.
//!
//! A plugin is a Rust type implementing
//! [`weir_executor::failure::FailureEnricher`]; to add one, write it in a
//! file here and give it a name in [`plugin`].

mod command;
mod sql_rule;
mod sqlstate;

use std::sync::Arc;

use weir_executor::failure::FailureEnricher;

use crate::config::EnricherConfig;
pub use sql_rule::{RuleMeta, SqlRule};

/// Builds the plugin a config entry names.
pub fn plugin(c: &EnricherConfig) -> anyhow::Result<Arc<dyn FailureEnricher>> {
    match c.plugin.as_str() {
        "sqlstate" => Ok(Arc::new(sqlstate::SqlstateEnricher::new(&c.name))),
        "command" => Ok(Arc::new(command::CommandEnricher::new(
            &c.name,
            c.command.clone(),
            c.output_keys.clone(),
        )?)),
        other => anyhow::bail!(
            "failure enricher \"{}\": unknown plugin \"{other}\" (compiled-in plugins: sqlstate, command)",
            c.name
        ),
    }
}

/// Every plugin of the config, in order; names must be unique.
pub fn plugins(configs: &[EnricherConfig]) -> anyhow::Result<Vec<Arc<dyn FailureEnricher>>> {
    let mut out: Vec<Arc<dyn FailureEnricher>> = Vec::new();
    for c in configs {
        if c.name == "builtin" || out.iter().any(|p| p.name() == c.name) {
            anyhow::bail!("failure enricher name \"{}\" is used twice", c.name);
        }
        out.push(plugin(c)?);
    }
    Ok(out)
}
