//! Live tables: the durable inputs (`CREATE TABLE`) and the materialized
//! results of streaming queries.
//!
//! A table keeps its current contents in memory (for ad hoc `SELECT`, for
//! `UPDATE`/`DELETE` lookups and as the starting snapshot of a new reader)
//! and a change log with offsets. For base tables the log lives in RocksDB and
//! every write is synced there before it is applied and acknowledged; result
//! tables keep the tail of their log in memory, only as long as a reader
//! (a downstream query) still needs it.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::OwnedRow;
use parking_lot::Mutex;
use tokio::sync::watch;
use weir_storage::{decode_batch, encode_batch, Store};

use crate::chunk::{Chunk, Op};
use crate::error::{ExecError, ExecResult};
use crate::keys::KeyEncoder;

/// What a table is: identity, schema and primary key (column indices).
#[derive(Debug, Clone)]
pub struct TableDesc {
    pub id: u64,
    pub name: String,
    pub schema: SchemaRef,
    pub primary_key: Vec<usize>,
    /// `WATERMARK FOR ... AS <expr>`: evaluated over the rows a source
    /// emits; the watermark is the largest value seen.
    pub watermark: Option<Arc<dyn datafusion::physical_expr::PhysicalExpr>>,
}

enum Contents {
    /// Primary-key table: pk row → full row.
    Keyed(HashMap<OwnedRow, OwnedRow>),
    /// Multiset of full rows.
    Multiset(HashMap<OwnedRow, i64>),
}

impl Contents {
    /// Number of rows (a multiset row counts as often as it occurs).
    fn len(&self) -> usize {
        match self {
            Contents::Keyed(m) => m.len(),
            Contents::Multiset(m) => m.values().map(|c| (*c).max(0) as usize).sum(),
        }
    }
}

struct Inner {
    version: u64,
    contents: Contents,
    /// In-memory tail of the log (result tables only).
    mem_log: VecDeque<(u64, Chunk)>,
    /// Reader id → last offset it has read.
    readers: HashMap<u64, u64>,
    next_reader: u64,
    cache: Option<RecordBatch>,
}

/// Rows logged through each offset (index = offset; 0 at index 0), for
/// source lag in rows. Apart from the table's main lock, which a large
/// write holds for long.
#[derive(Default)]
struct RowsThrough(parking_lot::RwLock<Vec<u64>>);

impl RowsThrough {
    fn log(&self, offset: u64, rows: usize) {
        let mut v = self.0.write();
        if v.is_empty() {
            v.push(0);
        }
        let last = *v.last().expect("starts with 0");
        while (v.len() as u64) < offset {
            v.push(last);
        }
        v.push(last + rows as u64);
    }

    fn after(&self, pos: u64) -> u64 {
        let v = self.0.read();
        let total = v.last().copied().unwrap_or(0);
        total - v.get(pos as usize).copied().unwrap_or(total)
    }
}

pub struct Table {
    pub desc: TableDesc,
    /// The result table of a streaming query (written only by its commits).
    result: bool,
    store: Option<Arc<Store>>,
    row_enc: KeyEncoder,
    pk_enc: Option<KeyEncoder>,
    inner: Mutex<Inner>,
    version_tx: watch::Sender<u64>,
    rows_through: RowsThrough,
    /// A source (`connector = 'file' | 'nexmark' | 'datagen'`): it holds no
    /// rows of its own; streaming queries read the connector.
    connector: Option<Arc<dyn crate::connectors::SourceConnector>>,
}

/// How a write is checked before it is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteCheck {
    /// User DML: primary keys unique, NOT NULL respected, deleted rows exist.
    Constraints,
    /// Output of a streaming query: applied as is.
    None,
}

/// Rows read from the log since a position.
pub const READ_BATCH_ENTRIES: usize = 64;

impl Table {
    fn build(desc: TableDesc, store: Option<Arc<Store>>) -> ExecResult<Table> {
        let types: Vec<_> = desc
            .schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let row_enc = KeyEncoder::new(&types)?;
        let pk_enc = if desc.primary_key.is_empty() {
            None
        } else {
            let pk_types: Vec<_> = desc.primary_key.iter().map(|i| types[*i].clone()).collect();
            Some(KeyEncoder::new(&pk_types)?)
        };
        let contents = if pk_enc.is_some() {
            Contents::Keyed(HashMap::new())
        } else {
            Contents::Multiset(HashMap::new())
        };
        let (version_tx, _) = watch::channel(0);
        Ok(Table {
            desc,
            result: false,
            connector: None,
            store,
            row_enc,
            pk_enc,
            inner: Mutex::new(Inner {
                version: 0,
                contents,
                mem_log: VecDeque::new(),
                readers: HashMap::new(),
                next_reader: 0,
                cache: None,
            }),
            version_tx,
            rows_through: RowsThrough::default(),
        })
    }

    /// A durable base table; replays its log from the store.
    pub fn open_durable(desc: TableDesc, store: Arc<Store>) -> ExecResult<Arc<Table>> {
        Table::open_logged(desc, store, false)
    }

    /// The result table of a streaming query: its log holds the changes of
    /// completed checkpoints, replayed here.
    pub fn open_result(desc: TableDesc, store: Arc<Store>) -> ExecResult<Arc<Table>> {
        Table::open_logged(desc, store, true)
    }

    fn open_logged(desc: TableDesc, store: Arc<Store>, result: bool) -> ExecResult<Arc<Table>> {
        Ok(Arc::new(Table::replayed(desc, store, result, u64::MAX)?))
    }

    /// A table holding its log replayed through offset `through`.
    fn replayed(
        desc: TableDesc,
        store: Arc<Store>,
        result: bool,
        through: u64,
    ) -> ExecResult<Table> {
        let mut table = Table::build(desc, Some(store.clone()))?;
        table.result = result;
        {
            let mut inner = table.inner.lock();
            let mut from = 0;
            'read: loop {
                let entries = store.read_log(table.desc.id, from, 1024)?;
                if entries.is_empty() {
                    break;
                }
                for e in entries {
                    if e.offset > through {
                        break 'read;
                    }
                    let chunk =
                        Chunk::from_stored_batch(decode_batch(&e.payload)?, &table.desc.schema)?;
                    table.apply(&mut inner, &chunk)?;
                    inner.version = e.offset;
                    table.rows_through.log(e.offset, chunk.num_rows());
                    from = e.offset + 1;
                }
            }
            table.version_tx.send_replace(inner.version);
        }
        Ok(table)
    }

    /// The contents as they were at log offset `version` (a result table's
    /// earlier checkpoint), read back from the log.
    pub fn contents_at(&self, version: u64) -> ExecResult<RecordBatch> {
        let Some(store) = &self.store else {
            return Err(ExecError::internal(format!(
                "table \"{}\" has no log to read an earlier version from",
                self.desc.name
            )));
        };
        Table::replayed(self.desc.clone(), store.clone(), self.result, version)?.snapshot()
    }

    /// A source: streaming queries read its connector.
    pub fn new_source(
        desc: TableDesc,
        connector: Arc<dyn crate::connectors::SourceConnector>,
    ) -> ExecResult<Arc<Table>> {
        let mut table = Table::build(desc, None)?;
        table.connector = Some(connector);
        Ok(Arc::new(table))
    }

    /// The connector of a source table.
    pub fn connector(&self) -> Option<&Arc<dyn crate::connectors::SourceConnector>> {
        self.connector.as_ref()
    }

    /// Whether the table only ever gains rows: a source (its rows come from
    /// a connector and cannot be updated or deleted). Operators downstream
    /// may then keep less state (a top-N keeps only its top rows).
    pub fn is_append_only(&self) -> bool {
        self.connector.is_some()
    }

    /// An in-memory table (tests; nothing survives a restart).
    pub fn new_in_memory(desc: TableDesc) -> ExecResult<Arc<Table>> {
        Ok(Arc::new(Table::build(desc, None)?))
    }

    /// First half of a checkpoint commit of a result table: the log entries
    /// (offset, payload) for `chunks`, to be written in the checkpoint's
    /// atomic batch. Only the table's one committer may call this.
    pub fn prepare_commit(&self, chunks: &[Chunk]) -> ExecResult<Vec<(u64, Vec<u8>)>> {
        let first = self.inner.lock().version + 1;
        chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let c = c.clone().with_schema(self.desc.schema.clone())?;
                Ok((first + i as u64, encode_batch(&c.to_stored_batch()?)?))
            })
            .collect()
    }

    /// Second half: applies the chunks once their log entries are durable.
    pub fn apply_committed(&self, chunks: Vec<Chunk>) -> ExecResult<()> {
        if chunks.is_empty() {
            return Ok(());
        }
        let mut inner = self.inner.lock();
        for c in chunks {
            let c = c.with_schema(self.desc.schema.clone())?;
            self.apply(&mut inner, &c)?;
            inner.version += 1;
            self.rows_through.log(inner.version, c.num_rows());
        }
        let v = inner.version;
        drop(inner);
        self.version_tx.send_replace(v);
        Ok(())
    }

    /// Rows logged after offset `pos` (a reader's position): its lag.
    pub fn rows_after(&self, pos: u64) -> u64 {
        self.rows_through.after(pos)
    }

    /// The table's watermark expression (`WATERMARK FOR`), if any.
    pub fn watermark_expr(&self) -> Option<Arc<dyn datafusion::physical_expr::PhysicalExpr>> {
        self.desc.watermark.clone()
    }

    /// The log id of a durable table.
    pub fn log_id(&self) -> u64 {
        self.desc.id
    }

    pub fn schema(&self) -> SchemaRef {
        self.desc.schema.clone()
    }

    pub fn version(&self) -> u64 {
        self.inner.lock().version
    }

    /// Watches the table's latest offset.
    pub fn version_watch(&self) -> watch::Receiver<u64> {
        self.version_tx.subscribe()
    }

    pub fn is_durable(&self) -> bool {
        self.store.is_some()
    }

    pub fn is_result(&self) -> bool {
        self.result
    }

    pub fn row_count(&self) -> usize {
        self.inner.lock().contents.len()
    }

    /// Fails (42809) for a source: its rows come from its connector.
    pub fn check_writable(&self) -> ExecResult<()> {
        match &self.connector {
            Some(connector) => Err(ExecError::user(
                crate::SqlState::WRONG_OBJECT_TYPE,
                format!(
                    "cannot change source \"{}\": its rows come from its {} connector",
                    self.desc.name,
                    connector.name()
                ),
            )),
            None => Ok(()),
        }
    }

    /// Writes a chunk of changes. Returns the number of rows changed. For a
    /// durable table the change is synced to the log before it is applied.
    pub fn write(&self, chunk: Chunk, check: WriteCheck) -> ExecResult<u64> {
        self.check_writable()?;
        let chunk = chunk.with_schema(self.desc.schema.clone())?;
        if chunk.is_empty() {
            return Ok(0);
        }
        let mut inner = self.inner.lock();
        if check == WriteCheck::Constraints {
            self.check_not_null(&chunk)?;
            self.check_keys(&inner, &chunk)?;
        }
        let offset = inner.version + 1;
        if let Some(store) = &self.store {
            let payload = encode_batch(&chunk.to_stored_batch()?)?;
            store.append_log(self.desc.id, offset, &payload)?;
        }
        self.apply(&mut inner, &chunk)?;
        inner.version = offset;
        self.rows_through.log(offset, chunk.num_rows());
        if self.store.is_none() {
            if inner.readers.is_empty() {
                inner.mem_log.clear();
            } else {
                inner.mem_log.push_back((offset, chunk.clone()));
            }
        }
        drop(inner);
        self.version_tx.send_replace(offset);
        Ok(chunk.num_rows() as u64)
    }

    fn pk_columns(&self, batch: &RecordBatch) -> Vec<ArrayRef> {
        self.desc
            .primary_key
            .iter()
            .map(|i| batch.column(*i).clone())
            .collect()
    }

    fn check_not_null(&self, chunk: &Chunk) -> ExecResult<()> {
        for (i, field) in self.desc.schema.fields().iter().enumerate() {
            if field.is_nullable() {
                continue;
            }
            let col = chunk.batch.column(i);
            if col.null_count() > 0 {
                return Err(ExecError::user(
                    crate::SqlState::NOT_NULL_VIOLATION,
                    format!(
                        "null value in column \"{}\" of relation \"{}\" violates not-null constraint",
                        field.name(),
                        self.desc.name
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_keys(&self, inner: &Inner, chunk: &Chunk) -> ExecResult<()> {
        match (&inner.contents, &self.pk_enc) {
            (Contents::Keyed(rows), Some(pk_enc)) => {
                let pk_cols = self.pk_columns(&chunk.batch);
                let keys = pk_enc.encode(&pk_cols)?;
                let mut overlay: HashMap<OwnedRow, bool> = HashMap::new();
                for i in 0..chunk.num_rows() {
                    let key = keys.row(i).owned();
                    let present = overlay
                        .get(&key)
                        .copied()
                        .unwrap_or_else(|| rows.contains_key(&key));
                    match chunk.op(i) {
                        Op::Insert if present => {
                            let names: Vec<&str> = self
                                .desc
                                .primary_key
                                .iter()
                                .map(|c| self.desc.schema.field(*c).name().as_str())
                                .collect();
                            return Err(ExecError::User {
                                sqlstate: crate::SqlState::UNIQUE_VIOLATION,
                                message: format!(
                                    "duplicate key value violates unique constraint \"{}_pkey\"",
                                    self.desc.name
                                ),
                                hint: Some(format!("Key ({}) already exists.", names.join(", "))),
                            });
                        }
                        Op::Insert => {
                            overlay.insert(key, true);
                        }
                        Op::Delete if !present => {
                            return Err(ExecError::internal(format!(
                                "delete of a missing row in \"{}\"",
                                self.desc.name
                            )));
                        }
                        Op::Delete => {
                            overlay.insert(key, false);
                        }
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn apply(&self, inner: &mut Inner, chunk: &Chunk) -> ExecResult<()> {
        inner.cache = None;
        let rows = self.row_enc.encode(chunk.batch.columns())?;
        match &mut inner.contents {
            Contents::Keyed(map) => {
                let pk_enc = self.pk_enc.as_ref().expect("keyed table has a pk encoder");
                let pk_cols = self.pk_columns(&chunk.batch);
                let keys = pk_enc.encode(&pk_cols)?;
                for i in 0..chunk.num_rows() {
                    match chunk.op(i) {
                        Op::Insert => {
                            map.insert(keys.row(i).owned(), rows.row(i).owned());
                        }
                        Op::Delete => {
                            map.remove(&keys.row(i).owned());
                        }
                    }
                }
            }
            Contents::Multiset(map) => {
                for i in 0..chunk.num_rows() {
                    let key = rows.row(i).owned();
                    let sign = chunk.op(i).sign();
                    let count = map.entry(key.clone()).or_insert(0);
                    *count += sign;
                    if *count == 0 {
                        map.remove(&key);
                    }
                }
            }
        }
        Ok(())
    }

    /// The current contents as one batch.
    pub fn snapshot(&self) -> ExecResult<RecordBatch> {
        let mut inner = self.inner.lock();
        self.snapshot_locked(&mut inner)
    }

    fn snapshot_locked(&self, inner: &mut Inner) -> ExecResult<RecordBatch> {
        if let Some(batch) = &inner.cache {
            return Ok(batch.clone());
        }
        let columns = match &inner.contents {
            Contents::Keyed(map) => self.row_enc.decode(map.values().map(|r| r.row()))?,
            Contents::Multiset(map) => self.row_enc.decode(
                map.iter()
                    .flat_map(|(r, c)| std::iter::repeat_n(r.row(), (*c).max(0) as usize)),
            )?,
        };
        let n = columns
            .first()
            .map_or_else(|| inner.contents.len(), |c| c.len());
        let batch = RecordBatch::try_new_with_options(
            self.desc.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        inner.cache = Some(batch.clone());
        Ok(batch)
    }

    /// Looks up the current rows for the given primary keys (for UPDATE).
    pub fn lookup_by_key(&self, batch: &RecordBatch) -> ExecResult<Vec<Option<OwnedRow>>> {
        let inner = self.inner.lock();
        let (Contents::Keyed(map), Some(pk_enc)) = (&inner.contents, &self.pk_enc) else {
            return Err(ExecError::internal(
                "lookup by key on a table without primary key",
            ));
        };
        let pk_cols = self.pk_columns(batch);
        let keys = pk_enc.encode(&pk_cols)?;
        Ok((0..batch.num_rows())
            .map(|i| map.get(&keys.row(i).owned()).cloned())
            .collect())
    }

    /// Starts a reader: the current contents as inserts, then every change
    /// after them through [`TableReader::read`].
    pub fn reader(self: &Arc<Self>) -> ExecResult<(Chunk, TableReader)> {
        let mut inner = self.inner.lock();
        let snapshot = self.snapshot_locked(&mut inner)?;
        let id = inner.next_reader;
        inner.next_reader += 1;
        let pos = inner.version;
        if self.store.is_none() {
            inner.readers.insert(id, pos);
        }
        drop(inner);
        Ok((
            Chunk::inserts(snapshot),
            TableReader {
                table: self.clone(),
                id,
                pos,
                watch: self.version_tx.subscribe(),
            },
        ))
    }

    /// A reader that starts after log offset `pos` (a checkpointed source
    /// offset), without a snapshot. Durable tables only: their log is kept.
    pub fn reader_from(self: &Arc<Self>, pos: u64) -> ExecResult<TableReader> {
        if self.store.is_none() {
            return Err(ExecError::internal(format!(
                "table \"{}\" keeps no log to resume from",
                self.desc.name
            )));
        }
        let mut inner = self.inner.lock();
        if pos > inner.version {
            return Err(ExecError::internal(format!(
                "checkpointed offset {pos} of table \"{}\" is beyond its log end {}",
                self.desc.name, inner.version
            )));
        }
        let id = inner.next_reader;
        inner.next_reader += 1;
        drop(inner);
        Ok(TableReader {
            table: self.clone(),
            id,
            pos,
            watch: self.version_tx.subscribe(),
        })
    }

    fn read_since(&self, reader: u64, after: u64, limit: u64) -> ExecResult<Vec<(u64, Chunk)>> {
        if let Some(store) = &self.store {
            let entries = store.read_log(self.desc.id, after + 1, READ_BATCH_ENTRIES)?;
            return entries
                .into_iter()
                .filter(|e| e.offset <= limit)
                .map(|e| {
                    Ok((
                        e.offset,
                        Chunk::from_stored_batch(decode_batch(&e.payload)?, &self.desc.schema)?,
                    ))
                })
                .collect();
        }
        let mut inner = self.inner.lock();
        let out: Vec<(u64, Chunk)> = inner
            .mem_log
            .iter()
            .filter(|(off, _)| *off > after && *off <= limit)
            .take(READ_BATCH_ENTRIES)
            .cloned()
            .collect();
        let new_pos = out.last().map_or(after, |(o, _)| *o);
        inner.readers.insert(reader, new_pos);
        let min = inner.readers.values().copied().min().unwrap_or(u64::MAX);
        while inner.mem_log.front().is_some_and(|(o, _)| *o <= min) {
            inner.mem_log.pop_front();
        }
        Ok(out)
    }

    fn drop_reader(&self, reader: u64) {
        let mut inner = self.inner.lock();
        inner.readers.remove(&reader);
        let min = inner.readers.values().copied().min().unwrap_or(u64::MAX);
        while inner.mem_log.front().is_some_and(|(o, _)| *o <= min) {
            inner.mem_log.pop_front();
        }
    }

    /// Decodes stored full rows (from [`Table::lookup_by_key`]) into columns.
    pub fn decode_rows<'a>(
        &self,
        rows: impl IntoIterator<Item = &'a OwnedRow>,
    ) -> ExecResult<Vec<ArrayRef>> {
        self.row_enc.decode_owned(rows)
    }
}

/// A position in a table's change log.
pub struct TableReader {
    table: Arc<Table>,
    id: u64,
    pos: u64,
    watch: watch::Receiver<u64>,
}

impl TableReader {
    /// The offset of the last change this reader returned.
    pub fn position(&self) -> u64 {
        self.pos
    }

    pub fn table(&self) -> &Arc<Table> {
        &self.table
    }

    /// Next changes after the position (possibly none).
    pub fn read(&mut self) -> ExecResult<Vec<Chunk>> {
        self.read_up_to(u64::MAX)
    }

    /// Like [`TableReader::read`], but not past offset `limit`.
    pub fn read_up_to(&mut self, limit: u64) -> ExecResult<Vec<Chunk>> {
        Ok(self
            .read_entries_up_to(limit)?
            .into_iter()
            .map(|(_, c)| c)
            .collect())
    }

    /// Like [`TableReader::read_up_to`], with each change's log offset.
    pub fn read_entries_up_to(&mut self, limit: u64) -> ExecResult<Vec<(u64, Chunk)>> {
        let entries = self.table.read_since(self.id, self.pos, limit)?;
        if let Some((off, _)) = entries.last() {
            self.pos = *off;
        }
        Ok(entries)
    }

    /// Whether changes exist past the position.
    pub fn has_more(&self) -> bool {
        *self.watch.borrow() > self.pos
    }

    /// Waits until the table has changes past the position.
    pub async fn changed(&mut self) {
        let pos = self.pos;
        let _ = self.watch.wait_for(|v| *v > pos).await;
    }
}

impl Drop for TableReader {
    fn drop(&mut self) {
        self.table.drop_reader(self.id);
    }
}
