//! The Prometheus endpoint: `GET /metrics` in the text exposition format,
//! encoded by the `prometheus` crate from the same points `system.metrics`
//! shows. Names follow Prometheus conventions: `weir_<scope>_<name in
//! snake case>` with the unit (`_ms`, `_bytes`, `_seconds`) and `_total`
//! for counters; subtask metrics are `weir_operator_*` with the labels
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

/// The Prometheus name of a point; `None` for operator-scope points.
pub fn prometheus_name(p: &MetricPoint) -> Option<String> {
    let scope = match p.scope {
        Scope::Server => "server",
        Scope::Query => "query",
        Scope::Subtask => "operator",
        Scope::Operator => return None,
    };
    let unit = match p.name {
        "uptime"
        | "restartingTime"
        | "lastCheckpointDuration"
        | "lastCheckpointAlignmentDuration"
        | "watermarkLag"
        | "currentInputWatermark"
        | "currentOutputWatermark" => "_ms",
        "lastCheckpointSize"
        | "lastCheckpointIncrementalSize"
        | "lastCheckpointPersistedInFlightSize"
        | "stateSize"
        | "processResidentMemory"
        | "rocksdbBlockCacheUsage"
        | "rocksdbMemtableUsage" => "_bytes",
        "processCpuTime" => "_seconds",
        _ => "",
    };
    let total = if p.kind == Kind::Counter {
        "_total"
    } else {
        ""
    };
    Some(format!("weir_{scope}_{}{unit}{total}", snake(p.name)))
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
        let Some(name) = prometheus_name(p) else {
            continue;
        };
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
                c.set_value(p.value);
                m.set_counter(c);
            }
            Kind::Gauge => {
                let mut g = Gauge::default();
                g.set_value(p.value);
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
        let p = MetricPoint::new(Scope::Subtask, "busyTimeMsPerSecond", Kind::Gauge, 1.0, "");
        assert_eq!(
            prometheus_name(&p).unwrap(),
            "weir_operator_busy_time_ms_per_second"
        );
        let p = MetricPoint::new(Scope::Subtask, "numRecordsIn", Kind::Counter, 1.0, "");
        assert_eq!(
            prometheus_name(&p).unwrap(),
            "weir_operator_num_records_in_total"
        );
        let p = MetricPoint::new(Scope::Server, "processResidentMemory", Kind::Gauge, 1.0, "");
        assert_eq!(
            prometheus_name(&p).unwrap(),
            "weir_server_process_resident_memory_bytes"
        );
        let p = MetricPoint::new(Scope::Operator, "numRecordsIn", Kind::Counter, 1.0, "");
        assert!(prometheus_name(&p).is_none());
    }
}
