//! The task of a file source subtask (`connector = 'file'`): reads its
//! splits in turns of one batch each, emits the rows as inserts, and ends
//! the stream when every split is read (downstream operators then close:
//! every window fires).
//!
//! Its checkpoint position is the number of rows it has emitted; resuming,
//! it reads the same splits in the same order and skips that many rows.
//! Each split has its own watermark and the subtask emits their minimum
//! over the splits not yet finished, so reading one split after another
//! never makes the later one's rows late. Barriers go after the rows
//! emitted so far (unaligned barriers too: a file can be read again), and
//! `FLUSH` does not wait for the files to be read.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::checkpointer::SourceCommand;
use super::coordinator::Coordinator;
use super::router::OutputRouter;
use super::source_task::WatermarkGenerator;
use super::task::TaskIds;
use crate::checkpoint::SubtaskSnapshot;
use crate::chunk::Chunk;
use crate::connectors::file::SplitReader;
use crate::error::{ExecError, ExecResult};
use crate::message::Message;
use crate::metrics::{batch_bytes, SubtaskMetrics, TimeState};
use crate::table::Table;

struct Split {
    reader: SplitReader,
    watermark: WatermarkGenerator,
    done: bool,
}

struct FileSourceTask {
    ids: TaskIds,
    splits: Vec<Split>,
    /// Next split to read from.
    turn: usize,
    /// Rows emitted since the start of the files.
    emitted: u64,
    /// Watermark last sent.
    sent_watermark: i64,
    /// The rest of a batch cut at a catch-up target: read next.
    pending: Option<(usize, Chunk)>,
    metrics: Arc<SubtaskMetrics>,
    router: OutputRouter,
}

impl FileSourceTask {
    /// The next batch in turn; `None` when every split is done.
    fn next_batch(&mut self) -> ExecResult<Option<(usize, Chunk)>> {
        if let Some(p) = self.pending.take() {
            return Ok(Some(p));
        }
        for _ in 0..self.splits.len() {
            let i = self.turn;
            self.turn = (self.turn + 1) % self.splits.len();
            let split = &mut self.splits[i];
            if split.done {
                continue;
            }
            match split.reader.next_batch()? {
                Some(batch) => return Ok(Some((i, Chunk::inserts(batch)))),
                None => split.done = true,
            }
        }
        Ok(None)
    }

    /// Skips the first `rows` rows (resuming from a checkpoint).
    fn skip(&mut self, rows: u64) -> ExecResult<()> {
        while self.emitted < rows {
            let Some((i, chunk)) = self.next_batch()? else {
                return Err(ExecError::internal(format!(
                    "file source: checkpoint position {rows} is past the end of the files ({} rows)",
                    self.emitted
                )));
            };
            let n = chunk.num_rows() as u64;
            let keep = (self.emitted + n).saturating_sub(rows);
            self.emitted += n - keep;
            let skipped = chunk.slice(0, (n - keep) as usize);
            self.splits[i].watermark.observe(&skipped)?;
            if keep > 0 {
                let rest = chunk.slice((n - keep) as usize, keep as usize);
                self.emit(i, rest)?;
            }
        }
        Ok(())
    }

    /// Queues rows of split `i`, then the watermark if it rose.
    fn emit(&mut self, i: usize, chunk: Chunk) -> ExecResult<()> {
        self.emitted += chunk.num_rows() as u64;
        self.metrics
            .record_in(chunk.num_rows(), batch_bytes(&chunk.batch));
        self.splits[i].watermark.observe(&chunk)?;
        self.router.enqueue_chunk(chunk)?;
        let wm = self
            .splits
            .iter()
            .filter(|s| !s.done)
            .map(|s| s.watermark.current())
            .min()
            .unwrap_or_else(|| {
                self.splits
                    .iter()
                    .map(|s| s.watermark.current())
                    .max()
                    .unwrap_or(i64::MIN)
            });
        if wm > self.sent_watermark {
            self.sent_watermark = wm;
            self.router.enqueue_broadcast(Message::Watermark(wm));
        }
        Ok(())
    }

    /// Reads and emits one batch, cut at `limit` rows in all (the rest
    /// comes next); `false` when every split is done.
    fn read_some(&mut self, limit: Option<u64>) -> ExecResult<bool> {
        let Some((i, chunk)) = self.next_batch()? else {
            return Ok(false);
        };
        let n = chunk.num_rows() as u64;
        match limit {
            Some(l) if self.emitted + n > l => {
                let head = l.saturating_sub(self.emitted) as usize;
                self.pending = Some((i, chunk.slice(head, n as usize - head)));
                self.emit(i, chunk.slice(0, head))?;
            }
            _ => self.emit(i, chunk)?,
        }
        Ok(true)
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    ids: TaskIds,
    table: Arc<Table>,
    parallelism: usize,
    resume_after: Option<u64>,
    router: OutputRouter,
    mut commands: mpsc::Receiver<SourceCommand>,
    coord: Arc<Coordinator>,
) -> ExecResult<()> {
    let source = table
        .file_source()
        .cloned()
        .ok_or_else(|| ExecError::internal("file source task over a table without files"))?;
    let metrics = coord.subtask_metrics((ids.node, ids.subtask));
    metrics.enter(TimeState::Busy);
    let schema = table.schema();
    let splits = source
        .splits_of(ids.subtask, parallelism)
        .into_iter()
        .map(|i| {
            Ok(Split {
                reader: source.reader(i, &schema)?,
                watermark: WatermarkGenerator::new(&table),
                done: false,
            })
        })
        .collect::<ExecResult<Vec<_>>>()?;
    let mut t = FileSourceTask {
        ids,
        splits,
        turn: 0,
        emitted: 0,
        sent_watermark: i64::MIN,
        pending: None,
        metrics: metrics.clone(),
        router,
    };
    let mut cancel = coord.cancel_receiver((ids.node, ids.subtask));
    if let Some(pos) = resume_after {
        t.skip(pos)?;
    }
    coord.set_task((ids.node, ids.subtask), super::TaskState::Running);
    let mut more = true;
    loop {
        if *cancel.borrow() {
            return Ok(());
        }
        // Barriers first: they go after what was emitted so far.
        loop {
            match commands.try_recv() {
                Ok(cmd) => {
                    if let Some(stop_at) = cmd.stop_at {
                        while t.emitted < stop_at && t.read_some(Some(stop_at))? {}
                    }
                    t.router.flush().await?;
                    coord.ack(
                        cmd.barrier.epoch,
                        SubtaskSnapshot {
                            node: t.ids.node,
                            subtask: t.ids.subtask,
                            source_offset: Some(t.emitted),
                            ..Default::default()
                        },
                    );
                    t.router.broadcast(Message::Barrier(cmd.barrier)).await?;
                }
                Err(mpsc::error::TryRecvError::Empty) => break,
                // The query is stopping.
                Err(mpsc::error::TryRecvError::Disconnected) => return Ok(()),
            }
        }
        if !more {
            break;
        }
        more = t.read_some(None)?;
        // Wait for room downstream (backpressure), or a barrier, or cancel.
        metrics.enter(TimeState::Backpressured);
        tokio::select! {
            r = t.router.flush() => r?,
            _ = cancel.changed() => {}
        }
        metrics.enter(TimeState::Busy);
    }
    t.router.flush().await?;
    t.router.broadcast(Message::EndOfStream).await?;
    coord.finish(SubtaskSnapshot {
        node: t.ids.node,
        subtask: t.ids.subtask,
        source_offset: Some(t.emitted),
        ..Default::default()
    });
    // Later checkpoints use this final snapshot.
    Ok(())
}
