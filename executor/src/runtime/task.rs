//! The task loop of an operator subtask: reads its input channels, handles
//! barriers, merges watermarks, calls the operator and routes its output.
//!
//! Checkpoints at this subtask:
//! - *aligned*: an input that delivered the barrier is blocked until every
//!   input did; then the operator snapshots and the barrier goes on. If that
//!   takes longer than the barrier's `aligned_timeout`, the subtask switches
//!   to unaligned for this checkpoint.
//! - *unaligned*: at the first barrier (which overtook the data queued in
//!   its channel) the operator snapshots and the barrier is put ahead of the
//!   subtask's queued output. The overtaken input, the unsent output, and
//!   whatever arrives on the other inputs before their barrier, are the
//!   checkpoint's channel state; processing never stops.
//!
//! The subtask acknowledges the checkpoint once every input delivered it.
//! While its output is blocked by backpressure it keeps watching its inputs
//! for barriers that jumped the queue.

use std::future::{poll_fn, Future};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::channel::{Received, Receiver};
use super::coordinator::Coordinator;
use super::router::OutputRouter;
use super::sink::SinkStaging;
use crate::checkpoint::{ChannelChunk, SubtaskSnapshot};
use crate::chunk::Chunk;
use crate::error::{ExecError, ExecResult};
use crate::failure::OnError;
use crate::message::{Barrier, CheckpointMode, Message};
use crate::metrics::{SubtaskMetrics, TimeState};
use crate::operator::{Operator, OperatorContext, Output, StateEntry, StateWriter};
use crate::state::{StatePlan, SubtaskStore};

/// Which subtask a task runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskIds {
    pub node: usize,
    pub subtask: usize,
}

/// What a subtask resumes from.
pub(crate) struct TaskRestore {
    /// In-flight input captured by an unaligned checkpoint: replayed first.
    pub channels: Vec<(usize, Chunk)>,
}

struct Input {
    index: usize,
    rx: Receiver,
    /// Blocked after delivering the barrier of the epoch being aligned.
    blocked: bool,
    finished: bool,
    watermark: i64,
    /// Said it is idle, and sent nothing since.
    idle: bool,
}

/// The checkpoint this subtask is in the middle of.
enum Checkpoint {
    Idle,
    Aligning {
        barrier: Barrier,
        since: Instant,
    },
    Unaligned {
        barrier: Barrier,
        since: Instant,
        /// Per input: its barrier has not arrived yet.
        waiting: Vec<bool>,
        entries: Vec<StateEntry>,
        store: Option<Arc<SubtaskStore>>,
        channel_state: Vec<ChannelChunk>,
        timed_out: bool,
    },
}

enum Event {
    Message(usize, Received),
    Flushed,
    /// No input has anything queued, and the operator holds output back.
    Drained,
    AlignmentTimeout,
    Canceled,
}

/// How long a finishing subtask waits for the cut of the checkpoint it
/// acknowledged last before it writes its final state (an abandoned
/// checkpoint is never cut; its store is thawed when it is abandoned).
const FINAL_SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

struct Task {
    metrics: Arc<SubtaskMetrics>,
    ctx: OperatorContext,
    ids: TaskIds,
    op: Box<dyn Operator>,
    inputs: Vec<Input>,
    router: OutputRouter,
    sink: Option<Arc<SinkStaging>>,
    coordinator: Arc<Coordinator>,
    /// The epoch of the last barrier this subtask passed (or restored
    /// from): what it outputs after that belongs to a later checkpoint.
    sealed_epoch: std::cell::Cell<u64>,
    out: Output,
    checkpoint: Checkpoint,
    current_wm: i64,
    start: usize,
    /// Told downstream it is idle, and sent nothing since.
    idle_sent: bool,
    /// The operator held output back since it was last flushed.
    unflushed: bool,
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    mut ctx: OperatorContext,
    ids: TaskIds,
    op: Box<dyn Operator>,
    channels: Vec<(usize, Receiver)>,
    router: OutputRouter,
    sink: Option<Arc<SinkStaging>>,
    restore: Option<TaskRestore>,
    state: Option<StatePlan>,
    coordinator: Arc<Coordinator>,
) -> ExecResult<()> {
    // Keyed state: a store linked from the checkpoint, or entries to restore.
    let (store, entries) = match state {
        Some(plan) => {
            let started = Instant::now();
            let restoring = plan.from.is_some();
            let ready = tokio::task::spawn_blocking(move || plan.prepare())
                .await
                .map_err(|e| ExecError::internal(format!("state restore panicked: {e}")))??;
            if restoring {
                tracing::info!(
                    query = %ctx.query, operator = %ctx.operator, subtask = ctx.subtask,
                    ms = started.elapsed().as_millis() as u64, loaded_entries = ready.1.len(),
                    "keyed state restored"
                );
            }
            ready
        }
        None => (None, Vec::new()),
    };
    ctx.state = store;
    let mut cancel = coordinator.cancel_receiver((ids.node, ids.subtask));
    let inputs = channels
        .into_iter()
        .map(|(index, rx)| Input {
            index,
            rx,
            blocked: false,
            finished: false,
            watermark: i64::MIN,
            idle: false,
        })
        .collect();
    let metrics = coordinator.subtask_metrics((ids.node, ids.subtask));
    let restored_epoch = ctx.restored_epoch.unwrap_or(0);
    let mut t = Task {
        metrics,
        ctx,
        ids,
        op,
        inputs,
        router,
        sink,
        coordinator,
        sealed_epoch: std::cell::Cell::new(restored_epoch),
        out: Output::default(),
        checkpoint: Checkpoint::Idle,
        current_wm: i64::MIN,
        start: 0,
        idle_sent: false,
        unflushed: false,
    };
    t.metrics.enter(TimeState::Busy);
    t.open(restore, entries)?;
    t.coordinator
        .set_task((t.ids.node, t.ids.subtask), super::TaskState::Running);
    loop {
        if t.inputs.iter().all(|i| i.finished) && !t.router.has_pending() {
            return t.finish().await;
        }
        // Waiting with output queued is backpressure; without, idleness.
        t.metrics.enter(if t.router.has_pending() {
            TimeState::Backpressured
        } else {
            TimeState::Idle
        });
        let event = t.next_event(&mut cancel).await;
        t.metrics.enter(TimeState::Busy);
        match event {
            Event::Canceled => return Ok(()),
            Event::Flushed => {}
            Event::Drained => t.flush()?,
            Event::AlignmentTimeout => t.alignment_timed_out()?,
            Event::Message(i, r) => t.on_message(i, r)?,
        }
    }
}

impl Task {
    fn open(&mut self, restore: Option<TaskRestore>, entries: Vec<StateEntry>) -> ExecResult<()> {
        let restored = restore.is_some();
        let mut replay = Vec::new();
        if let Some(r) = restore {
            self.op.restore(&self.ctx, entries)?;
            replay = r.channels;
        }
        self.op.open(&self.ctx, restored, &mut self.out)?;
        self.route()?;
        for (input, chunk) in replay {
            self.deliver(input, chunk)?;
        }
        Ok(())
    }

    async fn finish(mut self) -> ExecResult<()> {
        self.flush()?;
        self.op.close(&mut self.out)?;
        self.route()?;
        self.router.broadcast(Message::EndOfStream).await?;
        // After the last barrier this subtask passed: committed by the next
        // checkpoint, whose positions for finished sources are their final
        // ones. (Sealed into an earlier epoch, they were committed by a
        // checkpoint whose sources had acknowledged before the end, and a
        // restore from it replayed them.)
        self.seal(self.sealed_epoch.get() + 1);
        // The final state must not reach the store before the checkpoint
        // this subtask acknowledged last is cut from it: that checkpoint
        // would hold the state after `close` (windows already emitted).
        if let Some(store) = self.ctx.state.clone() {
            let deadline = std::time::Instant::now() + FINAL_SNAPSHOT_WAIT;
            while !store.can_evict() && std::time::Instant::now() < deadline {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        let (entries, store) = self.snapshot(true, None)?;
        self.coordinator.finish(SubtaskSnapshot {
            node: self.ids.node,
            subtask: self.ids.subtask,
            entries,
            store,
            ..Default::default()
        });
        Ok(())
    }

    /// The operator's snapshot for a checkpoint. With a store, the changed
    /// entries go into it now and the checkpointer cuts it; otherwise they
    /// travel with the acknowledgement (`full`: every entry). `epoch`:
    /// the barrier's, `None` for the final snapshot.
    fn snapshot(
        &mut self,
        full: bool,
        epoch: Option<u64>,
    ) -> ExecResult<(Vec<StateEntry>, Option<Arc<SubtaskStore>>)> {
        // What the operator held back goes out ahead of the barrier.
        self.flush()?;
        match self.ctx.state.clone() {
            Some(store) => {
                let mut state = StateWriter::new(false).at_epoch(epoch);
                self.op.snapshot(&mut state)?;
                store.write_snapshot(state.into_entries())?;
                Ok((Vec::new(), Some(store)))
            }
            None => {
                let mut state = StateWriter::new(full).at_epoch(epoch);
                self.op.snapshot(&mut state)?;
                Ok((state.into_entries(), None))
            }
        }
    }

    /// Has the operator emit what it held back, and queues it.
    fn flush(&mut self) -> ExecResult<()> {
        if std::mem::take(&mut self.unflushed) {
            self.op.flush(&mut self.out)?;
            self.route()?;
        }
        Ok(())
    }

    /// Queues the operator's output in the router.
    fn route(&mut self) -> ExecResult<()> {
        if !self.out.chunks.is_empty() || self.out.watermark.is_some() {
            // Rows or a watermark: active again downstream.
            self.idle_sent = false;
        }
        let late = std::mem::take(&mut self.out.late_dropped);
        if late > 0 {
            self.metrics
                .late_records_dropped
                .fetch_add(late, std::sync::atomic::Ordering::Relaxed);
        }
        for chunk in self.out.take_chunks() {
            self.router.enqueue_chunk(chunk)?;
        }
        if let Some(wm) = self.out.watermark.take() {
            self.router.enqueue_broadcast(Message::Watermark(wm));
        }
        Ok(())
    }

    /// The subtask's output and bad records so far belong to `epoch`.
    fn seal(&self, epoch: u64) {
        self.sealed_epoch.set(self.sealed_epoch.get().max(epoch));
        if let Some(s) = &self.sink {
            s.seal(self.ids.subtask, epoch);
        }
        if let Some(b) = &self.coordinator.bad_records {
            b.seal((self.ids.node, self.ids.subtask), epoch);
        }
    }

    /// Hands a chunk to the operator, or, at a sink, stages it for commit.
    fn deliver(&mut self, input: usize, chunk: Chunk) -> ExecResult<()> {
        let (rows, bytes) = (chunk.num_rows(), crate::metrics::batch_bytes(&chunk.batch));
        self.metrics.record_in(rows, bytes);
        match &self.sink {
            Some(s) => {
                // What a result sink emits goes into its table.
                self.metrics.record_out(rows, bytes);
                s.push(self.ids.subtask, chunk)
            }
            None => {
                self.apply(input, chunk)?;
                self.unflushed |= std::mem::take(&mut self.out.held);
                self.route()?;
            }
        }
        Ok(())
    }

    /// Runs the operator on a chunk. When it rejects the chunk for bad
    /// data and the query skips or dead-letters bad records, the chunk is
    /// split in halves until the bad rows are alone, and those are taken
    /// out; the other rows go through in their order.
    fn apply(&mut self, input: usize, chunk: Chunk) -> ExecResult<()> {
        let err = match self.op.on_chunk(input, chunk.clone(), &mut self.out) {
            Ok(()) => return Ok(()),
            Err(ExecError::Rejected(e)) => *e,
            Err(e) => return Err(e),
        };
        let Some(bad) = self.coordinator.bad_records.clone() else {
            return Err(err);
        };
        let action = bad.on_error();
        if action == OnError::Fail || err.domain() != crate::ErrorDomain::User {
            return Err(err);
        }
        let n = chunk.num_rows();
        if n <= 1 {
            bad.take(
                &self.ctx.query,
                &self.ctx.operator,
                (self.ids.node, self.ids.subtask),
                &chunk,
                &err,
                action,
            );
            return Ok(());
        }
        let half = n / 2;
        self.apply(input, chunk.slice(0, half))?;
        self.apply(input, chunk.slice(half, n - half))
    }

    /// When the aligned checkpoint in progress (or one whose barrier is
    /// still queued in an input) times out into unaligned.
    fn alignment_deadline(&self) -> Option<Instant> {
        match &self.checkpoint {
            Checkpoint::Aligning { barrier, .. } => barrier.alignment_deadline(),
            Checkpoint::Unaligned { .. } => None,
            Checkpoint::Idle => self
                .inputs
                .iter()
                .filter(|i| !i.finished)
                .filter_map(|i| i.rx.queued_barrier())
                .filter_map(|b| b.alignment_deadline())
                .min(),
        }
    }

    /// Waits for the next thing to do. With output queued, only its
    /// progress and barriers that jumped the queue are looked at.
    async fn next_event(&mut self, cancel: &mut watch::Receiver<bool>) -> Event {
        let mut deadline = self.alignment_deadline();
        let mut cancel_fut = std::pin::pin!(cancel.wait_for(|c| *c));
        let far = || tokio::time::Instant::now() + Duration::from_secs(86_400);
        let mut timeout = std::pin::pin!(tokio::time::sleep_until(
            deadline.map_or_else(far, tokio::time::Instant::from_std)
        ));
        let n = self.inputs.len();
        poll_fn(|cx| {
            if cancel_fut.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::Canceled);
            }
            // A barrier may have arrived in a queue since the last poll.
            let now_deadline = self.alignment_deadline();
            if now_deadline != deadline {
                deadline = now_deadline;
                timeout
                    .as_mut()
                    .reset(deadline.map_or_else(far, tokio::time::Instant::from_std));
            }
            if deadline.is_some() && timeout.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Event::AlignmentTimeout);
            }
            if self.router.has_pending() {
                match self.router.poll_flush(cx) {
                    Poll::Ready(Ok(())) => return Poll::Ready(Event::Flushed),
                    Poll::Ready(Err(_)) => return Poll::Ready(Event::Canceled),
                    Poll::Pending => {}
                }
                for i in 0..n {
                    let input = &mut self.inputs[i];
                    if input.finished {
                        continue;
                    }
                    if input.rx.poll_priority(cx).is_ready() {
                        if let Poll::Ready(Some(r)) = input.rx.poll_recv(cx) {
                            return Poll::Ready(Event::Message(i, r));
                        }
                    }
                }
                return Poll::Pending;
            }
            for k in 0..n {
                let i = (self.start + k) % n;
                let input = &mut self.inputs[i];
                if input.blocked || input.finished {
                    // A blocked input may still hold a barrier that jumped
                    // its queue (an upstream switched to unaligned).
                    if input.blocked && input.rx.poll_priority(cx).is_ready() {
                        if let Poll::Ready(Some(r)) = input.rx.poll_recv(cx) {
                            return Poll::Ready(Event::Message(i, r));
                        }
                    }
                    continue;
                }
                match input.rx.poll_recv(cx) {
                    Poll::Ready(Some(r)) => {
                        self.start = (i + 1) % n;
                        return Poll::Ready(Event::Message(i, r));
                    }
                    Poll::Ready(None) => {
                        self.start = (i + 1) % n;
                        return Poll::Ready(Event::Message(i, Received::Msg(Message::EndOfStream)));
                    }
                    Poll::Pending => {}
                }
            }
            if self.unflushed {
                // Nothing queued: what the operator held back goes now.
                return Poll::Ready(Event::Drained);
            }
            Poll::Pending
        })
        .await
    }

    fn on_message(&mut self, i: usize, r: Received) -> ExecResult<()> {
        match r {
            Received::Priority { barrier, overtaken } => {
                self.on_priority_barrier(i, barrier, overtaken)
            }
            Received::Msg(Message::Data(chunk)) => {
                self.inputs[i].idle = false;
                if let Checkpoint::Unaligned {
                    waiting,
                    channel_state,
                    ..
                } = &mut self.checkpoint
                {
                    if waiting[i] {
                        channel_state.push(ChannelChunk {
                            node: self.ids.node,
                            subtask: self.ids.subtask,
                            input: self.inputs[i].index,
                            chunk: chunk.clone(),
                            from_sender: false,
                        });
                    }
                }
                self.deliver(self.inputs[i].index, chunk)
            }
            Received::Msg(Message::Watermark(wm)) => {
                self.inputs[i].watermark = self.inputs[i].watermark.max(wm);
                self.inputs[i].idle = false;
                self.merge_watermarks()
            }
            Received::Msg(Message::Idle) => {
                self.inputs[i].idle = true;
                self.merge_watermarks()?;
                // Idle as a whole when every input is: say so downstream.
                if !self.idle_sent && self.inputs.iter().all(|i| i.idle || i.finished) {
                    self.idle_sent = true;
                    self.router.enqueue_broadcast(Message::Idle);
                }
                Ok(())
            }
            Received::Msg(Message::Barrier(b)) => self.on_aligned_barrier(i, b),
            Received::Msg(Message::EndOfStream) => {
                self.inputs[i].finished = true;
                self.inputs[i].blocked = false;
                if let Checkpoint::Unaligned { waiting, .. } = &mut self.checkpoint {
                    waiting[i] = false;
                }
                // An ended input no longer holds the watermark back.
                self.merge_watermarks()?;
                self.progress()
            }
        }
    }

    /// The watermark is the minimum over the inputs that have not ended and
    /// are not idle; the operator hears of it when it rises.
    fn merge_watermarks(&mut self) -> ExecResult<()> {
        let Some(min) = self
            .inputs
            .iter()
            .filter(|i| !i.finished && !i.idle)
            .map(|i| i.watermark)
            .min()
        else {
            return Ok(());
        };
        if min > self.current_wm {
            self.current_wm = min;
            self.metrics
                .input_watermark
                .store(min, std::sync::atomic::Ordering::Relaxed);
            self.op.on_watermark(min, &mut self.out)?;
            self.route()?;
        }
        Ok(())
    }

    fn on_aligned_barrier(&mut self, i: usize, b: Barrier) -> ExecResult<()> {
        match &mut self.checkpoint {
            Checkpoint::Idle if b.mode == CheckpointMode::Unaligned => {
                // An unaligned barrier that did not need to jump a queue.
                return self.on_priority_barrier(i, b, Vec::new());
            }
            Checkpoint::Idle => {
                self.checkpoint = Checkpoint::Aligning {
                    barrier: b,
                    since: Instant::now(),
                }
            }
            Checkpoint::Aligning { barrier, .. } if barrier.epoch != b.epoch => {
                return Err(ExecError::internal(format!(
                    "barrier {} arrived while aligning {}",
                    b.epoch, barrier.epoch
                )))
            }
            Checkpoint::Aligning { .. } => {}
            Checkpoint::Unaligned {
                barrier, waiting, ..
            } => {
                if barrier.epoch != b.epoch {
                    return Err(ExecError::internal(format!(
                        "barrier {} arrived during unaligned checkpoint {}",
                        b.epoch, barrier.epoch
                    )));
                }
                // An upstream kept this checkpoint aligned.
                waiting[i] = false;
                return self.progress();
            }
        }
        self.inputs[i].blocked = true;
        self.progress()
    }

    fn on_priority_barrier(
        &mut self,
        i: usize,
        b: Barrier,
        overtaken: Vec<Chunk>,
    ) -> ExecResult<()> {
        if let Checkpoint::Aligning { barrier, .. } = &self.checkpoint {
            if barrier.epoch == b.epoch {
                // An upstream switched this checkpoint to unaligned.
                self.switch_to_unaligned()?;
            }
        }
        if matches!(self.checkpoint, Checkpoint::Idle) {
            self.start_unaligned(b, false)?;
        }
        let node = self.ids.node;
        let subtask = self.ids.subtask;
        let input = self.inputs[i].index;
        let Checkpoint::Unaligned {
            barrier,
            waiting,
            channel_state,
            ..
        } = &mut self.checkpoint
        else {
            return Err(ExecError::internal(
                "unaligned barrier during another checkpoint",
            ));
        };
        if barrier.epoch != b.epoch {
            return Err(ExecError::internal(format!(
                "barrier {} arrived during unaligned checkpoint {}",
                b.epoch, barrier.epoch
            )));
        }
        waiting[i] = false;
        channel_state.extend(overtaken.into_iter().map(|chunk| ChannelChunk {
            node,
            subtask,
            input,
            chunk,
            from_sender: false,
        }));
        self.progress()
    }

    /// Snapshot now, and put the barrier ahead of the queued output.
    fn start_unaligned(&mut self, b: Barrier, timed_out: bool) -> ExecResult<()> {
        let (entries, store) = self.snapshot(b.full, Some(b.epoch))?;
        self.seal(b.epoch);
        let forward = Barrier {
            mode: CheckpointMode::Unaligned,
            ..b
        };
        let channel_state = self.router.send_priority_barrier(forward)?;
        self.checkpoint = Checkpoint::Unaligned {
            barrier: forward,
            since: Instant::now(),
            waiting: self.inputs.iter().map(|i| !i.finished).collect(),
            entries,
            store,
            channel_state,
            timed_out,
        };
        Ok(())
    }

    /// The aligned checkpoint is older than its timeout: switch to unaligned,
    /// also when its barrier is still queued behind data in an input.
    fn alignment_timed_out(&mut self) -> ExecResult<()> {
        if let Checkpoint::Idle = self.checkpoint {
            let queued = self
                .inputs
                .iter()
                .filter(|i| !i.finished)
                .filter_map(|i| i.rx.queued_barrier())
                .min_by_key(|b| b.epoch);
            let Some(barrier) = queued else {
                return Ok(());
            };
            self.checkpoint = Checkpoint::Aligning {
                barrier,
                since: Instant::now(),
            };
        }
        self.switch_to_unaligned()
    }

    /// Alignment took too long (or an upstream switched): continue this
    /// checkpoint unaligned.
    fn switch_to_unaligned(&mut self) -> ExecResult<()> {
        let Checkpoint::Aligning { barrier, since } = self.checkpoint else {
            return Ok(());
        };
        self.start_unaligned(barrier, true)?;
        let node = self.ids.node;
        let subtask = self.ids.subtask;
        if let Checkpoint::Unaligned {
            waiting,
            channel_state,
            since: started,
            ..
        } = &mut self.checkpoint
        {
            *started = since;
            for (k, input) in self.inputs.iter_mut().enumerate() {
                if input.blocked {
                    // Its barrier came; what is queued behind it is after.
                    input.blocked = false;
                    waiting[k] = false;
                } else if !input.finished {
                    if let Some(overtaken) = input.rx.pull_barrier_forward(barrier.epoch) {
                        waiting[k] = false;
                        channel_state.extend(overtaken.into_iter().map(|chunk| ChannelChunk {
                            node,
                            subtask,
                            input: input.index,
                            chunk,
                            from_sender: false,
                        }));
                    }
                }
            }
        }
        self.progress()
    }

    /// Completes the current checkpoint at this subtask if every input
    /// delivered its barrier.
    fn progress(&mut self) -> ExecResult<()> {
        match &self.checkpoint {
            Checkpoint::Idle => Ok(()),
            Checkpoint::Aligning { barrier, since } => {
                if !self.inputs.iter().all(|i| i.blocked || i.finished) {
                    return Ok(());
                }
                let barrier = *barrier;
                let alignment_ms = since.elapsed().as_millis() as u64;
                let (entries, store) = self.snapshot(barrier.full, Some(barrier.epoch))?;
                self.seal(barrier.epoch);
                self.coordinator.ack(
                    barrier.epoch,
                    SubtaskSnapshot {
                        node: self.ids.node,
                        subtask: self.ids.subtask,
                        entries,
                        store,
                        alignment_ms,
                        ..Default::default()
                    },
                );
                self.router.enqueue_broadcast(Message::Barrier(barrier));
                for i in self.inputs.iter_mut() {
                    i.blocked = false;
                }
                self.checkpoint = Checkpoint::Idle;
                Ok(())
            }
            Checkpoint::Unaligned { waiting, .. } => {
                if waiting.iter().any(|w| *w) {
                    return Ok(());
                }
                let Checkpoint::Unaligned {
                    barrier,
                    since,
                    entries,
                    store,
                    channel_state,
                    timed_out,
                    ..
                } = std::mem::replace(&mut self.checkpoint, Checkpoint::Idle)
                else {
                    unreachable!("matched above")
                };
                self.coordinator.ack(
                    barrier.epoch,
                    SubtaskSnapshot {
                        node: self.ids.node,
                        subtask: self.ids.subtask,
                        entries,
                        store,
                        alignment_ms: since.elapsed().as_millis() as u64,
                        channel_state,
                        timed_out_to_unaligned: timed_out,
                        unaligned: true,
                        source_offset: None,
                        source_splits: None,
                    },
                );
                Ok(())
            }
        }
    }
}
