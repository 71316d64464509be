//! The `file` source connector: CSV or JSON-lines files, read in order.
//!
//! A path names one file or a directory (its regular files, sorted by
//! name), listed when the source is created or the server starts. Each file
//! is a split, its id a stable hash of the file's name and its position the
//! rows of it emitted; file `i` of the list belongs to source subtask
//! `i % parallelism`. A file cannot seek: resuming, it is read again from
//! its start and the rows before its position are dropped. As the position
//! is the file's own, a checkpoint resumes at any parallelism, and a file
//! added to the directory by the time the server restarts is read from its
//! start.
//!
//! `rows-per-second` (over all subtasks; default none) paces the rows, in
//! batches of about a tenth of a second: a recorded input replayed at a
//! rate.

use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;

use super::csv_decoder::CsvBatchReader;
use super::{OpenSplit, SourceConnector, SplitPositions, SplitRead};
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
    /// Rows per second over all subtasks (`None`: as fast as they go).
    pub rows_per_second: Option<u64>,
    /// The split id of each file: a stable hash of its name.
    ids: Vec<u64>,
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> ExecError {
    move |e| ExecError::Storage(weir_storage::StorageError::io(what, e))
}

impl FileSource {
    /// Lists the files of `path` (a file, or a directory's files by name).
    pub fn open(path: &Path, format: FileFormat) -> ExecResult<Arc<FileSource>> {
        Self::open_paced(path, format, None)
    }

    /// [`FileSource::open`], its rows paced to `rows_per_second` over all
    /// subtasks (`None` or 0: not paced).
    pub fn open_paced(
        path: &Path,
        format: FileFormat,
        rows_per_second: Option<u64>,
    ) -> ExecResult<Arc<FileSource>> {
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
        let ids: Vec<u64> = files
            .iter()
            .map(|f| {
                let name = f.file_name().map(|n| n.as_encoded_bytes()).unwrap_or(&[]);
                crate::keys::stable_hash(name)
            })
            .collect();
        let mut distinct = ids.clone();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() != ids.len() {
            return Err(ExecError::internal(format!(
                "file source {}: two file names hash to the same split id",
                path.display()
            )));
        }
        Ok(Arc::new(FileSource {
            path: path.to_path_buf(),
            format,
            files,
            rows_per_second: rows_per_second.filter(|r| *r > 0),
            ids,
        }))
    }

    /// The split id of file `split`.
    pub fn split_id(&self, split: usize) -> u64 {
        self.ids[split]
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
            batch_rows: FILE_BATCH_ROWS,
            id: self.ids[split],
            position: 0,
            rest: None,
            hold: None,
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

    /// Files cannot seek to a row: every split opens at its start, and the
    /// rows before its position are to be dropped.
    fn open_splits(
        &self,
        subtask: usize,
        parallelism: usize,
        schema: &SchemaRef,
        from: &SplitPositions,
        columns: &[usize],
    ) -> ExecResult<Vec<OpenSplit>> {
        // About ten batches a second when paced.
        let batch_rows = match self.rows_per_second(parallelism) {
            None => FILE_BATCH_ROWS,
            Some(r) => ((r / 10.0) as usize).clamp(1, FILE_BATCH_ROWS),
        };
        self.splits_of(subtask, parallelism)
            .into_iter()
            .map(|i| {
                let mut reader = self.reader(i, schema, columns)?;
                reader.batch_rows = batch_rows;
                Ok(OpenSplit {
                    reader: Box::new(reader),
                    skip: from.get(&self.ids[i]).copied().unwrap_or(0),
                })
            })
            .collect()
    }

    fn rows_per_second(&self, parallelism: usize) -> Option<f64> {
        self.rows_per_second
            .map(|r| r as f64 / parallelism.max(1) as f64)
    }

    /// Reads the subtask's files again in turns of one batch, as it did,
    /// counting the rows of each until `rows` in all.
    fn legacy_positions(
        &self,
        subtask: usize,
        parallelism: usize,
        schema: &SchemaRef,
        rows: u64,
    ) -> ExecResult<SplitPositions> {
        let splits = self.splits_of(subtask, parallelism);
        let mut out: SplitPositions = splits.iter().map(|i| (self.ids[*i], 0)).collect();
        // Only the first column is decoded: the counts are all we need.
        let cols = if schema.fields().is_empty() {
            vec![]
        } else {
            vec![0]
        };
        let mut readers = splits
            .iter()
            .map(|i| Ok(Some(self.reader(*i, schema, &cols)?)))
            .collect::<ExecResult<Vec<_>>>()?;
        let mut left = rows;
        while left > 0 && readers.iter().any(Option::is_some) {
            for r in readers.iter_mut() {
                let Some(reader) = r else { continue };
                if left == 0 {
                    break;
                }
                match reader.read(usize::MAX)? {
                    Some(batch) => {
                        let n = (batch.num_rows() as u64).min(left);
                        left -= n;
                        *out.entry(reader.id).or_insert(0) += n;
                    }
                    None => *r = None,
                }
            }
        }
        if left > 0 {
            return Err(ExecError::internal(format!(
                "file source {}: checkpoint position {rows} is past the end of the files",
                self.path.display()
            )));
        }
        Ok(out)
    }
}

/// Batches of one split.
pub struct SplitReader {
    inner: Batches,
    path: PathBuf,
    /// Rows per batch at most.
    batch_rows: usize,
    id: u64,
    /// Rows returned so far.
    position: u64,
    /// The rest of a batch cut at `max_rows`: returned next.
    rest: Option<RecordBatch>,
    /// Catching up: the position to hold at.
    hold: Option<u64>,
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
    fn read(&mut self, max_rows: usize) -> ExecResult<Option<RecordBatch>> {
        let max_rows = max_rows.min(self.batch_rows);
        let max = match self.hold {
            Some(h) => (h.saturating_sub(self.position)).min(max_rows as u64) as usize,
            None => max_rows,
        };
        if max == 0 {
            return Ok(None);
        }
        let batch = match self.rest.take() {
            Some(b) => b,
            None => {
                let next = match &mut self.inner {
                    Batches::Csv(r) => r.next_batch().map_err(|e| bad_record(&self.path, e))?,
                    Batches::Json(r) => r
                        .next()
                        .transpose()
                        .map_err(|e| bad_record(&self.path, e))?,
                };
                match next {
                    Some(b) => b,
                    None => return Ok(None),
                }
            }
        };
        let batch = if batch.num_rows() > max {
            self.rest = Some(batch.slice(max, batch.num_rows() - max));
            batch.slice(0, max)
        } else {
            batch
        };
        self.position += batch.num_rows() as u64;
        Ok(Some(batch))
    }

    fn positions(&self, out: &mut Vec<(u64, u64)>) {
        out.push((self.id, self.position));
    }

    fn position(&self) -> u64 {
        self.position
    }

    fn hold_at(&mut self, target: Option<&SplitPositions>) {
        self.hold = target.map(|t| t.get(&self.id).copied().unwrap_or(0));
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema};

    use super::*;

    fn values(reader: &mut dyn SplitRead, max: usize) -> Vec<i64> {
        let mut out = Vec::new();
        while let Some(b) = reader.read(max).unwrap() {
            assert!(b.num_rows() <= max);
            out.extend(b.column(0).as_primitive::<Int64Type>().values().iter());
        }
        out
    }

    /// Three files of 10, 20 and 30 rows (values 100 * file + row).
    fn source(dir: &Path) -> Arc<FileSource> {
        std::fs::create_dir_all(dir).unwrap();
        for (f, n) in [(0, 10), (1, 20), (2, 30)] {
            let csv: String = (0..n).map(|r| format!("{}\n", 100 * f + r)).collect();
            std::fs::write(dir.join(format!("part-{f}.csv")), csv).unwrap();
        }
        FileSource::open(
            dir,
            FileFormat::Csv {
                header: false,
                delimiter: b',',
            },
        )
        .unwrap()
    }

    #[test]
    fn positions_are_per_file_and_resume_at_any_parallelism() {
        let dir = std::env::temp_dir().join(format!("weir-file-splits-{}", std::process::id()));
        let src = source(&dir);
        let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, true)]));
        // Parallelism 2: subtask 0 reads files 0 and 2, 7 rows of each.
        let mut from = SplitPositions::new();
        for subtask in 0..2 {
            for mut s in src
                .open_splits(subtask, 2, &schema, &SplitPositions::new(), &[])
                .unwrap()
            {
                let b = s.reader.read(7).unwrap().unwrap();
                assert_eq!(b.num_rows(), 7);
                let mut v = Vec::new();
                s.reader.positions(&mut v);
                from.extend(v);
            }
        }
        assert_eq!(from.values().copied().collect::<Vec<_>>(), [7, 7, 7]);
        // Parallelism 3: each file's rest, once.
        let mut rest = Vec::new();
        for subtask in 0..3 {
            for mut s in src.open_splits(subtask, 3, &schema, &from, &[]).unwrap() {
                let mut skipped = 0;
                while skipped < s.skip {
                    let b = s.reader.read((s.skip - skipped) as usize).unwrap().unwrap();
                    skipped += b.num_rows() as u64;
                }
                rest.extend(values(s.reader.as_mut(), 4));
            }
        }
        rest.sort();
        let want: Vec<i64> = (7..10).chain(107..120).chain(207..230).collect();
        assert_eq!(rest, want);
        // The position of a checkpoint that counted a subtask's rows: turns
        // of one batch (the files are shorter than a batch).
        let legacy = src.legacy_positions(0, 2, &schema, 15).unwrap();
        assert_eq!(
            legacy
                .values()
                .copied()
                .collect::<Vec<_>>()
                .iter()
                .sum::<u64>(),
            15
        );
        assert_eq!(legacy[&src.split_id(0)], 10);
        assert_eq!(legacy[&src.split_id(2)], 5);
        // Holding at a target.
        let mut s = src
            .open_splits(1, 2, &schema, &SplitPositions::new(), &[])
            .unwrap()
            .remove(0);
        s.reader.hold_at(Some(&[(src.split_id(1), 12)].into()));
        assert_eq!(values(s.reader.as_mut(), 5).len(), 12);
        s.reader.hold_at(None);
        assert_eq!(values(s.reader.as_mut(), 5).len(), 8);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
