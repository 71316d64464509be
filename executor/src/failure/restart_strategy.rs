//! Restart strategies with Flink's semantics: whether a failed query is
//! restarted, and after how long. The strategy is configuration; a
//! [`RestartTracker`] holds the counters one query accumulates.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq)]
pub enum RestartStrategy {
    /// Never restart: the first failure fails the query.
    None,
    /// Up to `attempts` restarts, each after `delay`.
    FixedDelay { attempts: u32, delay: Duration },
    /// Restart after a backoff that starts at `initial_backoff` and is
    /// multiplied after every failure up to `max_backoff`; it goes back to
    /// the start once the query ran `reset_backoff_threshold` without
    /// failing. `jitter_factor` spreads each delay by up to ± that share.
    /// `attempts` (before the backoff resets) is unbounded unless set.
    ExponentialDelay {
        initial_backoff: Duration,
        max_backoff: Duration,
        backoff_multiplier: f64,
        reset_backoff_threshold: Duration,
        jitter_factor: f64,
        attempts: Option<u32>,
    },
    /// Restart after `delay` unless more than `max_failures_per_interval`
    /// failures happened within `failure_rate_interval`.
    FailureRate {
        max_failures_per_interval: u32,
        failure_rate_interval: Duration,
        delay: Duration,
    },
}

/// Defaults of the exponential-delay strategy (the default strategy).
pub const DEFAULT_INITIAL_BACKOFF: Duration = Duration::from_secs(1);
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);
pub const DEFAULT_BACKOFF_MULTIPLIER: f64 = 2.0;
pub const DEFAULT_RESET_BACKOFF_THRESHOLD: Duration = Duration::from_secs(600);
pub const DEFAULT_JITTER_FACTOR: f64 = 0.1;

impl Default for RestartStrategy {
    /// Exponential delay, 1 s doubling up to 60 s, reset after 10 min stable.
    fn default() -> Self {
        RestartStrategy::ExponentialDelay {
            initial_backoff: DEFAULT_INITIAL_BACKOFF,
            max_backoff: DEFAULT_MAX_BACKOFF,
            backoff_multiplier: DEFAULT_BACKOFF_MULTIPLIER,
            reset_backoff_threshold: DEFAULT_RESET_BACKOFF_THRESHOLD,
            jitter_factor: DEFAULT_JITTER_FACTOR,
            attempts: None,
        }
    }
}

impl RestartStrategy {
    /// The name used in `restart_strategy = '...'`.
    pub fn name(&self) -> &'static str {
        match self {
            RestartStrategy::None => "none",
            RestartStrategy::FixedDelay { .. } => "fixed-delay",
            RestartStrategy::ExponentialDelay { .. } => "exponential-delay",
            RestartStrategy::FailureRate { .. } => "failure-rate",
        }
    }

    /// The strategy and its settings, e.g. `fixed-delay(attempts=3, delay=1s)`.
    pub fn describe(&self) -> String {
        let d = |d: &Duration| humantime::format_duration(*d).to_string();
        match self {
            RestartStrategy::None => "none".into(),
            RestartStrategy::FixedDelay { attempts, delay } => {
                format!("fixed-delay(attempts={attempts}, delay={})", d(delay))
            }
            RestartStrategy::ExponentialDelay {
                initial_backoff,
                max_backoff,
                backoff_multiplier,
                reset_backoff_threshold,
                jitter_factor,
                attempts,
            } => format!(
                "exponential-delay(initial_backoff={}, max_backoff={}, backoff_multiplier={backoff_multiplier}, reset_backoff_threshold={}, jitter_factor={jitter_factor}{})",
                d(initial_backoff),
                d(max_backoff),
                d(reset_backoff_threshold),
                attempts.map_or(String::new(), |a| format!(", attempts={a}"))
            ),
            RestartStrategy::FailureRate {
                max_failures_per_interval,
                failure_rate_interval,
                delay,
            } => format!(
                "failure-rate(max_failures_per_interval={max_failures_per_interval}, failure_rate_interval={}, delay={})",
                d(failure_rate_interval),
                d(delay)
            ),
        }
    }
}

/// What to do about a failure.
#[derive(Debug, Clone, PartialEq)]
pub enum RestartDecision {
    /// Restart after this delay.
    Restart(Duration),
    /// Do not restart; why.
    Fail(String),
}

/// The failure counters of one query, judged against its strategy.
#[derive(Debug, Default)]
pub struct RestartTracker {
    /// Restarts granted since the start (or the last backoff reset).
    attempts: u32,
    /// Failure times within the failure-rate interval.
    recent: VecDeque<Instant>,
    /// The exponential backoff the next failure waits.
    backoff: Option<Duration>,
    /// When the query last came back up (or started).
    running_since: Option<Instant>,
    /// A pseudo-random state for jitter.
    seed: u64,
}

impl RestartTracker {
    pub fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9E37_79B9, |d| d.as_nanos() as u64)
            | 1;
        RestartTracker {
            seed,
            ..Default::default()
        }
    }

    /// The query is running (again) from `now`.
    pub fn running(&mut self, now: Instant) {
        self.running_since = Some(now);
    }

    /// Restarts granted so far (since the last exponential reset).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    fn jitter(&mut self) -> f64 {
        // xorshift64*: jitter needs spread, not quality.
        let mut x = self.seed;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.seed = x;
        let r = x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        (r as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    /// Judges a failure at `now`.
    pub fn on_failure(&mut self, strategy: &RestartStrategy, now: Instant) -> RestartDecision {
        match strategy {
            RestartStrategy::None => {
                RestartDecision::Fail("restart_strategy is 'none'".to_string())
            }
            RestartStrategy::FixedDelay { attempts, delay } => {
                if self.attempts >= *attempts {
                    return RestartDecision::Fail(format!(
                        "restart attempts exhausted ({attempts} of restart_strategy.attempts = {attempts})"
                    ));
                }
                self.attempts += 1;
                RestartDecision::Restart(*delay)
            }
            RestartStrategy::ExponentialDelay {
                initial_backoff,
                max_backoff,
                backoff_multiplier,
                reset_backoff_threshold,
                jitter_factor,
                attempts,
            } => {
                let stable = self
                    .running_since
                    .is_some_and(|t| now.saturating_duration_since(t) >= *reset_backoff_threshold);
                if stable {
                    self.backoff = None;
                    self.attempts = 0;
                }
                if let Some(max) = attempts {
                    if self.attempts >= *max {
                        return RestartDecision::Fail(format!(
                            "restart attempts exhausted ({max} restarts without a stable period of {})",
                            humantime::format_duration(*reset_backoff_threshold)
                        ));
                    }
                }
                let base = match self.backoff {
                    None => *initial_backoff,
                    Some(b) => b.mul_f64(backoff_multiplier.max(1.0)).min(*max_backoff),
                };
                self.backoff = Some(base);
                self.attempts += 1;
                let spread = base.as_secs_f64() * jitter_factor.clamp(0.0, 1.0) * self.jitter();
                let delay = (base.as_secs_f64() + spread).max(0.0);
                RestartDecision::Restart(Duration::from_secs_f64(delay))
            }
            RestartStrategy::FailureRate {
                max_failures_per_interval,
                failure_rate_interval,
                delay,
            } => {
                self.recent.push_back(now);
                while self
                    .recent
                    .front()
                    .is_some_and(|t| now.saturating_duration_since(*t) > *failure_rate_interval)
                {
                    self.recent.pop_front();
                }
                let n = self.recent.len() as u32;
                if n > *max_failures_per_interval {
                    return RestartDecision::Fail(format!(
                        "failure rate exceeded ({n} failures within {}, max_failures_per_interval = {max_failures_per_interval})",
                        humantime::format_duration(*failure_rate_interval)
                    ));
                }
                self.attempts += 1;
                RestartDecision::Restart(*delay)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn fixed_delay_counts_attempts() {
        let s = RestartStrategy::FixedDelay {
            attempts: 2,
            delay: 100 * MS,
        };
        let mut t = RestartTracker::new();
        let now = Instant::now();
        assert_eq!(t.on_failure(&s, now), RestartDecision::Restart(100 * MS));
        assert_eq!(t.on_failure(&s, now), RestartDecision::Restart(100 * MS));
        assert!(matches!(t.on_failure(&s, now), RestartDecision::Fail(_)));
    }

    #[test]
    fn exponential_doubles_caps_and_resets_after_a_stable_period() {
        let s = RestartStrategy::ExponentialDelay {
            initial_backoff: 100 * MS,
            max_backoff: 300 * MS,
            backoff_multiplier: 2.0,
            reset_backoff_threshold: 1000 * MS,
            jitter_factor: 0.0,
            attempts: None,
        };
        let mut t = RestartTracker::new();
        let t0 = Instant::now();
        t.running(t0);
        let mut delays = Vec::new();
        for i in 0..4 {
            let now = t0 + 10 * MS * i;
            match t.on_failure(&s, now) {
                RestartDecision::Restart(d) => delays.push(d),
                other => panic!("{other:?}"),
            }
            t.running(now);
        }
        assert_eq!(delays, vec![100 * MS, 200 * MS, 300 * MS, 300 * MS]);
        // Running longer than the threshold resets the backoff.
        let later = t0 + 5000 * MS;
        assert_eq!(t.on_failure(&s, later), RestartDecision::Restart(100 * MS));
    }

    #[test]
    fn exponential_jitter_stays_within_its_factor() {
        let s = RestartStrategy::ExponentialDelay {
            initial_backoff: 1000 * MS,
            max_backoff: 1000 * MS,
            backoff_multiplier: 2.0,
            reset_backoff_threshold: Duration::from_secs(3600),
            jitter_factor: 0.1,
            attempts: None,
        };
        let mut t = RestartTracker::new();
        let mut distinct = std::collections::BTreeSet::new();
        for _ in 0..50 {
            let RestartDecision::Restart(d) = t.on_failure(&s, Instant::now()) else {
                panic!()
            };
            assert!(d >= 900 * MS && d <= 1100 * MS, "{d:?}");
            distinct.insert(d);
        }
        assert!(distinct.len() > 10, "jitter should vary the delay");
    }

    #[test]
    fn failure_rate_fails_past_the_rate_and_forgets_old_failures() {
        let s = RestartStrategy::FailureRate {
            max_failures_per_interval: 2,
            failure_rate_interval: 1000 * MS,
            delay: 10 * MS,
        };
        let mut t = RestartTracker::new();
        let t0 = Instant::now();
        assert_eq!(t.on_failure(&s, t0), RestartDecision::Restart(10 * MS));
        assert_eq!(
            t.on_failure(&s, t0 + 100 * MS),
            RestartDecision::Restart(10 * MS)
        );
        // The first failure left the window: still within the rate.
        assert_eq!(
            t.on_failure(&s, t0 + 1050 * MS),
            RestartDecision::Restart(10 * MS)
        );
        assert!(matches!(
            t.on_failure(&s, t0 + 1060 * MS),
            RestartDecision::Fail(_)
        ));
    }

    #[test]
    fn none_never_restarts() {
        let mut t = RestartTracker::new();
        assert!(matches!(
            t.on_failure(&RestartStrategy::None, Instant::now()),
            RestartDecision::Fail(_)
        ));
    }
}
