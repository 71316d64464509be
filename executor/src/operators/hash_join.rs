//! Incremental equi-join over two changelogs (inner, left/right/full outer,
//! semi and anti).
//!
//! Each side keeps its rows by join key, with a multiplicity and the number
//! of matching rows on the other side. A change on one side is matched
//! against the other side's state; outer, semi and anti joins use the match
//! counts to emit or retract the null-padded (or the semi/anti) rows exactly
//! when a row's matches go from zero to non-zero or back.
//!
//! A join without equality keys (a cross join, or an ON without
//! equalities, planned with parallelism 1 over Single edges) gives every row
//! the same constant join key, so each side is one bucket.
//!
//! Checkpoint state: one entry per side and join key, keyed by a side byte
//! (0 left, 1 right) then the join key's row bytes; its key group is the one
//! of the join key bytes alone, which the exchanges of both inputs hash (key
//! group 0 for the constant key of a join without keys). The value is the
//! key's entries in order: `u8 version, u32 n, n x (u32 len, row bytes, i64
//! count, i64 matches)`, integers little-endian.
//!
//! With a store (RocksDB backend) each side's `rows` is a bounded cache: the
//! join keys a chunk touches on either side are read from the store first,
//! and past `state_cache_keys` keys per side some are evicted (written first
//! if they changed since they were last written).

use std::borrow::Cow;
use std::sync::Arc;

use datafusion::arrow::array::new_null_array;
use datafusion::arrow::array::{Array, ArrayRef, BooleanArray, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{OwnedRow, Rows};
use datafusion::common::hash_map::EntryRef;
use datafusion::common::{HashMap, HashSet};
use datafusion::physical_expr::PhysicalExpr;

use crate::chunk::{Chunk, Op};
use crate::error::{ExecError, ExecResult};
use crate::keys::KeyEncoder;
use crate::operator::{Operator, OperatorContext, Output, StateEntry, StateWriter};
use crate::operators::partition_key::PartitionKey;
use crate::operators::state_codec::{ByteReader, ByteWriter, RowCodec};
use crate::state::SubtaskStore;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JoinKind {
    Inner,
    Left,
    Right,
    Full,
    LeftSemi,
    LeftAnti,
    RightSemi,
    RightAnti,
}

impl JoinKind {
    /// Whether unmatched rows of `side` (0 left, 1 right) appear null-padded.
    fn preserves(self, side: usize) -> bool {
        matches!(
            (self, side),
            (JoinKind::Left, 0) | (JoinKind::Right, 1) | (JoinKind::Full, _)
        )
    }

    /// For semi/anti joins: the side whose rows are output, and whether anti.
    fn semi_side(self) -> Option<(usize, bool)> {
        match self {
            JoinKind::LeftSemi => Some((0, false)),
            JoinKind::LeftAnti => Some((0, true)),
            JoinKind::RightSemi => Some((1, false)),
            JoinKind::RightAnti => Some((1, true)),
            _ => None,
        }
    }
}

struct Entry {
    row: OwnedRow,
    count: i64,
    matches: i64,
    /// Interval joins: the watermark (ms) past which the row can match
    /// nothing (a function of the row); `i64::MAX` otherwise.
    expires: i64,
}

/// A join key's entries. A large bucket (e.g. every auction of a window)
/// also indexes its rows, so that finding a row to update is not a scan.
struct Bucket {
    entries: Vec<Entry>,
    index: Option<HashMap<OwnedRow, usize>>,
    /// The key has a value in the checkpointed state (or the store), which
    /// must be deleted when the bucket goes; a bucket that comes and goes
    /// between two snapshots writes nothing.
    stored: bool,
    /// Interval joins: at most the earliest `expires` of the entries. The
    /// expiry index lists the key at exactly this time (see
    /// [`ExpiryIndex`]).
    next_expiry: i64,
}

impl Default for Bucket {
    fn default() -> Bucket {
        Bucket {
            entries: Vec::new(),
            index: None,
            stored: false,
            next_expiry: i64::MAX,
        }
    }
}

/// Buckets with more entries than this are indexed (in tests, nearly all,
/// so that the tests exercise the index).
const INDEX_BUCKETS_FROM: usize = if cfg!(test) { 1 } else { 16 };

impl Bucket {
    /// A restored bucket; `indexed` as for [`Bucket::push`].
    fn from_entries(entries: Vec<Entry>, indexed: bool) -> Bucket {
        let mut b = Bucket {
            entries,
            stored: true,
            ..Bucket::default()
        };
        if indexed {
            b.reindex();
        }
        b
    }

    fn reindex(&mut self) {
        self.index = (self.entries.len() > INDEX_BUCKETS_FROM).then(|| {
            self.entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.row.clone(), i))
                .collect()
        });
    }

    fn position(&self, row: &OwnedRow) -> Option<usize> {
        match &self.index {
            Some(index) => index.get(row).copied(),
            None => self.entries.iter().position(|e| &e.row == row),
        }
    }

    /// Adds an entry; true when it expires before every other one, so that
    /// the expiry index must list the key at its `expires`. A bucket grown
    /// large gets an index unless `indexed` is false (an append-only side
    /// never looks its rows up).
    fn push(&mut self, e: Entry, indexed: bool) -> bool {
        let earliest = e.expires < self.next_expiry;
        self.next_expiry = self.next_expiry.min(e.expires);
        if let Some(index) = &mut self.index {
            index.insert(e.row.clone(), self.entries.len());
        }
        self.entries.push(e);
        if indexed && self.index.is_none() && self.entries.len() > INDEX_BUCKETS_FROM {
            self.reindex();
        }
        earliest
    }

    /// Removes the entries that expire before `watermark` (it is past the
    /// bucket's `next_expiry`) in one pass that also finds the next one;
    /// true when it removed any. Interval joins' sides are append-only, so
    /// their buckets have no index to keep.
    fn remove_expired(&mut self, watermark: i64) -> bool {
        let before = self.entries.len();
        let mut next = i64::MAX;
        self.entries.retain(|e| {
            let keep = e.expires >= watermark;
            if keep {
                next = next.min(e.expires);
            }
            keep
        });
        self.next_expiry = next;
        let removed = self.entries.len() < before;
        if removed && self.index.is_some() {
            self.reindex();
        }
        removed
    }

    fn earliest_expiry(&self) -> i64 {
        self.entries
            .iter()
            .map(|e| e.expires)
            .min()
            .unwrap_or(i64::MAX)
    }

    fn swap_remove(&mut self, p: usize) {
        let removed = self.entries.swap_remove(p);
        if let Some(index) = &mut self.index {
            index.remove(&removed.row);
            if let Some(moved) = self.entries.get(p) {
                index.insert(moved.row.clone(), p);
            }
        }
    }
}

impl std::ops::Deref for Bucket {
    type Target = [Entry];
    fn deref(&self) -> &[Entry] {
        &self.entries
    }
}

/// Counts change in place; rows (the index keys) do not.
impl std::ops::IndexMut<usize> for Bucket {
    fn index_mut(&mut self, i: usize) -> &mut Entry {
        &mut self.entries[i]
    }
}

impl std::ops::Index<usize> for Bucket {
    type Output = Entry;
    fn index(&self, i: usize) -> &Entry {
        &self.entries[i]
    }
}

struct Side {
    /// The join keys (none: one constant key, key group 0).
    key: PartitionKey,
    row_enc: KeyEncoder,
    null_row: OwnedRow,
    rows: HashMap<OwnedRow, Bucket>,
    /// Join keys whose entries changed since the previous snapshot; with a
    /// store, since they were last written to it.
    dirty: HashSet<OwnedRow>,
    row_codec: RowCodec,
    /// Only inserts come (interval joins): an inserted row is a new entry
    /// even if an equal one is there, so rows are never looked up and
    /// buckets are not indexed. (A delete, which should not come, still
    /// finds an equal row by a scan.)
    append_only: bool,
}

impl Side {
    fn new(
        key_exprs: Vec<Arc<dyn PhysicalExpr>>,
        key_types: Vec<DataType>,
        schema: &SchemaRef,
    ) -> ExecResult<Side> {
        let types: Vec<DataType> = schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let row_enc = KeyEncoder::new(&types)?;
        let nulls: Vec<ArrayRef> = types.iter().map(|t| new_null_array(t, 1)).collect();
        let null_row = row_enc.encode(&nulls)?.row(0).owned();
        Ok(Side {
            key: PartitionKey::with_types(key_exprs, key_types)?,
            row_codec: RowCodec::new(&types)?,
            row_enc,
            null_row,
            rows: HashMap::new(),
            dirty: HashSet::new(),
            append_only: false,
        })
    }

    /// Drops a join key's bucket (it has no entries left).
    fn drop_bucket(&mut self, key: &OwnedRow) {
        if let Some(bucket) = self.rows.remove(key) {
            self.bucket_dropped(Cow::Borrowed(key), bucket.stored);
        }
    }

    /// After a join key's bucket went: a stored one is deleted at the next
    /// snapshot, one never stored is no longer listed as changed.
    fn bucket_dropped(&mut self, key: Cow<'_, OwnedRow>, stored: bool) {
        if stored {
            self.dirty.insert(key.into_owned());
        } else {
            self.dirty.remove(key.as_ref());
        }
    }

    /// (key group, state key) of a join key's entry.
    fn state_key(&self, side: u8, key: &OwnedRow) -> (usize, Vec<u8>) {
        let kg = self.key.key_group(key.as_ref());
        let mut skey = Vec::with_capacity(key.as_ref().len() + 1);
        skey.push(side);
        skey.extend_from_slice(key.as_ref());
        (kg, skey)
    }

    /// Writes the state of one join key: its entries, or a delete if it
    /// has none left.
    fn snapshot_key(&self, side: u8, key: &OwnedRow, state: &mut StateWriter) -> ExecResult<()> {
        let (kg, skey) = self.state_key(side, key);
        match self.rows.get(key) {
            Some(bucket) if !bucket.is_empty() => {
                let size: usize = bucket.iter().map(|e| 20 + e.row.as_ref().len()).sum();
                let mut w = ByteWriter::with_capacity(5 + size);
                w.u8(STATE_VERSION);
                w.length(bucket.len())?;
                for e in bucket.iter() {
                    w.bytes(e.row.as_ref())?;
                    w.i64(e.count);
                    w.i64(e.matches);
                }
                state.put(kg, skey, w.finish());
            }
            _ => state.delete(kg, skey),
        }
        Ok(())
    }

    /// Restores the given (join key bytes, value) pairs.
    fn restore(&mut self, entries: &[(&[u8], &[u8])]) -> ExecResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        // Per key its number of entries; per entry (count, matches).
        let mut lens: Vec<usize> = Vec::with_capacity(entries.len());
        let mut counts: Vec<(i64, i64)> = Vec::new();
        let mut row_bytes: Vec<&[u8]> = Vec::new();
        for (_, value) in entries {
            let mut r = ByteReader::new(value);
            if r.u8()? != STATE_VERSION {
                return Err(ExecError::internal("join state: unknown version"));
            }
            let n = r.length()?;
            for _ in 0..n {
                row_bytes.push(r.bytes()?);
                counts.push((r.i64()?, r.i64()?));
            }
            r.finish()?;
            lens.push(n);
        }
        let key_bytes: Vec<&[u8]> = entries.iter().map(|(k, _)| *k).collect();
        let keys = self.key.rehydrate(&key_bytes)?;
        let rows = self.row_codec.rehydrate(&self.row_enc, &row_bytes)?;
        let mut rows = rows.into_iter().zip(counts);
        for (key, n) in keys.into_iter().zip(lens) {
            let bucket: Vec<Entry> = rows
                .by_ref()
                .take(n)
                .map(|(row, (count, matches))| Entry {
                    row,
                    count,
                    matches,
                    expires: i64::MAX,
                })
                .collect();
            if bucket.is_empty() {
                self.rows.remove(&key);
            } else {
                let indexed = !self.append_only;
                self.rows.insert(key, Bucket::from_entries(bucket, indexed));
            }
        }
        Ok(())
    }
}

const STATE_VERSION: u8 = 1;

/// One output row: (op, left part, right part); `None` parts are absent
/// (semi/anti output) — null padding uses the side's null row.
type OutRow = (Op, Option<OwnedRow>, Option<OwnedRow>);

/// An inner join of append-only inputs whose condition bounds one side's
/// event time by the other side's rows (`b.ts BETWEEN a.ts AND
/// a.expires`): an interval join, whose state the watermark cleans.
///
/// Every side `y` has expiry expressions `e(y)` from conditions
/// `x.t <= e(y)`, where `x.t` is the other side's event-time column: rows
/// of `x` still to come have `x.t >= watermark`, so a `y` row with
/// `min e(y) < watermark` can match none of them and leaves the state. A
/// row whose event-time column is below the watermark is late: dropped and
/// counted, so that the cleanup never loses a match.
#[derive(Clone, Default)]
pub struct IntervalCleanup {
    /// Per side, expressions over that side's rows, giving timestamps.
    pub expiry: [Vec<Arc<dyn PhysicalExpr>>; 2],
    /// Per side, event-time columns checked for lateness.
    pub event_time: [Vec<usize>; 2],
}

/// Join keys of one side by the time (ms) their bucket's earliest entry
/// expires. Every bucket is listed at its `next_expiry`: when an entry
/// lowers it, and again after each cleanup. A key may also be listed at
/// earlier times (its bucket went and came back, or was cleaned before);
/// such a listing finds nothing to do.
type ExpiryIndex = std::collections::BTreeMap<i64, Vec<OwnedRow>>;

pub struct HashJoinOperator {
    interval: Option<IntervalCleanup>,
    expiry: [ExpiryIndex; 2],
    /// Interval joins: the watermark so far (ms; `i64::MIN` before one).
    watermark: i64,
    kind: JoinKind,
    sides: [Side; 2],
    filter: Option<Arc<dyn PhysicalExpr>>,
    /// Left ++ right schema, which the filter is evaluated against.
    joined_schema: SchemaRef,
    output_schema: SchemaRef,
    null_equals_null: bool,
    /// RocksDB backend: where both sides' entries live; `rows` caches them.
    store: Option<Arc<SubtaskStore>>,
}

impl HashJoinOperator {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        kind: JoinKind,
        left_keys: Vec<Arc<dyn PhysicalExpr>>,
        right_keys: Vec<Arc<dyn PhysicalExpr>>,
        key_types: Vec<DataType>,
        left_schema: &SchemaRef,
        right_schema: &SchemaRef,
        filter: Option<Arc<dyn PhysicalExpr>>,
        joined_schema: SchemaRef,
        output_schema: SchemaRef,
        null_equals_null: bool,
    ) -> ExecResult<Self> {
        Ok(HashJoinOperator {
            interval: None,
            expiry: Default::default(),
            watermark: i64::MIN,
            kind,
            sides: [
                Side::new(left_keys, key_types.clone(), left_schema)?,
                Side::new(right_keys, key_types, right_schema)?,
            ],
            filter,
            joined_schema,
            output_schema,
            null_equals_null,
            store: None,
        })
    }

    /// Makes this an interval join (see [`IntervalCleanup`]); only for
    /// inner and semi joins of append-only inputs (their output only grows:
    /// a row that leaves the state has had every match it will ever have).
    pub fn with_interval_cleanup(mut self, cleanup: IntervalCleanup) -> Self {
        if matches!(
            self.kind,
            JoinKind::Inner | JoinKind::LeftSemi | JoinKind::RightSemi
        ) {
            self.interval = Some(cleanup);
            for side in self.sides.iter_mut() {
                side.append_only = true;
            }
        }
        self
    }

    /// The expiry (ms) of each row of `batch` on side `side`: the minimum
    /// of the side's expiry expressions; `None` when one is NULL (such a
    /// row can match nothing; it expires at once).
    fn expiries(&self, side: usize, batch: &RecordBatch) -> ExecResult<Vec<i64>> {
        let n = batch.num_rows();
        let mut out = vec![i64::MAX; n];
        let Some(cleanup) = &self.interval else {
            return Ok(out);
        };
        for e in &cleanup.expiry[side] {
            let v = e.evaluate(batch)?.into_array(n)?;
            let ms = to_millis(&v)?;
            for (i, o) in out.iter_mut().enumerate() {
                *o = (*o).min(if ms.is_null(i) { i64::MIN } else { ms.value(i) });
            }
        }
        Ok(out)
    }

    /// Sets the expiry of the entries of side `side`'s buckets and lists
    /// the buckets in the expiry index (after a restore).
    fn index_expiry(&mut self, side: usize) -> ExecResult<()> {
        let sd = &self.sides[side];
        if self.interval.is_none() || sd.rows.is_empty() {
            return Ok(());
        }
        let rows: Vec<&OwnedRow> = sd
            .rows
            .values()
            .flat_map(|b| b.iter().map(|e| &e.row))
            .collect();
        let n = rows.len();
        let cols = sd.row_enc.decode_owned(rows)?;
        let schema = if side == 0 {
            self.joined_schema.fields()[..cols.len()].to_vec()
        } else {
            let start = self.joined_schema.fields().len() - cols.len();
            self.joined_schema.fields()[start..].to_vec()
        };
        let batch = RecordBatch::try_new_with_options(
            Arc::new(datafusion::arrow::datatypes::Schema::new(schema)),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        let mut expiries = self.expiries(side, &batch)?.into_iter();
        // The same iteration order as above: nothing changed in between.
        for (key, bucket) in self.sides[side].rows.iter_mut() {
            for e in bucket.entries.iter_mut() {
                e.expires = expiries.next().unwrap_or(i64::MAX);
            }
            bucket.next_expiry = bucket.earliest_expiry();
            self.expiry[side]
                .entry(bucket.next_expiry)
                .or_default()
                .push(key.clone());
        }
        Ok(())
    }

    /// Reads the join keys of side `side` among `keys` that are neither
    /// cached nor changed (a changed key that is not cached has no entries
    /// left) from the store.
    fn fetch_missing(&mut self, side: usize, keys: &Rows) -> ExecResult<()> {
        let Some(store) = self.store.as_ref().filter(|s| !s.caches_all()) else {
            return Ok(());
        };
        let sd = &self.sides[side];
        let mut seen = HashSet::new();
        let missing: Vec<OwnedRow> = keys
            .iter()
            .map(|k| k.owned())
            .filter(|k| !sd.rows.contains_key(k) && !sd.dirty.contains(k))
            .filter(|k| seen.insert(k.clone()))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let skeys: Vec<(usize, Vec<u8>)> = missing
            .iter()
            .map(|k| sd.state_key(side as u8, k))
            .collect();
        let request: Vec<(usize, &[u8])> =
            skeys.iter().map(|(kg, k)| (*kg, k.as_slice())).collect();
        let values = store.fetch(&request)?;
        let found: Vec<(&[u8], &[u8])> = missing
            .iter()
            .zip(&values)
            .filter_map(|(k, v)| Some((k.as_ref(), v.as_deref()?)))
            .collect();
        self.sides[side].restore(&found)
    }

    /// Keeps each side's cache within its bound: evicts join keys (writing
    /// the changed ones to the store) down to 90% of it.
    fn evict(&mut self) -> ExecResult<()> {
        let Some(store) = self.store.clone() else {
            return Ok(());
        };
        let cap = store.cache_keys();
        // An interval join's state is bounded by the watermark, and its
        // expiry index points into the cached buckets.
        if !store.can_evict() || self.interval.is_some() {
            return Ok(());
        }
        if self.sides.iter().all(|side| side.rows.len() <= cap) {
            return Ok(());
        }
        let mut writer = StateWriter::new(false);
        for (i, side) in self.sides.iter_mut().enumerate() {
            if side.rows.len() <= cap {
                continue;
            }
            let excess = side.rows.len() - (cap - cap / 10);
            let victims: Vec<OwnedRow> = side.rows.keys().take(excess).cloned().collect();
            for key in &victims {
                if side.dirty.remove(key) {
                    side.snapshot_key(i as u8, key, &mut writer)?;
                }
            }
            for key in &victims {
                side.rows.remove(key);
            }
        }
        store.write_evicted(writer.into_entries())
    }

    /// Per (left, right) pair, whether the join's residual filter holds
    /// (all of them without a filter; NULL counts as false).
    fn passes_filter(&self, pairs: &[(OwnedRow, OwnedRow)]) -> ExecResult<Vec<bool>> {
        let Some(filter) = self.filter.as_ref().filter(|_| !pairs.is_empty()) else {
            return Ok(vec![true; pairs.len()]);
        };
        let jb = self.joined_batch(pairs)?;
        let mask = filter.evaluate(&jb)?.into_array(jb.num_rows())?;
        let mask = mask
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| ExecError::internal("join filter is not boolean"))?;
        Ok((0..pairs.len())
            .map(|p| mask.is_valid(p) && mask.value(p))
            .collect())
    }

    fn joined_batch(&self, pairs: &[(OwnedRow, OwnedRow)]) -> ExecResult<RecordBatch> {
        let mut cols = self.sides[0]
            .row_enc
            .decode_owned(pairs.iter().map(|p| &p.0))?;
        cols.extend(
            self.sides[1]
                .row_enc
                .decode_owned(pairs.iter().map(|p| &p.1))?,
        );
        Ok(RecordBatch::try_new_with_options(
            self.joined_schema.clone(),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(pairs.len())),
        )?)
    }

    fn build_output(&self, rows: Vec<OutRow>) -> ExecResult<Option<Chunk>> {
        if rows.is_empty() {
            return Ok(None);
        }
        let n = rows.len();
        let mut cols: Vec<ArrayRef> = Vec::new();
        for side in 0..2 {
            // A semi or anti join outputs one side's columns; the others
            // both (a missing row is null-padded).
            if self.kind.semi_side().is_some_and(|(s, _)| s != side) {
                continue;
            }
            let s = &self.sides[side];
            cols.extend(s.row_enc.decode_owned(rows.iter().map(|r| {
                let part = if side == 0 { &r.1 } else { &r.2 };
                part.as_ref().unwrap_or(&s.null_row)
            }))?);
        }
        let batch = RecordBatch::try_new_with_options(
            self.output_schema.clone(),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        Ok(Some(Chunk::new(
            batch,
            rows.into_iter().map(|r| r.0).collect(),
        )))
    }
}

/// Timestamps (any unit) as epoch milliseconds.
fn to_millis(values: &ArrayRef) -> ExecResult<datafusion::arrow::array::Int64Array> {
    use datafusion::arrow::datatypes::TimeUnit;
    let ms =
        datafusion::arrow::compute::cast(values, &DataType::Timestamp(TimeUnit::Millisecond, None))
            .and_then(|v| datafusion::arrow::compute::cast(&v, &DataType::Int64))?;
    Ok(ms
        .as_any()
        .downcast_ref::<datafusion::arrow::array::Int64Array>()
        .ok_or_else(|| ExecError::internal("interval join: time is not a timestamp"))?
        .clone())
}

fn repeat_push(out: &mut Vec<OutRow>, times: i64, row: OutRow) {
    for _ in 1..times.max(0) {
        out.push(row.clone());
    }
    if times > 0 {
        out.push(row);
    }
}

impl HashJoinOperator {
    /// The join's current output, from its state: the matching pairs
    /// (each row's `matches` counts its partners, so rows with none — a
    /// NULL key, or a filter that failed — pair with nothing), null-padded
    /// unmatched rows of a preserved side, or a semi/anti side's rows.
    fn current_output(&self) -> ExecResult<Vec<OutRow>> {
        let mut rows: Vec<OutRow> = Vec::new();
        let one_side = |side: usize, row: &OwnedRow| -> OutRow {
            if side == 0 {
                (Op::Insert, Some(row.clone()), None)
            } else {
                (Op::Insert, None, Some(row.clone()))
            }
        };
        if let Some((side, anti)) = self.kind.semi_side() {
            for bucket in self.sides[side].rows.values() {
                for e in bucket.iter().filter(|e| (e.matches > 0) != anti) {
                    repeat_push(&mut rows, e.count, one_side(side, &e.row));
                }
            }
            return Ok(rows);
        }
        let mut pairs: Vec<(OwnedRow, OwnedRow)> = Vec::new();
        let mut times: Vec<i64> = Vec::new();
        for (key, left) in &self.sides[0].rows {
            let Some(right) = self.sides[1].rows.get(key) else {
                continue;
            };
            for l in left.iter().filter(|e| e.matches > 0) {
                for r in right.iter().filter(|e| e.matches > 0) {
                    pairs.push((l.row.clone(), r.row.clone()));
                    times.push(l.count * r.count);
                }
            }
        }
        let keep = self.passes_filter(&pairs)?;
        for (((l, r), n), keep) in pairs.into_iter().zip(times).zip(keep) {
            if keep {
                repeat_push(&mut rows, n, (Op::Insert, Some(l), Some(r)));
            }
        }
        for side in 0..2 {
            if self.kind.preserves(side) {
                for bucket in self.sides[side].rows.values() {
                    for e in bucket.iter().filter(|e| e.matches == 0) {
                        repeat_push(&mut rows, e.count, one_side(side, &e.row));
                    }
                }
            }
        }
        Ok(rows)
    }
}

impl Operator for HashJoinOperator {
    fn uses_keyed_state(&self) -> bool {
        true
    }

    /// An interval join forgets rows the watermark passed, so only a plain
    /// join holds everything its output came from.
    fn can_reemit(&self) -> bool {
        self.interval.is_none()
    }

    fn open(&mut self, ctx: &OperatorContext, restored: bool, out: &mut Output) -> ExecResult<()> {
        self.store = ctx.state.clone();
        let reemit = restored && ctx.reemit && self.can_reemit();
        if let (Some(store), true, true) = (
            self.store.clone(),
            restored,
            self.interval.is_some() || reemit,
        ) {
            // Every row must be at hand when the watermark expires it, or
            // to emit the join's output again.
            let entries = store.entries()?;
            self.restore(ctx, entries)?;
            if self.interval.is_some() {
                store.mark_cached_all();
            }
        }
        if reemit {
            if let Some(chunk) = self.build_output(self.current_output()?)? {
                out.push(chunk);
            }
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Output) -> ExecResult<()> {
        if self.interval.is_some() && watermark > self.watermark {
            self.watermark = watermark;
            for side in 0..2 {
                let live = self.expiry[side].split_off(&watermark);
                let expired = std::mem::replace(&mut self.expiry[side], live);
                let sd = &mut self.sides[side];
                for key in expired.into_values().flatten() {
                    let EntryRef::Occupied(mut slot) = sd.rows.entry_ref(&key) else {
                        continue;
                    };
                    let bucket = slot.get_mut();
                    // Otherwise it is listed again, at its next expiry.
                    if bucket.next_expiry >= watermark {
                        continue;
                    }
                    let removed = bucket.remove_expired(watermark);
                    let next = bucket.next_expiry;
                    if bucket.is_empty() {
                        let stored = slot.remove().stored;
                        sd.bucket_dropped(Cow::Owned(key), stored);
                        continue;
                    }
                    if removed {
                        sd.dirty.get_or_insert_with(&key, OwnedRow::clone);
                    }
                    self.expiry[side].entry(next).or_default().push(key);
                }
            }
        }
        out.emit_watermark(watermark);
        Ok(())
    }

    fn restore(&mut self, _ctx: &OperatorContext, entries: Vec<StateEntry>) -> ExecResult<()> {
        let mut by_side: [Vec<(&[u8], &[u8])>; 2] = [Vec::new(), Vec::new()];
        for e in &entries {
            let value = e
                .value
                .as_deref()
                .ok_or_else(|| ExecError::internal("join restore: entry without value"))?;
            match e.key.split_first() {
                Some((&side, key)) if side < 2 => by_side[side as usize].push((key, value)),
                _ => return Err(ExecError::internal("join restore: bad state key")),
            }
        }
        for (side, entries) in by_side.iter().enumerate() {
            self.sides[side].restore(entries)?;
        }
        if self.interval.is_some() {
            for side in 0..2 {
                self.expiry[side].clear();
                self.index_expiry(side)?;
            }
        }
        Ok(())
    }

    fn snapshot(&mut self, state: &mut StateWriter) -> ExecResult<()> {
        for (i, side) in self.sides.iter().enumerate() {
            for key in state.keys_to_write(side.rows.keys(), &side.dirty) {
                side.snapshot_key(i as u8, key, state)?;
            }
        }
        for side in self.sides.iter_mut() {
            if state.is_full() {
                side.rows.values_mut().for_each(|b| b.stored = true);
            } else {
                for key in &side.dirty {
                    if let Some(bucket) = side.rows.get_mut(key) {
                        bucket.stored = true;
                    }
                }
            }
            side.dirty.clear();
        }
        Ok(())
    }

    fn on_chunk(&mut self, input: usize, chunk: Chunk, out: &mut Output) -> ExecResult<()> {
        let s = input;
        let o = 1 - input;
        let chunk = match &self.interval {
            Some(cleanup) if self.watermark != i64::MIN && !cleanup.event_time[s].is_empty() => {
                // Late rows: their event time is behind the watermark.
                let n = chunk.num_rows();
                let mut keep = vec![true; n];
                for c in &cleanup.event_time[s] {
                    let ms = to_millis(chunk.batch.column(*c))?;
                    for (i, k) in keep.iter_mut().enumerate() {
                        *k &= ms.is_null(i) || ms.value(i) >= self.watermark;
                    }
                }
                let late = keep.iter().filter(|k| !**k).count();
                if late > 0 {
                    out.late_records_dropped(late as u64);
                    chunk.filter(&BooleanArray::from(keep))?
                } else {
                    chunk
                }
            }
            _ => chunk,
        };
        let n = chunk.num_rows();
        let batch = &chunk.batch;
        let key_cols = self.sides[s].key.columns(batch)?;
        let keys = self.sides[s].key.encode_columns(&key_cols)?;
        let rows = self.sides[s].row_enc.encode(batch.columns())?;
        // Both sides encode join keys alike (same key types).
        self.fetch_missing(o, &keys)?;
        self.fetch_missing(s, &keys)?;
        let key_has_null: Vec<bool> = (0..n)
            .map(|i| key_cols.iter().any(|c| c.is_null(i)))
            .collect();

        // Phase 1: candidate matches, with the residual filter applied.
        let owned_keys: Vec<OwnedRow> = keys.iter().map(|k| k.owned()).collect();
        let mut candidates: Vec<Vec<usize>> = Vec::with_capacity(n);
        let mut pairs: Vec<(OwnedRow, OwnedRow)> = Vec::new();
        let mut pair_owner: Vec<(usize, usize)> = Vec::new();
        for (i, &null_key) in key_has_null.iter().enumerate() {
            let mut c = Vec::new();
            if self.null_equals_null || !null_key {
                if let Some(bucket) = self.sides[o].rows.get(&owned_keys[i]) {
                    for (j, e) in bucket.iter().enumerate() {
                        if self.filter.is_some() {
                            let me = rows.row(i).owned();
                            let pair = if s == 0 {
                                (me, e.row.clone())
                            } else {
                                (e.row.clone(), me)
                            };
                            pairs.push(pair);
                            pair_owner.push((i, j));
                        } else {
                            c.push(j);
                        }
                    }
                }
            }
            candidates.push(c);
        }
        if self.filter.is_some() {
            let keep = self.passes_filter(&pairs)?;
            for ((i, j), keep) in pair_owner.iter().zip(keep) {
                if keep {
                    candidates[*i].push(*j);
                }
            }
        }

        // Interval joins: when each row expires from the state.
        let expiries = if self.interval.is_some() {
            self.expiries(s, batch)?
        } else {
            Vec::new()
        };

        // Phase 2: emit and update state, row by row.
        let kind = self.kind;
        let mut emitted: Vec<OutRow> = Vec::new();
        for (i, (matched, key)) in candidates.iter().zip(&owned_keys).enumerate() {
            let op = chunk.op(i);
            let sign = op.sign();
            let me = rows.row(i).owned();
            let mut total = 0i64;
            if !matched.is_empty() {
                // Their match counts change.
                self.sides[o].dirty.get_or_insert_with(key, OwnedRow::clone);
            }
            if let Some(bucket) = self.sides[o].rows.get_mut(key) {
                for &j in matched {
                    let e = &mut bucket[j];
                    total += e.count;
                    let pair = |mine: Option<OwnedRow>,
                                theirs: Option<OwnedRow>|
                     -> (Option<OwnedRow>, Option<OwnedRow>) {
                        if s == 0 {
                            (mine, theirs)
                        } else {
                            (theirs, mine)
                        }
                    };
                    if kind.semi_side().is_none() {
                        let (l, r) = pair(Some(me.clone()), Some(e.row.clone()));
                        repeat_push(&mut emitted, e.count, (op, l, r));
                    }
                    let before = e.matches;
                    e.matches += sign;
                    let after = e.matches;
                    let flipped_on = before == 0 && after > 0;
                    let flipped_off = before > 0 && after == 0;
                    if kind.preserves(o) && (flipped_on || flipped_off) {
                        let (l, r) = pair(None, Some(e.row.clone()));
                        let padded_op = if flipped_on { Op::Delete } else { Op::Insert };
                        repeat_push(&mut emitted, e.count, (padded_op, l, r));
                    }
                    if let Some((side, anti)) = kind.semi_side() {
                        if side == o && (flipped_on || flipped_off) {
                            let semi_op = if flipped_on != anti {
                                Op::Insert
                            } else {
                                Op::Delete
                            };
                            let (l, r) = pair(None, Some(e.row.clone()));
                            repeat_push(&mut emitted, e.count, (semi_op, l, r));
                        }
                    }
                }
            }
            if kind.preserves(s) && total == 0 {
                let (l, r) = if s == 0 {
                    (Some(me.clone()), None)
                } else {
                    (None, Some(me.clone()))
                };
                emitted.push((op, l, r));
            }
            if let Some((side, anti)) = kind.semi_side() {
                if side == s && ((total > 0) != anti) {
                    let (l, r) = if s == 0 {
                        (Some(me.clone()), None)
                    } else {
                        (None, Some(me.clone()))
                    };
                    emitted.push((op, l, r));
                }
            }
            // Own state.
            let sd = &mut self.sides[s];
            let bucket = match sd.rows.entry_ref(key) {
                EntryRef::Occupied(b) => b.into_mut(),
                // Listed as changed without a bucket: its stored value
                // awaits a delete.
                EntryRef::Vacant(v) => v.insert_with_key(
                    key.clone(),
                    Bucket {
                        stored: sd.dirty.contains(key),
                        ..Bucket::default()
                    },
                ),
            };
            sd.dirty.get_or_insert_with(key, OwnedRow::clone);
            let found = if sd.append_only && sign > 0 {
                None
            } else {
                bucket.position(&me)
            };
            match found {
                Some(p) => {
                    bucket[p].count += sign;
                    if bucket[p].count == 0 {
                        bucket.swap_remove(p);
                    }
                }
                None if sign > 0 => {
                    let expires = expiries.get(i).copied().unwrap_or(i64::MAX);
                    let earliest = bucket.push(
                        Entry {
                            row: me,
                            count: 1,
                            matches: total,
                            expires,
                        },
                        !sd.append_only,
                    );
                    if earliest && self.interval.is_some() {
                        self.expiry[s].entry(expires).or_default().push(key.clone());
                    }
                }
                None => {
                    return Err(ExecError::internal(
                        "join: delete of a row that was never inserted",
                    ));
                }
            }
            if bucket.is_empty() {
                sd.drop_bucket(key);
            }
        }
        // Null padding for semi/anti output must not contain the other side.
        if kind.semi_side().is_some() {
            let keep = kind.semi_side().map(|(side, _)| side).unwrap_or(0);
            for r in emitted.iter_mut() {
                if keep == 0 {
                    r.2 = None;
                } else {
                    r.1 = None;
                }
            }
        } else {
            // Outer padding: make the absent part explicit nulls.
            for r in emitted.iter_mut() {
                if r.1.is_none() {
                    r.1 = Some(self.sides[0].null_row.clone());
                }
                if r.2.is_none() {
                    r.2 = Some(self.sides[1].null_row.clone());
                }
            }
        }
        if let Some(c) = self.build_output(emitted)? {
            out.push(c);
        }
        self.evict()
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Int32Array, Int64Array};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::logical_expr::Operator as BinOp;
    use datafusion::physical_expr::expressions::{BinaryExpr, CastExpr, Column};

    use super::*;
    use crate::operators::state_codec::test_util::*;

    const KINDS: [JoinKind; 8] = [
        JoinKind::Inner,
        JoinKind::Left,
        JoinKind::Right,
        JoinKind::Full,
        JoinKind::LeftSemi,
        JoinKind::LeftAnti,
        JoinKind::RightSemi,
        JoinKind::RightAnti,
    ];

    fn left_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("lid", DataType::Int32, true),
            Field::new("lk", DataType::Int64, true),
            Field::new("lv", DataType::Int32, true),
        ]))
    }

    fn right_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("rid", DataType::Int32, true),
            Field::new("rk", DataType::Int32, true),
            Field::new("rw", DataType::Int32, true),
        ]))
    }

    fn col(name: &str, i: usize) -> Arc<dyn PhysicalExpr> {
        Arc::new(Column::new(name, i))
    }

    /// `l JOIN r ON l.lk = r.rk [AND l.lv < r.rw]`; the right key is cast
    /// to the left key's type, as the planner does. `cross`: no equality
    /// keys at all (`l, r [WHERE l.lv < r.rw]` or `ON l.lv < r.rw`), as the
    /// planner builds it: empty key lists, inputs over Single edges.
    struct Spec {
        kind: JoinKind,
        filter: bool,
        null_equals_null: bool,
        cross: bool,
    }

    impl Spec {
        fn left_keys(&self) -> Vec<Arc<dyn PhysicalExpr>> {
            if self.cross {
                return vec![];
            }
            vec![col("lk", 1)]
        }

        fn right_keys(&self) -> Vec<Arc<dyn PhysicalExpr>> {
            if self.cross {
                return vec![];
            }
            vec![Arc::new(CastExpr::new(col("rk", 1), DataType::Int64, None))]
        }

        fn key_types(&self) -> Vec<DataType> {
            if self.cross {
                return vec![];
            }
            vec![DataType::Int64]
        }

        fn make(&self) -> Box<dyn Operator> {
            let (ls, rs) = (left_schema(), right_schema());
            let joined: SchemaRef = Arc::new(Schema::new(
                ls.fields()
                    .iter()
                    .chain(rs.fields().iter())
                    .cloned()
                    .collect::<Vec<_>>(),
            ));
            let output = match self.kind.semi_side() {
                Some((0, _)) => ls.clone(),
                Some(_) => rs.clone(),
                None => joined.clone(),
            };
            let filter = self.filter.then(|| {
                Arc::new(BinaryExpr::new(col("lv", 2), BinOp::Lt, col("rw", 5)))
                    as Arc<dyn PhysicalExpr>
            });
            Box::new(
                HashJoinOperator::new(
                    self.kind,
                    self.left_keys(),
                    self.right_keys(),
                    self.key_types(),
                    &ls,
                    &rs,
                    filter,
                    joined,
                    output,
                    self.null_equals_null,
                )
                .unwrap(),
            )
        }

        fn routes(&self) -> Vec<Route> {
            vec![
                Route {
                    keys: self.left_keys(),
                    schema: left_schema(),
                },
                Route {
                    keys: self.right_keys(),
                    schema: right_schema(),
                },
            ]
        }
    }

    fn specs() -> Vec<Spec> {
        let mut out = Vec::new();
        for kind in KINDS {
            for (filter, null_equals_null) in [(false, false), (true, false), (false, true)] {
                out.push(Spec {
                    kind,
                    filter,
                    null_equals_null,
                    cross: false,
                });
            }
            for filter in [false, true] {
                out.push(Spec {
                    kind,
                    filter,
                    null_equals_null: false,
                    cross: true,
                });
            }
        }
        out
    }

    type Row = (Option<i32>, Option<i32>, Option<i32>);

    fn side_chunk(side: usize, rows: &[(Op, Row)]) -> Chunk {
        let ids = Arc::new(Int32Array::from_iter(rows.iter().map(|r| r.1 .0)));
        let vals = Arc::new(Int32Array::from_iter(rows.iter().map(|r| r.1 .2)));
        let (schema, key): (SchemaRef, ArrayRef) = if side == 0 {
            (
                left_schema(),
                Arc::new(Int64Array::from_iter(
                    rows.iter().map(|r| r.1 .1.map(|k| k as i64)),
                )),
            )
        } else {
            (
                right_schema(),
                Arc::new(Int32Array::from_iter(rows.iter().map(|r| r.1 .1))),
            )
        };
        let batch = RecordBatch::try_new(schema, vec![ids, key, vals]).unwrap();
        Chunk::new(batch, rows.iter().map(|r| r.0).collect())
    }

    /// Random changes to both sides: few distinct rows, so rows repeat
    /// (counts above one), null keys, and deletes only of live rows.
    fn random_inputs(rng: &mut Rng, chunks: usize) -> Vec<Input> {
        let mut live: [Vec<Row>; 2] = [Vec::new(), Vec::new()];
        let mut out = Vec::new();
        for c in 0..chunks {
            let side = rng.below(2);
            let del_pct = if (c / 10) % 2 == 0 { 25 } else { 70 };
            let mut rows = Vec::new();
            for _ in 0..1 + rng.below(5) {
                let live = &mut live[side];
                if !live.is_empty() && rng.percent(del_pct) {
                    let r = live.swap_remove(rng.below(live.len()));
                    rows.push((Op::Delete, r));
                } else {
                    let r: Row = (
                        Some(rng.below(3) as i32),
                        (!rng.percent(12)).then(|| rng.below(5) as i32),
                        (!rng.percent(10)).then(|| rng.below(6) as i32),
                    );
                    live.push(r);
                    rows.push((Op::Insert, r));
                }
            }
            out.push((side, side_chunk(side, &rows)));
        }
        out
    }

    #[test]
    fn restore_continues_like_the_original() {
        for (i, spec) in specs().iter().enumerate() {
            for seed in 0..3u64 {
                let mut rng = Rng::new(seed * 1000 + i as u64);
                let inputs = random_inputs(&mut rng, 60);
                let mut cuts = vec![0, 1, inputs.len() / 2, inputs.len()];
                for _ in 0..3 {
                    cuts.push(rng.below(inputs.len() + 1));
                }
                check_restore(&|| spec.make(), &inputs, &cuts);
            }
        }
    }

    #[test]
    fn reemits_its_whole_output_from_its_state() {
        for (i, spec) in specs().iter().enumerate() {
            for seed in 0..3u64 {
                let mut rng = Rng::new(seed * 1000 + i as u64 + 500);
                let inputs = random_inputs(&mut rng, 40);
                let cuts = [0, 1, inputs.len() / 2, inputs.len()];
                check_reemit(&|| spec.make(), &inputs, &cuts);
            }
        }
    }

    #[test]
    fn state_in_a_store_behind_a_small_cache_acts_like_in_memory() {
        for (i, spec) in specs().iter().enumerate() {
            for seed in 0..2u64 {
                let mut rng = Rng::new(seed * 1000 + i as u64 + 900);
                let inputs = random_inputs(&mut rng, 48);
                let cuts = [1, rng.below(inputs.len()), inputs.len() - 1];
                check_store(&|| spec.make(), &inputs, &cuts, 1 + seed as usize * 3);
            }
        }
    }

    #[test]
    fn incremental_snapshots_add_up_to_a_full_one() {
        for (i, spec) in specs().iter().enumerate() {
            for seed in 0..3u64 {
                let mut rng = Rng::new(seed * 1000 + i as u64 + 500);
                let inputs = random_inputs(&mut rng, 60);
                check_incremental(&|| spec.make(), &inputs, &mut rng);
            }
        }
    }

    #[test]
    fn key_groups_follow_the_router_and_survive_rescale() {
        for (i, spec) in specs().iter().enumerate() {
            let routes = spec.routes();
            // Without join keys the state is in key group 0 (Single edges).
            let key_of = |key: &[u8]| (!spec.cross).then(|| (key[0] as usize, key[1..].to_vec()));
            for (seed, par) in [(1u64, 2usize), (2, 3), (3, 4)] {
                let mut rng = Rng::new(seed + 31 * i as u64);
                let inputs = random_inputs(&mut rng, 60);
                let cut = 20 + rng.below(20);
                check_rescale(&|| spec.make(), &inputs, &routes, &key_of, cut, par);
            }
        }
    }

    #[test]
    fn state_keys_keep_the_sides_apart() {
        let spec = Spec {
            kind: JoinKind::Inner,
            filter: false,
            null_equals_null: false,
            cross: false,
        };
        let mut op = spec.make();
        let c = ctx(0, 1);
        open(op.as_mut(), &c, false);
        let row = (Some(1), Some(7), Some(1));
        feed(op.as_mut(), &(0, side_chunk(0, &[(Op::Insert, row)])));
        feed(op.as_mut(), &(1, side_chunk(1, &[(Op::Insert, row)])));
        let map = to_map(snapshot(op.as_mut(), true));
        assert_eq!(map.len(), 2);
        let keys: Vec<_> = map.keys().collect();
        assert_eq!(keys[0][0], 0);
        assert_eq!(keys[1][0], 1);
        assert_eq!(keys[0][1..], keys[1][1..]);
        assert_eq!(map[keys[0]].0, map[keys[1]].0);
        // Deleting the row: incremental delete of that side's key only...
        feed(op.as_mut(), &(0, side_chunk(0, &[(Op::Delete, row)])));
        let delta = snapshot(op.as_mut(), false);
        assert_eq!(delta.len(), 2, "left deleted, right's matches changed");
        let del: Vec<_> = delta.iter().filter(|e| e.value.is_none()).collect();
        assert_eq!(del.len(), 1);
        assert_eq!(del[0].key[0], 0);
        // ...and nothing when nothing changed.
        assert!(snapshot(op.as_mut(), false).is_empty());
        let bad = vec![StateEntry {
            key_group: 0,
            key: vec![2, 1],
            value: Some(vec![1, 0, 0, 0, 0]),
        }];
        assert!(spec.make().restore(&c, bad).is_err());
    }

    /// Output rows as (op, lid, lk, lv, rid, rk, rw), sorted.
    type Joined = Vec<(Op, [Option<i64>; 6])>;

    fn joined(outs: &Outs) -> Joined {
        let mut rows = Vec::new();
        for (batch, ops) in outs {
            let cols: Vec<Vec<Option<i64>>> = batch
                .columns()
                .iter()
                .map(|c| {
                    let c = datafusion::arrow::compute::cast(c, &DataType::Int64).unwrap();
                    let c = c.as_any().downcast_ref::<Int64Array>().unwrap();
                    c.iter().collect()
                })
                .collect();
            for (i, op) in ops.iter().enumerate() {
                let mut r = [None; 6];
                for (j, col) in cols.iter().enumerate() {
                    r[j] = col[i];
                }
                rows.push((*op, r));
            }
        }
        rows.sort_by_key(|(op, r)| (*op == Op::Delete, *r));
        rows
    }

    /// A join without equality keys (cross join, or an ON without
    /// equalities) used to panic on its first row: the key encoder over
    /// zero columns yields zero rows. Every row now has the one constant key.
    #[test]
    fn join_without_keys_matches_every_pair() {
        let c = ctx(0, 1);
        let l = |id: i32, v: i32| (Op::Insert, (Some(id), Some(id * 100), Some(v)));
        let r = |id: i32, w: i32| (Op::Insert, (Some(id), Some(-id), Some(w)));
        let row = |lid: i64, lv: i64, rid: i64, rw: i64| {
            [
                Some(lid),
                Some(lid * 100),
                Some(lv),
                Some(rid),
                Some(-rid),
                Some(rw),
            ]
        };
        for filter in [false, true] {
            let spec = Spec {
                kind: JoinKind::Inner,
                filter,
                null_equals_null: false,
                cross: true,
            };
            let mut op = spec.make();
            open(op.as_mut(), &c, false);
            // Left (1, v=1), (2, v=5); right (10, w=3).
            assert!(feed(op.as_mut(), &(0, side_chunk(0, &[l(1, 1), l(2, 5)]))).is_empty());
            let out = joined(&feed(op.as_mut(), &(1, side_chunk(1, &[r(10, 3)]))));
            let mut want = vec![(Op::Insert, row(1, 1, 10, 3))];
            if !filter {
                // lv < rw only holds for the first left row.
                want.push((Op::Insert, row(2, 5, 10, 3)));
            }
            assert_eq!(out, want, "filter {filter}");
            // A null in a would-be key column does not stop a match.
            let out = joined(&feed(
                op.as_mut(),
                &(0, side_chunk(0, &[(Op::Insert, (Some(3), None, Some(0)))])),
            ));
            assert_eq!(
                out,
                vec![(
                    Op::Insert,
                    [Some(3), None, Some(0), Some(10), Some(-10), Some(3)]
                )]
            );
            // Restored from a snapshot, a delete retracts the pairs.
            let entries = snapshot(op.as_mut(), true);
            assert_eq!(entries.len(), 2, "one entry per side");
            assert!(entries.iter().all(|e| e.key_group == 0));
            let mut b = spec.make();
            b.restore(&c, entries).unwrap();
            assert!(open(b.as_mut(), &c, true).is_empty());
            let del = (Op::Delete, (Some(10), Some(-10), Some(3)));
            let out_a = feed(op.as_mut(), &(1, side_chunk(1, &[del])));
            let out_b = feed(b.as_mut(), &(1, side_chunk(1, &[del])));
            assert_eq!(out_a, out_b);
            assert_eq!(joined(&out_b).len(), if filter { 2 } else { 3 });
            assert!(joined(&out_b).iter().all(|(op, _)| *op == Op::Delete));
        }
        // Outer join without keys: a left row pads until the right side
        // has a row.
        let spec = Spec {
            kind: JoinKind::Left,
            filter: false,
            null_equals_null: false,
            cross: true,
        };
        let mut op = spec.make();
        open(op.as_mut(), &c, false);
        let out = joined(&feed(op.as_mut(), &(0, side_chunk(0, &[l(1, 1)]))));
        assert_eq!(
            out,
            vec![(Op::Insert, [Some(1), Some(100), Some(1), None, None, None])]
        );
        let out = joined(&feed(op.as_mut(), &(1, side_chunk(1, &[r(10, 3)]))));
        assert_eq!(
            out,
            vec![
                (Op::Insert, row(1, 1, 10, 3)),
                (Op::Delete, [Some(1), Some(100), Some(1), None, None, None]),
            ]
        );
    }

    /// Auctions (id, ts, expires) and bids (auction, ts), joined where the
    /// bid falls in the auction's lifetime: the interval join emits exactly
    /// what the plain join emits, drops each row once the watermark passes
    /// what it can match, and drops late rows.
    #[test]
    fn interval_join_cleans_its_state_by_watermark_and_loses_no_match() {
        use datafusion::arrow::array::TimestampMillisecondArray;
        use datafusion::arrow::datatypes::TimeUnit;
        let ts = || DataType::Timestamp(TimeUnit::Millisecond, None);
        let ls: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("lts", ts(), true),
            Field::new("expires", ts(), true),
        ]));
        let rs: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("auction", DataType::Int64, true),
            Field::new("rts", ts(), true),
        ]));
        let joined: SchemaRef = Arc::new(Schema::new(
            ls.fields()
                .iter()
                .chain(rs.fields().iter())
                .cloned()
                .collect::<Vec<_>>(),
        ));
        // rts >= lts AND rts <= expires, over the joined row.
        let filter: Arc<dyn PhysicalExpr> = Arc::new(BinaryExpr::new(
            Arc::new(BinaryExpr::new(col("rts", 4), BinOp::GtEq, col("lts", 1))),
            BinOp::And,
            Arc::new(BinaryExpr::new(
                col("rts", 4),
                BinOp::LtEq,
                col("expires", 2),
            )),
        ));
        let make = |interval: bool| {
            let op = HashJoinOperator::new(
                JoinKind::Inner,
                vec![col("id", 0)],
                vec![col("auction", 0)],
                vec![DataType::Int64],
                &ls,
                &rs,
                Some(filter.clone()),
                joined.clone(),
                joined.clone(),
                false,
            )
            .unwrap();
            if interval {
                op.with_interval_cleanup(IntervalCleanup {
                    expiry: [vec![col("expires", 2)], vec![col("rts", 1)]],
                    event_time: [vec![1], vec![1]],
                })
            } else {
                op
            }
        };
        let mut rng = Rng::new(42);
        // Time moves on by 0..3 ms per row; auctions last 5..30 ms; the
        // watermark trails the newest time by 3 ms, more than any disorder.
        let mut steps: Vec<(usize, RecordBatch, i64)> = Vec::new();
        // Per step, the rows the interval join must still hold: those
        // whose expiry (an auction's `expires`, a bid's `rts`) has not
        // fallen behind that step's watermark.
        let mut live: Vec<usize> = Vec::new();
        let mut expiries: Vec<i64> = Vec::new();
        let mut t = 1_000i64;
        for _ in 0..300 {
            t += rng.below(3) as i64;
            let jitter = rng.below(3) as i64;
            if rng.percent(30) {
                let id = rng.below(40) as i64;
                let b = RecordBatch::try_new(
                    ls.clone(),
                    vec![
                        Arc::new(Int64Array::from(vec![id])),
                        Arc::new(TimestampMillisecondArray::from(vec![t - jitter])),
                        Arc::new(TimestampMillisecondArray::from(vec![
                            t - jitter + 5 + rng.below(25) as i64,
                        ])),
                    ],
                )
                .unwrap();
                expiries.push(to_millis(b.column(2)).unwrap().value(0));
                steps.push((0, b, t - 3));
            } else {
                let b = RecordBatch::try_new(
                    rs.clone(),
                    vec![
                        Arc::new(Int64Array::from(vec![rng.below(40) as i64])),
                        Arc::new(TimestampMillisecondArray::from(vec![t - jitter])),
                    ],
                )
                .unwrap();
                expiries.push(t - jitter);
                steps.push((1, b, t - 3));
            }
            live.push(expiries.iter().filter(|e| **e >= t - 3).count());
        }
        let run = |op: &mut HashJoinOperator| {
            let mut all = Vec::new();
            let mut state_sizes = Vec::new();
            for (input, batch, wm) in &steps {
                let mut out = Output::default();
                op.on_chunk(*input, Chunk::inserts(batch.clone()), &mut out)
                    .unwrap();
                op.on_watermark(*wm, &mut out).unwrap();
                all.extend(drain(&mut out));
                state_sizes.push(
                    op.sides
                        .iter()
                        .flat_map(|s| s.rows.values())
                        .flat_map(|b| b.iter().map(|e| e.count as usize))
                        .sum::<usize>(),
                );
            }
            let mut rows: Vec<(bool, String)> = joined_rows(&all)
                .into_iter()
                .map(|(op, r)| (op == Op::Insert, r))
                .collect();
            rows.sort();
            (rows, state_sizes)
        };
        let (plain_out, plain_state) = run(&mut make(false));
        let (interval_out, interval_state) = run(&mut make(true));
        assert!(!plain_out.is_empty());
        assert_eq!(interval_out, plain_out);
        assert_eq!(interval_state, live);
        let (p, i) = (plain_state.last().unwrap(), interval_state.last().unwrap());
        assert!(*i * 5 < *p, "interval state {i} rows, plain {p}");
        // A bid behind the watermark is late: dropped and counted.
        let mut op = make(true);
        let mut out = Output::default();
        op.on_watermark(5_000, &mut out).unwrap();
        let late = RecordBatch::try_new(
            rs.clone(),
            vec![
                Arc::new(Int64Array::from(vec![1])),
                Arc::new(TimestampMillisecondArray::from(vec![4_999])),
            ],
        )
        .unwrap();
        op.on_chunk(1, Chunk::inserts(late), &mut out).unwrap();
        assert_eq!(out.late_dropped, 1);
        // Restored from a snapshot, the expiry index is rebuilt.
        let mut a = make(true);
        for (input, batch, wm) in &steps[..150] {
            let mut out = Output::default();
            a.on_chunk(*input, Chunk::inserts(batch.clone()), &mut out)
                .unwrap();
            a.on_watermark(*wm, &mut out).unwrap();
        }
        let mut b = make(true);
        b.restore(&ctx(0, 1), snapshot(&mut a, true)).unwrap();
        b.watermark = a.watermark;
        for (input, batch, wm) in &steps[150..] {
            let (mut oa, mut ob) = (Output::default(), Output::default());
            a.on_chunk(*input, Chunk::inserts(batch.clone()), &mut oa)
                .unwrap();
            a.on_watermark(*wm, &mut oa).unwrap();
            b.on_chunk(*input, Chunk::inserts(batch.clone()), &mut ob)
                .unwrap();
            b.on_watermark(*wm, &mut ob).unwrap();
            assert_eq!(joined_rows(&drain(&mut oa)), joined_rows(&drain(&mut ob)));
        }
        assert_eq!(
            to_map(snapshot(&mut a, true)),
            to_map(snapshot(&mut b, true))
        );
    }

    /// Output rows as text, for comparing joins of any schema.
    fn joined_rows(outs: &Outs) -> Vec<(Op, String)> {
        let mut v = Vec::new();
        for (batch, ops) in outs {
            for (i, op) in ops.iter().enumerate() {
                let cells: Vec<String> = batch
                    .columns()
                    .iter()
                    .map(|c| datafusion::arrow::util::display::array_value_to_string(c, i).unwrap())
                    .collect();
                v.push((*op, cells.join("|")));
            }
        }
        v
    }
}
