//! The task of a table source subtask: the table's contents at start, then
//! its changes; a barrier request is answered after every change visible at
//! that moment has been emitted.

use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use super::router::OutputRouter;
use super::SOURCE_CHUNK_ROWS;
use crate::chunk::Chunk;
use crate::error::ExecResult;
use crate::message::{Barrier, Message};
use crate::table::Table;

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
    table: Arc<Table>,
    mut router: OutputRouter,
    mut barriers: mpsc::Receiver<Barrier>,
    mut cancel: watch::Receiver<bool>,
) -> ExecResult<()> {
    let (snapshot, mut reader) = table.reader()?;
    emit(&mut router, snapshot).await?;
    loop {
        // Emit what is there before waiting.
        drain(&mut reader, &mut router).await?;
        let mut watch = reader.table().version_watch();
        let pos = reader.position();
        let wake = tokio::select! {
            b = barriers.recv() => Wake::Barrier(b),
            _ = async { watch.wait_for(|v| *v > pos).await.is_ok() } => Wake::Data,
            _ = async { cancel.wait_for(|c| *c).await.is_ok() } => Wake::Cancel,
        };
        match wake {
            Wake::Barrier(None) | Wake::Cancel => return Ok(()),
            Wake::Barrier(Some(b)) => {
                drain(&mut reader, &mut router).await?;
                router.broadcast(Message::Barrier(b)).await?;
            }
            Wake::Data => {}
        }
    }
}

enum Wake {
    Barrier(Option<Barrier>),
    Data,
    Cancel,
}

async fn drain(
    reader: &mut crate::table::TableReader,
    router: &mut OutputRouter,
) -> ExecResult<()> {
    while reader.has_more() {
        let chunks = reader.read()?;
        if chunks.is_empty() {
            break;
        }
        for c in chunks {
            emit(router, c).await?;
        }
    }
    Ok(())
}
