//! The monitoring files shipped in `monitoring/`: the alert rules pass
//! `promtool check rules` and their unit tests (`promtool test rules`),
//! every metric the rules and the Grafana dashboard use is one a running
//! server exports, and every alert links a section of `docs/runbook.md`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use tokio::task::block_in_place;
use weir_sql_tests::sql::exec;
use weir_sql_tests::TestServer;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn promtool(args: &[&str], dir: &Path) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect(
            "promtool (Debian's prometheus package; scripts/ensure-deps.sh --test installs it)",
        );
    assert!(
        out.status.success(),
        "promtool {args:?} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `weir_*` metric names in a text.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("weir_") {
        let start = i + at;
        let boundary =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        let mut end = start;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end] == b'_'
                || bytes[end].is_ascii_digit())
        {
            end += 1;
        }
        if boundary && end > start + 5 {
            out.insert(text[start..end].to_string());
        }
        i = end.max(start + 1);
    }
    out
}

#[test]
fn alert_rules_pass_promtool_checks_and_their_tests() {
    let dir = repo().join("monitoring/prometheus");
    promtool(&["check", "rules", "alerts.yml"], &dir);
    promtool(&["test", "rules", "alerts_test.yml"], &dir);
}

#[test]
fn every_alert_links_a_runbook_section() {
    let rules = std::fs::read_to_string(repo().join("monitoring/prometheus/alerts.yml")).unwrap();
    let runbook = std::fs::read_to_string(repo().join("docs/runbook.md")).unwrap();
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| {
            h.to_lowercase()
                .chars()
                .filter(|c| c.is_alphanumeric() || *c == ' ' || *c == '-')
                .collect::<String>()
                .replace(' ', "-")
        })
        .collect();
    let links: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.split("docs/runbook.md#").nth(1))
        .map(|a| a.trim_end_matches('"'))
        .collect();
    let alerts = rules.matches("- alert:").count();
    assert_eq!(links.len(), alerts, "every alert has a runbook_url");
    for a in links {
        assert!(
            anchors.contains(a),
            "runbook has no section #{a}; sections: {anchors:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_rules_use_only_exported_metrics() {
    let dashboard =
        std::fs::read_to_string(repo().join("monitoring/grafana/weir-dashboard.json")).unwrap();
    let parsed: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    assert!(parsed["panels"].as_array().unwrap().len() >= 10);
    let rules = std::fs::read_to_string(repo().join("monitoring/prometheus/alerts.yml")).unwrap();
    let mut used = metric_names(&dashboard);
    used.extend(metric_names(&rules));

    // A server with a query that failed once, so every family exists.
    let server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    exec(&client, "CREATE TABLE t (k int, v int)").await;
    exec(
        &client,
        "CREATE STREAMING QUERY q WITH (restart_strategy = 'fixed-delay', restart_strategy.delay = '50ms') AS \
         SELECT k, count(*) AS n FROM t WHERE NOT fail_if(v = 1, 'once', 1) GROUP BY k",
    )
    .await;
    exec(&client, "INSERT INTO t VALUES (1, 1), (2, 2)").await;
    exec(&client, "FLUSH").await;
    let (_, body) = server.scrape_metrics().await.unwrap();
    let exported = metric_names(&body);
    // Watermarks exist once a query has event time (none here).
    let event_time_only = [
        "weir_operator_current_input_watermark_seconds",
        "weir_operator_current_output_watermark_seconds",
        "weir_operator_watermark_lag_seconds",
    ];
    for name in &used {
        assert!(
            exported.contains(name) || event_time_only.contains(&name.as_str()),
            "{name} is used by the dashboard or the alert rules but not exported"
        );
    }
}
