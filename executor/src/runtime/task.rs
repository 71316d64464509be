//! The task loop of an operator subtask: reads its input channels, aligns
//! barriers, merges watermarks, calls the operator and routes its output.

use std::future::{poll_fn, Future};
use std::sync::Arc;
use std::task::Poll;

use tokio::sync::{mpsc, watch};

use std::time::Instant;

use super::coordinator::Coordinator;
use super::router::OutputRouter;
use super::sink::SinkStaging;
use crate::checkpoint::SubtaskSnapshot;
use crate::chunk::Chunk;
use crate::error::{ExecError, ExecResult};
use crate::message::{Barrier, Message};
use crate::operator::{Operator, OperatorContext, Output, StateEntry, StateWriter};

struct Input {
    index: usize,
    rx: mpsc::Receiver<Message>,
    /// Blocked after delivering the barrier of the epoch being aligned.
    blocked: bool,
    finished: bool,
    watermark: i64,
}

enum Event {
    Message(usize, Message),
    Canceled,
}

async fn next_event(
    inputs: &mut [Input],
    start: &mut usize,
    cancel: &mut watch::Receiver<bool>,
) -> Event {
    let n = inputs.len();
    let mut cancel_fut = std::pin::pin!(cancel.wait_for(|c| *c));
    poll_fn(|cx| {
        if cancel_fut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Event::Canceled);
        }
        for k in 0..n {
            let i = (*start + k) % n;
            let input = &mut inputs[i];
            if input.blocked || input.finished {
                continue;
            }
            match input.rx.poll_recv(cx) {
                Poll::Ready(Some(m)) => {
                    *start = (i + 1) % n;
                    return Poll::Ready(Event::Message(i, m));
                }
                Poll::Ready(None) => {
                    *start = (i + 1) % n;
                    return Poll::Ready(Event::Message(i, Message::EndOfStream));
                }
                Poll::Pending => {}
            }
        }
        Poll::Pending
    })
    .await
}

async fn route(out: &mut Output, router: &mut OutputRouter) -> ExecResult<()> {
    for chunk in out.take_chunks() {
        router.send_chunk(chunk).await?;
    }
    if let Some(wm) = out.watermark.take() {
        router.broadcast(Message::Watermark(wm)).await?;
    }
    Ok(())
}

/// Which subtask a task runs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TaskIds {
    pub node: usize,
    pub subtask: usize,
}

/// What a subtask resumes from.
pub(crate) struct TaskRestore {
    pub entries: Vec<StateEntry>,
    /// In-flight input captured by an unaligned checkpoint: replayed first.
    pub channels: Vec<(usize, Chunk)>,
}

/// The barrier being aligned and since when.
struct Aligning {
    barrier: Barrier,
    since: Instant,
}

#[allow(clippy::too_many_arguments)]
pub(crate) async fn run(
    ctx: OperatorContext,
    ids: TaskIds,
    mut op: Box<dyn Operator>,
    channels: Vec<(usize, mpsc::Receiver<Message>)>,
    mut router: OutputRouter,
    sink: Option<Arc<SinkStaging>>,
    restore: Option<TaskRestore>,
    coordinator: Arc<Coordinator>,
) -> ExecResult<()> {
    let mut cancel = coordinator.cancel.subscribe();
    let mut inputs: Vec<Input> = channels
        .into_iter()
        .map(|(index, rx)| Input {
            index,
            rx,
            blocked: false,
            finished: false,
            watermark: i64::MIN,
        })
        .collect();
    let mut out = Output::default();
    let restored = restore.is_some();
    let mut replay = Vec::new();
    if let Some(r) = restore {
        op.restore(&ctx, r.entries)?;
        replay = r.channels;
    }
    op.open(&ctx, restored, &mut out)?;
    route(&mut out, &mut router).await?;
    for (input, chunk) in replay {
        deliver(op.as_mut(), &sink, ids, input, chunk, &mut out)?;
        route(&mut out, &mut router).await?;
    }

    let mut aligning: Option<Aligning> = None;
    let mut current_wm = i64::MIN;
    let mut start = 0;
    loop {
        if inputs.iter().all(|i| i.finished) {
            op.close(&mut out)?;
            route(&mut out, &mut router).await?;
            router.broadcast(Message::EndOfStream).await?;
            if let Some(s) = &sink {
                s.seal(ids.subtask, 0);
            }
            let mut state = StateWriter::new(true);
            op.snapshot(&mut state)?;
            coordinator.finish(SubtaskSnapshot {
                node: ids.node,
                subtask: ids.subtask,
                entries: state.into_entries(),
                ..Default::default()
            });
            return Ok(());
        }
        let (i, msg) = match next_event(&mut inputs, &mut start, &mut cancel).await {
            Event::Canceled => return Ok(()),
            Event::Message(i, m) => (i, m),
        };
        match msg {
            Message::Data(chunk) => {
                deliver(op.as_mut(), &sink, ids, inputs[i].index, chunk, &mut out)?;
                route(&mut out, &mut router).await?;
            }
            Message::Watermark(wm) => {
                inputs[i].watermark = inputs[i].watermark.max(wm);
                let min = inputs
                    .iter()
                    .filter(|i| !i.finished)
                    .map(|i| i.watermark)
                    .min()
                    .unwrap_or(i64::MIN);
                if min > current_wm {
                    current_wm = min;
                    op.on_watermark(min, &mut out)?;
                    route(&mut out, &mut router).await?;
                }
            }
            Message::Barrier(b) => {
                match &aligning {
                    None => {
                        aligning = Some(Aligning {
                            barrier: b,
                            since: Instant::now(),
                        })
                    }
                    Some(a) if a.barrier.epoch != b.epoch => {
                        return Err(ExecError::internal(format!(
                            "barrier {} arrived while aligning {}",
                            b.epoch, a.barrier.epoch
                        )))
                    }
                    Some(_) => {}
                }
                inputs[i].blocked = true;
                complete_alignment(
                    ids,
                    &mut inputs,
                    &mut aligning,
                    op.as_mut(),
                    &mut router,
                    &sink,
                    &coordinator,
                )
                .await?;
            }
            Message::EndOfStream => {
                inputs[i].finished = true;
                complete_alignment(
                    ids,
                    &mut inputs,
                    &mut aligning,
                    op.as_mut(),
                    &mut router,
                    &sink,
                    &coordinator,
                )
                .await?;
            }
        }
    }
}

/// Hands a chunk to the operator, or, at a sink, stages it for commit.
fn deliver(
    op: &mut dyn Operator,
    sink: &Option<Arc<SinkStaging>>,
    ids: TaskIds,
    input: usize,
    chunk: Chunk,
    out: &mut Output,
) -> ExecResult<()> {
    match sink {
        Some(s) => {
            s.push(ids.subtask, chunk);
            Ok(())
        }
        None => op.on_chunk(input, chunk, out),
    }
}

/// If every live input delivered the barrier being aligned: snapshot,
/// acknowledge, forward the barrier and unblock the inputs.
async fn complete_alignment(
    ids: TaskIds,
    inputs: &mut [Input],
    aligning: &mut Option<Aligning>,
    op: &mut dyn Operator,
    router: &mut OutputRouter,
    sink: &Option<Arc<SinkStaging>>,
    coordinator: &Coordinator,
) -> ExecResult<()> {
    let Some(a) = aligning.as_ref() else {
        return Ok(());
    };
    if !inputs.iter().all(|i| i.blocked || i.finished) {
        return Ok(());
    }
    let barrier = a.barrier;
    let alignment_ms = a.since.elapsed().as_millis() as u64;
    let mut state = StateWriter::new(barrier.full);
    op.snapshot(&mut state)?;
    if let Some(s) = sink {
        s.seal(ids.subtask, barrier.epoch);
    }
    coordinator.ack(
        barrier.epoch,
        SubtaskSnapshot {
            node: ids.node,
            subtask: ids.subtask,
            entries: state.into_entries(),
            alignment_ms,
            ..Default::default()
        },
    );
    router.broadcast(Message::Barrier(barrier)).await?;
    for i in inputs.iter_mut() {
        i.blocked = false;
    }
    *aligning = None;
    Ok(())
}
