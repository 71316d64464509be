//! The coordinator of one query's subtasks: its status, and the
//! acknowledgements of the checkpoint in progress.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::{oneshot, watch};

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
    pub(crate) failure: Mutex<Option<Arc<TaskFailure>>>,
    /// Where bad records go (`on_error`); `None`: they fail the query.
    pub(crate) bad_records: Option<Arc<super::bad_records::BadRecords>>,
    /// State of every subtask.
    pub(crate) tasks: Mutex<HashMap<SubtaskId, TaskState>>,
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
        total_subtasks: usize,
        bad_records: Option<Arc<super::bad_records::BadRecords>>,
    ) -> Coordinator {
        Coordinator {
            bad_records,
            query,
            status: Mutex::new(QueryStatus::Running),
            failure: Mutex::new(None),
            tasks: Mutex::new(HashMap::new()),
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

    /// Stops tracking `epoch` (it expired); late acknowledgements are ignored.
    pub(crate) fn abort(&self, epoch: u64) {
        let mut pending = self.pending.lock();
        if pending.as_ref().is_some_and(|p| p.epoch == epoch) {
            *pending = None;
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

    pub(crate) fn set_task(&self, id: SubtaskId, state: TaskState) {
        self.tasks.lock().insert(id, state);
    }

    /// The query as a whole failed (e.g. too many failed checkpoints).
    pub(crate) fn fail(&self, err: ExecError) {
        self.fail_at(None, err)
    }

    /// A task failed: this run of the query stops.
    pub(crate) fn fail_at(&self, site: Option<FailureSite>, err: ExecError) {
        {
            let mut status = self.status.lock();
            if *status != QueryStatus::Running {
                return;
            }
            tracing::warn!(query = %self.query, operator = ?site.as_ref().map(|s| s.operator.clone()), subtask = ?site.as_ref().map(|s| s.subtask), error = %err, "streaming query failed");
            *status = QueryStatus::Failed(err.message());
        }
        if let Some(s) = &site {
            self.set_task((s.node, s.subtask), TaskState::Failed);
        }
        *self.failure.lock() = Some(Arc::new(TaskFailure {
            error: err,
            site,
            at: std::time::SystemTime::now(),
        }));
        let _ = self.cancel.send(true);
        *self.pending.lock() = None;
    }

    pub(crate) fn failure_message(&self) -> String {
        match &*self.status.lock() {
            QueryStatus::Failed(m) => format!("streaming query \"{}\" failed: {m}", self.query),
            QueryStatus::Canceled => format!("streaming query \"{}\" was canceled", self.query),
            QueryStatus::Running => String::new(),
        }
    }
}
