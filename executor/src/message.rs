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
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckpointMode {
    Aligned,
    Unaligned,
}

impl CheckpointMode {
    pub fn name(self) -> &'static str {
        match self {
            CheckpointMode::Aligned => "aligned",
            CheckpointMode::Unaligned => "unaligned",
        }
    }
}

/// A checkpoint barrier: a plain value, injected at every source by the
/// query's coordinator and aligned by the runtime, never by operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Barrier {
    pub epoch: u64,
    pub kind: BarrierKind,
    pub mode: CheckpointMode,
    /// Operators write all their state, not only what changed.
    pub full: bool,
    /// Aligned barriers: switch to unaligned when alignment takes longer.
    pub aligned_timeout: Option<std::time::Duration>,
}

#[derive(Debug, Clone)]
pub enum Message {
    Data(Chunk),
    /// Event-time watermark in microseconds since the epoch.
    Watermark(i64),
    Barrier(Barrier),
    EndOfStream,
}
