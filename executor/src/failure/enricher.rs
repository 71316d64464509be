//! Failure enrichers (after Flink's FLIP-304): each failure passes through
//! them before it is recorded, and their labels land in
//! `system.exceptions.labels`. Three kinds, applied in this order (a later
//! one may overwrite a key set by an earlier one):
//! 1. built-in: `failure.type` from the domain, `operator`, `subtask`;
//! 2. plugins: Rust types implementing [`FailureEnricher`], registered at
//!    start-up, each declaring the keys it may set;
//! 3. rules declared in SQL (`CREATE FAILURE ENRICHER ... WHEN ... SET
//!    LABELS (...)`), in name order.
//!
//! A plugin that errors, sets a key it did not declare, or takes longer
//! than the timeout is skipped; the `enrichment.errors` label of that
//! failure says so, and `system.failure_enrichers` counts it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};

use super::exception::FailureContext;

pub type Labels = BTreeMap<String, String>;

/// A pluggable enricher. `enrich` runs on a blocking thread and may take
/// its time, up to the server's enricher timeout.
pub trait FailureEnricher: Send + Sync {
    fn name(&self) -> &str;
    /// The label keys this enricher may set; others are refused.
    fn output_keys(&self) -> Vec<String>;
    fn enrich(&self, failure: &FailureContext) -> Result<Labels, String>;
    /// `builtin`, `plugin` or `sql`.
    fn kind(&self) -> &'static str {
        "plugin"
    }
    /// How it was declared (a rule's SQL, a plugin's description).
    fn definition(&self) -> String {
        String::new()
    }
}

/// What `system.failure_enrichers` shows of one enricher.
#[derive(Debug, Clone, Default)]
pub struct EnricherInfo {
    pub name: String,
    pub kind: &'static str,
    pub definition: String,
    pub output_keys: Vec<String>,
    /// Failures it looked at.
    pub invocations: u64,
    /// Failures it labelled.
    pub matched: u64,
    /// Times it errored or timed out and was skipped.
    pub errors: u64,
    pub last_error: Option<String>,
}

#[derive(Default)]
struct Counters {
    invocations: u64,
    matched: u64,
    errors: u64,
    last_error: Option<String>,
}

/// The server's enrichers.
pub struct Enrichers {
    plugins: Vec<Arc<dyn FailureEnricher>>,
    rules: RwLock<BTreeMap<String, Arc<dyn FailureEnricher>>>,
    counters: Mutex<BTreeMap<String, Counters>>,
    timeout: Duration,
}

impl Default for Enrichers {
    fn default() -> Self {
        Enrichers::new(Vec::new(), Duration::from_secs(1))
    }
}

/// The built-in labels of a failure.
pub fn builtin_labels(f: &FailureContext) -> Labels {
    let mut l = Labels::new();
    let t = match f.domain.as_str() {
        "user" => "UserError",
        "external" => "ExternalError",
        _ => "SystemError",
    };
    l.insert("failure.type".into(), t.into());
    if let Some(op) = &f.operator {
        l.insert("operator".into(), op.clone());
    }
    if let Some(s) = f.subtask {
        l.insert("subtask".into(), s.to_string());
    }
    l
}

impl Enrichers {
    pub fn new(plugins: Vec<Arc<dyn FailureEnricher>>, timeout: Duration) -> Enrichers {
        Enrichers {
            plugins,
            rules: RwLock::new(BTreeMap::new()),
            counters: Mutex::new(BTreeMap::new()),
            timeout,
        }
    }

    /// Adds or replaces a SQL rule.
    pub fn set_rule(&self, rule: Arc<dyn FailureEnricher>) {
        self.counters.lock().remove(rule.name());
        self.rules.write().insert(rule.name().to_string(), rule);
    }

    pub fn drop_rule(&self, name: &str) -> bool {
        self.counters.lock().remove(name);
        self.rules.write().remove(name).is_some()
    }

    /// Whether `name` is a rule declared in SQL.
    pub fn is_rule(&self, name: &str) -> bool {
        self.rules.read().contains_key(name)
    }

    pub fn has(&self, name: &str) -> bool {
        self.rules.read().contains_key(name) || self.plugins.iter().any(|p| p.name() == name)
    }

    fn count(&self, name: &str, f: impl FnOnce(&mut Counters)) {
        f(self.counters.lock().entry(name.to_string()).or_default())
    }

    /// Every enricher, built-in first.
    pub fn list(&self) -> Vec<EnricherInfo> {
        let mut all: Vec<Arc<dyn FailureEnricher>> = self.plugins.clone();
        all.extend(self.rules.read().values().cloned());
        let counters = self.counters.lock();
        let mut out = vec![EnricherInfo {
            name: "builtin".into(),
            kind: "builtin",
            definition: "failure.type from the error domain; operator and subtask".into(),
            output_keys: vec!["failure.type".into(), "operator".into(), "subtask".into()],
            invocations: counters.get("builtin").map_or(0, |c| c.invocations),
            matched: counters.get("builtin").map_or(0, |c| c.matched),
            errors: 0,
            last_error: None,
        }];
        for e in all {
            let c = counters.get(e.name());
            out.push(EnricherInfo {
                name: e.name().to_string(),
                kind: e.kind(),
                definition: e.definition(),
                output_keys: e.output_keys(),
                invocations: c.map_or(0, |c| c.invocations),
                matched: c.map_or(0, |c| c.matched),
                errors: c.map_or(0, |c| c.errors),
                last_error: c.and_then(|c| c.last_error.clone()),
            });
        }
        out
    }

    /// Runs every enricher over a failure and merges their labels.
    pub async fn enrich(&self, failure: &FailureContext) -> Labels {
        let mut labels = builtin_labels(failure);
        self.count("builtin", |c| {
            c.invocations += 1;
            c.matched += 1;
        });
        let mut errors: Vec<String> = Vec::new();
        let mut all: Vec<Arc<dyn FailureEnricher>> = self.plugins.clone();
        all.extend(self.rules.read().values().cloned());
        for e in all {
            let name = e.name().to_string();
            let result = self.run_one(e.clone(), failure).await;
            let result = result.and_then(|l| {
                let keys = e.output_keys();
                match l.keys().find(|k| !keys.contains(k)) {
                    Some(k) => Err(format!("set label \"{k}\", which it does not declare")),
                    None => Ok(l),
                }
            });
            match result {
                Ok(l) => self.count(&name, |c| {
                    c.invocations += 1;
                    if !l.is_empty() {
                        c.matched += 1;
                    }
                    labels.extend(l);
                }),
                Err(msg) => {
                    tracing::warn!(enricher = %name, error = %msg, "failure enricher skipped");
                    errors.push(format!("{name}: {msg}"));
                    self.count(&name, |c| {
                        c.invocations += 1;
                        c.errors += 1;
                        c.last_error = Some(msg);
                    });
                }
            }
        }
        if !errors.is_empty() {
            labels.insert("enrichment.errors".into(), errors.join("; "));
        }
        labels
    }

    async fn run_one(
        &self,
        e: Arc<dyn FailureEnricher>,
        failure: &FailureContext,
    ) -> Result<Labels, String> {
        if e.kind() == "sql" {
            // Rules are cheap predicates: evaluated in place.
            return e.enrich(failure);
        }
        let f = failure.clone();
        let job = tokio::task::spawn_blocking(move || {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| e.enrich(&f)))
        });
        match tokio::time::timeout(self.timeout, job).await {
            Err(_) => Err(format!(
                "timed out after {}",
                humantime::format_duration(self.timeout)
            )),
            Ok(Err(join)) => Err(format!("could not run: {join}")),
            Ok(Ok(Err(_panic))) => Err("panicked".to_string()),
            Ok(Ok(Ok(r))) => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed {
        name: &'static str,
        keys: Vec<&'static str>,
        out: Result<Vec<(&'static str, &'static str)>, &'static str>,
        sleep: Duration,
    }

    impl FailureEnricher for Fixed {
        fn name(&self) -> &str {
            self.name
        }
        fn output_keys(&self) -> Vec<String> {
            self.keys.iter().map(|k| k.to_string()).collect()
        }
        fn enrich(&self, _f: &FailureContext) -> Result<Labels, String> {
            std::thread::sleep(self.sleep);
            self.out
                .clone()
                .map(|v| {
                    v.into_iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect()
                })
                .map_err(|e| e.to_string())
        }
    }

    fn failure() -> FailureContext {
        FailureContext::new(
            "q",
            &crate::ExecError::user(crate::SqlState::DIVISION_BY_ZERO, "division by zero"),
            Some("StreamFilter".into()),
            Some(1),
            Some(0),
            std::time::SystemTime::now(),
        )
    }

    fn plugin(
        name: &'static str,
        keys: Vec<&'static str>,
        out: Result<Vec<(&'static str, &'static str)>, &'static str>,
        sleep_ms: u64,
    ) -> Arc<dyn FailureEnricher> {
        Arc::new(Fixed {
            name,
            keys,
            out,
            sleep: Duration::from_millis(sleep_ms),
        })
    }

    #[tokio::test]
    async fn merges_builtin_and_plugin_labels_and_skips_bad_plugins() {
        let e = Enrichers::new(
            vec![
                plugin("team", vec!["team"], Ok(vec![("team", "ingest")]), 0),
                plugin("broken", vec!["x"], Err("lookup failed"), 0),
                plugin("slow", vec!["y"], Ok(vec![("y", "1")]), 500),
                plugin("liar", vec!["a"], Ok(vec![("b", "1")]), 0),
            ],
            Duration::from_millis(100),
        );
        let labels = e.enrich(&failure()).await;
        assert_eq!(labels["failure.type"], "UserError");
        assert_eq!(labels["operator"], "StreamFilter");
        assert_eq!(labels["subtask"], "1");
        assert_eq!(labels["team"], "ingest");
        assert!(!labels.contains_key("y") && !labels.contains_key("b"));
        let errors = &labels["enrichment.errors"];
        assert!(errors.contains("broken: lookup failed"), "{errors}");
        assert!(errors.contains("slow: timed out"), "{errors}");
        assert!(errors.contains("liar: set label \"b\""), "{errors}");
        let info = e.list();
        let slow = info.iter().find(|i| i.name == "slow").unwrap();
        assert_eq!((slow.invocations, slow.errors), (1, 1));
        let team = info.iter().find(|i| i.name == "team").unwrap();
        assert_eq!((team.invocations, team.matched, team.errors), (1, 1, 0));
    }
}
