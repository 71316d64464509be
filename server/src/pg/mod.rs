//! The PostgreSQL wire protocol (pgwire): simple and extended query, COPY
//! FROM STDIN, errors with SQLSTATE. [`connection::serve`] runs one
//! connection: it reads and checks each message itself ([`frame`]) and
//! hands pgwire only well-formed ones, to the handlers of this module.

pub mod connection;
mod corked;
pub mod encode;
pub mod frame;

use std::fmt::Debug;
use std::sync::Arc;
use weir_executor::SqlState;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use futures::{stream, Sink, SinkExt};
use parking_lot::Mutex;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::copy::CopyHandler;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{
    CopyResponse, DescribePortalResponse, DescribeStatementResponse, FieldInfo, QueryResponse,
    Response, Tag,
};
use pgwire::api::stmt::{QueryParser, StoredStatement};
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionManager, PgWireServerHandlers, Type};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::copy::{CopyData, CopyDone, CopyFail};
use pgwire::messages::PgWireBackendMessage;

use crate::copy::CopyLimits;
use crate::engine::{Engine, Output};
use crate::error::SqlError;
use crate::session::Session;
use crate::statements::split_statements;

/// What one connection may make the server hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// One message from the client, in bytes. CopyData is the exception:
    /// [`frame`] passes a long one on in pieces, and [`CopyLimits`] bounds
    /// what a COPY holds.
    pub message_bytes_max: usize,
    pub copy: CopyLimits,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            message_bytes_max: 64 << 20,
            copy: CopyLimits::default(),
        }
    }
}

pub struct Handler {
    engine: Arc<Engine>,
    parser: Arc<Parser>,
    /// Connections by process id and secret key, for cancel requests.
    connections: Arc<ConnectionManager>,
    limits: Limits,
}

impl Handler {
    pub fn new(engine: Arc<Engine>, connections: Arc<ConnectionManager>, limits: Limits) -> Self {
        Handler {
            parser: Arc::new(Parser {
                engine: engine.clone(),
            }),
            engine,
            connections,
            limits,
        }
    }
}

fn session_of<C: ClientInfo>(client: &C) -> Arc<Mutex<Session>> {
    client
        .session_extensions()
        .get_or_insert_with(|| Mutex::new(Session::default()))
}

pub fn error_info(e: &SqlError) -> ErrorInfo {
    let mut info = ErrorInfo::new(
        "ERROR".to_owned(),
        e.sqlstate.code().to_owned(),
        e.message.clone(),
    );
    info.detail = e.detail.clone();
    info.hint = e.hint.clone();
    info.where_context = e.context.clone();
    info
}

/// Ends the COPY in progress, if any, dropping what it read: after an
/// error the client's remaining COPY messages are ignored.
pub(crate) fn abort_copy<C: ClientInfo>(client: &C) {
    session_of(client).lock().copy = None;
}

/// A portal's result formats: none, one for all columns, or one per
/// column (PostgreSQL's rule; pgwire would index past a shorter list).
fn check_result_formats(format: &Format, columns: usize) -> PgWireResult<()> {
    match format {
        Format::Individual(codes) if codes.len() != columns => Err(user_error(SqlError::new(
            SqlState::PROTOCOL_VIOLATION,
            format!(
                "bind message has {} result formats but query has {columns} columns",
                codes.len()
            ),
        ))),
        _ => Ok(()),
    }
}

/// Sends the warnings a statement left in the session (before its result).
async fn send_notices<C>(client: &mut C, session: &Mutex<Session>) -> PgWireResult<()>
where
    C: Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
{
    let notices = std::mem::take(&mut session.lock().notices);
    for n in notices {
        let mut info = error_info(&n);
        info.severity = "WARNING".to_owned();
        client
            .send(PgWireBackendMessage::NoticeResponse(info.into()))
            .await?;
    }
    Ok(())
}

fn user_error(e: SqlError) -> PgWireError {
    PgWireError::UserError(Box::new(error_info(&e)))
}

fn to_response(out: Output, format: &Format) -> PgWireResult<Response> {
    Ok(match out {
        Output::Rows(batch) => {
            let fields = Arc::new(encode::fields(&batch.schema(), format));
            let rows = encode::encode_batch(&batch, &fields).map_err(user_error)?;
            Response::Query(QueryResponse::new(
                fields,
                stream::iter(rows.into_iter().map(Ok)),
            ))
        }
        Output::Command { tag, rows } => {
            let mut t = Tag::new(tag);
            if let Some(n) = rows {
                t = t.with_rows(n);
            }
            Response::Execution(t)
        }
        Output::Insert(n) => Response::Execution(Tag::new("INSERT").with_oid(0).with_rows(n)),
        Output::CopyIn { columns } => {
            Response::CopyIn(CopyResponse::new(0, columns, stream::empty()))
        }
    })
}

#[async_trait]
impl SimpleQueryHandler for Handler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session_of(client);
        let statements = match split_statements(query) {
            Ok(s) => s,
            Err(e) => return Ok(vec![Response::Error(Box::new(error_info(&e)))]),
        };
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::new();
        for sql in statements {
            let result = self.engine.execute(&session, &sql, None).await;
            send_notices(client, &session).await?;
            match result {
                Ok(out) => {
                    let copy = matches!(out, Output::CopyIn { .. });
                    responses.push(to_response(out, &Format::UnifiedText)?);
                    if copy {
                        break;
                    }
                }
                Err(e) => {
                    responses.push(Response::Error(Box::new(error_info(&e))));
                    break;
                }
            }
        }
        Ok(responses)
    }
}

/// A prepared statement: its SQL and what Describe reports.
#[derive(Debug, Clone)]
pub struct Prepared {
    pub sql: String,
    pub params: Vec<Option<DataType>>,
    pub fields: Option<Arc<datafusion::arrow::datatypes::Schema>>,
}

pub struct Parser {
    engine: Arc<Engine>,
}

#[async_trait]
impl QueryParser for Parser {
    type Statement = Prepared;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<Prepared>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let statements = split_statements(sql).map_err(user_error)?;
        if statements.len() > 1 {
            return Err(user_error(SqlError::syntax(
                "cannot insert multiple commands into a prepared statement",
            )));
        }
        let Some(sql) = statements.into_iter().next() else {
            return Ok(None);
        };
        let (fields, params) = self.engine.describe(&sql).await.map_err(user_error)?;
        Ok(Some(Prepared {
            sql,
            params,
            fields,
        }))
    }

    fn get_parameter_types(&self, stmt: &Prepared) -> PgWireResult<Vec<Type>> {
        Ok(stmt
            .params
            .iter()
            .map(|t| t.as_ref().map_or(Type::TEXT, encode::pg_type))
            .collect())
    }

    fn get_result_schema(
        &self,
        stmt: &Prepared,
        column_format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        Ok(match &stmt.fields {
            Some(schema) => encode::fields(schema, column_format.unwrap_or(&Format::UnifiedText)),
            None => vec![],
        })
    }
}

#[async_trait]
impl ExtendedQueryHandler for Handler {
    type Statement = Prepared;
    type QueryParser = Parser;

    fn query_parser(&self) -> Arc<Parser> {
        self.parser.clone()
    }

    async fn do_describe_statement<C>(
        &self,
        _client: &mut C,
        target: &StoredStatement<Prepared>,
    ) -> PgWireResult<DescribeStatementResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let stmt = &target.statement;
        let mut types = self.parser.get_parameter_types(stmt)?;
        for (i, t) in target.parameter_types.iter().enumerate() {
            if let Some(t) = t {
                if i < types.len() && *t != Type::UNKNOWN {
                    types[i] = t.clone();
                }
            }
        }
        let fields = self.parser.get_result_schema(stmt, None)?;
        Ok(DescribeStatementResponse::new(types, fields))
    }

    async fn do_describe_portal<C>(
        &self,
        _client: &mut C,
        target: &Portal<Prepared>,
    ) -> PgWireResult<DescribePortalResponse>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let stmt = &target.statement.statement;
        let columns = stmt.fields.as_ref().map_or(0, |s| s.fields().len());
        check_result_formats(&target.result_column_format, columns)?;
        let fields = self
            .parser
            .get_result_schema(stmt, Some(&target.result_column_format))?;
        Ok(DescribePortalResponse::new(fields))
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<Prepared>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore<Statement = Prepared>,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session_of(client);
        let stmt = &portal.statement.statement;
        if portal.parameter_len() < stmt.params.len() {
            return Err(user_error(SqlError::new(
                SqlState::PROTOCOL_VIOLATION,
                format!(
                    "bind message supplies {} parameters, but prepared statement requires {}",
                    portal.parameter_len(),
                    stmt.params.len()
                ),
            )));
        }
        let params = if portal.parameter_len() > 0 {
            // A NULL whose type neither the client nor the plan gives (as
            // `$1::timestamp`) is read as text: arrow-pg's fallback for
            // untyped values drops a NULL, which shifts the later ones.
            let types: Vec<Option<&DataType>> = (0..portal.parameter_len())
                .map(|i| match stmt.params.get(i).and_then(|t| t.as_ref()) {
                    None if portal.parameters.get(i).is_some_and(|v| v.is_none()) => {
                        Some(&DataType::Utf8)
                    }
                    t => t,
                })
                .collect();
            Some(arrow_pg::datatypes::df::deserialize_parameters(
                portal, &types,
            )?)
        } else {
            None
        };
        let result = self.engine.execute(&session, &stmt.sql, params).await;
        send_notices(client, &session).await?;
        match result {
            Ok(out) => {
                if let Output::Rows(batch) = &out {
                    check_result_formats(&portal.result_column_format, batch.num_columns())?;
                }
                to_response(out, &portal.result_column_format)
            }
            Err(e) => Err(user_error(e)),
        }
    }
}

#[async_trait]
impl CopyHandler for Handler {
    async fn on_copy_data<C>(&self, client: &mut C, copy_data: CopyData) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session_of(client);
        let mut s = session.lock();
        if let Some(copy) = s.copy.as_mut() {
            if let Err(e) = copy.input.feed(&copy_data.data, &self.limits.copy) {
                // The table stays as it was; what was read is dropped now.
                s.copy = None;
                return Err(user_error(e));
            }
        }
        Ok(())
    }

    async fn on_copy_done<C>(&self, client: &mut C, _done: CopyDone) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let session = session_of(client);
        let n = self
            .engine
            .finish_copy(&session)
            .await
            .map_err(user_error)?;
        send_notices(client, &session).await?;
        client
            .send(PgWireBackendMessage::CommandComplete(
                Tag::new("COPY").with_rows(n).into(),
            ))
            .await?;
        Ok(())
    }

    async fn on_copy_fail<C>(&self, client: &mut C, fail: CopyFail) -> PgWireError
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        session_of(client).lock().copy = None;
        user_error(SqlError::new(
            SqlState::QUERY_CANCELED,
            format!("COPY from stdin failed: {}", fail.message),
        ))
    }
}

impl NoopStartupHandler for Handler {
    fn connection_manager(&self) -> Option<Arc<ConnectionManager>> {
        Some(self.connections.clone())
    }
}

pub struct Factory {
    handler: Arc<Handler>,
    cancel: Arc<DefaultCancelHandler>,
}

impl Factory {
    pub fn new(engine: Arc<Engine>, limits: Limits) -> Self {
        let connections = Arc::new(ConnectionManager::new());
        Factory {
            handler: Arc::new(Handler::new(engine, connections.clone(), limits)),
            cancel: Arc::new(DefaultCancelHandler::new(connections)),
        }
    }

    pub fn limits(&self) -> Limits {
        self.handler.limits
    }
}

impl PgWireServerHandlers for Factory {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.handler.clone()
    }

    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.handler.clone()
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        self.handler.clone()
    }

    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        self.handler.clone()
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        self.cancel.clone()
    }
}
