//! The checkpointer of one query: triggers a checkpoint every
//! `checkpoint_interval` (or at once for `FLUSH`), waits for every subtask's
//! acknowledgement, persists the state off the processing path, then commits
//! the result-table changes together with the checkpoint's record, and
//! then the output that sinks writing outside Weir sealed
//! (`EpochCommitter`). At most one checkpoint is in flight at a time.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use weir_storage::Commit;

use super::coordinator::Coordinator;
use super::sink::SinkStaging;
use crate::checkpoint::{
    CheckpointConfig, CheckpointRecord, CheckpointStats, CheckpointStatus, CheckpointStorage,
    SourceOffset, StateBackendKind, SubtaskSnapshot,
};
use crate::error::{ExecError, ExecResult};
use crate::message::{Barrier, BarrierKind, CheckpointMode};

/// Checkpoint rows kept in memory per query for `system.checkpoints`.
pub const HISTORY_ROWS: usize = 200;

/// What the checkpointer asks a source subtask.
#[derive(Debug, Clone, Copy)]
pub(crate) struct SourceCommand {
    pub barrier: Barrier,
    /// Catch-up after a fallback: emit input up to exactly this offset
    /// before the barrier.
    pub stop_at: Option<u64>,
    /// Emit every change visible now before the barrier (FLUSH); otherwise
    /// the barrier goes at the current read position, as in Flink.
    pub drain: bool,
}

/// A `FLUSH`: done once a completed checkpoint covers, at every source,
/// the table offset that was visible when it was asked for.
pub(crate) struct FlushWaiter {
    pub targets: Vec<(usize, usize, u64)>,
    pub done: oneshot::Sender<Result<(), String>>,
    /// Run (on a blocking thread) right after the covering checkpoint
    /// committed, before the next one begins: a savepoint copies it.
    pub after: Option<AfterCommit>,
}

/// Work done with a just-committed checkpoint before the next begins.
pub type AfterCommit = Box<dyn FnOnce(&CheckpointRecord) -> ExecResult<()> + Send>;

impl FlushWaiter {
    fn covered_by(&self, rec: &CheckpointRecord) -> bool {
        // In-flight data of an unaligned checkpoint is not committed yet.
        rec.in_flight_bytes == 0
            && self.targets.iter().all(|(node, subtask, version)| {
                rec.sources
                    .iter()
                    .any(|s| s.node == *node && s.subtask == *subtask && s.offset >= *version)
            })
    }
}

pub(crate) struct Checkpointer {
    pub coord: Arc<Coordinator>,
    pub config: Arc<Mutex<CheckpointConfig>>,
    /// Signalled when the settings change (a new interval applies at once).
    pub config_changed: Arc<tokio::sync::Notify>,
    pub storage: Arc<CheckpointStorage>,
    pub sources: super::SourceCommands,
    pub staging: Vec<Arc<SinkStaging>>,
    /// Sinks writing outside Weir (file sinks).
    pub committers: Vec<Arc<dyn crate::operator::EpochCommitter>>,
    pub history: Arc<Mutex<VecDeque<CheckpointStats>>>,
    pub counts: Arc<crate::checkpoint::CheckpointCounts>,
    pub flush_rx: mpsc::UnboundedReceiver<FlushWaiter>,
    pub node_names: Vec<String>,
    pub node_fingerprints: Vec<String>,
    /// The log id of the table each node reads (table sources only).
    pub node_tables: Vec<Option<u64>>,
    pub node_parallelism: Vec<usize>,
    pub next_epoch: u64,
    pub last_completed: Option<u64>,
    /// Catch-up target after a fallback to an older checkpoint: the newer
    /// checkpoint whose results are already committed.
    pub catch_up: Option<CheckpointRecord>,
    /// The backend the subtasks run with (fixed for a run; a changed
    /// `state_backend` applies when the query next starts).
    pub backend: StateBackendKind,
}

fn ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

enum Outcome {
    Completed(Box<CheckpointRecord>),
    Failed,
    /// Abandoned because a subtask failed; not held against the query.
    Aborted,
    Stopped,
}

impl Checkpointer {
    pub(crate) async fn run(mut self) {
        let mut cancel = self.coord.cancel.subscribe();
        let mut waiters: Vec<FlushWaiter> = Vec::new();
        let mut failures = 0u32;
        loop {
            if waiters.is_empty() {
                let interval = self.config.lock().interval;
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = self.config_changed.notified() => continue,
                    w = self.flush_rx.recv() => match w {
                        Some(w) => waiters.push(w),
                        None => return,
                    },
                    _ = cancel.wait_for(|c| *c) => break,
                }
            }
            // No checkpoint while a failed region waits for its restart.
            let mut down = self.coord.down.subscribe();
            tokio::select! {
                r = down.wait_for(|d| d.is_empty()) => if r.is_err() { break },
                _ = cancel.wait_for(|c| *c) => break,
            }
            while let Ok(w) = self.flush_rx.try_recv() {
                waiters.push(w);
            }
            let round = std::mem::take(&mut waiters);
            match self.checkpoint_once(!round.is_empty()).await {
                Outcome::Completed(rec) => {
                    failures = 0;
                    // An unaligned checkpoint may cover less than was
                    // visible (sources do not drain first): go again.
                    for mut w in round {
                        if w.covered_by(&rec) {
                            let outcome = match w.after.take() {
                                Some(after) => {
                                    let rec = rec.clone();
                                    tokio::task::spawn_blocking(move || after(&rec))
                                        .await
                                        .map_err(|e| format!("savepoint writer panicked: {e}"))
                                        .and_then(|r| r.map_err(|e| e.message()))
                                }
                                None => Ok(()),
                            };
                            let _ = w.done.send(outcome);
                        } else {
                            waiters.push(w);
                        }
                    }
                }
                Outcome::Failed => {
                    failures += 1;
                    waiters = round;
                    let tolerable = self.config.lock().tolerable_failed;
                    if failures > tolerable {
                        self.coord.fail(ExecError::Checkpoint(format!(
                            "exceeded checkpoint tolerable failure threshold ({failures} consecutive failed checkpoints, tolerable_failed_checkpoints = {tolerable})"
                        )));
                        break;
                    }
                    // Let the query breathe before the next attempt.
                    if waiters.is_empty() {
                        continue;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Outcome::Aborted => {
                    waiters = round;
                }
                Outcome::Stopped => {
                    waiters = round;
                    break;
                }
            }
        }
        let msg = self.coord.failure_message();
        for w in waiters {
            let _ = w.done.send(Err(msg.clone()));
        }
        while let Ok(w) = self.flush_rx.try_recv() {
            let _ = w.done.send(Err(msg.clone()));
        }
    }

    fn push_history(&self, row: CheckpointStats) {
        use std::sync::atomic::Ordering::Relaxed;
        match row.status {
            CheckpointStatus::Completed => {
                self.counts.completed.fetch_add(1, Relaxed);
            }
            CheckpointStatus::Failed | CheckpointStatus::Expired => {
                self.counts.failed.fetch_add(1, Relaxed);
            }
            CheckpointStatus::InProgress => {}
        }
        let mut h = self.history.lock();
        if let Some(existing) = h.iter_mut().rev().find(|r| {
            r.checkpoint_id == row.checkpoint_id && r.status == CheckpointStatus::InProgress
        }) {
            *existing = row;
            return;
        }
        h.push_back(row);
        while h.len() > HISTORY_ROWS {
            h.pop_front();
        }
    }

    /// `for_flush`: the checkpoint is aligned whatever the setting (like a
    /// Flink savepoint), so that its completion means every result of the
    /// input before it is committed.
    async fn checkpoint_once(&mut self, for_flush: bool) -> Outcome {
        let mut cfg = self.config.lock().clone();
        if for_flush {
            cfg.mode = CheckpointMode::Aligned;
            cfg.aligned_timeout = None;
        }
        let epoch = match &self.catch_up {
            Some(rec) => rec.epoch,
            None => self.next_epoch,
        };
        self.next_epoch = epoch + 1;
        // Memory backend: every checkpoint holds all state. RocksDB: each
        // store gets what changed and is cut incrementally.
        let full = self.backend == StateBackendKind::Memory;
        let triggered_at = SystemTime::now();
        let started = Instant::now();
        let mut row = CheckpointStats {
            query: self.coord.query.to_string(),
            checkpoint_id: epoch,
            kind: "checkpoint",
            mode: cfg.mode,
            timed_out_to_unaligned: false,
            status: CheckpointStatus::InProgress,
            triggered_at,
            completed_at: None,
            duration_ms: None,
            state_bytes: 0,
            incremental_bytes: 0,
            persisted_in_flight_bytes: 0,
            alignment_ms: 0,
            failure: None,
        };
        self.push_history(row.clone());

        let fail = |row: &mut CheckpointStats, status, reason: String| {
            row.status = status;
            row.completed_at = Some(SystemTime::now());
            row.duration_ms = Some(started.elapsed().as_millis() as u64);
            row.failure = Some(reason);
        };
        // Begin, and take the sources to ask, with no region restart in
        // between: one that comes later abandons this checkpoint.
        let (done_tx, done_rx) = oneshot::channel();
        let (generation, sources) = {
            let coord = self.coord.clone();
            let _restarts = coord.commit_lock.lock().await;
            if !coord.down.borrow().is_empty() {
                drop(_restarts);
                fail(
                    &mut row,
                    CheckpointStatus::Failed,
                    "a region is restarting".to_string(),
                );
                self.push_history(row);
                return Outcome::Aborted;
            }
            coord.begin(epoch, done_tx);
            (
                coord.generation.load(std::sync::atomic::Ordering::SeqCst),
                self.sources.lock().clone(),
            )
        };
        let barrier = Barrier {
            epoch,
            kind: BarrierKind::Checkpoint,
            mode: cfg.mode,
            full,
            aligned_timeout: cfg.aligned_timeout,
            triggered_at: Some(started),
        };
        for (node, subtask, tx) in &sources {
            let stop_at = self.catch_up.as_ref().and_then(|r| {
                r.sources
                    .iter()
                    .find(|s| s.node == *node && s.subtask == *subtask)
                    .map(|s| s.offset)
            });
            // A send fails only when the query is stopping.
            let _ = tx
                .send(SourceCommand {
                    barrier,
                    stop_at,
                    drain: for_flush,
                })
                .await;
        }
        let mut cancel = self.coord.cancel.subscribe();
        let waited = tokio::select! {
            r = tokio::time::timeout(cfg.timeout, done_rx) => match r {
                Ok(Ok(snaps)) => Some(Ok(snaps)),
                // Abandoned: a subtask failed, or the query stops.
                Ok(Err(_)) if !*self.coord.cancel.borrow() => {
                    fail(
                        &mut row,
                        CheckpointStatus::Failed,
                        "a subtask failed before acknowledging the checkpoint".to_string(),
                    );
                    self.push_history(row);
                    return Outcome::Aborted;
                }
                Ok(Err(_)) => None,
                Err(_) => Some(Err(())),
            },
            _ = cancel.wait_for(|c| *c) => None,
        };
        let snaps = match waited {
            Some(Ok(snaps)) => snaps,
            None => {
                fail(
                    &mut row,
                    CheckpointStatus::Failed,
                    self.coord.failure_message(),
                );
                self.push_history(row);
                return Outcome::Stopped;
            }
            Some(Err(())) => {
                let missing: Vec<String> = self
                    .coord
                    .missing_acks(epoch)
                    .into_iter()
                    .map(|(node, subtask)| {
                        format!(
                            "{} #{subtask}",
                            self.node_names.get(node).map_or("?", |n| n.as_str())
                        )
                    })
                    .collect();
                self.coord.abort(epoch);
                fail(
                    &mut row,
                    CheckpointStatus::Expired,
                    format!(
                        "checkpoint expired before completing (checkpoint_timeout = {:?}); not acknowledged by {}",
                        cfg.timeout,
                        missing.join(", ")
                    ),
                );
                tracing::warn!(query = %self.coord.query, epoch, missing = ?missing, "checkpoint expired");
                self.push_history(row);
                return Outcome::Failed;
            }
        };
        // No region may restart between here and the commit; one that did
        // since the trigger makes these snapshots a mix of two pasts.
        let coord = self.coord.clone();
        let commit_lock = coord.commit_lock.lock().await;
        if self
            .coord
            .generation
            .load(std::sync::atomic::Ordering::SeqCst)
            != generation
        {
            drop(commit_lock);
            fail(
                &mut row,
                CheckpointStatus::Failed,
                "a region restarted while the checkpoint was in progress".to_string(),
            );
            self.push_history(row);
            return Outcome::Aborted;
        }
        row.alignment_ms = snaps.iter().map(|s| s.alignment_ms).max().unwrap_or(0);
        row.timed_out_to_unaligned = snaps.iter().any(|s| s.timed_out_to_unaligned);
        row.mode = if snaps.iter().any(|s| s.unaligned) {
            CheckpointMode::Unaligned
        } else {
            CheckpointMode::Aligned
        };
        match self.persist(epoch, &cfg, triggered_at, &row, snaps).await {
            Ok(rec) => {
                row.status = CheckpointStatus::Completed;
                row.completed_at = Some(SystemTime::now());
                row.duration_ms = Some(rec.duration_ms);
                row.state_bytes = rec.state_bytes;
                row.incremental_bytes = rec.incremental_bytes;
                row.persisted_in_flight_bytes = rec.in_flight_bytes;
                self.push_history(row);
                self.last_completed = Some(epoch);
                self.catch_up = None;
                Outcome::Completed(Box::new(rec))
            }
            Err(e) => {
                tracing::warn!(query = %self.coord.query, epoch, error = %e, "checkpoint failed");
                fail(&mut row, CheckpointStatus::Failed, e.message());
                self.push_history(row);
                Outcome::Failed
            }
        }
    }

    /// Writes the state, then commits record and results in one batch.
    async fn persist(
        &mut self,
        epoch: u64,
        cfg: &CheckpointConfig,
        triggered_at: SystemTime,
        row: &CheckpointStats,
        snaps: Vec<SubtaskSnapshot>,
    ) -> ExecResult<CheckpointRecord> {
        let mut sources: Vec<SourceOffset> = snaps
            .iter()
            .filter_map(|s| {
                s.source_offset.map(|offset| SourceOffset {
                    node: s.node,
                    subtask: s.subtask,
                    offset,
                    splits: s.source_splits.clone(),
                })
            })
            .collect();
        sources.sort_by_key(|s| (s.node, s.subtask));
        let storage = self.storage.clone();
        let backend = self.backend;
        let previous = self.last_completed;
        let mut stores: Vec<(usize, usize)> = snaps
            .iter()
            .filter(|s| s.store.is_some())
            .map(|s| (s.node, s.subtask))
            .collect();
        stores.sort();
        // Nothing is written once the disk is down to its reserve.
        self.storage.store().check_space(0)?;
        let sizes = tokio::task::spawn_blocking(move || {
            storage.write_state(epoch, backend, previous, &snaps)
        })
        .await
        .map_err(|e| ExecError::internal(format!("checkpoint writer panicked: {e}")))??;

        // Bad records of the epochs up to this one, and the running counts.
        let discard = self.catch_up.is_some();
        let letters = match &self.coord.bad_records {
            Some(b) if !discard => b.take_through(epoch),
            Some(b) => {
                b.take_through(epoch);
                Vec::new()
            }
            None => Vec::new(),
        };
        let existing = self.storage.records()?;
        // After a fallback, the catch-up target counted the replayed ones.
        let (skipped_before, dead_before) = match &self.catch_up {
            Some(c) => (c.skipped_records, c.dead_letter_records),
            None => existing
                .iter()
                .rev()
                .find(|r| r.epoch < epoch)
                .map_or((0, 0), |r| (r.skipped_records, r.dead_letter_records)),
        };
        let dead_now = letters.iter().filter(|l| l.record.is_some()).count() as u64;
        let skipped_now = letters.len() as u64 - dead_now;

        let completed_at = SystemTime::now();
        let table_offsets = table_offsets(&sources, &self.node_tables);
        let mut record = CheckpointRecord {
            query_id: self.storage.query_id(),
            epoch,
            backend,
            mode: row.mode,
            timed_out_to_unaligned: row.timed_out_to_unaligned,
            triggered_at_ms: ms(triggered_at),
            completed_at_ms: ms(completed_at),
            duration_ms: completed_at
                .duration_since(triggered_at)
                .map_or(0, |d| d.as_millis() as u64),
            state_bytes: sizes.state_bytes,
            incremental_bytes: sizes.incremental_bytes,
            in_flight_bytes: sizes.in_flight_bytes,
            alignment_ms: row.alignment_ms,
            nodes: self.node_names.clone(),
            fingerprints: self.node_fingerprints.clone(),
            parallelism: self.node_parallelism.clone(),
            sources,
            skipped_records: skipped_before + skipped_now,
            dead_letter_records: dead_before + dead_now,
            stores,
            result_version: None,
            table_offsets,
            reemit: Vec::new(),
            retract_results: false,
            dir: None,
        };

        // Result changes of every epoch up to this one; after a fallback,
        // the replayed epochs up to the catch-up target are committed already.
        let mut commit = Commit::default();
        for (seq, letter) in letters.iter().filter(|l| l.record.is_some()).enumerate() {
            commit.checkpoint_puts.push((
                self.storage.dead_letter_key(epoch, seq),
                serde_json::to_vec(letter).expect("json"),
            ));
        }
        let mut applied = Vec::new();
        for staging in &self.staging {
            let staged = staging.take_through(epoch);
            if discard {
                record.result_version = Some(staging.table.version());
                continue;
            }
            let chunks: Vec<_> = staged.into_iter().map(|(_, c)| c).collect();
            record.result_version = Some(staging.table.version() + chunks.len() as u64);
            let writes = staging.table.prepare_commit(&chunks)?;
            commit.table_writes.extend(writes.iter().cloned());
            applied.push((staging.clone(), writes));
        }
        let mut keep: HashSet<u64> = existing
            .iter()
            .rev()
            .filter(|r| r.epoch != epoch)
            .take(cfg.retained.saturating_sub(1))
            .map(|r| r.epoch)
            .collect();
        keep.insert(epoch);
        commit.checkpoint_deletes = existing
            .iter()
            .filter(|r| !keep.contains(&r.epoch))
            .map(|r| self.storage.record_key(r.epoch))
            .collect();
        commit.checkpoint_puts.push((
            self.storage.record_key(epoch),
            serde_json::to_vec(&record).expect("json"),
        ));
        self.storage.store().commit(commit)?;
        for (staging, writes) in applied {
            staging.table.apply_committed(&writes)?;
        }
        // Their output of the epochs up to this one, also after a fallback:
        // a restored file sink deleted its parts of the replayed epochs.
        if !self.committers.is_empty() {
            let committers = self.committers.clone();
            tokio::task::spawn_blocking(move || {
                committers.iter().try_for_each(|c| c.commit(epoch))
            })
            .await
            .map_err(|e| ExecError::internal(format!("sink commit panicked: {e}")))??;
        }
        let storage = self.storage.clone();
        let mut kept: Vec<CheckpointRecord> = existing
            .into_iter()
            .filter(|r| r.epoch != epoch && keep.contains(&r.epoch))
            .collect();
        kept.push(record.clone());
        let _ = tokio::task::spawn_blocking(move || {
            storage.prune_dirs(&kept.iter().collect::<Vec<_>>())
        })
        .await;
        Ok(record)
    }
}

/// (log id, smallest offset) per table read, from the sources' offsets.
fn table_offsets(sources: &[SourceOffset], node_tables: &[Option<u64>]) -> Vec<(u64, u64)> {
    let mut out: std::collections::BTreeMap<u64, u64> = std::collections::BTreeMap::new();
    for s in sources {
        if let Some(Some(log)) = node_tables.get(s.node) {
            let o = out.entry(*log).or_insert(s.offset);
            *o = (*o).min(s.offset);
        }
    }
    out.into_iter().collect()
}
