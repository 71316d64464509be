//! The task of a source subtask over a connector (`file`, `nexmark`,
//! `datagen`; `connectors/`): reads its splits in turns of one batch each,
//! emits the rows as inserts, and ends the stream when every split is done
//! (downstream operators then close: every window fires). A source without
//! an end runs until the query stops.
//!
//! Its checkpoint position is the position of each split it reads
//! (`SubtaskSnapshot::source_splits`; the offset is their sum, a progress
//! figure). Resuming, at any parallelism, it opens the splits it now owns
//! after the positions of the checkpoint, merged over the subtasks that
//! took it (a generator starts there, a file is read again from its start
//! and the rows before it are dropped). A checkpoint from before positions
//! were kept per split resumes from the subtask's row count, at the same
//! parallelism only. Each split has its own watermark and the subtask emits
//! their minimum over the splits not yet finished, so reading one split
//! after another never makes the later one's rows late. Barriers go after
//! the rows emitted so far (unaligned barriers too: the rows can be
//! produced again), and `FLUSH` does not wait for the source to end. A
//! connector with a rate (`rows_per_second`) has its batches paced;
//! barriers are served while it waits.
//!
//! After a fallback to an older checkpoint the subtask first catches up to
//! the newer one: it emits exactly the rows the newer checkpoint covers
//! (without raising the watermark: their order may differ from the run that
//! emitted them), then holds until the first barrier, which carries that
//! checkpoint's epoch.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::checkpointer::SourceCommand;
use super::coordinator::Coordinator;
use super::router::OutputRouter;
use super::source_task::WatermarkGenerator;
use super::task::TaskIds;
use crate::checkpoint::SubtaskSnapshot;
use crate::chunk::Chunk;
use crate::connectors::{SourceConnector, SplitPositions, SplitRead};
use crate::error::{ExecError, ExecResult};
use crate::message::Message;
use crate::metrics::{batch_bytes, SubtaskMetrics, TimeState};
use crate::table::Table;

/// Where a connector source subtask starts.
#[derive(Debug, Clone)]
pub(crate) enum SourceResume {
    /// At the beginning of its splits.
    Start,
    /// A checkpoint from before positions were kept per split: the rows
    /// this subtask had emitted (at the same parallelism).
    Legacy(u64),
    /// The positions of the splits, merged over the checkpoint's subtasks.
    Splits(Arc<SplitPositions>),
}

impl SourceResume {
    fn positions(
        &self,
        connector: &dyn SourceConnector,
        ids: TaskIds,
        parallelism: usize,
        schema: &SchemaRef,
    ) -> ExecResult<Arc<SplitPositions>> {
        Ok(match self {
            SourceResume::Start => Arc::new(SplitPositions::new()),
            SourceResume::Legacy(rows) => {
                Arc::new(connector.legacy_positions(ids.subtask, parallelism, schema, *rows)?)
            }
            SourceResume::Splits(p) => p.clone(),
        })
    }
}

struct Split {
    reader: Box<dyn SplitRead>,
    watermark: WatermarkGenerator,
    done: bool,
}

/// Pacing of a source with a rate.
struct Pace {
    rows_per_second: f64,
    since: Instant,
    /// Rows emitted since `since`.
    rows: u64,
}

impl Pace {
    /// When the next batch may go, if not now.
    fn wait_until(&self) -> Option<Instant> {
        let due = self.since
            + std::time::Duration::from_secs_f64(self.rows as f64 / self.rows_per_second);
        (due > Instant::now()).then_some(due)
    }
}

struct ConnectorSourceTask {
    ids: TaskIds,
    splits: Vec<Split>,
    /// Next split to read from.
    turn: usize,
    /// Watermark last sent.
    sent_watermark: i64,
    pace: Option<Pace>,
    /// Catching up to a newer checkpoint: the splits hold at its positions
    /// until the first barrier.
    catching_up: bool,
    /// Every split holds: waiting for that barrier.
    caught_up: bool,
    metrics: Arc<SubtaskMetrics>,
    router: OutputRouter,
}

impl ConnectorSourceTask {
    /// The next batch in turn; `None` when every split is done (or holds,
    /// while catching up).
    fn next_batch(&mut self) -> ExecResult<Option<(usize, Chunk)>> {
        for _ in 0..self.splits.len() {
            let i = self.turn;
            self.turn = (self.turn + 1) % self.splits.len();
            let split = &mut self.splits[i];
            if split.done {
                continue;
            }
            match split.reader.next_batch()? {
                Some(batch) => return Ok(Some((i, Chunk::inserts(batch)))),
                None if self.catching_up => {}
                None => split.done = true,
            }
        }
        Ok(None)
    }

    /// Drops the first `rows` rows of split `i` (emitted before the
    /// checkpoint it resumes from), minding their event time.
    fn skip(&mut self, i: usize, mut rows: u64) -> ExecResult<()> {
        while rows > 0 {
            let split = &mut self.splits[i];
            let Some(batch) = split.reader.read(rows.min(usize::MAX as u64) as usize)? else {
                return Err(ExecError::internal(format!(
                    "connector source: checkpoint position of a split is {rows} rows past its end"
                )));
            };
            rows -= (batch.num_rows() as u64).min(rows);
            split.watermark.observe(&Chunk::inserts(batch))?;
        }
        Ok(())
    }

    /// Queues rows of split `i`, then the watermark if it rose.
    fn emit(&mut self, i: usize, chunk: Chunk) -> ExecResult<()> {
        if chunk.num_rows() == 0 {
            return Ok(());
        }
        self.metrics
            .record_in(chunk.num_rows(), batch_bytes(&chunk.batch));
        // Catching up: a replay, neither paced nor raising the watermark.
        if self.catching_up {
            return self.router.enqueue_chunk(chunk);
        }
        if let Some(pace) = &mut self.pace {
            pace.rows += chunk.num_rows() as u64;
        }
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

    /// Reads and emits one batch; `false` when every split is done (or
    /// holds, while catching up).
    fn read_some(&mut self) -> ExecResult<bool> {
        let Some((i, chunk)) = self.next_batch()? else {
            if self.catching_up {
                self.caught_up = true;
            }
            return Ok(false);
        };
        self.emit(i, chunk)?;
        Ok(true)
    }

    /// Where the splits stand: (offset, split positions).
    fn positions(&self) -> (u64, Vec<(u64, u64)>) {
        let mut splits = Vec::new();
        let mut offset = 0;
        for s in &self.splits {
            s.reader.positions(&mut splits);
            offset += s.reader.position();
        }
        (offset, splits)
    }

    /// A barrier command: after a catch-up, the rest of it and the end of
    /// the hold; then the acknowledgement (the split positions) and the
    /// barrier.
    async fn on_command(&mut self, cmd: SourceCommand, coord: &Coordinator) -> ExecResult<()> {
        while self.catching_up && !self.caught_up {
            self.read_some()?;
            self.router.flush().await?;
        }
        if self.catching_up {
            for s in &mut self.splits {
                s.reader.hold_at(None);
            }
            self.catching_up = false;
            if let Some(pace) = &mut self.pace {
                pace.since = Instant::now();
                pace.rows = 0;
            }
        }
        self.router.flush().await?;
        let (offset, splits) = self.positions();
        coord.ack(
            cmd.barrier.epoch,
            SubtaskSnapshot {
                node: self.ids.node,
                subtask: self.ids.subtask,
                source_offset: Some(offset),
                source_splits: Some(splits),
                ..Default::default()
            },
        );
        self.router.broadcast(Message::Barrier(cmd.barrier)).await
    }
}

/// Runs the subtask: from `resume`, catching up to `catch_up` first (see
/// the module's documentation).
#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    ids: TaskIds,
    table: Arc<Table>,
    read_columns: Option<Vec<usize>>,
    parallelism: usize,
    resume: SourceResume,
    catch_up: Option<SourceResume>,
    router: OutputRouter,
    mut commands: mpsc::Receiver<SourceCommand>,
    coord: Arc<Coordinator>,
) -> ExecResult<()> {
    let connector = table
        .connector()
        .cloned()
        .ok_or_else(|| ExecError::internal("connector source task over a table without one"))?;
    let metrics = coord.subtask_metrics((ids.node, ids.subtask));
    metrics.enter(TimeState::Busy);
    let schema = table.schema();
    let columns = read_columns.as_deref().unwrap_or(&[]);
    let from = resume.positions(connector.as_ref(), ids, parallelism, &schema)?;
    let opened = connector.open_splits(ids.subtask, parallelism, &schema, &from, columns)?;
    let mut skips = Vec::with_capacity(opened.len());
    let splits = opened
        .into_iter()
        .map(|s| {
            skips.push(s.skip);
            Split {
                reader: s.reader,
                watermark: WatermarkGenerator::new(&table),
                done: false,
            }
        })
        .collect();
    let mut t = ConnectorSourceTask {
        ids,
        splits,
        turn: 0,
        sent_watermark: i64::MIN,
        pace: None,
        catching_up: false,
        caught_up: false,
        metrics: metrics.clone(),
        router,
    };
    let mut cancel = coord.cancel_receiver((ids.node, ids.subtask));
    for (i, rows) in skips.into_iter().enumerate() {
        t.skip(i, rows)?;
    }
    if let Some(target) = catch_up {
        let target = target.positions(connector.as_ref(), ids, parallelism, &schema)?;
        for s in &mut t.splits {
            s.reader.hold_at(Some(&target));
        }
        t.catching_up = true;
    }
    t.pace = connector
        .rows_per_second(parallelism)
        .filter(|r| *r > 0.0)
        .map(|rows_per_second| Pace {
            rows_per_second,
            since: Instant::now(),
            rows: 0,
        });
    coord.set_task((ids.node, ids.subtask), super::TaskState::Running);
    let mut more = true;
    loop {
        if *cancel.borrow() {
            return Ok(());
        }
        // Barriers first: they go after what was emitted so far.
        loop {
            match commands.try_recv() {
                Ok(cmd) => t.on_command(cmd, &coord).await?,
                Err(mpsc::error::TryRecvError::Empty) => break,
                // The query is stopping.
                Err(mpsc::error::TryRecvError::Disconnected) => return Ok(()),
            }
        }
        if !more {
            break;
        }
        // Caught up: nothing more before the first barrier.
        if t.caught_up && t.catching_up {
            metrics.enter(TimeState::Idle);
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => t.on_command(cmd, &coord).await?,
                    None => return Ok(()),
                },
                _ = cancel.changed() => {}
            }
            metrics.enter(TimeState::Busy);
            continue;
        }
        if let Some(until) = t
            .pace
            .as_ref()
            .filter(|_| !t.catching_up)
            .and_then(Pace::wait_until)
        {
            metrics.enter(TimeState::Idle);
            tokio::select! {
                _ = tokio::time::sleep_until(until) => {}
                cmd = commands.recv() => match cmd {
                    Some(cmd) => t.on_command(cmd, &coord).await?,
                    None => return Ok(()),
                },
                _ = cancel.changed() => {}
            }
            metrics.enter(TimeState::Busy);
            continue;
        }
        more = t.read_some()? || t.catching_up;
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
    let (offset, splits) = t.positions();
    coord.finish(SubtaskSnapshot {
        node: t.ids.node,
        subtask: t.ids.subtask,
        source_offset: Some(offset),
        source_splits: Some(splits),
        ..Default::default()
    });
    // Later checkpoints use this final snapshot.
    Ok(())
}
