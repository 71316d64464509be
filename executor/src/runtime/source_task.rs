//! The task of a table source subtask: the table's contents at start (or,
//! resuming from a checkpoint, nothing but the changes after the
//! checkpointed log offset), then its changes.
//!
//! On an aligned barrier the source emits what it has read, then the
//! barrier (for `FLUSH`, first every change visible at that moment); the
//! offset reached is its part of the checkpoint. On an unaligned one it records the offset read so far and
//! puts the barrier ahead of its queued output, which becomes channel state.
//! After a fallback to an older checkpoint the source first replays up to
//! exactly the offsets of the newer (already committed) one, where the
//! first barrier goes.

use std::future::poll_fn;
use std::sync::Arc;
use std::task::Poll;

use tokio::sync::mpsc;

use super::checkpointer::SourceCommand;
use super::coordinator::Coordinator;
use super::router::OutputRouter;
use super::source_split::SourceSplit;
use super::task::TaskIds;
use super::SOURCE_CHUNK_ROWS;
use crate::checkpoint::SubtaskSnapshot;
use crate::chunk::Chunk;
use crate::error::ExecResult;
use crate::message::{CheckpointMode, Message};
use crate::metrics::{batch_bytes, SubtaskMetrics, TimeState};
use crate::table::{Table, TableReader, TableSnapshot};
use datafusion::arrow::array::AsArray;
use datafusion::arrow::compute::{cast, max};
use datafusion::arrow::datatypes::{DataType, Int64Type, TimeUnit};
use datafusion::physical_expr::PhysicalExpr;
use std::sync::atomic::Ordering;

/// Rows of a chunk not yet handed to the router, handed over one piece of
/// at most [`SOURCE_CHUNK_ROWS`] at a time, so that the output queue stays
/// short and a barrier never waits behind a whole table.
#[derive(Default)]
struct Unsent {
    chunks: std::collections::VecDeque<Chunk>,
}

impl Unsent {
    fn push(&mut self, chunk: Chunk) {
        if !chunk.is_empty() {
            self.chunks.push_back(chunk);
        }
    }

    fn is_empty(&self) -> bool {
        self.chunks.is_empty()
    }

    fn rows(&self) -> u64 {
        self.chunks.iter().map(|c| c.num_rows() as u64).sum()
    }

    /// Queues the next piece in the router, then the watermark it raised.
    fn enqueue_next(
        &mut self,
        router: &mut OutputRouter,
        watermarks: &mut WatermarkGenerator,
    ) -> ExecResult<()> {
        let Some(chunk) = self.chunks.pop_front() else {
            return Ok(());
        };
        let n = chunk.num_rows();
        let piece = if n <= SOURCE_CHUNK_ROWS {
            chunk
        } else {
            let head = chunk.slice(0, SOURCE_CHUNK_ROWS);
            self.chunks
                .push_front(chunk.slice(SOURCE_CHUNK_ROWS, n - SOURCE_CHUNK_ROWS));
            head
        };
        let raised = watermarks.observe(&piece)?;
        router.enqueue_chunk(piece)?;
        if let Some(wm) = raised {
            router.enqueue_broadcast(Message::Watermark(wm));
        }
        Ok(())
    }

    /// Everything still unsent, as whole chunks (channel state).
    fn take_all(&mut self) -> Vec<Chunk> {
        self.chunks.drain(..).collect()
    }
}

/// The watermark of a source subtask over a table with `WATERMARK FOR`:
/// the largest value of the watermark expression over the rows emitted so
/// far, in epoch milliseconds.
pub(crate) struct WatermarkGenerator {
    expr: Option<Arc<dyn PhysicalExpr>>,
    current: i64,
}

impl WatermarkGenerator {
    pub(crate) fn new(table: &Table) -> Self {
        WatermarkGenerator {
            expr: table.watermark_expr(),
            current: i64::MIN,
        }
    }

    /// The watermark so far (`i64::MIN`: none yet).
    pub(crate) fn current(&self) -> i64 {
        self.current
    }

    /// The new watermark, if the rows of `chunk` raise it.
    pub(crate) fn observe(&mut self, chunk: &Chunk) -> ExecResult<Option<i64>> {
        let Some(expr) = &self.expr else {
            return Ok(None);
        };
        let values = expr.evaluate(&chunk.batch)?.into_array(chunk.num_rows())?;
        let millis = cast(
            &cast(&values, &DataType::Timestamp(TimeUnit::Millisecond, None))?,
            &DataType::Int64,
        )?;
        let Some(max) = max(millis.as_primitive::<Int64Type>()) else {
            return Ok(None);
        };
        if max <= self.current {
            return Ok(None);
        }
        self.current = max;
        Ok(Some(max))
    }
}

enum Wake {
    Command(Option<SourceCommand>),
    Flushed,
    Data,
    /// No rows for `source_idle_timeout`.
    Idle,
    Cancel,
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    ids: TaskIds,
    table: Arc<Table>,
    resume_after: Option<u64>,
    mut hold_at: Option<u64>,
    split: Option<SourceSplit>,
    mut router: OutputRouter,
    mut commands: mpsc::Receiver<SourceCommand>,
    coord: Arc<Coordinator>,
    idle_after: Option<std::time::Duration>,
) -> ExecResult<()> {
    let mut cancel = coord.cancel_receiver((ids.node, ids.subtask));
    let metrics = coord.subtask_metrics((ids.node, ids.subtask));
    metrics.enter(TimeState::Busy);
    let mut watermarks = WatermarkGenerator::new(&table);
    let mut unsent = Unsent::default();
    // The table's contents when a fresh reader starts, read a batch at a
    // time before the log after them.
    let mut snapshot = None;
    let mut reader = match resume_after {
        // A source new to an upgraded plan reads its input from the start:
        // the contents now, when the log no longer holds all of it.
        Some(0) if hold_at.is_none() && !table.log_holds_after(0)? => {
            let (contents, reader) = table.reader()?;
            snapshot = Some(contents);
            reader
        }
        Some(pos) => table.reader_from(pos)?,
        None => {
            let (contents, reader) = table.reader()?;
            snapshot = Some(contents);
            reader
        }
    };
    let mut watch = table.version_watch();
    coord.set_task((ids.node, ids.subtask), super::TaskState::Running);
    // When rows were last emitted, and whether downstream was told idle.
    let mut active_at = tokio::time::Instant::now();
    let mut idle = false;
    loop {
        // Read more only when the previous output is out (backpressure).
        if !router.has_pending() {
            if !unsent.is_empty() {
                unsent.enqueue_next(&mut router, &mut watermarks)?;
                active_at = tokio::time::Instant::now();
                idle = false;
                continue;
            }
            if pull_snapshot(&mut snapshot, &mut unsent, split.as_ref(), &metrics)? {
                continue;
            }
            let limit = hold_at.unwrap_or(u64::MAX);
            if reader.has_more() && reader.position() < limit {
                for c in read(&mut reader, limit, split.as_ref(), &metrics)? {
                    unsent.push(c);
                }
                continue;
            }
        }
        let pos = reader.position();
        let pending = router.has_pending();
        // For source lag (computed when read): the read position, and the
        // rows read but still waiting to be emitted.
        metrics.read_position.store(pos, Ordering::Relaxed);
        metrics
            .pending_records
            .store(unsent.rows(), Ordering::Relaxed);
        metrics.enter(if pending {
            TimeState::Backpressured
        } else {
            TimeState::Idle
        });
        let wake = tokio::select! {
            c = commands.recv() => Wake::Command(c),
            r = poll_fn(|cx| if pending { router.poll_flush(cx) } else { Poll::Pending }) => {
                r?;
                Wake::Flushed
            }
            _ = async { watch.wait_for(|v| *v > pos).await.is_ok() }, if !pending => Wake::Data,
            _ = async { cancel.wait_for(|c| *c).await.is_ok() } => Wake::Cancel,
            _ = async {
                if let Some(after) = idle_after {
                    tokio::time::sleep_until(active_at + after).await
                }
            }, if idle_after.is_some() && !idle && !pending => Wake::Idle,
        };
        metrics.enter(TimeState::Busy);
        match wake {
            Wake::Command(None) | Wake::Cancel => return Ok(()),
            Wake::Command(Some(cmd)) => {
                let unaligned = cmd.barrier.mode == CheckpointMode::Unaligned
                    && cmd.stop_at.is_none()
                    && !cmd.drain;
                if unaligned {
                    // Read but unsent: goes out after the barrier, so it is
                    // in flight for this checkpoint, like the queued output.
                    while pull_snapshot(&mut snapshot, &mut unsent, split.as_ref(), &metrics)? {}
                    for c in unsent.take_all() {
                        router.enqueue_chunk(c)?;
                    }
                    let channel_state = router.send_priority_barrier(cmd.barrier)?;
                    coord.ack(
                        cmd.barrier.epoch,
                        SubtaskSnapshot {
                            node: ids.node,
                            subtask: ids.subtask,
                            source_offset: Some(reader.position()),
                            channel_state,
                            unaligned: true,
                            ..Default::default()
                        },
                    );
                } else {
                    let limit = match (cmd.stop_at, cmd.drain) {
                        (Some(limit), _) => limit,
                        (None, true) => u64::MAX,
                        // Only what was read already goes before the barrier.
                        (None, false) => reader.position(),
                    };
                    loop {
                        while !unsent.is_empty() {
                            unsent.enqueue_next(&mut router, &mut watermarks)?;
                            router.flush().await?;
                        }
                        if !pull_snapshot(&mut snapshot, &mut unsent, split.as_ref(), &metrics)? {
                            break;
                        }
                    }
                    drain(
                        &mut reader,
                        &mut router,
                        limit,
                        split.as_ref(),
                        &metrics,
                        &mut watermarks,
                    )
                    .await?;
                    coord.ack(
                        cmd.barrier.epoch,
                        SubtaskSnapshot {
                            node: ids.node,
                            subtask: ids.subtask,
                            source_offset: Some(reader.position().min(limit)),
                            ..Default::default()
                        },
                    );
                    router.broadcast(Message::Barrier(cmd.barrier)).await?;
                }
                hold_at = None;
            }
            Wake::Idle => {
                idle = true;
                router.enqueue_broadcast(Message::Idle);
            }
            Wake::Flushed | Wake::Data => {}
        }
    }
}

/// Reads the next batch of the starting contents, this subtask's share of
/// it, into `unsent`. False once they are all read.
fn pull_snapshot(
    snapshot: &mut Option<TableSnapshot>,
    unsent: &mut Unsent,
    split: Option<&SourceSplit>,
    metrics: &SubtaskMetrics,
) -> ExecResult<bool> {
    let Some(contents) = snapshot else {
        return Ok(false);
    };
    let Some(chunk) = contents.next_chunk()? else {
        *snapshot = None;
        return Ok(false);
    };
    let chunk = match split {
        Some(s) => s.keep(chunk, 0)?,
        None => chunk,
    };
    metrics.record_in(chunk.num_rows(), batch_bytes(&chunk.batch));
    unsent.push(chunk);
    Ok(true)
}

/// The next changes up to `limit`, this subtask's share of them.
fn read(
    reader: &mut TableReader,
    limit: u64,
    split: Option<&SourceSplit>,
    metrics: &SubtaskMetrics,
) -> ExecResult<Vec<Chunk>> {
    let entries = reader.read_entries_up_to(limit)?;
    let chunks: Vec<Chunk> = match split {
        None => entries.into_iter().map(|(_, c)| c).collect(),
        Some(s) => entries
            .into_iter()
            .map(|(offset, c)| s.keep(c, offset))
            .collect::<ExecResult<_>>()?,
    };
    for c in &chunks {
        metrics.record_in(c.num_rows(), batch_bytes(&c.batch));
    }
    Ok(chunks)
}

/// Emits everything visible up to `limit`, waiting for channel room.
async fn drain(
    reader: &mut TableReader,
    router: &mut OutputRouter,
    limit: u64,
    split: Option<&SourceSplit>,
    metrics: &SubtaskMetrics,
    watermarks: &mut WatermarkGenerator,
) -> ExecResult<()> {
    router.flush().await?;
    while reader.has_more() && reader.position() < limit {
        let before = reader.position();
        let chunks = read(reader, limit, split, metrics)?;
        if reader.position() == before {
            break;
        }
        let mut unsent = Unsent::default();
        for c in chunks {
            unsent.push(c);
        }
        while !unsent.is_empty() {
            unsent.enqueue_next(router, watermarks)?;
            router.flush().await?;
        }
    }
    Ok(())
}
