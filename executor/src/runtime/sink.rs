//! Two-phase commit of a query's output into its result table: sink
//! subtasks stage their changes per epoch; the checkpointer commits the
//! staged changes of every epoch up to a checkpoint once that checkpoint is
//! complete, atomically with its record. Readers of the table therefore see
//! exactly the last completed checkpoint.

use std::sync::Arc;

use parking_lot::Mutex;

use crate::chunk::Chunk;
use crate::table::Table;

pub struct SinkStaging {
    pub(crate) table: Arc<Table>,
    /// Per sink subtask: changes since its last barrier.
    open: Mutex<Vec<Vec<Chunk>>>,
    /// (epoch, subtask, changes) sealed at barriers, waiting for their
    /// checkpoint.
    sealed: Mutex<Vec<(u64, Option<usize>, Chunk)>>,
}

impl SinkStaging {
    pub fn new(table: Arc<Table>, subtasks: usize) -> Arc<SinkStaging> {
        Arc::new(SinkStaging {
            table,
            open: Mutex::new(vec![Vec::new(); subtasks]),
            sealed: Mutex::new(Vec::new()),
        })
    }

    pub(crate) fn push(&self, subtask: usize, chunk: Chunk) {
        if !chunk.is_empty() {
            self.open.lock()[subtask].push(chunk);
        }
    }

    /// The subtask's barrier of `epoch` passed: its changes so far belong
    /// to that epoch.
    pub(crate) fn seal(&self, subtask: usize, epoch: u64) {
        let chunks = std::mem::take(&mut self.open.lock()[subtask]);
        self.sealed
            .lock()
            .extend(chunks.into_iter().map(|c| (epoch, Some(subtask), c)));
    }

    /// Forgets what a subtask staged and nothing committed yet: it is
    /// restarted from the last checkpoint and will produce it again.
    pub(crate) fn discard(&self, subtask: usize) {
        self.open.lock()[subtask].clear();
        self.sealed.lock().retain(|(_, s, _)| *s != Some(subtask));
    }

    /// Stages changes to be committed with the next checkpoint (e.g. the
    /// retraction of stale results before a recomputation).
    pub(crate) fn stage_first(&self, chunk: Chunk) {
        self.sealed.lock().insert(0, (0, None, chunk));
    }

    /// Takes the sealed changes of every epoch up to `epoch`, in epoch order.
    pub(crate) fn take_through(&self, epoch: u64) -> Vec<(u64, Chunk)> {
        let mut sealed = self.sealed.lock();
        let (mut take, keep): (Vec<_>, Vec<_>) =
            sealed.drain(..).partition(|(e, _, _)| *e <= epoch);
        *sealed = keep;
        take.sort_by_key(|(e, _, _)| *e);
        take.into_iter().map(|(e, _, c)| (e, c)).collect()
    }
}
