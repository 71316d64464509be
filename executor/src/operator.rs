//! The operator contract. An operator is driven by its subtask's task loop,
//! never by itself; the runtime owns channels, barrier alignment, watermark
//! merging and error capture.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;

use crate::chunk::Chunk;
use crate::error::ExecResult;

/// Where an operator writes its output; the runtime routes it downstream.
#[derive(Default)]
pub struct Output {
    pub(crate) chunks: Vec<Chunk>,
    pub(crate) watermark: Option<i64>,
}

impl Output {
    pub fn push(&mut self, chunk: Chunk) {
        if !chunk.is_empty() {
            self.chunks.push(chunk);
        }
    }

    pub fn emit_watermark(&mut self, wm: i64) {
        self.watermark = Some(wm);
    }

    pub fn take_chunks(&mut self) -> Vec<Chunk> {
        std::mem::take(&mut self.chunks)
    }
}

/// Where an operator runs.
#[derive(Debug, Clone)]
pub struct OperatorContext {
    pub query: Arc<str>,
    pub operator: Arc<str>,
    pub subtask: usize,
    pub parallelism: usize,
}

/// Opaque snapshot of an operator's state for one epoch.
pub type StateSnapshot = Vec<u8>;

/// A streaming operator.
///
/// Only [`Operator::on_chunk`] is required. Contract:
/// - `open` is called once before any other method, with the state restored
///   from the last completed checkpoint (if any).
/// - `on_chunk` receives the changes of input `input` in arrival order.
///   Deletes must retract exactly what earlier inserts added: an operator that
///   keeps state must keep enough to retract (warning: dropping that state
///   yields silently wrong results, not errors).
/// - `snapshot` is called once per epoch after the runtime aligned the
///   barrier on all inputs; it must capture all state that the inputs before
///   the barrier produced.
/// - `close` is called when every input ended.
pub trait Operator: Send {
    fn open(
        &mut self,
        _ctx: &OperatorContext,
        _restored: Option<StateSnapshot>,
        _out: &mut Output,
    ) -> ExecResult<()> {
        Ok(())
    }

    fn on_chunk(&mut self, input: usize, chunk: Chunk, out: &mut Output) -> ExecResult<()>;

    /// Called when the minimum watermark over all inputs advanced.
    fn on_watermark(&mut self, watermark: i64, out: &mut Output) -> ExecResult<()> {
        out.emit_watermark(watermark);
        Ok(())
    }

    fn snapshot(&mut self, _epoch: u64) -> ExecResult<Option<StateSnapshot>> {
        Ok(None)
    }

    /// Committing sinks only.
    fn on_checkpoint_complete(&mut self, _epoch: u64) -> ExecResult<()> {
        Ok(())
    }

    fn close(&mut self, _out: &mut Output) -> ExecResult<()> {
        Ok(())
    }
}

/// Builds one operator instance per subtask.
pub trait OperatorFactory: Send + Sync {
    fn create(&self, subtask: usize, parallelism: usize) -> ExecResult<Box<dyn Operator>>;
    /// The schema of the chunks the operator emits.
    fn output_schema(&self) -> SchemaRef;
}

/// An [`OperatorFactory`] from a closure.
pub struct FnFactory<F> {
    schema: SchemaRef,
    make: F,
}

impl<F> FnFactory<F>
where
    F: Fn() -> ExecResult<Box<dyn Operator>> + Send + Sync,
{
    pub fn new(schema: SchemaRef, make: F) -> Arc<Self> {
        Arc::new(FnFactory { schema, make })
    }
}

impl<F> OperatorFactory for FnFactory<F>
where
    F: Fn() -> ExecResult<Box<dyn Operator>> + Send + Sync,
{
    fn create(&self, _subtask: usize, _parallelism: usize) -> ExecResult<Box<dyn Operator>> {
        (self.make)()
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }
}
