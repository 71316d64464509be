//! `StreamFileSink`: the `file` sink connector. Each subtask writes the rows
//! it receives (inserts only: the planner refuses an updating query) to part
//! files in the sink's directory, CSV without a header (the `file` source's
//! default dialect) or JSON lines, and makes them visible exactly once with
//! a two-phase commit over Weir's checkpoints:
//!
//! 1. Rows go to a hidden in-progress file,
//!    `.part-<query>-<id>-<subtask>-<n>.inprogress`, created at the first row
//!    after a barrier.
//! 2. At the barrier of checkpoint `E` (`snapshot`) the file is flushed,
//!    synced and renamed to `.part-<query>-<id>-<subtask>-<E>.pending`
//!    before the subtask acknowledges: its rows belong to checkpoint `E`.
//! 3. When a checkpoint `C >= E` completed, the checkpointer (through the
//!    node's [`FileSinkCommitter`], after the checkpoint's record is
//!    durable and before `FLUSH` returns) renames the pending file to
//!    `part-<query>-<id>-<subtask>-<E>.csv` (or `.jsonl`), atomically.
//!    Readers only see finished files; the `file` source skips hidden ones.
//!
//! The directory is the sink's state (it keeps no keyed state): a run that
//! resumes from checkpoint `M` (`open`) renames the pending files of epochs
//! up to `M` (their checkpoint completed; the commit may have been cut
//! short by a crash), and deletes the in-progress files, the pending files
//! of later epochs and finished files of epochs after `M` (only after a
//! fallback to an older checkpoint: their rows come again). A fresh start
//! deletes every file of the query: it recomputes its results. So the
//! finished files hold each row exactly once. Files are named by the
//! query's name and catalog id, so queries sharing a directory, or a new
//! query with an old one's name, never touch each other's files. A subtask
//! handles the files of old subtask `j` when `j % parallelism` is its
//! index, so a restore at another parallelism leaves none behind.
//!
//! At the end of the input (`close`) the last file is sealed under the
//! epoch after the last one the subtask snapshotted: every checkpoint from
//! that one on includes the subtask's final snapshot, so the next one to
//! complete (at the next checkpoint interval, or `FLUSH`) commits it.
//!
//! File I/O runs in the subtask's task, as RocksDB state writes do: the
//! writes are buffered, and a barrier costs one `fsync` of the file and of
//! the directory.

use std::fs::{self, File};
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::csv;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::error::ArrowError;
use datafusion::arrow::json::{self, writer::LineDelimited};

use crate::chunk::Chunk;
use crate::error::{ExecError, ExecResult};
use crate::operator::{
    EpochCommitter, Operator, OperatorContext, OperatorFactory, Output, StateWriter,
};

/// Buffer of a part file's writer (CSV writes each batch through at its end).
pub const FILE_SINK_BUFFER_BYTES: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileSinkFormat {
    /// Comma-separated, no header, NULL as an empty field, timestamps as
    /// `2025-01-01T00:00:00.123` (Arrow's CSV writer).
    Csv,
    /// One JSON object per line, NULL as `null` (Arrow's line-delimited
    /// JSON writer).
    JsonLines,
}

impl FileSinkFormat {
    /// The name in `format = '...'`.
    pub fn name(self) -> &'static str {
        match self {
            FileSinkFormat::Csv => "csv",
            FileSinkFormat::JsonLines => "json",
        }
    }

    fn extension(self) -> &'static str {
        match self {
            FileSinkFormat::Csv => "csv",
            FileSinkFormat::JsonLines => "jsonl",
        }
    }
}

/// Where and how one query writes its files.
#[derive(Debug, Clone)]
pub struct FileSinkSpec {
    pub dir: PathBuf,
    pub format: FileSinkFormat,
    /// The query's name, for logs.
    query: String,
    /// `<query>-<id>`, the query's name restricted to `[A-Za-z0-9_]`.
    prefix: String,
}

/// The three states of a part file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PartState {
    InProgress,
    Pending,
    Finished,
}

fn io_error(what: String) -> impl FnOnce(std::io::Error) -> ExecError {
    move |e| ExecError::Storage(weir_storage::StorageError::io(what, e))
}

/// Arrow's writers report I/O failures as Arrow errors; those are the
/// disk's fault (external), not a bug.
fn write_error(path: &Path) -> impl FnOnce(ArrowError) -> ExecError + '_ {
    move |e| match e {
        ArrowError::IoError(_, source) => {
            io_error(format!("write file sink part {}", path.display()))(source)
        }
        other => ExecError::Arrow(other),
    }
}

/// Makes renames and deletions in `dir` durable.
fn sync_dir(dir: &Path) -> ExecResult<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(format!("sync directory {}", dir.display())))
}

impl FileSinkSpec {
    /// The sink of query `query` (catalog id `id`) writing into `dir`.
    pub fn new(dir: impl Into<PathBuf>, format: FileSinkFormat, query: &str, id: u64) -> Self {
        let name: String = query
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        FileSinkSpec {
            dir: dir.into(),
            format,
            query: query.to_string(),
            prefix: format!("{name}-{id}"),
        }
    }

    /// What EXPLAIN shows after `StreamFileSink`.
    pub fn explain(&self) -> String {
        format!("{} format={}", self.dir.display(), self.format.name())
    }

    /// Whether the format can hold every column: CSV has no nested values.
    pub fn check_schema(&self, schema: &SchemaRef) -> ExecResult<()> {
        if self.format != FileSinkFormat::Csv {
            return Ok(());
        }
        match schema.fields().iter().find(|f| f.data_type().is_nested()) {
            None => Ok(()),
            Some(f) => Err(ExecError::User {
                sqlstate: crate::SqlState::FEATURE_NOT_SUPPORTED,
                message: format!(
                    "the csv format cannot write column \"{}\" of type {}",
                    f.name(),
                    f.data_type()
                ),
                hint: Some("Use format = 'json', or select the column's elements.".into()),
            }),
        }
    }

    /// Creates the directory if needed and writes and deletes a probe
    /// file in it, so that a path the server cannot write is refused when
    /// the query is created rather than when it first checkpoints.
    pub fn check_writable(&self) -> ExecResult<()> {
        fs::create_dir_all(&self.dir).map_err(io_error(format!(
            "cannot create file sink directory {}",
            self.dir.display()
        )))?;
        let probe = self
            .dir
            .join(format!(".weir-write-check-{}", std::process::id()));
        File::create(&probe).map_err(io_error(format!(
            "cannot write in file sink directory {}",
            self.dir.display()
        )))?;
        let _ = fs::remove_file(&probe);
        Ok(())
    }

    fn part_path(&self, state: PartState, subtask: usize, epoch: u64) -> PathBuf {
        let name = match state {
            PartState::InProgress => format!(".part-{}-{subtask}-{epoch}.inprogress", self.prefix),
            PartState::Pending => format!(".part-{}-{subtask}-{epoch}.pending", self.prefix),
            PartState::Finished => format!(
                "part-{}-{subtask}-{epoch}.{}",
                self.prefix,
                self.format.extension()
            ),
        };
        self.dir.join(name)
    }

    /// (state, subtask, epoch) of one of this query's part files.
    fn parse(&self, name: &str) -> Option<(PartState, usize, u64)> {
        let (hidden, rest) = match name.strip_prefix('.') {
            Some(r) => (true, r),
            None => (false, name),
        };
        let rest = rest
            .strip_prefix("part-")?
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix('-')?;
        let (stem, ext) = rest.split_once('.')?;
        let (subtask, epoch) = stem.split_once('-')?;
        let state = match (hidden, ext) {
            (true, "inprogress") => PartState::InProgress,
            (true, "pending") => PartState::Pending,
            (false, e) if e == self.format.extension() => PartState::Finished,
            _ => return None,
        };
        Some((state, subtask.parse().ok()?, epoch.parse().ok()?))
    }
}

enum PartWriter {
    // Boxed: the CSV writer's buffers make it three times the JSON one.
    Csv(Box<csv::Writer<BufWriter<File>>>),
    Json(json::Writer<BufWriter<File>, LineDelimited>),
}

/// The file receiving the rows since the last barrier.
struct InProgress {
    path: PathBuf,
    writer: PartWriter,
}

impl InProgress {
    fn create(path: PathBuf, format: FileSinkFormat) -> ExecResult<InProgress> {
        let file = File::create(&path).map_err(io_error(format!(
            "create file sink part {}",
            path.display()
        )))?;
        let buf = BufWriter::with_capacity(FILE_SINK_BUFFER_BYTES, file);
        let writer = match format {
            FileSinkFormat::Csv => PartWriter::Csv(Box::new(
                csv::WriterBuilder::new().with_header(false).build(buf),
            )),
            FileSinkFormat::JsonLines => PartWriter::Json(
                json::WriterBuilder::new()
                    .with_explicit_nulls(true)
                    .build::<_, LineDelimited>(buf),
            ),
        };
        Ok(InProgress { path, writer })
    }

    fn write(&mut self, batch: &RecordBatch) -> ExecResult<()> {
        match &mut self.writer {
            PartWriter::Csv(w) => w.write(batch),
            PartWriter::Json(w) => w.write(batch),
        }
        .map_err(write_error(&self.path))
    }

    /// Flushes and syncs the file; returns its path.
    fn finish(self) -> ExecResult<PathBuf> {
        let buf = match self.writer {
            PartWriter::Csv(w) => w.into_inner(),
            PartWriter::Json(mut w) => {
                w.finish().map_err(write_error(&self.path))?;
                w.into_inner()
            }
        };
        let file = buf.into_inner().map_err(|e| {
            io_error(format!("write file sink part {}", self.path.display()))(e.into_error())
        })?;
        file.sync_all().map_err(io_error(format!(
            "sync file sink part {}",
            self.path.display()
        )))?;
        Ok(self.path)
    }
}

/// Builds the subtasks of one `StreamFileSink` node, and hands the
/// runtime their committer.
pub struct FileSinkFactory {
    committer: Arc<FileSinkCommitter>,
    schema: SchemaRef,
}

impl FileSinkFactory {
    /// `schema`: the query's output columns (names for JSON).
    pub fn new(spec: FileSinkSpec, schema: SchemaRef) -> Arc<FileSinkFactory> {
        Arc::new(FileSinkFactory {
            committer: FileSinkCommitter::new(spec),
            schema,
        })
    }
}

impl OperatorFactory for FileSinkFactory {
    fn create(&self, _subtask: usize, _parallelism: usize) -> ExecResult<Box<dyn Operator>> {
        Ok(Box::new(FileSinkOperator::new(
            self.committer.clone(),
            self.schema.clone(),
        )))
    }

    fn output_schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn committer(&self) -> Option<Arc<dyn EpochCommitter>> {
        Some(self.committer.clone())
    }
}

/// The pending parts of one sink node's subtasks, committed by the
/// checkpointer.
pub struct FileSinkCommitter {
    spec: FileSinkSpec,
    /// (subtask, epoch) of every pending part this process sealed and has
    /// not committed.
    sealed: Mutex<Vec<(usize, u64)>>,
}

impl FileSinkCommitter {
    pub fn new(spec: FileSinkSpec) -> Arc<FileSinkCommitter> {
        Arc::new(FileSinkCommitter {
            spec,
            sealed: Mutex::new(Vec::new()),
        })
    }

    /// Parts sealed and not committed yet.
    pub fn sealed(&self) -> usize {
        self.sealed.lock().len()
    }
}

impl EpochCommitter for FileSinkCommitter {
    fn commit(&self, epoch: u64) -> ExecResult<()> {
        let mut sealed = self.sealed.lock();
        let (mut ready, later): (Vec<_>, Vec<_>) = sealed.drain(..).partition(|(_, e)| *e <= epoch);
        *sealed = later;
        if ready.is_empty() {
            return Ok(());
        }
        ready.sort();
        for (k, &(subtask, e)) in ready.iter().enumerate() {
            let from = self.spec.part_path(PartState::Pending, subtask, e);
            let to = self.spec.part_path(PartState::Finished, subtask, e);
            if let Err(err) = fs::rename(&from, &to) {
                // Renamed already (a commit cut short by an error)?
                if err.kind() == std::io::ErrorKind::NotFound && to.exists() {
                    continue;
                }
                tracing::warn!(
                    query = %self.spec.query, operator = "StreamFileSink", subtask, epoch = e,
                    error = %err, "file sink part not committed; retried at the next checkpoint"
                );
                sealed.extend_from_slice(&ready[k..]);
                return Err(io_error(format!(
                    "commit file sink part {}",
                    from.display()
                ))(err));
            }
            tracing::debug!(
                query = %self.spec.query, operator = "StreamFileSink", subtask, epoch = e,
                "file sink part committed"
            );
        }
        drop(sealed);
        sync_dir(&self.spec.dir)
    }

    fn discard(&self, subtask: usize) {
        self.sealed.lock().retain(|(s, _)| *s != subtask);
    }
}

/// One subtask of `StreamFileSink`.
pub struct FileSinkOperator {
    committer: Arc<FileSinkCommitter>,
    schema: SchemaRef,
    subtask: usize,
    current: Option<InProgress>,
    /// The newest epoch snapshotted or restored: rows from now on belong
    /// to a later one.
    last_epoch: u64,
}

impl FileSinkOperator {
    /// `schema`: the query's output columns (names for JSON).
    pub fn new(committer: Arc<FileSinkCommitter>, schema: SchemaRef) -> Self {
        FileSinkOperator {
            committer,
            schema,
            subtask: 0,
            current: None,
            last_epoch: 0,
        }
    }

    fn spec(&self) -> &FileSinkSpec {
        &self.committer.spec
    }

    /// Settles the files of a previous run against checkpoint `restored`
    /// (0: none, everything goes).
    fn recover(&mut self, restored: u64, parallelism: usize) -> ExecResult<()> {
        let spec = self.spec();
        let dir = &spec.dir;
        fs::create_dir_all(dir).map_err(io_error(format!(
            "create file sink directory {}",
            dir.display()
        )))?;
        let entries =
            fs::read_dir(dir).map_err(io_error(format!("read directory {}", dir.display())))?;
        let (mut committed, mut discarded) = (0usize, 0usize);
        for entry in entries {
            let entry = entry.map_err(io_error(format!("read directory {}", dir.display())))?;
            let name = entry.file_name();
            let Some((state, subtask, epoch)) = spec.parse(&name.to_string_lossy()) else {
                continue;
            };
            if subtask % parallelism != self.subtask {
                continue;
            }
            let path = entry.path();
            match state {
                PartState::Pending if epoch <= restored => {
                    let to = spec.part_path(PartState::Finished, subtask, epoch);
                    fs::rename(&path, &to).map_err(io_error(format!(
                        "commit file sink part {}",
                        path.display()
                    )))?;
                    committed += 1;
                }
                PartState::Finished if epoch <= restored => {}
                _ => {
                    fs::remove_file(&path).map_err(io_error(format!(
                        "delete file sink part {}",
                        path.display()
                    )))?;
                    discarded += 1;
                }
            }
        }
        if committed + discarded > 0 {
            sync_dir(dir)?;
            tracing::info!(
                query = %spec.query, operator = "StreamFileSink", subtask = self.subtask,
                epoch = restored, committed, discarded, "file sink parts settled"
            );
        }
        self.last_epoch = restored;
        Ok(())
    }

    /// The rows so far belong to `epoch`: the in-progress file becomes
    /// pending, durably, and waits for the checkpointer.
    fn seal(&mut self, epoch: u64) -> ExecResult<()> {
        let Some(current) = self.current.take() else {
            return Ok(());
        };
        let from = current.finish()?;
        let to = self
            .spec()
            .part_path(PartState::Pending, self.subtask, epoch);
        fs::rename(&from, &to)
            .map_err(io_error(format!("seal file sink part {}", from.display())))?;
        sync_dir(&self.spec().dir)?;
        self.committer.sealed.lock().push((self.subtask, epoch));
        Ok(())
    }
}

impl Operator for FileSinkOperator {
    fn open(
        &mut self,
        ctx: &OperatorContext,
        _restored: bool,
        _out: &mut Output,
    ) -> ExecResult<()> {
        self.subtask = ctx.subtask;
        self.recover(ctx.restored_epoch.unwrap_or(0), ctx.parallelism.max(1))
    }

    fn on_chunk(&mut self, _input: usize, chunk: Chunk, _out: &mut Output) -> ExecResult<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        if !chunk.is_append_only() {
            return Err(ExecError::internal(
                "the file sink received a delete (the planner admits append-only queries only)",
            ));
        }
        let chunk = chunk.with_schema(self.schema.clone())?;
        if self.current.is_none() {
            let path =
                self.spec()
                    .part_path(PartState::InProgress, self.subtask, self.last_epoch + 1);
            self.current = Some(InProgress::create(path, self.spec().format)?);
        }
        self.current
            .as_mut()
            .expect("created above")
            .write(&chunk.batch)
    }

    fn on_watermark(&mut self, _watermark: i64, _out: &mut Output) -> ExecResult<()> {
        Ok(())
    }

    fn snapshot(&mut self, state: &mut StateWriter) -> ExecResult<()> {
        // The final snapshot (no epoch) follows `close`, which sealed.
        if let Some(epoch) = state.epoch() {
            self.seal(epoch)?;
            self.last_epoch = self.last_epoch.max(epoch);
        }
        Ok(())
    }

    fn close(&mut self, _out: &mut Output) -> ExecResult<()> {
        // Every checkpoint after the last one snapshotted includes this
        // subtask's final snapshot.
        self.seal(self.last_epoch + 1)
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int64Array, StringArray, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    use super::*;
    use crate::chunk::Op;

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
        ]))
    }

    /// Rows `(id, name, ms)`; a `None` name is NULL.
    fn rows(rows: &[(i64, Option<&str>, i64)]) -> Chunk {
        Chunk::inserts(
            RecordBatch::try_new(
                schema(),
                vec![
                    Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.0))),
                    Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1))),
                    Arc::new(TimestampMillisecondArray::from_iter_values(
                        rows.iter().map(|r| r.2),
                    )),
                ],
            )
            .unwrap(),
        )
    }

    struct Dir(PathBuf);

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn temp_dir() -> Dir {
        static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "weir-file-sink-{}-{}",
            std::process::id(),
            RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&dir);
        Dir(dir)
    }

    fn ctx(subtask: usize, parallelism: usize, restored_epoch: Option<u64>) -> OperatorContext {
        OperatorContext {
            query: "q".into(),
            operator: "StreamFileSink".into(),
            subtask,
            parallelism,
            state: None,
            restored_epoch,
            reemit: false,
        }
    }

    fn committer(dir: &Path, format: FileSinkFormat) -> Arc<FileSinkCommitter> {
        FileSinkCommitter::new(FileSinkSpec::new(dir, format, "my-q", 7))
    }

    /// A subtask as the runtime opens it: its own context, the node's
    /// committer.
    fn sink(committer: &Arc<FileSinkCommitter>, c: &OperatorContext) -> FileSinkOperator {
        let mut op = FileSinkOperator::new(committer.clone(), schema());
        op.open(c, c.restored_epoch.is_some(), &mut Output::default())
            .unwrap();
        op
    }

    fn write(op: &mut FileSinkOperator, chunk: Chunk) {
        op.on_chunk(0, chunk, &mut Output::default()).unwrap();
    }

    fn barrier(op: &mut FileSinkOperator, epoch: u64) {
        op.snapshot(&mut StateWriter::new(false).at_epoch(Some(epoch)))
            .unwrap();
    }

    /// name → contents of the files a reader sees (not hidden).
    fn visible(dir: &Path) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .map(|n| (n.clone(), fs::read_to_string(dir.join(&n)).unwrap()))
            .collect();
        out.sort();
        out
    }

    fn hidden(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('.'))
            .collect();
        out.sort();
        out
    }

    const T0: i64 = 1_735_689_600_000; // 2025-01-01 00:00:00 UTC

    #[test]
    fn rows_become_visible_only_when_their_checkpoint_completes() {
        let d = temp_dir();
        let cm = committer(&d.0, FileSinkFormat::Csv);
        let mut op = sink(&cm, &ctx(0, 1, None));
        write(&mut op, rows(&[(1, Some("a"), T0), (2, None, T0 + 1500)]));
        assert_eq!(visible(&d.0), vec![], "before any barrier");
        assert_eq!(hidden(&d.0), vec![".part-my_q-7-0-1.inprogress"]);

        barrier(&mut op, 1);
        write(&mut op, rows(&[(3, Some("x,\"y\""), T0 + 2000)]));
        assert_eq!(visible(&d.0), vec![], "sealed, checkpoint 1 not complete");
        assert_eq!(cm.sealed(), 1);

        cm.commit(1).unwrap();
        assert_eq!(
            visible(&d.0),
            vec![(
                "part-my_q-7-0-1.csv".to_string(),
                "1,a,2025-01-01T00:00:00\n2,,2025-01-01T00:00:01.500\n".to_string()
            )]
        );
        assert_eq!(cm.sealed(), 0);

        // Checkpoint 2 failed; 3 completes and covers what 2 sealed.
        barrier(&mut op, 2);
        write(&mut op, rows(&[(4, Some("d"), T0)]));
        barrier(&mut op, 3);
        cm.commit(1).unwrap();
        assert_eq!(visible(&d.0).len(), 1, "commit of an older epoch");
        cm.commit(3).unwrap();
        let v = visible(&d.0);
        assert_eq!(v.len(), 3, "{v:?}");
        assert_eq!(v[1].1, "3,\"x,\"\"y\"\"\",2025-01-01T00:00:02\n");
        assert_eq!(v[2].1, "4,d,2025-01-01T00:00:00\n");
        assert_eq!(hidden(&d.0), Vec::<String>::new());
    }

    #[test]
    fn end_of_input_seals_under_the_next_epoch() {
        let d = temp_dir();
        let cm = committer(&d.0, FileSinkFormat::JsonLines);
        let mut op = sink(&cm, &ctx(0, 1, Some(4)));
        write(&mut op, rows(&[(1, None, T0)]));
        barrier(&mut op, 5);
        write(&mut op, rows(&[(2, Some("b"), T0)]));
        op.close(&mut Output::default()).unwrap();
        // The final snapshot takes no epoch and changes nothing.
        op.snapshot(&mut StateWriter::new(true)).unwrap();
        cm.commit(5).unwrap();
        assert_eq!(
            visible(&d.0),
            vec![(
                "part-my_q-7-0-5.jsonl".to_string(),
                "{\"id\":1,\"name\":null,\"ts\":\"2025-01-01T00:00:00\"}\n".to_string()
            )]
        );
        assert_eq!(cm.sealed(), 1, "the last part waits for checkpoint 6");
        drop(op);
        cm.commit(7).unwrap();
        assert_eq!(cm.sealed(), 0);
        assert_eq!(visible(&d.0)[1].0, "part-my_q-7-0-6.jsonl");
    }

    #[test]
    fn a_restore_commits_pending_parts_it_covers_and_discards_the_rest() {
        let d = temp_dir();
        // Run 1, two subtasks: subtask 0 seals epochs 1 and 2 and writes on;
        // checkpoint 1 completes, 2 does too but the process dies before
        // the commit; subtask 1 sealed 3, which never completed.
        let cm = committer(&d.0, FileSinkFormat::Csv);
        let mut a = sink(&cm, &ctx(0, 2, None));
        let mut b = sink(&cm, &ctx(1, 2, None));
        write(&mut a, rows(&[(1, Some("a"), T0)]));
        barrier(&mut a, 1);
        cm.commit(1).unwrap();
        write(&mut a, rows(&[(2, Some("b"), T0)]));
        barrier(&mut a, 2);
        write(&mut a, rows(&[(3, Some("c"), T0)]));
        write(&mut b, rows(&[(10, Some("z"), T0)]));
        barrier(&mut b, 3);
        write(&mut b, rows(&[(11, Some("y"), T0)]));
        drop((a, b));
        assert_eq!(visible(&d.0).len(), 1);
        // Another query's files in the same directory are not touched.
        let other = FileSinkSpec::new(&d.0, FileSinkFormat::Csv, "other", 8);
        fs::write(other.part_path(PartState::Pending, 0, 1), "9\n").unwrap();

        // Run 2 (a new process: a new committer) resumes from checkpoint
        // 2 with one subtask.
        let cm = committer(&d.0, FileSinkFormat::Csv);
        let mut op = sink(&cm, &ctx(0, 1, Some(2)));
        let names: Vec<String> = visible(&d.0).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["part-my_q-7-0-1.csv", "part-my_q-7-0-2.csv"]);
        assert_eq!(hidden(&d.0), vec![".part-other-8-0-1.pending"]);
        // The rows after checkpoint 2 come again and are committed once.
        write(&mut op, rows(&[(3, Some("c"), T0), (10, Some("z"), T0)]));
        barrier(&mut op, 3);
        cm.commit(3).unwrap();
        let all: String = visible(&d.0).into_iter().map(|(_, c)| c).collect();
        let mut ids: Vec<&str> = all.lines().map(|l| &l[..l.find(',').unwrap()]).collect();
        ids.sort();
        assert_eq!(ids, vec!["1", "10", "2", "3"]);
        drop(op);

        // A fallback to checkpoint 1 (2 and 3 unreadable): parts of later
        // epochs go, their rows are replayed.
        let _op = sink(&cm, &ctx(0, 1, Some(1)));
        let names: Vec<String> = visible(&d.0).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, vec!["part-my_q-7-0-1.csv"]);

        // A fresh start (no usable checkpoint) recomputes: nothing is kept.
        let _op = sink(&cm, &ctx(0, 1, None));
        assert_eq!(visible(&d.0), vec![]);
        assert_eq!(hidden(&d.0), vec![".part-other-8-0-1.pending"]);
    }

    #[test]
    fn a_failed_commit_is_retried_and_a_restarted_subtask_is_forgotten() {
        let d = temp_dir();
        let cm = committer(&d.0, FileSinkFormat::Csv);
        let mut a = sink(&cm, &ctx(0, 2, None));
        let mut b = sink(&cm, &ctx(1, 2, None));
        write(&mut a, rows(&[(1, Some("a"), T0)]));
        write(&mut b, rows(&[(2, Some("b"), T0)]));
        barrier(&mut a, 1);
        barrier(&mut b, 1);
        // The directory is gone for a moment: the commit fails, nothing is
        // lost, and the next checkpoint's commit makes both visible.
        let moved = d.0.with_extension("moved");
        fs::rename(&d.0, &moved).unwrap();
        assert!(cm.commit(1).is_err());
        assert_eq!(cm.sealed(), 2);
        fs::rename(&moved, &d.0).unwrap();
        cm.commit(2).unwrap();
        assert_eq!(visible(&d.0).len(), 2);

        // Subtask 1 restarts (region failover): what it sealed is not
        // committed; its new instance deletes the file.
        write(&mut a, rows(&[(3, Some("c"), T0)]));
        write(&mut b, rows(&[(4, Some("d"), T0)]));
        barrier(&mut a, 3);
        barrier(&mut b, 3);
        cm.discard(1);
        let _b = sink(&cm, &ctx(1, 2, Some(2)));
        cm.commit(3).unwrap();
        let names: Vec<String> = visible(&d.0).into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            vec![
                "part-my_q-7-0-1.csv",
                "part-my_q-7-0-3.csv",
                "part-my_q-7-1-1.csv"
            ]
        );
        assert_eq!(hidden(&d.0), Vec::<String>::new());
    }

    #[test]
    fn deletes_and_nested_csv_columns_are_refused() {
        let d = temp_dir();
        let mut op = sink(&committer(&d.0, FileSinkFormat::Csv), &ctx(0, 1, None));
        let del = Chunk::new(rows(&[(1, None, T0)]).batch, vec![Op::Delete]);
        assert!(op.on_chunk(0, del, &mut Output::default()).is_err());

        let spec = FileSinkSpec::new(&d.0, FileSinkFormat::Csv, "q", 1);
        let nested = Arc::new(Schema::new(vec![Field::new(
            "l",
            DataType::List(Arc::new(Field::new("item", DataType::Int64, true))),
            true,
        )]));
        let err = spec.check_schema(&nested).unwrap_err();
        assert_eq!(err.sqlstate().code(), "0A000");
        let json = FileSinkSpec::new(&d.0, FileSinkFormat::JsonLines, "q", 1);
        json.check_schema(&nested).unwrap();
    }

    #[test]
    fn an_unwritable_directory_is_refused() {
        let d = temp_dir();
        fs::create_dir_all(&d.0).unwrap();
        let file = d.0.join("plain");
        fs::write(&file, "x").unwrap();
        let spec = FileSinkSpec::new(file.join("out"), FileSinkFormat::Csv, "q", 1);
        let err = spec.check_writable().unwrap_err();
        assert_eq!(err.sqlstate().code(), "58030");
        assert!(
            err.message().contains("cannot create file sink directory"),
            "{}",
            err.message()
        );
        FileSinkSpec::new(d.0.join("out"), FileSinkFormat::Csv, "q", 1)
            .check_writable()
            .unwrap();
    }
}
