//! What `system.checkpoints` shows: one row per checkpoint of a query.

use std::time::SystemTime;

use crate::message::CheckpointMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CheckpointStatus {
    InProgress,
    Completed,
    Failed,
    Expired,
}

impl CheckpointStatus {
    pub fn name(self) -> &'static str {
        match self {
            CheckpointStatus::InProgress => "in_progress",
            CheckpointStatus::Completed => "completed",
            CheckpointStatus::Failed => "failed",
            CheckpointStatus::Expired => "expired",
        }
    }
}

#[derive(Debug, Clone)]
pub struct CheckpointStats {
    pub query: String,
    pub checkpoint_id: u64,
    /// checkpoint or savepoint
    pub kind: &'static str,
    pub mode: CheckpointMode,
    /// An aligned checkpoint that switched to unaligned after
    /// `aligned_checkpoint_timeout`.
    pub timed_out_to_unaligned: bool,
    pub status: CheckpointStatus,
    pub triggered_at: SystemTime,
    pub completed_at: Option<SystemTime>,
    pub duration_ms: Option<u64>,
    /// Size of the checkpoint's state (all files it references).
    pub state_bytes: u64,
    /// Bytes written for this checkpoint (new files only).
    pub incremental_bytes: u64,
    /// Captured in-flight data (unaligned checkpoints).
    pub persisted_in_flight_bytes: u64,
    /// Longest time a subtask spent between the first and the last barrier of
    /// its inputs.
    pub alignment_ms: u64,
    pub failure: Option<String>,
}

impl CheckpointStats {
    /// The row of a completed checkpoint from its durable record.
    pub fn from_record(query: &str, r: &super::CheckpointRecord) -> CheckpointStats {
        let at = |ms: u64| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        CheckpointStats {
            query: query.to_string(),
            checkpoint_id: r.epoch,
            kind: "checkpoint",
            mode: r.mode,
            timed_out_to_unaligned: r.timed_out_to_unaligned,
            status: CheckpointStatus::Completed,
            triggered_at: at(r.triggered_at_ms),
            completed_at: Some(at(r.completed_at_ms)),
            duration_ms: Some(r.duration_ms),
            state_bytes: r.state_bytes,
            incremental_bytes: r.incremental_bytes,
            persisted_in_flight_bytes: r.in_flight_bytes,
            alignment_ms: r.alignment_ms,
            failure: None,
        }
    }
}

/// Checkpoints that ended, by outcome, since the query started on this
/// server (Flink's numberOfCompletedCheckpoints / numberOfFailedCheckpoints).
#[derive(Debug, Default)]
pub struct CheckpointCounts {
    pub completed: std::sync::atomic::AtomicU64,
    /// Failed or expired.
    pub failed: std::sync::atomic::AtomicU64,
}
