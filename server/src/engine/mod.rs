//! The engine behind every session: the catalog, the live tables, the
//! running streaming queries and statement dispatch. Statements of each
//! kind live in their own file: [`parse`], [`tables`], [`queries`],
//! [`dml`].

mod dml;
mod lifecycle;
mod log_truncation;
mod parse;
mod point_lookup;
mod queries;
mod scheduled_savepoints;
mod tables;

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

use dml::*;
use tables::*;

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
    /// The engine itself, for tasks that outlive a statement (the watch
    /// after an upgrade).
    me: std::sync::Weak<Engine>,
    /// Prepared statements recognized as primary-key point lookups.
    point_lookups: point_lookup::PointLookups,
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
                relations.clone(),
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
        ctx.register_udf(crate::functions::pg_sleep::pg_sleep_udf());
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
        let engine = Arc::new_cyclic(|me| Engine {
            me: me.clone(),
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
            point_lookups: Default::default(),
        });
        crate::lifecycle::operations::settle_interrupted(&engine.store)
            .map_err(|e| anyhow::anyhow!("{}", e.message))?;
        engine.recover().await?;
        engine.schedule_log_truncation();
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
        if let Some(p) = &params {
            if let Some(out) = self.point_lookup(sql, p).await? {
                return Ok(out);
            }
        }
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
                let name = shown_variable(variable);
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
                from_savepoint,
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
                    .create_query(kind, name, if_not_exists, options, query, from_savepoint)
                    .await?;
                if let Some((runtime, backfill)) = created {
                    if !backfill.reads_tables {
                        // Nothing there yet to catch up with: it runs on.
                    } else if background {
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
            Custom::Savepoint {
                kind,
                name,
                savepoint,
            } => self.savepoint_command(kind, name, savepoint).await,
            Custom::DropSavepoint {
                kind,
                name,
                savepoint,
                if_exists,
            } => self.drop_savepoint(kind, name, savepoint, if_exists).await,
            Custom::StopQuery { kind, name, force } => self.stop_query(kind, name, force).await,
            Custom::StartQuery { kind, name, from } => {
                self.start_stopped_query(kind, name, from).await
            }
            Custom::UpgradeQuery {
                kind,
                name,
                query,
                without_state,
                explain,
            } => {
                self.upgrade_query(kind, name, query, without_state, explain)
                    .await
            }
            Custom::RollbackQuery {
                kind,
                name,
                version,
            } => self.rollback_query(kind, name, version).await,
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
            Custom::Vacuum => {
                self.truncate_logs().await?;
                let store = self.store.clone();
                tokio::task::spawn_blocking(move || store.flush_tables())
                    .await
                    .map_err(|e| SqlError::internal(format!("flush panicked: {e}")))??;
                Ok(Output::Command {
                    tag: "VACUUM",
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
            if matches!(
                rt.state(),
                QueryState::Failed | QueryState::Canceled | QueryState::Stopped
            ) {
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
                Custom::UpgradeQuery { explain: true, .. } => {
                    &["operator", "node", "state", "detail"]
                }
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
                let name = shown_variable(variable);
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

/// The session parameter `SHOW` names, by Weir's name for it.
fn shown_variable(variable: &[ast::Ident]) -> String {
    let name = variable
        .iter()
        .map(|i| i.value.to_lowercase())
        .collect::<Vec<_>>()
        .join(" ");
    crate::session::canonical_name(&name).to_string()
}

/// Runs CPU-bound statement work where it does not hold up the runtime's
/// other tasks (the thread hands its queued tasks to another first).
fn off_runtime<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}
