//! The task of a table source subtask: the table's contents at start (or,
//! resuming from a checkpoint, nothing but the changes after the
//! checkpointed log offset), then its changes. A barrier is emitted after
//! every change visible at that moment, and the offset reached is the
//! source's part of the checkpoint.
//!
//! After a fallback to an older checkpoint the source first replays up to
//! exactly the offsets of the newer (already committed) one, where the
//! first barrier goes.

use std::sync::Arc;

use super::checkpointer::SourceCommand;
use super::coordinator::Coordinator;
use super::router::OutputRouter;
use super::task::TaskIds;
use super::SOURCE_CHUNK_ROWS;
use crate::checkpoint::SubtaskSnapshot;
use crate::chunk::Chunk;
use crate::error::ExecResult;
use crate::message::Message;
use crate::table::{Table, TableReader};
use tokio::sync::mpsc;

async fn emit(router: &mut OutputRouter, chunk: Chunk) -> ExecResult<()> {
    let n = chunk.num_rows();
    if n <= SOURCE_CHUNK_ROWS {
        return router.send_chunk(chunk).await;
    }
    let mut start = 0;
    while start < n {
        let len = SOURCE_CHUNK_ROWS.min(n - start);
        let part = Chunk {
            batch: chunk.batch.slice(start, len),
            ops: chunk
                .ops
                .as_ref()
                .map(|ops| Arc::new(ops[start..start + len].to_vec())),
        };
        router.send_chunk(part).await?;
        start += len;
    }
    Ok(())
}

pub(crate) async fn run(
    ids: TaskIds,
    table: Arc<Table>,
    resume_after: Option<u64>,
    mut hold_at: Option<u64>,
    mut router: OutputRouter,
    mut commands: mpsc::Receiver<SourceCommand>,
    coord: Arc<Coordinator>,
) -> ExecResult<()> {
    let mut cancel = coord.cancel.subscribe();
    let mut reader = match resume_after {
        Some(pos) => table.reader_from(pos)?,
        None => {
            let (snapshot, reader) = table.reader()?;
            emit(&mut router, snapshot).await?;
            reader
        }
    };
    loop {
        // Emit what is there before waiting (while catching up after a
        // fallback, not past the offset of the first barrier).
        drain(&mut reader, &mut router, hold_at.unwrap_or(u64::MAX)).await?;
        let mut watch = reader.table().version_watch();
        let pos = reader.position();
        let wake = tokio::select! {
            c = commands.recv() => Wake::Command(c),
            _ = async { watch.wait_for(|v| *v > pos).await.is_ok() } => Wake::Data,
            _ = async { cancel.wait_for(|c| *c).await.is_ok() } => Wake::Cancel,
        };
        match wake {
            Wake::Command(None) | Wake::Cancel => return Ok(()),
            Wake::Command(Some(cmd)) => {
                let offset = match cmd.stop_at {
                    Some(limit) => {
                        drain(&mut reader, &mut router, limit).await?;
                        limit.min(reader.position())
                    }
                    None => {
                        drain(&mut reader, &mut router, u64::MAX).await?;
                        reader.position()
                    }
                };
                coord.ack(
                    cmd.barrier.epoch,
                    SubtaskSnapshot {
                        node: ids.node,
                        subtask: ids.subtask,
                        source_offset: Some(offset),
                        ..Default::default()
                    },
                );
                router.broadcast(Message::Barrier(cmd.barrier)).await?;
                hold_at = None;
            }
            Wake::Data => {}
        }
    }
}

enum Wake {
    Command(Option<SourceCommand>),
    Data,
    Cancel,
}

async fn drain(reader: &mut TableReader, router: &mut OutputRouter, limit: u64) -> ExecResult<()> {
    while reader.has_more() && reader.position() < limit {
        let chunks = reader.read_up_to(limit)?;
        if chunks.is_empty() {
            break;
        }
        for c in chunks {
            emit(router, c).await?;
        }
    }
    Ok(())
}
