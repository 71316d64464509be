//! The task loop of an operator subtask: reads its input channels, aligns
//! barriers, merges watermarks, calls the operator and routes its output.

use std::future::{poll_fn, Future};
use std::sync::Arc;
use std::task::Poll;

use tokio::sync::{mpsc, watch};

use super::router::OutputRouter;
use super::Coordinator;
use crate::error::{ExecError, ExecResult};
use crate::message::{Barrier, Message};
use crate::operator::{Operator, OperatorContext, Output};

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

pub(crate) async fn run(
    ctx: OperatorContext,
    mut op: Box<dyn Operator>,
    channels: Vec<(usize, mpsc::Receiver<Message>)>,
    mut router: OutputRouter,
    terminal: bool,
    coordinator: Arc<Coordinator>,
    mut cancel: watch::Receiver<bool>,
) -> ExecResult<()> {
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
    op.open(&ctx, false, &mut out)?;
    route(&mut out, &mut router).await?;

    let mut aligning: Option<Barrier> = None;
    let mut current_wm = i64::MIN;
    let mut start = 0;
    loop {
        if inputs.iter().all(|i| i.finished) {
            op.close(&mut out)?;
            route(&mut out, &mut router).await?;
            router.broadcast(Message::EndOfStream).await?;
            if terminal {
                coordinator.sink_finished();
            }
            return Ok(());
        }
        let (i, msg) = match next_event(&mut inputs, &mut start, &mut cancel).await {
            Event::Canceled => return Ok(()),
            Event::Message(i, m) => (i, m),
        };
        match msg {
            Message::Data(chunk) => {
                op.on_chunk(inputs[i].index, chunk, &mut out)?;
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
                match aligning {
                    None => aligning = Some(b),
                    Some(a) if a.epoch != b.epoch => {
                        return Err(ExecError::internal(format!(
                            "barrier {} arrived while aligning {}",
                            b.epoch, a.epoch
                        )))
                    }
                    Some(_) => {}
                }
                inputs[i].blocked = true;
                complete_alignment(
                    &mut inputs,
                    &mut aligning,
                    op.as_mut(),
                    &mut router,
                    terminal,
                    &coordinator,
                )
                .await?;
            }
            Message::EndOfStream => {
                inputs[i].finished = true;
                complete_alignment(
                    &mut inputs,
                    &mut aligning,
                    op.as_mut(),
                    &mut router,
                    terminal,
                    &coordinator,
                )
                .await?;
            }
        }
    }
}

/// If every live input delivered the barrier being aligned: snapshot, forward
/// the barrier (or acknowledge it at a sink) and unblock the inputs.
async fn complete_alignment(
    inputs: &mut [Input],
    aligning: &mut Option<Barrier>,
    op: &mut dyn Operator,
    router: &mut OutputRouter,
    terminal: bool,
    coordinator: &Coordinator,
) -> ExecResult<()> {
    let Some(barrier) = *aligning else {
        return Ok(());
    };
    if !inputs.iter().all(|i| i.blocked || i.finished) {
        return Ok(());
    }
    let mut state = crate::operator::StateWriter::new(true);
    op.snapshot(&mut state)?;
    if terminal {
        coordinator.ack(barrier.epoch);
    } else {
        router.broadcast(Message::Barrier(barrier)).await?;
    }
    for i in inputs.iter_mut() {
        i.blocked = false;
    }
    *aligning = None;
    Ok(())
}
