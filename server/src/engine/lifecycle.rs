//! The life of a running query: savepoints, STOP and START with their
//! restore modes, upgrades (`ALTER ... AS SELECT`) with a dry run, and
//! rollbacks, manual and automatic. Each change is checked before the
//! query stops, and the catalog changes that must agree with the query's
//! checkpoints are written in the same atomic commit as they are.

use std::time::Duration;

use weir_executor::checkpoint::savepoint::{self, RestorePoint};
use weir_executor::graph::NodeKind;
use weir_storage::Commit;

use super::queries::alter_tag;
use super::*;
use crate::lifecycle::operations::{self as ops, Operation};
use crate::lifecycle::savepoints::{self as sps, SavepointMeta};
use crate::lifecycle::versions::{self, VersionMeta};
use crate::lifecycle::{json, list, stopped_key, Stopped};
use crate::statements::StartFrom;

/// Whether a graph ends in the query's result table (not a sink outside).
fn has_result(graph: &weir_executor::graph::StreamGraph) -> bool {
    graph
        .nodes
        .iter()
        .any(|n| matches!(n.kind, NodeKind::ResultSink(_)))
}

fn not_in_state(message: String) -> SqlError {
    SqlError::new(SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE, message)
}

/// The same columns (names and types) in the same order.
fn same_columns(a: &SchemaRef, b: &SchemaRef) -> bool {
    a.fields().len() == b.fields().len()
        && a.fields()
            .iter()
            .zip(b.fields())
            .all(|(x, y)| x.name() == y.name() && x.data_type() == y.data_type())
}

/// What an upgrade keeps, operator by operator.
pub(super) struct UpgradeReport {
    /// (operator, node, fate, why) for the new plan's nodes, then the
    /// dropped ones of the old plan.
    pub rows: Vec<(String, usize, &'static str, String)>,
    /// The plans are equal: every operator keeps its state as it is.
    pub keeps_all: bool,
    /// How the old state maps onto the new plan when some of it can be
    /// kept (`None` when the plans are equal, or when a node is
    /// incompatible).
    pub remap: Option<savepoint::Remap>,
}

impl UpgradeReport {
    /// The first operator whose state the upgrade cannot keep.
    fn refusal(&self) -> Option<&(String, usize, &'static str, String)> {
        self.rows.iter().find(|r| r.2 == "incompatible")
    }
}

/// Compares the running plan with a new one. A node of the new plan whose
/// fingerprint (itself and everything upstream) equals one of the old
/// plan's keeps that node's state. Where kept nodes feed new ones, the new
/// ones need the kept node's whole output: a kept aggregation emits its
/// results again from its state, a kept source reads its input again from
/// the start — unless the same node also feeds kept operators with state,
/// which would then count it twice (incompatible), or it cannot (a window
/// aggregation forgets closed windows; a file sink cannot take back what
/// it wrote).
pub(super) fn upgrade_report(
    old: &weir_executor::graph::StreamGraph,
    new: &weir_executor::graph::StreamGraph,
) -> UpgradeReport {
    use std::collections::{HashMap, HashSet};
    let old_fp = old.fingerprints();
    let new_fp = new.fingerprints();
    let keeps_all = old_fp == new_fp;
    let mut by_fp: HashMap<&str, usize> = HashMap::new();
    for (j, f) in old_fp.iter().enumerate() {
        by_fp.entry(f.as_str()).or_insert(j);
    }
    let mut kept: HashMap<usize, usize> = HashMap::new();
    let mut used = HashSet::new();
    for (i, f) in new_fp.iter().enumerate() {
        if let Some(&j) = by_fp.get(f.as_str()) {
            if used.insert(j) {
                kept.insert(i, j);
            }
        }
    }
    let probe = |n: &weir_executor::graph::Node| -> (bool, bool) {
        match &n.kind {
            NodeKind::Operator(f) => f
                .create(0, n.parallelism)
                .map_or((true, false), |o| (o.uses_keyed_state(), o.can_reemit())),
            _ => (false, false),
        }
    };
    let stateful: Vec<bool> = new.nodes.iter().map(|n| probe(n).0).collect();
    let reemits: Vec<bool> = new.nodes.iter().map(|n| probe(n).1).collect();
    let is_source = |i: usize| matches!(new.nodes[i].kind, NodeKind::TableSource(_));
    let is_sink = |i: usize| new.outputs_of(i).is_empty();
    let consumers = |i: usize| -> Vec<usize> { new.outputs_of(i).iter().map(|e| e.to).collect() };
    // Kept nodes with state (or a sink) reachable through kept nodes only.
    fn feeds_kept_state(
        i: usize,
        kept: &HashMap<usize, usize>,
        stateful: &[bool],
        new: &weir_executor::graph::StreamGraph,
    ) -> bool {
        new.outputs_of(i).iter().any(|e| {
            kept.contains_key(&e.to)
                && (stateful[e.to]
                    || new.outputs_of(e.to).is_empty()
                    || feeds_kept_state(e.to, kept, stateful, new))
        })
    }
    // The nodes whose whole output the new nodes above a frontier need.
    fn roots(
        i: usize,
        new: &weir_executor::graph::StreamGraph,
        stateful: &[bool],
        out: &mut Vec<usize>,
    ) {
        if stateful[i] || matches!(new.nodes[i].kind, NodeKind::TableSource(_)) {
            if !out.contains(&i) {
                out.push(i);
            }
            return;
        }
        for e in new.inputs_of(i) {
            roots(e.from, new, stateful, out);
        }
    }
    let mut why_kept: HashMap<usize, String> = HashMap::new();
    let mut incompatible: HashMap<usize, String> = HashMap::new();
    let mut fresh = Vec::new();
    let mut reemit = Vec::new();
    if !keeps_all {
        for (&i, _) in kept.iter() {
            if consumers(i).iter().all(|c| kept.contains_key(c)) {
                continue;
            }
            let mut rs = Vec::new();
            roots(i, new, &stateful, &mut rs);
            for r in rs {
                if feeds_kept_state(r, &kept, &stateful, new) {
                    incompatible.insert(r, "unchanged, but it feeds both operators that keep their state and new ones, which would have to see its whole output again".into());
                } else if is_source(r) {
                    if !fresh.iter().any(|(n, _)| *n == r) {
                        let connector = matches!(&new.nodes[r].kind, NodeKind::TableSource(t) if t.connector().is_some());
                        fresh.push((r, connector));
                        why_kept.insert(r, "unchanged; reads its input again from the start for the new operators above it".into());
                    }
                } else if reemits[r] {
                    if !reemit.contains(&r) {
                        reemit.push(r);
                        why_kept.insert(r, "unchanged: keeps its state and emits its results again for the new operators above it".into());
                    }
                } else {
                    incompatible.insert(r, "unchanged, but its results cannot be computed again from its state (a window aggregation forgets the windows it closed, an interval join the rows that expired)".into());
                }
            }
        }
        // Sources new to the plan read their input from the start too.
        for (i, n) in new.nodes.iter().enumerate() {
            if let NodeKind::TableSource(t) = &n.kind {
                if !kept.contains_key(&i) && !fresh.iter().any(|(f, _)| *f == i) {
                    fresh.push((i, t.connector().is_some()));
                }
            }
        }
        for (i, n) in new.nodes.iter().enumerate() {
            let sink_outside = matches!(&n.kind, NodeKind::Operator(f) if f.committer().is_some());
            if sink_outside && is_sink(i) {
                incompatible.insert(
                    i,
                    "a file sink cannot take back what the old version wrote".into(),
                );
            }
        }
    }
    let mut rows = Vec::new();
    for (i, n) in new.nodes.iter().enumerate() {
        let (fate, why) = if let Some(why) = incompatible.get(&i) {
            ("incompatible", why.clone())
        } else if kept.contains_key(&i) {
            let why = why_kept.get(&i).cloned().unwrap_or_else(|| {
                if stateful[i] {
                    "unchanged: keeps its state".into()
                } else {
                    "unchanged (no state)".into()
                }
            });
            ("kept", why)
        } else if stateful[i] {
            let was = old.nodes.iter().any(|o| o.name == n.name);
            (
                "new",
                if was {
                    "changed (its definition or its input differs): starts empty, computed from the operators below it"
                } else {
                    "starts empty, computed from the operators below it"
                }
                .to_string(),
            )
        } else {
            ("new", "no state".to_string())
        };
        rows.push((n.name.clone(), i, fate, why));
    }
    let matched: HashSet<usize> = kept.values().copied().collect();
    for (j, n) in old.nodes.iter().enumerate() {
        if !matched.contains(&j) {
            rows.push((
                n.name.clone(),
                j,
                "dropped",
                "not in the new version".to_string(),
            ));
        }
    }
    let remap = (!keeps_all && incompatible.is_empty()).then(|| savepoint::Remap {
        nodes: kept.iter().map(|(i, j)| (*j, *i)).collect(),
        names: new.nodes.iter().map(|n| n.name.clone()).collect(),
        fingerprints: new_fp.clone(),
        parallelism: new.nodes.iter().map(|n| n.parallelism).collect(),
        fresh_sources: fresh,
        reemit,
    });
    UpgradeReport {
        rows,
        keeps_all,
        remap,
    }
}

impl Engine {
    /// The catalog entry and handle of a query, or the error naming what
    /// `name` is instead.
    pub(super) fn lifecycle_entry(
        &self,
        kind: QueryKind,
        name: &str,
    ) -> SqlResult<(QueryMeta, Arc<StreamingQuery>)> {
        if let Some(e) = self.query_entry(name) {
            return Ok(e);
        }
        if self.state.lock().tables.contains_key(name) {
            return Err(SqlError::new(
                SqlState::WRONG_OBJECT_TYPE,
                format!("\"{name}\" is not a {}", kind.noun()),
            ));
        }
        Err(SqlError::new(
            SqlState::UNDEFINED_TABLE,
            format!("{} \"{name}\" does not exist", kind.noun()),
        ))
    }

    pub(super) fn begin_op(
        &self,
        query: &str,
        operation: &str,
        detail: String,
    ) -> SqlResult<Operation> {
        let id = self.allocate_id()?;
        Ok(Operation::begin(&self.store, id, query, operation, detail))
    }

    /// `ALTER ... name SAVEPOINT [AS 'sp']`.
    pub(super) async fn savepoint_command(
        &self,
        kind: QueryKind,
        name: String,
        savepoint: Option<String>,
    ) -> SqlResult<Output> {
        let _ddl = self.ddl.lock().await;
        let (meta, runtime) = self.lifecycle_entry(kind, &name)?;
        let op = self.begin_op(&name, ops::SAVEPOINT, String::new())?;
        let r = self
            .take_savepoint(&meta, &runtime, savepoint, sps::MANUAL)
            .await;
        op.finish(
            &r,
            r.as_ref().ok().map(|s| format!("savepoint '{}'", s.name)),
        );
        r?;
        Ok(Output::Command {
            tag: alter_tag(kind),
            rows: None,
        })
    }

    /// Writes a savepoint of the query: of a new aligned checkpoint when it
    /// runs, of its last completed checkpoint when it is STOPPED or FAILED
    /// (its results then are those of that checkpoint).
    pub(super) async fn take_savepoint(
        &self,
        meta: &QueryMeta,
        runtime: &Arc<StreamingQuery>,
        name: Option<String>,
        trigger: &str,
    ) -> SqlResult<SavepointMeta> {
        let name = match name {
            Some(n) if n.trim().is_empty() => {
                return Err(SqlError::new(
                    SqlState::INVALID_PARAMETER_VALUE,
                    "a savepoint name cannot be empty",
                ))
            }
            Some(n) => {
                if self.store.get_catalog(&sps::key(&n))?.is_some() {
                    return Err(SqlError::new(
                        SqlState::DUPLICATE_OBJECT,
                        format!("savepoint \"{n}\" already exists"),
                    ));
                }
                n
            }
            None => {
                let mut n = 1;
                loop {
                    let candidate = format!("{}-{n}", meta.name);
                    if self.store.get_catalog(&sps::key(&candidate))?.is_none() {
                        break candidate;
                    }
                    n += 1;
                }
            }
        };
        let dir = sps::directory(&self.data_dir, &name);
        let server = serde_json::json!({
            "query": meta.name,
            "kind": meta.kind,
            "version": meta.version,
            "definition": meta.sql,
            "options": meta.options,
            "trigger": trigger,
            "name": name,
        });
        let storage = runtime.storage().clone();
        let result = has_result(runtime.graph()).then(|| runtime.result().clone());
        let written: Arc<parking_lot::Mutex<Option<(u64, u64)>>> = Arc::default();
        match runtime.state() {
            QueryState::Running => {
                let slot = written.clone();
                let target = dir.clone();
                runtime
                    .checkpoint_then(Box::new(move |rec| {
                        let bytes = savepoint::write_savepoint(
                            &storage,
                            rec,
                            result.as_deref(),
                            &target,
                            server,
                        )?;
                        *slot.lock() = Some((bytes, rec.epoch));
                        Ok(())
                    }))
                    .await
                    .map_err(|e| {
                        SqlError::new(e.sqlstate, format!("could not take a savepoint: {}", e.message))
                            .with_hint("A query stuck restarting can be stopped without one: STOP STREAMING QUERY ... FORCE.")
                    })?;
            }
            QueryState::Stopped | QueryState::Failed => {
                let rec = storage.records()?.pop().ok_or_else(|| {
                    not_in_state(format!(
                        "{} \"{}\" has no completed checkpoint to save",
                        meta.kind.replace('_', " "),
                        meta.name
                    ))
                })?;
                let bytes = off_runtime(|| {
                    savepoint::write_savepoint(&storage, &rec, result.as_deref(), &dir, server)
                })?;
                *written.lock() = Some((bytes, rec.epoch));
            }
            other => return Err(not_in_state(format!(
                "cannot take a savepoint of \"{}\" while it is {}",
                meta.name,
                other.as_str()
            ))
            .with_hint(
                "Wait until it runs again, or stop it without one: STOP STREAMING QUERY ... FORCE.",
            )),
        }
        let (bytes, epoch) = written
            .lock()
            .take()
            .ok_or_else(|| SqlError::internal("the savepoint was not written"))?;
        let sp = SavepointMeta {
            name: name.clone(),
            query: meta.name.clone(),
            query_id: meta.id,
            version: meta.version,
            trigger: trigger.to_string(),
            created_at_ms: now_ms(),
            path: dir.display().to_string(),
            bytes,
            checkpoint_id: epoch,
            status: "completed".into(),
        };
        self.store.put_catalog(&sps::key(&name), &json(&sp))?;
        tracing::info!(query = %meta.name, savepoint = %name, path = %sp.path, bytes, "savepoint taken");
        Ok(sp)
    }

    /// `ALTER ... name DROP SAVEPOINT [IF EXISTS] 'sp'`: forgets it and
    /// deletes its directory.
    pub(super) async fn drop_savepoint(
        &self,
        kind: QueryKind,
        name: String,
        savepoint: String,
        if_exists: bool,
    ) -> SqlResult<Output> {
        let _ddl = self.ddl.lock().await;
        self.lifecycle_entry(kind, &name)?;
        let tag = alter_tag(kind);
        let sp = match self.savepoint_meta(&savepoint)? {
            Some(sp) if sp.query == name => sp,
            Some(sp) => {
                return Err(SqlError::new(
                    SqlState::INVALID_PARAMETER_VALUE,
                    format!(
                        "savepoint \"{savepoint}\" belongs to \"{}\", not \"{name}\"",
                        sp.query
                    ),
                ))
            }
            None if if_exists => return Ok(Output::Command { tag, rows: None }),
            None => {
                return Err(SqlError::new(
                    SqlState::UNDEFINED_OBJECT,
                    format!("savepoint \"{savepoint}\" does not exist"),
                ))
            }
        };
        self.forget_savepoint(&sp)?;
        Ok(Output::Command { tag, rows: None })
    }

    /// Takes a savepoint out of the catalog and deletes its directory.
    pub(super) fn forget_savepoint(&self, sp: &SavepointMeta) -> SqlResult<()> {
        self.store.delete_catalog(&sps::key(&sp.name))?;
        if let Err(e) = std::fs::remove_dir_all(&sp.path) {
            tracing::warn!(path = %sp.path, error = %e, "could not delete a savepoint's directory");
        }
        Ok(())
    }

    fn savepoint_meta(&self, name: &str) -> SqlResult<Option<SavepointMeta>> {
        Ok(self
            .store
            .get_catalog(&sps::key(name))?
            .and_then(|v| serde_json::from_slice(&v).ok()))
    }

    /// A savepoint's directory: a name in the catalog, or an absolute path
    /// (a savepoint copied from another server).
    fn savepoint_dir(&self, savepoint: &str) -> SqlResult<std::path::PathBuf> {
        if std::path::Path::new(savepoint).is_absolute() {
            return Ok(savepoint.into());
        }
        match self.savepoint_meta(savepoint)? {
            Some(sp) => Ok(sp.path.into()),
            None => Err(SqlError::new(
                SqlState::UNDEFINED_OBJECT,
                format!("savepoint \"{savepoint}\" does not exist"),
            )
            .with_hint("See SELECT * FROM system.savepoints; a savepoint directory copied from elsewhere is named by its absolute path.")),
        }
    }

    /// A savepoint as a restore point for `graph`, refused when it was
    /// taken from another plan.
    pub(super) fn savepoint_point(
        &self,
        savepoint: &str,
        graph: &weir_executor::graph::StreamGraph,
        result: Option<&Arc<Table>>,
    ) -> SqlResult<RestorePoint> {
        let dir = self.savepoint_dir(savepoint)?;
        let manifest = savepoint::read_manifest(&dir)?;
        check_plan(
            &manifest.record,
            graph,
            &format!("savepoint \"{savepoint}\""),
        )?;
        let schema = result.map(|t| t.schema());
        Ok(RestorePoint::from_savepoint(&dir, schema.as_ref())?)
    }

    /// `STOP ... name [FORCE]`: a savepoint, then the query stops; FORCE
    /// stops at once without one.
    pub(super) async fn stop_query(
        &self,
        kind: QueryKind,
        name: String,
        force: bool,
    ) -> SqlResult<Output> {
        let _ddl = self.ddl.lock().await;
        let (meta, runtime) = self.lifecycle_entry(kind, &name)?;
        if runtime.state() == QueryState::Stopped {
            return Err(not_in_state(format!(
                "{} \"{name}\" is already stopped",
                kind.noun()
            )));
        }
        let op = self.begin_op(
            &name,
            ops::STOP,
            if force { "FORCE".into() } else { String::new() },
        )?;
        let r = self.stop_locked(&meta, &runtime, force).await;
        op.finish(
            &r,
            r.as_ref()
                .ok()
                .and_then(|sp| sp.as_ref().map(|s| format!("savepoint '{s}'"))),
        );
        r?;
        Ok(Output::Command {
            tag: if kind == QueryKind::StreamingQuery {
                "STOP STREAMING QUERY"
            } else {
                "STOP MATERIALIZED VIEW"
            },
            rows: None,
        })
    }

    async fn stop_locked(
        &self,
        meta: &QueryMeta,
        runtime: &Arc<StreamingQuery>,
        force: bool,
    ) -> SqlResult<Option<String>> {
        let savepoint = if force {
            None
        } else {
            Some(
                self.take_savepoint(meta, runtime, None, sps::STOP)
                    .await?
                    .name,
            )
        };
        let old = self.unregister_query(&meta.name);
        runtime.stop().await;
        self.store.put_catalog(
            &stopped_key(&meta.name),
            &json(&Stopped {
                stopped_at_ms: now_ms(),
                savepoint: savepoint.clone(),
            }),
        )?;
        if let Err(e) = self.start_query(meta.clone()).await {
            tracing::error!(query = %meta.name, error = %e, "stopped query could not be planned");
            if let Some(old) = old {
                self.register_query(old);
            }
        }
        Ok(savepoint)
    }

    /// `START ... name [FROM LATEST | FROM SAVEPOINT 'sp' | FROM CHECKPOINT
    /// n | WITHOUT STATE]` of a STOPPED (or FAILED) query.
    pub(super) async fn start_stopped_query(
        &self,
        kind: QueryKind,
        name: String,
        from: StartFrom,
    ) -> SqlResult<Output> {
        let _ddl = self.ddl.lock().await;
        let (meta, runtime) = self.lifecycle_entry(kind, &name)?;
        if !matches!(runtime.state(), QueryState::Stopped | QueryState::Failed) {
            return Err(not_in_state(format!(
                "{} \"{name}\" is {}; only a STOPPED or FAILED query can be started",
                kind.noun(),
                runtime.state().as_str()
            ))
            .with_hint(format!(
                "Stop it first: STOP {} {name}.",
                kind.noun().to_uppercase()
            )));
        }
        let detail = match &from {
            StartFrom::Latest => "from latest".to_string(),
            StartFrom::Savepoint(s) => format!("from savepoint '{s}'"),
            StartFrom::Checkpoint(n) => format!("from checkpoint {n}"),
            StartFrom::WithoutState => "without state".to_string(),
        };
        let op = self.begin_op(&name, ops::START, detail)?;
        let r = self.start_locked(meta, runtime, from).await;
        op.finish(&r, None);
        r?;
        Ok(Output::Command {
            tag: if kind == QueryKind::StreamingQuery {
                "START STREAMING QUERY"
            } else {
                "START MATERIALIZED VIEW"
            },
            rows: None,
        })
    }

    async fn start_locked(
        &self,
        meta: QueryMeta,
        runtime: Arc<StreamingQuery>,
        from: StartFrom,
    ) -> SqlResult<()> {
        let name = meta.name.clone();
        let (planned, result) = self.plan_durable(&meta).await?;
        let storage = CheckpointStorage::new(self.store.clone(), &self.data_dir, meta.id);
        let point = match &from {
            StartFrom::Latest | StartFrom::WithoutState => None,
            StartFrom::Savepoint(s) => {
                Some(self.savepoint_point(s, &planned.0, result.as_ref())?)
            }
            StartFrom::Checkpoint(n) => {
                let p = RestorePoint::from_checkpoint(&storage, *n, result.as_deref())?;
                check_plan(&p.record, &planned.0, &format!("checkpoint {n}"))?;
                Some(p)
            }
        };
        let old = self.unregister_query(&name);
        runtime.stop().await;
        let with = Commit {
            catalog_deletes: vec![stopped_key(&name), failed_key(&name)],
            ..Default::default()
        };
        let applied = off_runtime(|| match (point, &from) {
            (Some(p), _) => savepoint::import(&storage, p, result.as_ref(), with).map(|_| ()),
            (None, StartFrom::WithoutState) => savepoint::wipe(&storage, result.as_ref(), with),
            (None, _) => Ok(self.store.commit(with)?),
        });
        let started = match applied {
            Ok(()) => self.run_query(meta.clone(), planned),
            Err(e) => Err(e.into()),
        };
        if let Err(e) = started {
            // Still listed as it was, so that it can be started again.
            let _ = self.store.put_catalog(
                &stopped_key(&name),
                &json(&Stopped {
                    stopped_at_ms: now_ms(),
                    savepoint: None,
                }),
            );
            if let Some(old) = old {
                self.register_query(old);
            }
            return Err(e);
        }
        Ok(())
    }

    /// `[EXPLAIN] ALTER ... name [WITHOUT STATE] AS SELECT ...`: a new
    /// version of the query. The operators it did not change keep their
    /// state (`upgrade_report`); `WITHOUT STATE` recomputes everything from
    /// the inputs. A savepoint of the running version is taken first, for
    /// a rollback.
    pub(super) async fn upgrade_query(
        &self,
        kind: QueryKind,
        name: String,
        sql: String,
        without_state: bool,
        explain: bool,
    ) -> SqlResult<Output> {
        let ddl = self.ddl.lock().await;
        let (meta, runtime) = self.lifecycle_entry(kind, &name)?;
        let planned = self.plan_query(&name, &sql, &meta.options, None).await?;
        let report = upgrade_report(runtime.graph(), &planned.0);
        if explain {
            let mut rows: Vec<Vec<String>> = report
                .rows
                .iter()
                .map(|(op, node, fate, why)| {
                    vec![op.clone(), node.to_string(), fate.to_string(), why.clone()]
                })
                .collect();
            let (verdict, detail) = if without_state {
                ("recomputes", "WITHOUT STATE: every operator starts empty and the results are computed again from the inputs")
            } else if report.keeps_all {
                (
                    "keeps state",
                    "the plans are equal: every operator keeps its state",
                )
            } else if report.remap.is_some() {
                ("keeps state", "the unchanged operators keep their state; the new ones are computed from them and the results replace the old version's at the first checkpoint")
            } else {
                (
                    "refused",
                    "the state cannot be kept across this change; add WITHOUT STATE to recompute",
                )
            };
            rows.push(vec![
                "(upgrade)".into(),
                String::new(),
                verdict.into(),
                detail.into(),
            ]);
            return Ok(Output::Rows(text_batch(
                &["operator", "node", "state", "detail"],
                rows,
            )));
        }
        if let (Some((op, node, _, why)), false) = (report.refusal().cloned(), without_state) {
            return Err(SqlError::unsupported(format!(
                "cannot keep the state of {} \"{name}\": {op} (node {node}) {why}",
                kind.noun()
            ))
            .with_hint(format!(
                "EXPLAIN ALTER {} {name} AS ... shows what each operator keeps; ALTER {} {name} WITHOUT STATE AS ... recomputes the results from the inputs.",
                kind.noun().to_uppercase(),
                kind.noun().to_uppercase()
            )));
        }
        let old_schema = runtime.result().schema();
        let schema_changed = !same_columns(&old_schema, &planned.1.schema());
        if schema_changed {
            let deps = self.dependents(&name);
            if let Some((d, k)) = deps.first() {
                return Err(SqlError::new(
                    SqlState::DEPENDENT_OBJECTS_STILL_EXIST,
                    format!(
                        "cannot change the columns of {} \"{name}\": {k} {d} reads it",
                        kind.noun()
                    ),
                )
                .with_hint("Keep the columns, or drop the queries that read it first."));
            }
        }
        let (graph, _, depends_on) = planned;
        let next = QueryMeta {
            sql,
            depends_on,
            version: self.next_version(&meta)?,
            ..meta.clone()
        };
        let op = self.begin_op(
            &name,
            ops::UPGRADE,
            format!(
                "version {} -> {}{}",
                meta.version,
                next.version,
                if without_state { " WITHOUT STATE" } else { "" }
            ),
        )?;
        let remap = if without_state { None } else { report.remap };
        let r = self
            .upgrade_locked(
                meta,
                runtime,
                next,
                &graph,
                without_state,
                remap,
                schema_changed,
            )
            .await;
        op.finish(&r, None);
        let automatic = r?;
        drop(ddl);
        if automatic.is_none() {
            // Like CREATE: the statement returns once the new version's
            // results are there (a failure is for the restart strategy and
            // the automatic rollback to handle).
            if let Some((_, rt)) = self.query_entry(&name) {
                if let Err(e) = rt.flush_until_failure().await {
                    tracing::warn!(query = %name, error = %e.message, "new version failed while catching up");
                }
            }
        }
        if let Some(reason) = automatic {
            // The new version did not start: the old one runs again.
            return Err(SqlError::new(
                SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
                format!(
                    "the new version of {} \"{name}\" did not start and was rolled back: {reason}",
                    kind.noun()
                ),
            ));
        }
        Ok(Output::Command {
            tag: alter_tag(kind),
            rows: None,
        })
    }

    /// Returns `Some(reason)` when the new version failed to start and the
    /// old one was started again (an automatic rollback).
    #[allow(clippy::too_many_arguments)]
    async fn upgrade_locked(
        &self,
        meta: QueryMeta,
        runtime: Arc<StreamingQuery>,
        next: QueryMeta,
        graph: &weir_executor::graph::StreamGraph,
        without_state: bool,
        remap: Option<savepoint::Remap>,
        schema_changed: bool,
    ) -> SqlResult<Option<String>> {
        let name = meta.name.clone();
        let sp = match self
            .take_savepoint(&meta, &runtime, None, sps::BEFORE_UPGRADE)
            .await
        {
            Ok(sp) => Some(sp.name),
            Err(e) if without_state => {
                tracing::warn!(query = %name, error = %e, "no savepoint before the upgrade: it cannot be rolled back");
                None
            }
            Err(e) => return Err(e),
        };
        let old_version = self.version_meta(&meta)?;
        let old = self.unregister_query(&name);
        runtime.stop().await;
        let mut with = Commit::default();
        with.catalog_puts.push((query_key(&name), json(&next)));
        with.catalog_puts.push((
            versions::key(&name, meta.version),
            json(&VersionMeta {
                status: versions::SUPERSEDED.into(),
                replaced_at: sp.clone(),
                ..old_version
            }),
        ));
        with.catalog_puts.push((
            versions::key(&name, next.version),
            json(&VersionMeta::active(
                &next,
                if without_state { None } else { sp.clone() },
                graph,
            )),
        ));
        with.catalog_deletes.push(failed_key(&name));
        with.catalog_deletes.push(stopped_key(&name));
        let storage = CheckpointStorage::new(self.store.clone(), &self.data_dir, meta.id);
        let started = if without_state {
            if schema_changed {
                with.log_drops.push(meta.id);
            }
            let old_result =
                (!schema_changed && has_result(runtime.graph())).then(|| runtime.result().clone());
            off_runtime(|| savepoint::wipe(&storage, old_result.as_ref(), with))?;
            self.start_query(next.clone()).await
        } else if let Some(remap) = remap {
            // The before-upgrade savepoint, mapped onto the new plan.
            let sp_name = sp
                .clone()
                .ok_or_else(|| SqlError::internal("no savepoint to keep the state from"))?;
            let dir = self.savepoint_dir(&sp_name)?;
            if schema_changed {
                restart_result_log(&storage, meta.id)?;
            }
            let (planned, result) = self.plan_durable(&next).await?;
            let mut point = match (&result, schema_changed) {
                (Some(t), false) => RestorePoint::from_savepoint(&dir, Some(&t.schema()))?,
                _ => RestorePoint {
                    record: savepoint::read_manifest(&dir)?.record,
                    files: Some(dir.clone()),
                    result: None,
                    remap: None,
                },
            };
            point.remap = Some(remap);
            off_runtime(|| savepoint::import(&storage, point, result.as_ref(), with))?;
            self.run_query(next.clone(), planned)
        } else {
            self.store.commit(with)?;
            self.start_query(next.clone()).await
        };
        drop(old);
        match started {
            Ok(()) => {
                if let Some(sp) = sp {
                    self.watch_upgrade(next, sp);
                }
                Ok(None)
            }
            Err(e) => {
                let Some(sp) = sp else { return Err(e) };
                tracing::warn!(query = %name, error = %e, "new version did not start: rolling back");
                self.rollback_locked(
                    &next,
                    None,
                    meta.version,
                    &sp,
                    true,
                    Some(e.message.clone()),
                )
                .await?;
                Ok(Some(e.message))
            }
        }
    }

    /// The number of a new version of the query: above every version it
    /// had (after a rollback the running version is not the newest).
    pub(super) fn next_version(&self, meta: &QueryMeta) -> SqlResult<u64> {
        let all: Vec<VersionMeta> = list(&self.store, &versions::prefix(&meta.name))?;
        Ok(all
            .iter()
            .map(|v| v.version)
            .chain([meta.version])
            .max()
            .unwrap_or(0)
            + 1)
    }

    /// Plans a query against its durable result table; the table too when
    /// the plan ends in it.
    async fn plan_durable(
        &self,
        meta: &QueryMeta,
    ) -> SqlResult<(
        (weir_executor::graph::StreamGraph, Arc<Table>, Vec<String>),
        Option<Arc<Table>>,
    )> {
        let planned = self
            .plan_query(&meta.name, &meta.sql, &meta.options, Some(meta.id))
            .await?;
        let result = has_result(&planned.0).then(|| planned.1.clone());
        Ok((planned, result))
    }

    /// The version row of the query's current version (made up from the
    /// query's definition for a query created before versions existed).
    pub(super) fn version_meta(&self, meta: &QueryMeta) -> SqlResult<VersionMeta> {
        Ok(self
            .store
            .get_catalog(&versions::key(&meta.name, meta.version))?
            .and_then(|v| serde_json::from_slice(&v).ok())
            .unwrap_or_else(|| VersionMeta {
                query: meta.name.clone(),
                version: meta.version,
                definition: meta.sql.clone(),
                options: meta.options.clone(),
                created_at_ms: meta.created_at_ms,
                status: versions::ACTIVE.into(),
                started_from: None,
                replaced_at: None,
                plan: None,
                fingerprints: Vec::new(),
            }))
    }

    /// `ALTER ... name ROLLBACK [TO VERSION n]`: back to the previous (or
    /// the named) version, from the savepoint taken when it was replaced.
    pub(super) async fn rollback_query(
        &self,
        kind: QueryKind,
        name: String,
        version: Option<u64>,
    ) -> SqlResult<Output> {
        let _ddl = self.ddl.lock().await;
        let (meta, runtime) = self.lifecycle_entry(kind, &name)?;
        let all: Vec<VersionMeta> = list(&self.store, &versions::prefix(&name))?;
        let target = match version {
            Some(v) => all.iter().find(|x| x.version == v),
            None => all
                .iter()
                .filter(|x| x.version < meta.version && x.replaced_at.is_some())
                .max_by_key(|x| x.version),
        };
        let Some(target) = target.cloned() else {
            return Err(SqlError::new(
                SqlState::UNDEFINED_OBJECT,
                match version {
                    Some(v) => format!("{} \"{name}\" has no version {v}", kind.noun()),
                    None => format!(
                        "{} \"{name}\" has no earlier version to roll back to",
                        kind.noun()
                    ),
                },
            )
            .with_hint(format!(
                "See SELECT * FROM system.query_versions WHERE query = '{name}'."
            )));
        };
        if target.version == meta.version {
            return Err(not_in_state(format!(
                "version {} of {} \"{name}\" is the one running",
                target.version,
                kind.noun()
            )));
        }
        let Some(sp) = target.replaced_at.clone() else {
            return Err(not_in_state(format!(
                "version {} of {} \"{name}\" has no savepoint to resume from",
                target.version,
                kind.noun()
            )));
        };
        let op = self.begin_op(
            &name,
            ops::ROLLBACK,
            format!("version {} -> {}", meta.version, target.version),
        )?;
        let r = self
            .rollback_locked(&meta, Some(runtime), target.version, &sp, false, None)
            .await;
        op.finish(&r, None);
        r?;
        Ok(Output::Command {
            tag: alter_tag(kind),
            rows: None,
        })
    }

    /// Stops the running version (`current`, when registered) and starts
    /// version `target` from savepoint `sp`. `automatic`: the server
    /// decided it (`reason` says why); recorded in the exception history.
    async fn rollback_locked(
        &self,
        current: &QueryMeta,
        runtime: Option<Arc<StreamingQuery>>,
        target: u64,
        sp: &str,
        automatic: bool,
        reason: Option<String>,
    ) -> SqlResult<()> {
        let name = current.name.clone();
        let all: Vec<VersionMeta> = list(&self.store, &versions::prefix(&name))?;
        let target_meta = all
            .iter()
            .find(|v| v.version == target)
            .cloned()
            .ok_or_else(|| {
                SqlError::internal(format!("version {target} of \"{name}\" vanished"))
            })?;
        let next = QueryMeta {
            sql: target_meta.definition.clone(),
            options: target_meta.options.clone(),
            version: target,
            ..current.clone()
        };
        // Plan it and check the savepoint before anything stops.
        let (graph, probe, depends_on) = self
            .plan_query(&name, &next.sql, &next.options, None)
            .await?;
        let next = QueryMeta { depends_on, ..next };
        let dir = self.savepoint_dir(sp)?;
        let record = savepoint::read_manifest(&dir)?.record;
        check_plan(&record, &graph, &format!("savepoint \"{sp}\""))?;
        let mut exceptions = Vec::new();
        if let Some(rt) = &runtime {
            exceptions = rt.exceptions();
            self.unregister_query(&name);
            rt.stop().await;
        }
        let current_version = self.version_meta(current)?;
        let mut with = Commit::default();
        with.catalog_puts.push((query_key(&name), json(&next)));
        with.catalog_puts.push((
            versions::key(&name, current.version),
            json(&VersionMeta {
                status: versions::ROLLED_BACK.into(),
                ..current_version
            }),
        ));
        with.catalog_puts.push((
            versions::key(&name, target),
            json(&VersionMeta {
                status: versions::ACTIVE.into(),
                started_from: Some(sp.to_string()),
                ..target_meta
            }),
        ));
        with.catalog_deletes.push(failed_key(&name));
        with.catalog_deletes.push(stopped_key(&name));
        let storage = CheckpointStorage::new(self.store.clone(), &self.data_dir, current.id);
        // The result table's columns may differ between the versions: then
        // its log starts again (nothing reads it: upgrades that change
        // columns are refused while other queries read them).
        let probe_schema = probe.schema();
        let current_schema = self
            .relations
            .read()
            .get(&name)
            .map(|t| t.schema())
            .unwrap_or_else(|| probe_schema.clone());
        if !same_columns(&current_schema, &probe_schema) {
            restart_result_log(&storage, current.id)?;
        }
        let (planned, result) = self.plan_durable(&next).await?;
        let point =
            RestorePoint::from_savepoint(&dir, result.as_ref().map(|t| t.schema()).as_ref())?;
        off_runtime(|| savepoint::import(&storage, point, result.as_ref(), with))?;
        self.run_query(next.clone(), planned)?;
        let (_, rt) = self
            .query_entry(&name)
            .ok_or_else(|| SqlError::internal(format!("query \"{name}\" vanished")))?;
        let action = if automatic {
            "rolled back"
        } else {
            "manual rollback"
        };
        rt.record_lifecycle_event(
            exceptions,
            action,
            format!(
                "version {} rolled back to version {target} from savepoint '{sp}'{}",
                current.version,
                reason.map(|r| format!(": {r}")).unwrap_or_default()
            ),
        );
        Ok(())
    }

    /// After an upgrade: when the new version fails for good, or restarts
    /// `auto_rollback.restarts` times, within `auto_rollback.window`, the
    /// server rolls it back by itself (`auto_rollback = 'off'` disables it).
    fn watch_upgrade(&self, meta: QueryMeta, sp: String) {
        let config = match crate::lifecycle::versions::AutoRollback::from_options(&meta.options) {
            Ok(c) if c.enabled => c,
            _ => return,
        };
        let engine = self.me.clone();
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + config.window;
            loop {
                tokio::time::sleep(Duration::from_millis(200)).await;
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                let Some((now, rt)) = engine.query_entry(&meta.name) else {
                    return;
                };
                if now.version != meta.version {
                    return;
                }
                let stats = rt.stats();
                let reason = match rt.state() {
                    QueryState::Failed => Some(format!("it failed: {}", rt.failure_message())),
                    _ if stats.num_restarts >= config.restarts => Some(format!(
                        "it restarted {} times within {:?} of the upgrade",
                        stats.num_restarts, config.window
                    )),
                    _ => None,
                };
                if let Some(reason) = reason {
                    let _ddl = engine.ddl.lock().await;
                    // Checked again under the lock: a user may have acted.
                    match engine.query_entry(&meta.name) {
                        Some((m, _)) if m.version == meta.version => {}
                        _ => return,
                    }
                    let target = meta.version - 1;
                    tracing::warn!(query = %meta.name, %reason, "automatic rollback");
                    let op = match engine.begin_op(
                        &meta.name,
                        ops::AUTOMATIC_ROLLBACK,
                        format!("version {} -> {target}: {reason}", meta.version),
                    ) {
                        Ok(op) => op,
                        Err(e) => {
                            tracing::error!(error = %e, "automatic rollback not recorded");
                            return;
                        }
                    };
                    let r = engine
                        .rollback_locked(&meta, Some(rt), target, &sp, true, Some(reason))
                        .await;
                    if let Err(e) = &r {
                        tracing::error!(query = %meta.name, error = %e, "automatic rollback failed");
                    }
                    op.finish(&r, None);
                    return;
                }
                if tokio::time::Instant::now() >= deadline {
                    return;
                }
            }
        });
    }
}

/// New result columns: every checkpoint of the query is forgotten and its
/// result log starts again (nothing else reads it: such a change is refused
/// while other queries read the result).
fn restart_result_log(storage: &CheckpointStorage, id: u64) -> SqlResult<()> {
    off_runtime(|| {
        savepoint::wipe(
            storage,
            None,
            Commit {
                log_drops: vec![id],
                ..Default::default()
            },
        )
    })?;
    Ok(())
}

/// Refuses a checkpoint or savepoint of another plan than `graph`'s.
fn check_plan(
    record: &weir_executor::checkpoint::CheckpointRecord,
    graph: &weir_executor::graph::StreamGraph,
    what: &str,
) -> SqlResult<()> {
    match weir_executor::runtime::plan_difference(record, graph) {
        None => Ok(()),
        Some(why) => Err(SqlError::unsupported(format!(
            "{what} was taken from another plan: {why}"
        ))
        .with_hint("Start it WITHOUT STATE, or from a savepoint of the same definition.")),
    }
}
