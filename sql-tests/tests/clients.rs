//! Real client programs against weir: `psql` running `clients/tour.sql`,
//! psycopg 3 running `clients/psycopg_test.py`, and SQLAlchemy 2 with
//! pandas running `clients/sqlalchemy_test.py`.
//!
//! A missing `psql` or `python3` fails the test: `./scripts/ensure-deps.sh
//! --test` (run by `./scripts/test.sh`) installs them, and
//! `clients/setup.sh` the Python libraries. `WEIR_REFERENCE_PG` is not
//! supported here.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use weir_sql_tests::TestServer;

fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// Fails the test when `program` does not run.
fn require(program: &str, version_arg: &str) {
    let ran = Command::new(program)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ran,
        "{program} is not installed; ./scripts/ensure-deps.sh --test installs it"
    );
}

/// Installs the Python client libraries (`clients/setup.sh`), once for
/// the tests of this file (two pip runs at once could collide).
fn python_setup() {
    static SETUP: OnceLock<Result<(), String>> = OnceLock::new();
    let result = SETUP.get_or_init(|| {
        require("python3", "--version");
        let setup = Command::new("sh")
            .arg(clients_dir().join("setup.sh"))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running clients/setup.sh: {e}"))?;
        if setup.status.success() {
            Ok(())
        } else {
            Err(format!(
                "clients/setup.sh failed (is pip available?)\n{}",
                describe(&setup)
            ))
        }
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// Runs `clients/<script> PORT` against a fresh server; it must exit 0 and
/// print `<name>: all checks passed`.
fn run_python_client(script: &str, name: &str) {
    python_setup();
    let server = TestServer::start().unwrap_or_else(|e| panic!("{e:#}"));
    let output = Command::new("python3")
        .arg(clients_dir().join(script))
        .arg(server.port().to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {script}: {e}"));
    let details = describe(&output);
    assert!(output.status.success(), "{script} failed\n{details}");
    assert!(
        String::from_utf8_lossy(&output.stdout).contains(&format!("{name}: all checks passed")),
        "{details}"
    );
}

fn describe(output: &Output) -> String {
    format!(
        "exit status: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// The result printed after the `\echo` line `marker`: its lines up to and
/// including the `(N rows)` footer.
fn result_after<'a>(stdout: &'a str, marker: &str) -> Vec<&'a str> {
    let mut lines = stdout.lines().skip_while(|l| *l != marker).skip(1);
    let mut out = Vec::new();
    for line in lines.by_ref() {
        out.push(line);
        if line.starts_with('(') && (line.ends_with(" rows)") || line.ends_with(" row)")) {
            break;
        }
    }
    out
}

#[test]
fn psql_tour() {
    require("psql", "--version");
    let server = TestServer::start().unwrap_or_else(|e| panic!("{e:#}"));
    let script = clients_dir().join("tour.sql");
    let output = Command::new("psql")
        .args([
            "-X",
            "-w",
            "-A",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            server.host(),
        ])
        .args([
            "-p",
            &server.port().to_string(),
            "-U",
            "weir",
            "-d",
            "weir",
            "-f",
        ])
        .arg(&script)
        .env("PGCONNECT_TIMEOUT", "10")
        .env_remove("PGPASSWORD")
        .env_remove("PGSERVICE")
        .stdin(Stdio::null())
        .output()
        .expect("running psql");
    let details = describe(&output);
    assert!(output.status.success(), "psql failed\n{details}");
    let stdout = String::from_utf8_lossy(&output.stdout);

    for tag in ["CREATE TABLE", "COPY 3", "COPY 2", "INSERT 0 1"] {
        assert!(
            stdout.lines().any(|l| l == tag),
            "missing command tag {tag:?}\n{details}"
        );
    }

    assert_eq!(
        result_after(&stdout, "totals before changes"),
        [
            "customer|orders|total",
            "alice|2|15.75",
            "bob|2|20.00",
            "carol|1|7.75",
            "dave|1|1.00",
            "(4 rows)",
        ],
        "{details}"
    );
    assert_eq!(
        result_after(&stdout, "totals after changes"),
        [
            "customer|orders|total",
            "alice|1|10.50",
            "bob|2|1.00",
            "carol|1|7.75",
            "(3 rows)",
        ],
        "{details}"
    );
    assert_eq!(
        result_after(&stdout, "orders"),
        [
            "id|customer|amount|placed",
            "1|alice|10.50|2024-01-01",
            "2|bob|1.00|2024-01-02",
            "4|carol|7.75|2024-01-04",
            "5|bob||2024-01-05",
            "(4 rows)",
        ],
        "{details}"
    );
}

#[test]
fn psycopg() {
    run_python_client("psycopg_test.py", "psycopg");
}

/// SQLAlchemy's inspector and pandas' read_sql_table / to_sql read
/// pg_catalog, partly through unqualified names (`pg_type`).
#[test]
fn sqlalchemy_and_pandas() {
    run_python_client("sqlalchemy_test.py", "sqlalchemy");
}
