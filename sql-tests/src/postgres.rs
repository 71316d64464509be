//! A real PostgreSQL server started by a test, to prove expected results.
//!
//! [`ReferencePostgres::start`] runs `initdb` into a fresh temporary
//! directory and starts `postgres` on a free loopback port, with its unix
//! socket in the same directory and durability off (`fsync`,
//! `synchronous_commit`, `full_page_writes`) for speed. Dropping the value
//! stops the server (fast shutdown, then SIGKILL) and removes the
//! directory.
//!
//! The binaries are taken from `$WEIR_PG_BINDIR` if set, otherwise from the
//! newest `/usr/lib/postgresql/<version>/bin` holding `initdb` (Debian's
//! layout; `scripts/ensure-deps.sh --test` installs the package). PostgreSQL
//! refuses to run as root: when the test runs as root, `initdb` and the
//! server run as the `postgres` system user, which then owns the directory.

use std::fs::{File, OpenOptions};
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use tempfile::TempDir;

use crate::server::{free_port, shutdown_timeout, startup_timeout};

/// Environment variable naming the directory of `initdb` and `postgres`.
pub const BINDIR_ENV: &str = "WEIR_PG_BINDIR";

/// The superuser `initdb` creates; connections use it without a password.
pub const SUPERUSER: &str = "postgres";

/// System user the server runs as when the test runs as root.
const SYSTEM_USER: &str = "postgres";

/// A PostgreSQL server in its own temporary directory.
pub struct ReferencePostgres {
    child: Option<Child>,
    port: u16,
    bindir: PathBuf,
    log_path: PathBuf,
    // Last: removed after the server stopped.
    root: TempDir,
}

impl std::fmt::Debug for ReferencePostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReferencePostgres")
            .field("port", &self.port)
            .field("dir", &self.root.path())
            .finish()
    }
}

/// `(uid, gid)` of a system user.
fn system_user(name: &str) -> Result<(u32, u32)> {
    let cname = std::ffi::CString::new(name)?;
    // SAFETY: getpwnam returns NULL or a pointer to static storage, read
    // at once (the tests do not call getpwnam concurrently elsewhere).
    let pw = unsafe { libc::getpwnam(cname.as_ptr()) };
    if pw.is_null() {
        bail!(
            "system user \"{name}\" does not exist; PostgreSQL cannot run as root \
             (install the postgresql package: scripts/ensure-deps.sh --test)"
        );
    }
    // SAFETY: checked non-NULL above.
    let pw = unsafe { &*pw };
    Ok((pw.pw_uid, pw.pw_gid))
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// The directory holding `initdb` and `postgres`.
pub fn bindir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os(BINDIR_ENV) {
        let dir = PathBuf::from(dir);
        if !dir.join("initdb").is_file() {
            bail!("{BINDIR_ENV}={} holds no initdb", dir.display());
        }
        return Ok(dir);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, dir)| dir).ok_or_else(|| {
        anyhow!(
            "PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb); \
             install them with scripts/ensure-deps.sh --test, or set {BINDIR_ENV}"
        )
    })
}

impl ReferencePostgres {
    /// Creates a cluster and starts its server; returns once it accepts
    /// connections. Blocking: call it outside async code (or in
    /// `spawn_blocking`).
    pub fn start() -> Result<ReferencePostgres> {
        let bindir = bindir()?;
        let root = tempfile::Builder::new()
            .prefix("weir-reference-pg-")
            .tempdir()
            .context("creating the reference Postgres directory")?;
        let as_user = if is_root() {
            let (uid, gid) = system_user(SYSTEM_USER)?;
            std::os::unix::fs::chown(root.path(), Some(uid), Some(gid))
                .with_context(|| format!("chown {}", root.path().display()))?;
            Some((uid, gid))
        } else {
            None
        };
        let log_path = root.path().join("postgres.log");
        let data = root.path().join("data");
        let mut pg = ReferencePostgres {
            child: None,
            port: 0,
            bindir,
            log_path,
            root,
        };

        let mut initdb = pg.command("initdb", as_user)?;
        initdb
            .arg("-D")
            .arg(&data)
            .args(["-U", SUPERUSER, "-A", "trust", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"]);
        let status = initdb.status().context("running initdb")?;
        if !status.success() {
            bail!("initdb failed ({status})\n{}", pg.log_tail(40));
        }

        let timeout = startup_timeout();
        let deadline = Instant::now() + timeout;
        // A free port can be taken between the probe and the bind: retry.
        for _ in 0..3 {
            pg.port = free_port()?;
            let mut server = pg.command("postgres", as_user)?;
            server
                .arg("-D")
                .arg(&data)
                .arg("-p")
                .arg(pg.port.to_string())
                .arg("-k")
                .arg(pg.root.path())
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off", "-c", "TimeZone=UTC"]);
            pg.child = Some(server.spawn().context("starting postgres")?);
            match pg.wait_ready(&data, deadline) {
                Ok(()) => return Ok(pg),
                Err(_) if pg.child_exited() && pg.log_tail(20).contains("could not bind") => {
                    continue
                }
                Err(e) => return Err(e),
            }
        }
        bail!("postgres could not bind a free port\n{}", pg.log_tail(40))
    }

    /// A `bindir` program with its output appended to the log, run as
    /// `as_user` when given.
    fn command(&self, program: &str, as_user: Option<(u32, u32)>) -> Result<Command> {
        let mut cmd = Command::new(self.bindir.join(program));
        let log = self.open_log()?;
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .current_dir(self.root.path())
            .env_remove("PGDATA")
            .env("LC_ALL", "C");
        if let Some((uid, gid)) = as_user {
            cmd.uid(uid).gid(gid);
        }
        Ok(cmd)
    }

    fn open_log(&self) -> Result<File> {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))
    }

    fn child_exited(&mut self) -> bool {
        self.child
            .as_mut()
            .is_none_or(|c| c.try_wait().ok().flatten().is_some())
    }

    /// Waits until the server is ready: `postmaster.pid` says "ready"
    /// (PostgreSQL 10 and later write it when connections are accepted)
    /// and the port takes a TCP connection.
    fn wait_ready(&mut self, data: &Path, deadline: Instant) -> Result<()> {
        loop {
            if self.child_exited() {
                bail!("postgres exited during startup\n{}", self.log_tail(40));
            }
            let ready = std::fs::read_to_string(data.join("postmaster.pid"))
                .is_ok_and(|pid| pid.lines().nth(7).is_some_and(|l| l.trim() == "ready"));
            if ready && TcpStream::connect((Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "postgres did not accept connections on port {} in time\n{}",
                    self.port,
                    self.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The TCP port the server listens on (127.0.0.1).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A libpq connection string for the superuser and database `postgres`
    /// (append `dbname=...` to choose another database: the last one wins).
    pub fn connection_string(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={SUPERUSER} dbname=postgres",
            self.port
        )
    }

    /// The last `lines` lines of the server's (and initdb's) output.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Stops the server: fast shutdown (SIGINT: sessions are ended), then
    /// SIGKILL after the shutdown timeout.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: signalling our own child process.
            unsafe { libc::kill(pid, libc::SIGINT) };
        }
        let deadline = Instant::now() + shutdown_timeout();
        while Instant::now() < deadline {
            if child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for ReferencePostgres {
    fn drop(&mut self) {
        self.stop();
        if std::thread::panicking() {
            eprintln!(
                "----- last lines of {} -----\n{}",
                self.log_path.display(),
                self.log_tail(40)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Starts a server, runs a query on it and checks the directory is
    /// gone after the drop. Needs the PostgreSQL server binaries
    /// (scripts/ensure-deps.sh --test); fails without them.
    #[test]
    fn starts_answers_and_cleans_up() {
        let pg = ReferencePostgres::start().expect("reference postgres");
        let dir = pg.root.path().to_path_buf();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let version: String = rt.block_on(async {
            let client =
                crate::server::connect_with_retry(&pg.connection_string(), Duration::from_secs(10))
                    .await
                    .unwrap();
            client
                .query_one("SELECT current_setting('server_version_num')", &[])
                .await
                .unwrap()
                .get(0)
        });
        assert!(version.parse::<u32>().unwrap() >= 100000, "{version}");
        drop(pg);
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}
