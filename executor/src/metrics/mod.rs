//! Metrics with Flink's names and meaning, at subtask, operator, query
//! and server scope. Subtasks count into [`SubtaskMetrics`]; a query's
//! metrics are read as [`MetricPoint`]s, the one shape both
//! `system.metrics` and the Prometheus endpoint are built from, so that the
//! two always agree.

pub mod subtask;

pub use subtask::{Rates, SubtaskMetrics, TimeState, Totals};

/// Bytes of a batch's rows (of its slice, not of the buffers it shares).
pub fn batch_bytes(batch: &datafusion::arrow::array::RecordBatch) -> usize {
    use datafusion::arrow::array::Array;
    if !subtask::enabled() {
        return 0;
    }
    batch
        .columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
        .sum()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Server,
    Query,
    /// All subtasks of one operator together.
    Operator,
    Subtask,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Server => "server",
            Scope::Query => "query",
            Scope::Operator => "operator",
            Scope::Subtask => "subtask",
        }
    }
}

/// Whether a value only grows (a Prometheus counter) or goes up and down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
}

/// One value of one metric.
#[derive(Debug, Clone)]
pub struct MetricPoint {
    pub scope: Scope,
    pub query: Option<String>,
    /// Operator name (e.g. `StreamHashAgg`) and its node id in the plan
    /// (names repeat within a plan; ids do not).
    pub operator: Option<String>,
    pub operator_id: Option<usize>,
    pub subtask: Option<usize>,
    /// Flink's name, e.g. `numRecordsIn`, `busyTimeMsPerSecond`.
    pub name: &'static str,
    pub value: f64,
    pub kind: Kind,
    /// Further labels, e.g. a failure label's key and value.
    pub labels: Vec<(String, String)>,
    pub help: &'static str,
}

impl MetricPoint {
    pub fn new(
        scope: Scope,
        name: &'static str,
        kind: Kind,
        value: f64,
        help: &'static str,
    ) -> Self {
        MetricPoint {
            scope,
            query: None,
            operator: None,
            operator_id: None,
            subtask: None,
            name,
            value,
            kind,
            labels: Vec::new(),
            help,
        }
    }

    pub fn query(mut self, q: &str) -> Self {
        self.query = Some(q.to_string());
        self
    }

    pub fn operator(mut self, name: &str, id: usize) -> Self {
        self.operator = Some(name.to_string());
        self.operator_id = Some(id);
        self
    }

    pub fn subtask(mut self, s: usize) -> Self {
        self.subtask = Some(s);
        self
    }

    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.labels.push((k.to_string(), v.to_string()));
        self
    }
}

/// How an operator's value is made of its subtasks' values.
#[derive(Debug, Clone, Copy)]
enum Combine {
    Sum,
    Max,
    Min,
}

/// The per-subtask metrics: (name, kind, how operators combine them, help).
const SUBTASK_METRICS: &[(&str, Kind, Combine, &str)] = &[
    (
        "numRecordsIn",
        Kind::Counter,
        Combine::Sum,
        "Records a subtask received (a source: read from its table).",
    ),
    (
        "numRecordsOut",
        Kind::Counter,
        Combine::Sum,
        "Records a subtask emitted (a result sink: handed to its table).",
    ),
    (
        "numBytesIn",
        Kind::Counter,
        Combine::Sum,
        "In-memory bytes of the batches a subtask received.",
    ),
    (
        "numBytesOut",
        Kind::Counter,
        Combine::Sum,
        "In-memory bytes of the batches a subtask emitted.",
    ),
    (
        "numRecordsInPerSecond",
        Kind::Gauge,
        Combine::Sum,
        "Records received per second over the last 5 s.",
    ),
    (
        "numRecordsOutPerSecond",
        Kind::Gauge,
        Combine::Sum,
        "Records emitted per second over the last 5 s.",
    ),
    (
        "numBytesInPerSecond",
        Kind::Gauge,
        Combine::Sum,
        "Bytes received per second over the last 5 s.",
    ),
    (
        "numBytesOutPerSecond",
        Kind::Gauge,
        Combine::Sum,
        "Bytes emitted per second over the last 5 s.",
    ),
    (
        "busyTimeMsPerSecond",
        Kind::Gauge,
        Combine::Max,
        "Milliseconds per second spent processing (busiest subtask for an operator).",
    ),
    (
        "backPressuredTimeMsPerSecond",
        Kind::Gauge,
        Combine::Max,
        "Milliseconds per second spent waiting for room downstream.",
    ),
    (
        "idleTimeMsPerSecond",
        Kind::Gauge,
        Combine::Min,
        "Milliseconds per second spent waiting for input.",
    ),
    (
        "numLateRecordsDropped",
        Kind::Counter,
        Combine::Sum,
        "Records dropped for arriving behind the watermark.",
    ),
    (
        "pendingRecords",
        Kind::Gauge,
        Combine::Sum,
        "Source lag: rows accepted into the table that the source has not emitted yet.",
    ),
    (
        "currentInputWatermark",
        Kind::Gauge,
        Combine::Min,
        "Event-time watermark of the input, ms since the epoch.",
    ),
    (
        "currentOutputWatermark",
        Kind::Gauge,
        Combine::Min,
        "Event-time watermark of the output, ms since the epoch.",
    ),
    (
        "watermarkLag",
        Kind::Gauge,
        Combine::Max,
        "Wall-clock time minus the output watermark, in ms.",
    ),
];

/// One subtask's values, in the order of [`SUBTASK_METRICS`]; watermark
/// metrics only once a watermark passed.
fn subtask_values(
    m: &SubtaskMetrics,
    source: Option<&crate::table::Table>,
    now_ms: i64,
) -> Vec<Option<f64>> {
    use std::sync::atomic::Ordering::Relaxed;
    let t = m.totals();
    let r = m.rates();
    let wm = |v: i64| (v != i64::MIN).then_some(v as f64);
    let out_wm = m.output_watermark.load(Relaxed);
    vec![
        Some(t.records_in as f64),
        Some(t.records_out as f64),
        Some(t.bytes_in as f64),
        Some(t.bytes_out as f64),
        Some(r.records_in_per_second),
        Some(r.records_out_per_second),
        Some(r.bytes_in_per_second),
        Some(r.bytes_out_per_second),
        Some(r.busy_ms_per_second),
        Some(r.backpressured_ms_per_second),
        Some(r.idle_ms_per_second),
        Some(m.late_records_dropped.load(Relaxed) as f64),
        source.map(|t| {
            (t.rows_after(m.read_position.load(Relaxed)) + m.pending_records.load(Relaxed)) as f64
        }),
        wm(m.input_watermark.load(Relaxed)),
        wm(out_wm),
        (out_wm != i64::MIN).then(|| (now_ms - out_wm) as f64),
    ]
}

/// A subtask's identity and metrics.
pub struct SubtaskEntry<'a> {
    pub operator: &'a str,
    pub operator_id: usize,
    pub subtask: usize,
    /// The table a source subtask reads.
    pub source: Option<&'a crate::table::Table>,
    pub metrics: &'a SubtaskMetrics,
}

/// Subtask and operator points of one query.
pub fn task_points(query: &str, subtasks: &[SubtaskEntry<'_>]) -> Vec<MetricPoint> {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let mut out = Vec::new();
    // operator id → (name, per-metric combined value)
    let mut operators: std::collections::BTreeMap<usize, (&str, Vec<Option<f64>>)> =
        std::collections::BTreeMap::new();
    for e in subtasks {
        let values = subtask_values(e.metrics, e.source, now_ms);
        let agg = operators
            .entry(e.operator_id)
            .or_insert_with(|| (e.operator, vec![None; SUBTASK_METRICS.len()]));
        for (i, ((name, kind, combine, help), v)) in SUBTASK_METRICS.iter().zip(&values).enumerate()
        {
            let Some(v) = *v else { continue };
            out.push(
                MetricPoint::new(Scope::Subtask, name, *kind, v, help)
                    .query(query)
                    .operator(e.operator, e.operator_id)
                    .subtask(e.subtask),
            );
            agg.1[i] = Some(match (agg.1[i], combine) {
                (None, _) => v,
                (Some(a), Combine::Sum) => a + v,
                (Some(a), Combine::Max) => a.max(v),
                (Some(a), Combine::Min) => a.min(v),
            });
        }
    }
    for (id, (name, values)) in operators {
        for ((metric, kind, _, help), v) in SUBTASK_METRICS.iter().zip(values) {
            if let Some(v) = v {
                out.push(
                    MetricPoint::new(Scope::Operator, metric, *kind, v, help)
                        .query(query)
                        .operator(name, id),
                );
            }
        }
    }
    out
}
