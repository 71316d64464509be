//! The supervisor of one streaming query: runs it, and when a subtask
//! fails, records the failure (enriched with labels) in the query's
//! exception history, asks the restart strategy what to do, and after the
//! strategy's delay restarts from the last completed checkpoint either the
//! failed region alone (`failover_strategy = 'region'`, when the query has
//! more than one region; the others keep running) or the whole query — or
//! leaves it FAILED, its results still readable and its exceptions kept.
//! Each run of the whole query is a [`QueryRuntime`]; a full restart starts
//! a new one, a region restart happens inside the current one.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::{
    plan_restore, BadRecordEvent, BadRecords, QueryRuntime, QueryStatus, StartOptions, TaskFailure,
    TaskState,
};
use crate::checkpoint::CheckpointStatus;
use crate::checkpoint::{CheckpointConfig, CheckpointStats, CheckpointStorage};
use crate::chunk::Chunk;
use crate::error::ExecResult;
use crate::failure::{
    regions::regions, Enrichers, ExceptionRow, FailoverStrategy, FailureConfig, FailureContext,
    RestartDecision, RestartTracker,
};
use crate::graph::StreamGraph;
use crate::metrics::{task_points, Kind, MetricPoint, Scope, SubtaskEntry};
use crate::table::Table;

/// The status of a streaming query, with Flink's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryState {
    Created,
    Running,
    /// A run failed; its subtasks are being stopped.
    Failing,
    /// Waiting for the restart delay, or restoring.
    Restarting,
    /// Restarts exhausted (or not allowed): stopped for good.
    Failed,
    Canceled,
    Finished,
    /// Stopped by the user (`STOP STREAMING QUERY`): nothing runs, its
    /// results stay readable, `START` resumes it.
    Stopped,
}

impl QueryState {
    pub fn as_str(self) -> &'static str {
        match self {
            QueryState::Created => "CREATED",
            QueryState::Running => "RUNNING",
            QueryState::Failing => "FAILING",
            QueryState::Restarting => "RESTARTING",
            QueryState::Failed => "FAILED",
            QueryState::Canceled => "CANCELED",
            QueryState::Finished => "FINISHED",
            QueryState::Stopped => "STOPPED",
        }
    }
}

/// What is kept of a FAILED query, so that it stays FAILED (with its
/// exceptions) across a server restart until `ALTER ... RESTART`.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct FailedState {
    pub reason: String,
    /// Newest first.
    pub exceptions: Vec<ExceptionRow>,
    pub num_restarts: u64,
    pub full_restarts: u64,
}

/// Called when a query becomes FAILED.
pub type OnFailed = Arc<dyn Fn(&FailedState) + Send + Sync>;

/// Everything a query needs besides its graph, shared by all its runs.
pub struct LaunchOptions {
    pub config: Arc<Mutex<CheckpointConfig>>,
    pub failure: Arc<Mutex<FailureConfig>>,
    pub storage: Arc<CheckpointStorage>,
    /// The result table (its stale rows are retracted when the query must
    /// recompute from scratch).
    pub result: Arc<Table>,
    pub enrichers: Arc<Enrichers>,
    /// Persists the FAILED state.
    pub on_failed: Option<OnFailed>,
}

/// One subtask, as `system.tasks` shows it.
#[derive(Debug, Clone)]
pub struct TaskInfo {
    pub node: usize,
    pub operator: String,
    pub subtask: usize,
    pub parallelism: usize,
    pub region: usize,
    pub status: &'static str,
    /// Which run of the query (0 = the first).
    pub attempt: u32,
    /// Counters and rates of the current attempt (see `system.metrics`).
    pub totals: crate::metrics::Totals,
    pub rates: crate::metrics::Rates,
    pub input_watermark: Option<i64>,
}

struct Shared {
    state: QueryState,
    runtime: Option<Arc<QueryRuntime>>,
    /// Per subtask: how often its region was restarted on its own (a
    /// subtask's attempt adds the full restarts).
    attempts: HashMap<(usize, usize), u32>,
    num_restarts: u64,
    full_restarts: u64,
    /// When restarts happened, for restart-loop detection.
    restarts_at: VecDeque<Instant>,
    /// When the current run started (for uptime).
    running_since: Option<Instant>,
    /// Total time spent failing and restarting.
    restarting_time: Duration,
    restarting_since: Option<Instant>,
    last_failure_at: Option<SystemTime>,
    /// Newest first.
    exceptions: VecDeque<ExceptionRow>,
    /// Failures since the start, in all and by (label key, value).
    failures: u64,
    failures_by_label: BTreeMap<(String, String), u64>,
    /// Why the query is FAILED.
    failed_reason: Option<String>,
    last_error: Option<Arc<TaskFailure>>,
}

/// A streaming query under supervision.
pub struct StreamingQuery {
    pub name: Arc<str>,
    graph: Arc<StreamGraph>,
    opts: LaunchOptions,
    regions: Vec<Vec<usize>>,
    history: Arc<Mutex<VecDeque<CheckpointStats>>>,
    counts: Arc<crate::checkpoint::CheckpointCounts>,
    bad_records: Arc<BadRecords>,
    shared: Mutex<Shared>,
    /// Bumped on every state change (flush waits on it across restarts).
    changed: watch::Sender<u64>,
    cancel: watch::Sender<bool>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl StreamingQuery {
    /// Starts the query's first run (errors surface here, e.g. a plan that
    /// cannot be restored) and its supervisor.
    pub fn launch(
        name: &str,
        graph: StreamGraph,
        opts: LaunchOptions,
    ) -> ExecResult<Arc<StreamingQuery>> {
        // Working stores of an earlier process are never resumed from.
        opts.storage.clear_work()?;
        let (q, events_rx) = StreamingQuery::new(name, graph, opts)?;
        let rt = q.start_run()?;
        q.set_running(rt.clone());
        let handle = tokio::spawn(q.clone().supervise(rt));
        *q.supervisor.lock() = Some(handle);
        tokio::spawn(record_bad_records(Arc::downgrade(&q), events_rx));
        tokio::spawn(sample_metrics(Arc::downgrade(&q)));
        Ok(q)
    }

    /// A query that was FAILED before the server restarted: it stays
    /// FAILED, nothing runs, its results and exceptions are readable.
    pub fn failed(
        name: &str,
        graph: StreamGraph,
        opts: LaunchOptions,
        state: FailedState,
    ) -> ExecResult<Arc<StreamingQuery>> {
        let (q, _) = StreamingQuery::new(name, graph, opts)?;
        {
            let mut s = q.shared.lock();
            s.state = QueryState::Failed;
            s.failed_reason = Some(state.reason);
            s.num_restarts = state.num_restarts;
            s.full_restarts = state.full_restarts;
            if let Some(last) = state.exceptions.first() {
                s.last_failure_at = Some(last.failure.occurred_at);
                s.last_error = Some(Arc::new(TaskFailure {
                    error: crate::error::ExecError::Recorded {
                        sqlstate: crate::SqlState::from_code(&last.failure.sqlstate),
                        message: last.failure.message.clone(),
                        domain: crate::ErrorDomain::parse(&last.failure.domain),
                        error_class: last.failure.error_class.clone(),
                    },
                    site: None,
                    at: last.failure.occurred_at,
                }));
            }
            s.exceptions = state.exceptions.into();
        }
        Ok(q)
    }

    /// A query stopped by the user: nothing runs until it is started
    /// again (as a new `StreamingQuery`); its results are readable.
    pub fn stopped(
        name: &str,
        graph: StreamGraph,
        opts: LaunchOptions,
    ) -> ExecResult<Arc<StreamingQuery>> {
        let (q, _) = StreamingQuery::new(name, graph, opts)?;
        q.shared.lock().state = QueryState::Stopped;
        Ok(q)
    }

    /// Where the query keeps its checkpoints.
    pub fn storage(&self) -> &Arc<CheckpointStorage> {
        &self.opts.storage
    }

    /// The query's result table.
    pub fn result(&self) -> &Arc<Table> {
        &self.opts.result
    }

    /// Takes an aligned checkpoint covering all input visible now and runs
    /// `after` with it before any later checkpoint begins (a savepoint).
    /// Only a running query can.
    pub async fn checkpoint_then(&self, after: super::AfterCommit) -> Result<(), FlushError> {
        let (state, rt) = {
            let s = self.shared.lock();
            (s.state, s.runtime.clone())
        };
        match (state, rt) {
            (QueryState::Running, Some(rt)) => {
                rt.flush_then(Some(after))
                    .await
                    .map_err(|message| FlushError {
                        message,
                        sqlstate: rt
                            .failure()
                            .map_or(crate::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE, |f| {
                                f.error.sqlstate()
                            }),
                    })
            }
            (state, _) => Err(FlushError {
                message: format!(
                    "streaming query \"{}\" is {}, not RUNNING",
                    self.name,
                    state.as_str()
                ),
                sqlstate: crate::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE,
            }),
        }
    }

    #[allow(clippy::type_complexity)]
    fn new(
        name: &str,
        graph: StreamGraph,
        opts: LaunchOptions,
    ) -> ExecResult<(
        Arc<StreamingQuery>,
        tokio::sync::mpsc::UnboundedReceiver<BadRecordEvent>,
    )> {
        let regions = regions(&graph);
        let history = Arc::new(Mutex::new(VecDeque::new()));
        for r in opts.storage.records()? {
            history
                .lock()
                .push_back(CheckpointStats::from_record(name, &r));
        }
        let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let bad_records = BadRecords::new(opts.failure.clone(), Some(events_tx));
        let q = Arc::new(StreamingQuery {
            name: Arc::from(name),
            graph: Arc::new(graph),
            opts,
            regions,
            history,
            counts: Default::default(),
            bad_records,
            shared: Mutex::new(Shared {
                state: QueryState::Created,
                runtime: None,
                attempts: HashMap::new(),
                num_restarts: 0,
                full_restarts: 0,
                restarts_at: VecDeque::new(),
                running_since: None,
                restarting_time: Duration::ZERO,
                restarting_since: None,
                last_failure_at: None,
                exceptions: VecDeque::new(),
                failures: 0,
                failures_by_label: BTreeMap::new(),
                failed_reason: None,
                last_error: None,
            }),
            changed: watch::channel(0).0,
            cancel: watch::channel(false).0,
            supervisor: Mutex::new(None),
        });
        Ok((q, events_rx))
    }

    /// Plans the restore from the last usable checkpoint and starts a run.
    fn start_run(&self) -> ExecResult<Arc<QueryRuntime>> {
        let storage = self.opts.storage.clone();
        let plan = plan_restore(&storage, &self.graph)?;
        for (epoch, reason) in &plan.skipped {
            tracing::error!(query = %self.name, checkpoint = epoch, %reason, "checkpoint not usable");
        }
        let upgraded = plan
            .restore
            .as_ref()
            .is_some_and(|r| r.record.retract_results);
        let first_commit = if (plan.recompute || upgraded) && self.opts.result.row_count() > 0 {
            if upgraded {
                tracing::info!(query = %self.name, "new version: its results replace the previous version's at its first checkpoint");
            } else {
                tracing::warn!(query = %self.name, "no usable checkpoint: recomputing the results from the tables");
            }
            Some(Chunk::deletes(self.opts.result.snapshot()?))
        } else {
            None
        };
        if let Some(r) = &plan.restore {
            tracing::info!(query = %self.name, checkpoint = r.record.epoch, catch_up = ?r.catch_up.as_ref().map(|c| c.epoch), "resuming from checkpoint");
        }
        self.bad_records.reset();
        QueryRuntime::start(
            &self.name,
            self.graph.clone(),
            StartOptions {
                config: self.opts.config.clone(),
                storage,
                restore: plan.restore,
                next_epoch: plan.next_epoch,
                first_commit,
                skipped: plan.skipped,
                history: Some(self.history.clone()),
                bad_records: Some(self.bad_records.clone()),
                counts: self.counts.clone(),
            },
        )
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    fn set_state(&self, state: QueryState) {
        {
            let mut s = self.shared.lock();
            let now = Instant::now();
            let was_restarting = matches!(s.state, QueryState::Failing | QueryState::Restarting);
            let is_restarting = matches!(state, QueryState::Failing | QueryState::Restarting);
            if is_restarting && !was_restarting {
                s.restarting_since = Some(now);
            }
            if was_restarting && !is_restarting {
                if let Some(t) = s.restarting_since.take() {
                    s.restarting_time += now - t;
                }
            }
            s.state = state;
        }
        self.bump();
    }

    fn set_running(&self, rt: Arc<QueryRuntime>) {
        {
            let mut s = self.shared.lock();
            s.runtime = Some(rt);
            s.running_since = Some(Instant::now());
        }
        self.set_state(QueryState::Running);
    }

    async fn supervise(self: Arc<Self>, mut rt: Arc<QueryRuntime>) {
        let mut cancel = self.cancel.subscribe();
        let mut tracker = RestartTracker::new();
        tracker.running(Instant::now());
        loop {
            let failure = tokio::select! {
                f = rt.next_failure() => f,
                _ = cancel.wait_for(|c| *c) => None,
            };
            let Some(failure) = failure.filter(|_| !*cancel.borrow()) else {
                rt.cancel();
                rt.stopped().await;
                self.set_state(QueryState::Canceled);
                return;
            };
            let config = self.opts.failure.lock().clone();
            // The failed subtask's region, when only it restarts.
            let region = failure
                .site
                .as_ref()
                .map(|s| rt.region_of(s.node, s.subtask))
                .filter(|(_, count)| *count > 1 && config.failover == FailoverStrategy::Region)
                .map(|(r, _)| r);
            let Some(delay) = self.handle_failure(&failure, &mut tracker, region).await else {
                rt.stop_failed(&failure);
                rt.stopped().await;
                return;
            };
            if let Some(region) = region {
                // The other regions keep running meanwhile.
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = cancel.wait_for(|c| *c) => continue,
                }
                match rt.restart_region(region).await {
                    Ok(()) => {
                        let members = rt.region_members(region);
                        let mut s = self.shared.lock();
                        s.num_restarts += 1;
                        s.restarts_at.push_back(Instant::now());
                        for m in members {
                            *s.attempts.entry(m).or_insert(0) += 1;
                        }
                        drop(s);
                        tracker.running(Instant::now());
                        tracing::info!(query = %self.name, region, "failover region restarted");
                        self.bump();
                        continue;
                    }
                    Err(e) => {
                        tracing::warn!(query = %self.name, region, error = %e, "region restart failed; restarting the whole query");
                        let escalated = Arc::new(TaskFailure {
                            error: e,
                            site: None,
                            at: SystemTime::now(),
                        });
                        match self
                            .full_restart(&rt, escalated, &mut tracker, &mut cancel)
                            .await
                        {
                            Some(new_rt) => rt = new_rt,
                            None => return,
                        }
                        continue;
                    }
                }
            }
            self.set_state(QueryState::Failing);
            rt.stop_failed(&failure);
            rt.stopped().await;
            match self.restart_after(delay, &mut tracker, &mut cancel).await {
                Some(new_rt) => rt = new_rt,
                None => return,
            }
        }
    }

    /// Stops the run after `failure` (which is recorded and judged) and
    /// starts a new one.
    async fn full_restart(
        &self,
        rt: &Arc<QueryRuntime>,
        failure: Arc<TaskFailure>,
        tracker: &mut RestartTracker,
        cancel: &mut watch::Receiver<bool>,
    ) -> Option<Arc<QueryRuntime>> {
        self.set_state(QueryState::Failing);
        rt.stop_failed(&failure);
        rt.stopped().await;
        let delay = self.handle_failure(&failure, tracker, None).await?;
        self.restart_after(delay, tracker, cancel).await
    }

    /// Waits `delay`, then starts a new run from the last checkpoint; a
    /// run that cannot start is a failure of its own. `None` when the
    /// query ends (FAILED or canceled).
    async fn restart_after(
        &self,
        mut delay: Duration,
        tracker: &mut RestartTracker,
        cancel: &mut watch::Receiver<bool>,
    ) -> Option<Arc<QueryRuntime>> {
        loop {
            self.set_state(QueryState::Restarting);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = cancel.wait_for(|c| *c) => {
                    self.set_state(QueryState::Canceled);
                    return None;
                }
            }
            let started = tokio::task::block_in_place(|| self.start_run());
            match started {
                Ok(new_rt) => {
                    if *cancel.borrow() {
                        new_rt.cancel();
                        new_rt.stopped().await;
                        self.set_state(QueryState::Canceled);
                        return None;
                    }
                    {
                        let mut s = self.shared.lock();
                        s.num_restarts += 1;
                        s.full_restarts += 1;
                        s.restarts_at.push_back(Instant::now());
                    }
                    self.set_running(new_rt.clone());
                    tracker.running(Instant::now());
                    tracing::info!(query = %self.name, "streaming query restarted");
                    return Some(new_rt);
                }
                Err(e) => {
                    let failure = Arc::new(TaskFailure {
                        error: e,
                        site: None,
                        at: SystemTime::now(),
                    });
                    delay = self.handle_failure(&failure, tracker, None).await?;
                }
            }
        }
    }

    /// Records a failure and decides: `Some(delay)` to restart (the
    /// region, when given, else everything), `None` when the query is now
    /// FAILED.
    async fn handle_failure(
        &self,
        failure: &Arc<TaskFailure>,
        tracker: &mut RestartTracker,
        region: Option<usize>,
    ) -> Option<Duration> {
        let region_of_site = failure
            .site
            .as_ref()
            .and_then(|s| self.regions.get(s.node)?.get(s.subtask).copied());
        let ctx = FailureContext::new(
            &self.name,
            &failure.error,
            failure.site.as_ref().map(|s| s.operator.to_string()),
            failure.site.as_ref().map(|s| s.subtask),
            region_of_site,
            failure.at,
        );
        let labels = self.opts.enrichers.enrich(&ctx).await;
        let config = self.opts.failure.lock().clone();
        let decision = match labels.get("restart").map(|v| v.to_ascii_lowercase()) {
            Some(v) if v == "never" => {
                RestartDecision::Fail("a failure enricher set the label restart = 'never'".into())
            }
            _ => tracker.on_failure(&config.restart, Instant::now()),
        };
        let (action, delay, attempt) = match &decision {
            RestartDecision::Restart(d) => {
                let action = match region {
                    Some(_) => "region restart",
                    None => "full restart",
                };
                let attempt = self.shared.lock().num_restarts as u32 + 1;
                (action, Some(*d), attempt)
            }
            RestartDecision::Fail(_) => {
                ("query failed", None, self.shared.lock().num_restarts as u32)
            }
        };
        let row = ExceptionRow {
            failure: ctx,
            labels,
            restart_attempt: attempt,
            action: action.to_string(),
            restart_delay_ms: delay.map(|d| d.as_millis() as u64),
        };
        {
            let mut s = self.shared.lock();
            s.failures += 1;
            for (k, v) in &row.labels {
                // Free text would make a metric per failure.
                if k != "enrichment.errors" {
                    *s.failures_by_label
                        .entry((k.clone(), v.clone()))
                        .or_insert(0) += 1;
                }
            }
            s.last_failure_at = Some(failure.at);
            s.last_error = Some(failure.clone());
            s.exceptions.push_front(row);
            s.exceptions.truncate(config.exception_history_size);
        }
        self.bump();
        match decision {
            RestartDecision::Restart(d) => {
                tracing::warn!(query = %self.name, error = %failure.error, delay = ?d, action, "restarting");
                Some(d)
            }
            RestartDecision::Fail(reason) => {
                tracing::error!(query = %self.name, error = %failure.error, %reason, "streaming query failed");
                // The last run stays, for its subtasks' final states.
                let kept = {
                    let mut s = self.shared.lock();
                    s.failed_reason = Some(reason.clone());
                    FailedState {
                        reason,
                        exceptions: s.exceptions.iter().cloned().collect(),
                        num_restarts: s.num_restarts,
                        full_restarts: s.full_restarts,
                    }
                };
                if let Some(persist) = &self.opts.on_failed {
                    persist(&kept);
                }
                self.set_state(QueryState::Failed);
                None
            }
        }
    }

    /// The graph every run of this query executes.
    pub fn graph(&self) -> &StreamGraph {
        &self.graph
    }

    pub fn state(&self) -> QueryState {
        self.shared.lock().state
    }

    /// The message of the failure that stopped the query (or its last run).
    pub fn failure_message(&self) -> String {
        let s = self.shared.lock();
        match (&s.last_error, s.state) {
            (_, QueryState::Canceled) => format!("streaming query \"{}\" was canceled", self.name),
            (Some(f), QueryState::Failed) => format!(
                "streaming query \"{}\" failed: {}",
                self.name,
                f.error.message()
            ),
            (Some(f), _) => format!(
                "streaming query \"{}\" failed: {} (restarting)",
                self.name,
                f.error.message()
            ),
            (None, _) => format!("streaming query \"{}\" is not running", self.name),
        }
    }

    /// SQLSTATE of the last failure.
    pub fn failure_sqlstate(&self) -> crate::SqlState {
        self.shared
            .lock()
            .last_error
            .as_ref()
            .map_or(crate::SqlState::INTERNAL_ERROR, |f| f.error.sqlstate())
    }

    /// Asks for a checkpoint and waits until one that started after this
    /// call completed. Across a restart it waits for the next run, unless
    /// the failure was not retryable (bad data fails again): then, and
    /// when the query is FAILED, it returns the failure.
    pub async fn flush(&self) -> Result<(), FlushError> {
        self.flush_waiting(true).await
    }

    /// Like [`StreamingQuery::flush`], but any failure ends the wait, also
    /// one a restart may cure (a new query's first catch-up).
    pub async fn flush_until_failure(&self) -> Result<(), FlushError> {
        self.flush_waiting(false).await
    }

    async fn flush_waiting(&self, across_restarts: bool) -> Result<(), FlushError> {
        let failed = |message: String| FlushError {
            message,
            sqlstate: self.failure_sqlstate(),
        };
        let mut changed = self.changed.subscribe();
        loop {
            let (state, rt) = {
                let s = self.shared.lock();
                (s.state, s.runtime.clone())
            };
            match (state, rt) {
                (QueryState::Running | QueryState::Created, Some(rt)) => match rt.flush().await {
                    Ok(()) => return Ok(()),
                    Err(msg) => {
                        let failure = rt.failure();
                        let retryable = failure.as_ref().is_none_or(|f| f.error.retryable());
                        if (!retryable || !across_restarts) && rt.status() != QueryStatus::Canceled
                        {
                            // This run's own failure: the supervisor may not
                            // have recorded it yet.
                            return Err(FlushError {
                                message: msg,
                                sqlstate: failure.map_or(crate::SqlState::INTERNAL_ERROR, |f| {
                                    f.error.sqlstate()
                                }),
                            });
                        }
                    }
                },
                // Stopped by the user: nothing of it is pending.
                (QueryState::Stopped, _) => return Ok(()),
                (QueryState::Failed | QueryState::Canceled | QueryState::Finished, _) => {
                    return Err(failed(self.failure_message()))
                }
                _ => {
                    // Restarting after bad data: the next run fails again.
                    let hopeless = self
                        .shared
                        .lock()
                        .last_error
                        .as_ref()
                        .is_some_and(|f| !f.error.retryable());
                    if hopeless || !across_restarts {
                        return Err(failed(self.failure_message()));
                    }
                }
            }
            // Wait for the next state change (a restart).
            if changed.changed().await.is_err() {
                return Err(failed(self.failure_message()));
            }
        }
    }

    /// Asks the query to stop for good without waiting (server shutdown).
    pub fn cancel(&self) {
        self.cancel.send_replace(true);
        if let Some(rt) = self.shared.lock().runtime.clone() {
            rt.cancel();
        }
    }

    /// Stops the query for good; resolves once every task and the
    /// checkpointer stopped.
    pub async fn stop(&self) {
        self.cancel.send_replace(true);
        let handle = self.supervisor.lock().take();
        if let Some(h) = handle {
            let _ = h.await;
        }
        let rt = self.shared.lock().runtime.clone();
        if let Some(rt) = rt {
            rt.cancel();
            rt.stopped().await;
        }
    }

    /// The checkpoint history (kept across restarts).
    pub fn checkpoint_history(&self) -> Vec<CheckpointStats> {
        self.history.lock().iter().cloned().collect()
    }

    /// New checkpoint settings, from the next checkpoint on.
    pub fn set_checkpoint_config(&self, config: CheckpointConfig) {
        let rt = self.shared.lock().runtime.clone();
        match rt {
            Some(rt) => rt.set_checkpoint_config(config),
            None => *self.opts.config.lock() = config,
        }
    }

    /// New failure settings, from the next failure on.
    pub fn set_failure_config(&self, config: FailureConfig) {
        *self.opts.failure.lock() = config;
    }

    /// Bad records kept by `on_error = 'dead_letter'`, oldest first.
    pub fn dead_letters(&self) -> ExecResult<Vec<super::DeadLetter>> {
        self.opts.storage.dead_letters()
    }

    /// Carries the exception history of the run this one replaced (a
    /// rolled-back version), newest first, and adds on top a row for the
    /// lifecycle event itself (`action`: `rolled back`, ...).
    pub fn record_lifecycle_event(
        &self,
        earlier: Vec<ExceptionRow>,
        action: &str,
        message: String,
    ) {
        let ctx = FailureContext {
            query: self.name.to_string(),
            occurred_at: SystemTime::now(),
            operator: None,
            subtask: None,
            region: None,
            error_class: "lifecycle".into(),
            root_cause: message.clone(),
            message,
            domain: crate::ErrorDomain::User.as_str().to_string(),
            sqlstate: crate::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE
                .code()
                .to_string(),
            retryable: false,
        };
        let keep = self.opts.failure.lock().exception_history_size;
        let mut s = self.shared.lock();
        for row in earlier.into_iter().rev() {
            s.exceptions.push_back(row);
        }
        s.exceptions.push_front(ExceptionRow {
            failure: ctx,
            labels: Default::default(),
            restart_attempt: 0,
            action: action.to_string(),
            restart_delay_ms: None,
        });
        s.exceptions.truncate(keep);
    }

    /// Newest first.
    pub fn exceptions(&self) -> Vec<ExceptionRow> {
        self.shared.lock().exceptions.iter().cloned().collect()
    }

    /// One row per subtask of the current (or last) run.
    pub fn tasks(&self) -> Vec<TaskInfo> {
        let (rt, attempts, full, state) = {
            let s = self.shared.lock();
            (
                s.runtime.clone(),
                s.attempts.clone(),
                s.full_restarts,
                s.state,
            )
        };
        let states: HashMap<(usize, usize), TaskState> =
            rt.as_ref().map(|r| r.task_states()).unwrap_or_default();
        let metrics: HashMap<(usize, usize), Arc<crate::metrics::SubtaskMetrics>> = rt
            .map(|r| r.subtask_metrics().into_iter().collect())
            .unwrap_or_default();
        let mut out = Vec::new();
        for node in &self.graph.nodes {
            for subtask in 0..node.parallelism {
                let m = metrics.get(&(node.id, subtask));
                let status = match (states.get(&(node.id, subtask)), state) {
                    // Subtasks stopped because another one failed.
                    (Some(TaskState::Running | TaskState::Initializing), QueryState::Failed)
                    | (None, QueryState::Failed | QueryState::Canceled) => "CANCELED",
                    (Some(t), _) => t.as_str(),
                    (None, _) => "CREATED",
                };
                out.push(TaskInfo {
                    node: node.id,
                    operator: node.name.clone(),
                    subtask,
                    parallelism: node.parallelism,
                    region: self.regions[node.id][subtask],
                    status,
                    attempt: full as u32 + attempts.get(&(node.id, subtask)).copied().unwrap_or(0),
                    totals: m.map(|m| m.totals()).unwrap_or_default(),
                    rates: m.map(|m| m.rates()).unwrap_or_default(),
                    input_watermark: m
                        .map(|m| m.input_watermark.load(std::sync::atomic::Ordering::Relaxed))
                        .filter(|w| *w != i64::MIN),
                });
            }
        }
        out
    }

    /// The query's status figures for `system.streaming_queries`.
    pub fn stats(&self) -> QueryStats {
        let config = self.opts.failure.lock().clone();
        // Committed counts of bad records, from the latest checkpoint.
        let (skipped_records, dead_letter_records) = self
            .opts
            .storage
            .records()
            .ok()
            .and_then(|r| r.last().map(|r| (r.skipped_records, r.dead_letter_records)))
            .unwrap_or((0, 0));
        let s = self.shared.lock();
        let now = Instant::now();
        let recent = s
            .restarts_at
            .iter()
            .filter(|t| now.saturating_duration_since(**t) <= config.restart_loop_window)
            .count() as u32;
        let health = match s.state {
            QueryState::Failed => "failed",
            _ if recent >= config.restart_loop_threshold => "restart_loop",
            QueryState::Failing | QueryState::Restarting => "restarting",
            _ => "healthy",
        };
        let uptime_ms = match s.state {
            QueryState::Running => s
                .running_since
                .map_or(0, |t| now.saturating_duration_since(t).as_millis() as u64),
            _ => 0,
        };
        let restarting_ms = (s.restarting_time
            + s.restarting_since
                .map_or(Duration::ZERO, |t| now.saturating_duration_since(t)))
        .as_millis() as u64;
        QueryStats {
            status: s.state.as_str(),
            health,
            restart_strategy: config.restart.describe(),
            failover_strategy: config.failover.name(),
            on_error: config.on_error.name(),
            num_restarts: s.num_restarts,
            full_restarts: s.full_restarts,
            restarts_in_window: recent,
            uptime_ms,
            restarting_ms,
            last_failure_at: s.last_failure_at,
            last_failure: s.last_error.as_ref().map(|f| f.error.message()),
            last_failure_sqlstate: s.last_error.as_ref().map(|f| f.error.sqlstate()),
            last_failure_domain: s.last_error.as_ref().map(|f| f.error.domain()),
            failed_reason: s.failed_reason.clone(),
            attempt: s.full_restarts as u32,
            skipped_records,
            dead_letter_records,
        }
    }

    /// Every metric of the query: its subtasks', its operators' and its own.
    pub fn metrics(&self) -> Vec<MetricPoint> {
        let q = self.name.as_ref();
        let rt = self.shared.lock().runtime.clone();
        let mut out = Vec::new();
        if let Some(rt) = &rt {
            let all = rt.subtask_metrics();
            let entries: Vec<SubtaskEntry<'_>> = all
                .iter()
                .filter_map(|((node, subtask), m)| {
                    let n = self.graph.nodes.get(*node)?;
                    Some(SubtaskEntry {
                        operator: &n.name,
                        operator_id: *node,
                        subtask: *subtask,
                        source: match &n.kind {
                            crate::graph::NodeKind::TableSource(t) => Some(t.as_ref()),
                            _ => None,
                        },
                        metrics: m,
                    })
                })
                .collect();
            out.extend(task_points(q, &entries));
        }
        let stats = self.stats();
        let history = self.history.lock();
        let last = history
            .iter()
            .rev()
            .find(|r| r.status == CheckpointStatus::Completed);
        let in_progress = history
            .iter()
            .filter(|r| r.status == CheckpointStatus::InProgress)
            .count();
        let g = |name, value: f64, help| {
            MetricPoint::new(Scope::Query, name, Kind::Gauge, value, help).query(q)
        };
        let c = |name, value: f64, help| {
            MetricPoint::new(Scope::Query, name, Kind::Counter, value, help).query(q)
        };
        use std::sync::atomic::Ordering::Relaxed;
        out.extend([
            g("uptime", stats.uptime_ms as f64, "Milliseconds the query has been running since its last (re)start; 0 when not running."),
            c("restartingTime", stats.restarting_ms as f64, "Milliseconds spent failing and restarting."),
            c("numRestarts", stats.num_restarts as f64, "Restarts, of a region or of the whole query."),
            c("fullRestarts", stats.full_restarts as f64, "Restarts of the whole query."),
            g("restartsInWindow", stats.restarts_in_window as f64, "Restarts within restart_loop_window (health = restart_loop at restart_loop_threshold)."),
            g("isFailed", if stats.status == "FAILED" { 1.0 } else { 0.0 }, "1 when the query is FAILED (restarts exhausted)."),
            g("lastCheckpointDuration", last.and_then(|r| r.duration_ms).unwrap_or(0) as f64, "Milliseconds the last completed checkpoint took."),
            g("lastCheckpointSize", last.map_or(0, |r| r.state_bytes) as f64, "Bytes of state of the last completed checkpoint."),
            g("lastCheckpointIncrementalSize", last.map_or(0, |r| r.incremental_bytes) as f64, "Bytes the last completed checkpoint added."),
            g("lastCheckpointAlignmentDuration", last.map_or(0, |r| r.alignment_ms) as f64, "Milliseconds the last completed checkpoint spent aligning barriers."),
            g("lastCheckpointPersistedInFlightSize", last.map_or(0, |r| r.persisted_in_flight_bytes) as f64, "In-flight bytes stored by the last completed checkpoint (unaligned)."),
            c("numberOfCompletedCheckpoints", self.counts.completed.load(Relaxed) as f64, "Checkpoints completed since the query started on this server."),
            c("numberOfFailedCheckpoints", self.counts.failed.load(Relaxed) as f64, "Checkpoints failed or expired since the query started on this server."),
            g("numberOfInProgressCheckpoints", in_progress as f64, "Checkpoints in progress."),
            g("stateSize", last.map_or(0, |r| r.state_bytes) as f64, "Bytes of keyed state, as of the last completed checkpoint."),
            c("numSkippedRecords", stats.skipped_records as f64, "Bad records dropped (on_error = 'skip'), as committed."),
            c("numDeadLetterRecords", stats.dead_letter_records as f64, "Bad records sent to system.dead_letters, as committed."),
        ]);
        drop(history);
        let s = self.shared.lock();
        let rollbacks = s
            .exceptions
            .iter()
            .filter(|r| r.action == "rolled back")
            .count();
        out.push(c(
            "numAutomaticRollbacks",
            rollbacks as f64,
            "Automatic rollbacks of a new version to the previous one, as the exception history holds them.",
        ));
        out.push(c(
            "numFailures",
            s.failures as f64,
            "Failures of the query's subtasks or of the query.",
        ));
        for ((k, v), n) in &s.failures_by_label {
            out.push(
                c(
                    "numFailuresByLabel",
                    *n as f64,
                    "Failures carrying a label, by key and value.",
                )
                .label("label", k)
                .label("value", v),
            );
        }
        out
    }
}

/// Samples the subtasks' counters every second, for per-second rates.
async fn sample_metrics(query: std::sync::Weak<StreamingQuery>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(q) = query.upgrade() else { return };
        let rt = q.shared.lock().runtime.clone();
        if let Some(rt) = rt {
            for (_, m) in rt.subtask_metrics() {
                m.sample();
            }
        }
    }
}

/// Puts bad records into the exception history. Only the newest of a
/// burst are enriched: the history keeps no more than that anyway.
async fn record_bad_records(
    query: std::sync::Weak<StreamingQuery>,
    mut events: tokio::sync::mpsc::UnboundedReceiver<BadRecordEvent>,
) {
    let mut batch = Vec::new();
    while events.recv_many(&mut batch, 1024).await > 0 {
        let Some(q) = query.upgrade() else { return };
        let keep = q.opts.failure.lock().exception_history_size;
        let skip = batch.len().saturating_sub(keep);
        for (ctx, action) in batch.drain(..).skip(skip) {
            let labels = q.opts.enrichers.enrich(&ctx).await;
            let attempt = q.shared.lock().full_restarts as u32;
            let row = ExceptionRow {
                failure: ctx,
                labels,
                restart_attempt: attempt,
                action: action.to_string(),
                restart_delay_ms: None,
            };
            let mut s = q.shared.lock();
            s.exceptions.push_front(row);
            s.exceptions.truncate(keep);
        }
    }
}

impl Drop for StreamingQuery {
    fn drop(&mut self) {
        self.cancel.send_replace(true);
    }
}

/// Status figures of one query.
#[derive(Debug, Clone)]
pub struct QueryStats {
    pub status: &'static str,
    /// `healthy`, `restarting`, `restart_loop` or `failed`.
    pub health: &'static str,
    pub restart_strategy: String,
    pub failover_strategy: &'static str,
    pub on_error: &'static str,
    pub num_restarts: u64,
    pub full_restarts: u64,
    pub restarts_in_window: u32,
    pub uptime_ms: u64,
    pub restarting_ms: u64,
    pub last_failure_at: Option<SystemTime>,
    pub last_failure: Option<String>,
    pub last_failure_sqlstate: Option<crate::SqlState>,
    pub last_failure_domain: Option<crate::ErrorDomain>,
    pub failed_reason: Option<String>,
    pub attempt: u32,
    /// Bad records skipped, as of the last completed checkpoint.
    pub skipped_records: u64,
    /// Bad records dead-lettered, as of the last completed checkpoint.
    pub dead_letter_records: u64,
}

/// Why a FLUSH could not complete: the query's failure, with its SQLSTATE.
#[derive(Debug)]
pub struct FlushError {
    pub message: String,
    pub sqlstate: crate::SqlState,
}

impl std::fmt::Display for FlushError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}
