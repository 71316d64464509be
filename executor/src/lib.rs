//! `weir-executor` runs streaming queries. It owns the live tables (durable
//! inputs and materialized results), the stream graph description that the
//! planner builds, the operators, and the runtime that drives them: one task
//! per subtask, bounded channels carrying [`Message`]s, exchanges by key
//! group, barrier alignment and the per-query coordinator behind `FLUSH`.
//!
//! Entry points: [`graph::StreamGraph`] (what to run), [`runtime::QueryRuntime::start`]
//! (run it), [`table::Table`] (read and write tables). The executor never sees SQL.

pub mod checkpoint;
pub mod chunk;
pub mod connectors;
pub mod error;
pub mod expr;
pub mod failure;
pub mod graph;
pub mod keys;
pub mod message;
pub mod metrics;
pub mod operator;
pub mod operators;
pub mod runtime;
pub mod state;
pub mod table;

pub use chunk::{Chunk, Op};
pub use error::{ErrorDomain, ExecError, ExecResult, SqlState};
pub use message::{Barrier, BarrierKind, CheckpointMode, Message};
