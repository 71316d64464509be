//! The runtime: starts one task per subtask of a [`StreamGraph`], wires the
//! bounded channels, and coordinates barriers. `flush` injects a barrier at
//! every source and resolves once every sink subtask has seen it, which means
//! all input accepted before the call has been processed.

mod router;
mod source_task;
mod task;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::error::{ExecError, ExecResult};
use crate::graph::{NodeKind, StreamGraph};
use crate::message::{Barrier, BarrierKind, CheckpointMode, Message};
use crate::operator::OperatorContext;
use router::{EdgeOut, OutputRouter};

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

struct PendingEpoch {
    remaining: usize,
    waiters: Vec<oneshot::Sender<Result<(), String>>>,
}

/// Shared between the tasks of one query and its handle.
pub(crate) struct Coordinator {
    query: Arc<str>,
    pending: Mutex<HashMap<u64, PendingEpoch>>,
    status: Mutex<QueryStatus>,
    failure: Mutex<Option<Arc<ExecError>>>,
    cancel: watch::Sender<bool>,
    /// Sink subtasks whose every input ended.
    finished_sinks: watch::Sender<usize>,
}

impl Coordinator {
    /// A sink subtask saw the end of all its inputs.
    pub(crate) fn sink_finished(&self) {
        self.finished_sinks.send_modify(|n| *n += 1);
    }

    /// A sink subtask has seen the barrier of `epoch`.
    pub(crate) fn ack(&self, epoch: u64) {
        let mut pending = self.pending.lock();
        if let Some(p) = pending.get_mut(&epoch) {
            p.remaining -= 1;
            if p.remaining == 0 {
                let p = pending.remove(&epoch).expect("present");
                for w in p.waiters {
                    let _ = w.send(Ok(()));
                }
            }
        }
    }

    /// A task failed: the query fails and every waiter hears why.
    pub(crate) fn fail(&self, err: ExecError) {
        {
            let mut status = self.status.lock();
            if *status != QueryStatus::Running {
                return;
            }
            tracing::warn!(query = %self.query, error = %err, "streaming query failed");
            *status = QueryStatus::Failed(err.message());
        }
        *self.failure.lock() = Some(Arc::new(err));
        let _ = self.cancel.send(true);
        let msg = self.failure_message();
        for (_, p) in self.pending.lock().drain() {
            for w in p.waiters {
                let _ = w.send(Err(msg.clone()));
            }
        }
    }

    fn failure_message(&self) -> String {
        match &*self.status.lock() {
            QueryStatus::Failed(m) => format!("streaming query \"{}\" failed: {m}", self.query),
            QueryStatus::Canceled => format!("streaming query \"{}\" was canceled", self.query),
            QueryStatus::Running => String::new(),
        }
    }
}

/// A subtask's input channel and the operator input it feeds.
type InputChannel = (usize, mpsc::Receiver<Message>);

/// Runs a subtask; an error or a panic (a bug) fails the query instead of
/// leaving it wedged.
fn spawn_guarded<F>(coord: Arc<Coordinator>, fut: F) -> JoinHandle<()>
where
    F: std::future::Future<Output = ExecResult<()>> + Send + 'static,
{
    use futures::FutureExt;
    tokio::spawn(async move {
        match std::panic::AssertUnwindSafe(fut).catch_unwind().await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => coord.fail(e),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                tracing::error!(query = %coord.query, panic = %msg, "subtask panicked");
                coord.fail(ExecError::internal(format!("subtask panicked: {msg}")));
            }
        }
    })
}

/// A running streaming query.
pub struct QueryRuntime {
    pub name: Arc<str>,
    coordinator: Arc<Coordinator>,
    barrier_txs: Vec<mpsc::Sender<Barrier>>,
    sink_subtasks: usize,
    next_epoch: AtomicU64,
    handles: Mutex<Vec<JoinHandle<()>>>,
}

impl QueryRuntime {
    /// Starts every subtask of the graph. Must be called inside a tokio runtime.
    // Subtask indices address the channel tables of two nodes at once.
    #[allow(clippy::needless_range_loop)]
    pub fn start(name: &str, graph: StreamGraph) -> ExecResult<Arc<QueryRuntime>> {
        let name: Arc<str> = Arc::from(name);
        let (cancel, _) = watch::channel(false);
        let coordinator = Arc::new(Coordinator {
            query: name.clone(),
            pending: Mutex::new(HashMap::new()),
            status: Mutex::new(QueryStatus::Running),
            failure: Mutex::new(None),
            cancel,
            finished_sinks: watch::channel(0).0,
        });

        // Channels: one per (edge, upstream subtask, downstream subtask).
        // inputs[node][subtask] = Vec<(input index, receiver)>
        let mut inputs: Vec<Vec<Vec<InputChannel>>> = graph
            .nodes
            .iter()
            .map(|n| (0..n.parallelism).map(|_| Vec::new()).collect())
            .collect();
        // outputs[node][subtask] = Vec<EdgeOut>
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
                    let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY_MESSAGES);
                    senders.push(tx);
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

        let mut barrier_txs = Vec::new();
        let mut handles = Vec::new();
        let mut sink_subtasks = 0;
        for node in &graph.nodes {
            let node_inputs = std::mem::take(&mut inputs[node.id]);
            let node_outputs = std::mem::take(&mut outputs[node.id]);
            for (subtask, (ins, outs)) in node_inputs.into_iter().zip(node_outputs).enumerate() {
                let ctx = OperatorContext {
                    query: name.clone(),
                    operator: Arc::from(node.name.as_str()),
                    subtask,
                    parallelism: node.parallelism,
                };
                let router = OutputRouter::new(outs);
                let coord = coordinator.clone();
                let cancel_rx = coordinator.cancel.subscribe();
                let handle = match &node.kind {
                    NodeKind::TableSource(table) => {
                        let (btx, brx) = mpsc::channel(16);
                        barrier_txs.push(btx);
                        let table = table.clone();
                        spawn_guarded(coord, async move {
                            source_task::run(table, router, brx, cancel_rx).await
                        })
                    }
                    NodeKind::Operator(factory) => {
                        let op = factory.create(subtask, node.parallelism)?;
                        let c2 = coord.clone();
                        spawn_guarded(coord, async move {
                            task::run(ctx, op, ins, router, false, c2, cancel_rx).await
                        })
                    }
                    NodeKind::ResultSink(table) => {
                        sink_subtasks += 1;
                        let op: Box<dyn crate::operator::Operator> = Box::new(
                            crate::operators::result_sink::ResultSinkOperator::new(table.clone()),
                        );
                        let c2 = coord.clone();
                        spawn_guarded(coord, async move {
                            task::run(ctx, op, ins, router, true, c2, cancel_rx).await
                        })
                    }
                };
                handles.push(handle);
            }
        }
        Ok(Arc::new(QueryRuntime {
            name,
            coordinator,
            barrier_txs,
            sink_subtasks,
            next_epoch: AtomicU64::new(1),
            handles: Mutex::new(handles),
        }))
    }

    pub fn status(&self) -> QueryStatus {
        self.coordinator.status.lock().clone()
    }

    /// The error that failed the query, if it failed.
    pub fn failure(&self) -> Option<Arc<ExecError>> {
        self.coordinator.failure.lock().clone()
    }

    /// Injects a barrier and waits until every sink has processed it.
    pub async fn flush(&self) -> Result<(), String> {
        let epoch = self.next_epoch.fetch_add(1, Ordering::SeqCst);
        let (tx, rx) = oneshot::channel();
        {
            let status = self.status();
            if status != QueryStatus::Running {
                return Err(self.coordinator.failure_message());
            }
            let mut pending = self.coordinator.pending.lock();
            pending.insert(
                epoch,
                PendingEpoch {
                    remaining: self.sink_subtasks,
                    waiters: vec![tx],
                },
            );
        }
        if self.sink_subtasks == 0 || self.barrier_txs.is_empty() {
            // No input that can change (constants only): done once every
            // sink has seen the end of its input.
            self.coordinator.pending.lock().remove(&epoch);
            let mut finished = self.coordinator.finished_sinks.subscribe();
            let mut cancel = self.coordinator.cancel.subscribe();
            let want = self.sink_subtasks;
            tokio::select! {
                _ = finished.wait_for(|n| *n >= want) => return Ok(()),
                _ = cancel.wait_for(|c| *c) => return Err(self.coordinator.failure_message()),
            }
        }
        let barrier = Barrier {
            epoch,
            kind: BarrierKind::Checkpoint,
            mode: CheckpointMode::Aligned,
        };
        for btx in &self.barrier_txs {
            if btx.send(barrier).await.is_err() {
                // The source ended (finite input) or the query failed.
                if self.status() != QueryStatus::Running {
                    return Err(self.coordinator.failure_message());
                }
            }
        }
        match rx.await {
            Ok(r) => r,
            Err(_) => Err(self.coordinator.failure_message()),
        }
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
        let msg = self.coordinator.failure_message();
        for (_, p) in self.coordinator.pending.lock().drain() {
            for w in p.waiters {
                let _ = w.send(Err(msg.clone()));
            }
        }
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        for h in self.handles.lock().drain(..) {
            h.abort();
        }
    }
}
