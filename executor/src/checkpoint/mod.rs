//! Checkpoints: settings, durable storage of state and records, and the
//! statistics `system.checkpoints` shows. The protocol itself (barriers,
//! alignment, acknowledgements, commit) lives in the runtime.

pub mod config;
pub mod savepoint;
pub mod stats;
pub mod storage;

pub use config::{CheckpointConfig, StateBackendKind};
pub use stats::{CheckpointCounts, CheckpointStats, CheckpointStatus};
pub use storage::{
    ChannelChunk, CheckpointRecord, CheckpointStorage, LoadedState, SourceOffset, SubtaskSnapshot,
    WrittenSizes,
};
