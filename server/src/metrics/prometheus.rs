//! The Prometheus endpoint: `GET /metrics` in the text exposition format,
//! encoded by the `prometheus` crate from the same points `system.metrics`
//! shows. Names follow Prometheus conventions and pass promtool's linter:
//! `weir_<scope>_<name in snake case>` in base units — Flink's millisecond
//! values are exported in seconds (`_seconds`), its "ms per second" time
//! shares as ratios (`busyTimeMsPerSecond` 750 →
//! `weir_operator_busy_time_ratio` 0.75) — with `_bytes` for sizes and
//! `_total` for counters; subtask metrics are `weir_operator_*` with the labels
//! `query`, `operator`, `operator_id` and `subtask` (operator totals are a
//! `sum by` away, so they are not exported twice).

use std::collections::BTreeMap;
use std::sync::Arc;

use prometheus::proto::{Counter, Gauge, LabelPair, Metric, MetricFamily, MetricType};
use prometheus::{Encoder, TextEncoder};
use weir_executor::metrics::{Kind, MetricPoint, Scope};

use crate::engine::Engine;

/// `busyTimeMsPerSecond` → `busy_time_ms_per_second`.
fn snake(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 4);
    for (i, c) in name.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The Prometheus name of a point and the factor from its
/// `system.metrics` value to the exported one; `None` for operator-scope
/// points.
pub fn prometheus_name(p: &MetricPoint) -> Option<(String, f64)> {
    let scope = match p.scope {
        Scope::Server => "server",
        Scope::Query => "query",
        Scope::Subtask => "operator",
        Scope::Operator => return None,
    };
    let total = if p.kind == Kind::Counter {
        "_total"
    } else {
        ""
    };
    let (base, unit, factor) = match p.name {
        "busyTimeMsPerSecond" => ("busy_time".to_string(), "_ratio", 0.001),
        "backPressuredTimeMsPerSecond" => ("back_pressured_time".to_string(), "_ratio", 0.001),
        "idleTimeMsPerSecond" => ("idle_time".to_string(), "_ratio", 0.001),
        "uptime"
        | "restartingTime"
        | "lastCheckpointDuration"
        | "lastCheckpointAlignmentDuration"
        | "watermarkLag"
        | "currentInputWatermark"
        | "currentOutputWatermark" => (snake(p.name), "_seconds", 0.001),
        "lastCheckpointSize"
        | "lastCheckpointIncrementalSize"
        | "lastCheckpointPersistedInFlightSize"
        | "stateSize"
        | "processResidentMemory"
        | "memoryLimit"
        | "rocksdbBlockCacheUsage"
        | "rocksdbMemtableUsage" => (snake(p.name), "_bytes", 1.0),
        "processCpuTime" => (snake(p.name), "_seconds", 1.0),
        _ => (snake(p.name), "", 1.0),
    };
    Some((format!("weir_{scope}_{base}{unit}{total}"), factor))
}

fn label(name: &str, value: &str) -> LabelPair {
    let mut l = LabelPair::default();
    l.set_name(name.to_string());
    l.set_value(value.to_string());
    l
}

/// The points as metric families (one per name), in name order.
pub fn families(points: &[MetricPoint]) -> Vec<MetricFamily> {
    let mut by_name: BTreeMap<String, MetricFamily> = BTreeMap::new();
    for p in points {
        let Some((name, factor)) = prometheus_name(p) else {
            continue;
        };
        let value = p.value * factor;
        let family = by_name.entry(name.clone()).or_insert_with(|| {
            let mut f = MetricFamily::default();
            f.set_name(name);
            f.set_help(p.help.to_string());
            f.set_field_type(match p.kind {
                Kind::Counter => MetricType::COUNTER,
                Kind::Gauge => MetricType::GAUGE,
            });
            f
        });
        let mut labels = Vec::new();
        if let Some(q) = &p.query {
            labels.push(label("query", q));
        }
        if let Some(o) = &p.operator {
            labels.push(label("operator", o));
        }
        if let Some(id) = p.operator_id {
            labels.push(label("operator_id", &id.to_string()));
        }
        if let Some(s) = p.subtask {
            labels.push(label("subtask", &s.to_string()));
        }
        for (k, v) in &p.labels {
            labels.push(label(k, v));
        }
        let mut m = Metric::from_label(labels);
        match p.kind {
            Kind::Counter => {
                let mut c = Counter::default();
                c.set_value(value);
                m.set_counter(c);
            }
            Kind::Gauge => {
                let mut g = Gauge::default();
                g.set_value(value);
                m.set_gauge(g);
            }
        }
        family.mut_metric().push(m);
    }
    by_name.into_values().collect()
}

/// The exposition text of every metric.
pub fn render(engine: &Engine) -> Result<String, String> {
    let families = families(&engine.metrics());
    let mut buf = Vec::new();
    TextEncoder::new()
        .encode(&families, &mut buf)
        .map_err(|e| e.to_string())?;
    String::from_utf8(buf).map_err(|e| e.to_string())
}

/// Serves `/metrics` on `listener` until the server stops.
pub async fn serve(engine: Arc<Engine>, listener: tokio::net::TcpListener) {
    use axum::http::{header, StatusCode};
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let engine = engine.clone();
            async move {
                match render(&engine) {
                    Ok(text) => (
                        StatusCode::OK,
                        [(
                            header::CONTENT_TYPE,
                            "text/plain; version=0.0.4; charset=utf-8",
                        )],
                        text,
                    ),
                    Err(e) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                        e,
                    ),
                }
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!(error = %e, "metrics endpoint stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let name = |scope, n, kind| prometheus_name(&MetricPoint::new(scope, n, kind, 1.0, ""));
        assert_eq!(
            name(Scope::Subtask, "busyTimeMsPerSecond", Kind::Gauge).unwrap(),
            ("weir_operator_busy_time_ratio".to_string(), 0.001)
        );
        assert_eq!(
            name(Scope::Subtask, "numRecordsIn", Kind::Counter).unwrap(),
            ("weir_operator_num_records_in_total".to_string(), 1.0)
        );
        assert_eq!(
            name(Scope::Query, "lastCheckpointDuration", Kind::Gauge).unwrap(),
            (
                "weir_query_last_checkpoint_duration_seconds".to_string(),
                0.001
            )
        );
        assert_eq!(
            name(Scope::Server, "processResidentMemory", Kind::Gauge)
                .unwrap()
                .0,
            "weir_server_process_resident_memory_bytes"
        );
        let p = MetricPoint::new(Scope::Operator, "numRecordsIn", Kind::Counter, 1.0, "");
        assert!(prometheus_name(&p).is_none());
    }
}
