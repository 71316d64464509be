//! Starting, stopping, crashing and restarting a `weir` server process.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tempfile::TempDir;

/// Host every test server listens on.
pub const HOST: &str = "127.0.0.1";
/// User name the tests connect with.
pub const USER: &str = "weir";
/// Database name the tests connect to.
pub const DATABASE: &str = "weir";

/// Number of log lines printed when a test fails.
pub const LOG_TAIL_LINES: usize = 60;

fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(
        std::env::var(name)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// How long to wait for the server to accept TCP connections
/// (`WEIR_TEST_STARTUP_TIMEOUT`, seconds, default 60).
pub fn startup_timeout() -> Duration {
    env_secs("WEIR_TEST_STARTUP_TIMEOUT", 60)
}

/// How long to wait for the server to exit after SIGTERM
/// (`WEIR_TEST_SHUTDOWN_TIMEOUT`, seconds, default 30).
pub fn shutdown_timeout() -> Duration {
    env_secs("WEIR_TEST_SHUTDOWN_TIMEOUT", 30)
}

/// Locates the `weir` binary: `$WEIR_BIN` if set, otherwise `weir` next to the
/// directory holding the running test executable
/// (`target/debug/deps/<test>` -> `target/debug/weir`).
pub fn weir_binary() -> Result<PathBuf> {
    if let Some(bin) = std::env::var_os("WEIR_BIN") {
        let bin = PathBuf::from(bin);
        if !bin.is_file() {
            bail!("WEIR_BIN={} does not exist", bin.display());
        }
        return Ok(bin);
    }
    let exe = std::env::current_exe().context("current_exe")?;
    let mut candidates = Vec::new();
    if let Some(deps) = exe.parent() {
        if let Some(profile) = deps.parent() {
            candidates.push(profile.join("weir"));
        }
        candidates.push(deps.join("weir"));
    }
    for c in &candidates {
        if c.is_file() {
            return Ok(c.clone());
        }
    }
    bail!(
        "weir binary not found (looked at {}); build it with `cargo build -p weir-server --bin weir` \
         (same CARGO_TARGET_DIR) or set WEIR_BIN",
        candidates
            .iter()
            .map(|c| c.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )
}

/// Prints, once per process, which binary the tests use and how old it is,
/// so a stale binary is easy to spot.
fn announce_binary(bin: &Path) {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let age = std::fs::metadata(bin)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .map(|d| format!(" (built {}s ago)", d.as_secs()))
            .unwrap_or_default();
        eprintln!("weir-sql-tests: using {}{age}", bin.display());
    });
}

/// Returns a currently free loopback port (bind to port 0, read it, release it).
pub fn free_port() -> Result<u16> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("binding 127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind((Ipv4Addr::LOCALHOST, port)).is_ok()
}

/// A `weir` server process with its own temporary data directory.
///
/// The process's stdout and stderr are appended to `server.log` inside the
/// temporary directory. Dropping the value kills the process and deletes the
/// directory (set `WEIR_TEST_KEEP_DATA=1` to keep it); if the drop happens
/// while the thread is panicking, the tail of the log is printed.
pub struct TestServer {
    bin: PathBuf,
    root: Option<TempDir>,
    root_path: PathBuf,
    data_dir: PathBuf,
    log_path: PathBuf,
    port: u16,
    child: Option<Child>,
    generation: u64,
    extra_args: Vec<String>,
    keep_dir: bool,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("bin", &self.bin)
            .field("data_dir", &self.data_dir)
            .field("port", &self.port)
            .field("pid", &self.pid())
            .field("generation", &self.generation)
            .finish()
    }
}

impl TestServer {
    /// Starts a server on a free port with a fresh data directory and waits
    /// until it accepts connections.
    pub fn start() -> Result<Self> {
        Self::start_with_args(Vec::new())
    }

    /// Like [`TestServer::start`], passing additional command-line arguments.
    pub fn start_with_args(extra_args: Vec<String>) -> Result<Self> {
        Self::start_prepared(extra_args, |_| Ok(()))
    }

    /// Like [`TestServer::start_with_args`], calling `prepare` with the
    /// empty data directory before the server starts (e.g. to mount a
    /// small filesystem there).
    pub fn start_prepared(
        extra_args: Vec<String>,
        prepare: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<Self> {
        let bin = weir_binary()?;
        announce_binary(&bin);
        let root = tempfile::Builder::new()
            .prefix("weir-test-")
            .tempdir()
            .context("creating temp dir")?;
        let root_path = root.path().to_path_buf();
        let data_dir = root_path.join("data");
        std::fs::create_dir_all(&data_dir)?;
        prepare(&data_dir)?;
        let log_path = root_path.join("server.log");
        let mut server = TestServer {
            bin,
            root: Some(root),
            root_path,
            data_dir,
            log_path,
            port: free_port()?,
            child: None,
            generation: 0,
            extra_args,
            keep_dir: false,
        };
        server.launch()?;
        Ok(server)
    }

    /// Address of the metrics endpoint, as the server printed it.
    pub fn metrics_addr(&self) -> Result<String> {
        let log = self.log_contents();
        log.lines()
            .find_map(|l| l.split("weir metrics on http://").nth(1))
            .map(|a| a.trim_end_matches("/metrics").trim().to_string())
            .ok_or_else(|| anyhow::anyhow!("no metrics address in the server log:\n{log}"))
    }

    /// `GET /metrics`: the response head and body.
    pub async fn scrape_metrics(&self) -> Result<(String, String)> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(self.metrics_addr()?).await?;
        s.write_all(b"GET /metrics HTTP/1.0\r\nHost: weir\r\n\r\n")
            .await?;
        let mut raw = String::new();
        s.read_to_string(&mut raw).await?;
        let (head, body) = raw
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("not an HTTP response: {raw}"))?;
        Ok((head.to_string(), body.to_string()))
    }

    /// Port of the Postgres listener.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Host of the Postgres listener.
    pub fn host(&self) -> &'static str {
        HOST
    }

    /// The data directory passed with `--data-dir`.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The temporary directory holding the data dir and the log.
    pub fn root_dir(&self) -> &Path {
        &self.root_path
    }

    /// File receiving the server's stdout and stderr.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Incremented every time a server process is (re)started; connections
    /// made for an older generation must reconnect.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Process id of the running server, if any.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// A libpq-style connection string for tokio-postgres.
    pub fn connection_string(&self) -> String {
        format!(
            "host={HOST} port={} user={USER} dbname={DATABASE} connect_timeout=10",
            self.port
        )
    }

    /// Connects with tokio-postgres, retrying for a few seconds. The
    /// connection task is spawned on the current tokio runtime.
    pub async fn connect(&self) -> Result<tokio_postgres::Client> {
        connect_with_retry(&self.connection_string(), Duration::from_secs(10)).await
    }

    /// Whether the process is still running (reaps it if it exited).
    pub fn is_running(&mut self) -> bool {
        match &mut self.child {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// Returns the exit status if the process has exited on its own.
    pub fn try_exit_status(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL (simulated crash) and wait for the process to exit.
    pub fn kill(&mut self) -> Result<()> {
        if let Some(mut child) = self.child.take() {
            self.log_marker(&format!("weir-sql-tests: SIGKILL pid {}", child.id()));
            if child.try_wait()?.is_none() {
                child.kill().context("killing weir")?;
            }
            child.wait().context("waiting for weir")?;
        }
        Ok(())
    }

    /// SIGTERM and wait for the process to exit; returns its exit status
    /// (a clean shutdown is `status.success()`). Fails (after SIGKILL) if the
    /// server does not exit within the shutdown timeout.
    pub fn stop(&mut self) -> Result<ExitStatus> {
        let Some(mut child) = self.child.take() else {
            bail!("server is not running");
        };
        if let Some(status) = child.try_wait()? {
            bail!(
                "server had already exited with {status} before SIGTERM\n{}",
                self.log_tail_block(LOG_TAIL_LINES)
            );
        }
        self.log_marker(&format!("weir-sql-tests: SIGTERM pid {}", child.id()));
        let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
        // SAFETY: plain kill(2) on the pid of a child we own and have not reaped.
        let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
        if rc != 0 {
            return Err(anyhow!(std::io::Error::last_os_error())).context("sending SIGTERM");
        }
        let deadline = Instant::now() + shutdown_timeout();
        loop {
            if let Some(status) = child.try_wait()? {
                self.log_marker(&format!("weir-sql-tests: server exited with {status}"));
                return Ok(status);
            }
            if Instant::now() >= deadline {
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "server did not exit within {:?} after SIGTERM; killed it\n{}",
                    shutdown_timeout(),
                    self.log_tail_block(LOG_TAIL_LINES)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Graceful restart: SIGTERM, wait, start again on the same data dir.
    /// A non-zero exit status after SIGTERM is reported on stderr but does
    /// not fail the restart (see the `lifecycle` test for that check).
    pub fn restart(&mut self) -> Result<()> {
        let status = self.stop()?;
        if !status.success() {
            eprintln!(
                "weir-sql-tests: warning: weir exited with {status} after SIGTERM (expected a clean exit)"
            );
        }
        self.launch()
    }

    /// Crash restart: SIGKILL, wait, start again on the same data dir.
    pub fn crash_and_restart(&mut self) -> Result<()> {
        self.kill()?;
        self.launch()
    }

    /// Starts the process again if it is not running (e.g. after `kill`).
    pub fn start_again(&mut self) -> Result<()> {
        if self.is_running() {
            bail!("server is already running");
        }
        self.child = None;
        self.launch()
    }

    /// Keeps the temporary directory (data dir and `server.log`) when the
    /// value is dropped, as `WEIR_TEST_KEEP_DATA` does for every server.
    /// A test calls it before failing with a message that names the log.
    pub fn keep_dir_on_drop(&mut self) {
        self.keep_dir = true;
    }

    /// Whole server log so far.
    pub fn log_contents(&self) -> String {
        std::fs::read(&self.log_path)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// The last `lines` lines of the server log.
    pub fn log_tail(&self, lines: usize) -> String {
        let contents = self.log_contents();
        let all: Vec<&str> = contents.lines().collect();
        let start = all.len().saturating_sub(lines);
        all[start..].join("\n")
    }

    /// The log tail framed with a header naming the log file.
    pub fn log_tail_block(&self, lines: usize) -> String {
        format!(
            "----- last {lines} lines of {} -----\n{}\n----- end of server log -----",
            self.log_path.display(),
            self.log_tail(lines)
        )
    }

    fn log_marker(&self, msg: &str) {
        if let Ok(mut f) = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
        {
            let _ = writeln!(f, "===== {msg} =====");
        }
    }

    fn open_log(&self) -> Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))
    }

    /// Spawns the process and waits for readiness. Reuses the current port
    /// when it is free, otherwise (or if the server cannot bind it) falls
    /// back to a fresh free port.
    fn launch(&mut self) -> Result<()> {
        const ATTEMPTS: usize = 3;
        let mut last_err = None;
        for attempt in 0..ATTEMPTS {
            if attempt > 0 || !wait_port_free(self.port, Duration::from_secs(5)) {
                self.port = free_port()?;
            }
            match self.spawn_and_wait() {
                Ok(()) => {
                    self.generation += 1;
                    return Ok(());
                }
                Err(LaunchError::PortInUse(e)) => last_err = Some(e),
                Err(LaunchError::Fatal(e)) => return Err(e),
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow!("could not start weir")))
    }

    fn spawn_and_wait(&mut self) -> std::result::Result<(), LaunchError> {
        let log_start = std::fs::metadata(&self.log_path)
            .map(|m| m.len())
            .unwrap_or(0);
        let listen = format!("{HOST}:{}", self.port);
        self.log_marker(&format!(
            "weir-sql-tests: starting {} --data-dir {} --listen {listen} (generation {})",
            self.bin.display(),
            self.data_dir.display(),
            self.generation + 1
        ));
        let out = self.open_log().map_err(LaunchError::Fatal)?;
        let err = out
            .try_clone()
            .context("cloning log handle")
            .map_err(LaunchError::Fatal)?;
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--listen")
            .arg(&listen)
            .arg("--metrics-listen")
            .arg(format!("{HOST}:0"))
            .args(&self.extra_args)
            // Configuration from the environment would override the
            // isolated setup of the test.
            .env_remove("WEIR_CONFIG")
            .env_remove("WEIR_DATA_DIR")
            .env_remove("WEIR_LISTEN")
            .env_remove("WEIR_METRICS_LISTEN")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        if std::env::var_os("WEIR_LOG").is_none() {
            // Recovery and shutdown messages help when reading a failure's log.
            cmd.env("WEIR_LOG", "info");
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("spawning {}", self.bin.display()))
            .map_err(LaunchError::Fatal)?;
        self.child = Some(child);

        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let deadline = Instant::now() + startup_timeout();
        loop {
            let child = self.child.as_mut().expect("child just spawned");
            if let Some(status) = child.try_wait().map_err(|e| LaunchError::Fatal(e.into()))? {
                self.child = None;
                let new_log = self.log_since(log_start);
                let msg = anyhow!(
                    "weir exited during startup with {status}\n{}",
                    self.log_tail_block(LOG_TAIL_LINES)
                );
                let lower = new_log.to_ascii_lowercase();
                if lower.contains("address already in use") || lower.contains("addrinuse") {
                    return Err(LaunchError::PortInUse(msg));
                }
                return Err(LaunchError::Fatal(msg));
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let _ = self.kill();
                return Err(LaunchError::Fatal(anyhow!(
                    "weir did not accept connections on {addr} within {:?}\n{}",
                    startup_timeout(),
                    self.log_tail_block(LOG_TAIL_LINES)
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log_since(&self, offset: u64) -> String {
        let all = std::fs::read(&self.log_path).unwrap_or_default();
        let start = usize::try_from(offset).unwrap_or(0).min(all.len());
        String::from_utf8_lossy(&all[start..]).into_owned()
    }
}

enum LaunchError {
    PortInUse(anyhow::Error),
    Fatal(anyhow::Error),
}

fn wait_port_free(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if port_is_free(port) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.log_tail_block(LOG_TAIL_LINES));
        }
        let keep =
            self.keep_dir || std::env::var_os("WEIR_TEST_KEEP_DATA").is_some_and(|v| !v.is_empty());
        if let Some(root) = self.root.take() {
            if keep {
                let path = root.keep();
                eprintln!("weir-sql-tests: kept test directory {}", path.display());
            }
        }
    }
}

/// Connects with tokio-postgres (no TLS), retrying until `timeout` elapses.
/// The connection future is spawned on the current tokio runtime; its errors
/// (e.g. after the server was killed) are ignored.
pub async fn connect_with_retry(
    conn_str: &str,
    timeout: Duration,
) -> Result<tokio_postgres::Client> {
    Ok(connect_session(conn_str, timeout).await?.0)
}

/// Like [`connect_with_retry`], also returning the task driving the
/// connection: aborting it closes the session's socket even while the
/// `Client` is still held somewhere.
pub async fn connect_session(
    conn_str: &str,
    timeout: Duration,
) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>)> {
    let deadline = Instant::now() + timeout;
    loop {
        match tokio_postgres::connect(conn_str, tokio_postgres::NoTls).await {
            Ok((client, connection)) => {
                let task = tokio::spawn(async move {
                    let _ = connection.await;
                });
                return Ok((client, task));
            }
            Err(e) => {
                // A server-side rejection (bad user/database...) will not go
                // away, except "the database system is starting up" (57P03).
                let permanent = e
                    .code()
                    .is_some_and(|c| *c != tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW);
                if permanent || Instant::now() >= deadline {
                    return Err(anyhow!(crate::db::describe_pg_error(&e)))
                        .with_context(|| format!("connecting to {conn_str}"));
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}
