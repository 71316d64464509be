//! The operator contract. An operator is driven by its subtask's task loop,
//! never by itself; the runtime owns channels, barrier alignment, watermark
//! merging and error capture.

use std::sync::Arc;

use datafusion::arrow::datatypes::SchemaRef;

use crate::chunk::Chunk;
use crate::error::ExecResult;
use crate::state::SubtaskStore;

/// Where an operator writes its output; the runtime routes it downstream.
#[derive(Default)]
pub struct Output {
    pub(crate) chunks: Vec<Chunk>,
    pub(crate) watermark: Option<i64>,
    /// Input rows dropped for arriving after the watermark passed them.
    pub(crate) late_dropped: u64,
    /// The operator held output back for its next flush.
    pub(crate) held: bool,
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

    /// Counts input rows dropped as late (`numLateRecordsDropped`).
    pub fn late_records_dropped(&mut self, n: u64) {
        self.late_dropped += n;
    }

    /// Says that `on_chunk` held output back: the task calls `flush`
    /// later (see the [`Operator`] contract).
    pub fn hold(&mut self) {
        self.held = true;
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
    /// RocksDB backend: the store holding this subtask's keyed state (the
    /// operator's maps are a bounded cache of it). `None`: the maps are all
    /// the state (memory backend, or an operator without keyed state).
    pub state: Option<Arc<SubtaskStore>>,
    /// The completed checkpoint this subtask resumed from; `None` at a
    /// fresh start. A sink that writes outside Weir finishes that
    /// checkpoint's commit from it and discards what it wrote after it
    /// (see [`EpochCommitter`]).
    pub restored_epoch: Option<u64>,
    /// Restored after an upgrade that kept this operator's state but
    /// changed what consumes its output: `open` emits its current results
    /// as inserts, so the new operators above it start from them.
    pub reemit: bool,
}

/// One entry of keyed state as it goes into a checkpoint. The key group is
/// the one the runtime routes the entry's key to ([`crate::keys::key_group_of`]
/// over the same key bytes the exchange hashes), so that a restore at another
/// parallelism hands each entry to the subtask that now owns its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateEntry {
    pub key_group: u16,
    /// Unique within the operator (an operator with several maps prefixes
    /// its keys to keep them apart).
    pub key: Vec<u8>,
    /// `None`: the key was deleted since the previous snapshot (only in an
    /// incremental snapshot).
    pub value: Option<Vec<u8>>,
}

/// Collects an operator's state at a barrier.
///
/// In a *full* snapshot the operator writes every live entry. In an
/// *incremental* one it writes only the keys changed since its previous
/// snapshot: the current value, or a delete for a key that is gone.
pub struct StateWriter {
    full: bool,
    epoch: Option<u64>,
    entries: Vec<StateEntry>,
}

impl StateWriter {
    pub fn new(full: bool) -> Self {
        StateWriter {
            full,
            epoch: None,
            entries: Vec::new(),
        }
    }

    /// The snapshot is for the checkpoint (barrier) `epoch`.
    pub fn at_epoch(mut self, epoch: Option<u64>) -> Self {
        self.epoch = epoch;
        self
    }

    pub fn is_full(&self) -> bool {
        self.full
    }

    /// The checkpoint whose barrier this snapshot is taken at; `None` for
    /// the final snapshot of a subtask whose inputs ended (it stands in
    /// for every later checkpoint).
    pub fn epoch(&self) -> Option<u64> {
        self.epoch
    }

    /// The keys a snapshot writes: every live key in a full snapshot, else
    /// the ones changed since the previous snapshot.
    pub fn keys_to_write<'a, K>(
        &self,
        live: impl Iterator<Item = &'a K>,
        changed: &'a datafusion::common::HashSet<K>,
    ) -> Vec<&'a K> {
        if self.full {
            live.collect()
        } else {
            changed.iter().collect()
        }
    }

    pub fn put(&mut self, key_group: usize, key: Vec<u8>, value: Vec<u8>) {
        self.entries.push(StateEntry {
            key_group: key_group as u16,
            key,
            value: Some(value),
        });
    }

    pub fn delete(&mut self, key_group: usize, key: Vec<u8>) {
        if !self.full {
            self.entries.push(StateEntry {
                key_group: key_group as u16,
                key,
                value: None,
            });
        }
    }

    pub fn into_entries(self) -> Vec<StateEntry> {
        self.entries
    }
}

/// A streaming operator.
///
/// Only [`Operator::on_chunk`] is required. Contract:
/// - `restore` is called first when the query resumes from a checkpoint, with
///   every entry of the key groups this subtask owns (values always present)
///   — unless the subtask has a store (`OperatorContext::state`): then the
///   entries stay in the store and the operator reads them when needed.
/// - `open` is called once before any data, with `restored` telling whether
///   the query resumed from a checkpoint (then output emitted at a first
///   open, e.g. constant rows, was already emitted and must not be again).
/// - `on_chunk` receives the changes of input `input` in arrival order.
///   Deletes must retract exactly what earlier inserts added: an operator that
///   keeps state must keep enough to retract (warning: dropping that state
///   yields silently wrong results, not errors).
/// - `snapshot` is called once per checkpoint when the barrier has passed;
///   it must capture all state that the inputs before the barrier produced,
///   and nothing after it. Stateless operators keep the default.
/// - `close` is called when every input ended.
/// - `on_chunk` may hold back its output (a mini-batch whose size adapts
///   to the load) and say so with [`Output::hold`]; `flush` is then called
///   once the inputs have nothing queued, or before the next `snapshot` or
///   `close` if that comes first, and must emit all of it. It flushes itself before anything
///   else that needs that output out first (e.g. in `on_watermark`).
///
/// A sink that writes outside Weir commits in two phases: it seals its
/// output in `snapshot` (under [`StateWriter::epoch`]) and, at `close`,
/// its last output; its factory's [`EpochCommitter`] makes that output
/// visible once the checkpoint completed.
pub trait Operator: Send {
    /// Whether the operator keeps keyed state (and so gets a store with the
    /// RocksDB backend).
    fn uses_keyed_state(&self) -> bool {
        false
    }

    /// Whether its state holds its current results, so that it can emit
    /// them again when restored with [`OperatorContext::reemit`] (an
    /// upgrade that keeps it under new operators).
    fn can_reemit(&self) -> bool {
        false
    }

    fn restore(&mut self, _ctx: &OperatorContext, _entries: Vec<StateEntry>) -> ExecResult<()> {
        Ok(())
    }

    fn open(
        &mut self,
        _ctx: &OperatorContext,
        _restored: bool,
        _out: &mut Output,
    ) -> ExecResult<()> {
        Ok(())
    }

    fn on_chunk(&mut self, input: usize, chunk: Chunk, out: &mut Output) -> ExecResult<()>;

    /// Emits the output `on_chunk` held back (see the trait's contract).
    fn flush(&mut self, _out: &mut Output) -> ExecResult<()> {
        Ok(())
    }

    /// Called when the minimum watermark over all inputs advanced.
    fn on_watermark(&mut self, watermark: i64, out: &mut Output) -> ExecResult<()> {
        out.emit_watermark(watermark);
        Ok(())
    }

    fn snapshot(&mut self, _state: &mut StateWriter) -> ExecResult<()> {
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
    /// A sink writing outside Weir: what commits its sealed output.
    fn committer(&self) -> Option<Arc<dyn EpochCommitter>> {
        None
    }
}

/// The second phase of a two-phase commit, for a sink that writes outside
/// Weir. The result table's sink is committed the same way
/// (`runtime/sink.rs`): subtasks seal their output per epoch at barriers,
/// and the checkpointer commits every sealed epoch up to a checkpoint once
/// that checkpoint's record is durable — under the commit lock, before
/// `FLUSH` returns, and also for subtasks that have finished since.
///
/// Warning: the checkpointer commits only what the running process
/// sealed. A checkpoint that completed just before a crash is not
/// committed here: the sink's `open` must finish the commit of what
/// [`OperatorContext::restored_epoch`] covers and discard output sealed
/// after it (the restored run produces it again), or rows are lost or
/// duplicated.
pub trait EpochCommitter: Send + Sync {
    /// Checkpoint `epoch` is durable: make visible what was sealed at
    /// epochs up to `epoch`. On error what is left stays sealed and the
    /// next completed checkpoint tries again.
    fn commit(&self, epoch: u64) -> ExecResult<()>;
    /// A subtask restarts from the last checkpoint: forget what it sealed
    /// (its `open` deals with the files, and it seals its rows again).
    fn discard(&self, subtask: usize);
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
