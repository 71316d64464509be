//! `StreamSessionWindow`: assigns rows to session windows on event time and
//! emits each session's rows with its bounds once the watermark closes it
//! (Flink's `SESSION(TABLE t PARTITION BY k, DESCRIPTOR(ts), gap)`).
//!
//! Within a partition, rows whose times are at most `gap` apart belong to
//! the same session (windows `[ts, ts + gap)` that touch merge, as in
//! Flink). A session is `[first ts, last ts + gap)`; it is final once the
//! watermark reaches its end, because a later row could only extend it if
//! it were at most `gap` after the last one, i.e. before the end. Its rows
//! then go out with `window_start` and `window_end`, as inserts; the
//! operator forgets them. The output is append-only.
//!
//! A row that could only form a session that is already closed (its own
//! window `[ts, ts + gap)` ends at or before the watermark, and no pending
//! row is within `gap` of it) is late: dropped and counted, as is a delete
//! of a row whose session was already emitted. Rows with a NULL time are
//! dropped.
//!
//! Checkpoint state: per partition, key `1 ++ partition key row bytes`
//! (key group of the partition key bytes, which the exchange hashes), value
//! `u8 version, u32 n, n x (i64 ts, u32 len, row bytes, i64 count)`. The
//! watermark goes under every key group the subtask owns, key `0, kg`, so
//! that rows late before a restart stay late after it. With a store the
//! pending rows are all kept in memory too (like a window aggregation's open
//! windows, they are bounded by the watermark); a restore reads them all.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, Int64Array, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use datafusion::arrow::row::OwnedRow;
use datafusion::common::{HashMap, HashSet};
use datafusion::physical_expr::PhysicalExpr;

use crate::chunk::{Chunk, Op};
use crate::error::{ExecError, ExecResult};
use crate::keys::KeyEncoder;
use crate::operator::{Operator, OperatorContext, Output, StateEntry, StateWriter};
use crate::operators::partition_key::PartitionKey;
use crate::operators::state_codec::{ByteReader, ByteWriter, RowCodec};
use crate::state::SubtaskStore;

const STATE_VERSION: u8 = 1;
const WATERMARK_PREFIX: u8 = 0;
const PARTITION_PREFIX: u8 = 1;

/// A partition's pending rows by time: (row, multiplicity).
type Pending = BTreeMap<i64, Vec<(OwnedRow, i64)>>;

pub struct SessionWindowOperator {
    partition: PartitionKey,
    row_enc: KeyEncoder,
    row_codec: RowCodec,
    /// Input column of the event time.
    ts_col: usize,
    ts_type: DataType,
    /// Time units of the event-time column per millisecond.
    units_per_ms: i64,
    gap: i64,
    parts: HashMap<OwnedRow, Pending>,
    /// (end of the partition's first pending session, partition).
    timers: BTreeSet<(i64, OwnedRow)>,
    timer_of: HashMap<OwnedRow, i64>,
    /// In time units; `i64::MIN` before the first.
    watermark: i64,
    dirty: HashSet<OwnedRow>,
    key_groups: Range<usize>,
    output_schema: SchemaRef,
    store: Option<Arc<SubtaskStore>>,
}

impl SessionWindowOperator {
    /// `gap_ms` in milliseconds; the output is the input's columns and
    /// `window_start`, `window_end` of the event-time column's type.
    pub fn new(
        partition_exprs: Vec<Arc<dyn PhysicalExpr>>,
        ts_col: usize,
        gap_ms: i64,
        input_schema: &SchemaRef,
        output_schema: SchemaRef,
    ) -> ExecResult<Self> {
        let types: Vec<DataType> = input_schema
            .fields()
            .iter()
            .map(|f| f.data_type().clone())
            .collect();
        let ts_type = types
            .get(ts_col)
            .cloned()
            .ok_or_else(|| ExecError::internal("session window: no time column"))?;
        let units_per_ms = match &ts_type {
            DataType::Timestamp(TimeUnit::Second, _) => {
                if gap_ms % 1000 != 0 {
                    return Err(ExecError::user(
                        crate::SqlState::INVALID_PARAMETER_VALUE,
                        "a session gap on a timestamp(0) column must be whole seconds",
                    ));
                }
                0
            }
            DataType::Timestamp(TimeUnit::Millisecond, _) => 1,
            DataType::Timestamp(TimeUnit::Microsecond, _) => 1_000,
            DataType::Timestamp(TimeUnit::Nanosecond, _) => 1_000_000,
            other => {
                return Err(ExecError::user(
                    crate::SqlState::DATATYPE_MISMATCH,
                    format!("a session window needs a timestamp column, not {other}"),
                ))
            }
        };
        let gap = if units_per_ms == 0 {
            gap_ms / 1000
        } else {
            gap_ms * units_per_ms
        };
        if output_schema.fields().len() != types.len() + 2 {
            return Err(ExecError::internal(
                "session window output must be the input and the window bounds",
            ));
        }
        Ok(SessionWindowOperator {
            partition: PartitionKey::new(partition_exprs, input_schema)?,
            row_enc: KeyEncoder::new(&types)?,
            row_codec: RowCodec::new(&types)?,
            ts_col,
            ts_type,
            units_per_ms,
            gap,
            parts: HashMap::new(),
            timers: BTreeSet::new(),
            timer_of: HashMap::new(),
            watermark: i64::MIN,
            dirty: HashSet::new(),
            key_groups: 0..crate::keys::MAX_PARALLELISM,
            output_schema,
            store: None,
        })
    }

    /// A watermark in milliseconds as a time in the column's unit.
    fn to_units(&self, ms: i64) -> i64 {
        match self.units_per_ms {
            0 => ms.div_euclid(1000),
            u => ms.saturating_mul(u),
        }
    }

    fn key_group(&self, key: &OwnedRow) -> usize {
        self.partition.key_group(key.as_ref())
    }

    /// End of the first session of a partition's pending rows.
    fn first_session_end(&self, pending: &Pending) -> Option<i64> {
        let mut it = pending.keys().copied();
        let mut last = it.next()?;
        for ts in it {
            if ts - last > self.gap {
                break;
            }
            last = ts;
        }
        Some(last + self.gap)
    }

    /// Re-arms a partition's timer after its pending rows changed.
    fn rearm(&mut self, key: &OwnedRow) {
        if let Some(old) = self.timer_of.remove(key) {
            self.timers.remove(&(old, key.clone()));
        }
        if let Some(end) = self.parts.get(key).and_then(|p| self.first_session_end(p)) {
            self.timer_of.insert(key.clone(), end);
            self.timers.insert((end, key.clone()));
        }
    }

    /// Whether a row at `ts` would be late in `pending`.
    fn is_late(&self, pending: Option<&Pending>, ts: i64) -> bool {
        if self.watermark == i64::MIN || ts.saturating_add(self.gap) > self.watermark {
            return false;
        }
        // Unless a pending row is within the gap: then the row joins its
        // open session.
        pending.is_none_or(|p| {
            p.range(ts.saturating_sub(self.gap)..=ts.saturating_add(self.gap))
                .next()
                .is_none()
        })
    }

    /// Emits every session of `key` that ends at or before the watermark.
    fn fire(&mut self, key: &OwnedRow, out_rows: &mut Vec<(OwnedRow, i64, i64)>) {
        let Some(pending) = self.parts.get_mut(key) else {
            return;
        };
        loop {
            let mut it = pending.keys();
            let Some(&first) = it.next() else {
                break;
            };
            let mut last = first;
            let mut n = 1;
            for ts in it {
                if ts - last > self.gap {
                    break;
                }
                last = *ts;
                n += 1;
            }
            let end = last + self.gap;
            if end > self.watermark {
                break;
            }
            for _ in 0..n {
                let (_, rows) = pending.pop_first().expect("counted");
                for (row, count) in rows {
                    for _ in 0..count {
                        out_rows.push((row.clone(), first, end));
                    }
                }
            }
        }
        if pending.is_empty() {
            self.parts.remove(key);
        }
        self.dirty.insert(key.clone());
        self.rearm(key);
    }

    fn output(&self, rows: Vec<(OwnedRow, i64, i64)>) -> ExecResult<Option<Chunk>> {
        if rows.is_empty() {
            return Ok(None);
        }
        let n = rows.len();
        let mut cols = self.row_enc.decode_owned(rows.iter().map(|r| &r.0))?;
        for bound in [1, 2] {
            let values: ArrayRef = Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| {
                if bound == 1 {
                    r.1
                } else {
                    r.2
                }
            })));
            cols.push(cast(&values, &self.ts_type)?);
        }
        let batch = RecordBatch::try_new_with_options(
            self.output_schema.clone(),
            cols,
            &RecordBatchOptions::new().with_row_count(Some(n)),
        )?;
        Ok(Some(Chunk::inserts(batch)))
    }

    fn snapshot_key(&self, key: &OwnedRow, state: &mut StateWriter) -> ExecResult<()> {
        let kg = self.key_group(key);
        let mut skey = Vec::with_capacity(key.as_ref().len() + 1);
        skey.push(PARTITION_PREFIX);
        skey.extend_from_slice(key.as_ref());
        match self.parts.get(key) {
            Some(p) if !p.is_empty() => {
                let mut w = ByteWriter::new();
                w.u8(STATE_VERSION);
                w.length(p.values().map(Vec::len).sum())?;
                for (ts, rows) in p {
                    for (row, count) in rows {
                        w.i64(*ts);
                        w.bytes(row.as_ref())?;
                        w.i64(*count);
                    }
                }
                state.put(kg, skey, w.finish());
            }
            _ => state.delete(kg, skey),
        }
        Ok(())
    }

    fn load(&mut self, entries: Vec<StateEntry>) -> ExecResult<()> {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut lens = Vec::new();
        let mut times: Vec<(i64, i64)> = Vec::new();
        let mut row_bytes: Vec<Vec<u8>> = Vec::new();
        for e in entries {
            let value = e
                .value
                .ok_or_else(|| ExecError::internal("session restore: entry without value"))?;
            match e.key.split_first() {
                Some((&WATERMARK_PREFIX, _)) => {
                    let v: [u8; 8] = value
                        .as_slice()
                        .try_into()
                        .map_err(|_| ExecError::internal("session state: bad watermark"))?;
                    self.watermark = self.watermark.max(i64::from_le_bytes(v));
                }
                Some((&PARTITION_PREFIX, key)) => {
                    let mut r = ByteReader::new(&value);
                    if r.u8()? != STATE_VERSION {
                        return Err(ExecError::internal("session state: unknown version"));
                    }
                    let n = r.length()?;
                    for _ in 0..n {
                        let ts = r.i64()?;
                        row_bytes.push(r.bytes()?.to_vec());
                        times.push((ts, r.i64()?));
                    }
                    r.finish()?;
                    lens.push(n);
                    keys.push(key.to_vec());
                }
                _ => return Err(ExecError::internal("session state: bad key")),
            }
        }
        let key_refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        let keys = self.partition.rehydrate(&key_refs)?;
        let row_refs: Vec<&[u8]> = row_bytes.iter().map(|r| r.as_slice()).collect();
        let rows = self.row_codec.rehydrate(&self.row_enc, &row_refs)?;
        let mut rows = rows.into_iter().zip(times);
        for (key, n) in keys.into_iter().zip(lens) {
            let mut pending = Pending::new();
            for (row, (ts, count)) in rows.by_ref().take(n) {
                pending.entry(ts).or_default().push((row, count));
            }
            self.parts.insert(key.clone(), pending);
            self.rearm(&key);
        }
        Ok(())
    }
}

impl Operator for SessionWindowOperator {
    fn uses_keyed_state(&self) -> bool {
        true
    }

    fn restore(&mut self, _ctx: &OperatorContext, entries: Vec<StateEntry>) -> ExecResult<()> {
        self.load(entries)
    }

    fn open(&mut self, ctx: &OperatorContext, restored: bool, _out: &mut Output) -> ExecResult<()> {
        self.store = ctx.state.clone();
        let (first, end) = crate::state::key_group_range(ctx.subtask, ctx.parallelism);
        self.key_groups = first..end;
        if let (Some(store), true) = (&self.store, restored) {
            // Every pending row must be at hand when its session closes.
            let entries = store.entries()?;
            self.load(entries)?;
        }
        Ok(())
    }

    fn snapshot(&mut self, state: &mut StateWriter) -> ExecResult<()> {
        if self.watermark != i64::MIN {
            for kg in self.key_groups.clone() {
                state.put(
                    kg,
                    vec![WATERMARK_PREFIX, kg as u8],
                    self.watermark.to_le_bytes().to_vec(),
                );
            }
        }
        for key in state.keys_to_write(self.parts.keys(), &self.dirty) {
            self.snapshot_key(key, state)?;
        }
        self.dirty.clear();
        Ok(())
    }

    fn on_chunk(&mut self, _input: usize, chunk: Chunk, out: &mut Output) -> ExecResult<()> {
        let n = chunk.num_rows();
        let batch = &chunk.batch;
        let keys = self.partition.encode(batch)?;
        let ts = cast(batch.column(self.ts_col), &DataType::Int64)?;
        let ts = ts
            .as_any()
            .downcast_ref::<Int64Array>()
            .ok_or_else(|| ExecError::internal("session window: time column"))?;
        let rows = self.row_enc.encode(batch.columns())?;
        let mut late = 0u64;
        let mut touched: HashSet<OwnedRow> = HashSet::new();
        for i in 0..n {
            if ts.is_null(i) {
                late += 1;
                continue;
            }
            let t = ts.value(i);
            let key = keys.row(i).owned();
            let row = rows.row(i).owned();
            match chunk.op(i) {
                Op::Insert => {
                    if self.is_late(self.parts.get(&key), t) {
                        late += 1;
                        continue;
                    }
                    let at = self
                        .parts
                        .entry(key.clone())
                        .or_default()
                        .entry(t)
                        .or_default();
                    match at.iter_mut().find(|(r, _)| *r == row) {
                        Some((_, c)) => *c += 1,
                        None => at.push((row, 1)),
                    }
                }
                Op::Delete => {
                    let pending = self.parts.get_mut(&key);
                    let at = pending.and_then(|p| {
                        let rows = p.get_mut(&t)?;
                        let pos = rows.iter().position(|(r, _)| *r == row)?;
                        rows[pos].1 -= 1;
                        if rows[pos].1 == 0 {
                            rows.swap_remove(pos);
                        }
                        if rows.is_empty() {
                            p.remove(&t);
                        }
                        Some(p.is_empty())
                    });
                    match at {
                        Some(true) => {
                            self.parts.remove(&key);
                        }
                        Some(false) => {}
                        // Its session was emitted already.
                        None => {
                            late += 1;
                            continue;
                        }
                    }
                }
            }
            touched.insert(key);
        }
        out.late_records_dropped(late);
        for key in touched {
            self.dirty.insert(key.clone());
            self.rearm(&key);
        }
        Ok(())
    }

    fn on_watermark(&mut self, watermark: i64, out: &mut Output) -> ExecResult<()> {
        let w = self.to_units(watermark);
        if w > self.watermark {
            self.watermark = w;
            let mut rows = Vec::new();
            while let Some((end, key)) = self.timers.first().cloned() {
                if end > w {
                    break;
                }
                self.fire(&key, &mut rows);
            }
            if let Some(c) = self.output(rows)? {
                out.push(c);
            }
        }
        out.emit_watermark(watermark);
        Ok(())
    }

    fn close(&mut self, out: &mut Output) -> ExecResult<()> {
        // The input ended: every session is final.
        self.on_watermark(i64::MAX, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::state_codec::test_util::*;
    use datafusion::arrow::array::{Int32Array, TimestampMillisecondArray};
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::physical_plan::expressions::Column;

    const GAP: i64 = 10;

    fn in_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int32, true),
            Field::new("ts", DataType::Timestamp(TimeUnit::Millisecond, None), true),
            Field::new("v", DataType::Int32, true),
        ]))
    }

    fn out_schema() -> SchemaRef {
        let mut fields: Vec<Field> = in_schema()
            .fields()
            .iter()
            .map(|f| f.as_ref().clone())
            .collect();
        let ts = DataType::Timestamp(TimeUnit::Millisecond, None);
        fields.push(Field::new("window_start", ts.clone(), true));
        fields.push(Field::new("window_end", ts, true));
        Arc::new(Schema::new(fields))
    }

    fn make(partitioned: bool) -> Box<dyn Operator> {
        let keys = if partitioned {
            vec![Arc::new(Column::new("k", 0)) as Arc<dyn PhysicalExpr>]
        } else {
            vec![]
        };
        Box::new(SessionWindowOperator::new(keys, 1, GAP, &in_schema(), out_schema()).unwrap())
    }

    /// (k, ts, v)
    type Row = (Option<i32>, i64, i32);

    fn chunk(rows: &[Row]) -> Chunk {
        Chunk::inserts(
            RecordBatch::try_new(
                in_schema(),
                vec![
                    Arc::new(Int32Array::from_iter(rows.iter().map(|r| r.0))),
                    Arc::new(TimestampMillisecondArray::from_iter_values(
                        rows.iter().map(|r| r.1),
                    )),
                    Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.2))),
                ],
            )
            .unwrap(),
        )
    }

    /// A step: rows, then the watermark after them.
    type Step = (Vec<Row>, i64);

    /// Rows a little out of order (at most 5 ms), the watermark 5 ms
    /// behind the latest time, so nothing is late.
    fn random_steps(rng: &mut Rng, n: usize) -> Vec<Step> {
        let mut t = 0i64;
        let mut max = 0i64;
        let mut steps = Vec::new();
        for _ in 0..n {
            let mut rows = Vec::new();
            for _ in 0..1 + rng.below(4) {
                // Bursts and pauses longer than the gap.
                t += if rng.percent(15) {
                    8 + rng.below(20) as i64
                } else {
                    rng.below(4) as i64
                };
                let ts = t - rng.below(6) as i64;
                max = max.max(ts);
                let k = (!rng.percent(10)).then(|| rng.below(3) as i32);
                rows.push((k, ts, rng.below(3) as i32));
            }
            steps.push((rows, max - 5));
        }
        steps
    }

    /// Output rows: (k, ts, v, start, end).
    type Out = (Option<i32>, i64, i32, i64, i64);

    fn outs(o: &Outs) -> Vec<Out> {
        let mut v = Vec::new();
        for (b, ops) in o {
            assert!(ops.iter().all(|op| *op == Op::Insert));
            let i64s = |c: usize| cast(b.column(c), &DataType::Int64).unwrap();
            let (ts, st, en) = (i64s(1), i64s(3), i64s(4));
            let ts = ts.as_any().downcast_ref::<Int64Array>().unwrap();
            let st = st.as_any().downcast_ref::<Int64Array>().unwrap();
            let en = en.as_any().downcast_ref::<Int64Array>().unwrap();
            let k = b.column(0).as_any().downcast_ref::<Int32Array>().unwrap();
            let val = b.column(2).as_any().downcast_ref::<Int32Array>().unwrap();
            for i in 0..b.num_rows() {
                v.push((
                    (!k.is_null(i)).then(|| k.value(i)),
                    ts.value(i),
                    val.value(i),
                    st.value(i),
                    en.value(i),
                ));
            }
        }
        v
    }

    fn run_step(op: &mut dyn Operator, step: &Step) -> Vec<Out> {
        let mut o = feed(op, &(0, chunk(&step.0)));
        let mut out = Output::default();
        op.on_watermark(step.1, &mut out).unwrap();
        o.extend(drain(&mut out));
        outs(&o)
    }

    /// Batch sessions: sort each partition by time, split where the gap
    /// to the previous row exceeds GAP.
    fn oracle(rows: &[Row], partitioned: bool) -> Vec<Out> {
        let mut by: BTreeMap<Option<i32>, Vec<Row>> = BTreeMap::new();
        for r in rows {
            by.entry(if partitioned { r.0 } else { None })
                .or_default()
                .push(*r);
        }
        let mut out = Vec::new();
        for (_, mut rs) in by {
            rs.sort_by_key(|r| r.1);
            let mut i = 0;
            while i < rs.len() {
                let mut j = i + 1;
                while j < rs.len() && rs[j].1 - rs[j - 1].1 <= GAP {
                    j += 1;
                }
                for r in &rs[i..j] {
                    out.push((r.0, r.1, r.2, rs[i].1, rs[j - 1].1 + GAP));
                }
                i = j;
            }
        }
        out.sort();
        out
    }

    #[test]
    fn sessions_equal_the_batch_sessions_and_close_with_the_watermark() {
        for partitioned in [true, false] {
            for seed in 0..6u64 {
                let mut rng = Rng::new(seed + 100 * partitioned as u64);
                let steps = random_steps(&mut rng, 60);
                let mut op = make(partitioned);
                open(op.as_mut(), &ctx(0, 1), false);
                let mut got = Vec::new();
                for step in &steps {
                    let emitted = run_step(op.as_mut(), step);
                    for r in &emitted {
                        assert!(r.4 <= step.1, "session {r:?} emitted before it closed");
                    }
                    got.extend(emitted);
                }
                let mut out = Output::default();
                op.close(&mut out).unwrap();
                got.extend(outs(&drain(&mut out)));
                got.sort();
                let all: Vec<Row> = steps.iter().flat_map(|s| s.0.clone()).collect();
                assert_eq!(got, oracle(&all, partitioned), "seed {seed}");
            }
        }
    }

    #[test]
    fn late_rows_are_dropped_and_counted() {
        let mut op = make(true);
        open(op.as_mut(), &ctx(0, 1), false);
        run_step(op.as_mut(), &(vec![(Some(1), 100, 0)], 100));
        // 85 + 10 <= 100 and nothing pending near it: late. 95 joins the
        // pending session of 100.
        let mut out = Output::default();
        op.on_chunk(0, chunk(&[(Some(1), 85, 0), (Some(1), 95, 1)]), &mut out)
            .unwrap();
        assert_eq!(out.late_dropped, 1);
        let mut out = Output::default();
        op.on_watermark(120, &mut out).unwrap();
        let got = outs(&drain(&mut out));
        assert_eq!(
            got,
            vec![(Some(1), 95, 1, 95, 110), (Some(1), 100, 0, 95, 110)]
        );
    }

    #[test]
    fn a_restored_operator_continues_like_the_original() {
        for (seed, full) in [(1u64, true), (2, false), (3, true)] {
            let mut rng = Rng::new(seed);
            let steps = random_steps(&mut rng, 50);
            for cut in [0, 7, 25, 49] {
                let mut a = make(true);
                open(a.as_mut(), &ctx(0, 1), false);
                // Full snapshots replace the state; incremental ones along
                // the way must add up to the same.
                let mut state = StateMap::new();
                let mut take = |op: &mut dyn Operator, full: bool| {
                    let entries = snapshot(op, full);
                    if full {
                        state = to_map(entries);
                    } else {
                        apply(&mut state, entries);
                    }
                };
                take(a.as_mut(), true);
                for (i, step) in steps[..cut].iter().enumerate() {
                    run_step(a.as_mut(), step);
                    if i % 5 == 0 {
                        take(a.as_mut(), full);
                    }
                }
                take(a.as_mut(), full);
                assert_eq!(to_map(snapshot(a.as_mut(), true)), state);
                let mut b = make(true);
                b.restore(&ctx(0, 1), from_map(&state)).unwrap();
                open(b.as_mut(), &ctx(0, 1), true);
                for step in &steps[cut..] {
                    assert_eq!(run_step(a.as_mut(), step), run_step(b.as_mut(), step));
                }
            }
        }
    }
}
