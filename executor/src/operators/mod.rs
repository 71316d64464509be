//! Runtime operators, one per file; `numeric_acc`, `partition_key`,
//! `row_groups` and `state_codec` are helpers they share.

pub mod blackhole;
pub mod file_sink;
pub mod filter;
pub mod hash_agg;
pub mod hash_join;
pub(crate) mod numeric_acc;
pub mod partition_key;
pub mod project;
pub(crate) mod row_groups;
pub mod session_window;
pub mod state_codec;
pub mod top_n;
pub mod union;
pub mod unnest;
pub mod values;
