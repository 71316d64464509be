//! What psql prints for Weir's statements: the command tag of each (as a
//! user reads it, and as drivers report it), and warnings sent before a
//! statement's result.

use std::process::{Command, Stdio};

use tokio::task::block_in_place;
use weir_sql_tests::TestServer;

/// Runs `script` through psql; returns (stdout, stderr).
fn psql(server: &TestServer, script: &str) -> (String, String) {
    let out = Command::new("psql")
        .args(["-X", "-w", "-v", "ON_ERROR_STOP=1", "-h", server.host()])
        .args(["-p", &server.port().to_string(), "-U", "weir", "-d", "weir"])
        .args(["-c", script])
        .env("PGCONNECT_TIMEOUT", "10")
        .stdin(Stdio::null())
        .output()
        .expect("psql must be installed (scripts/ensure-deps.sh --test installs it)");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "psql failed\n{stdout}\n{stderr}");
    (stdout, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_and_warnings() {
    let server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    let dir = server.root_dir().join("src");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.csv"), "1,2\n").unwrap();
    let (stdout, _) = block_in_place(|| {
        psql(
            &server,
            &format!(
                "CREATE TABLE t (k int, v int); \
                 CREATE SOURCE s (k int, v int) WITH (connector = 'file', path = '{}'); \
                 INSERT INTO t VALUES (1, 0); \
                 CREATE MATERIALIZED VIEW mv AS SELECT k FROM t; \
                 SET implicit_flush = on; \
                 FLUSH",
                dir.display()
            ),
        )
    });
    let tags: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        tags,
        [
            "CREATE TABLE",
            "CREATE SOURCE",
            "INSERT 0 1",
            "CREATE MATERIALIZED VIEW",
            "SET",
            "FLUSH"
        ],
        "{stdout}"
    );
    // A query that fails on the rows already there is created, with a warning.
    let (stdout, stderr) = block_in_place(|| {
        psql(
            &server,
            "CREATE STREAMING QUERY strict WITH (restart_strategy = 'none') AS SELECT k, 10 / v AS r FROM t",
        )
    });
    assert_eq!(stdout.trim(), "CREATE STREAMING QUERY");
    assert!(
        stderr.contains("WARNING:  strict was created, but")
            && stderr.contains("division by zero")
            && stderr.contains("system.exceptions"),
        "{stderr}"
    );
}
