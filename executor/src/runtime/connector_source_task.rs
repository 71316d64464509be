//! The task of a source subtask over a connector (`file`, `nexmark`,
//! `datagen`; `connectors/`): reads its splits in turns of one batch each,
//! emits the rows as inserts, and ends the stream when every split is done
//! (downstream operators then close: every window fires). A source without
//! an end runs until the query stops.
//!
//! Its checkpoint position is the number of rows it has emitted; resuming,
//! it opens the same splits at that position (a generator starts there, a
//! file is read again from its start and the rows before it are skipped).
//! Each split has its own watermark and the subtask emits their minimum
//! over the splits not yet finished, so reading one split after another
//! never makes the later one's rows late. Barriers go after the rows
//! emitted so far (unaligned barriers too: the rows can be produced again),
//! and `FLUSH` does not wait for the source to end. A connector with a rate
//! (`rows_per_second`) has its batches paced; barriers are served while it
//! waits.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::checkpointer::SourceCommand;
use super::coordinator::Coordinator;
use super::router::OutputRouter;
use super::source_task::WatermarkGenerator;
use super::task::TaskIds;
use crate::checkpoint::SubtaskSnapshot;
use crate::chunk::Chunk;
use crate::connectors::SplitRead;
use crate::error::{ExecError, ExecResult};
use crate::message::Message;
use crate::metrics::{batch_bytes, SubtaskMetrics, TimeState};
use crate::table::Table;

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
    /// Rows emitted since the start of the source.
    emitted: u64,
    /// Watermark last sent.
    sent_watermark: i64,
    /// The rest of a batch cut at a catch-up target: read next.
    pending: Option<(usize, Chunk)>,
    pace: Option<Pace>,
    metrics: Arc<SubtaskMetrics>,
    router: OutputRouter,
}

impl ConnectorSourceTask {
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
                    "connector source: checkpoint position {rows} is past the end of the source ({} rows)",
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
        if let Some(pace) = &mut self.pace {
            pace.rows += chunk.num_rows() as u64;
        }
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

    /// A barrier command: rows up to its catch-up target, then the
    /// acknowledgement (position = rows emitted) and the barrier.
    async fn on_command(&mut self, cmd: SourceCommand, coord: &Coordinator) -> ExecResult<()> {
        if let Some(stop_at) = cmd.stop_at {
            while self.emitted < stop_at && self.read_some(Some(stop_at))? {}
        }
        self.router.flush().await?;
        coord.ack(
            cmd.barrier.epoch,
            SubtaskSnapshot {
                node: self.ids.node,
                subtask: self.ids.subtask,
                source_offset: Some(self.emitted),
                ..Default::default()
            },
        );
        self.router.broadcast(Message::Barrier(cmd.barrier)).await
    }
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    ids: TaskIds,
    table: Arc<Table>,
    read_columns: Option<Vec<usize>>,
    parallelism: usize,
    resume_after: Option<u64>,
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
    let position = resume_after.unwrap_or(0);
    let columns = read_columns.as_deref().unwrap_or(&[]);
    let opened = connector.open_columns(ids.subtask, parallelism, &schema, position, columns)?;
    let splits = opened
        .splits
        .into_iter()
        .map(|reader| Split {
            reader,
            watermark: WatermarkGenerator::new(&table),
            done: false,
        })
        .collect();
    let mut t = ConnectorSourceTask {
        ids,
        splits,
        turn: 0,
        emitted: opened.skipped,
        sent_watermark: i64::MIN,
        pending: None,
        pace: None,
        metrics: metrics.clone(),
        router,
    };
    let mut cancel = coord.cancel_receiver((ids.node, ids.subtask));
    t.skip(position)?;
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
        if let Some(until) = t.pace.as_ref().and_then(Pace::wait_until) {
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
