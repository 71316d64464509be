//! The runtime: starts one task per subtask of a [`StreamGraph`], wires the
//! bounded channels, and runs the query's checkpointer. `flush` asks for a
//! checkpoint and resolves once one that started after the call completed,
//! which means all input accepted before the call is processed and its
//! results committed.

mod bad_records;
mod channel;
mod checkpointer;
mod coordinator;
mod restore;
mod router;
mod sink;
mod source_task;
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
    StateBackendKind,
};
use crate::chunk::Chunk;
use crate::error::{ExecError, ExecResult};
use crate::graph::{NodeKind, StreamGraph};
use crate::keys::subtask_for_key_group;
use crate::operator::OperatorContext;
pub use bad_records::{BadRecordEvent, BadRecords, DeadLetter};
use checkpointer::{Checkpointer, FlushWaiter};
use coordinator::Coordinator;
pub use coordinator::{FailureSite, TaskFailure, TaskState};
pub use restore::{plan_restore, RestorePlan};
use router::{EdgeOut, OutputRouter};
pub use sink::SinkStaging;
pub use supervisor::{LaunchOptions, QueryState, StreamingQuery, TaskInfo};

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
                let canceled = *coord.cancel.borrow();
                coord.set_task(
                    id,
                    if canceled {
                        TaskState::Canceled
                    } else {
                        TaskState::Finished
                    },
                );
            }
            Ok(Err(ExecError::Canceled)) if *coord.cancel.borrow() => {
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
    coordinator: Arc<Coordinator>,
    flush_tx: mpsc::UnboundedSender<FlushWaiter>,
    /// (node, subtask, table) of every source subtask.
    source_tables: Vec<(usize, usize, Arc<crate::table::Table>)>,
    config: Arc<Mutex<CheckpointConfig>>,
    config_changed: Arc<tokio::sync::Notify>,
    history: Arc<Mutex<VecDeque<CheckpointStats>>>,
    handles: Mutex<Vec<JoinHandle<()>>>,
    checkpointer: Mutex<Option<JoinHandle<()>>>,
}

/// The node names of a graph, as recorded in its checkpoints.
pub fn node_names(graph: &StreamGraph) -> Vec<String> {
    graph.nodes.iter().map(|n| n.name.clone()).collect()
}

impl QueryRuntime {
    /// Starts every subtask of the graph. Must be called inside a tokio runtime.
    // Subtask indices address the channel tables of two nodes at once.
    #[allow(clippy::needless_range_loop)]
    pub fn start(
        name: &str,
        graph: &StreamGraph,
        mut opts: StartOptions,
    ) -> ExecResult<Arc<QueryRuntime>> {
        let name: Arc<str> = Arc::from(name);
        let total: usize = graph.nodes.iter().map(|n| n.parallelism).sum();
        let coordinator = Arc::new(Coordinator::new(
            name.clone(),
            total,
            opts.bad_records.clone(),
        ));
        let backend = opts.config.lock().backend;
        match (&opts.restore, backend) {
            (Some(r), StateBackendKind::Rocksdb)
                if r.record.backend == StateBackendKind::Rocksdb =>
            {
                opts.storage.open_state_db(Some(r.record.epoch))?
            }
            (_, StateBackendKind::Rocksdb) => opts.storage.open_state_db(None)?,
            _ => {}
        }
        // The working state db mirrors the restored checkpoint only when
        // that one was a RocksDB one; otherwise the first checkpoint is full.
        let last_backend = opts.restore.as_ref().map(|r| r.record.backend);

        // Channels: one per (edge, upstream subtask, downstream subtask).
        let mut inputs: Vec<Vec<Vec<InputChannel>>> = graph
            .nodes
            .iter()
            .map(|n| (0..n.parallelism).map(|_| Vec::new()).collect())
            .collect();
        let mut outputs: Vec<Vec<Vec<EdgeOut>>> = graph
            .nodes
            .iter()
            .map(|n| (0..n.parallelism).map(|_| Vec::new()).collect())
            .collect();
        for edge in &graph.edges {
            let up = &graph.nodes[edge.from];
            let down = &graph.nodes[edge.to];
            if edge.partitioning.is_forward() && up.parallelism != down.parallelism {
                return Err(ExecError::internal(format!(
                    "forward edge between {} (parallelism {}) and {} (parallelism {})",
                    up.name, up.parallelism, down.name, down.parallelism
                )));
            }
            for u in 0..up.parallelism {
                let mut senders = Vec::new();
                for d in 0..down.parallelism {
                    if edge.partitioning.is_forward() && u != d {
                        continue;
                    }
                    let (tx, rx) = channel::channel(CHANNEL_CAPACITY_MESSAGES);
                    senders.push((tx, (edge.to, d, edge.input)));
                    inputs[edge.to][d].push((edge.input, rx));
                }
                outputs[edge.from][u].push(EdgeOut::new(
                    edge.partitioning.clone(),
                    senders,
                    &up.schema,
                    down.parallelism,
                )?);
            }
        }

        let restored = opts.restore.is_some();
        let restored_epoch = opts.restore.as_ref().map(|r| r.record.epoch);
        let catch_up = opts.restore.as_mut().and_then(|r| r.catch_up.take());
        let (mut state, offsets) = match opts.restore.take() {
            Some(r) => {
                let offsets: HashMap<(usize, usize), u64> = r
                    .record
                    .sources
                    .iter()
                    .map(|s| ((s.node, s.subtask), s.offset))
                    .collect();
                (r.state, offsets)
            }
            None => (LoadedState::default(), HashMap::new()),
        };
        let mut sources = Vec::new();
        let mut source_tables = Vec::new();
        let mut staging = Vec::new();
        let mut handles = Vec::new();
        for node in &graph.nodes {
            let node_inputs = std::mem::take(&mut inputs[node.id]);
            let node_outputs = std::mem::take(&mut outputs[node.id]);
            let node_entries = state.entries.remove(&node.id).unwrap_or_default();
            let sink_staging = match &node.kind {
                NodeKind::ResultSink(table) => {
                    let s = SinkStaging::new(table.clone(), node.parallelism);
                    if let Some(first) = opts.first_commit.take() {
                        s.stage_first(first);
                    }
                    staging.push(s.clone());
                    Some(s)
                }
                _ => None,
            };
            for (subtask, (ins, outs)) in node_inputs.into_iter().zip(node_outputs).enumerate() {
                let ctx = OperatorContext {
                    query: name.clone(),
                    operator: Arc::from(node.name.as_str()),
                    subtask,
                    parallelism: node.parallelism,
                };
                let ids = task::TaskIds {
                    node: node.id,
                    subtask,
                };
                let router = OutputRouter::new(outs);
                let coord = coordinator.clone();
                let site = FailureSite {
                    node: node.id,
                    operator: ctx.operator.clone(),
                    subtask,
                };
                let handle = match &node.kind {
                    NodeKind::TableSource(table) => {
                        let (btx, brx) = mpsc::channel(16);
                        sources.push((node.id, subtask, btx));
                        source_tables.push((node.id, subtask, table.clone()));
                        let table = table.clone();
                        let offset = offsets.get(&(node.id, subtask)).copied();
                        if restored && offset.is_none() {
                            return Err(ExecError::internal(format!(
                                "checkpoint has no offset for source {}",
                                node.name
                            )));
                        }
                        let hold_at = catch_up.as_ref().and_then(|r| {
                            r.sources
                                .iter()
                                .find(|s| s.node == node.id && s.subtask == subtask)
                                .map(|s| s.offset)
                        });
                        let c2 = coord.clone();
                        spawn_guarded(coord, site, async move {
                            source_task::run(ids, table, offset, hold_at, router, brx, c2).await
                        })
                    }
                    NodeKind::Operator(_) | NodeKind::ResultSink(_) => {
                        let op: Box<dyn crate::operator::Operator> = match &node.kind {
                            NodeKind::Operator(factory) => {
                                factory.create(subtask, node.parallelism)?
                            }
                            _ => Box::new(NoOp),
                        };
                        let restore = restored.then(|| task::TaskRestore {
                            entries: node_entries
                                .iter()
                                .filter(|e| {
                                    subtask_for_key_group(e.key_group as usize, node.parallelism)
                                        == subtask
                                })
                                .cloned()
                                .collect(),
                            channels: state
                                .channels
                                .remove(&(node.id, subtask))
                                .unwrap_or_default(),
                        });
                        let c2 = coord.clone();
                        let sink = sink_staging.clone();
                        spawn_guarded(coord, site, async move {
                            task::run(ctx, ids, op, ins, router, sink, restore, c2).await
                        })
                    }
                };
                handles.push(handle);
            }
        }

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
            sources,
            staging,
            history: history.clone(),
            flush_rx,
            node_names: node_names(graph),
            node_parallelism: graph.nodes.iter().map(|n| n.parallelism).collect(),
            next_epoch: opts.next_epoch,
            // The previous checkpoint, for the incremental-size figures.
            last_completed: restored_epoch,
            catch_up,
            force_full: false,
            last_backend,
        };
        let checkpointer = tokio::spawn(checkpointer.run());
        Ok(Arc::new(QueryRuntime {
            name,
            coordinator,
            flush_tx,
            source_tables,
            config,
            config_changed,
            history,
            handles: Mutex::new(handles),
            checkpointer: Mutex::new(Some(checkpointer)),
        }))
    }
}

/// The sink node's operator: the task stages its input for commit itself.
struct NoOp;

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

    /// Resolves once this run failed or was canceled.
    pub async fn stopping(&self) {
        let mut rx = self.coordinator.cancel.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    /// State of each subtask: ((node, subtask), state).
    pub fn task_states(&self) -> HashMap<(usize, usize), TaskState> {
        self.coordinator.tasks.lock().clone()
    }

    /// Asks for a checkpoint and waits until one that started after this
    /// call has completed (its results are then visible).
    pub async fn flush(&self) -> Result<(), String> {
        if self.status() != QueryStatus::Running {
            return Err(self.coordinator.failure_message());
        }
        let (tx, rx) = oneshot::channel();
        let targets = self
            .source_tables
            .iter()
            .map(|(node, subtask, table)| (*node, *subtask, table.version()))
            .collect();
        let waiter = FlushWaiter { targets, done: tx };
        if self.flush_tx.send(waiter).is_err() {
            return Err(self.coordinator.failure_message());
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(self.coordinator.failure_message()),
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
        let _ = self.coordinator.cancel.send(true);
        for h in self.handles.lock().drain(..) {
            h.abort();
        }
    }

    /// Waits until the checkpointer stopped after [`QueryRuntime::cancel`]
    /// (a checkpoint being written is finished first, never cut in half).
    pub async fn stopped(&self) {
        let handle = self.checkpointer.lock().take();
        if let Some(h) = handle {
            let _ = h.await;
        }
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        let _ = self.coordinator.cancel.send(true);
        for h in self.handles.lock().drain(..) {
            h.abort();
        }
    }
}
