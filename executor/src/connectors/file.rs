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

use datafusion::arrow::array::{ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;

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
    /// decodes only `columns` (empty: all) and leaves the others NULL.
    pub fn reader(
        &self,
        split: usize,
        schema: &SchemaRef,
        columns: &[usize],
    ) -> ExecResult<SplitReader> {
        let path = &self.files[split];
        let file = File::open(path).map_err(io(format!("open {}", path.display())))?;
        let file = BufReader::with_capacity(1 << 20, file);
        let inner: Box<dyn Iterator<Item = Result<RecordBatch, _>> + Send> = match &self.format {
            FileFormat::Csv { header, delimiter } => {
                let mut builder = datafusion::arrow::csv::ReaderBuilder::new(schema.clone())
                    .with_header(*header)
                    .with_delimiter(*delimiter)
                    .with_batch_size(FILE_BATCH_ROWS);
                let projected = (!columns.is_empty() && columns.len() < schema.fields().len())
                    .then_some(columns);
                if let Some(cols) = projected {
                    builder = builder.with_projection(cols.to_vec());
                }
                let reader = builder.build(file)?;
                match projected {
                    None => Box::new(reader),
                    Some(cols) => {
                        let (schema, cols) = (schema.clone(), cols.to_vec());
                        Box::new(reader.map(move |b| widen(&schema, &cols, b?)))
                    }
                }
            }
            FileFormat::JsonLines => Box::new(
                datafusion::arrow::json::ReaderBuilder::new(schema.clone())
                    .with_batch_size(FILE_BATCH_ROWS)
                    .build(file)?,
            ),
        };
        Ok(SplitReader {
            inner,
            path: path.clone(),
        })
    }
}

/// A batch of the `columns` of `schema` as a batch of all of them, the
/// others NULL.
fn widen(
    schema: &SchemaRef,
    columns: &[usize],
    batch: RecordBatch,
) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    let n = batch.num_rows();
    let mut out: Vec<ArrayRef> = schema
        .fields()
        .iter()
        .map(|f| datafusion::arrow::array::new_null_array(f.data_type(), n))
        .collect();
    for (i, c) in columns.iter().enumerate() {
        out[*c] = batch.column(i).clone();
    }
    RecordBatch::try_new(schema.clone(), out)
}

impl SourceConnector for FileSource {
    fn name(&self) -> &'static str {
        "file"
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
    inner:
        Box<dyn Iterator<Item = Result<RecordBatch, datafusion::arrow::error::ArrowError>> + Send>,
    path: PathBuf,
}

impl SplitRead for SplitReader {
    /// The next batch; `None` at the end of the file. A malformed record is
    /// an error naming the file (SQLSTATE 22P04, like a bad COPY).
    fn next_batch(&mut self) -> ExecResult<Option<RecordBatch>> {
        match self.inner.next() {
            None => Ok(None),
            Some(Ok(b)) => Ok(Some(b)),
            Some(Err(e)) => Err(ExecError::User {
                sqlstate: "22P04",
                message: format!("bad record in {}: {e}", self.path.display()),
                hint: Some(
                    "Fix or remove the record; the source's files must match its columns.".into(),
                ),
            }),
        }
    }
}
