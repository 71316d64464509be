//! Streaming queries and materialized views: planning, CREATE, ALTER,
//! RESTART and DROP. Every refusal is decided before the query or the
//! catalog changes.

use super::*;

impl Engine {
    /// Plans a streaming query: (graph, result schema, relations it reads).
    pub(super) async fn plan_query(
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

    pub(super) async fn create_query(
        &self,
        kind: QueryKind,
        name: String,
        if_not_exists: bool,
        options: BTreeMap<String, String>,
        sql: String,
        from_savepoint: Option<String>,
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
            version: 1,
        };
        let version = crate::lifecycle::versions::VersionMeta {
            created_at_ms: meta.created_at_ms,
            ..crate::lifecycle::versions::VersionMeta::active(
                &meta,
                from_savepoint.clone(),
                &planned.0,
            )
        };
        let op = self.begin_op(
            &name,
            crate::lifecycle::operations::CREATE,
            from_savepoint
                .as_ref()
                .map(|s| format!("from savepoint '{s}'"))
                .unwrap_or_default(),
        )?;
        let mut with = weir_storage::Commit::default();
        with.catalog_puts
            .push((query_key(&name), serde_json::to_vec(&meta).expect("json")));
        with.catalog_puts.push((
            crate::lifecycle::versions::key(&name, 1),
            serde_json::to_vec(&version).expect("json"),
        ));
        let created = match &from_savepoint {
            // Clone: the new query starts from another query's savepoint.
            Some(sp) => self.create_from_savepoint(sp, id, &planned, with),
            None => Ok(self.store.commit(with)?),
        }
        .and_then(|()| self.run_query(meta, planned));
        op.finish(&created, None);
        if let Err(e) = created {
            let _ = self.store.delete_catalog(&query_key(&name));
            let _ = self
                .store
                .delete_catalog(&crate::lifecycle::versions::key(&name, 1));
            return Err(e);
        }
        let Some((_, runtime)) = self.query_entry(&name) else {
            return Err(SqlError::internal(format!("query \"{name}\" vanished")));
        };
        let backfill = crate::backfill::Backfill::new(&runtime);
        if backfill.reads_tables {
            if let Some(r) = self.runtimes.write().get_mut(&name) {
                r.backfill = Some(backfill.clone());
            }
        }
        Ok((
            Output::Command { tag, rows: None },
            Some((runtime, backfill)),
        ))
    }

    /// Plans and starts a query from its catalog entry (at recovery).
    pub(super) async fn start_query(&self, meta: QueryMeta) -> SqlResult<()> {
        let planned = self
            .plan_query(&meta.name, &meta.sql, &meta.options, Some(meta.id))
            .await?;
        self.run_query(meta, planned)
    }

    /// Launches a planned query and registers it. A query FAILED before a
    /// server restart stays FAILED until `ALTER ... RESTART`.
    pub(super) fn run_query(
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
        let stopped = self
            .store
            .get_catalog(&crate::lifecycle::stopped_key(&meta.name))?
            .is_some();
        let runtime = match failed {
            _ if stopped => StreamingQuery::stopped(&meta.name, graph, opts)?,
            Some(state) => StreamingQuery::failed(&meta.name, graph, opts, state)?,
            None => StreamingQuery::launch(&meta.name, graph, opts)?,
        };
        self.schedule_savepoints(&meta, &runtime);
        self.register_query(QueryEntry {
            meta,
            table: result,
            runtime,
        });
        Ok(())
    }

    /// Makes a query visible: its result to SELECT, its handle to the
    /// system tables.
    pub(super) fn register_query(&self, entry: QueryEntry) {
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
    pub(super) fn unregister_query(&self, name: &str) -> Option<QueryEntry> {
        self.runtimes.write().remove(name);
        self.state.lock().queries.remove(name)
    }

    /// Stops a query and starts `next` in its place: a new version of its
    /// options, or the same one with `restart` (which also ends a FAILED
    /// state). If `next` does not start, the version that ran before is
    /// started again and the error returned, so a refused change leaves
    /// the query as it was.
    pub(super) async fn replace_query(
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

    pub(super) fn put_query_meta(&self, meta: &QueryMeta) -> SqlResult<()> {
        self.store.put_catalog(
            &query_key(&meta.name),
            serde_json::to_string(meta).expect("json").as_bytes(),
        )?;
        Ok(())
    }

    pub(super) fn dependents(&self, name: &str) -> Vec<(String, String)> {
        let st = self.state.lock();
        st.queries
            .values()
            .filter(|q| q.meta.depends_on.iter().any(|d| d == name))
            .map(|q| (q.meta.name.clone(), q.meta.kind.replace('_', " ")))
            .collect()
    }

    /// Refuses to drop `name` while a query outside `dropping` reads it.
    pub(super) fn refuse_if_depended(
        &self,
        name: &str,
        noun: &str,
        dropping: &[String],
    ) -> SqlResult<()> {
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

    /// `DROP MATERIALIZED VIEW a, b, ...`: every name is checked before
    /// any is dropped; queries listed together may depend on each other
    /// (dependents go first).
    pub(super) async fn drop_query(
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
            self.store
                .delete_catalog(&crate::lifecycle::stopped_key(name))?;
            // Its versions go with it; its savepoints stay (they can start
            // another query: CREATE ... FROM SAVEPOINT).
            for (key, _) in self.store.list_catalog()? {
                if key.starts_with(&crate::lifecycle::versions::prefix(name)) {
                    self.store.delete_catalog(&key)?;
                }
            }
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
    pub(super) async fn alter_query(
        &self,
        kind: QueryKind,
        name: String,
        options: BTreeMap<String, String>,
    ) -> SqlResult<Output> {
        let tag = alter_tag(kind);
        let _ddl = self.ddl.lock().await;
        let (meta, runtime) = self.lifecycle_entry(kind, &name)?;
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
        let detail = options
            .iter()
            .map(|(k, v)| format!("{k} = '{v}'"))
            .collect::<Vec<_>>()
            .join(", ");
        merged.extend(options);
        let (parallelism, config, failure) = parse_options(&merged)?;
        let mut next = QueryMeta {
            options: merged,
            ..meta.clone()
        };
        let new_parallelism = parallelism.unwrap_or(self.default_parallelism);
        if new_parallelism == old_parallelism {
            let op = self.begin_op(&name, crate::lifecycle::operations::ALTER, detail)?;
            // The running version's options change in place.
            let mut version = self.version_meta(&meta)?;
            version.options = next.options.clone();
            let r = self.store.commit(weir_storage::Commit {
                catalog_puts: vec![
                    (query_key(&name), serde_json::to_vec(&next).expect("json")),
                    (
                        crate::lifecycle::versions::key(&name, meta.version),
                        serde_json::to_vec(&version).expect("json"),
                    ),
                ],
                ..Default::default()
            });
            op.finish(&r, None);
            r?;
            // A schedule set now starts now (one set before reads the new
            // options at its next turn).
            if !matches!(
                super::scheduled_savepoints::schedule(&meta.options),
                Ok(Some(_))
            ) {
                self.schedule_savepoints(&next, &runtime);
            }
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
        // A savepoint (a rollback returns to the old parallelism from it),
        // stop, resume at the new parallelism from that checkpoint: a new
        // version with the same definition.
        let op = self.begin_op(
            &name,
            crate::lifecycle::operations::RESCALE,
            format!("parallelism {old_parallelism} -> {new_parallelism}"),
        )?;
        let sp = match self
            .take_savepoint(
                &meta,
                &runtime,
                None,
                crate::lifecycle::savepoints::BEFORE_UPGRADE,
            )
            .await
        {
            Ok(sp) => Some(sp.name),
            Err(e) => {
                tracing::warn!(query = %name, error = %e, "no savepoint before rescaling");
                if let Err(msg) = runtime.flush().await {
                    tracing::warn!(query = %name, error = %msg, "no final checkpoint before rescaling");
                }
                None
            }
        };
        drop(runtime);
        next.version = self.next_version(&meta)?;
        let old_version = self.version_meta(&meta)?;
        let r = self.replace_query(meta.clone(), next.clone(), false).await;
        if r.is_ok() {
            let versions = [
                crate::lifecycle::versions::VersionMeta {
                    status: crate::lifecycle::versions::SUPERSEDED.into(),
                    replaced_at: sp.clone(),
                    ..old_version
                },
                crate::lifecycle::versions::VersionMeta::active(&next, sp, &graph),
            ];
            for v in &versions {
                self.store.put_catalog(
                    &crate::lifecycle::versions::key(&name, v.version),
                    &serde_json::to_vec(v).expect("json"),
                )?;
            }
        }
        op.finish(&r, None);
        r?;
        Ok(Output::Command { tag, rows: None })
    }

    /// The catalog entry and handle of a streaming query.
    pub(super) fn query_entry(&self, name: &str) -> Option<(QueryMeta, Arc<StreamingQuery>)> {
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
    pub(super) async fn restart_query(&self, kind: QueryKind, name: String) -> SqlResult<Output> {
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
        let op = self.begin_op(&name, crate::lifecycle::operations::RESTART, String::new())?;
        let r = self.replace_query(meta.clone(), meta, true).await;
        op.finish(&r, None);
        r?;
        Ok(Output::Command { tag, rows: None })
    }
}

pub(super) fn alter_tag(kind: QueryKind) -> &'static str {
    match kind {
        QueryKind::StreamingQuery => "ALTER STREAMING QUERY",
        QueryKind::MaterializedView => "ALTER MATERIALIZED VIEW",
    }
}

impl Engine {
    /// `CREATE ... FROM SAVEPOINT 'sp'`: the savepoint becomes the new
    /// query's checkpoint and its results the new result table's rows,
    /// committed with the catalog entries in `with`.
    fn create_from_savepoint(
        &self,
        savepoint: &str,
        id: u64,
        planned: &(weir_executor::graph::StreamGraph, Arc<Table>, Vec<String>),
        with: weir_storage::Commit,
    ) -> SqlResult<()> {
        let has_result = planned
            .0
            .nodes
            .iter()
            .any(|n| matches!(n.kind, weir_executor::graph::NodeKind::ResultSink(_)));
        let result = has_result.then(|| planned.1.clone());
        let point = self.savepoint_point(savepoint, &planned.0, result.as_ref())?;
        let storage = CheckpointStorage::new(self.store.clone(), &self.data_dir, id);
        off_runtime(|| {
            weir_executor::checkpoint::savepoint::import(&storage, point, result.as_ref(), with)
        })?;
        Ok(())
    }
}

/// Which of `choices` a query option names (0, the default, when absent).
pub(super) fn option_choice(
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
pub(super) const QUERY_CONNECTORS: &[&str] = &["table", "blackhole", "file"];

/// The file sink of a streaming query with `connector = 'file'` (`None`
/// for another connector, which takes no `path` or `format`).
pub(super) fn file_sink_spec(
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

pub(super) fn parse_options(
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
            "savepoint_interval" | "savepoints_retained" => {
                super::scheduled_savepoints::schedule(options)
                    .map_err(|m| SqlError::new(SqlState::INVALID_PARAMETER_VALUE, m))?;
            }
            "auto_rollback" | "auto_rollback.window" | "auto_rollback.restarts" => {
                crate::lifecycle::versions::AutoRollback::from_options(options)
                    .map_err(|m| SqlError::new(SqlState::INVALID_PARAMETER_VALUE, m))?;
            }
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
