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
    /// Aligned barriers: switch to unaligned when the checkpoint is older
    /// than this and the barrier still waits (in a queue or for alignment).
    pub aligned_timeout: Option<std::time::Duration>,
    /// When the checkpoint was triggered (the aligned timeout counts from
    /// here, as in Flink).
    pub triggered_at: Option<std::time::Instant>,
}

#[derive(Debug, Clone)]
pub enum Message {
    Data(Chunk),
    /// Event-time watermark in milliseconds since the epoch.
    Watermark(i64),
    /// The sender has had no rows for a while (`source_idle_timeout`): until
    /// it sends rows or a watermark again, its watermark does not hold the
    /// receiver's back.
    Idle,
    Barrier(Barrier),
    EndOfStream,
}

impl Barrier {
    /// When an aligned barrier should switch to unaligned.
    pub fn alignment_deadline(&self) -> Option<std::time::Instant> {
        match (self.mode, self.aligned_timeout, self.triggered_at) {
            (CheckpointMode::Aligned, Some(t), Some(at)) => Some(at + t),
            _ => None,
        }
    }
}
