//! The `file` source connector: CSV or JSON-lines files, read in order.
//!
//! A path names one file or a directory (its regular files, sorted by
//! name). Each file is a split; split `i` belongs to source subtask
//! `i % parallelism`. A subtask reads its splits in turns of one batch each,
//! so its position is one number, the rows it has emitted, and replaying from
//! a checkpoint re-reads and skips that many rows (the order is the same).

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;

use super::csv_decoder::CsvBatchReader;
use super::{OpenSplits, SourceConnector, SplitRead};
use crate::error::{ExecError, ExecResult};

/// Rows per batch read from a file.
pub const FILE_BATCH_ROWS: usize = super::SOURCE_BATCH_ROWS;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileFormat {
    Csv { header: bool, delimiter: u8 },
    JsonLines,
}

/// A file source: its files and how to read them.
#[derive(Debug)]
pub struct FileSource {
    pub path: PathBuf,
    pub format: FileFormat,
    pub files: Vec<PathBuf>,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> ExecError {
    move |e| ExecError::Storage(weir_storage::StorageError::io(what, e))
}

impl FileSource {
    /// Lists the files of `path` (a file, or a directory's files by name).
    pub fn open(path: &Path, format: FileFormat) -> ExecResult<Arc<FileSource>> {
        let meta =
            std::fs::metadata(path).map_err(io(format!("file source {}", path.display())))?;
        let files = if meta.is_dir() {
            let mut files: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(io(format!("read directory {}", path.display())))?
                .flatten()
                .map(|e| e.path())
                .filter(|p| p.is_file())
                .filter(|p| {
                    !p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with('.'))
                })
                .collect();
            files.sort();
            files
        } else {
            vec![path.to_path_buf()]
        };
        Ok(Arc::new(FileSource {
            path: path.to_path_buf(),
            format,
            files,
        }))
    }

    /// The splits (file indices) of `subtask` out of `parallelism`.
    pub fn splits_of(&self, subtask: usize, parallelism: usize) -> Vec<usize> {
        (0..self.files.len())
            .filter(|i| i % parallelism == subtask)
            .collect()
    }

    /// A reader of split `split`, batches with `schema`; a CSV reader
    /// parses only `columns` (empty: all) and leaves the others NULL.
    pub fn reader(
        &self,
        split: usize,
        schema: &SchemaRef,
        columns: &[usize],
    ) -> ExecResult<SplitReader> {
        let path = &self.files[split];
        let file = File::open(path).map_err(io(format!("open {}", path.display())))?;
        let inner = match &self.format {
            FileFormat::Csv { header, delimiter } => Batches::Csv(Box::new(
                CsvBatchReader::new(
                    file,
                    schema.clone(),
                    columns,
                    *header,
                    *delimiter,
                    FILE_BATCH_ROWS,
                )
                .map_err(|e| bad_record(path, e))?,
            )),
            FileFormat::JsonLines => Batches::Json(Box::new(
                datafusion::arrow::json::ReaderBuilder::new(schema.clone())
                    .with_batch_size(FILE_BATCH_ROWS)
                    .build(BufReader::with_capacity(1 << 20, file))?,
            )),
        };
        Ok(SplitReader {
            inner,
            path: path.clone(),
        })
    }
}

impl SourceConnector for FileSource {
    fn name(&self) -> &'static str {
        "file"
    }

    fn is_bounded(&self) -> bool {
        true
    }

    /// Files cannot seek to a row: every split opens at its start.
    fn open(
        &self,
        subtask: usize,
        parallelism: usize,
        schema: &SchemaRef,
        _position: u64,
    ) -> ExecResult<OpenSplits> {
        self.open_columns(subtask, parallelism, schema, 0, &[])
    }

    fn open_columns(
        &self,
        subtask: usize,
        parallelism: usize,
        schema: &SchemaRef,
        _position: u64,
        columns: &[usize],
    ) -> ExecResult<OpenSplits> {
        let splits = self
            .splits_of(subtask, parallelism)
            .into_iter()
            .map(|i| Ok(Box::new(self.reader(i, schema, columns)?) as Box<dyn SplitRead>))
            .collect::<ExecResult<Vec<_>>>()?;
        Ok(OpenSplits { splits, skipped: 0 })
    }
}

/// Batches of one split.
pub struct SplitReader {
    inner: Batches,
    path: PathBuf,
}

enum Batches {
    Csv(Box<CsvBatchReader<File>>),
    Json(Box<dyn Iterator<Item = Result<RecordBatch, ArrowError>> + Send>),
}

/// A malformed record: an error naming the file (SQLSTATE 22P04, like a
/// bad COPY).
fn bad_record(path: &Path, e: impl std::fmt::Display) -> ExecError {
    ExecError::User {
        sqlstate: crate::SqlState::BAD_COPY_FILE_FORMAT,
        message: format!("bad record in {}: {e}", path.display()),
        hint: Some("Fix or remove the record; the source's files must match its columns.".into()),
    }
}

impl SplitRead for SplitReader {
    /// The next batch; `None` at the end of the file.
    fn next_batch(&mut self) -> ExecResult<Option<RecordBatch>> {
        match &mut self.inner {
            Batches::Csv(r) => r.next_batch().map_err(|e| bad_record(&self.path, e)),
            Batches::Json(r) => r.next().transpose().map_err(|e| bad_record(&self.path, e)),
        }
    }
}
