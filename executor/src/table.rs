//! Live tables: the durable inputs (`CREATE TABLE`) and the materialized
//! results of streaming queries.
//!
//! A table's rows live in RocksDB (`weir_storage::TableWrite`), keyed by
//! its primary key, or by the whole row with a count for a table without
//! one; every change is written with its change-log entry in one synced
//! batch, before it is acknowledged. Nothing is held in memory but the
//! table's offset and counts, so opening a table reads neither its rows nor
//! its log. An ad hoc SELECT and a new reader scan a RocksDB snapshot taken
//! at an offset; readers then follow the log after it. The log is truncated
//! from the front once no reader needs it (see `truncate_log_through`).

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use parking_lot::Mutex;
use tokio::sync::watch;
use weir_storage::{decode_batch, encode_batch, LogMeta, Store, StoreSnapshot, TableWrite};

use crate::chunk::{Chunk, Op};
use crate::error::{ExecError, ExecResult};

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

struct Inner {
    /// Offset of the last log entry.
    version: u64,
    /// Rows in the table, and rows logged from the beginning.
    meta: LogMeta,
    /// Reader id → last offset it has read (the log after the smallest is
    /// still needed).
    readers: HashMap<u64, u64>,
    next_reader: u64,
}

pub struct Table {
    pub desc: TableDesc,
    /// The result table of a streaming query (written only by its commits).
    result: bool,
    store: Option<Arc<Store>>,
    row_enc: RowConverter,
    pk_enc: Option<RowConverter>,
    inner: Mutex<Inner>,
    version_tx: watch::Sender<u64>,
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

/// Rows per chunk of a snapshot scan.
pub const SCAN_BATCH_ROWS: usize = 8192;

/// Log entries replayed per batch when a table written before rows were
/// stored is brought up to date.
const MIGRATE_BATCH_ENTRIES: usize = 256;

fn converter(types: &[datafusion::arrow::datatypes::DataType]) -> ExecResult<RowConverter> {
    Ok(RowConverter::new(
        types.iter().map(|t| SortField::new(t.clone())).collect(),
    )?)
}

fn count_value(count: i64) -> Vec<u8> {
    count.to_be_bytes().to_vec()
}

fn count_of(value: &[u8]) -> ExecResult<i64> {
    let b: [u8; 8] = value
        .try_into()
        .map_err(|_| ExecError::internal("stored row count is not 8 bytes"))?;
    Ok(i64::from_be_bytes(b))
}

/// Which rows of a table a scan reads: keys (primary key, or the whole row
/// of a table without one) in an order-preserving encoding.
#[derive(Debug, Clone)]
pub struct KeyRange {
    pub lower: Bound<Vec<u8>>,
    pub upper: Bound<Vec<u8>>,
}

impl KeyRange {
    pub fn all() -> KeyRange {
        KeyRange {
            lower: Bound::Unbounded,
            upper: Bound::Unbounded,
        }
    }
}

impl Table {
    fn build(desc: TableDesc, store: Option<Arc<Store>>) -> ExecResult<Table> {
        let types: Vec<_> = desc
            .schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let row_enc = converter(&types)?;
        let pk_enc = if desc.primary_key.is_empty() {
            None
        } else {
            let pk_types: Vec<_> = desc.primary_key.iter().map(|i| types[*i].clone()).collect();
            Some(converter(&pk_types)?)
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
                meta: LogMeta::default(),
                readers: HashMap::new(),
                next_reader: 0,
            }),
            version_tx,
        })
    }

    /// A durable base table.
    pub fn open_durable(desc: TableDesc, store: Arc<Store>) -> ExecResult<Arc<Table>> {
        Table::open_logged(desc, store, false)
    }

    /// The result table of a streaming query: its log holds the changes of
    /// completed checkpoints.
    pub fn open_result(desc: TableDesc, store: Arc<Store>) -> ExecResult<Arc<Table>> {
        Table::open_logged(desc, store, true)
    }

    /// Opens a table from its last log meta; log entries after it (a table
    /// written before its rows were stored, or a migration cut short) are
    /// applied to the rows first.
    fn open_logged(desc: TableDesc, store: Arc<Store>, result: bool) -> ExecResult<Arc<Table>> {
        let mut table = Table::build(desc, Some(store.clone()))?;
        table.result = result;
        let id = table.desc.id;
        {
            let mut inner = table.inner.lock();
            if let Some((offset, meta)) = store.last_log_meta(id)? {
                inner.version = offset;
                inner.meta = meta;
            }
            loop {
                let entries = store.read_log(id, inner.version + 1, MIGRATE_BATCH_ENTRIES)?;
                if entries.is_empty() {
                    break;
                }
                let first = entries[0].offset;
                let chunks = entries
                    .iter()
                    .map(|e| {
                        Chunk::from_stored_batch(decode_batch(&e.payload)?, &table.desc.schema)
                    })
                    .collect::<ExecResult<Vec<_>>>()?;
                let mut writes = table.changes(&chunks, WriteCheck::None, first - 1, inner.meta)?;
                for (w, e) in writes.iter_mut().zip(&entries) {
                    w.offset = e.offset;
                }
                store.write_tables(&writes)?;
                let last = writes.last().expect("entries");
                inner.version = last.offset;
                inner.meta = last.meta;
                tracing::info!(table = %table.desc.name, through = inner.version, "stored the rows of logged changes");
            }
            table.version_tx.send_replace(inner.version);
        }
        Ok(Arc::new(table))
    }

    /// The contents as they were at log offset `version` (a result table's
    /// earlier checkpoint): the current rows with the changes after
    /// `version` taken back.
    pub fn contents_at(&self, version: u64) -> ExecResult<RecordBatch> {
        let Some(store) = &self.store else {
            return Err(ExecError::internal(format!(
                "table \"{}\" has no log to read an earlier version from",
                self.desc.name
            )));
        };
        let (snap, now) = self.snapshot_at_version(store)?;
        if version >= now {
            return self.scan_snapshot(&snap, &KeyRange::all(), usize::MAX);
        }
        let first = store.first_log_offset(self.desc.id)?.unwrap_or(now + 1);
        if first > version + 1 {
            return Err(ExecError::internal(format!(
                "the log of \"{}\" no longer reaches back to offset {version}",
                self.desc.name
            )));
        }
        let mut counts: HashMap<OwnedRow, i64> = HashMap::new();
        let mut add = |batch: &RecordBatch, sign: &dyn Fn(usize) -> i64| -> ExecResult<()> {
            let rows = self.row_enc.convert_columns(batch.columns())?;
            for i in 0..batch.num_rows() {
                *counts.entry(rows.row(i).owned()).or_insert(0) += sign(i);
            }
            Ok(())
        };
        let current = self.scan_snapshot(&snap, &KeyRange::all(), usize::MAX)?;
        add(&current, &|_| 1)?;
        let mut after = version;
        loop {
            let entries = snap.read_log(self.desc.id, after, 1024)?;
            let Some(last) = entries.last() else { break };
            after = last.offset;
            for e in &entries {
                let c = Chunk::from_stored_batch(decode_batch(&e.payload)?, &self.desc.schema)?;
                add(&c.batch, &|i| -c.op(i).sign())?;
            }
        }
        let columns = self.row_enc.convert_rows(
            counts
                .iter()
                .flat_map(|(r, c)| std::iter::repeat_n(r.row(), (*c).max(0) as usize)),
        )?;
        self.batch_of(columns)
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

    /// A table without storage, always empty (planning only: EXPLAIN and
    /// tests). Writes to it are refused.
    pub fn new_in_memory(desc: TableDesc) -> ExecResult<Arc<Table>> {
        Ok(Arc::new(Table::build(desc, None)?))
    }

    /// The log entries and row changes of `chunks` applied in order after
    /// offset `after` to a table with `meta`, reading the stored rows they
    /// touch. The caller holds the table's lock or is its one committer.
    fn changes(
        &self,
        chunks: &[Chunk],
        check: WriteCheck,
        after: u64,
        mut meta: LogMeta,
    ) -> ExecResult<Vec<TableWrite>> {
        let store = self.storage()?;
        // Key → value as the chunks so far left it (`None`: absent).
        let mut overlay: HashMap<Vec<u8>, Option<Vec<u8>>> = HashMap::new();
        let mut out = Vec::with_capacity(chunks.len());
        for (i, chunk) in chunks.iter().enumerate() {
            let rows = self.row_enc.convert_columns(chunk.batch.columns())?;
            let keys = match &self.pk_enc {
                Some(pk) => Some(pk.convert_columns(&self.pk_columns(&chunk.batch))?),
                None => None,
            };
            let key_of = |r: usize| -> &[u8] {
                match &keys {
                    Some(k) => k.row(r).data(),
                    None => rows.row(r).data(),
                }
            };
            // Read the stored values of the keys not seen yet, at once.
            let mut missing: Vec<&[u8]> = Vec::new();
            let mut asked = std::collections::HashSet::new();
            for r in 0..chunk.num_rows() {
                let k = key_of(r);
                if !overlay.contains_key(k) && asked.insert(k) {
                    missing.push(k);
                }
            }
            let stored = store.get_rows(self.desc.id, &missing)?;
            for (k, v) in missing.iter().zip(stored) {
                overlay.insert(k.to_vec(), v);
            }
            let mut touched: Vec<Vec<u8>> = Vec::new();
            let mut seen = std::collections::HashSet::new();
            let mut count: i64 = meta.row_count as i64;
            for r in 0..chunk.num_rows() {
                let k = key_of(r);
                let op = chunk.op(r);
                let current = overlay.get_mut(k).expect("read above");
                match &self.pk_enc {
                    Some(_) => {
                        let present = current.is_some();
                        match op {
                            Op::Insert if present && check == WriteCheck::Constraints => {
                                return Err(self.unique_violation());
                            }
                            Op::Delete if !present && check == WriteCheck::Constraints => {
                                return Err(ExecError::internal(format!(
                                    "delete of a missing row in \"{}\"",
                                    self.desc.name
                                )));
                            }
                            Op::Insert => {
                                if !present {
                                    count += 1;
                                }
                                *current = Some(rows.row(r).data().to_vec());
                            }
                            Op::Delete => {
                                if present {
                                    count -= 1;
                                }
                                *current = None;
                            }
                        }
                    }
                    None => {
                        let before = match current {
                            Some(v) => count_of(v)?,
                            None => 0,
                        };
                        let after = before + op.sign();
                        count += after.max(0) - before.max(0);
                        *current = (after != 0).then(|| count_value(after));
                    }
                }
                if seen.insert(k) {
                    touched.push(k.to_vec());
                }
            }
            meta.row_count = count.max(0) as u64;
            meta.rows_logged += chunk.num_rows() as u64;
            let stored_chunk = chunk.clone().with_schema(self.desc.schema.clone())?;
            out.push(TableWrite {
                table_id: self.desc.id,
                offset: after + 1 + i as u64,
                payload: encode_batch(&stored_chunk.to_stored_batch()?)?,
                meta,
                rows: touched
                    .into_iter()
                    .map(|k| {
                        let v = overlay[&k].clone();
                        (k, v)
                    })
                    .collect(),
            });
        }
        Ok(out)
    }

    fn storage(&self) -> ExecResult<&Arc<Store>> {
        self.store.as_ref().ok_or_else(|| {
            ExecError::internal(format!("table \"{}\" has no storage", self.desc.name))
        })
    }

    fn unique_violation(&self) -> ExecError {
        let names: Vec<&str> = self
            .desc
            .primary_key
            .iter()
            .map(|c| self.desc.schema.field(*c).name().as_str())
            .collect();
        ExecError::User {
            sqlstate: crate::SqlState::UNIQUE_VIOLATION,
            message: format!(
                "duplicate key value violates unique constraint \"{}_pkey\"",
                self.desc.name
            ),
            hint: Some(format!("Key ({}) already exists.", names.join(", "))),
        }
    }

    /// First half of a checkpoint commit of a result table: the log entries
    /// and row changes of `chunks`, to be written in the checkpoint's atomic
    /// batch. Only the table's one committer may call this.
    pub fn prepare_commit(&self, chunks: &[Chunk]) -> ExecResult<Vec<TableWrite>> {
        let chunks = chunks
            .iter()
            .map(|c| c.clone().with_schema(self.desc.schema.clone()))
            .collect::<ExecResult<Vec<_>>>()?;
        let (after, meta) = {
            let inner = self.inner.lock();
            (inner.version, inner.meta)
        };
        self.changes(&chunks, WriteCheck::None, after, meta)
    }

    /// Second half: the writes of [`Table::prepare_commit`] are durable.
    pub fn apply_committed(&self, writes: &[TableWrite]) -> ExecResult<()> {
        let Some(last) = writes.last() else {
            return Ok(());
        };
        let mut inner = self.inner.lock();
        inner.version = last.offset;
        inner.meta = last.meta;
        drop(inner);
        self.version_tx.send_replace(last.offset);
        Ok(())
    }

    /// Rows logged after offset `pos` (a reader's position): its lag.
    pub fn rows_after(&self, pos: u64) -> u64 {
        let total = self.inner.lock().meta.rows_logged;
        let through = match (&self.store, pos) {
            (_, 0) => 0,
            (Some(store), _) => store
                .log_meta_at(self.desc.id, pos)
                .ok()
                .flatten()
                .map_or(total, |m| m.rows_logged),
            (None, _) => total,
        };
        total.saturating_sub(through)
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
        self.inner.lock().meta.row_count as usize
    }

    /// The primary key's columns (empty: the table has none).
    pub fn primary_key(&self) -> &[usize] {
        &self.desc.primary_key
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

    /// Writes a chunk of changes. Returns the number of rows changed. The
    /// change (log entry and rows) is synced before it returns.
    pub fn write(&self, chunk: Chunk, check: WriteCheck) -> ExecResult<u64> {
        self.check_writable()?;
        let chunk = chunk.with_schema(self.desc.schema.clone())?;
        if chunk.is_empty() {
            return Ok(0);
        }
        let store = self.storage()?;
        let mut inner = self.inner.lock();
        if check == WriteCheck::Constraints {
            self.check_not_null(&chunk)?;
        }
        let n = chunk.num_rows() as u64;
        let writes = self.changes(
            std::slice::from_ref(&chunk),
            check,
            inner.version,
            inner.meta,
        )?;
        let w = &writes[0];
        store.write_table(w)?;
        inner.version = w.offset;
        inner.meta = w.meta;
        drop(inner);
        self.version_tx.send_replace(w.offset);
        Ok(n)
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

    /// The current rows with these stored keys (primary-key tables; absent
    /// keys give no row), read at once.
    pub fn lookup(&self, keys: &[Vec<u8>]) -> ExecResult<RecordBatch> {
        if self.pk_enc.is_none() {
            return Err(ExecError::internal(format!(
                "table \"{}\" has no primary key to look up",
                self.desc.name
            )));
        }
        let Some(store) = &self.store else {
            return Ok(RecordBatch::new_empty(self.desc.schema.clone()));
        };
        let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        let found: Vec<(Vec<u8>, Vec<u8>)> = store
            .get_rows(self.desc.id, &refs)?
            .into_iter()
            .zip(keys)
            .filter_map(|(v, k)| v.map(|v| (k.clone(), v)))
            .collect();
        self.decode_stored(&found)
    }

    /// The column whose value the stored keys start with: the first
    /// primary-key column, or the first column of a table without one.
    pub fn leading_key_column(&self) -> usize {
        self.desc.primary_key.first().copied().unwrap_or(0)
    }

    /// The stored-key prefix of every row whose leading key column equals
    /// `value`'s single value (see [`Table::leading_key_column`]): keys
    /// encode their columns one after another, each in an order-preserving
    /// form of its own.
    pub fn leading_key_prefix(&self, value: &ArrayRef) -> ExecResult<Vec<u8>> {
        let enc = converter(&[value.data_type().clone()])?;
        let rows = enc.convert_columns(std::slice::from_ref(value))?;
        Ok(rows.row(0).data().to_vec())
    }

    fn batch_of(&self, columns: Vec<ArrayRef>) -> ExecResult<RecordBatch> {
        let n = columns.first().map_or(0, |c| c.len());
        Ok(RecordBatch::try_new_with_options(
            self.desc.schema.clone(),
            columns,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?)
    }

    /// Decodes stored (key, value) pairs into a batch of the table's rows.
    fn decode_stored(&self, entries: &[(Vec<u8>, Vec<u8>)]) -> ExecResult<RecordBatch> {
        let parser = self.row_enc.parser();
        let columns = if self.pk_enc.is_some() {
            self.row_enc
                .convert_rows(entries.iter().map(|(_, v)| parser.parse(v)))?
        } else {
            let mut rows = Vec::with_capacity(entries.len());
            for (k, v) in entries {
                let n = count_of(v)?.max(0) as usize;
                rows.extend(std::iter::repeat_n(parser.parse(k), n));
            }
            self.row_enc.convert_rows(rows)?
        };
        self.batch_of(columns)
    }

    /// Up to `max_rows` of the rows in `range` as of `snap`, as one batch.
    fn scan_snapshot(
        &self,
        snap: &StoreSnapshot,
        range: &KeyRange,
        max_rows: usize,
    ) -> ExecResult<RecordBatch> {
        let mut scan = TableScan::new(range.clone());
        let mut batches = Vec::new();
        let mut n = 0;
        while n < max_rows {
            let Some(b) = scan.next_batch(self, snap, SCAN_BATCH_ROWS.min(max_rows - n))? else {
                break;
            };
            n += b.num_rows();
            batches.push(b);
        }
        Ok(datafusion::arrow::compute::concat_batches(
            &self.desc.schema,
            &batches,
        )?)
    }

    /// A snapshot of the store and the table's offset in it. The offset is
    /// read from the snapshot itself: a result table's checkpoint commit
    /// lands in the store before the table's own offset moves, and a
    /// snapshot in between has its rows.
    fn snapshot_at_version(&self, store: &Arc<Store>) -> ExecResult<(StoreSnapshot, u64)> {
        let snap = store.snapshot();
        let version = snap.last_log_meta(self.desc.id)?.map_or(0, |(o, _)| o);
        Ok((snap, version))
    }

    /// A snapshot of the store (`None`: a table without storage).
    pub fn storage_snapshot(&self) -> Option<StoreSnapshot> {
        self.store.as_ref().map(|s| s.snapshot())
    }

    /// The current contents as one batch.
    pub fn snapshot(&self) -> ExecResult<RecordBatch> {
        match self.storage_snapshot() {
            Some(snap) => self.scan_snapshot(&snap, &KeyRange::all(), usize::MAX),
            None => Ok(RecordBatch::new_empty(self.desc.schema.clone())),
        }
    }

    /// Starts a reader: the current contents as inserts (read in batches
    /// from a snapshot), then every change after them through
    /// [`TableReader::read`].
    pub fn reader(self: &Arc<Self>) -> ExecResult<(TableSnapshot, TableReader)> {
        // Registered first, at an offset no later than the snapshot's, so
        // truncation keeps what the reader will follow.
        let mut inner = self.inner.lock();
        let id = inner.next_reader;
        inner.next_reader += 1;
        let at = inner.version;
        inner.readers.insert(id, at);
        drop(inner);
        let (snap, pos) = match &self.store {
            Some(store) => {
                let (snap, pos) = self.snapshot_at_version(store)?;
                (Some(snap), pos)
            }
            None => (None, 0),
        };
        self.inner.lock().readers.insert(id, pos);
        Ok((
            TableSnapshot {
                table: self.clone(),
                scan: TableScan::new(KeyRange::all()),
                snap,
            },
            TableReader {
                table: self.clone(),
                id,
                pos,
                watch: self.version_tx.subscribe(),
            },
        ))
    }

    /// A reader that starts after log offset `pos` (a checkpointed source
    /// offset), without a snapshot.
    pub fn reader_from(self: &Arc<Self>, pos: u64) -> ExecResult<TableReader> {
        let store = self.storage()?;
        let mut inner = self.inner.lock();
        if pos > inner.version {
            return Err(ExecError::internal(format!(
                "checkpointed offset {pos} of table \"{}\" is beyond its log end {}",
                self.desc.name, inner.version
            )));
        }
        if pos < inner.version {
            let first = store.first_log_offset(self.desc.id)?;
            if first.is_none_or(|f| f > pos + 1) {
                return Err(ExecError::internal(format!(
                    "the log of table \"{}\" no longer holds the changes after offset {pos} \
                     ({})",
                    self.desc.name,
                    first.map_or("it is truncated through its end".to_string(), |f| format!(
                        "its first entry is {f}"
                    ))
                )));
            }
        }
        let id = inner.next_reader;
        inner.next_reader += 1;
        inner.readers.insert(id, pos);
        drop(inner);
        Ok(TableReader {
            table: self.clone(),
            id,
            pos,
            watch: self.version_tx.subscribe(),
        })
    }

    /// Whether the log still holds every change after offset `pos`.
    pub fn log_holds_after(&self, pos: u64) -> ExecResult<bool> {
        let version = self.version();
        if pos >= version {
            return Ok(true);
        }
        let first = self.storage()?.first_log_offset(self.desc.id)?;
        Ok(first.is_some_and(|f| f <= pos + 1))
    }

    /// About how many bytes the table takes on disk (flushed rows and log).
    pub fn disk_bytes(&self) -> ExecResult<u64> {
        match &self.store {
            Some(store) => Ok(store.table_disk_bytes(self.desc.id)?),
            None => Ok(0),
        }
    }

    /// (first offset still in the log, `None` when it is all truncated;
    /// offset of the last change), read together from one snapshot.
    pub fn log_range(&self) -> ExecResult<(Option<u64>, u64)> {
        match &self.store {
            Some(store) => {
                let (snap, end) = self.snapshot_at_version(store)?;
                Ok((snap.first_log_offset(self.desc.id)?, end))
            }
            None => Ok((None, self.version())),
        }
    }

    /// The first offset still in the log (`None`: the log is empty).
    pub fn log_start(&self) -> ExecResult<Option<u64>> {
        match &self.store {
            Some(store) => Ok(store.first_log_offset(self.desc.id)?),
            None => Ok(None),
        }
    }

    /// Deletes the log entries at and below `through`, and no more than
    /// the readers of this process allow. The caller accounts for readers
    /// that are not running (checkpoints and savepoints of queries).
    pub fn truncate_log_through(&self, through: u64) -> ExecResult<u64> {
        let store = self.storage()?;
        let inner = self.inner.lock();
        let mut through = through.min(inner.version);
        if let Some(min) = inner.readers.values().copied().min() {
            through = through.min(min);
        }
        drop(inner);
        if through > 0 {
            store.truncate_log(self.desc.id, through)?;
        }
        Ok(through)
    }

    fn read_since(&self, reader: u64, after: u64, limit: u64) -> ExecResult<Vec<(u64, Chunk)>> {
        let store = self.storage()?;
        let entries = store.read_log(self.desc.id, after + 1, READ_BATCH_ENTRIES)?;
        if let Some(first) = entries.first() {
            if first.offset != after + 1 {
                return Err(ExecError::internal(format!(
                    "the log of table \"{}\" lacks the changes after offset {after}",
                    self.desc.name
                )));
            }
        }
        let out = entries
            .into_iter()
            .filter(|e| e.offset <= limit)
            .map(|e| {
                Ok((
                    e.offset,
                    Chunk::from_stored_batch(decode_batch(&e.payload)?, &self.desc.schema)?,
                ))
            })
            .collect::<ExecResult<Vec<_>>>()?;
        if let Some((last, _)) = out.last() {
            self.inner.lock().readers.insert(reader, *last);
        }
        Ok(out)
    }

    fn drop_reader(&self, reader: u64) {
        self.inner.lock().readers.remove(&reader);
    }
}

/// Reads a table's rows in key order from a snapshot, a batch at a time.
pub struct TableScan {
    range: KeyRange,
    done: bool,
}

impl TableScan {
    pub fn new(range: KeyRange) -> TableScan {
        TableScan { range, done: false }
    }

    /// The next up to `max_rows` stored entries as rows (`None`: done).
    pub fn next_batch(
        &mut self,
        table: &Table,
        snap: &StoreSnapshot,
        max_rows: usize,
    ) -> ExecResult<Option<RecordBatch>> {
        if self.done {
            return Ok(None);
        }
        let lower = match &self.range.lower {
            Bound::Included(k) => Bound::Included(k.as_slice()),
            Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let upper = match &self.range.upper {
            Bound::Included(k) => Bound::Included(k.as_slice()),
            Bound::Excluded(k) => Bound::Excluded(k.as_slice()),
            Bound::Unbounded => Bound::Unbounded,
        };
        let entries = snap.scan_rows(table.desc.id, lower, upper, max_rows.max(1))?;
        if entries.len() < max_rows.max(1) {
            self.done = true;
        }
        let Some((last, _)) = entries.last() else {
            return Ok(None);
        };
        self.range.lower = Bound::Excluded(last.clone());
        Ok(Some(table.decode_stored(&entries)?))
    }
}

/// The contents of a table when a reader started, read in batches.
pub struct TableSnapshot {
    table: Arc<Table>,
    scan: TableScan,
    snap: Option<StoreSnapshot>,
}

impl TableSnapshot {
    /// The next insert chunk of the snapshot (`None`: all read).
    pub fn next_chunk(&mut self) -> ExecResult<Option<Chunk>> {
        let Some(snap) = &self.snap else {
            return Ok(None);
        };
        let batch = self.scan.next_batch(&self.table, snap, SCAN_BATCH_ROWS)?;
        if batch.is_none() {
            // Release the snapshot: RocksDB keeps what it pins.
            self.snap = None;
        }
        Ok(batch.map(Chunk::inserts))
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    fn desc(primary_key: Vec<usize>) -> TableDesc {
        TableDesc {
            id: 5,
            name: "t".into(),
            schema: Arc::new(Schema::new(vec![
                Field::new("id", DataType::Int64, false),
                Field::new("v", DataType::Utf8, true),
            ])),
            primary_key,
            watermark: None,
        }
    }

    fn batch(d: &TableDesc, ids: &[i64], v: &str) -> RecordBatch {
        RecordBatch::try_new(
            d.schema.clone(),
            vec![
                Arc::new(Int64Array::from(ids.to_vec())),
                Arc::new(StringArray::from(vec![v; ids.len()])),
            ],
        )
        .unwrap()
    }

    fn sorted(b: &RecordBatch) -> Vec<(i64, String)> {
        let ids = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let vs = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        let mut out: Vec<_> = (0..b.num_rows())
            .map(|i| (ids.value(i), vs.value(i).to_string()))
            .collect();
        out.sort();
        out
    }

    fn tmp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("weir-table-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// A data directory written when tables kept only a log: opening the
    /// table stores the rows the log adds up to, once, even when the first
    /// attempt stopped half-way.
    #[test]
    fn a_log_only_table_gets_its_rows_stored_on_open() {
        let dir = tmp("migrate");
        let d = desc(vec![0]);
        {
            let store = Store::open(&dir).unwrap();
            let entries = [
                Chunk::inserts(batch(&d, &[1, 2, 3], "a")),
                Chunk::deletes(batch(&d, &[2], "a")),
                Chunk::inserts(batch(&d, &[2, 4], "b")),
            ];
            for (i, c) in entries.iter().enumerate() {
                let payload = encode_batch(&c.to_stored_batch().unwrap()).unwrap();
                store.append_log(d.id, i as u64 + 1, &payload).unwrap();
            }
        }
        let store = Arc::new(Store::open(&dir).unwrap());
        let t = Table::open_durable(d.clone(), store.clone()).unwrap();
        assert_eq!(t.version(), 3);
        assert_eq!(t.row_count(), 4);
        let want = vec![
            (1, "a".into()),
            (2, "b".into()),
            (3, "a".into()),
            (4, "b".into()),
        ];
        assert_eq!(sorted(&t.snapshot().unwrap()), want);
        // Opening again reads only the last meta and finds the same.
        drop(t);
        let t = Table::open_durable(d.clone(), store.clone()).unwrap();
        assert_eq!((t.version(), t.row_count()), (3, 4));
        assert_eq!(sorted(&t.snapshot().unwrap()), want);
        // Writes go on from there; a duplicate key is refused.
        t.write(
            Chunk::inserts(batch(&d, &[5], "c")),
            WriteCheck::Constraints,
        )
        .unwrap();
        let dup = t.write(
            Chunk::inserts(batch(&d, &[1], "x")),
            WriteCheck::Constraints,
        );
        assert!(dup.is_err());
        assert_eq!((t.version(), t.row_count()), (4, 5));
        drop(t);
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Readers see the rows of a snapshot then the log after it; an earlier
    /// version is the rows with the later changes taken back; truncation
    /// stops at the slowest reader.
    #[test]
    fn snapshots_earlier_versions_and_truncation() {
        let dir = tmp("versions");
        let d = desc(vec![]);
        let store = Arc::new(Store::open(&dir).unwrap());
        let t = Table::open_result(d.clone(), store.clone()).unwrap();
        let writes = t
            .prepare_commit(&[
                Chunk::inserts(batch(&d, &[1, 1, 2], "a")),
                Chunk::deletes(batch(&d, &[1], "a")),
            ])
            .unwrap();
        store.write_tables(&writes).unwrap();
        // A reader starting between the commit and the table's offset
        // moving sees the committed rows once: in its snapshot, not again
        // from the log.
        let (mut early, mut early_reader) = t.reader().unwrap();
        t.apply_committed(&writes).unwrap();
        assert_eq!((t.version(), t.row_count()), (2, 2));
        assert_eq!(early.next_chunk().unwrap().unwrap().num_rows(), 2);
        assert_eq!(early_reader.position(), 2);
        assert!(early_reader.read().unwrap().is_empty());
        drop((early, early_reader));
        let (mut contents, mut reader) = t.reader().unwrap();
        t.write(Chunk::inserts(batch(&d, &[3], "c")), WriteCheck::None)
            .unwrap();
        let first = contents.next_chunk().unwrap().unwrap();
        assert_eq!(sorted(&first.batch), vec![(1, "a".into()), (2, "a".into())]);
        assert!(contents.next_chunk().unwrap().is_none());
        let after = reader.read().unwrap();
        assert_eq!(after.len(), 1);
        assert_eq!(sorted(&after[0].batch), vec![(3, "c".into())]);

        assert_eq!(
            sorted(&t.contents_at(1).unwrap()),
            vec![(1, "a".into()), (1, "a".into()), (2, "a".into())]
        );
        // The reader read through 3; a reader from offset 1 holds the rest.
        let held = t.reader_from(1).unwrap();
        assert_eq!(t.truncate_log_through(u64::MAX).unwrap(), 1);
        assert_eq!(t.log_start().unwrap(), Some(2));
        assert!(t.reader_from(0).is_err(), "entry 1 is gone");
        drop(held);
        assert_eq!(t.truncate_log_through(u64::MAX).unwrap(), 3);
        assert_eq!(t.log_start().unwrap(), None);
        assert_eq!(t.rows_after(3), 0);
        assert_eq!(t.row_count(), 3);
        drop((reader, t));
        drop(store);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
