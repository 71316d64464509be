//! The one message type that travels the channels between subtasks.

use crate::chunk::Chunk;

/// What a barrier asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BarrierKind {
    Checkpoint,
    Savepoint,
    StopWithSavepoint,
}

/// How a barrier is aligned at multi-input operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointMode {
    Aligned,
    Unaligned,
}

/// A checkpoint barrier: a plain value, injected at every source by the
/// query's coordinator and aligned by the runtime, never by operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    pub epoch: u64,
    pub kind: BarrierKind,
    pub mode: CheckpointMode,
}

#[derive(Debug, Clone)]
pub enum Message {
    Data(Chunk),
    /// Event-time watermark in microseconds since the epoch.
    Watermark(i64),
    Barrier(Barrier),
    EndOfStream,
}
