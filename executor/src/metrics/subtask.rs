//! Metrics of one subtask, with Flink's meaning: records and bytes in and
//! out, and where its time goes — busy (processing), backpressured
//! (waiting for room downstream) or idle (waiting for input). Counters are
//! atomics bumped by the task; time is accounted at each change of state,
//! and the time in the current state is added on read, so a subtask stuck
//! for a minute shows it while it is stuck. Per-second rates come from
//! samples a query's sampler takes every second.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// What a subtask is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeState {
    Busy,
    Backpressured,
    Idle,
}

#[derive(Debug)]
struct Clock {
    state: TimeState,
    since: Instant,
    busy: Duration,
    backpressured: Duration,
    idle: Duration,
}

/// Cumulative values at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub records_in: u64,
    pub records_out: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub busy: Duration,
    pub backpressured: Duration,
    pub idle: Duration,
}

/// Per-second rates over the sampling window.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rates {
    pub records_in_per_second: f64,
    pub records_out_per_second: f64,
    pub bytes_in_per_second: f64,
    pub bytes_out_per_second: f64,
    pub busy_ms_per_second: f64,
    pub backpressured_ms_per_second: f64,
    pub idle_ms_per_second: f64,
}

/// Task metrics can be switched off (`WEIR_TASK_METRICS=off`) to measure
/// what they cost; the values then stay at zero.
pub(crate) fn enabled() -> bool {
    static ON: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
        !std::env::var("WEIR_TASK_METRICS").is_ok_and(|v| v == "off" || v == "0")
    });
    *ON
}

/// Samples kept for rates: a window of this many seconds.
const WINDOW: usize = 5;

#[derive(Debug)]
pub struct SubtaskMetrics {
    pub records_in: AtomicU64,
    pub records_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Event-time watermarks in ms (`i64::MIN`: none yet).
    pub input_watermark: AtomicI64,
    pub output_watermark: AtomicI64,
    pub late_records_dropped: AtomicU64,
    /// Source subtasks: rows read from the table but not emitted yet (the
    /// rows not read yet are counted from `read_position` when read).
    pub pending_records: AtomicU64,
    /// Source subtasks: the table log offset read through.
    pub read_position: AtomicU64,
    clock: Mutex<Clock>,
    samples: Mutex<VecDeque<(Instant, Totals)>>,
}

impl Default for SubtaskMetrics {
    fn default() -> Self {
        SubtaskMetrics::new()
    }
}

impl SubtaskMetrics {
    pub fn new() -> SubtaskMetrics {
        let now = Instant::now();
        SubtaskMetrics {
            records_in: AtomicU64::new(0),
            records_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            input_watermark: AtomicI64::new(i64::MIN),
            output_watermark: AtomicI64::new(i64::MIN),
            late_records_dropped: AtomicU64::new(0),
            pending_records: AtomicU64::new(0),
            read_position: AtomicU64::new(0),
            clock: Mutex::new(Clock {
                state: TimeState::Idle,
                since: now,
                busy: Duration::ZERO,
                backpressured: Duration::ZERO,
                idle: Duration::ZERO,
            }),
            samples: Mutex::new(VecDeque::new()),
        }
    }

    /// The subtask now does `state`.
    pub fn enter(&self, state: TimeState) {
        if !enabled() {
            return;
        }
        let now = Instant::now();
        let mut c = self.clock.lock();
        if c.state == state {
            return;
        }
        let spent = now.saturating_duration_since(c.since);
        match c.state {
            TimeState::Busy => c.busy += spent,
            TimeState::Backpressured => c.backpressured += spent,
            TimeState::Idle => c.idle += spent,
        }
        c.state = state;
        c.since = now;
    }

    pub fn record_in(&self, rows: usize, bytes: usize) {
        if !enabled() {
            return;
        }
        self.records_in.fetch_add(rows as u64, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub fn record_out(&self, rows: usize, bytes: usize) {
        if !enabled() {
            return;
        }
        self.records_out.fetch_add(rows as u64, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    /// Cumulative values now, including the time in the current state.
    pub fn totals(&self) -> Totals {
        let now = Instant::now();
        let c = self.clock.lock();
        let spent = now.saturating_duration_since(c.since);
        let (mut busy, mut backpressured, mut idle) = (c.busy, c.backpressured, c.idle);
        match c.state {
            TimeState::Busy => busy += spent,
            TimeState::Backpressured => backpressured += spent,
            TimeState::Idle => idle += spent,
        }
        Totals {
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            busy,
            backpressured,
            idle,
        }
    }

    /// Takes a sample (every second, by the query's sampler).
    pub fn sample(&self) {
        let t = self.totals();
        let mut s = self.samples.lock();
        s.push_back((Instant::now(), t));
        while s.len() > WINDOW + 1 {
            s.pop_front();
        }
    }

    /// Rates over the samples (zero until there are two).
    pub fn rates(&self) -> Rates {
        let s = self.samples.lock();
        let (Some((t0, a)), Some((t1, b))) = (s.front(), s.back()) else {
            return Rates::default();
        };
        let secs = t1.saturating_duration_since(*t0).as_secs_f64();
        if secs <= 0.0 {
            return Rates::default();
        }
        let per = |x: u64, y: u64| y.saturating_sub(x) as f64 / secs;
        let ms = |x: Duration, y: Duration| y.saturating_sub(x).as_secs_f64() * 1000.0 / secs;
        Rates {
            records_in_per_second: per(a.records_in, b.records_in),
            records_out_per_second: per(a.records_out, b.records_out),
            bytes_in_per_second: per(a.bytes_in, b.bytes_in),
            bytes_out_per_second: per(a.bytes_out, b.bytes_out),
            busy_ms_per_second: ms(a.busy, b.busy),
            backpressured_ms_per_second: ms(a.backpressured, b.backpressured),
            idle_ms_per_second: ms(a.idle, b.idle),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_shares_add_up_to_a_second_per_second() {
        let m = SubtaskMetrics::new();
        m.sample();
        m.enter(TimeState::Busy);
        std::thread::sleep(Duration::from_millis(60));
        m.enter(TimeState::Backpressured);
        std::thread::sleep(Duration::from_millis(30));
        m.enter(TimeState::Idle);
        std::thread::sleep(Duration::from_millis(10));
        m.sample();
        let r = m.rates();
        let sum = r.busy_ms_per_second + r.backpressured_ms_per_second + r.idle_ms_per_second;
        assert!((sum - 1000.0).abs() < 5.0, "{r:?}");
        assert!(r.busy_ms_per_second > r.backpressured_ms_per_second);
        assert!(r.backpressured_ms_per_second > r.idle_ms_per_second);
        // The current state counts while it lasts.
        m.enter(TimeState::Busy);
        std::thread::sleep(Duration::from_millis(20));
        assert!(m.totals().busy >= Duration::from_millis(80));
    }
}
