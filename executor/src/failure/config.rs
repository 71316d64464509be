//! A query's failure-handling options, as given in `WITH (...)` and
//! `ALTER ... SET (...)`: restart strategy (Flink's names, prefixed
//! `restart_strategy.`), failover strategy, bad-record handling, and how
//! much exception history to keep.

use std::time::Duration;

use crate::checkpoint::config::{count, duration};

use super::restart_strategy::{
    RestartStrategy, DEFAULT_BACKOFF_MULTIPLIER, DEFAULT_INITIAL_BACKOFF, DEFAULT_JITTER_FACTOR,
    DEFAULT_MAX_BACKOFF, DEFAULT_RESET_BACKOFF_THRESHOLD,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FailoverStrategy {
    /// Restart only the failed region (subtasks joined by pipelined edges).
    #[default]
    Region,
    /// Restart every subtask of the query.
    Full,
}

impl FailoverStrategy {
    pub fn name(self) -> &'static str {
        match self {
            FailoverStrategy::Region => "region",
            FailoverStrategy::Full => "full",
        }
    }
}

/// What a bad record (one that makes an expression fail) does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OnError {
    /// The subtask fails; the restart strategy decides what follows.
    #[default]
    Fail,
    /// The record is dropped and counted.
    Skip,
    /// The record and its error go to `system.dead_letters`.
    DeadLetter,
}

impl OnError {
    pub fn name(self) -> &'static str {
        match self {
            OnError::Fail => "fail",
            OnError::Skip => "skip",
            OnError::DeadLetter => "dead_letter",
        }
    }
}

/// Sub-options of `restart_strategy`, and the strategies they apply to.
const STRATEGY_OPTIONS: &[(&str, &[&str])] = &[
    ("attempts", &["fixed-delay", "exponential-delay"]),
    ("delay", &["fixed-delay", "failure-rate"]),
    ("initial_backoff", &["exponential-delay"]),
    ("max_backoff", &["exponential-delay"]),
    ("backoff_multiplier", &["exponential-delay"]),
    ("reset_backoff_threshold", &["exponential-delay"]),
    ("jitter_factor", &["exponential-delay"]),
    ("max_failures_per_interval", &["failure-rate"]),
    ("failure_rate_interval", &["failure-rate"]),
];

/// Option names [`FailureConfig::set`] understands.
pub const OPTION_NAMES: &[&str] = &[
    "restart_strategy",
    "restart_strategy.attempts",
    "restart_strategy.delay",
    "restart_strategy.initial_backoff",
    "restart_strategy.max_backoff",
    "restart_strategy.backoff_multiplier",
    "restart_strategy.reset_backoff_threshold",
    "restart_strategy.jitter_factor",
    "restart_strategy.max_failures_per_interval",
    "restart_strategy.failure_rate_interval",
    "failover_strategy",
    "on_error",
    "exception_history_size",
    "restart_loop_threshold",
    "restart_loop_window",
];

#[derive(Debug, Clone, Default)]
struct StrategyParams {
    kind: Option<&'static str>,
    attempts: Option<u32>,
    delay: Option<Duration>,
    initial_backoff: Option<Duration>,
    max_backoff: Option<Duration>,
    backoff_multiplier: Option<f64>,
    reset_backoff_threshold: Option<Duration>,
    jitter_factor: Option<f64>,
    max_failures_per_interval: Option<u32>,
    failure_rate_interval: Option<Duration>,
    /// Sub-options given, to check they fit the strategy.
    given: Vec<&'static str>,
}

#[derive(Debug, Clone)]
pub struct FailureConfig {
    pub restart: RestartStrategy,
    pub failover: FailoverStrategy,
    pub on_error: OnError,
    /// Exceptions kept per query in `system.exceptions`.
    pub exception_history_size: usize,
    /// `health = 'restart_loop'` once this many restarts happened within
    /// `restart_loop_window`.
    pub restart_loop_threshold: u32,
    pub restart_loop_window: Duration,
    params: StrategyParams,
}

impl Default for FailureConfig {
    fn default() -> Self {
        FailureConfig {
            restart: RestartStrategy::default(),
            failover: FailoverStrategy::default(),
            on_error: OnError::default(),
            exception_history_size: 16,
            restart_loop_threshold: 3,
            restart_loop_window: Duration::from_secs(600),
            params: StrategyParams::default(),
        }
    }
}

fn ratio(name: &str, value: &str) -> Result<f64, String> {
    value
        .trim()
        .parse::<f64>()
        .ok()
        .filter(|f| f.is_finite() && *f >= 0.0)
        .ok_or_else(|| {
            format!(
                "invalid value for option \"{name}\": \"{value}\" (expected a non-negative number)"
            )
        })
}

fn small_count(name: &str, value: &str) -> Result<u32, String> {
    let n = count(name, value)?;
    u32::try_from(n).map_err(|_| format!("option \"{name}\" is too large: {value}"))
}

impl FailureConfig {
    /// Applies one option; `Ok(false)` when the name is not a failure option.
    /// Call [`FailureConfig::finish`] after the last one.
    pub fn set(&mut self, name: &str, value: &str) -> Result<bool, String> {
        let p = &mut self.params;
        if let Some(sub) = name.strip_prefix("restart_strategy.") {
            let Some((key, _)) = STRATEGY_OPTIONS.iter().find(|(k, _)| *k == sub) else {
                return Ok(false);
            };
            match *key {
                "attempts" => p.attempts = Some(small_count(name, value)?),
                "delay" => p.delay = Some(duration(name, value)?),
                "initial_backoff" => p.initial_backoff = Some(duration(name, value)?),
                "max_backoff" => p.max_backoff = Some(duration(name, value)?),
                "backoff_multiplier" => {
                    let m = ratio(name, value)?;
                    if m < 1.0 {
                        return Err(format!(
                            "restart_strategy.backoff_multiplier must be at least 1, got \"{value}\""
                        ));
                    }
                    p.backoff_multiplier = Some(m);
                }
                "reset_backoff_threshold" => {
                    p.reset_backoff_threshold = Some(duration(name, value)?)
                }
                "jitter_factor" => {
                    let j = ratio(name, value)?;
                    if j > 1.0 {
                        return Err(format!(
                            "restart_strategy.jitter_factor must be between 0 and 1, got \"{value}\""
                        ));
                    }
                    p.jitter_factor = Some(j);
                }
                "max_failures_per_interval" => {
                    p.max_failures_per_interval = Some(small_count(name, value)?)
                }
                "failure_rate_interval" => p.failure_rate_interval = Some(duration(name, value)?),
                _ => unreachable!("listed in STRATEGY_OPTIONS"),
            }
            p.given.push(key);
            return Ok(true);
        }
        match name {
            "restart_strategy" => {
                let v = value.trim().to_ascii_lowercase().replace('_', "-");
                p.kind = Some(match v.as_str() {
                    "none" | "off" | "disable" | "no-restart" => "none",
                    "fixed-delay" | "fixeddelay" => "fixed-delay",
                    "exponential-delay" | "exponentialdelay" => "exponential-delay",
                    "failure-rate" | "failurerate" => "failure-rate",
                    _ => {
                        return Err(format!(
                            "invalid value for option \"restart_strategy\": \"{value}\" (expected 'fixed-delay', 'exponential-delay', 'failure-rate' or 'none')"
                        ))
                    }
                });
            }
            "failover_strategy" => {
                self.failover = match value.trim().to_ascii_lowercase().as_str() {
                    "region" => FailoverStrategy::Region,
                    "full" => FailoverStrategy::Full,
                    _ => {
                        return Err(format!(
                            "invalid value for option \"failover_strategy\": \"{value}\" (expected 'region' or 'full')"
                        ))
                    }
                }
            }
            "on_error" => {
                self.on_error = match value.trim().to_ascii_lowercase().replace('-', "_").as_str()
                {
                    "fail" => OnError::Fail,
                    "skip" => OnError::Skip,
                    "dead_letter" => OnError::DeadLetter,
                    _ => {
                        return Err(format!(
                            "invalid value for option \"on_error\": \"{value}\" (expected 'fail', 'skip' or 'dead_letter')"
                        ))
                    }
                }
            }
            "exception_history_size" => {
                let n = count(name, value)?;
                if n == 0 || n > 10_000 {
                    return Err(format!(
                        "exception_history_size must be between 1 and 10000, got \"{value}\""
                    ));
                }
                self.exception_history_size = n as usize;
            }
            "restart_loop_threshold" => {
                let n = small_count(name, value)?;
                if n == 0 {
                    return Err("restart_loop_threshold must be at least 1".into());
                }
                self.restart_loop_threshold = n;
            }
            "restart_loop_window" => self.restart_loop_window = duration(name, value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// Builds the restart strategy from the options given; refuses
    /// sub-options that do not belong to the chosen strategy.
    pub fn finish(&mut self) -> Result<(), String> {
        let p = &self.params;
        let kind = p.kind.unwrap_or("exponential-delay");
        for key in &p.given {
            let (_, applies) = STRATEGY_OPTIONS
                .iter()
                .find(|(k, _)| k == key)
                .expect("listed");
            if !applies.contains(&kind) {
                let own: Vec<String> = STRATEGY_OPTIONS
                    .iter()
                    .filter(|(_, a)| a.contains(&kind))
                    .map(|(k, _)| format!("restart_strategy.{k}"))
                    .collect();
                return Err(format!(
                    "option \"restart_strategy.{key}\" does not apply to restart_strategy '{kind}'{}",
                    if own.is_empty() {
                        String::new()
                    } else {
                        format!(" (its options: {})", own.join(", "))
                    }
                ));
            }
        }
        self.restart = match kind {
            "none" => RestartStrategy::None,
            "fixed-delay" => RestartStrategy::FixedDelay {
                attempts: p.attempts.unwrap_or(1),
                delay: p.delay.unwrap_or(Duration::from_secs(1)),
            },
            "failure-rate" => RestartStrategy::FailureRate {
                max_failures_per_interval: p.max_failures_per_interval.unwrap_or(1),
                failure_rate_interval: p.failure_rate_interval.unwrap_or(Duration::from_secs(60)),
                delay: p.delay.unwrap_or(Duration::from_secs(1)),
            },
            _ => {
                let initial = p.initial_backoff.unwrap_or(DEFAULT_INITIAL_BACKOFF);
                let max = p.max_backoff.unwrap_or(DEFAULT_MAX_BACKOFF.max(initial));
                if max < initial {
                    return Err(format!(
                        "restart_strategy.max_backoff ({}) is below restart_strategy.initial_backoff ({})",
                        humantime::format_duration(max),
                        humantime::format_duration(initial)
                    ));
                }
                RestartStrategy::ExponentialDelay {
                    initial_backoff: initial,
                    max_backoff: max,
                    backoff_multiplier: p.backoff_multiplier.unwrap_or(DEFAULT_BACKOFF_MULTIPLIER),
                    reset_backoff_threshold: p
                        .reset_backoff_threshold
                        .unwrap_or(DEFAULT_RESET_BACKOFF_THRESHOLD),
                    jitter_factor: p.jitter_factor.unwrap_or(DEFAULT_JITTER_FACTOR),
                    attempts: p.attempts,
                }
            }
        };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(opts: &[(&str, &str)]) -> Result<FailureConfig, String> {
        let mut c = FailureConfig::default();
        for (k, v) in opts {
            assert!(c.set(k, v)?, "{k} not recognized");
        }
        c.finish()?;
        Ok(c)
    }

    #[test]
    fn builds_each_strategy() {
        let c = parse(&[
            ("restart_strategy", "fixed-delay"),
            ("restart_strategy.attempts", "3"),
            ("restart_strategy.delay", "250ms"),
        ])
        .unwrap();
        assert_eq!(
            c.restart,
            RestartStrategy::FixedDelay {
                attempts: 3,
                delay: Duration::from_millis(250)
            }
        );
        let c = parse(&[("restart_strategy", "failure-rate")]).unwrap();
        assert_eq!(c.restart.name(), "failure-rate");
        let c = parse(&[]).unwrap();
        assert_eq!(c.restart, RestartStrategy::default());
        assert_eq!(c.failover, FailoverStrategy::Region);
    }

    #[test]
    fn refuses_options_of_another_strategy_and_bad_values() {
        let e = parse(&[
            ("restart_strategy", "none"),
            ("restart_strategy.attempts", "3"),
        ])
        .unwrap_err();
        assert!(e.contains("does not apply"), "{e}");
        assert!(parse(&[("restart_strategy", "sometimes")]).is_err());
        assert!(parse(&[("restart_strategy.jitter_factor", "2")]).is_err());
        assert!(parse(&[("on_error", "ignore")]).is_err());
        assert!(parse(&[
            ("restart_strategy.initial_backoff", "10s"),
            ("restart_strategy.max_backoff", "1s")
        ])
        .is_err());
    }
}
