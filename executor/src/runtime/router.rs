//! Routing a subtask's output along its out-edges. Output is queued in the
//! router and pushed into the channels as they have room, so that a task
//! blocked by backpressure can still take an unaligned barrier: the queued,
//! unsent output then becomes channel state of the checkpoint.

use std::collections::VecDeque;
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;

use super::channel::Sender;
use crate::checkpoint::ChannelChunk;
use crate::chunk::Chunk;
use crate::error::{ExecError, ExecResult};
use crate::graph::Partitioning;
use crate::keys::{key_group_of, subtask_for_key_group, KeyEncoder};
use crate::message::{Barrier, Message};
use crate::metrics::SubtaskMetrics;

/// A channel's receiving end: (node, subtask, input).
pub(crate) type Target = (usize, usize, usize);

pub(crate) struct EdgeOut {
    partitioning: Partitioning,
    senders: Vec<Sender>,
    targets: Vec<Target>,
    key_encoder: Option<KeyEncoder>,
    downstream_parallelism: usize,
}

impl EdgeOut {
    pub(crate) fn new(
        partitioning: Partitioning,
        senders: Vec<(Sender, Target)>,
        schema: &SchemaRef,
        downstream_parallelism: usize,
    ) -> ExecResult<EdgeOut> {
        let key_encoder = match &partitioning {
            Partitioning::Hash(keys) => {
                let types = keys
                    .iter()
                    .map(|k| k.data_type(schema))
                    .collect::<Result<Vec<_>, _>>()?;
                Some(KeyEncoder::new(&types)?)
            }
            _ => None,
        };
        let (senders, targets) = senders.into_iter().unzip();
        Ok(EdgeOut {
            partitioning,
            senders,
            targets,
            key_encoder,
            downstream_parallelism,
        })
    }
}

pub(crate) struct OutputRouter {
    edges: Vec<EdgeOut>,
    /// (edge, channel, message) not yet in its channel.
    pending: VecDeque<(usize, usize, Message)>,
    /// Counts what the subtask emits.
    metrics: Option<Arc<SubtaskMetrics>>,
}

fn closed() -> ExecError {
    ExecError::Canceled
}

impl OutputRouter {
    pub(crate) fn new(edges: Vec<EdgeOut>) -> Self {
        OutputRouter {
            edges,
            pending: VecDeque::new(),
            metrics: None,
        }
    }

    pub(crate) fn with_metrics(mut self, metrics: Arc<SubtaskMetrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Queues a chunk, split by each edge's partitioning.
    pub(crate) fn enqueue_chunk(&mut self, chunk: Chunk) -> ExecResult<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        if let Some(m) = &self.metrics {
            m.record_out(chunk.num_rows(), crate::metrics::batch_bytes(&chunk.batch));
        }
        for (e, edge) in self.edges.iter().enumerate() {
            match &edge.partitioning {
                Partitioning::Forward | Partitioning::Single => {
                    self.pending.push_back((e, 0, Message::Data(chunk.clone())));
                }
                Partitioning::Broadcast => {
                    for s in 0..edge.senders.len() {
                        self.pending.push_back((e, s, Message::Data(chunk.clone())));
                    }
                }
                Partitioning::Hash(keys) => {
                    let p = edge.downstream_parallelism;
                    if p == 1 || keys.is_empty() {
                        self.pending.push_back((e, 0, Message::Data(chunk.clone())));
                        continue;
                    }
                    let n = chunk.num_rows();
                    let key_cols = keys
                        .iter()
                        .map(|k| k.evaluate(&chunk.batch).and_then(|v| v.into_array(n)))
                        .collect::<Result<Vec<ArrayRef>, _>>()?;
                    let enc = edge.key_encoder.as_ref().expect("hash edge has an encoder");
                    let rows = enc.encode(&key_cols)?;
                    let mut parts: Vec<Vec<u32>> = vec![Vec::new(); p];
                    for i in 0..n {
                        let kg = key_group_of(rows.row(i).as_ref());
                        parts[subtask_for_key_group(kg, p)].push(i as u32);
                    }
                    for (target, idx) in parts.into_iter().enumerate() {
                        if idx.is_empty() {
                            continue;
                        }
                        let part = if idx.len() == n {
                            chunk.clone()
                        } else {
                            chunk.take(&idx)?
                        };
                        self.pending.push_back((e, target, Message::Data(part)));
                    }
                }
            }
        }
        Ok(())
    }

    /// Queues a control message (aligned barrier, watermark, end of
    /// stream) for every channel.
    pub(crate) fn enqueue_broadcast(&mut self, msg: Message) {
        if let (Message::Watermark(wm), Some(m)) = (&msg, &self.metrics) {
            m.output_watermark
                .store(*wm, std::sync::atomic::Ordering::Relaxed);
        }
        for (e, edge) in self.edges.iter().enumerate() {
            for s in 0..edge.senders.len() {
                self.pending.push_back((e, s, msg.clone()));
            }
        }
    }

    /// Pushes queued messages while their channels have room.
    pub(crate) fn poll_flush(&mut self, cx: &mut Context<'_>) -> Poll<ExecResult<()>> {
        while let Some((e, s, _)) = self.pending.front() {
            let sender = &self.edges[*e].senders[*s];
            match sender.poll_ready(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(_)) => return Poll::Ready(Err(closed())),
                Poll::Ready(Ok(())) => {
                    let (e, s, msg) = self.pending.pop_front().expect("front exists");
                    if self.edges[e].senders[s].push(msg).is_err() {
                        return Poll::Ready(Err(closed()));
                    }
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    pub(crate) async fn flush(&mut self) -> ExecResult<()> {
        std::future::poll_fn(|cx| self.poll_flush(cx)).await
    }

    /// Sends a control message on every channel, after the queued output.
    pub(crate) async fn broadcast(&mut self, msg: Message) -> ExecResult<()> {
        self.enqueue_broadcast(msg);
        self.flush().await
    }

    /// Unaligned barrier: copies of the queued, unsent chunks (in flight
    /// for this checkpoint), then the barrier ahead of everything queued in
    /// every channel.
    pub(crate) fn send_priority_barrier(
        &mut self,
        barrier: Barrier,
    ) -> ExecResult<Vec<ChannelChunk>> {
        let in_flight = self
            .pending
            .iter()
            .filter_map(|(e, s, m)| match m {
                Message::Data(c) => {
                    let (node, subtask, input) = self.edges[*e].targets[*s];
                    Some(ChannelChunk {
                        node,
                        subtask,
                        input,
                        chunk: c.clone(),
                        from_sender: true,
                    })
                }
                _ => None,
            })
            .collect();
        for edge in &self.edges {
            for s in &edge.senders {
                s.send_priority(barrier).map_err(|_| closed())?;
            }
        }
        Ok(in_flight)
    }
}
