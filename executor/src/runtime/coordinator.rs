//! The coordinator of one query's subtasks: its status, and the
//! acknowledgements of the checkpoint in progress.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use std::sync::atomic::AtomicU64;

use tokio::sync::{mpsc, oneshot, watch};

use super::QueryStatus;
use crate::checkpoint::SubtaskSnapshot;
use crate::error::ExecError;

/// (node, subtask)
pub(crate) type SubtaskId = (usize, usize);

/// Where a failure happened.
#[derive(Debug, Clone)]
pub struct FailureSite {
    pub node: usize,
    pub operator: Arc<str>,
    pub subtask: usize,
}

/// The failure that stopped a run of a query.
#[derive(Debug)]
pub struct TaskFailure {
    pub error: ExecError,
    /// `None` for failures of the query as a whole (checkpointing).
    pub site: Option<FailureSite>,
    pub at: std::time::SystemTime,
}

/// The life of one subtask, as `system.tasks` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    /// Restoring state and opening the operator.
    Initializing,
    Running,
    /// Its inputs ended.
    Finished,
    Failed,
    Canceled,
}

impl TaskState {
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Initializing => "INITIALIZING",
            TaskState::Running => "RUNNING",
            TaskState::Finished => "FINISHED",
            TaskState::Failed => "FAILED",
            TaskState::Canceled => "CANCELED",
        }
    }
}

struct Pending {
    epoch: u64,
    acked: HashSet<SubtaskId>,
    snaps: Vec<SubtaskSnapshot>,
    done: oneshot::Sender<Vec<SubtaskSnapshot>>,
}

/// Shared between the tasks of one query, its checkpointer and its handle.
pub(crate) struct Coordinator {
    pub(crate) query: Arc<str>,
    pub(crate) status: Mutex<QueryStatus>,
    /// The latest failure.
    pub(crate) failure: Mutex<Option<Arc<TaskFailure>>>,
    /// Bumped by every failure (FLUSH gives up on bad data).
    pub(crate) failure_seq: watch::Sender<u64>,
    /// Every failure, for whoever handles them (the supervisor).
    failures_tx: mpsc::UnboundedSender<Arc<TaskFailure>>,
    pub(crate) failures_rx: tokio::sync::Mutex<mpsc::UnboundedReceiver<Arc<TaskFailure>>>,
    /// Failover region of each subtask: `regions[node][subtask]`.
    regions: Vec<Vec<usize>>,
    /// Per region: stops its subtasks (a region restart, or everything).
    region_cancel: Mutex<Vec<watch::Sender<bool>>>,
    /// Regions stopped by a failure and not restarted yet; no checkpoint
    /// is triggered meanwhile.
    pub(crate) down: watch::Sender<HashSet<usize>>,
    /// Bumped by every region restart: a checkpoint that began before one
    /// must not commit.
    pub(crate) generation: AtomicU64,
    /// Held from a checkpoint's last acknowledgement to its commit, and by
    /// a region restart, so that the two never interleave.
    pub(crate) commit_lock: tokio::sync::Mutex<()>,
    /// Where bad records go (`on_error`); `None`: they fail the query.
    pub(crate) bad_records: Option<Arc<super::bad_records::BadRecords>>,
    /// State of every subtask.
    pub(crate) tasks: Mutex<HashMap<SubtaskId, TaskState>>,
    /// Metrics of every subtask (new ones when a region restarts).
    pub(crate) metrics: Mutex<HashMap<SubtaskId, Arc<crate::metrics::SubtaskMetrics>>>,
    pub(crate) cancel: watch::Sender<bool>,
    total_subtasks: usize,
    pending: Mutex<Option<Pending>>,
    /// Final snapshots of subtasks whose inputs all ended; they stand in for
    /// acknowledgements of every later checkpoint.
    finished: Mutex<HashMap<SubtaskId, SubtaskSnapshot>>,
}

impl Coordinator {
    pub(crate) fn new(
        query: Arc<str>,
        regions: Vec<Vec<usize>>,
        bad_records: Option<Arc<super::bad_records::BadRecords>>,
    ) -> Coordinator {
        let total_subtasks = regions.iter().map(|r| r.len()).sum();
        let region_count = crate::failure::regions::region_count(&regions);
        let (failures_tx, failures_rx) = mpsc::unbounded_channel();
        Coordinator {
            bad_records,
            failure_seq: watch::channel(0).0,
            failures_tx,
            failures_rx: tokio::sync::Mutex::new(failures_rx),
            region_cancel: Mutex::new(
                (0..region_count.max(1))
                    .map(|_| watch::channel(false).0)
                    .collect(),
            ),
            regions,
            down: watch::channel(HashSet::new()).0,
            generation: AtomicU64::new(0),
            commit_lock: tokio::sync::Mutex::new(()),
            query,
            status: Mutex::new(QueryStatus::Running),
            failure: Mutex::new(None),
            tasks: Mutex::new(HashMap::new()),
            metrics: Mutex::new(HashMap::new()),
            cancel: watch::channel(false).0,
            total_subtasks,
            pending: Mutex::new(None),
            finished: Mutex::new(HashMap::new()),
        }
    }

    /// Starts tracking checkpoint `epoch`; `done` receives every subtask's
    /// snapshot once all acknowledged it.
    pub(crate) fn begin(&self, epoch: u64, done: oneshot::Sender<Vec<SubtaskSnapshot>>) {
        let mut pending = self.pending.lock();
        *pending = Some(Pending {
            epoch,
            acked: HashSet::new(),
            snaps: Vec::new(),
            done,
        });
        self.try_complete(&mut pending);
    }

    pub(crate) fn region_of(&self, id: SubtaskId) -> usize {
        self.regions
            .get(id.0)
            .and_then(|r| r.get(id.1))
            .copied()
            .unwrap_or(0)
    }

    pub(crate) fn region_count(&self) -> usize {
        crate::failure::regions::region_count(&self.regions)
    }

    /// The subtasks of a region.
    pub(crate) fn members(&self, region: usize) -> HashSet<SubtaskId> {
        let mut out = HashSet::new();
        for (node, subtasks) in self.regions.iter().enumerate() {
            for (subtask, r) in subtasks.iter().enumerate() {
                if *r == region {
                    out.insert((node, subtask));
                }
            }
        }
        out
    }

    /// Resolves to true when the subtask must stop.
    pub(crate) fn cancel_receiver(&self, id: SubtaskId) -> watch::Receiver<bool> {
        self.region_cancel.lock()[self.region_of(id)].subscribe()
    }

    pub(crate) fn is_canceled(&self, id: SubtaskId) -> bool {
        *self.cancel.borrow() || *self.region_cancel.lock()[self.region_of(id)].borrow()
    }

    /// Stops every subtask.
    pub(crate) fn cancel_all(&self) {
        self.cancel.send_replace(true);
        for tx in self.region_cancel.lock().iter() {
            tx.send_replace(true);
        }
    }

    /// A new cancel signal for a region about to be restarted; its
    /// subtasks leave the finished set.
    pub(crate) fn reset_region(&self, region: usize) {
        self.region_cancel.lock()[region] = watch::channel(false).0;
        let members = self.members(region);
        self.finished.lock().retain(|k, _| !members.contains(k));
    }

    /// The region runs again.
    pub(crate) fn region_up(&self, region: usize) {
        self.down.send_modify(|d| {
            d.remove(&region);
        });
    }

    /// Subtasks that have not acknowledged checkpoint `epoch` yet.
    pub(crate) fn missing_acks(&self, epoch: u64) -> Vec<SubtaskId> {
        let pending = self.pending.lock();
        let Some(p) = pending.as_ref().filter(|p| p.epoch == epoch) else {
            return Vec::new();
        };
        let finished = self.finished.lock();
        let mut missing: Vec<SubtaskId> = self
            .regions
            .iter()
            .enumerate()
            .flat_map(|(node, subtasks)| (0..subtasks.len()).map(move |s| (node, s)))
            .filter(|id| !p.acked.contains(id) && !finished.contains_key(id))
            .collect();
        missing.sort();
        missing
    }

    /// Stops tracking whatever checkpoint is in progress.
    pub(crate) fn abort_pending(&self) {
        thaw(self.pending.lock().take());
    }

    /// Stops tracking `epoch` (it expired); late acknowledgements are ignored.
    pub(crate) fn abort(&self, epoch: u64) {
        let mut pending = self.pending.lock();
        if pending.as_ref().is_some_and(|p| p.epoch == epoch) {
            thaw(pending.take());
        }
    }

    /// A subtask has taken its snapshot for `epoch`.
    pub(crate) fn ack(&self, epoch: u64, snap: SubtaskSnapshot) {
        let mut pending = self.pending.lock();
        let Some(p) = pending.as_mut() else { return };
        if p.epoch != epoch {
            return;
        }
        if p.acked.insert((snap.node, snap.subtask)) {
            p.snaps.push(snap);
        }
        self.try_complete(&mut pending);
    }

    /// A subtask ended (all inputs finished) with its final state.
    pub(crate) fn finish(&self, snap: SubtaskSnapshot) {
        let mut pending = self.pending.lock();
        self.finished.lock().insert((snap.node, snap.subtask), snap);
        self.try_complete(&mut pending);
    }

    fn try_complete(&self, pending: &mut Option<Pending>) {
        let Some(p) = pending.as_ref() else { return };
        let finished = self.finished.lock();
        let missing = finished.keys().filter(|k| !p.acked.contains(k)).count();
        if p.acked.len() + missing < self.total_subtasks {
            return;
        }
        let mut p = pending.take().expect("checked");
        for (k, s) in finished.iter() {
            if !p.acked.contains(k) {
                p.snaps.push(s.clone());
            }
        }
        let _ = p.done.send(p.snaps);
    }

    /// The metrics of a started subtask (fresh ones if it has none).
    pub(crate) fn subtask_metrics(&self, id: SubtaskId) -> Arc<crate::metrics::SubtaskMetrics> {
        self.metrics.lock().get(&id).cloned().unwrap_or_default()
    }

    /// Fresh metrics for a subtask being started.
    pub(crate) fn new_metrics(&self, id: SubtaskId) -> Arc<crate::metrics::SubtaskMetrics> {
        let m = Arc::new(crate::metrics::SubtaskMetrics::new());
        self.metrics.lock().insert(id, m.clone());
        m
    }

    pub(crate) fn set_task(&self, id: SubtaskId, state: TaskState) {
        self.tasks.lock().insert(id, state);
    }

    /// The query as a whole failed (e.g. too many failed checkpoints).
    pub(crate) fn fail(&self, err: ExecError) {
        self.fail_at(None, err)
    }

    /// A subtask failed: its region stops at once (the other regions go
    /// on), the checkpoint in progress is abandoned, and the failure is
    /// queued for the supervisor, which decides what restarts.
    pub(crate) fn fail_at(&self, site: Option<FailureSite>, err: ExecError) {
        if *self.status.lock() != QueryStatus::Running {
            return;
        }
        if let Some(s) = &site {
            let region = self.region_of((s.node, s.subtask));
            let mut newly_down = false;
            self.down.send_if_modified(|d| {
                newly_down = d.insert(region);
                newly_down
            });
            if !newly_down {
                // A consequence of the region's first failure.
                return;
            }
            self.set_task((s.node, s.subtask), TaskState::Failed);
            self.region_cancel.lock()[region].send_replace(true);
        }
        tracing::warn!(query = %self.query, operator = ?site.as_ref().map(|s| s.operator.clone()), subtask = ?site.as_ref().map(|s| s.subtask), error = %err, "streaming query failed");
        self.abort_pending();
        let failure = Arc::new(TaskFailure {
            error: err,
            site,
            at: std::time::SystemTime::now(),
        });
        *self.failure.lock() = Some(failure.clone());
        let _ = self.failures_tx.send(failure);
        self.failure_seq.send_modify(|v| *v += 1);
    }

    /// Stops everything after `failure` (no region restart).
    pub(crate) fn stop_failed(&self, failure: &TaskFailure) {
        {
            let mut status = self.status.lock();
            if *status == QueryStatus::Running {
                *status = QueryStatus::Failed(failure.error.message());
            }
        }
        self.cancel_all();
        self.abort_pending();
    }

    pub(crate) fn failure_message(&self) -> String {
        match &*self.status.lock() {
            QueryStatus::Failed(m) => format!("streaming query \"{}\" failed: {m}", self.query),
            QueryStatus::Canceled => format!("streaming query \"{}\" was canceled", self.query),
            QueryStatus::Running => String::new(),
        }
    }
}

/// The stores of an abandoned checkpoint's snapshots will not be cut for
/// it: their subtasks may write to them again.
fn thaw(pending: Option<Pending>) {
    for snap in pending.iter().flat_map(|p| &p.snaps) {
        if let Some(store) = &snap.store {
            store.thaw();
        }
    }
}
