//! The `command` plugin: runs a program for each failure, writes the
//! failure as one JSON object to its stdin and reads labels as a JSON
//! object of strings from its stdout. Teams can write enrichers in any
//! language (look up an owner, a runbook, a ticket). A non-zero exit,
//! output that is not such an object, or a run longer than the enricher
//! timeout skips it (a timed-out program is left to finish on its own).

use std::io::Write;
use std::process::{Command, Stdio};

use weir_executor::failure::{FailureContext, FailureEnricher, Labels};

pub struct CommandEnricher {
    name: String,
    argv: Vec<String>,
    keys: Vec<String>,
}

impl CommandEnricher {
    pub fn new(name: &str, argv: Vec<String>, keys: Vec<String>) -> anyhow::Result<Self> {
        if argv.is_empty() {
            anyhow::bail!("failure enricher \"{name}\": plugin \"command\" needs command = [\"program\", \"arg\", ...]");
        }
        if keys.is_empty() {
            anyhow::bail!(
                "failure enricher \"{name}\": plugin \"command\" needs output_keys = [...]"
            );
        }
        Ok(CommandEnricher {
            name: name.to_string(),
            argv,
            keys,
        })
    }
}

impl FailureEnricher for CommandEnricher {
    fn name(&self) -> &str {
        &self.name
    }

    fn output_keys(&self) -> Vec<String> {
        self.keys.clone()
    }

    fn definition(&self) -> String {
        format!("plugin command: {}", self.argv.join(" "))
    }

    fn enrich(&self, f: &FailureContext) -> Result<Labels, String> {
        let input = serde_json::json!({
            "query": f.query,
            "operator": f.operator,
            "subtask": f.subtask,
            "region": f.region,
            "error_class": f.error_class,
            "message": f.message,
            "root_cause": f.root_cause,
            "domain": f.domain,
            "sqlstate": f.sqlstate,
            "retryable": f.retryable,
        });
        let mut child = Command::new(&self.argv[0])
            .args(&self.argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", self.argv[0]))?;
        if let Some(mut stdin) = child.stdin.take() {
            // A program that does not read its input is fine.
            let _ = stdin.write_all(input.to_string().as_bytes());
        }
        let out = child
            .wait_with_output()
            .map_err(|e| format!("cannot run {}: {e}", self.argv[0]))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            return Err(format!(
                "exited with {}{}",
                out.status,
                if err.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", err.trim())
                }
            ));
        }
        serde_json::from_slice::<Labels>(&out.stdout)
            .map_err(|e| format!("output is not a JSON object of strings: {e}"))
    }
}
