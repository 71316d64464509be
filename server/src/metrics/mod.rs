//! Server-scope metrics (process memory and CPU, sessions, statements,
//! RocksDB memory) and the collection of every metric — server and
//! queries — as [`MetricPoint`]s, the one list `system.metrics` and the
//! Prometheus endpoint both show.

pub mod prometheus;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use weir_executor::metrics::{Kind, MetricPoint, Scope};
use weir_storage::Store;

/// Counters the server keeps; rates come from a sampler every second.
#[derive(Default)]
pub struct ServerMetrics {
    pub open_sessions: AtomicI64,
    pub statements: AtomicU64,
    /// (when, statements, cpu seconds) over the last 5 s.
    samples: Mutex<VecDeque<(Instant, u64, f64)>>,
}

/// The memory the server may use: its cgroup's limit, else the machine's.
fn memory_limit() -> Option<f64> {
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok());
    cgroup.or_else(|| {
        let info = std::fs::read_to_string("/proc/meminfo").ok()?;
        let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
        let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kb * 1024.0)
    })
}

/// Resident set size and CPU seconds of this process, from `/proc`.
fn process_usage() -> (Option<f64>, Option<f64>) {
    let page = 4096.0;
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map(|pages| pages * page);
    // Fields 14 and 15 of /proc/self/stat (after the command in
    // parentheses): user and system time in clock ticks (100 per second).
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            let rest = &s[s.rfind(')')? + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = f.get(11)?.parse().ok()?;
            let stime: f64 = f.get(12)?.parse().ok()?;
            Some((utime + stime) / 100.0)
        });
    (rss, cpu)
}

impl ServerMetrics {
    pub fn new() -> Arc<ServerMetrics> {
        Arc::new(ServerMetrics::default())
    }

    /// Samples every second while the server runs.
    pub fn start_sampler(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(m) = weak.upgrade() else { return };
                let cpu = process_usage().1.unwrap_or(0.0);
                let mut s = m.samples.lock();
                s.push_back((Instant::now(), m.statements.load(Ordering::Relaxed), cpu));
                while s.len() > 6 {
                    s.pop_front();
                }
            }
        });
    }

    /// (statements per second, CPU cores busy) over the sampling window.
    fn rates(&self) -> (f64, f64) {
        let s = self.samples.lock();
        let (Some(a), Some(b)) = (s.front(), s.back()) else {
            return (0.0, 0.0);
        };
        let secs = b.0.saturating_duration_since(a.0).as_secs_f64();
        if secs <= 0.0 {
            return (0.0, 0.0);
        }
        (
            b.1.saturating_sub(a.1) as f64 / secs,
            (b.2 - a.2).max(0.0) / secs,
        )
    }

    pub fn points(&self, store: &Store) -> Vec<MetricPoint> {
        let (rss, cpu) = process_usage();
        let (statements_per_second, cpu_load) = self.rates();
        let (block_cache, memtables) = store.memory_usage();
        let g = |name, value: f64, help| {
            MetricPoint::new(Scope::Server, name, Kind::Gauge, value, help)
        };
        let c = |name, value: f64, help| {
            MetricPoint::new(Scope::Server, name, Kind::Counter, value, help)
        };
        let mut out = vec![
            g(
                "openSessions",
                self.open_sessions.load(Ordering::Relaxed) as f64,
                "Client connections open.",
            ),
            c(
                "numStatements",
                self.statements.load(Ordering::Relaxed) as f64,
                "Statements executed.",
            ),
            g(
                "statementsPerSecond",
                statements_per_second,
                "Statements per second over the last 5 s.",
            ),
            g(
                "processCpuLoad",
                cpu_load,
                "CPU cores busy with this process over the last 5 s.",
            ),
            g(
                "rocksdbBlockCacheUsage",
                block_cache as f64,
                "Bytes in RocksDB's block cache (tables, logs, catalog).",
            ),
            g(
                "rocksdbMemtableUsage",
                memtables as f64,
                "Bytes in RocksDB's memtables (tables, logs, catalog).",
            ),
        ];
        if let Some(rss) = rss {
            out.push(g(
                "processResidentMemory",
                rss,
                "Resident memory of the server process, in bytes.",
            ));
        }
        if let Some(limit) = memory_limit() {
            out.push(g(
                "memoryLimit",
                limit,
                "Memory the server may use: its cgroup limit, else physical memory, in bytes.",
            ));
        }
        if let Some(cpu) = cpu {
            out.push(c(
                "processCpuTime",
                cpu,
                "CPU seconds used by the server process.",
            ));
        }
        out
    }
}

/// Every metric: the server's, then each query's.
pub fn collect(
    server: &ServerMetrics,
    store: &Store,
    queries: &crate::system::Runtimes,
) -> Vec<MetricPoint> {
    let mut out = server.points(store);
    let handles: Vec<_> = queries.read().values().map(|q| q.handle.clone()).collect();
    for q in handles {
        out.extend(q.metrics());
    }
    out
}
