//! Connectors: where streaming queries read from besides tables, and where
//! they write to besides result tables.
//!
//! - `file` source ([`file::FileSource`]): CSV or JSON-lines files, one file
//!   or a directory; each file is a split.
//! - `blackhole` sink: the `StreamBlackholeSink` operator
//!   (`operators/blackhole.rs`) drops what it receives.

pub mod file;

pub use file::{FileFormat, FileSource};
