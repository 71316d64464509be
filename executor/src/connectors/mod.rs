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
//! Checkpoints hold the position of each split ([`SplitPositions`]), which
//! does not depend on the parallelism: a file's rows emitted, or for a
//! generator the rows each subtask layout has emitted (`row_split.rs`), so a
//! query resumes from a checkpoint at any parallelism.

mod csv_decoder;
pub mod datagen;
pub mod file;
pub mod nexmark;
mod nexmark_bid;
mod row_split;

use std::collections::BTreeMap;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;

use crate::error::{ExecError, ExecResult};
pub use datagen::DatagenSource;
pub use file::{FileFormat, FileSource};
pub use nexmark::NexmarkSource;

/// Rows per batch a source emits at most.
pub const SOURCE_BATCH_ROWS: usize = 8192;

/// Where a source's splits stand: split id → position, the rows of the
/// split emitted so far. A checkpoint holds them per source node, merged
/// over its subtasks (the larger position wins where two report one split),
/// so that any number of subtasks can take over from any other.
pub type SplitPositions = BTreeMap<u64, u64>;

/// Where a source table's rows come from.
///
/// Contract: a split gives the same rows, in the same order, every time it
/// is opened, and the splits do not depend on the number of subtasks (only
/// which subtask reads which split does), so that the positions of the
/// splits are a checkpoint offset that replays exactly at any parallelism.
/// A connector whose rows depended on timing or on other subtasks would
/// lose or duplicate rows after a restore.
pub trait SourceConnector: std::fmt::Debug + Send + Sync {
    /// The connector's name in `WITH (connector = ...)`.
    fn name(&self) -> &'static str;

    /// The splits that `subtask` (out of `parallelism`) reads, with batches
    /// of `schema`, each after the rows `from` says were emitted (a split
    /// missing from `from` starts at its beginning). The query reads only
    /// `columns` (indexes into `schema`; empty: all): the batches keep
    /// `schema`, the other columns may be all NULL. A split that cannot seek
    /// says how many of its first rows the caller reads and drops.
    fn open_splits(
        &self,
        subtask: usize,
        parallelism: usize,
        schema: &SchemaRef,
        from: &SplitPositions,
        columns: &[usize],
    ) -> ExecResult<Vec<OpenSplit>>;

    /// The split positions of a checkpoint taken before positions were kept
    /// per split, when `subtask` of `parallelism` had emitted `rows` rows
    /// (reading its splits in turns of one batch).
    fn legacy_positions(
        &self,
        subtask: usize,
        parallelism: usize,
        schema: &SchemaRef,
        rows: u64,
    ) -> ExecResult<SplitPositions>;

    /// The splits of `subtask` (out of `parallelism`), positioned after
    /// the first `position` rows of the subtask (reading its splits in turns
    /// of one batch), the rows before it already dropped.
    fn open(
        &self,
        subtask: usize,
        parallelism: usize,
        schema: &SchemaRef,
        position: u64,
    ) -> ExecResult<OpenSplits> {
        self.open_columns(subtask, parallelism, schema, position, &[])
    }

    /// Like [`SourceConnector::open`], reading only `columns` (see
    /// [`SourceConnector::open_splits`]).
    fn open_columns(
        &self,
        subtask: usize,
        parallelism: usize,
        schema: &SchemaRef,
        position: u64,
        columns: &[usize],
    ) -> ExecResult<OpenSplits> {
        let from = if position == 0 {
            SplitPositions::new()
        } else {
            self.legacy_positions(subtask, parallelism, schema, position)?
        };
        let mut splits = Vec::new();
        for mut split in self.open_splits(subtask, parallelism, schema, &from, columns)? {
            while split.skip > 0 {
                let Some(batch) = split
                    .reader
                    .read(split.skip.min(usize::MAX as u64) as usize)?
                else {
                    break;
                };
                split.skip -= (batch.num_rows() as u64).min(split.skip);
            }
            splits.push(split.reader);
        }
        Ok(OpenSplits {
            splits,
            skipped: position,
        })
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

    /// Whether a query can resume from a checkpoint of this source at
    /// another parallelism (its splits do not depend on the parallelism).
    fn can_rescale(&self) -> bool {
        true
    }
}

/// A split opened for a subtask.
pub struct OpenSplit {
    pub reader: Box<dyn SplitRead>,
    /// Rows the reader gives first that were emitted before (a split that
    /// cannot seek reads them again): the caller drops them.
    pub skip: u64,
}

/// A subtask's splits, opened (see [`SourceConnector::open`]).
pub struct OpenSplits {
    pub splits: Vec<Box<dyn SplitRead>>,
    /// Rows of the subtask before the splits' position.
    pub skipped: u64,
}

/// Batches of one split, in order. A reader may cover several splits of the
/// checkpoint (a generator subtask's rows), which it reports together.
pub trait SplitRead: Send {
    /// The next batch, of at most `max_rows` rows (and at most the
    /// connector's batch size); `None` at the end of the split, or where a
    /// [`SplitRead::hold_at`] target holds it.
    fn read(&mut self, max_rows: usize) -> ExecResult<Option<RecordBatch>>;

    /// The next batch (at most [`SOURCE_BATCH_ROWS`] rows, or the
    /// connector's batch size); `None` at the end of the split.
    fn next_batch(&mut self) -> ExecResult<Option<RecordBatch>> {
        self.read(usize::MAX)
    }

    /// Where the rows returned so far leave the split(s): (split id,
    /// position) pairs for the checkpoint, appended to `out`.
    fn positions(&self, out: &mut Vec<(u64, u64)>);

    /// Rows of its own the reader has emitted since the source started
    /// (a progress figure: the checkpoint's per-subtask offset).
    fn position(&self) -> u64;

    /// `Some`: return only rows that `target` (the positions of a newer
    /// checkpoint) covers, then hold (`read` gives `None`); `None`: go on
    /// after both what was read and `target`. Catching up after a fallback
    /// to an older checkpoint.
    fn hold_at(&mut self, target: Option<&SplitPositions>);
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
