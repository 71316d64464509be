//! The engine behind every session: the catalog, the live tables, the
//! running streaming queries and statement execution.

use std::collections::BTreeMap;
use std::sync::Arc;
use weir_executor::SqlState;

use datafusion::arrow::array::{ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{Column, ParamValues};
use datafusion::logical_expr::{DmlStatement, Expr, LogicalPlan, LogicalPlanBuilder, WriteOp};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{
    self, ColumnOption, CopySource, CopyTarget, ObjectType, Statement, TableConstraint,
};
use parking_lot::Mutex;
use weir_executor::checkpoint::{CheckpointConfig, CheckpointStorage};
use weir_executor::failure::{Enrichers, FailureConfig};
use weir_executor::runtime::{LaunchOptions, QueryState, StreamingQuery};
use weir_executor::table::{Table, TableDesc, WriteCheck};
use weir_executor::Chunk;
use weir_planner::stream_plan::arrow_schema;
use weir_planner::StreamPlanner;
use weir_storage::Store;

use crate::catalog::{
    enricher_key, failed_key, query_key, table_key, ColumnMeta, QueryMeta, TableMeta, META_NEXT_ID,
};
use crate::copy::CopyFormat;
use crate::error::{SqlError, SqlResult};
use crate::providers::{PublicSchema, RecordingResolver, Relations};
use crate::session::{PendingCopy, Session};
use crate::statements::{parse_custom, Custom, QueryKind};
use crate::types::arrow_type;

/// What one statement produced.
pub enum Output {
    Rows(RecordBatch),
    Command {
        tag: &'static str,
        rows: Option<usize>,
    },
    /// INSERT's tag carries an OID.
    Insert(usize),
    /// The client must now send COPY data.
    CopyIn {
        columns: usize,
    },
}

/// A query just created, and its first catch-up with its inputs.
type CreatedQuery = (Arc<StreamingQuery>, Arc<crate::backfill::Backfill>);

struct QueryEntry {
    meta: QueryMeta,
    table: Arc<Table>,
    runtime: Arc<StreamingQuery>,
}

struct CatalogState {
    tables: BTreeMap<String, (TableMeta, Arc<Table>)>,
    queries: BTreeMap<String, QueryEntry>,
    next_id: u64,
}

pub struct Engine {
    store: Arc<Store>,
    /// Running queries, as the system tables see them.
    runtimes: crate::system::Runtimes,
    /// Failure enrichers: plugins from the config file and SQL rules.
    pub(crate) enrichers: Arc<Enrichers>,
    /// Server-scope metrics.
    pub server_metrics: Arc<crate::metrics::ServerMetrics>,
    data_dir: std::path::PathBuf,
    ctx: SessionContext,
    relations: Relations,
    state: Mutex<CatalogState>,
    /// Serializes DDL so that catalog checks and writes do not interleave.
    ddl: tokio::sync::Mutex<()>,
    compat: datafusion_pg_catalog::sql::PostgresCompatibilityParser,
    pub default_parallelism: usize,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn text_batch(columns: &[&str], rows: Vec<Vec<String>>) -> RecordBatch {
    let schema = Arc::new(Schema::new(
        columns
            .iter()
            .map(|c| Field::new(*c, DataType::Utf8, true))
            .collect::<Vec<_>>(),
    ));
    let arrays: Vec<ArrayRef> = (0..columns.len())
        .map(|c| {
            Arc::new(StringArray::from(
                rows.iter().map(|r| r[c].clone()).collect::<Vec<_>>(),
            )) as ArrayRef
        })
        .collect();
    RecordBatch::try_new(schema, arrays).expect("text batch")
}

fn object_name(name: &ast::ObjectName) -> SqlResult<String> {
    let parts: Vec<String> = name
        .0
        .iter()
        .map(|p| match p.as_ident() {
            Some(id) if id.quote_style.is_some() => id.value.clone(),
            Some(id) => id.value.to_lowercase(),
            None => p.to_string(),
        })
        .collect();
    match parts.as_slice() {
        [n] => Ok(n.clone()),
        [s, n] if s == "public" => Ok(n.clone()),
        [s, _] => Err(SqlError::new(
            SqlState::INVALID_SCHEMA_NAME,
            format!("schema \"{s}\" does not exist"),
        )),
        _ => Err(SqlError::syntax(format!("improper qualified name: {name}"))),
    }
}

fn ident_name(id: &ast::Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_lowercase()
    }
}

impl Engine {
    /// Opens the data directory and brings back every table and query,
    /// with no enricher plugins.
    pub async fn open(data_dir: &std::path::Path) -> anyhow::Result<Arc<Engine>> {
        Engine::open_with(data_dir, Arc::new(Enrichers::default())).await
    }

    /// Opens the data directory with the given failure enrichers.
    pub async fn open_with(
        data_dir: &std::path::Path,
        enrichers: Arc<Enrichers>,
    ) -> anyhow::Result<Arc<Engine>> {
        std::fs::create_dir_all(data_dir)?;
        let store = Arc::new(Store::open(&data_dir.join("db"))?);
        let config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema("weir", "public")
            .with_create_default_catalog_and_schema(true)
            .set_str("datafusion.sql_parser.dialect", "postgresql")
            .set_str("datafusion.execution.time_zone", "+00:00")
            // Numeric literals are numeric, as in PostgreSQL (1.005 rounds to 1.01 in numeric(10,2)).
            .set_bool("datafusion.sql_parser.parse_float_as_decimal", true);
        // Joins count their output against tokio's budget, so a CPU-bound
        // ad hoc query yields and a cancel request gets through.
        let state = datafusion::execution::session_state::SessionStateBuilder::new()
            .with_config(config)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(crate::cooperative::JoinsYield))
            .build();
        let ctx = SessionContext::new_with_state(state);
        // Text literals cast to dates and timestamps read as in PostgreSQL.
        ctx.add_analyzer_rule(Arc::new(crate::literal_casts::PgTextCasts));
        let relations: Relations = Arc::default();
        let catalog = ctx
            .catalog("weir")
            .ok_or_else(|| anyhow::anyhow!("default catalog missing"))?;
        catalog.register_schema("public", Arc::new(PublicSchema::new(relations.clone())))?;
        let runtimes: crate::system::Runtimes = Arc::default();
        let server_metrics = crate::metrics::ServerMetrics::new();
        catalog.register_schema(
            "system",
            Arc::new(crate::system::SystemSchema::new(
                runtimes.clone(),
                enrichers.clone(),
                server_metrics.clone(),
                store.clone(),
            )),
        )?;
        datafusion_pg_catalog::setup_pg_catalog(
            &ctx,
            "weir",
            datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider,
        )
        .map_err(|e| anyhow::anyhow!("pg_catalog setup failed: {e}"))?;
        crate::providers::pg_catalog::install(&ctx, relations.clone())?;
        ctx.register_udf(datafusion::logical_expr::create_udf(
            "version",
            vec![],
            DataType::Utf8,
            datafusion::logical_expr::Volatility::Immutable,
            Arc::new(|_| {
                Ok(datafusion::logical_expr::ColumnarValue::Scalar(
                    datafusion::common::ScalarValue::Utf8(Some(format!(
                        "PostgreSQL {} on x86_64-linux, Weir streaming database",
                        crate::SERVER_VERSION
                    ))),
                ))
            }),
        ));
        ctx.register_udf(pg_sleep_udf());
        ctx.register_udf(crate::fail_if::fail_if_udf());
        crate::functions::register(&ctx);
        // SESSION windows (rewritten into this table function).
        let lookup = relations.clone();
        ctx.register_udtf(
            "session_window",
            Arc::new(weir_planner::session_window::SessionWindowFunction::new(
                Arc::new(move |name: &str| lookup.read().get(name).cloned()),
            )),
        );
        let default_parallelism = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let engine = Arc::new(Engine {
            store,
            runtimes,
            enrichers,
            server_metrics,
            data_dir: data_dir.to_path_buf(),
            ctx,
            relations,
            state: Mutex::new(CatalogState {
                tables: BTreeMap::new(),
                queries: BTreeMap::new(),
                next_id: 1,
            }),
            ddl: tokio::sync::Mutex::new(()),
            compat: datafusion_pg_catalog::sql::PostgresCompatibilityParser::new(),
            default_parallelism,
        });
        engine.recover().await?;
        Ok(engine)
    }

    async fn recover(&self) -> anyhow::Result<()> {
        let mut tables = Vec::new();
        let mut queries = Vec::new();
        let mut rules = Vec::new();
        for (key, value) in self.store.list_catalog()? {
            if key == META_NEXT_ID {
                let next: u64 = serde_json::from_slice(&value)?;
                self.state.lock().next_id = next;
            } else if key.starts_with("table/") {
                tables.push(serde_json::from_slice::<TableMeta>(&value)?);
            } else if key.starts_with("query/") {
                queries.push(serde_json::from_slice::<QueryMeta>(&value)?);
            } else if key.starts_with("enricher/") {
                rules.push(serde_json::from_slice::<crate::enrichers::RuleMeta>(
                    &value,
                )?);
            }
        }
        for meta in rules {
            let name = meta.name.clone();
            match crate::enrichers::SqlRule::compile(&self.ctx, meta) {
                Ok(rule) => self.enrichers.set_rule(Arc::new(rule)),
                Err(e) => {
                    tracing::error!(enricher = %name, error = %e.message, "could not restore failure enricher")
                }
            }
        }
        tables.sort_by_key(|t| t.id);
        queries.sort_by_key(|q| q.id);
        for meta in tables {
            let schema = meta
                .schema()
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            let watermark = self
                .watermark_expr(&meta)
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            let desc = TableDesc {
                id: meta.id,
                name: meta.name.clone(),
                schema,
                primary_key: meta.primary_key.clone(),
                watermark,
            };
            let table = match &meta.connector {
                Some(options) => {
                    let connector = source_connector(options, &desc.schema)
                        .map_err(|e| anyhow::anyhow!("{}", e.message))?;
                    Table::new_source(desc, connector)?
                }
                None => Table::open_durable(desc, self.store.clone())?,
            };
            tracing::info!(table = %meta.name, rows = table.row_count(), "table recovered");
            self.relations
                .write()
                .insert(meta.name.clone(), table.clone());
            self.state
                .lock()
                .tables
                .insert(meta.name.clone(), (meta, table));
        }
        for meta in queries {
            let name = meta.name.clone();
            match self.start_query(meta).await {
                Ok(()) => tracing::info!(query = %name, "streaming query restarted"),
                Err(e) => {
                    tracing::error!(query = %name, error = %e, "could not restart streaming query")
                }
            }
        }
        Ok(())
    }

    /// The physical expression of a table's `WATERMARK FOR ... AS <expr>`;
    /// it must give a timestamp.
    fn watermark_expr(
        &self,
        meta: &TableMeta,
    ) -> SqlResult<Option<Arc<dyn datafusion::physical_plan::PhysicalExpr>>> {
        let Some(w) = &meta.watermark else {
            return Ok(None);
        };
        let schema = meta.schema()?;
        let df_schema = datafusion::common::DFSchema::try_from(schema.as_ref().clone())?;
        let expr = self
            .ctx
            .parse_sql_expr(&w.expr, &df_schema)
            .map_err(|e| SqlError::syntax(format!("invalid WATERMARK expression: {e}")))?;
        let phys = self.ctx.create_physical_expr(expr, &df_schema)?;
        let phys = weir_executor::expr::simplify(phys, &schema);
        match phys.data_type(&schema)? {
            DataType::Timestamp(..) => Ok(Some(phys)),
            other => Err(SqlError::new(
                SqlState::DATATYPE_MISMATCH,
                format!("WATERMARK expression must give a timestamp, not {other}"),
            )),
        }
    }

    fn allocate_id(&self) -> SqlResult<u64> {
        let id = {
            let mut st = self.state.lock();
            let id = st.next_id;
            st.next_id += 1;
            id
        };
        self.store.put_catalog(
            META_NEXT_ID,
            serde_json::to_string(&(id + 1)).expect("json").as_bytes(),
        )?;
        Ok(id)
    }

    fn exists(&self, name: &str) -> bool {
        self.relations.read().contains_key(name)
    }

    /// Executes one statement (already split) with optional bound parameters.
    pub async fn execute(
        &self,
        session: &Mutex<Session>,
        sql: &str,
        params: Option<ParamValues>,
    ) -> SqlResult<Output> {
        self.server_metrics
            .statements
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if let Some(custom) = parse_custom(sql)? {
            return self.execute_custom(session, custom).await;
        }
        // A source is a table with a connector; the client hears what it said.
        let Some(as_table) = crate::statements::create_source_as_table(sql)? else {
            return self.execute_sql(session, sql, params).await;
        };
        Ok(match self.execute_sql(session, &as_table, params).await? {
            Output::Command {
                tag: "CREATE TABLE",
                rows,
            } => Output::Command {
                tag: "CREATE SOURCE",
                rows,
            },
            other => other,
        })
    }

    /// Executes a statement of PostgreSQL's grammar (with Weir's clauses
    /// such as `WATERMARK FOR`).
    async fn execute_sql(
        &self,
        session: &Mutex<Session>,
        sql: &str,
        params: Option<ParamValues>,
    ) -> SqlResult<Output> {
        let (without, watermark) = crate::event_time::extract_watermark(sql)?;
        if let Some(watermark) = watermark {
            let stmt = self.parse_rewritten(&without)?;
            if let DfStatement::Statement(inner) = &stmt {
                if let Statement::CreateTable(ct) = inner.as_ref() {
                    return self.create_table(ct, Some(watermark)).await;
                }
            }
            return Err(SqlError::syntax(
                "syntax error: WATERMARK FOR belongs in CREATE TABLE",
            ));
        }
        let stmt = self.parse_rewritten(sql)?;
        self.execute_statement(session, stmt, params).await
    }

    /// Parses one statement and applies Weir's rewrites: PostgreSQL's output
    /// column names and the literal forms DataFusion reads differently.
    fn parse_rewritten(&self, sql: &str) -> SqlResult<DfStatement> {
        let mut stmt = self.parse(sql)?;
        if let DfStatement::Statement(inner) = &mut stmt {
            crate::naming::apply(inner);
            crate::naming::normalize_literals(inner)?;
            self.bytea_in_insert_values(inner);
        }
        Ok(stmt)
    }

    /// Parses one statement. Queries over `pg_catalog` (what psql's `\d` and
    /// BI tools send) go through datafusion-pg-catalog's rewriting parser;
    /// everything else through DataFusion's, unchanged.
    fn parse(&self, sql: &str) -> SqlResult<DfStatement> {
        let rewritten = crate::event_time::rewrite_windows(sql)?;
        let sql = rewritten.as_str();
        let tokens = crate::sql_text::tokenize(sql)?;
        crate::parse_guard::check_operators(&tokens)?;
        // Parsing a long statement takes a while: not on a thread that
        // serves other sessions.
        let stmt = off_runtime(|| self.parse_bounded(sql, tokens.len()))?;
        if let Err(e) = check_statement_depth(&stmt) {
            crate::parse_guard::drop_deep(stmt);
            return Err(e);
        }
        Ok(stmt)
    }

    /// Parses one statement with a budget of parse steps (see
    /// `parse_guard`).
    fn parse_bounded(&self, sql: &str, tokens: usize) -> SqlResult<DfStatement> {
        use crate::parse_guard::WeirDialect;
        let dialect = WeirDialect::for_tokens(tokens);
        let recursion_limit = self
            .ctx
            .state()
            .config()
            .options()
            .sql_parser
            .recursion_limit
            .get();
        let syntax = |e: String| {
            if dialect.exhausted() {
                return WeirDialect::too_complex();
            }
            let msg = e
                .trim_start_matches("SQL error: ")
                .trim_start_matches("ParserError(\"")
                .trim_end_matches("\")")
                .replace("sql parser error: ", "");
            SqlError::syntax(format!("syntax error: {msg}"))
        };
        let lower = sql.to_ascii_lowercase();
        if lower.contains("pg_catalog")
            || lower.contains("pg_class")
            || lower.contains("pg_namespace")
            || lower.contains("::regclass")
            || crate::providers::pg_catalog::names_catalog_relation(sql)
        {
            // Its parser has no budget: the statement is parsed with one
            // first (they are short).
            datafusion::sql::parser::DFParserBuilder::new(sql)
                .with_dialect(&dialect)
                .with_recursion_limit(recursion_limit)
                .build()
                .and_then(|mut p| p.parse_statements())
                .map_err(|e| syntax(e.strip_backtrace()))?;
            let mut stmts = self
                .compat
                .parse(sql)
                .map_err(|e| SqlError::syntax(format!("syntax error: {e}")))?;
            if stmts.len() == 1 {
                let stmt = crate::providers::pg_catalog::rewrite(stmts.remove(0));
                return Ok(DfStatement::Statement(Box::new(stmt)));
            }
        }
        if lower.trim_start().starts_with("copy") {
            // DataFusion's parser reads COPY as its own COPY TO; PostgreSQL's grammar is wanted.
            let mut stmts = datafusion::sql::sqlparser::parser::Parser::new(&dialect)
                .with_recursion_limit(recursion_limit)
                .try_with_sql(sql)
                .and_then(|mut p| p.parse_statements())
                .map_err(|e| syntax(e.to_string()))?;
            if stmts.len() == 1 {
                return Ok(DfStatement::Statement(Box::new(stmts.remove(0))));
            }
        }
        let mut statements = datafusion::sql::parser::DFParserBuilder::new(sql)
            .with_dialect(&dialect)
            .with_recursion_limit(recursion_limit)
            .build()
            .and_then(|mut p| p.parse_statements())
            .map_err(|e| syntax(e.strip_backtrace()))?;
        if statements.len() > 1 {
            return Err(SqlError::syntax(
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        statements
            .pop_front()
            .ok_or_else(|| SqlError::syntax("syntax error: empty statement"))
    }

    async fn execute_statement(
        &self,
        session: &Mutex<Session>,
        stmt: DfStatement,
        params: Option<ParamValues>,
    ) -> SqlResult<Output> {
        let inner = match &stmt {
            DfStatement::Statement(inner) => inner,
            DfStatement::Explain(_) => return self.query(stmt, params).await,
            other => {
                return Err(SqlError::unsupported(format!(
                    "statement not supported: {other}"
                )))
            }
        };
        match inner.as_ref() {
            Statement::CreateTable(ct) => self.create_table(ct, None).await,
            Statement::Insert(_) | Statement::Update(_) | Statement::Delete(_) => {
                let out = self.dml(stmt, params).await?;
                self.implicit_flush(session).await;
                Ok(out)
            }
            Statement::Query(_) | Statement::Explain { .. } => self.query(stmt, params).await,
            Statement::Drop {
                object_type,
                names,
                if_exists,
                cascade,
                ..
            } => {
                if *cascade {
                    return Err(SqlError::unsupported("DROP ... CASCADE is not supported")
                        .with_hint("Drop the dependent objects first."));
                }
                let names = names
                    .iter()
                    .map(object_name)
                    .collect::<SqlResult<Vec<_>>>()?;
                match object_type {
                    ObjectType::Table => self.drop_table(&names, *if_exists).await,
                    ObjectType::MaterializedView | ObjectType::View => {
                        self.drop_query(QueryKind::MaterializedView, &names, *if_exists)
                            .await
                    }
                    other => Err(SqlError::unsupported(format!(
                        "DROP {other} is not supported"
                    ))),
                }
            }
            Statement::Copy {
                source,
                to,
                target,
                options,
                legacy_options,
                ..
            } => {
                if *to || !matches!(target, CopyTarget::Stdin) {
                    return Err(SqlError::unsupported(
                        "only COPY ... FROM STDIN is supported",
                    ));
                }
                let CopySource::Table {
                    table_name,
                    columns,
                } = source
                else {
                    return Err(SqlError::unsupported("COPY (query) is not supported"));
                };
                self.copy_in(session, table_name, columns, options, legacy_options)
            }
            Statement::StartTransaction { .. } => Ok(Output::Command {
                tag: "BEGIN",
                rows: None,
            }),
            Statement::Commit { .. } => Ok(Output::Command {
                tag: "COMMIT",
                rows: None,
            }),
            Statement::Rollback { .. } => Ok(Output::Command {
                tag: "ROLLBACK",
                rows: None,
            }),
            // psycopg sends DEALLOCATE ALL after a ROLLBACK or DROP once it
            // has prepared statements; it names new ones afresh after it.
            Statement::Deallocate { name, .. } => Ok(Output::Command {
                tag: if name.value.eq_ignore_ascii_case("all") {
                    "DEALLOCATE ALL"
                } else {
                    "DEALLOCATE"
                },
                rows: None,
            }),
            Statement::Set(set) => self.set_variable(session, set),
            Statement::ShowVariable { variable } => {
                let name = variable
                    .iter()
                    .map(|i| i.value.to_lowercase())
                    .collect::<Vec<_>>()
                    .join(" ");
                let name = crate::session::canonical_name(&name).to_string();
                let s = session.lock();
                if name == "all" {
                    let rows = s
                        .vars
                        .iter()
                        .map(|(k, v)| vec![k.clone(), v.clone()])
                        .collect();
                    return Ok(Output::Rows(text_batch(&["name", "setting"], rows)));
                }
                match s.vars.get(&name) {
                    Some(v) => Ok(Output::Rows(text_batch(&[&name], vec![vec![v.clone()]]))),
                    None => Err(SqlError::new(
                        SqlState::UNDEFINED_OBJECT,
                        format!("unrecognized configuration parameter \"{name}\""),
                    )),
                }
            }
            Statement::CreateView(_) => Err(SqlError::unsupported(
                "CREATE VIEW is not supported; use CREATE MATERIALIZED VIEW",
            )),
            _ => self.query(stmt, params).await,
        }
    }

    /// `INSERT ... VALUES ('\x0102')` into a bytea column: hex input, as in
    /// PostgreSQL (DataFusion would store the characters).
    fn bytea_in_insert_values(&self, stmt: &mut Statement) {
        let Statement::Insert(ins) = stmt else { return };
        let ast::TableObject::TableName(name) = &ins.table else {
            return;
        };
        let Ok(name) = object_name(name) else { return };
        let Some(table) = self.relations.read().get(&name).cloned() else {
            return;
        };
        let schema = table.schema();
        let targets: Vec<Option<usize>> = if ins.columns.is_empty() {
            (0..schema.fields().len()).map(Some).collect()
        } else {
            ins.columns
                .iter()
                .map(|c| object_name(c).ok().and_then(|n| schema.index_of(&n).ok()))
                .collect()
        };
        let Some(source) = ins.source.as_mut() else {
            return;
        };
        let ast::SetExpr::Values(values) = source.body.as_mut() else {
            return;
        };
        for row in values.rows.iter_mut() {
            for (i, v) in row.iter_mut().enumerate() {
                let is_bytea = targets
                    .get(i)
                    .copied()
                    .flatten()
                    .is_some_and(|c| matches!(schema.field(c).data_type(), DataType::Binary));
                if is_bytea {
                    if let Some(decoded) = crate::naming::bytea_hex_literal(v) {
                        *v = decoded;
                    }
                }
            }
        }
    }

    fn set_variable(&self, session: &Mutex<Session>, set: &ast::Set) -> SqlResult<Output> {
        let (name, value) = match set {
            ast::Set::SingleAssignment {
                variable, values, ..
            } => {
                let v = values
                    .iter()
                    .map(|e| match e {
                        ast::Expr::Value(v) => match &v.value {
                            ast::Value::SingleQuotedString(s) => s.clone(),
                            other => other.to_string(),
                        },
                        ast::Expr::Identifier(i) => i.value.clone(),
                        other => other.to_string(),
                    })
                    .collect::<Vec<_>>()
                    .join(", ");
                (variable.to_string().to_lowercase(), v)
            }
            ast::Set::SetTimeZone { value, .. } => (
                "timezone".to_string(),
                value.to_string().trim_matches('\'').to_string(),
            ),
            ast::Set::SetNames { charset_name, .. } => {
                ("client_encoding".to_string(), charset_name.to_string())
            }
            _ => {
                return Ok(Output::Command {
                    tag: "SET",
                    rows: None,
                })
            }
        };
        let name = name
            .trim_start_matches("session ")
            .trim_start_matches("local ");
        let name = crate::session::canonical_name(name).to_string();
        if name == "timezone" {
            let v = value.to_ascii_uppercase();
            if !matches!(
                v.as_str(),
                "UTC" | "GMT" | "Z" | "+00:00" | "0" | "ETC/UTC" | "DEFAULT" | "LOCAL"
            ) {
                return Err(SqlError::unsupported(format!(
                    "time zone \"{value}\" is not supported; Weir sessions use UTC"
                )));
            }
        }
        let value = if value.eq_ignore_ascii_case("default") {
            Session::default()
                .vars
                .get(&name)
                .cloned()
                .unwrap_or_default()
        } else {
            match crate::session::boolean_setting(&name, &value) {
                Some(v) => v?.to_string(),
                None => value,
            }
        };
        session.lock().vars.insert(name, value);
        Ok(Output::Command {
            tag: "SET",
            rows: None,
        })
    }

    async fn execute_custom(&self, session: &Mutex<Session>, custom: Custom) -> SqlResult<Output> {
        match custom {
            Custom::CreateQuery {
                kind,
                name,
                if_not_exists,
                options,
                query,
                explain,
            } => {
                if explain {
                    let plan = self.plan_query(&name, &query, &options, None).await?;
                    let rows = plan
                        .0
                        .explain()
                        .lines()
                        .map(|l| vec![l.to_string()])
                        .collect();
                    return Ok(Output::Rows(text_batch(&["QUERY PLAN"], rows)));
                }
                let background = session.lock().flag(crate::session::BACKGROUND_DDL);
                let (out, created) = self
                    .create_query(kind, name, if_not_exists, options, query)
                    .await?;
                if let Some((runtime, backfill)) = created {
                    if background {
                        tokio::spawn(async move { backfill.wait(&runtime).await });
                    } else if let Some(warning) = backfill.wait(&runtime).await {
                        session.lock().notices.push(warning);
                    }
                }
                Ok(out)
            }
            Custom::ShowTables => {
                let st = self.state.lock();
                let rows = st.tables.keys().map(|k| vec![k.clone()]).collect();
                Ok(Output::Rows(text_batch(&["name"], rows)))
            }
            Custom::ShowQueries(kind) => {
                let st = self.state.lock();
                let rows = st
                    .queries
                    .values()
                    .filter(|q| kind.is_none_or(|k| k.as_str() == q.meta.kind))
                    .map(|q| {
                        let status = q.runtime.state().as_str().to_string();
                        vec![q.meta.name.clone(), status, q.meta.sql.clone()]
                    })
                    .collect();
                Ok(Output::Rows(text_batch(
                    &["name", "status", "definition"],
                    rows,
                )))
            }
            Custom::DropQuery {
                kind,
                names,
                if_exists,
            } => self.drop_query(kind, &names, if_exists).await,
            Custom::AlterQuery {
                kind,
                name,
                options,
            } => self.alter_query(kind, name, options).await,
            Custom::RestartQuery { kind, name } => self.restart_query(kind, name).await,
            Custom::CreateEnricher {
                name,
                or_replace,
                if_not_exists,
                predicate,
                labels,
            } => {
                let _ddl = self.ddl.lock().await;
                if self.enrichers.has(&name) {
                    if if_not_exists {
                        return Ok(Output::Command {
                            tag: "CREATE FAILURE ENRICHER",
                            rows: None,
                        });
                    }
                    if !or_replace || name == "builtin" {
                        return Err(SqlError::new(
                            SqlState::DUPLICATE_OBJECT,
                            format!("failure enricher \"{name}\" already exists"),
                        ));
                    }
                }
                if name == "builtin" {
                    return Err(SqlError::new(
                        SqlState::DUPLICATE_OBJECT,
                        "failure enricher \"builtin\" already exists",
                    ));
                }
                let meta = crate::enrichers::RuleMeta {
                    name: name.clone(),
                    predicate,
                    labels,
                };
                let rule = crate::enrichers::SqlRule::compile(&self.ctx, meta.clone())?;
                self.store.put_catalog(
                    &enricher_key(&name),
                    serde_json::to_string(&meta).expect("json").as_bytes(),
                )?;
                self.enrichers.set_rule(Arc::new(rule));
                Ok(Output::Command {
                    tag: "CREATE FAILURE ENRICHER",
                    rows: None,
                })
            }
            Custom::DropEnricher { name, if_exists } => {
                let _ddl = self.ddl.lock().await;
                let exists = self.enrichers.is_rule(&name);
                if !exists {
                    if if_exists {
                        return Ok(Output::Command {
                            tag: "DROP FAILURE ENRICHER",
                            rows: None,
                        });
                    }
                    let hint = self.enrichers.has(&name).then(|| {
                        "It is a plugin from the config file; remove it there.".to_string()
                    });
                    let e = SqlError::new(
                        SqlState::UNDEFINED_OBJECT,
                        format!("failure enricher \"{name}\" does not exist"),
                    );
                    return Err(match hint {
                        Some(h) => e.with_hint(h),
                        None => e,
                    });
                }
                self.store.delete_catalog(&enricher_key(&name))?;
                self.enrichers.drop_rule(&name);
                Ok(Output::Command {
                    tag: "DROP FAILURE ENRICHER",
                    rows: None,
                })
            }
            Custom::Flush => {
                self.flush().await?;
                Ok(Output::Command {
                    tag: "FLUSH",
                    rows: None,
                })
            }
        }
    }

    /// Waits until every streaming query processed all input accepted before
    /// the call. Queries are flushed in creation order, so a query reading
    /// another query's result sees that result's flushed changes. A query
    /// that was already FAILED or CANCELED is passed over (its state is in
    /// `system.streaming_queries`); one that fails during the flush with an
    /// error a restart cannot cure makes FLUSH report that error.
    pub async fn flush(&self) -> SqlResult<()> {
        let runtimes: Vec<Arc<StreamingQuery>> = {
            let st = self.state.lock();
            let mut qs: Vec<&QueryEntry> = st.queries.values().collect();
            qs.sort_by_key(|q| q.meta.id);
            qs.iter().map(|q| q.runtime.clone()).collect()
        };
        for rt in runtimes {
            if matches!(rt.state(), QueryState::Failed | QueryState::Canceled) {
                continue;
            }
            if let Err(e) = rt.flush().await {
                return Err(SqlError::new(e.sqlstate, e.message).with_hint(format!(
                    "See SELECT * FROM system.exceptions WHERE query = '{}'.",
                    rt.name
                )));
            }
        }
        Ok(())
    }

    async fn create_table(
        &self,
        ct: &ast::CreateTable,
        watermark: Option<crate::event_time::WatermarkSpec>,
    ) -> SqlResult<Output> {
        let _ddl = self.ddl.lock().await;
        let name = object_name(&ct.name)?;
        if self.exists(&name) {
            if ct.if_not_exists {
                return Ok(Output::Command {
                    tag: "CREATE TABLE",
                    rows: None,
                });
            }
            return Err(SqlError::new(
                SqlState::DUPLICATE_TABLE,
                format!("relation \"{name}\" already exists"),
            ));
        }
        if ct.query.is_some() {
            return Err(SqlError::unsupported(
                "CREATE TABLE ... AS is not supported",
            ));
        }
        let mut columns: Vec<ColumnMeta> = Vec::new();
        let mut primary_key: Vec<usize> = Vec::new();
        for (i, col) in ct.columns.iter().enumerate() {
            let cname = ident_name(&col.name);
            if columns.iter().any(|c| c.name == cname) {
                return Err(SqlError::new(
                    SqlState::DUPLICATE_COLUMN,
                    format!("column \"{cname}\" specified more than once"),
                ));
            }
            let sql_type = col.data_type.to_string();
            let t = arrow_type(&sql_type)?;
            let mut nullable = true;
            for opt in &col.options {
                match &opt.option {
                    ColumnOption::NotNull => nullable = false,
                    ColumnOption::Null => {}
                    ColumnOption::PrimaryKey(_) => {
                        nullable = false;
                        primary_key.push(i);
                    }
                    ColumnOption::Unique(_) => {
                        return Err(SqlError::unsupported(
                            "UNIQUE constraints are not supported; use PRIMARY KEY",
                        ))
                    }
                    other => {
                        return Err(SqlError::unsupported(format!(
                            "column option {other} is not supported"
                        )))
                    }
                }
            }
            columns.push(ColumnMeta {
                name: cname,
                sql_type: crate::types::sql_type_name(&t),
                nullable,
            });
        }
        if columns.is_empty() {
            return Err(SqlError::unsupported(
                "tables without columns are not supported",
            ));
        }
        for c in &ct.constraints {
            match c {
                TableConstraint::PrimaryKey(pk) => {
                    if !primary_key.is_empty() {
                        return Err(SqlError::new(
                            SqlState::INVALID_TABLE_DEFINITION,
                            format!("multiple primary keys for table \"{name}\" are not allowed"),
                        ));
                    }
                    for col in &pk.columns {
                        let cname = col.column.expr.to_string();
                        let cname = cname.trim_matches('"').to_lowercase();
                        let Some(idx) = columns.iter().position(|c| c.name == cname) else {
                            return Err(SqlError::new(
                                SqlState::UNDEFINED_COLUMN,
                                format!("column \"{cname}\" named in key does not exist"),
                            ));
                        };
                        columns[idx].nullable = false;
                        primary_key.push(idx);
                    }
                }
                other => {
                    return Err(SqlError::unsupported(format!(
                        "table constraint {other} is not supported"
                    )))
                }
            }
        }
        if primary_key.len() > 1
            && ct
                .columns
                .iter()
                .filter(|c| {
                    c.options
                        .iter()
                        .any(|o| matches!(o.option, ColumnOption::PrimaryKey(_)))
                })
                .count()
                > 1
        {
            return Err(SqlError::new(
                SqlState::INVALID_TABLE_DEFINITION,
                format!("multiple primary keys for table \"{name}\" are not allowed"),
            ));
        }
        if let Some(w) = &watermark {
            let Some(col) = columns.iter().find(|c| c.name == w.column) else {
                return Err(SqlError::new(
                    SqlState::UNDEFINED_COLUMN,
                    format!(
                        "column \"{}\" named in WATERMARK FOR does not exist",
                        w.column
                    ),
                ));
            };
            if !matches!(arrow_type(&col.sql_type)?, DataType::Timestamp(..)) {
                return Err(SqlError::new(
                    SqlState::DATATYPE_MISMATCH,
                    format!(
                        "WATERMARK FOR column \"{}\" must be a timestamp, not {}",
                        w.column, col.sql_type
                    ),
                ));
            }
        }
        let connector = connector_options(&ct.table_options)?;
        if connector.is_some() && !primary_key.is_empty() {
            return Err(SqlError::unsupported(
                "a source (a table with a connector) cannot have a primary key",
            ));
        }
        let meta = TableMeta {
            id: 0,
            name: name.clone(),
            columns,
            primary_key,
            watermark,
            connector,
        };
        let schema = meta.schema()?;
        let watermark_expr = self.watermark_expr(&meta)?;
        let connector = meta
            .connector
            .as_ref()
            .map(|o| source_connector(o, &schema))
            .transpose()?;
        let id = self.allocate_id()?;
        let meta = TableMeta { id, ..meta };
        let desc = TableDesc {
            id,
            name: name.clone(),
            schema,
            primary_key: meta.primary_key.clone(),
            watermark: watermark_expr,
        };
        let table = match connector {
            Some(connector) => Table::new_source(desc, connector)?,
            None => Table::open_durable(desc, self.store.clone())?,
        };
        self.store.put_catalog(
            &table_key(&name),
            serde_json::to_string(&meta).expect("json").as_bytes(),
        )?;
        self.relations.write().insert(name.clone(), table.clone());
        self.state.lock().tables.insert(name, (meta, table));
        Ok(Output::Command {
            tag: "CREATE TABLE",
            rows: None,
        })
    }

    fn base_table(&self, name: &str) -> SqlResult<Arc<Table>> {
        let st = self.state.lock();
        if let Some((_, t)) = st.tables.get(name) {
            return Ok(t.clone());
        }
        if st.queries.contains_key(name) {
            return Err(SqlError::new(
                SqlState::WRONG_OBJECT_TYPE,
                format!("cannot change \"{name}\": it is the result of a streaming query"),
            )
            .with_hint("Results are maintained by their query; change its input tables instead."));
        }
        Err(SqlError::undefined_table(name))
    }

    async fn plan_df(
        &self,
        stmt: DfStatement,
        params: Option<ParamValues>,
    ) -> SqlResult<LogicalPlan> {
        let state = self.ctx.state();
        let plan = state.statement_to_plan(stmt).await?;
        match params {
            Some(p) => Ok(plan.with_param_values(p)?),
            None => Ok(plan),
        }
    }

    async fn collect(&self, plan: LogicalPlan) -> SqlResult<RecordBatch> {
        let df = self.ctx.execute_logical_plan(plan).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        let batch = concat_batches(&schema, &batches).map_err(weir_executor::ExecError::from)?;
        let shown = display_schema(&schema);
        Ok(RecordBatch::try_new_with_options(
            shown,
            batch.columns().to_vec(),
            &datafusion::arrow::array::RecordBatchOptions::new()
                .with_row_count(Some(batch.num_rows())),
        )
        .map_err(weir_executor::ExecError::from)?)
    }

    async fn query(&self, stmt: DfStatement, params: Option<ParamValues>) -> SqlResult<Output> {
        let plan = self.plan_df(stmt, params).await?;
        if let LogicalPlan::Dml(_) | LogicalPlan::Ddl(_) | LogicalPlan::Copy(_) = &plan {
            return Err(SqlError::unsupported("statement not supported"));
        }
        Ok(Output::Rows(self.collect(plan).await?))
    }

    async fn dml(&self, stmt: DfStatement, params: Option<ParamValues>) -> SqlResult<Output> {
        let plan = self.plan_df(stmt, params).await?;
        let LogicalPlan::Dml(DmlStatement {
            table_name,
            op,
            input,
            ..
        }) = plan
        else {
            return Err(SqlError::internal("expected a DML plan"));
        };
        let table = self.base_table(table_name.table())?;
        // Before the input is read: DELETE FROM a source would read it.
        table.check_writable()?;
        let schema = table.schema();
        match op {
            WriteOp::Insert(_) => {
                let batch = self.collect(without_final_casts(input.as_ref())?).await?;
                let batch = cast_to(&batch, &schema, &table.desc.name)?;
                let n = table.write(Chunk::inserts(batch), WriteCheck::Constraints)?;
                Ok(Output::Insert(n as usize))
            }
            WriteOp::Delete => {
                let batch = self.collect(input.as_ref().clone()).await?;
                let batch = cast_to(&batch, &schema, &table.desc.name)?;
                let n = batch.num_rows();
                table.write(Chunk::deletes(batch), WriteCheck::Constraints)?;
                Ok(Output::Command {
                    tag: "DELETE",
                    rows: Some(n),
                })
            }
            WriteOp::Update => {
                if table.desc.primary_key.is_empty() {
                    return Err(SqlError::unsupported(format!(
                        "UPDATE needs a primary key: table \"{}\" has none",
                        table.desc.name
                    )));
                }
                // Old and new rows side by side: old columns, then the new values.
                let LogicalPlan::Projection(p) = input.as_ref() else {
                    return Err(SqlError::internal("unexpected UPDATE plan"));
                };
                let inner = p.input.clone();
                let mut exprs: Vec<Expr> = inner
                    .schema()
                    .iter()
                    .enumerate()
                    .map(|(i, (q, f))| {
                        Expr::Column(Column::new(q.cloned(), f.name())).alias(format!("__old_{i}"))
                    })
                    .collect();
                let width = exprs.len();
                for (i, e) in p.expr.iter().enumerate() {
                    exprs.push(e.clone().alias(format!("__new_{i}")));
                }
                let plan = LogicalPlanBuilder::from(inner).project(exprs)?.build()?;
                let both = self.collect(plan).await?;
                let n = both.num_rows();
                if n == 0 {
                    return Ok(Output::Command {
                        tag: "UPDATE",
                        rows: Some(0),
                    });
                }
                let old = RecordBatch::try_new(schema.clone(), both.columns()[..width].to_vec())
                    .map_err(weir_executor::ExecError::from)?;
                let new_cols = both.columns()[width..].to_vec();
                let new = cast_to(
                    &RecordBatch::try_new(
                        Arc::new(Schema::new(
                            schema
                                .fields()
                                .iter()
                                .zip(&new_cols)
                                .map(|(f, c)| Field::new(f.name(), c.data_type().clone(), true))
                                .collect::<Vec<_>>(),
                        )),
                        new_cols,
                    )
                    .map_err(weir_executor::ExecError::from)?,
                    &schema,
                    &table.desc.name,
                )?;
                let both_rows =
                    Chunk::concat(&schema, &[Chunk::deletes(old), Chunk::inserts(new)])?;
                table.write(both_rows, WriteCheck::Constraints)?;
                Ok(Output::Command {
                    tag: "UPDATE",
                    rows: Some(n),
                })
            }
            other => Err(SqlError::unsupported(format!("{other} is not supported"))),
        }
    }

    fn copy_in(
        &self,
        session: &Mutex<Session>,
        table_name: &ast::ObjectName,
        columns: &[ast::Ident],
        options: &[ast::CopyOption],
        legacy: &[ast::CopyLegacyOption],
    ) -> SqlResult<Output> {
        let name = object_name(table_name)?;
        let table = self.base_table(&name)?;
        let schema = table.schema();
        let cols: Vec<usize> = if columns.is_empty() {
            (0..schema.fields().len()).collect()
        } else {
            columns
                .iter()
                .map(|c| {
                    let n = ident_name(c);
                    schema.index_of(&n).map_err(|_| {
                        SqlError::new(
                            SqlState::UNDEFINED_COLUMN,
                            format!("column \"{n}\" of relation \"{name}\" does not exist"),
                        )
                    })
                })
                .collect::<SqlResult<_>>()?
        };
        let mut csv = false;
        let mut delimiter: Option<u8> = None;
        let mut null: Option<String> = None;
        let mut header = false;
        let mut quote = b'"';
        for o in options {
            match o {
                ast::CopyOption::Format(f) => csv = f.value.eq_ignore_ascii_case("csv"),
                ast::CopyOption::Delimiter(c) => delimiter = Some(*c as u8),
                ast::CopyOption::Null(s) => null = Some(s.clone()),
                ast::CopyOption::Header(h) => header = *h,
                ast::CopyOption::Quote(c) => quote = *c as u8,
                other => {
                    return Err(SqlError::unsupported(format!(
                        "COPY option {other} is not supported"
                    )))
                }
            }
        }
        for o in legacy {
            match o {
                ast::CopyLegacyOption::Delimiter(c) => delimiter = Some(*c as u8),
                ast::CopyLegacyOption::Null(s) => null = Some(s.clone()),
                ast::CopyLegacyOption::Csv(_) => csv = true,
                other => {
                    return Err(SqlError::unsupported(format!(
                        "COPY option {other} is not supported"
                    )))
                }
            }
        }
        let format = if csv {
            CopyFormat::Csv {
                delimiter: delimiter.unwrap_or(b','),
                null: null.unwrap_or_default(),
                header,
                quote,
            }
        } else {
            CopyFormat::Text {
                delimiter: delimiter.unwrap_or(b'\t'),
                null: null.unwrap_or_else(|| "\\N".to_string()),
            }
        };
        let ncols = cols.len();
        session.lock().copy = Some(PendingCopy::new(table, cols, format));
        Ok(Output::CopyIn { columns: ncols })
    }

    /// Writes the data of a finished COPY; returns the row count.
    pub fn finish_copy(&self, copy: PendingCopy) -> SqlResult<usize> {
        let batch = copy.input.finish()?;
        let n = copy
            .table
            .write(Chunk::inserts(batch), WriteCheck::Constraints)?;
        Ok(n as usize)
    }

    /// Plans a streaming query: (graph, result schema, relations it reads).
    async fn plan_query(
        &self,
        name: &str,
        sql: &str,
        options: &BTreeMap<String, String>,
        id: Option<u64>,
    ) -> SqlResult<(weir_executor::graph::StreamGraph, Arc<Table>, Vec<String>)> {
        let parallelism = parse_options(options)?
            .0
            .unwrap_or(self.default_parallelism);
        let state = self.ctx.state();
        let (sql, emit_on_window_close) = crate::event_time::strip_emit_on_window_close(sql)?;
        let stmt = self.parse_rewritten(&sql)?;

        match &stmt {
            DfStatement::Statement(s) if matches!(s.as_ref(), Statement::Query(_)) => {}
            _ => {
                return Err(SqlError::syntax(
                    "syntax error: a streaming query must be a SELECT",
                ))
            }
        }
        let plan = state.statement_to_plan(stmt).await?;
        let plan = state.optimize(&plan)?;
        let schema = arrow_schema(plan.schema());
        let mut seen = std::collections::HashSet::new();
        for f in schema.fields() {
            if f.name().contains(crate::naming::REPEAT_MARK) || !seen.insert(f.name().clone()) {
                return Err(SqlError::new(
                    SqlState::DUPLICATE_COLUMN,
                    format!(
                        "column \"{}\" specified more than once",
                        crate::naming::display_name(f.name())
                    ),
                )
                .with_hint("Give the columns distinct names with AS."));
            }
        }
        let desc = TableDesc {
            id: id.unwrap_or(0),
            name: name.to_string(),
            schema,
            primary_key: vec![],
            watermark: None,
        };
        // EXPLAIN plans against a throwaway table; a query's result table
        // is durable, its log id being the query's id.
        let result = match id {
            Some(_) => Table::open_result(desc, self.store.clone())?,
            None => Table::new_in_memory(desc)?,
        };
        let resolver = RecordingResolver::new(self.relations.clone());
        let blackhole = option_choice(options, "connector", QUERY_CONNECTORS)? == 1;
        let file_sink = file_sink_spec(options, name, id.unwrap_or(0))?;
        let keep_late = option_choice(options, "late_records", &["drop", "keep"])? == 1;
        let graph = StreamPlanner::new(&resolver, parallelism)
            .emit_on_window_close(emit_on_window_close)
            .blackhole(blackhole)
            .file_sink(file_sink)
            .keep_late_records(keep_late)
            .plan(&plan, result.clone())?;
        let used = resolver.used.lock().clone();
        Ok((graph, result, used))
    }

    async fn create_query(
        &self,
        kind: QueryKind,
        name: String,
        if_not_exists: bool,
        options: BTreeMap<String, String>,
        sql: String,
    ) -> SqlResult<(Output, Option<CreatedQuery>)> {
        let tag = match kind {
            QueryKind::StreamingQuery => "CREATE STREAMING QUERY",
            QueryKind::MaterializedView => "CREATE MATERIALIZED VIEW",
        };
        let _ddl = self.ddl.lock().await;
        if self.exists(&name) {
            if if_not_exists {
                return Ok((Output::Command { tag, rows: None }, None));
            }
            return Err(SqlError::new(
                SqlState::DUPLICATE_TABLE,
                format!("relation \"{name}\" already exists"),
            ));
        }
        // Plan first so that errors surface before anything is stored.
        let id = self.allocate_id()?;
        let planned = self.plan_query(&name, &sql, &options, Some(id)).await?;
        // Checked at CREATE only: at a restart the query starts anyway, and
        // a directory it cannot write fails it (system.exceptions says why).
        if let Some(spec) = file_sink_spec(&options, &name, id)? {
            spec.check_writable().map_err(|e| {
                SqlError::from(e)
                    .with_hint("The file sink's directory must be writable by the Weir server.")
            })?;
        }
        let depends_on = planned.2.clone();
        let meta = QueryMeta {
            id,
            name: name.clone(),
            kind: kind.as_str().to_string(),
            sql,
            options,
            depends_on,
            created_at_ms: now_ms(),
        };
        self.store.put_catalog(
            &query_key(&name),
            serde_json::to_string(&meta).expect("json").as_bytes(),
        )?;
        if let Err(e) = self.run_query(meta, planned) {
            let _ = self.store.delete_catalog(&query_key(&name));
            return Err(e);
        }
        let Some((_, runtime)) = self.query_entry(&name) else {
            return Err(SqlError::internal(format!("query \"{name}\" vanished")));
        };
        let backfill = crate::backfill::Backfill::new(&runtime);
        if let Some(r) = self.runtimes.write().get_mut(&name) {
            r.backfill = Some(backfill.clone());
        }
        Ok((
            Output::Command { tag, rows: None },
            Some((runtime, backfill)),
        ))
    }

    /// Plans and starts a query from its catalog entry (at recovery).
    async fn start_query(&self, meta: QueryMeta) -> SqlResult<()> {
        let planned = self
            .plan_query(&meta.name, &meta.sql, &meta.options, Some(meta.id))
            .await?;
        self.run_query(meta, planned)
    }

    /// Launches a planned query and registers it. A query FAILED before a
    /// server restart stays FAILED until `ALTER ... RESTART`.
    fn run_query(
        &self,
        meta: QueryMeta,
        (graph, result, _): (weir_executor::graph::StreamGraph, Arc<Table>, Vec<String>),
    ) -> SqlResult<()> {
        let (_, config, failure) = parse_options(&meta.options)?;
        let storage = CheckpointStorage::new(self.store.clone(), &self.data_dir, meta.id);
        let store = self.store.clone();
        let key = failed_key(&meta.name);
        let on_failed: weir_executor::runtime::OnFailed = Arc::new(move |state| {
            let json = serde_json::to_vec(state).expect("json");
            if let Err(e) = store.put_catalog(&key, &json) {
                tracing::error!(error = %e, "could not record the FAILED state of a query");
            }
        });
        let opts = LaunchOptions {
            config: Arc::new(parking_lot::Mutex::new(config)),
            failure: Arc::new(parking_lot::Mutex::new(failure)),
            storage,
            result: result.clone(),
            enrichers: self.enrichers.clone(),
            on_failed: Some(on_failed),
        };
        let failed = self
            .store
            .get_catalog(&failed_key(&meta.name))?
            .and_then(|v| serde_json::from_slice::<weir_executor::runtime::FailedState>(&v).ok());
        let runtime = match failed {
            Some(state) => StreamingQuery::failed(&meta.name, graph, opts, state)?,
            None => StreamingQuery::launch(&meta.name, graph, opts)?,
        };
        self.register_query(QueryEntry {
            meta,
            table: result,
            runtime,
        });
        Ok(())
    }

    /// Makes a query visible: its result to SELECT, its handle to the
    /// system tables.
    fn register_query(&self, entry: QueryEntry) {
        let name = entry.meta.name.clone();
        self.relations
            .write()
            .insert(name.clone(), entry.table.clone());
        self.runtimes.write().insert(
            name.clone(),
            crate::system::RegisteredQuery {
                handle: entry.runtime.clone(),
                kind: entry.meta.kind.clone(),
                sql: entry.meta.sql.clone(),
                options: entry.meta.options.clone(),
                backfill: None,
            },
        );
        self.state.lock().queries.insert(name, entry);
    }

    /// Takes a query out of the catalog state and the system tables (its
    /// result stays readable until it is registered again).
    fn unregister_query(&self, name: &str) -> Option<QueryEntry> {
        self.runtimes.write().remove(name);
        self.state.lock().queries.remove(name)
    }

    /// Stops a query and starts `next` in its place: a new version of its
    /// options, or the same one with `restart` (which also ends a FAILED
    /// state). If `next` does not start, the version that ran before is
    /// started again and the error returned, so a refused change leaves
    /// the query as it was.
    async fn replace_query(
        &self,
        current: QueryMeta,
        next: QueryMeta,
        restart: bool,
    ) -> SqlResult<()> {
        let name = current.name.clone();
        let Some(old) = self.unregister_query(&name) else {
            return Err(SqlError::internal(format!(
                "query \"{name}\" is not running"
            )));
        };
        old.runtime.stop().await;
        let failed_state = self.store.get_catalog(&failed_key(&name))?;
        if restart && failed_state.is_some() {
            self.store.delete_catalog(&failed_key(&name))?;
        }
        let err = match self.start_query(next.clone()).await {
            Ok(()) => {
                if !restart {
                    self.put_query_meta(&next)?;
                }
                return Ok(());
            }
            Err(e) => e,
        };
        tracing::warn!(query = %name, error = %err, "new version did not start; starting the previous one");
        if let Some(state) = failed_state {
            self.store.put_catalog(&failed_key(&name), &state)?;
        }
        if let Err(e) = self.start_query(current).await {
            // Still listed (stopped), so that it can be dropped or restarted.
            tracing::error!(query = %name, error = %e, "previous version did not start either");
            self.register_query(old);
        }
        Err(err)
    }

    fn put_query_meta(&self, meta: &QueryMeta) -> SqlResult<()> {
        self.store.put_catalog(
            &query_key(&meta.name),
            serde_json::to_string(meta).expect("json").as_bytes(),
        )?;
        Ok(())
    }

    /// With `implicit_flush` on, a write returns once every streaming
    /// query reflects it. The write itself has succeeded: a query that
    /// fails meanwhile is reported as a warning, not as the write's error.
    async fn implicit_flush(&self, session: &Mutex<Session>) {
        if !session.lock().flag(crate::session::IMPLICIT_FLUSH) {
            return;
        }
        if let Err(e) = self.flush().await {
            session.lock().notices.push(e);
        }
    }

    fn dependents(&self, name: &str) -> Vec<(String, String)> {
        let st = self.state.lock();
        st.queries
            .values()
            .filter(|q| q.meta.depends_on.iter().any(|d| d == name))
            .map(|q| (q.meta.name.clone(), q.meta.kind.replace('_', " ")))
            .collect()
    }

    /// Refuses to drop `name` while a query outside `dropping` reads it.
    fn refuse_if_depended(&self, name: &str, noun: &str, dropping: &[String]) -> SqlResult<()> {
        let deps: Vec<(String, String)> = self
            .dependents(name)
            .into_iter()
            .filter(|(d, _)| !dropping.contains(d))
            .collect();
        if deps.is_empty() {
            return Ok(());
        }
        let detail = deps
            .iter()
            .map(|(d, kind)| format!("{kind} {d} depends on {noun} {name}"))
            .collect::<Vec<_>>()
            .join("\n");
        Err(SqlError::new(
            SqlState::DEPENDENT_OBJECTS_STILL_EXIST,
            format!("cannot drop {noun} {name} because other objects depend on it"),
        )
        .with_detail(detail)
        .with_hint("Drop the dependent objects first."))
    }

    /// `DROP TABLE a, b, ...`: every name is checked before any is dropped.
    async fn drop_table(&self, names: &[String], if_exists: bool) -> SqlResult<Output> {
        let _ddl = self.ddl.lock().await;
        let mut dropping = Vec::new();
        for name in names {
            let entry = self.state.lock().tables.get(name).map(|(m, _)| m.clone());
            let Some(meta) = entry else {
                if self.state.lock().queries.contains_key(name) {
                    return Err(SqlError::new(
                        SqlState::WRONG_OBJECT_TYPE,
                        format!("\"{name}\" is not a table"),
                    )
                    .with_hint("Use DROP MATERIALIZED VIEW or DROP STREAMING QUERY."));
                }
                if if_exists {
                    continue;
                }
                return Err(SqlError::new(
                    SqlState::UNDEFINED_TABLE,
                    format!("table \"{name}\" does not exist"),
                ));
            };
            self.refuse_if_depended(name, "table", &[])?;
            if !dropping.iter().any(|m: &TableMeta| &m.name == name) {
                dropping.push(meta);
            }
        }
        for meta in dropping {
            let name = &meta.name;
            self.store.delete_catalog(&table_key(name))?;
            self.store.drop_log(meta.id)?;
            self.relations.write().remove(name);
            self.state.lock().tables.remove(name);
        }
        Ok(Output::Command {
            tag: "DROP TABLE",
            rows: None,
        })
    }

    /// `DROP MATERIALIZED VIEW a, b, ...`: every name is checked before
    /// any is dropped; queries listed together may depend on each other
    /// (dependents go first).
    async fn drop_query(
        &self,
        kind: QueryKind,
        names: &[String],
        if_exists: bool,
    ) -> SqlResult<Output> {
        let tag = match kind {
            QueryKind::StreamingQuery => "DROP STREAMING QUERY",
            QueryKind::MaterializedView => "DROP MATERIALIZED VIEW",
        };
        let _ddl = self.ddl.lock().await;
        let mut dropping: Vec<(u64, String)> = Vec::new();
        for name in names {
            let id = self.state.lock().queries.get(name).map(|q| q.meta.id);
            let Some(id) = id else {
                if self.state.lock().tables.contains_key(name) {
                    return Err(SqlError::new(
                        SqlState::WRONG_OBJECT_TYPE,
                        format!("\"{name}\" is not a {}", kind.noun()),
                    )
                    .with_hint("Use DROP TABLE to remove a table."));
                }
                if if_exists {
                    continue;
                }
                return Err(SqlError::new(
                    SqlState::UNDEFINED_TABLE,
                    format!("{} \"{name}\" does not exist", kind.noun()),
                ));
            };
            if !dropping.iter().any(|(_, n)| n == name) {
                dropping.push((id, name.clone()));
            }
        }
        let listed: Vec<String> = dropping.iter().map(|(_, n)| n.clone()).collect();
        for (_, name) in &dropping {
            self.refuse_if_depended(name, kind.noun(), &listed)?;
        }
        // A query is created after the queries it reads.
        dropping.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
        for (_, name) in &dropping {
            self.store.delete_catalog(&query_key(name))?;
            self.store.delete_catalog(&failed_key(name))?;
            let entry = self.unregister_query(name);
            self.relations.write().remove(name);
            if let Some(e) = entry {
                e.runtime.stop().await;
                // Its checkpoints and committed results go with it.
                let storage = CheckpointStorage::new(self.store.clone(), &self.data_dir, e.meta.id);
                if let Err(err) = storage.drop_all() {
                    tracing::warn!(query = %name, error = %err, "could not delete all checkpoint files");
                }
                self.store.drop_log(e.meta.id)?;
                drop(e.table);
            }
        }
        Ok(Output::Command { tag, rows: None })
    }

    /// `ALTER STREAMING QUERY q SET (...)`: checkpoint settings apply from
    /// the next checkpoint; a new parallelism restarts the query from a
    /// fresh checkpoint, its keyed state redistributed by key group.
    /// Everything that can refuse the change is checked before the query
    /// or the catalog changes.
    async fn alter_query(
        &self,
        kind: QueryKind,
        name: String,
        options: BTreeMap<String, String>,
    ) -> SqlResult<Output> {
        let tag = alter_tag(kind);
        let _ddl = self.ddl.lock().await;
        let Some((meta, runtime)) = self.query_entry(&name) else {
            if self.state.lock().tables.contains_key(&name) {
                return Err(SqlError::new(
                    SqlState::WRONG_OBJECT_TYPE,
                    format!("\"{name}\" is not a {}", kind.noun()),
                ));
            }
            return Err(SqlError::new(
                SqlState::UNDEFINED_TABLE,
                format!("{} \"{name}\" does not exist", kind.noun()),
            ));
        };
        // Where the output goes is part of the query: a file sink resumed
        // in another directory would leave its pending parts behind.
        if let Some(k) = ["connector", "path", "format"]
            .iter()
            .find(|k| options.contains_key(**k))
        {
            return Err(SqlError::unsupported(format!(
                "option \"{k}\" of a {} cannot be changed",
                kind.noun()
            ))
            .with_hint("Drop the query and create it again."));
        }
        let old_parallelism = parse_options(&meta.options)?
            .0
            .unwrap_or(self.default_parallelism);
        let mut merged = meta.options.clone();
        if options.contains_key("restart_strategy") {
            // A new strategy starts from its own defaults.
            merged.retain(|k, _| !k.starts_with("restart_strategy."));
        }
        merged.extend(options);
        let (parallelism, config, failure) = parse_options(&merged)?;
        let next = QueryMeta {
            options: merged,
            ..meta.clone()
        };
        if parallelism.unwrap_or(self.default_parallelism) == old_parallelism {
            self.put_query_meta(&next)?;
            runtime.set_checkpoint_config(config);
            runtime.set_failure_config(failure);
            if let Some(r) = self.runtimes.write().get_mut(&name) {
                r.options = next.options.clone();
            }
            if let Some(q) = self.state.lock().queries.get_mut(&name) {
                q.meta = next;
            }
            return Ok(Output::Command { tag, rows: None });
        }
        // Rescale: plan the new version and check that it can resume from
        // this one's checkpoint before stopping anything.
        let (graph, _, _) = self
            .plan_query(&name, &next.sql, &next.options, None)
            .await?;
        if let Some(e) = graph.rescale_error(runtime.graph()) {
            return Err(SqlError::from(e)
                .with_hint("Drop the query and create it again with the new parallelism."));
        }
        // Checkpoint, stop, resume from that checkpoint.
        if let Err(msg) = runtime.flush().await {
            tracing::warn!(query = %name, error = %msg, "no final checkpoint before rescaling");
        }
        drop(runtime);
        self.replace_query(meta, next, false).await?;
        Ok(Output::Command { tag, rows: None })
    }

    /// The catalog entry and handle of a streaming query.
    fn query_entry(&self, name: &str) -> Option<(QueryMeta, Arc<StreamingQuery>)> {
        self.state
            .lock()
            .queries
            .get(name)
            .map(|q| (q.meta.clone(), q.runtime.clone()))
    }

    /// `ALTER STREAMING QUERY q RESTART`: stops the query (FAILED or not)
    /// and starts it again from its last completed checkpoint, with a
    /// fresh restart budget — e.g. after `SET (on_error = 'dead_letter')`
    /// for the bad record that failed it. A query that no longer plans is
    /// refused and left as it was.
    async fn restart_query(&self, kind: QueryKind, name: String) -> SqlResult<Output> {
        let tag = alter_tag(kind);
        let _ddl = self.ddl.lock().await;
        let Some((meta, runtime)) = self.query_entry(&name) else {
            return Err(SqlError::new(
                SqlState::UNDEFINED_TABLE,
                format!("{} \"{name}\" does not exist", kind.noun()),
            ));
        };
        drop(runtime);
        self.plan_query(&name, &meta.sql, &meta.options, None)
            .await?;
        self.replace_query(meta.clone(), meta, true).await?;
        Ok(Output::Command { tag, rows: None })
    }

    /// Result schema and parameter types of a statement, for Describe.
    pub async fn describe(
        &self,
        sql: &str,
    ) -> SqlResult<(Option<SchemaRef>, Vec<Option<DataType>>)> {
        if let Some(custom) = parse_custom(sql)? {
            let cols: &[&str] = match custom {
                Custom::ShowTables => &["name"],
                Custom::ShowQueries(_) => &["name", "status", "definition"],
                Custom::CreateQuery { explain: true, .. } => &["QUERY PLAN"],
                _ => return Ok((None, vec![])),
            };
            return Ok((Some(text_batch(cols, vec![]).schema()), vec![]));
        }
        let state = self.ctx.state();
        let Ok(stmt) = self.parse_rewritten(sql) else {
            return Ok((None, vec![]));
        };

        let inner = match &stmt {
            DfStatement::Statement(inner) => inner.clone(),
            DfStatement::Explain(_) => {
                let plan = state.statement_to_plan(stmt.clone()).await?;
                return Ok((Some(Arc::new(plan.schema().as_arrow().clone())), vec![]));
            }
            _ => return Ok((None, vec![])),
        };
        match inner.as_ref() {
            Statement::Query(_)
            | Statement::Explain { .. }
            | Statement::Insert(_)
            | Statement::Update(_)
            | Statement::Delete(_) => {
                let plan = state.statement_to_plan(stmt.clone()).await?;
                let types = plan.get_parameter_types()?;
                let mut ordered: Vec<(usize, Option<DataType>)> = types
                    .into_iter()
                    .filter_map(|(k, v)| {
                        k.trim_start_matches('$')
                            .parse::<usize>()
                            .ok()
                            .map(|i| (i, v))
                    })
                    .collect();
                ordered.sort_by_key(|(i, _)| *i);
                let mut params = vec![None; ordered.last().map_or(0, |(i, _)| *i)];
                for (i, t) in ordered {
                    params[i - 1] = t;
                }
                let schema = match &plan {
                    LogicalPlan::Dml(_) => None,
                    p => Some(display_schema(&Arc::new(p.schema().as_arrow().clone()))),
                };
                Ok((schema, params))
            }
            Statement::ShowVariable { variable } => {
                let name = variable
                    .iter()
                    .map(|i| i.value.to_lowercase())
                    .collect::<Vec<_>>()
                    .join(" ");
                let name = if name == "time zone" {
                    "timezone".to_string()
                } else {
                    name
                };
                if name == "all" {
                    return Ok((
                        Some(text_batch(&["name", "setting"], vec![]).schema()),
                        vec![],
                    ));
                }
                Ok((Some(text_batch(&[&name], vec![]).schema()), vec![]))
            }
            _ => Ok((None, vec![])),
        }
    }

    /// Every metric: the server's, then each query's.
    pub fn metrics(&self) -> Vec<weir_executor::metrics::MetricPoint> {
        crate::metrics::collect(&self.server_metrics, &self.store, &self.runtimes)
    }

    /// Stops every streaming query (server shutdown).
    pub fn shutdown(&self) {
        let st = self.state.lock();
        for q in st.queries.values() {
            q.runtime.cancel();
        }
    }
}

/// Runs CPU-bound statement work where it does not hold up the runtime's
/// other tasks (the thread hands its queued tasks to another first).
fn off_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// [`crate::parse_guard::check_depth`] over a DataFusion statement.
fn check_statement_depth(stmt: &DfStatement) -> SqlResult<()> {
    match stmt {
        DfStatement::Statement(s) => crate::parse_guard::check_depth(s.as_ref()),
        DfStatement::Explain(e) => check_statement_depth(&e.statement),
        _ => Ok(()),
    }
}

/// `pg_sleep(seconds)`: waits, then returns void (shown as an empty value).
/// Evaluated once per row, so in a streaming query it makes a slow
/// operator — what backpressure tests need.
fn pg_sleep_udf() -> datafusion::logical_expr::ScalarUDF {
    datafusion::logical_expr::ScalarUDF::new_from_impl(PgSleep {
        signature: datafusion::logical_expr::Signature::exact(
            vec![DataType::Float64],
            datafusion::logical_expr::Volatility::Volatile,
        ),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct PgSleep {
    signature: datafusion::logical_expr::Signature,
}

impl datafusion::logical_expr::ScalarUDFImpl for PgSleep {
    fn name(&self) -> &str {
        "pg_sleep"
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<datafusion::logical_expr::ColumnarValue> {
        use datafusion::arrow::array::{Array, Float64Array};
        use datafusion::logical_expr::ColumnarValue;
        let rows = args.number_rows;
        let seconds: f64 = match &args.args[0] {
            ColumnarValue::Scalar(datafusion::common::ScalarValue::Float64(Some(s))) => {
                s.max(0.0) * rows.max(1) as f64
            }
            ColumnarValue::Scalar(_) => 0.0,
            ColumnarValue::Array(a) => a
                .as_any()
                .downcast_ref::<Float64Array>()
                .map_or(0.0, |a| a.iter().flatten().filter(|s| *s > 0.0).sum()),
        };
        if seconds > 0.0 && seconds.is_finite() {
            let pause = std::time::Duration::from_secs_f64(seconds.min(3600.0));
            // Sleep without starving the runtime's other tasks.
            match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                    tokio::task::block_in_place(|| std::thread::sleep(pause))
                }
                _ => std::thread::sleep(pause),
            }
        }
        Ok(match &args.args[0] {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(datafusion::common::ScalarValue::Utf8(None))
            }
            ColumnarValue::Array(a) => ColumnarValue::Array(
                datafusion::arrow::array::new_null_array(&DataType::Utf8, a.len()),
            ),
        })
    }
}

fn alter_tag(kind: QueryKind) -> &'static str {
    match kind {
        QueryKind::StreamingQuery => "ALTER STREAMING QUERY",
        QueryKind::MaterializedView => "ALTER MATERIALIZED VIEW",
    }
}

/// Which of `choices` a query option names (0, the default, when absent).
fn option_choice(
    options: &BTreeMap<String, String>,
    name: &str,
    choices: &[&str],
) -> SqlResult<usize> {
    let Some(value) = options.get(name) else {
        return Ok(0);
    };
    let v = value.trim().to_ascii_lowercase();
    choices.iter().position(|c| *c == v).ok_or_else(|| {
        SqlError::new(
            SqlState::INVALID_PARAMETER_VALUE,
            format!(
                "invalid value for option \"{name}\": \"{value}\" (expected {})",
                choices
                    .iter()
                    .map(|c| format!("'{c}'"))
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        )
    })
}

/// The values of a streaming query's `connector` option.
const QUERY_CONNECTORS: &[&str] = &["table", "blackhole", "file"];

/// The file sink of a streaming query with `connector = 'file'` (`None`
/// for another connector, which takes no `path` or `format`).
fn file_sink_spec(
    options: &BTreeMap<String, String>,
    query: &str,
    id: u64,
) -> SqlResult<Option<weir_executor::operators::file_sink::FileSinkSpec>> {
    use weir_executor::operators::file_sink::{FileSinkFormat, FileSinkSpec};
    let bad = |m: String| SqlError::new(SqlState::INVALID_PARAMETER_VALUE, m);
    if option_choice(options, "connector", QUERY_CONNECTORS)? != 2 {
        if let Some(k) = ["path", "format"]
            .iter()
            .find(|k| options.contains_key(**k))
        {
            return Err(bad(format!(
                "option \"{k}\" applies to connector = 'file' only"
            )));
        }
        return Ok(None);
    }
    let path = options
        .get("path")
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            bad("a file sink needs a path".into())
                .with_hint("Add path = '/directory/for/the/files' to the WITH options.")
        })?;
    let path = path.strip_prefix("file://").unwrap_or(path);
    if !std::path::Path::new(path).is_absolute() {
        return Err(bad(format!(
            "file sink path must be absolute, got '{path}'"
        )));
    }
    let format = match options
        .get("format")
        .map(|f| f.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("csv") => FileSinkFormat::Csv,
        Some("json") => FileSinkFormat::JsonLines,
        Some(other) => {
            return Err(bad(format!(
                "unknown format '{other}' (expected 'csv' or 'json')"
            )))
        }
    };
    Ok(Some(FileSinkSpec::new(path, format, query, id)))
}

/// `WITH (connector = ..., ...)` of a CREATE TABLE / SOURCE, lower-case keys.
fn connector_options(
    options: &ast::CreateTableOptions,
) -> SqlResult<Option<BTreeMap<String, String>>> {
    let ast::CreateTableOptions::With(list) = options else {
        return match options {
            ast::CreateTableOptions::None => Ok(None),
            other => Err(SqlError::unsupported(format!("table options {other}"))),
        };
    };
    let mut out = BTreeMap::new();
    for o in list {
        let ast::SqlOption::KeyValue { key, value } = o else {
            return Err(SqlError::syntax(format!(
                "syntax error: expected key = 'value' in WITH, got {o}"
            )));
        };
        let v = match value {
            ast::Expr::Value(v) => match &v.value {
                ast::Value::SingleQuotedString(s) => s.clone(),
                other => other.to_string(),
            },
            other => other.to_string(),
        };
        out.insert(key.value.to_lowercase(), v);
    }
    if !out.contains_key("connector") {
        return Err(SqlError::new(
            SqlState::INVALID_PARAMETER_VALUE,
            "a table's WITH options need a connector (connector = 'file', 'nexmark' or 'datagen')",
        ));
    }
    Ok(Some(out))
}

/// The connector of a source from its `WITH` options (checked against the
/// source's columns).
fn source_connector(
    options: &BTreeMap<String, String>,
    schema: &datafusion::arrow::datatypes::SchemaRef,
) -> SqlResult<Arc<dyn weir_executor::connectors::SourceConnector>> {
    use weir_executor::connectors::{DatagenSource, NexmarkSource};
    let name = options
        .get("connector")
        .map(|v| v.trim().to_ascii_lowercase());
    Ok(match name.as_deref() {
        Some("file") | Some("filesystem") => file_source(options)?,
        Some("nexmark") => NexmarkSource::from_options(options, schema)?,
        Some("datagen") => DatagenSource::from_options(options, schema)?,
        other => {
            return Err(SqlError::new(
                SqlState::INVALID_PARAMETER_VALUE,
                format!(
                    "unknown source connector {other:?} (expected 'file', 'nexmark' or 'datagen')"
                ),
            ))
        }
    })
}

/// The files of a `connector = 'file'` source.
fn file_source(
    options: &BTreeMap<String, String>,
) -> SqlResult<Arc<weir_executor::connectors::FileSource>> {
    use weir_executor::connectors::{FileFormat, FileSource};
    let get = |k: &str| options.get(k).map(|v| v.trim().to_string());
    let bad = |m: String| SqlError::new(SqlState::INVALID_PARAMETER_VALUE, m);
    let known = ["connector", "path", "format", "header", "delimiter"];
    if let Some(k) = options.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(bad(format!(
            "unrecognized file source option \"{k}\" (valid: {})",
            known.join(", ")
        )));
    }
    let path = get("path").ok_or_else(|| bad("a file source needs a path".into()))?;
    let path = path.strip_prefix("file://").unwrap_or(&path).to_string();
    let header = match get("header")
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(bad(format!("header must be true or false, got '{other}'"))),
    };
    let format = match get("format")
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("csv") => {
            let delimiter = match get("delimiter") {
                None => b',',
                Some(d) if d.len() == 1 => d.as_bytes()[0],
                Some(d) => return Err(bad(format!("delimiter must be one character, got '{d}'"))),
            };
            FileFormat::Csv { header, delimiter }
        }
        Some("json") => FileFormat::JsonLines,
        Some(other) => {
            return Err(bad(format!(
                "unknown format '{other}' (expected 'csv' or 'json')"
            )))
        }
    };
    FileSource::open(std::path::Path::new(&path), format).map_err(|e| {
        SqlError::new(
            SqlState::UNDEFINED_FILE,
            format!("file source {path}: {}", e.message()),
        )
    })
}

fn parse_options(
    options: &BTreeMap<String, String>,
) -> SqlResult<(Option<usize>, CheckpointConfig, FailureConfig)> {
    let mut parallelism = None;
    let mut config = CheckpointConfig::default();
    let mut failure = FailureConfig::default();
    for (k, v) in options {
        match k.as_str() {
            "parallelism" => {
                let n: usize = v.parse().map_err(|_| {
                    SqlError::new(
                        SqlState::INVALID_PARAMETER_VALUE,
                        format!("invalid value for parallelism: \"{v}\""),
                    )
                    .with_hint("parallelism is a positive integer.")
                })?;
                if n == 0 || n > weir_executor::keys::MAX_PARALLELISM {
                    return Err(SqlError::new(
                        SqlState::INVALID_PARAMETER_VALUE,
                        format!(
                            "parallelism must be between 1 and {}",
                            weir_executor::keys::MAX_PARALLELISM
                        ),
                    ));
                }
                parallelism = Some(n);
            }
            // Checked when the query is planned.
            "connector" | "late_records" | "path" | "format" => {}
            other => {
                let known = match config.set(other, v) {
                    Ok(false) => failure.set(other, v),
                    r => r,
                };
                match known {
                    Ok(true) => {}
                    Ok(false) => {
                        return Err(SqlError::new(
                            SqlState::INVALID_PARAMETER_VALUE,
                            format!("unrecognized streaming query option \"{other}\""),
                        )
                        .with_hint(format!(
                            "Valid options: parallelism, {}, {}.",
                            weir_executor::checkpoint::config::OPTION_NAMES.join(", "),
                            weir_executor::failure::config::OPTION_NAMES.join(", ")
                        )))
                    }
                    Err(msg) => return Err(SqlError::new(SqlState::INVALID_PARAMETER_VALUE, msg)),
                }
            }
        }
    }
    failure
        .finish()
        .map_err(|m| SqlError::new(SqlState::INVALID_PARAMETER_VALUE, m))?;
    Ok((parallelism, config, failure))
}

/// Casts a batch to a table's schema (same column count and order).
fn cast_to(batch: &RecordBatch, schema: &SchemaRef, table: &str) -> SqlResult<RecordBatch> {
    if batch.num_columns() != schema.fields().len() {
        return Err(SqlError::internal("column count mismatch"));
    }
    let cols = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| {
            if c.data_type() == f.data_type() {
                Ok(c.clone())
            } else if matches!(
                f.data_type(),
                DataType::Binary
                    | DataType::Timestamp(..)
                    | DataType::Date32
                    | DataType::Decimal128(..)
            ) && matches!(
                c.data_type(),
                DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8
            ) {
                let strings = datafusion::arrow::compute::cast(c, &DataType::Utf8)
                    .map_err(|e| SqlError::internal(e.to_string()))?;
                let strings = strings
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .ok_or_else(|| SqlError::internal("expected text"))?;
                crate::copy::cast_strings(
                    strings.iter().map(|v| v.map(str::to_string)).collect(),
                    f.data_type(),
                    f.name(),
                )
            } else if let (DataType::Decimal128(_, from_s), DataType::Decimal128(p, s)) =
                (c.data_type(), f.data_type())
            {
                rescale_decimal(c, *from_s, *p, *s, f.name())
            } else {
                datafusion::arrow::compute::cast(c, f.data_type()).map_err(|e| {
                    SqlError::new(
                        SqlState::DATATYPE_MISMATCH,
                        format!(
                            "column \"{}\" is of type {} but expression is of type {}: {e}",
                            f.name(),
                            crate::types::sql_type_name(f.data_type()),
                            crate::types::sql_type_name(c.data_type())
                        ),
                    )
                })
            }
        })
        .collect::<SqlResult<Vec<_>>>()?;
    for (c, f) in cols.iter().zip(schema.fields()) {
        if !f.is_nullable() && c.null_count() > 0 {
            return Err(SqlError::new(
                SqlState::NOT_NULL_VIOLATION,
                format!("null value in column \"{}\" of relation \"{table}\" violates not-null constraint", f.name()),
            ));
        }
    }
    RecordBatch::try_new_with_options(
        schema.clone(),
        cols,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
    .map_err(|e| {
        if e.to_string().contains("non-nullable") {
            SqlError::new(
                SqlState::NOT_NULL_VIOLATION,
                "null value violates not-null constraint",
            )
        } else {
            SqlError::internal(e.to_string())
        }
    })
}

/// Decimal to decimal with PostgreSQL's rounding (half away from zero) and
/// precision check, where Arrow's cast would truncate.
fn rescale_decimal(c: &ArrayRef, from_s: i8, p: u8, s: i8, column: &str) -> SqlResult<ArrayRef> {
    use datafusion::arrow::array::{Array, Decimal128Array};
    let arr = c
        .as_any()
        .downcast_ref::<Decimal128Array>()
        .ok_or_else(|| SqlError::internal("expected decimal"))?;
    let limit = 10i128.pow(p as u32);
    let out: Vec<Option<i128>> = arr
        .iter()
        .map(|v| {
            v.map(|v| {
                let diff = s as i32 - from_s as i32;
                let r = if diff >= 0 {
                    v.checked_mul(10i128.pow(diff as u32))
                } else {
                    let d = 10i128.pow((-diff) as u32);
                    let q = v / d;
                    let rem = v % d;
                    Some(if rem.abs() * 2 >= d { q + v.signum() } else { q })
                };
                r.filter(|x| x.abs() < limit).ok_or(())
            })
            .transpose()
        })
        .collect::<Result<_, ()>>()
        .map_err(|_| {
            SqlError::new(SqlState::NUMERIC_VALUE_OUT_OF_RANGE, "numeric field overflow").with_detail(format!(
                "A field with precision {p}, scale {s} must round to an absolute value less than 10^{} (column \"{column}\").",
                p as i32 - s as i32
            ))
        })?;
    let arr = Decimal128Array::from(out)
        .with_precision_and_scale(p, s)
        .map_err(|e| SqlError::internal(e.to_string()))?;
    Ok(Arc::new(arr))
}

/// DataFusion's INSERT plan ends with casts to the table's types. Casts to
/// numeric and bytea, and of text to dates and timestamps, are left to
/// [`cast_to`], which rounds decimals, decodes `\x` hex text and reads
/// date-times the way PostgreSQL does.
fn without_final_casts(plan: &LogicalPlan) -> SqlResult<LogicalPlan> {
    let LogicalPlan::Projection(p) = plan else {
        return Ok(plan.clone());
    };
    let exprs = p
        .expr
        .iter()
        .map(|e| match e {
            Expr::Alias(a) => match a.expr.as_ref() {
                Expr::Cast(c)
                    if matches!(
                        c.field.data_type(),
                        DataType::Decimal128(..) | DataType::Binary
                    ) || (matches!(
                        c.field.data_type(),
                        DataType::Timestamp(..) | DataType::Date32
                    ) && datafusion::logical_expr::ExprSchemable::get_type(
                        c.expr.as_ref(),
                        p.input.schema(),
                    )
                    .is_ok_and(|t| {
                        matches!(t, DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8)
                    })) =>
                {
                    Expr::Alias(datafusion::logical_expr::expr::Alias {
                        expr: c.expr.clone(),
                        relation: a.relation.clone(),
                        name: a.name.clone(),
                        metadata: a.metadata.clone(),
                    })
                }
                _ => e.clone(),
            },
            _ => e.clone(),
        })
        .collect();
    Ok(LogicalPlan::Projection(
        datafusion::logical_expr::Projection::try_new(exprs, p.input.clone())?,
    ))
}

/// The schema with the names clients see (repeated names unmarked).
fn display_schema(schema: &SchemaRef) -> SchemaRef {
    if !schema
        .fields()
        .iter()
        .any(|f| f.name().contains(crate::naming::REPEAT_MARK))
    {
        return schema.clone();
    }
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                f.as_ref()
                    .clone()
                    .with_name(crate::naming::display_name(f.name()))
            })
            .collect::<Vec<_>>(),
    ))
}
