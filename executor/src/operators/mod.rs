//! Runtime operators, one per file.

pub mod blackhole;
pub mod file_sink;
pub mod filter;
pub mod hash_agg;
pub mod hash_join;
pub mod partition_key;
pub mod project;
pub mod session_window;
pub mod state_codec;
pub mod top_n;
pub mod union;
pub mod unnest;
pub mod values;
