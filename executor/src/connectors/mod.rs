//! Connectors: where streaming queries read from besides tables, and where
//! they write to besides result tables.
//!
//! - `file` source ([`file::FileSource`]): CSV or JSON-lines files, one file
//!   or a directory; each file is a split.
//! - `nexmark` source ([`nexmark::NexmarkSource`]): the Nexmark benchmark's
//!   person, auction or bid events, generated in the source subtasks.
//! - `datagen` source ([`datagen::DatagenSource`]): random or sequential
//!   values per column, Flink's datagen.
//! - `blackhole` sink: the `StreamBlackholeSink` operator
//!   (`operators/blackhole.rs`) drops what it receives.
//! - `file` sink: the `StreamFileSink` operator (`operators/file_sink.rs`)
//!   writes CSV or JSON-lines part files that the `file` source reads, made
//!   visible exactly once when checkpoints complete.
//!
//! A source table carries its connector as a [`SourceConnector`]; the
//! runtime's `connector_source_task` drives it, the same way for all three.

mod csv_decoder;
pub mod datagen;
pub mod file;
pub mod nexmark;
mod nexmark_bid;

use std::collections::BTreeMap;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use crate::error::{ExecError, ExecResult};
pub use datagen::DatagenSource;
pub use file::{FileFormat, FileSource};
pub use nexmark::NexmarkSource;

/// Rows per batch a source emits at most.
pub const SOURCE_BATCH_ROWS: usize = 8192;

/// Where a source table's rows come from.
///
/// Contract: the rows of `(subtask, parallelism)` are the same, in the same
/// order, every time they are opened, so that a subtask's position (rows
/// emitted since the start) is a checkpoint offset that replays exactly.
/// A connector whose rows depended on timing or on other subtasks would
/// lose or duplicate rows after a restore.
pub trait SourceConnector: std::fmt::Debug + Send + Sync {
    /// The connector's name in `WITH (connector = ...)`.
    fn name(&self) -> &'static str;

    /// The splits of `subtask` (out of `parallelism`) with batches of
    /// `schema`, positioned as near to row `position` of the subtask as the
    /// connector can seek; the runtime reads and drops the rest.
    fn open(
        &self,
        subtask: usize,
        parallelism: usize,
        schema: &SchemaRef,
        position: u64,
    ) -> ExecResult<OpenSplits>;

    /// Like [`SourceConnector::open`], but the query reads only `columns`
    /// (indexes into `schema`; empty: all of them): the batches keep
    /// `schema`, and the other columns may be all NULL. A connector that can
    /// skip decoding columns (CSV files) overrides this; the others read
    /// every column.
    fn open_columns(
        &self,
        subtask: usize,
        parallelism: usize,
        schema: &SchemaRef,
        position: u64,
        columns: &[usize],
    ) -> ExecResult<OpenSplits> {
        let _ = columns;
        self.open(subtask, parallelism, schema, position)
    }

    /// Whether the source ends (files, or a generator given a number of
    /// rows or events): an ad hoc SELECT can then read it whole.
    fn is_bounded(&self) -> bool {
        false
    }

    /// Rows per second one of `parallelism` subtasks may emit; `None`: as
    /// fast as downstream takes them.
    fn rows_per_second(&self, parallelism: usize) -> Option<f64> {
        let _ = parallelism;
        None
    }
}

/// A subtask's splits, opened.
pub struct OpenSplits {
    pub splits: Vec<Box<dyn SplitRead>>,
    /// Rows of the subtask before the splits' position (0 unless the
    /// connector seeked).
    pub skipped: u64,
}

/// Batches of one split, in order.
pub trait SplitRead: Send {
    /// The next batch (at most [`SOURCE_BATCH_ROWS`] rows); `None` at the
    /// end of the split.
    fn next_batch(&mut self) -> ExecResult<Option<RecordBatch>>;
}

/// Connector options (`WITH (...)` of a source, lower-case keys) that a
/// connector reads one by one; the ones left over are unknown.
pub struct ConnectorOptions<'a> {
    connector: &'static str,
    options: BTreeMap<&'a str, &'a str>,
}

impl<'a> ConnectorOptions<'a> {
    pub fn new(connector: &'static str, options: &'a BTreeMap<String, String>) -> Self {
        ConnectorOptions {
            connector,
            options: options
                .iter()
                .filter(|(k, _)| k.as_str() != "connector")
                .map(|(k, v)| (k.as_str(), v.trim()))
                .collect(),
        }
    }

    /// Takes option `key`.
    pub fn take(&mut self, key: &str) -> Option<&'a str> {
        self.options.remove(key)
    }

    /// Takes option `key`, a non-negative integer.
    pub fn take_u64(&mut self, key: &str) -> ExecResult<Option<u64>> {
        self.take(key)
            .map(|v| crate::checkpoint::config::count(key, v).map_err(bad_option))
            .transpose()
    }

    /// Keys left, under `prefix`.
    pub fn keys_under(&self, prefix: &str) -> Vec<&'a str> {
        self.options
            .keys()
            .filter(|k| k.starts_with(prefix))
            .copied()
            .collect()
    }

    /// Fails on an option nobody took.
    pub fn finish(self, valid: &str) -> ExecResult<()> {
        match self.options.keys().next() {
            None => Ok(()),
            Some(k) => Err(ExecError::User {
                sqlstate: crate::SqlState::INVALID_PARAMETER_VALUE,
                message: format!("unrecognized {} source option \"{k}\"", self.connector),
                hint: Some(format!("Valid options: {valid}.")),
            }),
        }
    }
}

/// An invalid option value (SQLSTATE 22023).
pub fn bad_option(message: impl Into<String>) -> ExecError {
    ExecError::user(crate::SqlState::INVALID_PARAMETER_VALUE, message)
}
