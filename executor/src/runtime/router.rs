//! Routing a subtask's output along its out-edges.

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::SchemaRef;
use tokio::sync::mpsc;

use crate::chunk::Chunk;
use crate::error::{ExecError, ExecResult};
use crate::graph::Partitioning;
use crate::keys::{key_group_of, subtask_for_key_group, KeyEncoder};
use crate::message::Message;

pub(crate) struct EdgeOut {
    partitioning: Partitioning,
    senders: Vec<mpsc::Sender<Message>>,
    key_encoder: Option<KeyEncoder>,
    downstream_parallelism: usize,
}

impl EdgeOut {
    pub(crate) fn new(
        partitioning: Partitioning,
        senders: Vec<mpsc::Sender<Message>>,
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
        Ok(EdgeOut {
            partitioning,
            senders,
            key_encoder,
            downstream_parallelism,
        })
    }
}

pub(crate) struct OutputRouter {
    edges: Vec<EdgeOut>,
}

fn closed() -> ExecError {
    ExecError::Canceled
}

impl OutputRouter {
    pub(crate) fn new(edges: Vec<EdgeOut>) -> Self {
        OutputRouter { edges }
    }

    pub(crate) async fn send_chunk(&mut self, chunk: Chunk) -> ExecResult<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        for edge in &mut self.edges {
            match &edge.partitioning {
                Partitioning::Forward | Partitioning::Single => {
                    edge.senders[0]
                        .send(Message::Data(chunk.clone()))
                        .await
                        .map_err(|_| closed())?;
                }
                Partitioning::Broadcast => {
                    for s in &edge.senders {
                        s.send(Message::Data(chunk.clone()))
                            .await
                            .map_err(|_| closed())?;
                    }
                }
                Partitioning::Hash(keys) => {
                    let p = edge.downstream_parallelism;
                    if p == 1 || keys.is_empty() {
                        edge.senders[0]
                            .send(Message::Data(chunk.clone()))
                            .await
                            .map_err(|_| closed())?;
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
                    for i in 0..chunk.num_rows() {
                        let kg = key_group_of(rows.row(i).as_ref());
                        parts[subtask_for_key_group(kg, p)].push(i as u32);
                    }
                    for (target, idx) in parts.into_iter().enumerate() {
                        if idx.is_empty() {
                            continue;
                        }
                        let part = if idx.len() == chunk.num_rows() {
                            chunk.clone()
                        } else {
                            chunk.take(&idx)?
                        };
                        edge.senders[target]
                            .send(Message::Data(part))
                            .await
                            .map_err(|_| closed())?;
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends a control message (barrier, watermark, end of stream) on every channel.
    pub(crate) async fn broadcast(&mut self, msg: Message) -> ExecResult<()> {
        for edge in &mut self.edges {
            for s in &edge.senders {
                s.send(msg.clone()).await.map_err(|_| closed())?;
            }
        }
        Ok(())
    }
}
