//! Runs every `sql-tests/slt/**/*.slt` file against a fresh `weir` server,
//! once with the simple query protocol and once with the extended protocol.
//!
//! This is a `harness = false` test: it understands the usual libtest
//! arguments (name filters, `--exact`, `--skip`, `--list`,
//! `--test-threads N`) and prints a libtest-style summary.
//!
//! Environment:
//! * `WEIR_BIN`: path of the server binary (default: `target/<profile>/weir`).
//! * `WEIR_SLT_JOBS`: files run concurrently (default 2).
//! * `WEIR_SLT_TIMEOUT`: seconds allowed per file and mode (default 600).
//! * `WEIR_REFERENCE_PG`: run the files against this real Postgres instead
//!   (connection string), to check the expected results.
//!
//! The files under `slt/postgres/` are proven against PostgreSQL on every
//! run: besides weir, each also runs (in both modes) against a real
//! PostgreSQL that this test starts ([`ReferencePostgres`]); those cases
//! are named `<file>::<mode>::postgres`.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use weir_sql_tests::{
    create_reference_database, drop_reference_database, lock, reference_postgres, run_slt_file,
    share, QueryMode, ReferencePostgres, Target, TestServer,
};

const LOG_TAIL_LINES: usize = 80;

/// Files under this directory of `slt/` also run against a real PostgreSQL.
const PROVEN_DIR: &str = "postgres/";

/// What a case runs against.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Engine {
    /// A fresh weir server (or the `WEIR_REFERENCE_PG` Postgres, if set).
    Weir,
    /// The PostgreSQL started by this test, for the files under
    /// [`PROVEN_DIR`].
    Postgres,
}

#[derive(Clone)]
struct Case {
    file: PathBuf,
    rel: String,
    mode: QueryMode,
    index: usize,
    engine: Engine,
}

impl Case {
    fn name(&self) -> String {
        match self.engine {
            Engine::Weir => format!("{}::{}", self.rel, self.mode),
            Engine::Postgres => format!("{}::{}::postgres", self.rel, self.mode),
        }
    }
}

struct Outcome {
    name: String,
    result: Result<(), String>,
    elapsed: Duration,
}

#[derive(Default)]
struct Args {
    filters: Vec<String>,
    skips: Vec<String>,
    exact: bool,
    list: bool,
    ignored_only: bool,
    jobs: Option<usize>,
}

fn parse_args() -> Args {
    let mut args = Args::default();
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--list" => args.list = true,
            "--exact" => args.exact = true,
            "--ignored" => args.ignored_only = true,
            "--skip" => args.skips.extend(it.next()),
            "--test-threads" => args.jobs = it.next().and_then(|v| v.parse().ok()),
            "--format" | "--color" | "--logfile" | "-Z" | "--report-time" => {
                it.next();
            }
            a if a.starts_with("--test-threads=") => {
                args.jobs = a["--test-threads=".len()..].parse().ok();
            }
            a if a.starts_with("--skip=") => args.skips.push(a["--skip=".len()..].to_string()),
            a if a.starts_with('-') => {}
            a => args.filters.push(a.to_string()),
        }
    }
    args
}

fn discover(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            discover(&path, out);
        } else if path.extension().is_some_and(|e| e == "slt") {
            out.push(path);
        }
    }
}

fn timeout() -> Duration {
    Duration::from_secs(
        std::env::var("WEIR_SLT_TIMEOUT")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(600),
    )
}

async fn run_against_weir(case: &Case) -> Result<(), String> {
    let server = tokio::task::spawn_blocking(TestServer::start)
        .await
        .map_err(|e| format!("server start task failed: {e}"))?
        .map_err(|e| format!("could not start weir: {e:#}"))?;
    let shared = share(server);
    let result = match tokio::time::timeout(
        timeout(),
        run_slt_file(&case.file, Target::Weir(shared.clone()), case.mode),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {:?}", timeout())),
    };
    let result = {
        let mut s = lock(&shared);
        match result {
            Ok(()) => match s.try_exit_status() {
                Some(status) => Err(format!(
                    "all records passed, but the server process exited with {status}\n{}",
                    s.log_tail_block(LOG_TAIL_LINES)
                )),
                None => Ok(()),
            },
            Err(e) => Err(format!("{e}\n{}", s.log_tail_block(LOG_TAIL_LINES))),
        }
    };
    // Kill the process and remove the data dir off the async thread.
    let _ = tokio::task::spawn_blocking(move || drop(shared)).await;
    result
}

async fn run_against_reference(case: &Case, base: &str) -> Result<(), String> {
    let db = format!("weir_slt_{}_{}", case.index, case.mode);
    let conn = create_reference_database(base, &db)
        .await
        .map_err(|e| format!("creating reference database {db}: {e:#}"))?;
    let result = match tokio::time::timeout(
        timeout(),
        run_slt_file(&case.file, Target::Postgres(conn), case.mode),
    )
    .await
    {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {:?}", timeout())),
    };
    if let Err(e) = drop_reference_database(base, &db).await {
        eprintln!("warning: dropping reference database {db}: {e:#}");
    }
    result
}

/// The Postgres a case runs against, if any: `WEIR_REFERENCE_PG` for every
/// case when set, else the started PostgreSQL for the proving cases (or
/// why it could not start).
#[derive(Clone)]
struct References {
    env: Option<String>,
    started: Option<Result<String, String>>,
}

impl References {
    fn for_case(&self, case: &Case) -> Result<Option<String>, String> {
        if let Some(env) = &self.env {
            return Ok(Some(env.clone()));
        }
        match (case.engine, &self.started) {
            (Engine::Weir, _) => Ok(None),
            (Engine::Postgres, Some(Ok(conn))) => Ok(Some(conn.clone())),
            (Engine::Postgres, Some(Err(e))) => Err(e.clone()),
            (Engine::Postgres, None) => Err("the reference PostgreSQL was not started".into()),
        }
    }
}

fn run_case(case: &Case, references: &References) -> Outcome {
    let reference = match references.for_case(case) {
        Ok(r) => r,
        Err(e) => {
            return Outcome {
                name: case.name(),
                result: Err(format!("cannot run against PostgreSQL: {e}")),
                elapsed: Duration::ZERO,
            }
        }
    };
    let reference = reference.as_deref();
    let start = Instant::now();
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        rt.block_on(async {
            match reference {
                Some(base) => run_against_reference(case, base).await,
                None => run_against_weir(case).await,
            }
        })
    }))
    .unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown panic".to_string());
        Err(format!("harness panicked: {msg}"))
    });
    Outcome {
        name: case.name(),
        result,
        elapsed: start.elapsed(),
    }
}

fn main() -> ExitCode {
    let args = parse_args();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("slt");
    let mut files = Vec::new();
    discover(&root, &mut files);
    files.sort();

    let mut all = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let rel = file
            .strip_prefix(&root)
            .unwrap_or(file)
            .to_string_lossy()
            .replace('\\', "/");
        let proven = rel.starts_with(PROVEN_DIR) && reference_postgres().is_none();
        let engines: &[Engine] = if proven {
            &[Engine::Weir, Engine::Postgres]
        } else {
            &[Engine::Weir]
        };
        for &engine in engines {
            for mode in QueryMode::ALL {
                all.push(Case {
                    file: file.clone(),
                    rel: rel.clone(),
                    mode,
                    index: i,
                    engine,
                });
            }
        }
    }
    let total = all.len();
    let cases: Vec<Case> = all
        .into_iter()
        .filter(|c| {
            let name = c.name();
            let selected = args.filters.is_empty()
                || args.filters.iter().any(|f| {
                    if args.exact {
                        name == *f
                    } else {
                        name.contains(f.as_str())
                    }
                });
            let skipped = args.skips.iter().any(|s| name.contains(s.as_str()));
            selected && !skipped && !args.ignored_only
        })
        .collect();
    let filtered_out = total - cases.len();

    if args.list {
        for c in &cases {
            println!("{}: test", c.name());
        }
        return ExitCode::SUCCESS;
    }

    let reference = reference_postgres();
    if let Some(r) = &reference {
        println!("running the .slt files against the reference Postgres `{r}`");
    }
    // Started before the workers, stopped (and its directory removed) when
    // main returns.
    let mut started_pg = None;
    let started =
        cases.iter().any(|c| c.engine == Engine::Postgres).then(
            || match ReferencePostgres::start() {
                Ok(pg) => {
                    let conn = pg.connection_string();
                    println!("reference PostgreSQL started: {conn}");
                    started_pg = Some(pg);
                    Ok(conn)
                }
                Err(e) => Err(format!("{e:#}")),
            },
        );
    let references = References {
        env: reference,
        started,
    };
    println!("\nrunning {} tests", cases.len());
    let started = Instant::now();
    let jobs = args
        .jobs
        .or_else(|| {
            std::env::var("WEIR_SLT_JOBS")
                .ok()
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(2)
        .clamp(1, cases.len().max(1));

    let queue = Arc::new(Mutex::new(cases.iter().cloned().collect::<VecDeque<_>>()));
    let (tx, rx) = mpsc::channel();
    let workers: Vec<_> = (0..jobs)
        .map(|_| {
            let queue = queue.clone();
            let tx = tx.clone();
            let references = references.clone();
            std::thread::spawn(move || loop {
                let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop_front();
                let Some(case) = next else { break };
                if tx.send(run_case(&case, &references)).is_err() {
                    break;
                }
            })
        })
        .collect();
    drop(tx);

    let mut passed = 0;
    let mut failures = Vec::new();
    for outcome in rx {
        let secs = outcome.elapsed.as_secs_f64();
        match &outcome.result {
            Ok(()) => {
                passed += 1;
                println!("test {} ... ok ({secs:.1}s)", outcome.name);
            }
            Err(_) => println!("test {} ... FAILED ({secs:.1}s)", outcome.name),
        }
        if let Err(e) = outcome.result {
            failures.push((outcome.name, e));
        }
    }
    for w in workers {
        let _ = w.join();
    }

    if !failures.is_empty() {
        println!("\nfailures:\n");
        for (name, err) in &failures {
            println!("---- {name} ----\n{err}\n");
        }
        println!("failures:");
        for (name, _) in &failures {
            println!("    {name}");
        }
    }
    drop(started_pg);
    let failed = failures.len();
    let not_run = cases.len() - passed - failed;
    println!(
        "\ntest result: {}. {passed} passed; {} failed; 0 ignored; 0 measured; {filtered_out} filtered out; finished in {:.2}s\n",
        if failed == 0 && not_run == 0 { "ok" } else { "FAILED" },
        failed + not_run,
        started.elapsed().as_secs_f64()
    );
    if failed == 0 && not_run == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
