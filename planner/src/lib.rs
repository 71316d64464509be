//! `weir-planner` turns a DataFusion logical plan (built from the SQL of a
//! streaming query) into a [`weir_executor::graph::StreamGraph`]: streaming
//! operators with a parallelism each, connected by forward or hash exchanges.
//!
//! Plan nodes are named `Stream*` (as EXPLAIN shows them); the runtime
//! operators they become are named `*Operator` in the executor. The
//! conversion lives in one place, [`stream_plan::StreamPlanner`]. A logical
//! construct the planner cannot run with the same result as a batch query is
//! refused with [`PlanError::Unsupported`], naming the construct.

mod error;
mod plan_key;
pub mod session_window;
pub mod stream_plan;

pub use error::{PlanError, PlanResult};
pub use stream_plan::{StreamPlanner, TableResolver};
