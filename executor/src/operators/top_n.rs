//! `StreamTopN`: the first `limit` rows of each partition in an order, with
//! their row number — `ROW_NUMBER() OVER (PARTITION BY p ORDER BY o) <= n`,
//! and deduplication as its `n = 1` case.
//!
//! Each partition keeps its rows sorted by (order key, row bytes), with a
//! multiplicity; copies of a row take consecutive row numbers. Ties in the
//! order key are broken by the row's bytes, so the result does not depend on
//! arrival order (SQL leaves ties unordered; any order is a valid answer).
//!
//! The output is the set of (row, row number) pairs of ranks `1..=limit`.
//! For each partition a chunk touches, the operator compares the top rows
//! before and after the chunk's changes and, for every rank whose row
//! changed, retracts the old (row, rank) and inserts the new one. A new
//! first row of a top 10 thus shifts and re-emits all ten, as Flink does when
//! the row number is part of the output.
//!
//! With an append-only input (`append_only`), rows that fall out of the top
//! can never come back, so a partition keeps only `limit` rows. With a
//! retracting input it keeps them all: deleting a top row promotes the next.
//!
//! Checkpoint state: one entry per partition, keyed by the partition key's
//! row bytes (the bytes the exchange hashes; key group 0 and a constant key
//! without PARTITION BY). The value is `u8 version, u32 n, n x (u32 len,
//! order key bytes, u32 len, row bytes, i64 count)`.
//!
//! With a store (RocksDB backend) `parts` is a bounded cache, as in the
//! aggregation and the join.

use std::collections::BTreeMap;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions, UInt64Array};
use datafusion::arrow::compute::{cast, SortOptions};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::{HashMap, HashSet};
use datafusion::physical_expr::PhysicalExpr;

use crate::chunk::{Chunk, Op};
use crate::error::{ExecError, ExecResult};
use crate::keys::KeyEncoder;
use crate::operator::{Operator, OperatorContext, Output, StateEntry, StateWriter};
use crate::operators::partition_key::PartitionKey;
use crate::operators::row_groups::{group_rows, Layout};
use crate::operators::state_codec::{ByteReader, ByteWriter, RowCodec};
use crate::state::SubtaskStore;

const STATE_VERSION: u8 = 1;

/// A row's place in the order: (order key bytes, row).
type RankKey = (Vec<u8>, OwnedRow);

/// A partition's rows in rank order, with their multiplicity.
enum Partition {
    /// Append-only input: at most `limit` rows, in a sorted vector (a
    /// deduplication keeps one row per key: a tree per key would cost far
    /// more memory).
    Few(Vec<(RankKey, i64)>),
    /// Retracting input: every row.
    All(BTreeMap<RankKey, i64>),
}

impl Partition {
    fn new(append_only: bool) -> Self {
        if append_only {
            Partition::Few(Vec::new())
        } else {
            Partition::All(BTreeMap::new())
        }
    }

    fn iter(&self) -> Box<dyn Iterator<Item = (&RankKey, i64)> + '_> {
        match self {
            Partition::Few(v) => Box::new(v.iter().map(|(k, c)| (k, *c))),
            Partition::All(m) => Box::new(m.iter().map(|(k, c)| (k, *c))),
        }
    }

    fn len(&self) -> usize {
        match self {
            Partition::Few(v) => v.len(),
            Partition::All(m) => m.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Adds one copy of a row; false if it was not there to remove.
    fn change(&mut self, key: RankKey, insert: bool) -> bool {
        match self {
            Partition::Few(v) => match v.binary_search_by(|(k, _)| k.cmp(&key)) {
                Ok(i) if insert => v[i].1 += 1,
                Ok(i) => {
                    v[i].1 -= 1;
                    if v[i].1 == 0 {
                        v.remove(i);
                    }
                }
                Err(i) if insert => v.insert(i, (key, 1)),
                Err(_) => return false,
            },
            Partition::All(m) if insert => *m.entry(key).or_insert(0) += 1,
            Partition::All(m) => {
                let Some(count) = m.get_mut(&key) else {
                    return false;
                };
                *count -= 1;
                if *count == 0 {
                    m.remove(&key);
                }
            }
        }
        true
    }

    /// Whether a row ranked `order, row` would fall past the first `limit`
    /// copies of a partition that holds only those (append-only).
    fn beyond(&self, limit: usize, order: &[u8], row: &[u8]) -> bool {
        let Partition::Few(v) = self else {
            return false;
        };
        let held: i64 = v.iter().map(|(_, c)| *c).sum();
        match v.last() {
            Some(((o, r), _)) if held >= limit as i64 => (order, row) > (o.as_slice(), r.as_ref()),
            _ => false,
        }
    }

    /// Keeps only the first `limit` copies (append-only: the others can
    /// never rise again).
    fn truncate(&mut self, limit: usize) {
        if let Partition::Few(v) = self {
            let mut kept = 0i64;
            let limit = limit as i64;
            v.retain_mut(|(_, count)| {
                let keep = kept < limit;
                if keep {
                    *count = (*count).min(limit - kept);
                    kept += *count;
                }
                keep
            });
        }
    }
}

/// One ORDER BY term: its expression and direction.
pub struct OrderTerm {
    pub expr: Arc<dyn PhysicalExpr>,
    pub descending: bool,
    pub nulls_first: bool,
}

pub struct TopNOperator {
    /// PARTITION BY (none: one constant key, key group 0).
    partition: PartitionKey,
    order_exprs: Vec<Arc<dyn PhysicalExpr>>,
    order_enc: RowConverter,
    row_enc: KeyEncoder,
    row_codec: RowCodec,
    limit: usize,
    append_only: bool,
    /// The output has the row number as last column (`ROW_NUMBER()`);
    /// without it (`ORDER BY .. LIMIT n`) only the set of top rows counts.
    row_number: bool,
    parts: HashMap<OwnedRow, Partition>,
    /// Partitions changed since the previous snapshot; with a store, since
    /// they were last written to it.
    dirty: HashSet<OwnedRow>,
    output_schema: SchemaRef,
    store: Option<Arc<SubtaskStore>>,
}

impl TopNOperator {
    /// `input_schema` is the schema of the rows; the output is those
    /// columns, followed by the row number if `output_schema` has one more
    /// field.
    pub fn new(
        partition_exprs: Vec<Arc<dyn PhysicalExpr>>,
        order: Vec<OrderTerm>,
        limit: usize,
        append_only: bool,
        input_schema: &SchemaRef,
        output_schema: SchemaRef,
    ) -> ExecResult<Self> {
        let types: Vec<DataType> = input_schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let mut order_fields = Vec::new();
        let mut order_exprs = Vec::new();
        for t in order {
            order_fields.push(SortField::new_with_options(
                t.expr.data_type(input_schema)?,
                SortOptions {
                    descending: t.descending,
                    nulls_first: t.nulls_first,
                },
            ));
            order_exprs.push(t.expr);
        }
        let row_number = output_schema.fields().len() == types.len() + 1;
        if !row_number && output_schema.fields().len() != types.len() {
            return Err(ExecError::internal(
                "top-N output must be the input columns, and maybe the row number",
            ));
        }
        Ok(TopNOperator {
            partition: PartitionKey::new(partition_exprs, input_schema)?,
            order_exprs,
            order_enc: RowConverter::new(order_fields)?,
            row_enc: KeyEncoder::new(&types)?,
            row_codec: RowCodec::new(&types)?,
            limit,
            append_only,
            row_number,
            parts: HashMap::new(),
            dirty: HashSet::new(),
            output_schema,
            store: None,
        })
    }

    fn key_group(&self, key: &OwnedRow) -> usize {
        self.partition.key_group(key.as_ref())
    }

    /// The rows of ranks 1..=limit, each copy of a row once.
    fn top(&self, part: Option<&Partition>) -> Vec<OwnedRow> {
        let mut out = Vec::new();
        for ((_, row), count) in part.into_iter().flat_map(|p| p.iter()) {
            for _ in 0..count {
                if out.len() == self.limit {
                    return out;
                }
                out.push(row.clone());
            }
        }
        out
    }

    fn snapshot_key(&self, key: &OwnedRow, state: &mut StateWriter) -> ExecResult<()> {
        let kg = self.key_group(key);
        match self.parts.get(key) {
            Some(part) if !part.is_empty() => {
                let size: usize = part
                    .iter()
                    .map(|((order, row), _)| 16 + order.len() + row.as_ref().len())
                    .sum();
                let mut w = ByteWriter::with_capacity(5 + size);
                w.u8(STATE_VERSION);
                w.length(part.len())?;
                for ((order, row), count) in part.iter() {
                    w.bytes(order)?;
                    w.bytes(row.as_ref())?;
                    w.i64(count);
                }
                state.put(kg, key.as_ref().to_vec(), w.finish());
            }
            _ => state.delete(kg, key.as_ref().to_vec()),
        }
        Ok(())
    }

    /// Restores (partition key bytes, value) pairs.
    fn load(&mut self, entries: &[(&[u8], &[u8])]) -> ExecResult<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let mut lens = Vec::with_capacity(entries.len());
        let mut orders: Vec<(Vec<u8>, i64)> = Vec::new();
        let mut row_bytes: Vec<&[u8]> = Vec::new();
        for (_, value) in entries {
            let mut r = ByteReader::new(value);
            if r.u8()? != STATE_VERSION {
                return Err(ExecError::internal("top-N state: unknown version"));
            }
            let n = r.length()?;
            for _ in 0..n {
                let order = r.bytes()?.to_vec();
                row_bytes.push(r.bytes()?);
                orders.push((order, r.i64()?));
            }
            r.finish()?;
            lens.push(n);
        }
        let key_bytes: Vec<&[u8]> = entries.iter().map(|(k, _)| *k).collect();
        let keys = self.partition.rehydrate(&key_bytes)?;
        let rows = self.row_codec.rehydrate(&self.row_enc, &row_bytes)?;
        let mut rows = rows.into_iter().zip(orders);
        for (key, n) in keys.into_iter().zip(lens) {
            let mut part = Partition::new(self.append_only);
            for (row, (order, count)) in rows.by_ref().take(n) {
                for _ in 0..count {
                    part.change((order.clone(), row.clone()), true);
                }
            }
            if part.is_empty() {
                self.parts.remove(&key);
            } else {
                self.parts.insert(key, part);
            }
        }
        Ok(())
    }

    /// Reads the partitions among `keys` that are neither cached nor
    /// changed (a changed partition that is not cached is empty).
    fn fetch_missing(&mut self, keys: &[OwnedRow]) -> ExecResult<()> {
        let Some(store) = self.store.clone().filter(|s| !s.caches_all()) else {
            return Ok(());
        };
        let missing: Vec<&OwnedRow> = keys
            .iter()
            .filter(|k| !self.parts.contains_key(*k) && !self.dirty.contains(*k))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let request: Vec<(usize, &[u8])> = missing
            .iter()
            .map(|k| (self.key_group(k), k.as_ref()))
            .collect();
        let values = store.fetch(&request)?;
        let found: Vec<(&[u8], &[u8])> = missing
            .iter()
            .zip(&values)
            .filter_map(|(k, v)| Some((k.as_ref(), v.as_deref()?)))
            .collect();
        self.load(&found)
    }

    /// Keeps the cache within its bound: evicts partitions (writing the
    /// changed ones to the store) down to 90% of it.
    fn evict(&mut self) -> ExecResult<()> {
        let Some(store) = self.store.clone() else {
            return Ok(());
        };
        let cap = store.cache_keys();
        if self.parts.len() <= cap || !store.can_evict() {
            return Ok(());
        }
        let excess = self.parts.len() - (cap - cap / 10);
        let victims: Vec<OwnedRow> = self.parts.keys().take(excess).cloned().collect();
        let mut writer = StateWriter::new(false);
        for key in &victims {
            if self.dirty.remove(key) {
                self.snapshot_key(key, &mut writer)?;
            }
        }
        for key in &victims {
            self.parts.remove(key);
        }
        store.write_evicted(writer.into_entries())
    }

    fn output(&self, rows: Vec<(Op, OwnedRow, u64)>) -> ExecResult<Option<Chunk>> {
        if rows.is_empty() {
            return Ok(None);
        }
        let n = rows.len();
        let mut cols = self.row_enc.decode_owned(rows.iter().map(|r| &r.1))?;
        if self.row_number {
            let ranks: ArrayRef = Arc::new(UInt64Array::from_iter_values(rows.iter().map(|r| r.2)));
            let rank_type = self.output_schema.fields()[cols.len()].data_type();
            cols.push(if ranks.data_type() == rank_type {
                ranks
            } else {
                cast(&ranks, rank_type)?
            });
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

impl Operator for TopNOperator {
    fn uses_keyed_state(&self) -> bool {
        true
    }

    /// Every partition holds at least its top rows.
    fn can_reemit(&self) -> bool {
        true
    }

    fn open(&mut self, ctx: &OperatorContext, restored: bool, out: &mut Output) -> ExecResult<()> {
        self.store = ctx.state.clone();
        if restored && ctx.reemit {
            // The top rows of every partition, ranked, for the new
            // operators above it after an upgrade.
            if let Some(store) = &self.store {
                let entries = store.entries()?;
                let pairs: Vec<(&[u8], &[u8])> = entries
                    .iter()
                    .filter_map(|e| Some((e.key.as_slice(), e.value.as_deref()?)))
                    .collect();
                self.load(&pairs)?;
            }
            let mut rows = Vec::new();
            for part in self.parts.values() {
                for (i, row) in self.top(Some(part)).into_iter().enumerate() {
                    rows.push((Op::Insert, row, i as u64 + 1));
                }
            }
            if let Some(chunk) = self.output(rows)? {
                out.push(chunk);
            }
        }
        Ok(())
    }

    fn restore(&mut self, _ctx: &OperatorContext, entries: Vec<StateEntry>) -> ExecResult<()> {
        let mut pairs = Vec::with_capacity(entries.len());
        for e in &entries {
            let value = e
                .value
                .as_deref()
                .ok_or_else(|| ExecError::internal("top-N restore: entry without value"))?;
            pairs.push((e.key.as_slice(), value));
        }
        self.load(&pairs)
    }

    fn snapshot(&mut self, state: &mut StateWriter) -> ExecResult<()> {
        for key in state.keys_to_write(self.parts.keys(), &self.dirty) {
            self.snapshot_key(key, state)?;
        }
        self.dirty.clear();
        Ok(())
    }

    fn on_chunk(&mut self, _input: usize, chunk: Chunk, out: &mut Output) -> ExecResult<()> {
        let n = chunk.num_rows();
        let batch = &chunk.batch;
        let order_cols: Vec<ArrayRef> = self
            .order_exprs
            .iter()
            .map(|e| e.evaluate(batch).and_then(|v| v.into_array(n)))
            .collect::<Result<_, _>>()?;
        let keys = self.partition.encode(batch)?;
        let orders = self.order_enc.convert_columns(&order_cols)?;
        let rows = self.row_enc.encode(batch.columns())?;

        // The chunk's rows by partition, partitions in order of first use,
        // each partition's rows in chunk order.
        let (firsts, row_part) = group_rows(&keys);
        let layout = Layout::new(&row_part, firsts.len(), |_| true);
        let touched: Vec<OwnedRow> = firsts.iter().map(|i| keys.row(*i).owned()).collect();
        self.fetch_missing(&touched)?;

        let mut emitted: Vec<(Op, OwnedRow, u64)> = Vec::new();
        for (g, key) in touched.into_iter().enumerate() {
            let members = layout.rows(g).0.iter().map(|i| *i as usize);
            let before = self.top(self.parts.get(&key));
            let append_only = self.append_only;
            // The key is copied only for a new partition (the map and the
            // dirty set each own one).
            if !self.parts.contains_key(&key) {
                self.parts.insert(key.clone(), Partition::new(append_only));
            }
            let part = self.parts.get_mut(&key).expect("inserted above");
            for i in members {
                let insert = chunk.op(i) == Op::Insert;
                if append_only {
                    if !insert {
                        return Err(ExecError::internal("append-only top-N received a delete"));
                    }
                    // Past the top of a full partition: never in it.
                    if part.beyond(self.limit, orders.row(i).as_ref(), rows.row(i).as_ref()) {
                        continue;
                    }
                }
                let entry = (orders.row(i).as_ref().to_vec(), rows.row(i).owned());
                if !part.change(entry, insert) {
                    return Err(ExecError::internal(
                        "top-N: delete of a row it does not hold",
                    ));
                }
                if append_only {
                    part.truncate(self.limit);
                }
            }
            let empty = part.is_empty();
            if empty {
                self.parts.remove(&key);
            }
            let after = self.top(self.parts.get(&key));
            if !self.row_number {
                // Only which rows are in the top counts: emit the
                // multiset difference.
                let mut net: HashMap<&OwnedRow, i64> = HashMap::new();
                for row in &before {
                    *net.entry(row).or_default() -= 1;
                }
                for row in &after {
                    *net.entry(row).or_default() += 1;
                }
                for row in &before {
                    if let Some(c) = net.get_mut(row).filter(|c| **c < 0) {
                        *c += 1;
                        emitted.push((Op::Delete, row.clone(), 0));
                    }
                }
                for row in &after {
                    if let Some(c) = net.get_mut(row).filter(|c| **c > 0) {
                        *c -= 1;
                        emitted.push((Op::Insert, row.clone(), 0));
                    }
                }
                self.dirty.insert(key);
                continue;
            }
            let ranks = before.len().max(after.len());
            let (mut before, mut after) = (before.into_iter(), after.into_iter());
            for rank in 1..=ranks as u64 {
                let (old, new) = (before.next(), after.next());
                if old == new {
                    continue;
                }
                if let Some(old) = old {
                    emitted.push((Op::Delete, old, rank));
                }
                if let Some(new) = new {
                    emitted.push((Op::Insert, new, rank));
                }
            }
            self.dirty.insert(key);
        }
        if let Some(c) = self.output(emitted)? {
            out.push(c);
        }
        self.evict()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::state_codec::test_util::*;
    use datafusion::arrow::array::{Array, Int32Array};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::physical_plan::expressions::Column;

    /// (partition, order value, payload); partition and order may be NULL.
    type Row = (Option<i32>, Option<i32>, i32);

    fn in_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("p", DataType::Int32, true),
            Field::new("o", DataType::Int32, true),
            Field::new("v", DataType::Int32, true),
        ]))
    }

    fn out_schema(row_number: bool) -> SchemaRef {
        let mut fields: Vec<Field> = in_schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        if row_number {
            fields.push(Field::new("rn", DataType::UInt64, true));
        }
        Arc::new(Schema::new(fields))
    }

    struct Spec {
        partitioned: bool,
        descending: bool,
        limit: usize,
        append_only: bool,
        row_number: bool,
    }

    impl Spec {
        fn make(&self) -> Box<dyn Operator> {
            let col = |n: &str, i| Arc::new(Column::new(n, i)) as Arc<dyn PhysicalExpr>;
            let partition = if self.partitioned {
                vec![col("p", 0)]
            } else {
                vec![]
            };
            Box::new(
                TopNOperator::new(
                    partition,
                    vec![OrderTerm {
                        expr: col("o", 1),
                        descending: self.descending,
                        nulls_first: false,
                    }],
                    self.limit,
                    self.append_only,
                    &in_schema(),
                    out_schema(self.row_number),
                )
                .unwrap(),
            )
        }
    }

    fn specs() -> Vec<Spec> {
        let mut out = Vec::new();
        for partitioned in [true, false] {
            for (descending, limit, row_number) in [
                (true, 1, true),
                (false, 3, true),
                (true, 3, true),
                (false, 2, false),
            ] {
                for append_only in [false, true] {
                    out.push(Spec {
                        partitioned,
                        descending,
                        limit,
                        append_only,
                        row_number,
                    });
                }
            }
        }
        out
    }

    fn chunk(rows: &[(Op, Row)]) -> Chunk {
        let batch = RecordBatch::try_new(
            in_schema(),
            vec![
                Arc::new(Int32Array::from_iter(rows.iter().map(|r| r.1 .0))),
                Arc::new(Int32Array::from_iter(rows.iter().map(|r| r.1 .1))),
                Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.1 .2))),
            ],
        )
        .unwrap();
        Chunk::new(batch, rows.iter().map(|r| r.0).collect())
    }

    /// Random changes: few distinct rows (so copies), NULLs, deletes of
    /// live rows only (none for append-only specs).
    fn random_inputs(rng: &mut Rng, chunks: usize, deletes: bool) -> Vec<Input> {
        let mut live: Vec<Row> = Vec::new();
        let mut out = Vec::new();
        for _ in 0..chunks {
            let mut rows = Vec::new();
            for _ in 0..1 + rng.below(6) {
                if deletes && !live.is_empty() && rng.percent(35) {
                    let r = live.swap_remove(rng.below(live.len()));
                    rows.push((Op::Delete, r));
                } else {
                    let r: Row = (
                        (!rng.percent(10)).then(|| rng.below(4) as i32),
                        (!rng.percent(10)).then(|| rng.below(8) as i32),
                        rng.below(3) as i32,
                    );
                    live.push(r);
                    rows.push((Op::Insert, r));
                }
            }
            out.push((0, chunk(&rows)));
        }
        out
    }

    /// The oracle: ROW_NUMBER over the live rows, computed from scratch.
    fn expected(spec: &Spec, live: &[Row]) -> Vec<(Row, u64)> {
        let mut by_part: BTreeMap<Option<i32>, Vec<Row>> = BTreeMap::new();
        for r in live {
            let p = if spec.partitioned { r.0 } else { None };
            by_part.entry(p).or_default().push(*r);
        }
        let mut out = Vec::new();
        for (_, mut rows) in by_part {
            // NULLs last in either direction; ties by (p, v) as the
            // operator's row bytes order them (p then o then v).
            rows.sort_by(|a, b| {
                let ord = match (a.1, b.1) {
                    (None, None) => std::cmp::Ordering::Equal,
                    (None, _) => std::cmp::Ordering::Greater,
                    (_, None) => std::cmp::Ordering::Less,
                    (Some(x), Some(y)) if spec.descending => y.cmp(&x),
                    (Some(x), Some(y)) => x.cmp(&y),
                };
                ord.then_with(|| (a.0.is_some(), a.0, a.2).cmp(&(b.0.is_some(), b.0, b.2)))
            });
            for (i, r) in rows.into_iter().take(spec.limit).enumerate() {
                out.push((r, if spec.row_number { i as u64 + 1 } else { 0 }));
            }
        }
        out.sort();
        out
    }

    fn apply_outs(state: &mut HashMap<(Row, u64), i64>, outs: &Outs) {
        for (batch, ops) in outs {
            let p = batch
                .column(0)
                .as_any()
                .downcast_ref::<Int32Array>()
                .unwrap();
            let o = batch
                .column(1)
                .as_any()
                .downcast_ref::<Int32Array>()
                .unwrap();
            let v = batch
                .column(2)
                .as_any()
                .downcast_ref::<Int32Array>()
                .unwrap();
            let rn = (batch.num_columns() == 4).then(|| {
                batch
                    .column(3)
                    .as_any()
                    .downcast_ref::<UInt64Array>()
                    .unwrap()
            });
            for (i, op) in ops.iter().enumerate() {
                let p = (!p.is_null(i)).then(|| p.value(i));
                let o = (!o.is_null(i)).then(|| o.value(i));
                let rank = rn.map_or(0, |rn| rn.value(i));
                *state.entry(((p, o, v.value(i)), rank)).or_default() += op.sign();
            }
        }
        state.retain(|_, c| *c != 0);
    }

    #[test]
    fn output_after_every_chunk_is_the_row_number_oracle() {
        for (i, spec) in specs().iter().enumerate() {
            for seed in 0..4u64 {
                let mut rng = Rng::new(seed * 77 + i as u64);
                let inputs = random_inputs(&mut rng, 50, !spec.append_only);
                let mut op = spec.make();
                open(op.as_mut(), &ctx(0, 1), false);
                let mut live: Vec<Row> = Vec::new();
                let mut result = HashMap::new();
                for (c, (_, ch)) in inputs.iter().enumerate() {
                    apply_outs(&mut result, &feed(op.as_mut(), &(0, ch.clone())));
                    let b = &ch.batch;
                    let p = b.column(0).as_any().downcast_ref::<Int32Array>().unwrap();
                    let o = b.column(1).as_any().downcast_ref::<Int32Array>().unwrap();
                    let v = b.column(2).as_any().downcast_ref::<Int32Array>().unwrap();
                    for r in 0..ch.num_rows() {
                        let row = (
                            (!p.is_null(r)).then(|| p.value(r)),
                            (!o.is_null(r)).then(|| o.value(r)),
                            v.value(r),
                        );
                        match ch.op(r) {
                            Op::Insert => live.push(row),
                            Op::Delete => {
                                let at = live.iter().position(|x| *x == row).unwrap();
                                live.swap_remove(at);
                            }
                        }
                    }
                    let mut got: Vec<(Row, u64)> = Vec::new();
                    for (k, c) in &result {
                        assert!(
                            *c == 1 || (!spec.row_number && *c > 1),
                            "row emitted {c} times: {k:?}"
                        );
                        for _ in 0..*c {
                            got.push(*k);
                        }
                    }
                    got.sort();
                    assert_eq!(got, expected(spec, &live), "spec {i} seed {seed} chunk {c}");
                }
            }
        }
    }

    #[test]
    fn append_only_keeps_only_the_limit() {
        let spec = Spec {
            partitioned: true,
            descending: true,
            limit: 2,
            append_only: true,
            row_number: true,
        };
        let mut op = spec.make();
        open(op.as_mut(), &ctx(0, 1), false);
        let rows: Vec<(Op, Row)> = (0..100)
            .map(|i| (Op::Insert, (Some(1), Some(i), 0)))
            .collect();
        feed(op.as_mut(), &(0, chunk(&rows)));
        let map = to_map(snapshot(op.as_mut(), true));
        assert_eq!(map.len(), 1);
        let mut r = ByteReader::new(&map.values().next().unwrap().1);
        r.u8().unwrap();
        assert_eq!(r.length().unwrap(), 2, "only the top 2 rows are kept");
        let del = chunk(&[(Op::Delete, (Some(1), Some(99), 0))]);
        let mut out = Output::default();
        assert!(op.on_chunk(0, del, &mut out).is_err());
    }

    #[test]
    fn restore_continues_like_the_original() {
        for (i, spec) in specs().iter().enumerate() {
            let mut rng = Rng::new(4000 + i as u64);
            let inputs = random_inputs(&mut rng, 40, !spec.append_only);
            let cuts = [0, 1, 17, inputs.len()];
            check_restore(&|| spec.make(), &inputs, &cuts);
        }
    }

    #[test]
    fn reemits_its_top_rows_from_its_state() {
        for (i, spec) in specs().iter().enumerate() {
            let mut rng = Rng::new(6000 + i as u64);
            let inputs = random_inputs(&mut rng, 40, !spec.append_only);
            check_reemit(&|| spec.make(), &inputs, &[0, 1, 17, inputs.len()]);
        }
    }

    #[test]
    fn state_in_a_store_behind_a_small_cache_acts_like_in_memory() {
        for (i, spec) in specs().iter().enumerate() {
            let mut rng = Rng::new(5000 + i as u64);
            let inputs = random_inputs(&mut rng, 40, !spec.append_only);
            check_store(&|| spec.make(), &inputs, &[1, 20, 39], 1 + i % 3);
        }
    }

    #[test]
    fn incremental_snapshots_add_up_to_a_full_one() {
        for (i, spec) in specs().iter().enumerate() {
            let mut rng = Rng::new(6000 + i as u64);
            let inputs = random_inputs(&mut rng, 50, !spec.append_only);
            check_incremental(&|| spec.make(), &inputs, &mut rng);
        }
    }

    #[test]
    fn key_groups_follow_the_router_and_survive_rescale() {
        for (i, spec) in specs().iter().enumerate().filter(|(_, s)| s.partitioned) {
            let routes = [Route {
                keys: vec![Arc::new(Column::new("p", 0)) as Arc<dyn PhysicalExpr>],
                schema: in_schema(),
            }];
            let key_of = |key: &[u8]| Some((0, key.to_vec()));
            for par in [2usize, 3] {
                let mut rng = Rng::new(7000 + i as u64 * 10 + par as u64);
                let inputs = random_inputs(&mut rng, 50, !spec.append_only);
                check_rescale(&|| spec.make(), &inputs, &routes, &key_of, 25, par);
            }
        }
    }
}
