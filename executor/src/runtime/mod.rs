//! The runtime: starts one task per subtask of a [`StreamGraph`], wires the
//! bounded channels, and runs the query's checkpointer. `flush` asks for a
//! checkpoint and resolves once one that started after the call completed,
//! which means all input accepted before the call is processed and its
//! results committed.

mod bad_records;
mod channel;
mod checked_operator;
mod checkpointer;
mod connector_source_task;
mod coordinator;
mod restore;
mod router;
mod sink;
mod source_split;
mod source_task;
mod spawn;
pub mod supervisor;
mod task;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::checkpoint::{
    CheckpointConfig, CheckpointRecord, CheckpointStats, CheckpointStorage, LoadedState,
};
use crate::chunk::Chunk;
use crate::error::{ExecError, ExecResult};
use crate::graph::{NodeKind, StreamGraph};
use crate::operator::EpochCommitter;
pub use bad_records::{BadRecordEvent, BadRecords, DeadLetter};
pub use checkpointer::AfterCommit;
use checkpointer::{Checkpointer, FlushWaiter};
use coordinator::Coordinator;
pub use coordinator::{FailureSite, TaskFailure, TaskState};
pub use restore::{plan_difference, plan_restore, RestorePlan};
pub use sink::SinkStaging;
pub use supervisor::{FailedState, LaunchOptions, OnFailed, QueryState, StreamingQuery, TaskInfo};

/// Messages a channel holds before its sender waits (backpressure).
pub const CHANNEL_CAPACITY_MESSAGES: usize = 16;
/// Rows per chunk when a source emits a snapshot.
pub const SOURCE_CHUNK_ROWS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryStatus {
    Running,
    Failed(String),
    Canceled,
}

/// Where a query resumes.
pub struct Restore {
    /// The checkpoint whose state is loaded.
    pub record: CheckpointRecord,
    pub state: LoadedState,
    /// A newer checkpoint whose results are committed but whose state could
    /// not be read: sources replay up to its offsets and the replayed
    /// output is not committed again.
    pub catch_up: Option<CheckpointRecord>,
}

/// Everything a query needs besides its graph.
pub struct StartOptions {
    pub config: Arc<Mutex<CheckpointConfig>>,
    pub storage: Arc<CheckpointStorage>,
    pub restore: Option<Restore>,
    /// First epoch to use (above every recorded one).
    pub next_epoch: u64,
    /// Changes committed with the first checkpoint before anything else
    /// (the retraction of stale results when recomputing from scratch).
    pub first_commit: Option<Chunk>,
    /// Checkpoints that could not be restored: (id, reason), shown as
    /// failed rows in the checkpoint history.
    pub skipped: Vec<(u64, String)>,
    /// The checkpoint history to append to (kept across restarts); a
    /// new one, filled from the recorded checkpoints, when `None`.
    pub history: Option<Arc<Mutex<VecDeque<CheckpointStats>>>>,
    /// Where bad records go (`on_error`); `None`: they fail the query.
    pub bad_records: Option<Arc<BadRecords>>,
    /// Checkpoint outcomes counted across runs.
    pub counts: Arc<crate::checkpoint::CheckpointCounts>,
}

/// A subtask's input channel and the operator input it feeds.
type InputChannel = (usize, channel::Receiver);

/// Runs a subtask; an error or a panic (a bug) fails the query instead of
/// leaving it wedged.
fn spawn_guarded<F>(coord: Arc<Coordinator>, site: FailureSite, fut: F) -> JoinHandle<()>
where
    F: std::future::Future<Output = ExecResult<()>> + Send + 'static,
{
    use futures::FutureExt;
    let id = (site.node, site.subtask);
    coord.set_task(id, TaskState::Initializing);
    tokio::spawn(async move {
        match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
            Ok(Ok(())) => {
                let canceled = coord.is_canceled(id);
                coord.set_task(
                    id,
                    if canceled {
                        TaskState::Canceled
                    } else {
                        TaskState::Finished
                    },
                );
            }
            Ok(Err(ExecError::Canceled)) if coord.is_canceled(id) => {
                coord.set_task(id, TaskState::Canceled)
            }
            Ok(Err(e)) => coord.fail_at(Some(site), e),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(query = %coord.query, panic = %msg, "subtask panicked");
                coord.fail_at(
                    Some(site),
                    ExecError::internal(format!("subtask panicked: {msg}")),
                );
            }
        }
    })
}

/// A running streaming query.
pub struct QueryRuntime {
    pub name: Arc<str>,
    graph: Arc<StreamGraph>,
    coordinator: Arc<Coordinator>,
    storage: Arc<CheckpointStorage>,
    flush_tx: mpsc::UnboundedSender<FlushWaiter>,
    /// (node, subtask, table) of every source subtask.
    source_tables: Vec<(usize, usize, Arc<crate::table::Table>)>,
    /// Command channels of the source subtasks, shared with the checkpointer.
    sources: SourceCommands,
    staging: HashMap<usize, Arc<SinkStaging>>,
    /// (node, committer) of every sink writing outside Weir.
    committers: Vec<(usize, Arc<dyn EpochCommitter>)>,
    config: Arc<Mutex<CheckpointConfig>>,
    config_changed: Arc<tokio::sync::Notify>,
    history: Arc<Mutex<VecDeque<CheckpointStats>>>,
    handles: Mutex<HashMap<coordinator::SubtaskId, JoinHandle<()>>>,
    /// Tasks told to stop, for [`QueryRuntime::stopped`] to wait for.
    aborted: Mutex<Vec<JoinHandle<()>>>,
    checkpointer: Mutex<Option<JoinHandle<()>>>,
    state_settings: spawn::StateSettings,
}

/// (node, subtask, command channel) of every source subtask.
pub(crate) type SourceCommands =
    Arc<Mutex<Vec<(usize, usize, mpsc::Sender<checkpointer::SourceCommand>)>>>;

/// The node names of a graph, as recorded in its checkpoints.
pub fn node_names(graph: &StreamGraph) -> Vec<String> {
    graph.nodes.iter().map(|n| n.name.clone()).collect()
}

impl QueryRuntime {
    /// Starts every subtask of the graph. Must be called inside a tokio runtime.
    pub fn start(
        name: &str,
        graph: Arc<StreamGraph>,
        mut opts: StartOptions,
    ) -> ExecResult<Arc<QueryRuntime>> {
        let name: Arc<str> = Arc::from(name);
        let regions = crate::failure::regions::regions(&graph);
        let coordinator = Arc::new(Coordinator::new(
            name.clone(),
            regions,
            opts.bad_records.clone(),
        ));
        // Fixed for this run: subtasks get stores (or not) when they start.
        let state_settings = {
            let c = opts.config.lock();
            spawn::StateSettings {
                backend: c.backend,
                cache_keys: c.state_cache_keys,
                storage: opts.storage.clone(),
                source_idle_timeout: c.source_idle_timeout,
            }
        };
        let backend = state_settings.backend;

        let mut staging = HashMap::new();
        for node in &graph.nodes {
            if let NodeKind::ResultSink(table) = &node.kind {
                let s = SinkStaging::new(table.clone(), node.parallelism);
                if let Some(first) = opts.first_commit.take() {
                    s.stage_first(first);
                }
                staging.insert(node.id, s);
            }
        }
        // Sinks writing outside Weir. A run starts with nothing sealed:
        // the previous one stopped, and each subtask's `open` settles what
        // it left.
        let committers: Vec<(usize, Arc<dyn EpochCommitter>)> = graph
            .nodes
            .iter()
            .filter_map(|n| match &n.kind {
                NodeKind::Operator(f) => f.committer().map(|c| (n.id, c)),
                _ => None,
            })
            .collect();
        for (node, c) in &committers {
            for subtask in 0..graph.nodes[*node].parallelism {
                c.discard(subtask);
            }
        }
        let restored_epoch = opts.restore.as_ref().map(|r| r.record.epoch);
        let catch_up = opts.restore.as_mut().and_then(|r| r.catch_up.take());
        let (record, state) = match opts.restore.take() {
            Some(r) => (Some(r.record), Some(r.state)),
            None => (None, None),
        };
        let spawned = spawn::spawn_subtasks(spawn::SpawnPlan {
            name: &name,
            graph: &graph,
            coordinator: &coordinator,
            staging: &staging,
            members: &|_| true,
            restore: record.as_ref().zip(state),
            catch_up: catch_up.as_ref(),
            state: &state_settings,
        })?;
        let sources: SourceCommands = Arc::new(Mutex::new(spawned.sources));
        let source_tables = spawned.source_tables;
        let handles: HashMap<_, _> = spawned.handles.into_iter().collect();

        let config = opts.config.clone();
        let history = match opts.history.take() {
            Some(h) => h,
            None => {
                let h = Arc::new(Mutex::new(VecDeque::new()));
                // Completed checkpoints from before this start, as recorded.
                for r in opts.storage.records()? {
                    h.lock().push_back(CheckpointStats::from_record(&name, &r));
                }
                h
            }
        };
        for (epoch, reason) in &opts.skipped {
            let now = std::time::SystemTime::now();
            history.lock().push_back(CheckpointStats {
                query: name.to_string(),
                checkpoint_id: *epoch,
                kind: "restore",
                mode: opts.config.lock().mode,
                timed_out_to_unaligned: false,
                status: crate::checkpoint::CheckpointStatus::Failed,
                triggered_at: now,
                completed_at: Some(now),
                duration_ms: Some(0),
                state_bytes: 0,
                incremental_bytes: 0,
                persisted_in_flight_bytes: 0,
                alignment_ms: 0,
                failure: Some(format!(
                    "could not restore from checkpoint {epoch}: {reason}"
                )),
            });
        }
        let (flush_tx, flush_rx) = mpsc::unbounded_channel();
        let config_changed = Arc::new(tokio::sync::Notify::new());
        let checkpointer = Checkpointer {
            coord: coordinator.clone(),
            config: config.clone(),
            config_changed: config_changed.clone(),
            storage: opts.storage.clone(),
            sources: sources.clone(),
            staging: staging.values().cloned().collect(),
            committers: committers.iter().map(|(_, c)| c.clone()).collect(),
            history: history.clone(),
            counts: opts.counts.clone(),
            flush_rx,
            node_names: node_names(&graph),
            node_fingerprints: graph.fingerprints(),
            node_tables: graph
                .nodes
                .iter()
                .map(|n| match &n.kind {
                    crate::graph::NodeKind::TableSource(t) if t.is_durable() => Some(t.log_id()),
                    _ => None,
                })
                .collect(),
            node_parallelism: graph.nodes.iter().map(|n| n.parallelism).collect(),
            next_epoch: opts.next_epoch,
            // The previous checkpoint, for the incremental-size figures.
            last_completed: restored_epoch,
            catch_up,
            backend,
        };
        let checkpointer = tokio::spawn(checkpointer.run());
        Ok(Arc::new(QueryRuntime {
            name,
            graph,
            coordinator,
            storage: opts.storage.clone(),
            flush_tx,
            source_tables,
            sources,
            staging,
            committers,
            config,
            config_changed,
            history,
            handles: Mutex::new(handles),
            aborted: Mutex::new(Vec::new()),
            checkpointer: Mutex::new(Some(checkpointer)),
            state_settings,
        }))
    }
}

/// The sink node's operator: the task stages its input for commit itself.
pub(crate) struct NoOp;

impl crate::operator::Operator for NoOp {
    fn on_chunk(
        &mut self,
        _input: usize,
        _chunk: Chunk,
        _out: &mut crate::operator::Output,
    ) -> ExecResult<()> {
        Ok(())
    }
}

impl QueryRuntime {
    pub fn status(&self) -> QueryStatus {
        self.coordinator.status.lock().clone()
    }

    /// The failure that stopped this run, if it failed.
    pub fn failure(&self) -> Option<Arc<TaskFailure>> {
        self.coordinator.failure.lock().clone()
    }

    /// The metrics of every subtask.
    pub fn subtask_metrics(&self) -> Vec<((usize, usize), Arc<crate::metrics::SubtaskMetrics>)> {
        let mut v: Vec<_> = self
            .coordinator
            .metrics
            .lock()
            .iter()
            .map(|(k, m)| (*k, m.clone()))
            .collect();
        v.sort_by_key(|(k, _)| *k);
        v
    }

    /// State of each subtask: ((node, subtask), state).
    pub fn task_states(&self) -> HashMap<(usize, usize), TaskState> {
        self.coordinator.tasks.lock().clone()
    }

    /// Asks for a checkpoint and waits until one that started after this
    /// call has completed (its results are then visible).
    pub async fn flush(&self) -> Result<(), String> {
        self.flush_then(None).await
    }

    /// [`QueryRuntime::flush`], then `after` with the covering checkpoint
    /// before any later checkpoint begins (a savepoint).
    pub async fn flush_then(&self, after: Option<AfterCommit>) -> Result<(), String> {
        if self.status() != QueryStatus::Running {
            return Err(self.coordinator.failure_message());
        }
        let (tx, rx) = oneshot::channel();
        let targets = self
            .source_tables
            .iter()
            .map(|(node, subtask, table)| (*node, *subtask, table.version()))
            .collect();
        let waiter = FlushWaiter {
            targets,
            done: tx,
            after,
        };
        let mut failures = self.coordinator.failure_seq.subscribe();
        if self.flush_tx.send(waiter).is_err() {
            return Err(self.coordinator.failure_message());
        }
        tokio::pin!(rx);
        loop {
            tokio::select! {
                r = &mut rx => return r.unwrap_or_else(|_| Err(self.coordinator.failure_message())),
                changed = failures.changed() => {
                    if changed.is_err() {
                        return Err(self.coordinator.failure_message());
                    }
                    // Bad data fails again after a restart: say so now
                    // rather than wait through the restarts.
                    if let Some(f) = self.failure().filter(|f| !f.error.retryable()) {
                        return Err(format!(
                            "streaming query \"{}\" failed: {}",
                            self.name,
                            f.error.message()
                        ));
                    }
                }
            }
        }
    }

    /// The query's checkpoints, oldest first (in memory since the start).
    pub fn checkpoint_history(&self) -> Vec<CheckpointStats> {
        self.history.lock().iter().cloned().collect()
    }

    pub fn checkpoint_config(&self) -> CheckpointConfig {
        self.config.lock().clone()
    }

    /// Changes the checkpoint settings; they apply from the next checkpoint.
    pub fn set_checkpoint_config(&self, config: CheckpointConfig) {
        *self.config.lock() = config;
        self.config_changed.notify_one();
    }

    /// Stops every task.
    pub fn cancel(&self) {
        {
            let mut status = self.coordinator.status.lock();
            if *status == QueryStatus::Running {
                *status = QueryStatus::Canceled;
            }
        }
        self.coordinator.cancel_all();
        self.abort_tasks();
    }

    /// Stops every subtask after a failure that no region restart handles.
    pub fn stop_failed(&self, failure: &TaskFailure) {
        self.coordinator.stop_failed(failure);
        self.abort_tasks();
    }

    fn abort_tasks(&self) {
        let mut aborted = self.aborted.lock();
        for (_, h) in self.handles.lock().drain() {
            h.abort();
            aborted.push(h);
        }
    }

    /// The next failure of a subtask (or of the query as a whole); `None`
    /// once the run is gone.
    pub async fn next_failure(&self) -> Option<Arc<TaskFailure>> {
        self.coordinator.failures_rx.lock().await.recv().await
    }

    /// The failover region of a subtask, and how many regions there are.
    pub fn region_of(&self, node: usize, subtask: usize) -> (usize, usize) {
        (
            self.coordinator.region_of((node, subtask)),
            self.coordinator.region_count(),
        )
    }

    /// The subtasks of a failover region.
    pub fn region_members(&self, region: usize) -> Vec<(usize, usize)> {
        let mut m: Vec<_> = self.coordinator.members(region).into_iter().collect();
        m.sort();
        m
    }

    /// Restarts one failover region from the latest completed checkpoint
    /// while the other regions keep running. The region's uncommitted
    /// output and bad records are dropped (it produces them again), the
    /// checkpoint in progress is abandoned, and the next one is full. Its
    /// sinks writing outside Weir forget what they sealed (their new
    /// subtasks delete those files and write the rows again).
    pub async fn restart_region(&self, region: usize) -> ExecResult<()> {
        let coord = &self.coordinator;
        let _commit = coord.commit_lock.lock().await;
        coord
            .generation
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        coord.abort_pending();
        let members = coord.members(region);
        // Stop what is left of the region.
        let old: Vec<JoinHandle<()>> = {
            let mut handles = self.handles.lock();
            members.iter().filter_map(|m| handles.remove(m)).collect()
        };
        for h in old {
            h.abort();
            let _ = h.await;
        }
        for (node, staging) in &self.staging {
            for (n, subtask) in &members {
                if n == node {
                    staging.discard(*subtask);
                }
            }
        }
        for (node, committer) in &self.committers {
            for (n, subtask) in &members {
                if n == node {
                    committer.discard(*subtask);
                }
            }
        }
        if let Some(b) = &coord.bad_records {
            for m in &members {
                b.discard(*m);
            }
        }
        let record = self.storage.records()?.last().cloned();
        let state = match &record {
            Some(r) => {
                let storage = self.storage.clone();
                let graph = self.graph.clone();
                let r = r.clone();
                let loaded = tokio::task::spawn_blocking(move || {
                    storage.load(&r, &|node, input| graph.input_schema(node, input))
                })
                .await
                .map_err(|e| ExecError::internal(format!("restore panicked: {e}")))??;
                Some(loaded)
            }
            None => None,
        };
        coord.reset_region(region);
        // Up before its new subtasks start, so that a failure of theirs
        // counts as a new one (the commit lock keeps checkpoints out until
        // the restart is done).
        coord.region_up(region);
        let spawned = spawn::spawn_subtasks(spawn::SpawnPlan {
            name: &self.name,
            graph: &self.graph,
            coordinator: coord,
            staging: &self.staging,
            members: &|id| members.contains(&id),
            restore: record.as_ref().zip(state),
            catch_up: None,
            state: &self.state_settings,
        })?;
        {
            let mut sources = self.sources.lock();
            sources.retain(|(n, s, _)| !members.contains(&(*n, *s)));
            sources.extend(spawned.sources);
            sources.sort_by_key(|(n, s, _)| (*n, *s));
        }
        self.handles.lock().extend(spawned.handles);
        Ok(())
    }

    /// Waits until the checkpointer and every task stopped after
    /// [`QueryRuntime::cancel`] (a checkpoint being written is finished
    /// first, never cut in half). A new run of the query starts only then,
    /// so no subtask of the old run still writes (a file sink's files).
    pub async fn stopped(&self) {
        let handle = self.checkpointer.lock().take();
        if let Some(h) = handle {
            let _ = h.await;
        }
        let tasks = std::mem::take(&mut *self.aborted.lock());
        for h in tasks {
            let _ = h.await;
        }
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        self.coordinator.cancel_all();
        for (_, h) in self.handles.lock().drain() {
            h.abort();
        }
    }
}
