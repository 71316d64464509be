//! A sqllogictest [`AsyncDB`] over tokio-postgres, talking to a
//! [`TestServer`] (or to a reference Postgres, see [`Target::Postgres`]).

use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sqllogictest::{DBOutput, DefaultColumnType};
use tokio_postgres::types::Type;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::pgtext::RawValue;
use crate::reference::{rewrite_for_postgres, Rewritten};
use crate::server::{connect_session, TestServer};

/// A server shared by all connections of one test file, with the sessions
/// opened to it (so a restart can close them all first).
#[derive(Debug)]
pub struct ServerHandle {
    server: Mutex<TestServer>,
    sessions: Mutex<Vec<tokio::task::AbortHandle>>,
}

impl ServerHandle {
    /// Records a session's connection task.
    pub fn register_session(&self, task: tokio::task::AbortHandle) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        sessions.retain(|t| !t.is_finished());
        sessions.push(task);
    }

    /// Closes every registered session (their sockets are dropped; the
    /// clients reconnect on their next statement).
    pub fn close_sessions(&self) {
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        for task in sessions.drain(..) {
            task.abort();
        }
    }
}

/// A server shared by all connections of one test file.
pub type SharedServer = Arc<ServerHandle>;

/// Wraps a started server for sharing between connections.
pub fn share(server: TestServer) -> SharedServer {
    Arc::new(ServerHandle {
        server: Mutex::new(server),
        sessions: Mutex::new(Vec::new()),
    })
}

/// Locks a shared server, ignoring poisoning (a panicking test thread must
/// still be able to read the log and kill the process).
pub fn lock(server: &SharedServer) -> MutexGuard<'_, TestServer> {
    server.server.lock().unwrap_or_else(|e| e.into_inner())
}

/// Which Postgres protocol flow the test connection uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum QueryMode {
    /// Simple query protocol (`Query` message); values arrive as text.
    Simple,
    /// Extended protocol (Parse/Describe/Bind/Execute); values arrive in
    /// binary and are rendered to Postgres text by [`crate::pgtext`].
    Extended,
}

impl QueryMode {
    pub const ALL: [QueryMode; 2] = [QueryMode::Simple, QueryMode::Extended];

    pub fn name(self) -> &'static str {
        match self {
            QueryMode::Simple => "simple",
            QueryMode::Extended => "extended",
        }
    }
}

impl fmt::Display for QueryMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What the DB talks to.
#[derive(Clone, Debug)]
pub enum Target {
    /// A `weir` test server. `RESTART SERVER` / `CRASH SERVER` act on it.
    Weir(SharedServer),
    /// A real Postgres reached with this connection string, used to check
    /// the expected results of test files. Weir-only statements are
    /// rewritten (streaming queries and materialized views become plain
    /// views, `FLUSH`, `RESTART SERVER` and `CRASH SERVER` are no-ops).
    Postgres(String),
}

/// The statements intercepted by [`WeirDb`] instead of being sent to the
/// server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecialStatement {
    /// `RESTART SERVER`: SIGTERM, wait, start on the same data dir, reconnect.
    RestartServer,
    /// `CRASH SERVER`: SIGKILL, wait, start on the same data dir, reconnect.
    CrashServer,
}

/// Recognizes `RESTART SERVER` / `CRASH SERVER` (case-insensitive, any
/// whitespace, optional trailing `;`).
pub fn parse_special(sql: &str) -> Option<SpecialStatement> {
    let trimmed = sql.trim().trim_end_matches(';').trim();
    let words: Vec<String> = trimmed
        .split_whitespace()
        .map(|w| w.to_ascii_uppercase())
        .collect();
    match words
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["RESTART", "SERVER"] => Some(SpecialStatement::RestartServer),
        ["CRASH", "SERVER"] => Some(SpecialStatement::CrashServer),
        _ => None,
    }
}

/// Error returned by [`WeirDb`]. For server errors the text is
/// `db error: ERROR: <message> (SQLSTATE <code>)` followed by optional
/// `DETAIL:` / `HINT:` lines, so `statement error <regex>` can match the
/// message, the code, or the detail.
#[derive(Debug, Clone)]
pub struct DbError {
    pub sqlstate: Option<String>,
    pub message: String,
}

impl DbError {
    pub fn other(message: impl Into<String>) -> Self {
        DbError {
            sqlstate: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DbError {}

impl From<tokio_postgres::Error> for DbError {
    fn from(e: tokio_postgres::Error) -> Self {
        DbError {
            sqlstate: e.code().map(|c| c.code().to_string()),
            message: describe_pg_error(&e),
        }
    }
}

impl From<anyhow::Error> for DbError {
    fn from(e: anyhow::Error) -> Self {
        DbError::other(format!("{e:#}"))
    }
}

/// Renders a tokio-postgres error with everything useful for matching:
/// severity, message, SQLSTATE, detail and hint for server errors, and the
/// whole source chain for client-side errors.
pub fn describe_pg_error(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        let mut s = format!(
            "db error: {}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        );
        if let Some(detail) = db.detail() {
            s.push_str(&format!("\nDETAIL: {detail}"));
        }
        if let Some(hint) = db.hint() {
            s.push_str(&format!("\nHINT: {hint}"));
        }
        return s;
    }
    let mut s = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    s
}

/// Text the way sqllogictest files expect it: `NULL` for SQL NULL and
/// `(empty)` for the empty string.
pub fn slt_text(value: Option<&str>) -> String {
    match value {
        None => "NULL".to_string(),
        Some("") => "(empty)".to_string(),
        Some(s) => s.to_string(),
    }
}

/// Maps a Postgres type to the sqllogictest column type letter.
pub fn column_type(ty: &Type) -> DefaultColumnType {
    match *ty {
        Type::INT2 | Type::INT4 | Type::INT8 | Type::OID => DefaultColumnType::Integer,
        Type::FLOAT4 | Type::FLOAT8 | Type::NUMERIC => DefaultColumnType::FloatingPoint,
        Type::TEXT | Type::VARCHAR | Type::BPCHAR | Type::NAME | Type::UNKNOWN => {
            DefaultColumnType::Text
        }
        _ => DefaultColumnType::Any,
    }
}

/// Runs `sql` with the simple query protocol and returns the rows of the
/// last statement that produced a result set (values as Postgres text,
/// `None` for NULL).
pub async fn simple_query_rows(
    client: &Client,
    sql: &str,
) -> Result<Vec<Vec<Option<String>>>, DbError> {
    match run_simple(client, sql).await? {
        SimpleOutput::Rows { rows, .. } => Ok(rows),
        SimpleOutput::Complete(_) => Err(DbError::other(format!(
            "expected rows from {sql:?}, got a command completion"
        ))),
    }
}

enum SimpleOutput {
    Rows {
        columns: usize,
        rows: Vec<Vec<Option<String>>>,
    },
    Complete(u64),
}

async fn run_simple(client: &Client, sql: &str) -> Result<SimpleOutput, DbError> {
    let messages = client.simple_query(sql).await?;
    let mut last = None;
    let mut current: Option<(usize, Vec<Vec<Option<String>>>)> = None;
    for message in messages {
        match message {
            SimpleQueryMessage::RowDescription(columns) => {
                current = Some((columns.len(), Vec::new()));
            }
            SimpleQueryMessage::Row(row) => {
                let entry = current.get_or_insert_with(|| (row.len(), Vec::new()));
                entry.1.push(
                    (0..row.len())
                        .map(|i| row.get(i).map(str::to_string))
                        .collect(),
                );
            }
            SimpleQueryMessage::CommandComplete(count) => {
                last = Some(match current.take() {
                    Some((columns, rows)) => SimpleOutput::Rows { columns, rows },
                    None => SimpleOutput::Complete(count),
                });
            }
            _ => {}
        }
    }
    Ok(last.unwrap_or(SimpleOutput::Complete(0)))
}

/// Runs `sql` with the extended protocol (prepare + execute/query, no
/// parameters). Statements without result columns report their row count.
async fn run_extended(client: &Client, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
    let stmt = client.prepare(sql).await?;
    if stmt.columns().is_empty() {
        let count = client.execute(&stmt, &[]).await?;
        return Ok(DBOutput::StatementComplete(count));
    }
    let types = stmt
        .columns()
        .iter()
        .map(|c| column_type(c.type_()))
        .collect();
    let rows = client.query(&stmt, &[]).await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut values = Vec::with_capacity(row.len());
        for (i, column) in row.columns().iter().enumerate() {
            let raw: RawValue = row.try_get(i)?;
            let text = raw.to_pg_text().map_err(|e| {
                DbError::other(format!(
                    "extended mode: cannot render column {i} ({:?}, type {}): {e}",
                    column.name(),
                    column.type_()
                ))
            })?;
            values.push(slt_text(text.as_deref()));
        }
        out.push(values);
    }
    Ok(DBOutput::Rows { types, rows: out })
}

/// The sqllogictest database: one client connection in a given
/// [`QueryMode`]. Intercepts `RESTART SERVER` and `CRASH SERVER`.
pub struct WeirDb {
    target: Target,
    mode: QueryMode,
    client: Option<Client>,
    generation: u64,
}

impl WeirDb {
    /// Connects to the target.
    pub async fn connect(target: Target, mode: QueryMode) -> Result<Self, DbError> {
        let mut db = WeirDb {
            target,
            mode,
            client: None,
            generation: 0,
        };
        db.reconnect().await?;
        Ok(db)
    }

    pub fn mode(&self) -> QueryMode {
        self.mode
    }

    async fn reconnect(&mut self) -> Result<(), DbError> {
        self.client = None;
        let (conn_str, generation) = match &self.target {
            Target::Weir(server) => {
                let s = lock(server);
                (s.connection_string(), s.generation())
            }
            Target::Postgres(conn_str) => (conn_str.clone(), 0),
        };
        let (client, task) = connect_session(&conn_str, Duration::from_secs(10)).await?;
        if let Target::Weir(server) = &self.target {
            server.register_session(task.abort_handle());
        }
        self.client = Some(client);
        self.generation = generation;
        Ok(())
    }

    /// Reconnects if the server was restarted (by this or another connection).
    async fn client(&mut self) -> Result<&Client, DbError> {
        let current = match &self.target {
            Target::Weir(server) => lock(server).generation(),
            Target::Postgres(_) => 0,
        };
        if self.client.is_none() || current != self.generation {
            self.reconnect().await?;
        }
        Ok(self.client.as_ref().expect("connected"))
    }

    async fn run_special(&mut self, special: SpecialStatement) -> Result<(), DbError> {
        let Target::Weir(server) = &self.target else {
            // Reference Postgres: nothing to restart.
            return Ok(());
        };
        let server = server.clone();
        // Close all sessions of the file first (they reconnect lazily), so a
        // graceful shutdown is not held up by idle clients.
        self.client = None;
        server.close_sessions();
        tokio::task::spawn_blocking(move || {
            let mut s = lock(&server);
            match special {
                SpecialStatement::RestartServer => s.restart(),
                SpecialStatement::CrashServer => s.crash_and_restart(),
            }
        })
        .await
        .map_err(|e| DbError::other(format!("restart task failed: {e}")))??;
        self.reconnect().await
    }
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for WeirDb {
    type Error = DbError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DbError> {
        if let Some(special) = parse_special(sql) {
            self.run_special(special).await?;
            return Ok(DBOutput::StatementComplete(0));
        }
        let sql = match &self.target {
            Target::Postgres(_) => match rewrite_for_postgres(sql) {
                Rewritten::Sql(s) => s,
                Rewritten::Skip => return Ok(DBOutput::StatementComplete(0)),
            },
            Target::Weir(_) => sql.to_string(),
        };
        let mode = self.mode;
        let client = self.client().await?;
        match mode {
            QueryMode::Simple => Ok(match run_simple(client, &sql).await? {
                SimpleOutput::Rows { columns, rows } => DBOutput::Rows {
                    types: vec![DefaultColumnType::Any; columns],
                    rows: rows
                        .iter()
                        .map(|r| r.iter().map(|v| slt_text(v.as_deref())).collect())
                        .collect(),
                },
                SimpleOutput::Complete(n) => DBOutput::StatementComplete(n),
            }),
            QueryMode::Extended => run_extended(client, &sql).await,
        }
    }

    async fn shutdown(&mut self) {
        self.client = None;
    }

    fn engine_name(&self) -> &str {
        match self.target {
            Target::Weir(_) => "weir",
            Target::Postgres(_) => "postgres",
        }
    }

    async fn sleep(dur: Duration) {
        tokio::time::sleep(dur).await
    }

    async fn run_command(
        mut command: std::process::Command,
    ) -> std::io::Result<std::process::Output> {
        tokio::task::spawn_blocking(move || command.output())
            .await
            .map_err(std::io::Error::other)?
    }

    fn error_sql_state(err: &DbError) -> Option<String> {
        err.sqlstate.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn special_statements() {
        assert_eq!(
            parse_special("RESTART SERVER"),
            Some(SpecialStatement::RestartServer)
        );
        assert_eq!(
            parse_special("  restart\n  server ;\n"),
            Some(SpecialStatement::RestartServer)
        );
        assert_eq!(
            parse_special("Crash Server;"),
            Some(SpecialStatement::CrashServer)
        );
        assert_eq!(parse_special("CRASH SERVER NOW"), None);
        assert_eq!(parse_special("SELECT 'RESTART SERVER'"), None);
    }
}
