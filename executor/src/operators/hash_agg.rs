//! Incremental GROUP BY aggregation over a changelog.
//!
//! Each group keeps a row count and one state per aggregate:
//! - count(*) and count(x) keep a plain row counter (their state is the
//!   same as DataFusion's sliding count accumulator's, one Int64);
//! - other retractable aggregates (sum, avg) keep a DataFusion accumulator
//!   fed with inserts (`update_batch`) and deletes (`retract_batch`);
//! - min and max keep an ordered multiset of argument values, so a delete of
//!   the current extreme finds the next one — over an append-only input
//!   (the planner says so, [`AggSpec::with_append_only_input`]) only the
//!   extreme, in DataFusion's accumulator;
//! - count(DISTINCT x) keeps the multiset of its non-NULL argument values
//!   (a hash map value -> number of rows): its value is the map's size, and
//!   a delete of a value's last row removes it;
//! - every other aggregate (sum(distinct), string_agg, ordered aggregates,
//!   ...) keeps the multiset of its argument rows and recomputes the value
//!   with a fresh DataFusion accumulator when the group changes.
//!
//! A FILTER (WHERE ...) applies to every kind: rows it rejects do not reach
//! the aggregate's state (and their deletes do not either).
//!
//! After each input chunk, a group whose output row changed emits a delete of
//! the old row and an insert of the new one; a group that became empty emits
//! only the delete. Without GROUP BY there is exactly one group, present even
//! when empty, as in a batch `SELECT count(*) FROM t`.
//!
//! Checkpoint state: one entry per group, keyed by the group key's row bytes
//! (the bytes the exchange hashes, so the key group is the routing one; the
//! global group is in key group 0). The value (see [`encode_group`]) holds
//! the row count, the last emitted row and each aggregate's state: the
//! accumulator's `state()` for retractable aggregates (restored with
//! `merge_batch` into a fresh sliding accumulator), the argument multiset
//! for the others.
//!
//! With a store (RocksDB backend) `groups` is a bounded cache: a group not
//! in it is read from the store before the chunk touching it is applied, and
//! past `state_cache_keys` groups some are evicted (written first if they
//! changed since they were last written).

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, BooleanArray, RecordBatch, UInt32Array};
use datafusion::arrow::buffer::NullBuffer;
use datafusion::arrow::compute::{cast, take};
use datafusion::arrow::datatypes::{DataType, Int64Type, SchemaRef, TimeUnit};
use datafusion::arrow::row::OwnedRow;
use datafusion::common::hash_map::EntryRef;
use datafusion::common::ScalarValue;
use datafusion::common::{HashMap, HashSet};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::PhysicalExpr;
use smallvec::SmallVec;

use crate::chunk::{Chunk, Op};
use crate::error::{ExecError, ExecResult};
use crate::keys::{key_group_of, KeyEncoder};
use crate::operator::{Operator, OperatorContext, Output, StateEntry, StateWriter};
use crate::operators::numeric_acc::{NumericAcc, NumericKind};
use crate::operators::row_groups::{group_rows, Layout};
use crate::operators::state_codec::{ByteReader, ByteWriter, RowCodec, ScalarsCodec};
use crate::state::SubtaskStore;
use weir_storage::key_prefix;

/// A window aggregation: grouped by `window_end` (group key `end_key`).
/// Groups of windows that end at or before the watermark are final: they
/// are emitted then (`emit_on_close`) and their state is freed; input rows
/// for them are late and dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub end_key: usize,
    pub emit_on_close: bool,
    /// `late_records = 'keep'`: late rows still count, so no window's state
    /// is ever freed; with `emit_on_close` a closed window's row is emitted
    /// at close and updated (delete + insert) by late rows.
    pub keep_late: bool,
}

/// Epoch milliseconds of a timestamp scalar.
fn timestamp_ms(v: &ScalarValue) -> Option<i64> {
    match v {
        ScalarValue::TimestampSecond(Some(x), _) => Some(x * 1000),
        ScalarValue::TimestampMillisecond(Some(x), _) => Some(*x),
        ScalarValue::TimestampMicrosecond(Some(x), _) => Some(x.div_euclid(1000)),
        ScalarValue::TimestampNanosecond(Some(x), _) => Some(x.div_euclid(1_000_000)),
        _ => None,
    }
}

/// How an aggregate keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggKind {
    /// count(*) or count(x): a counter of the rows (with non-NULL `x`).
    Count,
    Retractable,
    Min,
    Max,
    /// count(DISTINCT x): the size of the multiset of `x`, NULL left out.
    CountDistinct,
    /// min or max over an append-only input: DataFusion's accumulator,
    /// which keeps the extreme value only (nothing is ever retracted).
    Extreme,
    Recompute,
}

impl AggKind {
    /// Checkpointed as a DataFusion accumulator's state (rather than a
    /// multiset); all but [`AggKind::Count`] are kept in one too.
    fn is_accumulator(self) -> bool {
        matches!(
            self,
            AggKind::Count | AggKind::Retractable | AggKind::Extreme
        )
    }
}

pub struct AggSpec {
    pub func: Arc<AggregateFunctionExpr>,
    pub args: Vec<Arc<dyn PhysicalExpr>>,
    pub filter: Option<Arc<dyn PhysicalExpr>>,
    pub kind: AggKind,
    pub arg_types: Vec<DataType>,
}

impl AggSpec {
    /// Picks the state kind for an aggregate from its DataFusion description.
    pub fn new(
        func: Arc<AggregateFunctionExpr>,
        filter: Option<Arc<dyn PhysicalExpr>>,
        input_schema: &SchemaRef,
    ) -> ExecResult<AggSpec> {
        let args = func.expressions();
        let arg_types = args
            .iter()
            .map(|a| a.data_type(input_schema))
            .collect::<Result<Vec<_>, _>>()?;
        let name = func.fun().name().to_ascii_lowercase();
        let plain = !func.is_distinct() && func.order_bys().is_empty();
        let kind = match name.as_str() {
            "count" if plain && args.len() <= 1 => AggKind::Count,
            "count" | "sum" | "avg" | "mean" if plain => {
                let probe = func.create_sliding_accumulator()?;
                if probe.supports_retract_batch() {
                    AggKind::Retractable
                } else {
                    AggKind::Recompute
                }
            }
            "min" if args.len() == 1 => AggKind::Min,
            "max" if args.len() == 1 => AggKind::Max,
            "count" if func.is_distinct() && func.order_bys().is_empty() && args.len() == 1 => {
                AggKind::CountDistinct
            }
            _ => AggKind::Recompute,
        };
        Ok(AggSpec {
            func,
            args,
            filter,
            kind,
            arg_types,
        })
    }

    /// For an input that only ever inserts: min and max then keep only
    /// their extreme value instead of the multiset of values. A delete
    /// reaching such an aggregate is an internal error.
    pub fn with_append_only_input(mut self, append_only: bool) -> AggSpec {
        if append_only && matches!(self.kind, AggKind::Min | AggKind::Max) {
            self.kind = AggKind::Extreme;
        }
        self
    }

    /// A fresh accumulator of an aggregate kept in one.
    fn accumulator(&self) -> ExecResult<Box<dyn Accumulator>> {
        Ok(match self.kind {
            AggKind::Extreme => self.func.create_accumulator()?,
            _ => self.func.create_sliding_accumulator()?,
        })
    }
}

enum AccState {
    /// A DataFusion accumulator: the sliding one of a retractable
    /// aggregate, the plain one of an [`AggKind::Extreme`].
    Accumulator(Box<dyn Accumulator>),
    /// count: the number of rows counted.
    Count(i64),
    /// sum, avg, min or max of one number, without DataFusion's
    /// accumulator (same state).
    Numeric(NumericAcc),
    Multiset(BTreeMap<OwnedRow, i64>),
    /// count(DISTINCT x): the number of rows per non-NULL value of `x`
    /// (row bytes); unordered, so that a value is found without copying
    /// its bytes.
    Distinct(HashMap<DistinctKey, i64>),
}

/// The row bytes of a distinct value: kept inline up to 16 bytes (any
/// one number, a short text), so that a lookup compares the bytes in the
/// table itself instead of following a pointer to them. The lookups of
/// count(DISTINCT) are most of its cost, and mostly cache misses.
type DistinctKey = SmallVec<[u8; 16]>;

struct GroupState {
    key: Vec<ScalarValue>,
    rows: i64,
    accs: Vec<AccState>,
    last: Option<Vec<ScalarValue>>,
    /// Listed in the operator's `dirty` set (so that a group touched by
    /// every chunk is not hashed and copied into it every time).
    dirty: bool,
    /// Its key has a value in the checkpointed state (or the store): when
    /// the group goes, the key must be deleted there. A group that comes
    /// and goes between two snapshots (most windows, when event time runs
    /// ahead of checkpoints) writes nothing at all.
    stored: bool,
    /// Listed in the operator's `pending` list: changed since the last
    /// flush.
    pending: bool,
}

/// Chunks are applied without emitting until the task flushes (its inputs
/// are drained, a barrier or the end came) or this many rows came in
/// (by default).
const MAX_UNFLUSHED_ROWS: usize = 65_536;

/// Encoders of the scalar lists in a group's checkpoint value.
struct StateCodecs {
    /// The last emitted row: group key values then aggregate values.
    last: ScalarsCodec,
    /// Group keys from their row bytes.
    group: RowCodec,
    /// Per aggregate, for the others: the argument rows of the multiset.
    args: Vec<Option<RowCodec>>,
    /// Per aggregate, for retractable ones: the accumulator state.
    accs: Vec<Option<ScalarsCodec>>,
}

pub struct HashAggOperator {
    group_exprs: Vec<Arc<dyn PhysicalExpr>>,
    group_enc: KeyEncoder,
    aggs: Vec<AggSpec>,
    /// Per aggregate kept as a multiset, the first with its arguments: the
    /// encoder of those arguments (`None` for the others, which use the
    /// first's: see [`HashAggOperator::arg_enc`]).
    arg_encs: Vec<Option<KeyEncoder>>,
    /// Per aggregate: the first aggregate with the same arguments (itself
    /// if none), whose evaluated and encoded arguments it shares (q15's
    /// four count(DISTINCT bidder) with different filters encode bidder
    /// once).
    same_args: Vec<usize>,
    /// Per aggregate: kept as a [`NumericAcc`] rather than DataFusion's
    /// accumulator.
    numeric: Vec<Option<NumericKind>>,
    /// Per count(DISTINCT x): the encoded row of a NULL `x`.
    null_args: Vec<Option<Box<[u8]>>>,
    groups: HashMap<OwnedRow, GroupState>,
    schema: SchemaRef,
    global_key: OwnedRow,
    /// Groups changed (or removed) since the previous snapshot; with a
    /// store, since they were last written to it.
    dirty: HashSet<OwnedRow>,
    codecs: StateCodecs,
    /// RocksDB backend: where every group lives; `groups` caches them.
    store: Option<Arc<SubtaskStore>>,
    window: Option<WindowSpec>,
    /// Window aggregation: the watermark so far, and the groups by the end
    /// of their window (a group may be listed more than once).
    watermark: i64,
    closing: BTreeMap<i64, Vec<OwnedRow>>,
    /// The key groups this subtask owns.
    key_groups: std::ops::Range<usize>,
    /// Groups whose row may have changed since the last flush (in the
    /// order they were first touched), and the rows taken since.
    pending: Vec<OwnedRow>,
    unflushed_rows: usize,
    max_unflushed_rows: usize,
    /// A watermark that came while rows were held back: it follows them.
    held_watermark: Option<i64>,
}

impl HashAggOperator {
    pub fn new(
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        group_types: Vec<DataType>,
        aggs: Vec<AggSpec>,
        schema: SchemaRef,
    ) -> ExecResult<Self> {
        let same_args: Vec<usize> = aggs
            .iter()
            .enumerate()
            .map(|(i, a)| {
                aggs[..i]
                    .iter()
                    .position(|b| {
                        b.args == a.args
                            && b.arg_types == a.arg_types
                            && b.kind.is_accumulator() == a.kind.is_accumulator()
                    })
                    .unwrap_or(i)
            })
            .collect();
        let arg_encs = aggs
            .iter()
            .enumerate()
            .map(
                |(i, a)| match a.kind.is_accumulator() || same_args[i] != i {
                    true => Ok(None),
                    false => KeyEncoder::new(&a.arg_types).map(Some),
                },
            )
            .collect::<ExecResult<Vec<_>>>()?;
        let null_args = aggs
            .iter()
            .enumerate()
            .map(|(i, a)| match (a.kind, &arg_encs[same_args[i]]) {
                (AggKind::CountDistinct, Some(enc)) => {
                    let null = datafusion::arrow::array::new_null_array(&a.arg_types[0], 1);
                    Ok(Some(enc.encode(&[null])?.row(0).data().into()))
                }
                _ => Ok(None),
            })
            .collect::<ExecResult<Vec<_>>>()?;
        let last_types = group_types
            .iter()
            .cloned()
            .chain(aggs.iter().map(|a| a.func.field().data_type().clone()))
            .collect();
        // The types of an accumulator's state, from a fresh one
        // (`state_fields()` describes the plain accumulator, whose state
        // can differ from the sliding one's: sum keeps a count too).
        let state_types = aggs
            .iter()
            .map(|a| match a.kind.is_accumulator() {
                true => Ok(Some(
                    a.accumulator()?
                        .state()?
                        .iter()
                        .map(|v| v.data_type())
                        .collect::<Vec<_>>(),
                )),
                false => Ok(None),
            })
            .collect::<ExecResult<Vec<_>>>()?;
        let numeric = aggs
            .iter()
            .zip(&state_types)
            .map(|(a, state)| {
                let state = state.as_ref()?;
                let retractable = match a.kind {
                    AggKind::Retractable => true,
                    AggKind::Extreme => false,
                    _ => return None,
                };
                let name = a.func.fun().name().to_ascii_lowercase();
                let output = a.func.field().data_type().clone();
                NumericKind::of(&name, retractable, &a.arg_types, &output, state)
            })
            .collect();
        let accs = state_types
            .into_iter()
            .map(|t| t.map(ScalarsCodec::new))
            .collect();
        let codecs = StateCodecs {
            group: RowCodec::new(&group_types)?,
            args: aggs
                .iter()
                .map(|a| match a.kind.is_accumulator() {
                    true => Ok(None),
                    false => RowCodec::new(&a.arg_types).map(Some),
                })
                .collect::<ExecResult<Vec<_>>>()?,
            last: ScalarsCodec::new(last_types),
            accs,
        };
        Ok(HashAggOperator {
            group_exprs,
            group_enc: KeyEncoder::new(&group_types)?,
            aggs,
            arg_encs,
            same_args,
            numeric,
            null_args,
            groups: HashMap::new(),
            schema,
            global_key: make_global_key()?,
            dirty: HashSet::new(),
            codecs,
            store: None,
            window: None,
            watermark: i64::MIN,
            closing: BTreeMap::new(),
            key_groups: 0..crate::keys::MAX_PARALLELISM,
            pending: Vec::new(),
            unflushed_rows: 0,
            max_unflushed_rows: MAX_UNFLUSHED_ROWS,
            held_watermark: None,
        })
    }

    /// Makes this a window aggregation.
    pub fn with_window(mut self, window: WindowSpec) -> Self {
        self.window = Some(window);
        self
    }

    /// Emits once this many input rows came in since the last flush, at
    /// the latest (1: after every chunk).
    pub fn with_max_unflushed_rows(mut self, rows: usize) -> Self {
        self.max_unflushed_rows = rows.max(1);
        self
    }

    /// The encoder of aggregate `i`'s arguments (a multiset's), shared
    /// with the aggregates that have the same arguments.
    fn arg_enc(&self, i: usize) -> &KeyEncoder {
        self.arg_encs[self.same_args[i]]
            .as_ref()
            .expect("a multiset aggregate has an encoder")
    }

    fn emits_on_close(&self) -> bool {
        self.window.is_some_and(|w| w.emit_on_close)
    }

    /// The watermark has passed the group's window (its row went out).
    fn window_closed(&self, group: &GroupState) -> bool {
        self.window.is_some_and(|w| {
            group
                .key
                .get(w.end_key)
                .and_then(timestamp_ms)
                .is_some_and(|end| end <= self.watermark)
        })
    }

    /// Lists a group under the end of its window.
    fn track_window(&mut self, key: &OwnedRow, key_values: &[ScalarValue]) {
        if let Some(w) = self.window {
            if let Some(end) = key_values.get(w.end_key).and_then(timestamp_ms) {
                self.closing.entry(end).or_default().push(key.clone());
            }
        }
    }

    /// Drops the rows whose window the watermark has passed.
    fn drop_late(
        &self,
        chunk: Chunk,
        group_cols: &[ArrayRef],
        out: &mut Output,
    ) -> ExecResult<Chunk> {
        let Some(w) = self.window else {
            return Ok(chunk);
        };
        if self.watermark == i64::MIN || w.keep_late {
            return Ok(chunk);
        }
        let ends = cast(
            &cast(
                &group_cols[w.end_key],
                &DataType::Timestamp(TimeUnit::Millisecond, None),
            )?,
            &DataType::Int64,
        )?;
        let ends = ends.as_primitive::<Int64Type>();
        let keep: BooleanArray = ends
            .iter()
            .map(|e| Some(e.is_none_or(|e| e > self.watermark)))
            .collect();
        let late = keep.iter().filter(|k| *k == Some(false)).count();
        if late == 0 {
            return Ok(chunk);
        }
        out.late_records_dropped(late as u64);
        chunk.filter(&keep)
    }

    /// Reads the groups among `keys` that are neither cached nor changed
    /// (a changed group that is not cached was deleted) from the store.
    fn fetch_missing<'a>(
        &mut self,
        keys: impl IntoIterator<Item = &'a OwnedRow>,
    ) -> ExecResult<()> {
        let Some(store) = self.store.as_ref().filter(|s| !s.caches_all()) else {
            return Ok(());
        };
        let global = self.is_global();
        let missing: Vec<&OwnedRow> = keys
            .into_iter()
            .filter(|k| !self.groups.contains_key(*k) && !self.dirty.contains(*k))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let request: Vec<(usize, &[u8])> = missing
            .iter()
            .map(|k| (key_group(global, k), k.as_ref()))
            .collect();
        let values = store.fetch(&request)?;
        let entries: Vec<StateEntry> = missing
            .iter()
            .zip(values)
            .filter_map(|(k, v)| {
                Some(StateEntry {
                    key_group: key_group(global, k) as u16,
                    key: k.as_ref().to_vec(),
                    value: Some(v?),
                })
            })
            .collect();
        self.load(entries)
    }

    /// Keeps the cache within its bound: evicts groups (writing the changed
    /// ones to the store) down to 90% of it.
    fn evict(&mut self) -> ExecResult<()> {
        let Some(store) = self.store.clone() else {
            return Ok(());
        };
        let cap = store.cache_keys();
        // A window aggregation's state is bounded by the watermark, and it
        // must see every open window's group when the watermark passes.
        if self.groups.len() <= cap || !store.can_evict() || self.window.is_some() {
            return Ok(());
        }
        let excess = self.groups.len() - (cap - cap / 10);
        let victims: Vec<OwnedRow> = self.groups.keys().take(excess).cloned().collect();
        let global = self.is_global();
        let mut writer = StateWriter::new(false);
        for key in &victims {
            let mut group = self.groups.remove(key).expect("cached");
            if self.dirty.remove(key) {
                let value = encode_group(&self.aggs, &self.codecs, &mut group)?;
                writer.put(key_group(global, key), key.as_ref().to_vec(), value);
            }
        }
        store.write_evicted(writer.into_entries())
    }

    /// Puts groups read from a checkpoint or the store into the cache.
    fn load(&mut self, mut entries: Vec<StateEntry>) -> ExecResult<()> {
        // A window aggregation's watermark: keys of at most one byte (its
        // group keys, with a timestamp among them, are longer; other
        // aggregations' can be that short, e.g. a NULL text key).
        let windowed = self.window.is_some();
        entries.retain(|e| {
            if !windowed || e.key.len() > 1 {
                return true;
            }
            if let Some(v) = e.value.as_deref().and_then(|v| v.try_into().ok()) {
                self.watermark = self.watermark.max(i64::from_le_bytes(v));
            }
            false
        });
        if entries.is_empty() {
            return Ok(());
        }
        let values = entries
            .iter()
            .map(|e| {
                e.value
                    .as_deref()
                    .ok_or_else(|| ExecError::internal("aggregate restore: entry without value"))
            })
            .collect::<ExecResult<Vec<_>>>()?;
        if self.is_global() {
            for (e, value) in entries.iter().zip(values) {
                if e.key.as_slice() != self.global_key.as_ref() {
                    return Err(ExecError::internal(
                        "aggregate restore: grouped state for a global aggregate",
                    ));
                }
                let group = self.decode_group(Vec::new(), value)?;
                self.groups.insert(self.global_key.clone(), group);
            }
            return Ok(());
        }
        let keys: Vec<&[u8]> = entries.iter().map(|e| e.key.as_slice()).collect();
        let key_cols = self.codecs.group.decode(&keys)?;
        let rows = self.group_enc.encode(&key_cols)?;
        for (i, value) in values.into_iter().enumerate() {
            let row = rows.row(i).owned();
            if row.as_ref() != keys[i] {
                return Err(ExecError::internal(
                    "aggregate restore: group key does not round-trip",
                ));
            }
            let key_values = key_cols
                .iter()
                .map(|c| ScalarValue::try_from_array(c, i))
                .collect::<Result<Vec<_>, _>>()?;
            self.track_window(&row, &key_values);
            let group = self.decode_group(key_values, value)?;
            self.groups.insert(row, group);
        }
        Ok(())
    }

    /// A group is gone: its stored value is deleted at the next snapshot;
    /// one never stored is no longer listed as changed.
    fn forget(&mut self, key: OwnedRow, group: &GroupState) {
        if group.stored {
            self.dirty.insert(key);
        } else if group.dirty {
            self.dirty.remove(&key);
        }
    }

    fn is_global(&self) -> bool {
        self.group_exprs.is_empty()
    }

    fn new_group(&self, key: Vec<ScalarValue>) -> ExecResult<GroupState> {
        let accs = self
            .aggs
            .iter()
            .zip(&self.numeric)
            .map(|(a, numeric)| match (a.kind, numeric) {
                (_, Some(kind)) => Ok(AccState::Numeric(NumericAcc::new(*kind))),
                (AggKind::Count, _) => Ok(AccState::Count(0)),
                (AggKind::Retractable | AggKind::Extreme, _) => {
                    Ok(AccState::Accumulator(a.accumulator()?))
                }
                (AggKind::CountDistinct, _) => Ok(AccState::Distinct(HashMap::default())),
                _ => Ok(AccState::Multiset(BTreeMap::new())),
            })
            .collect::<ExecResult<Vec<_>>>()?;
        Ok(GroupState {
            key,
            rows: 0,
            accs,
            last: None,
            dirty: false,
            stored: false,
            pending: false,
        })
    }

    /// A group from its checkpoint value (the inverse of [`encode_group`]).
    fn decode_group(&self, key: Vec<ScalarValue>, value: &[u8]) -> ExecResult<GroupState> {
        let arg_codecs = &self.codecs.args;
        let mut r = ByteReader::new(value);
        if r.u8()? != STATE_VERSION {
            return Err(ExecError::internal("aggregate state: unknown version"));
        }
        let rows = r.i64()?;
        let last = match r.u8()? {
            0 => None,
            1 => Some(self.codecs.last.decode(&mut r)?),
            _ => return Err(ExecError::internal("aggregate state: bad last-row flag")),
        };
        if r.length()? != self.aggs.len() {
            return Err(ExecError::internal(
                "aggregate state: number of aggregates differs from the plan",
            ));
        }
        let mut accs = Vec::with_capacity(self.aggs.len());
        for (i, spec) in self.aggs.iter().enumerate() {
            let tag = r.u8()?;
            let acc = match (tag, &self.codecs.accs[i], &arg_codecs[i]) {
                (TAG_ACCUMULATOR, Some(codec), _) if spec.kind == AggKind::Count => {
                    match codec.decode(&mut r)?.as_slice() {
                        [ScalarValue::Int64(n)] => AccState::Count(n.unwrap_or(0)),
                        _ => return Err(ExecError::internal("aggregate state: bad count state")),
                    }
                }
                (TAG_ACCUMULATOR, Some(codec), _) => {
                    let state = codec.decode(&mut r)?;
                    match self.numeric[i] {
                        Some(kind) => AccState::Numeric(NumericAcc::from_state(kind, &state)?),
                        None => {
                            let mut acc = spec.accumulator()?;
                            let arrays = state
                                .iter()
                                .map(|v| v.to_array_of_size(1))
                                .collect::<Result<Vec<_>, _>>()?;
                            acc.merge_batch(&arrays)?;
                            AccState::Accumulator(acc)
                        }
                    }
                }
                (TAG_MULTISET, None, Some(codec)) => {
                    let n = r.length()?;
                    let mut bytes = Vec::with_capacity(n);
                    let mut counts = Vec::with_capacity(n);
                    for _ in 0..n {
                        bytes.push(r.bytes()?);
                        counts.push(r.i64()?);
                    }
                    let rows = codec.rehydrate(self.arg_enc(i), &bytes)?;
                    if spec.kind == AggKind::CountDistinct {
                        AccState::Distinct(
                            rows.iter()
                                .map(|r| DistinctKey::from_slice(r.as_ref()))
                                .zip(counts)
                                .collect(),
                        )
                    } else {
                        AccState::Multiset(rows.into_iter().zip(counts).collect())
                    }
                }
                _ => {
                    return Err(ExecError::internal(
                        "aggregate state: state kind differs from the plan",
                    ))
                }
            };
            accs.push(acc);
        }
        r.finish()?;
        Ok(GroupState {
            key,
            rows,
            accs,
            last,
            dirty: false,
            stored: true,
            pending: false,
        })
    }

    fn evaluate(&self, group: &mut GroupState) -> ExecResult<Vec<ScalarValue>> {
        let mut values = group.key.clone();
        for (i, acc) in group.accs.iter_mut().enumerate() {
            let spec = &self.aggs[i];
            let v = match acc {
                AccState::Accumulator(acc) => acc.evaluate()?,
                AccState::Numeric(acc) => acc.evaluate(),
                AccState::Count(n) => ScalarValue::Int64(Some(*n)),
                AccState::Distinct(set) => {
                    // NULL is not counted (nor kept, but a state written
                    // when this was a recomputed aggregate may hold it).
                    let null = self.null_args[i].as_deref();
                    let nulls = null.is_some_and(|n| set.contains_key(n));
                    ScalarValue::Int64(Some((set.len() - usize::from(nulls)) as i64))
                }
                AccState::Multiset(set) => {
                    let enc = self.arg_enc(i);
                    match spec.kind {
                        AggKind::Min | AggKind::Max => {
                            let entry = if spec.kind == AggKind::Min {
                                set.iter().next()
                            } else {
                                set.iter().next_back()
                            };
                            match entry {
                                Some((row, _)) => {
                                    let cols = enc.decode_owned([row])?;
                                    ScalarValue::try_from_array(&cols[0], 0)?
                                }
                                None => ScalarValue::try_from(spec.func.field().data_type())?,
                            }
                        }
                        _ => {
                            let mut acc = spec.func.create_accumulator()?;
                            if !set.is_empty() {
                                let rows = set.iter().flat_map(|(r, c)| {
                                    std::iter::repeat_n(r, (*c).max(0) as usize)
                                });
                                let cols = enc.decode_owned(rows)?;
                                acc.update_batch(&cols)?;
                            }
                            acc.evaluate()?
                        }
                    }
                }
            };
            values.push(v);
        }
        Ok(values)
    }

    /// Emits the rows of the groups changed since the last flush; the
    /// ones left empty go.
    fn emit_pending(&mut self, out: &mut Output) -> ExecResult<()> {
        let global = self.is_global();
        let mut emitted = Vec::with_capacity(2 * self.pending.len());
        let mut groups = std::mem::take(&mut self.groups);
        let result = (|| -> ExecResult<()> {
            for key in std::mem::take(&mut self.pending) {
                let datafusion::common::hash_map::Entry::Occupied(mut entry) = groups.entry(key)
                else {
                    return Err(ExecError::internal("aggregate: a pending group is gone"));
                };
                let group = entry.get_mut();
                group.pending = false;
                if group.rows > 0 || global {
                    let values = self.evaluate(group)?;
                    if group.last.as_ref() != Some(&values) {
                        if let Some(old) = group.last.take() {
                            emitted.push((Op::Delete, old));
                        }
                        emitted.push((Op::Insert, values.clone()));
                        group.last = Some(values);
                    }
                } else {
                    let (key, group) = entry.remove_entry();
                    self.forget(key, &group);
                    if let Some(old) = group.last {
                        emitted.push((Op::Delete, old));
                    }
                }
            }
            Ok(())
        })();
        self.groups = groups;
        result?;
        if let Some(c) = self.build_chunk(emitted)? {
            out.push(c);
        }
        Ok(())
    }

    fn build_chunk(&self, rows: Vec<(Op, Vec<ScalarValue>)>) -> ExecResult<Option<Chunk>> {
        if rows.is_empty() {
            return Ok(None);
        }
        let ncols = self.schema.fields().len();
        // Transposed by moving the values (no copy of a string per cell).
        let mut ops = Vec::with_capacity(rows.len());
        let mut values: Vec<Vec<ScalarValue>> =
            (0..ncols).map(|_| Vec::with_capacity(rows.len())).collect();
        for (op, row) in rows {
            ops.push(op);
            for (col, v) in values.iter_mut().zip(row) {
                col.push(v);
            }
        }
        let mut columns = Vec::with_capacity(ncols);
        for (c, col) in values.into_iter().enumerate() {
            let arr = ScalarValue::iter_to_array(col)?;
            let want = self.schema.field(c).data_type();
            let arr = if arr.data_type() != want {
                cast(&arr, want)?
            } else {
                arr
            };
            columns.push(arr);
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns)?;
        Ok(Some(Chunk::new(batch, ops)))
    }
}

/// The key group of a group's state entry: the one the exchange routes the
/// group key's bytes to; the one group of a global aggregate is in group 0.
fn key_group(global: bool, key: &OwnedRow) -> usize {
    if global {
        0
    } else {
        key_group_of(key.as_ref())
    }
}

const STATE_VERSION: u8 = 1;
const TAG_ACCUMULATOR: u8 = 1;
const TAG_MULTISET: u8 = 2;

/// A group's checkpoint value:
///
/// ```text
/// u8 version, i64 rows,
/// u8 has_last (0/1), [scalars last],
/// u32 number of aggregates, then per aggregate:
///   u8 1 (accumulator), scalars state
///   u8 2 (multiset), u32 n, n x (u32 len, row bytes, i64 count)
/// ```
///
/// `scalars` is a [`ScalarsCodec`] encoding; integers are little-endian.
fn encode_group(
    aggs: &[AggSpec],
    codecs: &StateCodecs,
    group: &mut GroupState,
) -> ExecResult<Vec<u8>> {
    let mut w = ByteWriter::with_capacity(64);
    w.u8(STATE_VERSION);
    w.i64(group.rows);
    match &group.last {
        None => w.u8(0),
        Some(last) => {
            w.u8(1);
            codecs.last.encode(last, &mut w)?;
        }
    }
    w.length(group.accs.len())?;
    for (i, acc) in group.accs.iter_mut().enumerate() {
        match acc {
            AccState::Accumulator(acc) => {
                w.u8(TAG_ACCUMULATOR);
                let state = accumulator_state(&aggs[i], acc.as_mut())?;
                codecs.accs[i]
                    .as_ref()
                    .expect("an accumulator has a state codec")
                    .encode(&state, &mut w)?;
            }
            AccState::Numeric(acc) => {
                w.u8(TAG_ACCUMULATOR);
                codecs.accs[i]
                    .as_ref()
                    .expect("an accumulator has a state codec")
                    .encode(&acc.state(), &mut w)?;
            }
            AccState::Count(n) => {
                // As DataFusion's count accumulator's state.
                w.u8(TAG_ACCUMULATOR);
                codecs.accs[i]
                    .as_ref()
                    .expect("a count has a state codec")
                    .encode(&[ScalarValue::Int64(Some(*n))], &mut w)?;
            }
            AccState::Multiset(set) => {
                w.u8(TAG_MULTISET);
                w.length(set.len())?;
                for (row, count) in set.iter() {
                    w.bytes(row.as_ref())?;
                    w.i64(*count);
                }
            }
            AccState::Distinct(set) => {
                // In byte order, as a multiset's, so that equal states
                // encode equally (the keys are distinct).
                let mut entries: Vec<(u64, &DistinctKey, &i64)> =
                    set.iter().map(|(k, c)| (key_prefix(k), k, c)).collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.cmp(b.1)));
                w.u8(TAG_MULTISET);
                w.length(entries.len())?;
                for (_, row, count) in entries {
                    w.bytes(row)?;
                    w.i64(*count);
                }
            }
        }
    }
    Ok(w.finish())
}

/// The state of a retractable accumulator, such that `merge_batch` of it
/// into a fresh sliding accumulator gives one that evaluates, updates and
/// retracts exactly like `acc`.
///
/// `state()` is exact for count, avg and integer/decimal sum, but a sum's
/// sliding accumulator reports its sum as NULL once no value is left, while a
/// float sum still holds the rounding residual of its retractions, which the
/// next results include. That residual is read by adding and retracting a
/// zero (both exact in floating point).
fn accumulator_state(spec: &AggSpec, acc: &mut dyn Accumulator) -> ExecResult<Vec<ScalarValue>> {
    let mut state = acc.state()?;
    let lost_residual = spec.func.fun().name().eq_ignore_ascii_case("sum")
        && state.len() == 2
        && state[0].is_null()
        && state[0].data_type().is_floating()
        && state[1] == ScalarValue::UInt64(Some(0))
        && spec.arg_types.len() == 1;
    if lost_residual {
        let zero = ScalarValue::new_zero(&spec.arg_types[0])?.to_array_of_size(1)?;
        acc.update_batch(std::slice::from_ref(&zero))?;
        let probed = acc.state();
        acc.retract_batch(&[zero])?;
        let probed = probed?;
        if probed.len() == 2 && probed[1] == ScalarValue::UInt64(Some(1)) {
            state[0] = probed[0].clone();
        }
    }
    Ok(state)
}

/// A group's rows of a chunk, +1 for its inserts and -1 for its deletes.
fn signed_rows<'a>(ins: &'a [u32], del: &'a [u32]) -> impl Iterator<Item = (usize, i64)> + 'a {
    ins.iter()
        .map(|i| (*i as usize, 1))
        .chain(del.iter().map(|i| (*i as usize, -1)))
}

fn take_rows(columns: &[ArrayRef], idx: &[u32]) -> ExecResult<Vec<ArrayRef>> {
    let idx = UInt32Array::from(idx.to_vec());
    columns
        .iter()
        .map(|c| take(c.as_ref(), &idx, None).map_err(ExecError::from))
        .collect()
}

impl Operator for HashAggOperator {
    fn uses_keyed_state(&self) -> bool {
        true
    }

    /// A window aggregation forgets the windows it closed, so only a plain
    /// one holds all its results.
    fn can_reemit(&self) -> bool {
        self.window.is_none()
    }

    fn restore(&mut self, _ctx: &OperatorContext, entries: Vec<StateEntry>) -> ExecResult<()> {
        self.load(entries)
    }

    fn open(&mut self, ctx: &OperatorContext, restored: bool, out: &mut Output) -> ExecResult<()> {
        self.store = ctx.state.clone();
        let (first, end) = crate::state::key_group_range(ctx.subtask, ctx.parallelism);
        self.key_groups = first..end;
        let reemit = restored && ctx.reemit && self.can_reemit();
        if let (Some(store), true, true) = (&self.store, restored, self.window.is_some() || reemit)
        {
            // Every open window's group must be at hand when it closes;
            // every group, to emit its row again.
            let entries = store.entries()?;
            self.load(entries)?;
        }
        if reemit {
            // Each group's last emitted row, as the operators above it
            // (new after an upgrade) have not seen it.
            let rows: Vec<(Op, Vec<ScalarValue>)> = self
                .groups
                .values()
                .filter_map(|g| g.last.clone().map(|row| (Op::Insert, row)))
                .collect();
            if let Some(chunk) = self.build_chunk(rows)? {
                out.push(chunk);
            }
        }
        if self.is_global() && ctx.subtask == 0 {
            if restored {
                let key = self.global_key.clone();
                self.fetch_missing([&key])?;
            }
            // Resumed: the group came from the checkpoint and its first row
            // went out before it. (A checkpoint without the group still had
            // the row emitted: create the group silently.)
            if restored && self.groups.contains_key(&self.global_key) {
                return Ok(());
            }
            let mut group = self.new_group(Vec::new())?;
            let values = self.evaluate(&mut group)?;
            group.last = Some(values.clone());
            group.dirty = true;
            self.groups.insert(self.global_key.clone(), group);
            self.dirty.insert(self.global_key.clone());
            if !restored {
                if let Some(chunk) = self.build_chunk(vec![(Op::Insert, values)])? {
                    out.push(chunk);
                }
            }
        }
        Ok(())
    }

    fn snapshot(&mut self, state: &mut StateWriter) -> ExecResult<()> {
        if self.window.is_some() && self.watermark != i64::MIN {
            // Under every key group the subtask owns, so that whichever
            // subtask owns one after a restore (at any parallelism) gets it.
            for kg in self.key_groups.clone() {
                state.put(kg, vec![kg as u8], self.watermark.to_le_bytes().to_vec());
            }
        }
        let global = self.is_global();
        if state.is_full() {
            for (key, group) in self.groups.iter_mut() {
                let value = encode_group(&self.aggs, &self.codecs, group)?;
                state.put(key_group(global, key), key.as_ref().to_vec(), value);
                group.dirty = false;
                group.stored = true;
            }
        } else {
            for key in &self.dirty {
                let kg = key_group(global, key);
                match self.groups.get_mut(key) {
                    Some(group) => {
                        let value = encode_group(&self.aggs, &self.codecs, group)?;
                        state.put(kg, key.as_ref().to_vec(), value);
                        group.dirty = false;
                        group.stored = true;
                    }
                    None => state.delete(kg, key.as_ref().to_vec()),
                }
            }
        }
        self.dirty.clear();
        Ok(())
    }

    fn on_chunk(&mut self, _input: usize, chunk: Chunk, out: &mut Output) -> ExecResult<()> {
        let evaluate_keys = |chunk: &Chunk| {
            let n = chunk.num_rows();
            self.group_exprs
                .iter()
                .map(|e| e.evaluate(&chunk.batch).and_then(|v| v.into_array(n)))
                .collect::<Result<Vec<_>, _>>()
                .map_err(ExecError::rejected)
        };
        let mut group_cols = evaluate_keys(&chunk)?;
        let before = chunk.num_rows();
        let chunk = self.drop_late(chunk, &group_cols, out)?;
        if chunk.num_rows() != before {
            group_cols = evaluate_keys(&chunk)?;
        }
        let n = chunk.num_rows();
        let batch = &chunk.batch;
        let keys = if self.is_global() {
            None
        } else {
            Some(
                self.group_enc
                    .encode(&group_cols)
                    .map_err(ExecError::rejected)?,
            )
        };
        // Per aggregate: argument columns, filter mask, encoded rows.
        let mut agg_args: Vec<Vec<ArrayRef>> = Vec::with_capacity(self.aggs.len());
        let mut agg_masks: Vec<Option<BooleanArray>> = Vec::with_capacity(self.aggs.len());
        let mut agg_rows = Vec::with_capacity(self.aggs.len());
        for (i, spec) in self.aggs.iter().enumerate() {
            let same = self.same_args[i];
            let args = if same < i {
                agg_args[same].clone()
            } else {
                spec.args
                    .iter()
                    .map(|e| e.evaluate(batch).and_then(|v| v.into_array(n)))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(ExecError::rejected)?
            };
            let mask = match &spec.filter {
                Some(f) => {
                    let m = f
                        .evaluate(batch)
                        .and_then(|v| v.into_array(n))
                        .map_err(ExecError::rejected)?;
                    Some(
                        m.as_any()
                            .downcast_ref::<BooleanArray>()
                            .ok_or_else(|| ExecError::internal("aggregate filter is not boolean"))?
                            .clone(),
                    )
                }
                None => None,
            };
            // Encoded once per distinct argument list; the others use
            // `agg_rows[same_args[i]]`.
            agg_rows.push(match &self.arg_encs[i] {
                Some(enc) => Some(enc.encode(&args).map_err(ExecError::rejected)?),
                None => None,
            });
            agg_args.push(args);
            agg_masks.push(mask);
        }

        // Rows by group, in first-touch order, as one permutation of the
        // chunk: each group's inserts, then its deletes.
        let (order, row_group): (Vec<OwnedRow>, Vec<u32>) = match &keys {
            Some(k) => {
                let (firsts, row_group) = group_rows(k);
                let order = firsts.iter().map(|i| k.row(*i).owned()).collect();
                (order, row_group)
            }
            None if n > 0 => (vec![self.global_key.clone()], vec![0; n]),
            None => (Vec::new(), Vec::new()),
        };
        let layout = Layout::new(&row_group, order.len(), |i| chunk.op(i) == Op::Insert);
        // Per aggregate: its rows (the ones its FILTER keeps), and for the
        // retractable ones their arguments taken in that order, once.
        let mut agg_layouts = Vec::with_capacity(self.aggs.len());
        let mut agg_taken = Vec::with_capacity(self.aggs.len());
        for (a, spec) in self.aggs.iter().enumerate() {
            let l = agg_masks[a]
                .as_ref()
                .map(|m| layout.filter(|i| m.is_valid(i) && m.value(i)));
            let l_ref = l.as_ref().unwrap_or(&layout);
            agg_taken.push(match spec.kind {
                AggKind::Count => None,
                _ if self.numeric[a].is_some() => None,
                kind if kind.is_accumulator() && !l_ref.perm.is_empty() => {
                    Some(take_rows(&agg_args[a], &l_ref.perm)?)
                }
                _ => None,
            });
            agg_layouts.push(l);
        }

        // Per count(x), the NULLs of x if it has any (logical ones:
        // count(NULL) counts nothing).
        let count_nulls: Vec<Option<NullBuffer>> = self
            .aggs
            .iter()
            .zip(&agg_args)
            .map(|(spec, args)| match spec.kind {
                AggKind::Count => args
                    .first()
                    .and_then(|c| c.logical_nulls())
                    .filter(|n| n.null_count() > 0),
                _ => None,
            })
            .collect();

        let extremes = self.aggs.iter().any(|a| a.kind == AggKind::Extreme);
        if extremes && (0..n).any(|i| chunk.op(i) == Op::Delete) {
            return Err(ExecError::internal(
                "a delete reached min/max over an append-only input",
            ));
        }
        self.fetch_missing(&order)?;
        // The groups are taken out of `self` for the loop, so that each
        // group is looked up once (an entry) while `self` evaluates it.
        let mut groups = std::mem::take(&mut self.groups);
        let result = (|| -> ExecResult<()> {
            for (g, key) in order.into_iter().enumerate() {
                let (ins, del) = layout.rows(g);
                let mut entry = match groups.entry(key) {
                    datafusion::common::hash_map::Entry::Occupied(e) => e,
                    datafusion::common::hash_map::Entry::Vacant(e) => {
                        let first = layout.perm[layout.start[g]] as usize;
                        let key_values = group_cols
                            .iter()
                            .map(|c| ScalarValue::try_from_array(c, first))
                            .collect::<Result<Vec<_>, _>>()?;
                        self.track_window(e.key(), &key_values);
                        let mut group = self.new_group(key_values)?;
                        group.dirty = true;
                        // Already listed as changed without a group: it
                        // was removed, and its stored value awaits a delete.
                        group.stored = !self.dirty.insert(e.key().clone());
                        e.insert_entry(group)
                    }
                };
                if !entry.get().dirty {
                    entry.get_mut().dirty = true;
                    self.dirty.insert(entry.key().clone());
                }
                let group = entry.get_mut();
                group.rows += ins.len() as i64 - del.len() as i64;
                for (a, acc) in group.accs.iter_mut().enumerate() {
                    let l = agg_layouts[a].as_ref().unwrap_or(&layout);
                    match acc {
                        AccState::Accumulator(acc) => {
                            let Some(taken) = &agg_taken[a] else {
                                continue;
                            };
                            let (start, mid, end) = l.ranges(g);
                            if mid > start {
                                let cols: Vec<ArrayRef> =
                                    taken.iter().map(|c| c.slice(start, mid - start)).collect();
                                acc.update_batch(&cols)?;
                            }
                            if end > mid {
                                let cols: Vec<ArrayRef> =
                                    taken.iter().map(|c| c.slice(mid, end - mid)).collect();
                                acc.retract_batch(&cols)?;
                            }
                        }
                        AccState::Numeric(acc) => {
                            let (ins_a, del_a) = l.rows(g);
                            acc.update(&agg_args[a][0], ins_a, del_a)?;
                        }
                        AccState::Count(count) => {
                            let (ins_a, del_a) = l.rows(g);
                            match &count_nulls[a] {
                                None => *count += ins_a.len() as i64 - del_a.len() as i64,
                                Some(nulls) => {
                                    for (idx, sign) in signed_rows(ins_a, del_a) {
                                        if nulls.is_valid(idx) {
                                            *count += sign;
                                        }
                                    }
                                }
                            }
                        }
                        AccState::Multiset(set) => {
                            let rows = agg_rows[self.same_args[a]].as_ref().expect("encoded args");
                            let skip_nulls =
                                matches!(self.aggs[a].kind, AggKind::Min | AggKind::Max);
                            let arg0 = &agg_args[a][0];
                            let (ins_a, del_a) = l.rows(g);
                            for (idx, sign) in signed_rows(ins_a, del_a) {
                                if skip_nulls && arg0.is_null(idx) {
                                    continue;
                                }
                                let r = rows.row(idx).owned();
                                match set.entry(r) {
                                    Entry::Occupied(mut e) => {
                                        *e.get_mut() += sign;
                                        if *e.get() == 0 {
                                            e.remove();
                                        }
                                    }
                                    Entry::Vacant(e) => {
                                        e.insert(sign);
                                    }
                                }
                            }
                        }
                        AccState::Distinct(set) => {
                            let rows = agg_rows[self.same_args[a]].as_ref().expect("encoded args");
                            let arg0 = &agg_args[a][0];
                            let (ins_a, del_a) = l.rows(g);
                            for (idx, sign) in signed_rows(ins_a, del_a) {
                                if arg0.is_null(idx) {
                                    continue;
                                }
                                // One hash per row: the entry is updated, removed
                                // or filled in place.
                                let r = rows.row(idx).data();
                                match set.entry_ref(r) {
                                    EntryRef::Occupied(mut e) => {
                                        *e.get_mut() += sign;
                                        if *e.get() == 0 {
                                            e.remove();
                                        }
                                    }
                                    EntryRef::Vacant(e) => {
                                        e.insert_with_key(DistinctKey::from_slice(r), sign);
                                    }
                                }
                            }
                        }
                    }
                }
                let alive = group.rows > 0 || self.is_global();
                if self.emits_on_close() && !self.window_closed(group) {
                    // Emitted once, when the watermark closes the window (a
                    // kept late row updates it like any other group).
                    if !alive {
                        let (key, group) = entry.remove_entry();
                        self.forget(key, &group);
                    }
                    continue;
                }
                // Its row goes out at the flush (an empty group goes then).
                if !group.pending {
                    group.pending = true;
                    self.pending.push(entry.key().clone());
                }
            }
            Ok(())
        })();
        self.groups = groups;
        result?;
        self.unflushed_rows += n;
        let over_cache = self
            .store
            .as_ref()
            .is_some_and(|s| self.groups.len() > s.cache_keys());
        if self.unflushed_rows >= self.max_unflushed_rows || over_cache {
            self.flush(out)?;
        }
        if !self.pending.is_empty() {
            out.hold();
        }
        self.evict()
    }

    fn flush(&mut self, out: &mut Output) -> ExecResult<()> {
        self.unflushed_rows = 0;
        if !self.pending.is_empty() {
            self.emit_pending(out)?;
        }
        if let Some(wm) = self.held_watermark.take() {
            out.emit_watermark(wm);
        }
        Ok(())
    }
    fn on_watermark(&mut self, watermark: i64, out: &mut Output) -> ExecResult<()> {
        if self.window.is_none() && !self.pending.is_empty() {
            // Rows held back keep their place ahead of it.
            self.held_watermark = Some(watermark);
            return Ok(());
        }
        // Rows held back go out before the windows they update close.
        self.flush(out)?;
        if self.window.is_none() || watermark <= self.watermark {
            out.emit_watermark(watermark);
            return Ok(());
        }
        self.watermark = watermark;
        let open = self.closing.split_off(&(watermark.saturating_add(1)));
        let closed = std::mem::replace(&mut self.closing, open);
        let keep = self.window.is_some_and(|w| w.keep_late);
        let mut emitted = Vec::new();
        for key in closed.into_values().flatten() {
            if keep {
                // State stays for late rows; the row goes out now.
                if !self.emits_on_close() {
                    continue;
                }
                let Some(mut group) = self.groups.remove(&key) else {
                    continue;
                };
                if group.rows > 0 && group.last.is_none() {
                    let values = self.evaluate(&mut group)?;
                    emitted.push((Op::Insert, values.clone()));
                    group.last = Some(values);
                    group.dirty = true;
                    self.dirty.insert(key.clone());
                }
                self.groups.insert(key, group);
                continue;
            }
            let Some(mut group) = self.groups.remove(&key) else {
                continue;
            };
            self.forget(key, &group);
            if self.emits_on_close() && group.rows > 0 {
                emitted.push((Op::Insert, self.evaluate(&mut group)?));
            }
        }
        if let Some(c) = self.build_chunk(emitted)? {
            out.push(c);
        }
        out.emit_watermark(watermark);
        Ok(())
    }

    fn close(&mut self, out: &mut Output) -> ExecResult<()> {
        self.flush(out)?;
        // End of input: every window is complete.
        if self.window.is_some() {
            self.on_watermark(i64::MAX, out)?;
        }
        Ok(())
    }
}

/// The one key of an aggregate without GROUP BY.
fn make_global_key() -> ExecResult<OwnedRow> {
    let enc = KeyEncoder::new(&[DataType::Boolean])?;
    let arr: ArrayRef = Arc::new(BooleanArray::from(vec![true]));
    Ok(enc.encode(&[arr])?.row(0).owned())
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{
        Decimal128Array, Float64Array, Int32Array, Int64Array, StringArray,
    };
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::common::DFSchema;
    use datafusion::datasource::MemTable;
    use datafusion::execution::context::ExecutionProps;
    use datafusion::logical_expr::{Expr, LogicalPlan};
    use datafusion::physical_expr::create_physical_expr;
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::operator::Operator;
    use crate::operators::state_codec::test_util::*;

    fn table_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int32, true),
            Field::new("v", DataType::Int32, true),
            Field::new("b", DataType::Int64, true),
            Field::new("d", DataType::Decimal128(10, 2), true),
            Field::new("f", DataType::Float64, true),
            Field::new("s", DataType::Utf8, true),
        ]))
    }

    /// As the planner's `arrow_schema`: every field nullable.
    fn arrow_schema(schema: &DFSchema) -> SchemaRef {
        Arc::new(Schema::new(
            schema
                .fields()
                .iter()
                .map(|f| Field::new(f.name(), f.data_type().clone(), true))
                .collect::<Vec<_>>(),
        ))
    }

    fn physical(expr: &Expr, schema: &DFSchema) -> Arc<dyn PhysicalExpr> {
        create_physical_expr(
            expr,
            schema,
            &ExecutionProps::new(),
            &datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext::default(
            ),
        )
        .unwrap()
    }

    /// One row of `t`.
    #[derive(Clone)]
    struct Row {
        k: Option<i32>,
        v: Option<i32>,
        b: Option<i64>,
        d: Option<i128>,
        f: Option<f64>,
        s: Option<&'static str>,
    }

    fn random_row(rng: &mut Rng) -> Row {
        let opt = |rng: &mut Rng| !rng.percent(12);
        const F: [f64; 8] = [0.1, 0.2, 0.3, 1e16, -1e16, 2.5, 1e-17, -0.7];
        const S: [&str; 4] = ["a", "b", "cc", ""];
        Row {
            k: opt(rng).then(|| rng.below(5) as i32),
            v: opt(rng).then(|| rng.below(11) as i32 - 5),
            b: opt(rng).then(|| (rng.below(2001) as i64 - 1000) << 40),
            d: opt(rng).then(|| rng.below(200_001) as i128 - 100_000),
            f: opt(rng).then(|| F[rng.below(F.len())]),
            s: opt(rng).then(|| S[rng.below(S.len())]),
        }
    }

    fn table_chunk(rows: &[(Op, Row)]) -> Chunk {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from_iter(rows.iter().map(|r| r.1.k))),
            Arc::new(Int32Array::from_iter(rows.iter().map(|r| r.1.v))),
            Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.1.b))),
            Arc::new(
                Decimal128Array::from_iter(rows.iter().map(|r| r.1.d))
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
            Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.1.f))),
            Arc::new(StringArray::from_iter(rows.iter().map(|r| r.1.s))),
        ];
        let batch = RecordBatch::try_new(table_schema(), cols).unwrap();
        Chunk::new(batch, rows.iter().map(|r| r.0).collect())
    }

    /// A random changelog of `t`: deletes only of live rows, in phases that
    /// grow and shrink the table (so groups appear and vanish).
    fn random_changes(rng: &mut Rng, chunks: usize) -> Vec<Chunk> {
        let mut live: Vec<Row> = Vec::new();
        let mut out = Vec::new();
        for c in 0..chunks {
            let del_pct = if (c / 8) % 2 == 0 { 25 } else { 75 };
            let n = 1 + rng.below(6);
            let mut rows = Vec::new();
            for _ in 0..n {
                if !live.is_empty() && rng.percent(del_pct) {
                    let r = live.swap_remove(rng.below(live.len()));
                    rows.push((Op::Delete, r));
                } else {
                    let r = random_row(rng);
                    live.push(r.clone());
                    rows.push((Op::Insert, r));
                }
            }
            out.push(table_chunk(&rows));
        }
        out
    }

    /// An aggregate function with its FILTER.
    type Spec = (Arc<AggregateFunctionExpr>, Option<Arc<dyn PhysicalExpr>>);

    /// A planned aggregate: builds operators like the stream planner, and
    /// turns chunks of `t` into chunks of the aggregate's input.
    struct Planned {
        input_plan: LogicalPlan,
        group_exprs: Vec<Arc<dyn PhysicalExpr>>,
        group_types: Vec<DataType>,
        specs: Vec<Spec>,
        in_schema: SchemaRef,
        schema: SchemaRef,
    }

    impl Planned {
        fn make(&self) -> Box<dyn Operator> {
            self.make_for_input(false)
        }

        /// As the planner makes it for an append-only input.
        fn make_for_input(&self, append_only: bool) -> Box<dyn Operator> {
            Box::new(
                HashAggOperator::new(
                    self.group_exprs.clone(),
                    self.group_types.clone(),
                    self.aggs(append_only),
                    self.schema.clone(),
                )
                .unwrap(),
            )
        }

        /// The aggregates as the planner makes them for an input that is
        /// append-only or not.
        fn aggs(&self, append_only: bool) -> Vec<AggSpec> {
            self.specs
                .iter()
                .map(|(f, filter)| {
                    AggSpec::new(f.clone(), filter.clone(), &self.in_schema)
                        .map(|a| a.with_append_only_input(append_only))
                })
                .collect::<ExecResult<Vec<_>>>()
                .unwrap()
        }

        fn kinds(&self, append_only: bool) -> Vec<AggKind> {
            self.aggs(append_only).iter().map(|a| a.kind).collect()
        }

        fn input(&self, chunk: &Chunk) -> Chunk {
            Chunk {
                batch: to_input(&self.input_plan, &chunk.batch),
                ops: chunk.ops.clone(),
            }
        }

        fn route(&self) -> Route {
            Route {
                keys: self.group_exprs.clone(),
                schema: self.in_schema.clone(),
            }
        }
    }

    /// Evaluates the (table scan / projection) input of the aggregate.
    fn to_input(plan: &LogicalPlan, table: &RecordBatch) -> RecordBatch {
        match plan {
            LogicalPlan::TableScan(scan) => {
                let schema = arrow_schema(&scan.projected_schema);
                let cols = schema
                    .fields()
                    .iter()
                    .map(|f| table.column_by_name(f.name()).unwrap().clone())
                    .collect();
                RecordBatch::try_new(schema, cols).unwrap()
            }
            LogicalPlan::Projection(p) => {
                let input = to_input(&p.input, table);
                let cols = p
                    .expr
                    .iter()
                    .map(|e| {
                        physical(e, p.input.schema())
                            .evaluate(&input)
                            .unwrap()
                            .into_array(input.num_rows())
                            .unwrap()
                    })
                    .collect();
                RecordBatch::try_new(arrow_schema(&p.schema), cols).unwrap()
            }
            other => panic!("unexpected aggregate input {other}"),
        }
    }

    fn find_agg(plan: &LogicalPlan) -> &datafusion::logical_expr::Aggregate {
        match plan {
            LogicalPlan::Aggregate(a) => a,
            other => find_agg(other.inputs()[0]),
        }
    }

    #[allow(deprecated)]
    fn plan(sql: &str) -> Planned {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ctx = SessionContext::new();
        ctx.register_table(
            "t",
            Arc::new(MemTable::try_new(table_schema(), vec![vec![]]).unwrap()),
        )
        .unwrap();
        let plan = rt.block_on(ctx.state().create_logical_plan(sql)).unwrap();
        let plan = ctx.state().optimize(&plan).unwrap();
        let agg = find_agg(&plan);
        let in_df = agg.input.schema();
        let in_schema = arrow_schema(in_df);
        let group_exprs: Vec<_> = agg.group_expr.iter().map(|e| physical(e, in_df)).collect();
        let group_types = group_exprs
            .iter()
            .map(|e| e.data_type(&in_schema).unwrap())
            .collect();
        let specs = agg
            .aggr_expr
            .iter()
            .map(|e| {
                let (func, filter, _) =
                    datafusion::physical_planner::create_aggregate_expr_and_maybe_filter(
                        e,
                        in_df,
                        &in_schema,
                        &ExecutionProps::new(),
                    )
                    .unwrap();
                (Arc::new(func.as_ref().clone()), filter)
            })
            .collect();
        Planned {
            input_plan: agg.input.as_ref().clone(),
            group_exprs,
            group_types,
            specs,
            in_schema,
            schema: arrow_schema(&agg.schema),
        }
    }

    const QUERIES: [&str; 7] = [
        "SELECT k, count(*), sum(v), avg(v), min(v), max(v), count(distinct v) FROM t GROUP BY k",
        "SELECT k, count(b), sum(b), avg(b), sum(d), avg(d), count(d), min(d) FROM t GROUP BY k",
        "SELECT k, sum(f), avg(f), count(f), max(f), min(s), string_agg(s, ',') FROM t GROUP BY k",
        "SELECT s, k % 3, count(*) FILTER (WHERE v > 0), sum(f) FILTER (WHERE v > 0), \
         avg(v) FILTER (WHERE v > 0), sum(DISTINCT v) FROM t GROUP BY s, k % 3",
        "SELECT count(*), sum(f), avg(f), sum(v), avg(d), max(s), count(DISTINCT k) FROM t",
        "SELECT count(*), sum(v) FILTER (WHERE k = 1), count(s) FILTER (WHERE k = 2) FROM t",
        "SELECT d, f, count(*), sum(b) FROM t GROUP BY d, f",
    ];

    fn is_global(sql: &str) -> bool {
        !sql.contains("GROUP BY")
    }

    fn inputs(p: &Planned, rng: &mut Rng, chunks: usize) -> Vec<Input> {
        random_changes(rng, chunks)
            .iter()
            .map(|c| (0, p.input(c)))
            .collect()
    }

    #[test]
    fn reemits_its_results_from_its_state() {
        let mut checked = 0;
        for (q, sql) in QUERIES.iter().enumerate() {
            let p = plan(sql);
            if !p.make().can_reemit() {
                continue;
            }
            checked += 1;
            let mut rng = Rng::new(700 + q as u64);
            let inputs = inputs(&p, &mut rng, 48);
            check_reemit(
                &|| p.make(),
                &inputs,
                &[0, 1, inputs.len() / 2, inputs.len()],
            );
        }
        assert!(checked > 0);
    }

    #[test]
    fn restore_continues_like_the_original() {
        for (q, sql) in QUERIES.iter().enumerate() {
            let p = plan(sql);
            for seed in 0..4u64 {
                let mut rng = Rng::new(seed * 31 + q as u64);
                let inputs = inputs(&p, &mut rng, 48);
                let mut cuts = vec![0, 1, inputs.len() / 2, inputs.len()];
                for _ in 0..3 {
                    cuts.push(rng.below(inputs.len() + 1));
                }
                check_restore(&|| p.make(), &inputs, &cuts);
            }
        }
    }

    #[test]
    fn state_in_a_store_behind_a_small_cache_acts_like_in_memory() {
        for (q, sql) in QUERIES.iter().enumerate() {
            let p = plan(sql);
            for seed in 0..2u64 {
                let mut rng = Rng::new(seed * 7 + q as u64 + 300);
                let inputs = inputs(&p, &mut rng, 40);
                let cuts = [1, rng.below(inputs.len()), inputs.len() - 1];
                check_store(&|| p.make(), &inputs, &cuts, 1 + seed as usize * 3);
            }
        }
    }

    #[test]
    fn incremental_snapshots_add_up_to_a_full_one() {
        for (q, sql) in QUERIES.iter().enumerate() {
            let p = plan(sql);
            for seed in 0..4u64 {
                let mut rng = Rng::new(seed * 17 + q as u64 + 1000);
                let inputs = inputs(&p, &mut rng, 40);
                check_incremental(&|| p.make(), &inputs, &mut rng);
            }
        }
    }

    #[test]
    fn key_groups_follow_the_router_and_survive_rescale() {
        for (q, sql) in QUERIES.iter().enumerate() {
            let p = plan(sql);
            let global = is_global(sql);
            let key_of = |key: &[u8]| (!global).then(|| (0, key.to_vec()));
            let route = if global {
                Route {
                    keys: vec![],
                    schema: p.in_schema.clone(),
                }
            } else {
                p.route()
            };
            for (seed, par) in [(1u64, 2usize), (2, 3), (3, 5)] {
                let mut rng = Rng::new(seed + 77 * q as u64);
                let inputs = inputs(&p, &mut rng, 40);
                let cut = 10 + rng.below(20);
                check_rescale(
                    &|| p.make(),
                    &inputs,
                    std::slice::from_ref(&route),
                    &key_of,
                    cut,
                    par,
                );
            }
        }
    }

    #[test]
    fn restored_global_aggregate_does_not_emit_its_first_row_again() {
        let p = plan("SELECT count(*), sum(v) FROM t");
        let c = ctx(0, 1);
        let mut a = p.make();
        assert_eq!(open(a.as_mut(), &c, false).len(), 1);
        let entries = snapshot(a.as_mut(), true);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].key_group, 0);
        let mut b = p.make();
        b.restore(&c, entries).unwrap();
        assert!(open(b.as_mut(), &c, true).is_empty());
        // Without a checkpointed group: created silently, then updated with
        // a delete of the row emitted before.
        let mut b2 = p.make();
        b2.restore(&c, vec![]).unwrap();
        assert!(open(b2.as_mut(), &c, true).is_empty());
        let mut rng = Rng::new(5);
        let input = &inputs(&p, &mut rng, 1)[0];
        assert_eq!(feed(a.as_mut(), input), feed(b2.as_mut(), input));
        // The silently created group is in the next incremental snapshot.
        let mut b3 = p.make();
        assert!(open(b3.as_mut(), &c, true).is_empty());
        assert_eq!(snapshot(b3.as_mut(), false).len(), 1);
        assert!(snapshot(b3.as_mut(), false).is_empty());
        // Other subtasks have no global group.
        let mut other = p.make();
        assert!(open(other.as_mut(), &ctx(1, 2), false).is_empty());
        assert!(snapshot(other.as_mut(), true).is_empty());
    }

    /// A float sum keeps the rounding residual of its retractions even when
    /// no value is left; `state()` reports NULL then, so the residual must be
    /// recovered for the restored sum to go on identically.
    #[test]
    fn float_sum_residual_survives_restore() {
        let p = plan("SELECT sum(f), avg(f), count(f) FROM t");
        let row = |f: f64| Row {
            k: None,
            v: None,
            b: None,
            d: None,
            f: Some(f),
            s: None,
        };
        let before = [
            table_chunk(&[(Op::Insert, row(0.1)), (Op::Insert, row(0.2))]),
            table_chunk(&[(Op::Delete, row(0.1))]),
            table_chunk(&[(Op::Delete, row(0.2))]),
        ];
        let after = table_chunk(&[(Op::Insert, row(1e-17))]);
        let inputs: Vec<Input> = before
            .iter()
            .chain(std::iter::once(&after))
            .map(|c| (0, p.input(c)))
            .collect();
        check_restore(&|| p.make(), &inputs, &[3]);
        // The residual is really there: the sum is not just 1e-17.
        let mut a = p.make();
        open(a.as_mut(), &ctx(0, 1), false);
        let mut last = Vec::new();
        for input in &inputs {
            last = feed(a.as_mut(), input);
        }
        let (batch, ops) = last.last().unwrap();
        assert_eq!(ops.last(), Some(&Op::Insert));
        let sum = batch
            .column(0)
            .as_any()
            .downcast_ref::<Float64Array>()
            .unwrap()
            .value(batch.num_rows() - 1);
        assert_ne!(sum, 1e-17);
    }

    /// Round trip of each retractable accumulator through state() and
    /// merge_batch, then updates and retractions on both.
    #[test]
    fn sliding_accumulators_round_trip_through_state() {
        let p = plan(
            "SELECT count(v), sum(v), avg(v), count(b), sum(b), avg(b), sum(d), avg(d), \
             sum(f), avg(f), count(*) FROM t",
        );
        let specs: Vec<AggSpec> = p
            .specs
            .iter()
            .map(|(f, filter)| AggSpec::new(f.clone(), filter.clone(), &p.in_schema).unwrap())
            .filter(|s| s.kind != AggKind::Count)
            .collect();
        // The counts keep a counter of their own (checked against the
        // batch oracle in
        // `distinct_and_filtered_aggregates_follow_inserts_and_deletes`).
        assert_eq!(specs.len(), 8);
        assert!(specs.iter().all(|s| s.kind == AggKind::Retractable));
        let mut rng = Rng::new(9);
        let chunks: Vec<Chunk> = random_changes(&mut rng, 60)
            .iter()
            .map(|c| p.input(c))
            .collect();
        for spec in &specs {
            for cut in [0, 5, 17, 30, 59] {
                let mut a = spec.func.create_sliding_accumulator().unwrap();
                let mut b: Option<Box<dyn Accumulator>> = None;
                for (i, chunk) in chunks.iter().enumerate() {
                    if i == cut {
                        let state = accumulator_state(spec, a.as_mut()).unwrap();
                        let mut fresh = spec.func.create_sliding_accumulator().unwrap();
                        let arrays: Vec<ArrayRef> = state
                            .iter()
                            .map(|v| v.to_array_of_size(1).unwrap())
                            .collect();
                        fresh.merge_batch(&arrays).unwrap();
                        assert_eq!(fresh.evaluate().unwrap(), a.evaluate().unwrap());
                        b = Some(fresh);
                    }
                    let args: Vec<ArrayRef> = spec
                        .args
                        .iter()
                        .map(|e| {
                            e.evaluate(&chunk.batch)
                                .unwrap()
                                .into_array(chunk.num_rows())
                                .unwrap()
                        })
                        .collect();
                    let (ins, del): (Vec<u32>, Vec<u32>) = (0..chunk.num_rows() as u32)
                        .partition(|i| chunk.op(*i as usize) == Op::Insert);
                    for acc in std::iter::once(&mut a).chain(b.as_mut()) {
                        if !ins.is_empty() {
                            acc.update_batch(&take_rows(&args, &ins).unwrap()).unwrap();
                        }
                        if !del.is_empty() {
                            acc.retract_batch(&take_rows(&args, &del).unwrap()).unwrap();
                        }
                    }
                    if let Some(b) = b.as_mut() {
                        assert_eq!(
                            a.evaluate().unwrap(),
                            b.evaluate().unwrap(),
                            "{} after chunk {i}",
                            spec.func.name()
                        );
                        assert_eq!(a.state().unwrap(), b.state().unwrap());
                    }
                }
            }
        }
    }

    /// Every row of a batch as text, NULL as "NULL".
    fn text_rows(batch: &RecordBatch) -> Vec<String> {
        use datafusion::arrow::util::display::array_value_to_string;
        (0..batch.num_rows())
            .map(|i| {
                batch
                    .columns()
                    .iter()
                    .map(|c| {
                        if c.is_null(i) {
                            "NULL".to_string()
                        } else {
                            array_value_to_string(c, i).unwrap()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("|")
            })
            .collect()
    }

    /// DISTINCT and FILTER aggregates over a changelog with deletes: after
    /// every flush (after a chunk or after several, as a busy task does),
    /// the rows the operator has emitted (inserts minus deletes) equal the
    /// query run in batch over the table's live rows.
    #[test]
    fn distinct_and_filtered_aggregates_follow_inserts_and_deletes() {
        const ORACLE_QUERIES: [&str; 3] = [
            "SELECT k, count(DISTINCT v), count(DISTINCT v) FILTER (WHERE b > 0), \
             count(*) FILTER (WHERE v > 0), count(DISTINCT s), min(s) FILTER (WHERE v < 2), \
             max(v) FILTER (WHERE k > 1), sum(b) FILTER (WHERE s <> 'a'), count(DISTINCT d) \
             FROM t GROUP BY k",
            "SELECT count(DISTINCT k), count(DISTINCT s) FILTER (WHERE v < 0), count(*), \
             count(DISTINCT b) FILTER (WHERE b IS NULL) FROM t",
            "SELECT s, count(DISTINCT k) FILTER (WHERE v >= 0), max(k), avg(v), count(v), \
             count(b) FILTER (WHERE k > 1) FROM t GROUP BY s",
        ];
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        for (q, sql) in ORACLE_QUERIES.iter().enumerate() {
            let p = plan(sql);
            let kinds = p.kinds(false);
            assert!(kinds.contains(&AggKind::CountDistinct), "{sql}: {kinds:?}");
            for seed in 0..3u64 {
                let mut rng = Rng::new(seed * 13 + q as u64 + 500);
                let mut op = p.make();
                let mut emitted: HashMap<String, i64> = HashMap::new();
                let apply = |outs: Outs, emitted: &mut HashMap<String, i64>| {
                    for (batch, ops) in outs {
                        for (row, op) in text_rows(&batch).into_iter().zip(ops) {
                            *emitted.entry(row).or_default() +=
                                if op == Op::Insert { 1 } else { -1 };
                        }
                    }
                };
                apply(open(op.as_mut(), &ctx(0, 1), false), &mut emitted);
                // The table's live rows, as one-row batches by their text.
                let mut live: Vec<(String, RecordBatch)> = Vec::new();
                for chunk in random_changes(&mut rng, 40) {
                    for i in 0..chunk.num_rows() {
                        let row = chunk.batch.slice(i, 1);
                        let key = text_rows(&row).remove(0);
                        match chunk.op(i) {
                            Op::Insert => live.push((key, row)),
                            Op::Delete => {
                                let at = live.iter().position(|(k, _)| *k == key).unwrap();
                                live.swap_remove(at);
                            }
                        }
                    }
                    let mut out = Output::default();
                    op.on_chunk(0, p.input(&chunk), &mut out).unwrap();
                    if rng.percent(40) {
                        // Held back: the next flush covers this chunk too.
                        assert!(
                            out.take_chunks().is_empty(),
                            "{sql}: emitted before a flush"
                        );
                        continue;
                    }
                    op.flush(&mut out).unwrap();
                    apply(drain(&mut out), &mut emitted);
                    let mut got: Vec<String> = emitted
                        .iter()
                        .flat_map(|(r, n)| {
                            assert!(*n >= 0, "{sql}: row {r} deleted more often than inserted");
                            std::iter::repeat_n(r.clone(), *n as usize)
                        })
                        .collect();
                    got.sort();
                    let ctx = SessionContext::new();
                    let batches: Vec<RecordBatch> = live.iter().map(|(_, b)| b.clone()).collect();
                    ctx.register_table(
                        "t",
                        Arc::new(MemTable::try_new(table_schema(), vec![batches]).unwrap()),
                    )
                    .unwrap();
                    let result = rt
                        .block_on(async { ctx.sql(sql).await?.collect().await })
                        .unwrap();
                    let mut want: Vec<String> = result.iter().flat_map(text_rows).collect();
                    want.sort();
                    assert_eq!(got, want, "{sql} (seed {seed}), live rows: {}", live.len());
                }
            }
        }
    }

    /// Rows held back until the flush keep their place ahead of a
    /// watermark that came meanwhile: it goes out after them, not before.
    #[test]
    fn a_watermark_waits_for_the_rows_held_back() {
        let p = plan("SELECT k, count(*) FROM t GROUP BY k");
        let mut op = p.make();
        open(op.as_mut(), &ctx(0, 1), false);
        // Inserts only, so that a row goes out.
        let chunk = (0..)
            .map(|seed| random_changes(&mut Rng::new(seed), 1).remove(0))
            .find(|c| (0..c.num_rows()).all(|i| c.op(i) == Op::Insert))
            .unwrap();
        let mut out = Output::default();
        op.on_chunk(0, p.input(&chunk), &mut out).unwrap();
        assert!(out.held, "held rows must ask the task for a flush");
        op.on_watermark(7, &mut out).unwrap();
        assert!(out.chunks.is_empty() && out.watermark.is_none());
        op.flush(&mut out).unwrap();
        assert!(!out.chunks.is_empty());
        assert_eq!(out.watermark, Some(7));
        // Nothing held back: it passes at once.
        let mut out = Output::default();
        op.on_watermark(9, &mut out).unwrap();
        assert!(out.chunks.is_empty());
        assert_eq!(out.watermark, Some(9));
    }

    /// Over an append-only input min and max keep only the extreme, and
    /// the operator emits what the general one does, restores and spills
    /// to a store alike; a delete is refused before anything changes.
    #[test]
    fn min_max_over_an_append_only_input_keep_only_the_extreme() {
        let p = plan(
            "SELECT k, min(v), max(s), min(d) FILTER (WHERE v > 0), max(f), count(*), \
             count(DISTINCT v) FROM t GROUP BY k",
        );
        let kinds = p.kinds(true);
        assert_eq!(kinds.iter().filter(|k| **k == AggKind::Extreme).count(), 4);
        let make = || p.make_for_input(true);
        for seed in 0..3u64 {
            let mut rng = Rng::new(seed + 900);
            let inputs: Vec<Input> = random_changes(&mut rng, 30)
                .iter()
                .map(|c| {
                    let inserts: BooleanArray = (0..c.num_rows())
                        .map(|i| Some(c.op(i) == Op::Insert))
                        .collect();
                    (0, p.input(&c.filter(&inserts).unwrap()))
                })
                .filter(|(_, c)| c.num_rows() > 0)
                .collect();
            let (mut general, mut extreme) = (p.make(), make());
            open(general.as_mut(), &ctx(0, 1), false);
            open(extreme.as_mut(), &ctx(0, 1), false);
            for input in &inputs {
                assert_eq!(feed(general.as_mut(), input), feed(extreme.as_mut(), input));
            }
            check_restore(&make, &inputs, &[0, 5, inputs.len() / 2, inputs.len()]);
            check_store(&make, &inputs, &[1, inputs.len() / 2, inputs.len() - 1], 2);
            // A delete is refused, and the state stays as it was.
            let before = to_map(snapshot(extreme.as_mut(), true));
            let mut delete = inputs[0].1.clone();
            delete.ops = Some(Arc::new(vec![Op::Delete; delete.num_rows()]));
            let mut out = Output::default();
            assert!(extreme.on_chunk(0, delete, &mut out).is_err());
            assert_eq!(to_map(snapshot(extreme.as_mut(), true)), before);
        }
    }

    #[test]
    fn corrupt_state_is_an_error() {
        let p = plan(QUERIES[0]);
        let mut a = p.make();
        let c = ctx(0, 1);
        open(a.as_mut(), &c, false);
        let mut rng = Rng::new(3);
        for input in inputs(&p, &mut rng, 5) {
            feed(a.as_mut(), &input);
        }
        let mut entries = snapshot(a.as_mut(), true);
        let v = entries[0].value.as_mut().unwrap();
        v.truncate(v.len() - 1);
        assert!(p.make().restore(&c, entries).is_err());
        // A plan with other aggregates refuses the state.
        let entries = snapshot(a.as_mut(), true);
        let other = plan("SELECT k, count(*) FROM t GROUP BY k");
        assert!(other.make().restore(&c, entries).is_err());
    }
}
