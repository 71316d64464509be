//! Binary encoding helpers for operator checkpoint state.
//!
//! Values are built with [`ByteWriter`] and read back with [`ByteReader`]:
//! fixed-width little-endian integers and `u32`-length-prefixed byte strings.
//!
//! Rows that an operator keeps as [`OwnedRow`]s (from a [`KeyEncoder`]) are
//! stored as their bytes. Arrow only decodes a row with the converter that
//! made it, so [`RowCodec`] parses the bytes with its own converter over the
//! same types and re-encodes the columns with the operator's encoder: the
//! row format is deterministic, so the bytes come back identical.
//!
//! Lists of [`ScalarValue`]s (accumulator states, emitted rows) go through
//! [`ScalarsCodec`]: the row format over the expected types when every value
//! has its expected type (the usual case), else Arrow IPC, which carries the
//! exact types with it.

use std::io::Cursor;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::ipc::reader::StreamReader;
use datafusion::arrow::ipc::writer::StreamWriter;
use datafusion::arrow::row::{OwnedRow, RowConverter, SortField};
use datafusion::common::ScalarValue;

use crate::error::{ExecError, ExecResult};
use crate::keys::KeyEncoder;

fn corrupt(what: &str) -> ExecError {
    ExecError::internal(format!("corrupt operator state: {what}"))
}

/// Appends fields to a state value.
#[derive(Default)]
pub struct ByteWriter {
    buf: Vec<u8>,
}

impl ByteWriter {
    pub fn new() -> Self {
        ByteWriter::default()
    }

    /// A writer whose buffer holds `bytes` without growing: a value written
    /// in one go is then copied once, not at every doubling.
    pub fn with_capacity(bytes: usize) -> Self {
        ByteWriter {
            buf: Vec::with_capacity(bytes),
        }
    }

    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }

    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    pub fn i64(&mut self, v: i64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }

    /// A length or count, as a `u32`.
    pub fn length(&mut self, n: usize) -> ExecResult<()> {
        let n = u32::try_from(n).map_err(|_| ExecError::internal("state field too large"))?;
        self.u32(n);
        Ok(())
    }

    pub fn bytes(&mut self, b: &[u8]) -> ExecResult<()> {
        self.length(b.len())?;
        self.buf.extend_from_slice(b);
        Ok(())
    }

    pub fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads the fields of a state value back, failing on truncated input.
pub struct ByteReader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> ByteReader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        ByteReader { buf, pos: 0 }
    }

    fn take(&mut self, n: usize) -> ExecResult<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|e| *e <= self.buf.len())
            .ok_or_else(|| corrupt("truncated value"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    pub fn u8(&mut self) -> ExecResult<u8> {
        Ok(self.take(1)?[0])
    }

    pub fn u32(&mut self) -> ExecResult<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    pub fn i64(&mut self) -> ExecResult<i64> {
        Ok(i64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    pub fn length(&mut self) -> ExecResult<usize> {
        Ok(self.u32()? as usize)
    }

    pub fn bytes(&mut self) -> ExecResult<&'a [u8]> {
        let n = self.length()?;
        self.take(n)
    }

    /// Fails if anything is left unread.
    pub fn finish(self) -> ExecResult<()> {
        if self.pos == self.buf.len() {
            Ok(())
        } else {
            Err(corrupt("trailing bytes"))
        }
    }
}

/// Casts decoded columns back to `types` (the row format hydrates
/// dictionaries as their values).
fn cast_to(columns: Vec<ArrayRef>, types: &[DataType]) -> ExecResult<Vec<ArrayRef>> {
    columns
        .into_iter()
        .zip(types)
        .map(|(c, t)| {
            if c.data_type() == t {
                Ok(c)
            } else {
                Ok(cast(&c, t)?)
            }
        })
        .collect()
}

/// Decodes row bytes written by a [`KeyEncoder`] over the same types.
pub struct RowCodec {
    types: Vec<DataType>,
    converter: RowConverter,
}

impl RowCodec {
    pub fn new(types: &[DataType]) -> ExecResult<Self> {
        let fields = types.iter().map(|t| SortField::new(t.clone())).collect();
        Ok(RowCodec {
            types: types.to_vec(),
            converter: RowConverter::new(fields)?,
        })
    }

    /// The columns of the given rows.
    pub fn decode(&self, rows: &[&[u8]]) -> ExecResult<Vec<ArrayRef>> {
        let parser = self.converter.parser();
        let cols = self
            .converter
            .convert_rows(rows.iter().map(|r| parser.parse(r)))?;
        cast_to(cols, &self.types)
    }

    /// The given rows as rows of `enc`, which must be an encoder over the
    /// same types (so that the operator can decode them again).
    pub fn rehydrate(&self, enc: &KeyEncoder, rows: &[&[u8]]) -> ExecResult<Vec<OwnedRow>> {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        if self.types.is_empty() {
            // A row of no columns has no bytes, and Arrow cannot encode a
            // row count without columns.
            return Err(ExecError::internal(
                "cannot restore state rows that have no columns",
            ));
        }
        let cols = self.decode(rows)?;
        let encoded = enc.encode(&cols)?;
        let out: Vec<OwnedRow> = (0..rows.len()).map(|i| encoded.row(i).owned()).collect();
        if out.iter().zip(rows).any(|(o, r)| o.as_ref() != *r) {
            return Err(corrupt("row bytes do not round-trip"));
        }
        Ok(out)
    }
}

const SCALARS_ROW: u8 = 1;
const SCALARS_IPC: u8 = 2;

/// Encodes a fixed-length list of scalars whose types are usually `types`.
pub struct ScalarsCodec {
    types: Vec<DataType>,
    /// `None` when the row format does not support some type.
    rows: Option<RowCodec>,
}

impl ScalarsCodec {
    pub fn new(types: Vec<DataType>) -> Self {
        let rows = RowCodec::new(&types).ok();
        ScalarsCodec { types, rows }
    }

    pub fn encode(&self, values: &[ScalarValue], out: &mut ByteWriter) -> ExecResult<()> {
        let typed = values.len() == self.types.len()
            && values
                .iter()
                .zip(&self.types)
                .all(|(v, t)| &v.data_type() == t);
        match &self.rows {
            Some(rows) if typed && !values.is_empty() => {
                let cols = values
                    .iter()
                    .map(|v| v.to_array_of_size(1))
                    .collect::<Result<Vec<_>, _>>()?;
                let encoded = rows.converter.convert_columns(&cols)?;
                out.u8(SCALARS_ROW);
                out.bytes(encoded.row(0).as_ref())
            }
            _ => {
                out.u8(SCALARS_IPC);
                out.bytes(&scalars_to_ipc(values)?)
            }
        }
    }

    pub fn decode(&self, input: &mut ByteReader<'_>) -> ExecResult<Vec<ScalarValue>> {
        let form = input.u8()?;
        let payload = input.bytes()?;
        match form {
            SCALARS_ROW => {
                let rows = self
                    .rows
                    .as_ref()
                    .ok_or_else(|| corrupt("row-encoded scalars of an unsupported type"))?;
                let cols = rows.decode(&[payload])?;
                cols.iter()
                    .map(|c| Ok(ScalarValue::try_from_array(c, 0)?))
                    .collect()
            }
            SCALARS_IPC => scalars_from_ipc(payload),
            _ => Err(corrupt("unknown scalar encoding")),
        }
    }
}

fn scalars_to_ipc(values: &[ScalarValue]) -> ExecResult<Vec<u8>> {
    let cols = values
        .iter()
        .map(|v| v.to_array_of_size(1))
        .collect::<Result<Vec<_>, _>>()?;
    let fields: Vec<Field> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| Field::new(format!("c{i}"), c.data_type().clone(), true))
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let batch = RecordBatch::try_new_with_options(
        schema.clone(),
        cols,
        &RecordBatchOptions::new().with_row_count(Some(1)),
    )?;
    let mut buf = Vec::new();
    {
        let mut w = StreamWriter::try_new(&mut buf, &schema)?;
        w.write(&batch)?;
        w.finish()?;
    }
    Ok(buf)
}

fn scalars_from_ipc(bytes: &[u8]) -> ExecResult<Vec<ScalarValue>> {
    let mut reader = StreamReader::try_new(Cursor::new(bytes), None)?;
    let batch = reader
        .next()
        .ok_or_else(|| corrupt("empty scalar batch"))??;
    if batch.num_rows() != 1 {
        return Err(corrupt("scalar batch is not one row"));
    }
    batch
        .columns()
        .iter()
        .map(|c| Ok(ScalarValue::try_from_array(c, 0)?))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int32Array, StringArray};
    use datafusion::arrow::datatypes::Int32Type;

    #[test]
    fn bytes_round_trip() {
        let mut w = ByteWriter::new();
        w.u8(7);
        w.i64(-5);
        w.bytes(b"abc").unwrap();
        w.u32(9);
        let buf = w.finish();
        let mut r = ByteReader::new(&buf);
        assert_eq!(r.u8().unwrap(), 7);
        assert_eq!(r.i64().unwrap(), -5);
        assert_eq!(r.bytes().unwrap(), b"abc");
        assert_eq!(r.u32().unwrap(), 9);
        r.finish().unwrap();
        let mut r = ByteReader::new(&buf[..5]);
        r.u8().unwrap();
        assert!(r.i64().is_err());
    }

    #[test]
    fn scalars_round_trip() {
        let cases: Vec<Vec<ScalarValue>> = vec![
            vec![
                ScalarValue::Int64(Some(3)),
                ScalarValue::UInt64(Some(0)),
                ScalarValue::Float64(None),
                ScalarValue::Decimal128(Some(-12345), 20, 2),
                ScalarValue::Utf8(Some("x".into())),
            ],
            vec![
                ScalarValue::Float64(Some(2.7e-17)),
                ScalarValue::Int64(None),
            ],
            vec![],
        ];
        for values in cases {
            let types: Vec<DataType> = values.iter().map(|v| v.data_type()).collect();
            // Expected types: the row path.
            let codec = ScalarsCodec::new(types);
            let mut w = ByteWriter::new();
            codec.encode(&values, &mut w).unwrap();
            let buf = w.finish();
            let mut r = ByteReader::new(&buf);
            assert_eq!(codec.decode(&mut r).unwrap(), values);
            r.finish().unwrap();
            // Other types than expected: the IPC path.
            let other = ScalarsCodec::new(vec![DataType::Boolean]);
            let mut w = ByteWriter::new();
            other.encode(&values, &mut w).unwrap();
            let buf = w.finish();
            assert_eq!(buf[0], SCALARS_IPC);
            let mut r = ByteReader::new(&buf);
            assert_eq!(other.decode(&mut r).unwrap(), values);
        }
        // Dictionaries come back as dictionaries.
        let dict = ScalarValue::Dictionary(
            Box::new(DataType::Int32),
            Box::new(ScalarValue::Utf8(Some("d".into()))),
        );
        let codec = ScalarsCodec::new(vec![dict.data_type()]);
        let mut w = ByteWriter::new();
        codec.encode(std::slice::from_ref(&dict), &mut w).unwrap();
        let buf = w.finish();
        assert_eq!(
            codec.decode(&mut ByteReader::new(&buf)).unwrap(),
            vec![dict]
        );
    }

    #[test]
    fn rows_rehydrate_to_the_encoder() {
        let types = [
            DataType::Int32,
            DataType::Utf8,
            DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
        ];
        let enc = KeyEncoder::new(&types).unwrap();
        let dict: datafusion::arrow::array::DictionaryArray<Int32Type> =
            vec!["a", "b", "a"].into_iter().collect();
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int32Array::from(vec![Some(1), None, Some(-3)])),
            Arc::new(StringArray::from(vec![Some("x"), Some(""), None])),
            Arc::new(dict),
        ];
        let rows = enc.encode(&cols).unwrap();
        let bytes: Vec<&[u8]> = (0..3).map(|i| rows.row(i).data()).collect();
        let codec = RowCodec::new(&types).unwrap();
        let back = codec.rehydrate(&enc, &bytes).unwrap();
        // Decodable by the encoder itself.
        let decoded = enc.decode_owned(back.iter()).unwrap();
        assert_eq!(decoded[0].as_ref(), cols[0].as_ref());
        assert_eq!(decoded[1].as_ref(), cols[1].as_ref());
    }
}

/// Shared harness for the state tests of the operators.
#[cfg(test)]
pub(crate) mod test_util {
    use std::collections::{BTreeMap, HashMap};
    use std::sync::Arc;

    use datafusion::arrow::array::RecordBatch;
    use datafusion::arrow::datatypes::{DataType, SchemaRef};
    use datafusion::physical_expr::PhysicalExpr;

    use crate::chunk::{Chunk, Op};
    use crate::keys::{key_group_of, subtask_for_key_group, KeyEncoder};
    use crate::operator::{Operator, OperatorContext, Output, StateEntry, StateWriter};

    /// splitmix64: deterministic test randomness without a dependency.
    pub struct Rng(u64);

    impl Rng {
        pub fn new(seed: u64) -> Self {
            Rng(seed)
        }

        pub fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e3779b97f4a7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58476d1ce4e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d049bb133111eb);
            z ^ (z >> 31)
        }

        pub fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        pub fn percent(&mut self, p: usize) -> bool {
            self.below(100) < p
        }
    }

    pub fn ctx(subtask: usize, parallelism: usize) -> OperatorContext {
        OperatorContext {
            query: "q".into(),
            operator: "op".into(),
            subtask,
            parallelism,
            state: None,
            restored_epoch: None,
            reemit: false,
        }
    }

    /// One input chunk of a test: (input index, chunk).
    pub type Input = (usize, Chunk);
    /// The chunks one call emitted, comparable.
    pub type Outs = Vec<(RecordBatch, Vec<Op>)>;

    pub fn drain(out: &mut Output) -> Outs {
        out.take_chunks()
            .into_iter()
            .map(|c| {
                let ops = (0..c.num_rows()).map(|i| c.op(i)).collect();
                (c.batch, ops)
            })
            .collect()
    }

    pub fn open(op: &mut dyn Operator, c: &OperatorContext, restored: bool) -> Outs {
        let mut out = Output::default();
        op.open(c, restored, &mut out).unwrap();
        drain(&mut out)
    }

    /// One chunk, flushed (as a task does when its inputs are drained).
    pub fn feed(op: &mut dyn Operator, input: &Input) -> Outs {
        let mut out = Output::default();
        op.on_chunk(input.0, input.1.clone(), &mut out).unwrap();
        op.flush(&mut out).unwrap();
        drain(&mut out)
    }

    pub fn snapshot(op: &mut dyn Operator, full: bool) -> Vec<StateEntry> {
        let mut w = StateWriter::new(full);
        op.snapshot(&mut w).unwrap();
        w.into_entries()
    }

    /// key -> (key group, value); a key written twice is a bug.
    pub type StateMap = BTreeMap<Vec<u8>, (u16, Vec<u8>)>;

    pub fn apply(map: &mut StateMap, entries: Vec<StateEntry>) {
        let mut seen = std::collections::HashSet::new();
        for e in entries {
            assert!(
                seen.insert(e.key.clone()),
                "key written twice in one snapshot"
            );
            match e.value {
                Some(v) => {
                    map.insert(e.key, (e.key_group, v));
                }
                None => {
                    map.remove(&e.key);
                }
            }
        }
    }

    pub fn to_map(entries: Vec<StateEntry>) -> StateMap {
        assert!(entries.iter().all(|e| e.value.is_some()));
        let mut map = StateMap::new();
        apply(&mut map, entries);
        map
    }

    pub fn from_map(map: &StateMap) -> Vec<StateEntry> {
        map.iter()
            .map(|(k, (kg, v))| StateEntry {
                key_group: *kg,
                key: k.clone(),
                value: Some(v.clone()),
            })
            .collect()
    }

    pub type Make<'a> = &'a dyn Fn() -> Box<dyn Operator>;

    /// Net rows of a sequence of outputs: each row (formatted) with its
    /// inserts minus deletes, zeros dropped.
    pub fn net_rows<'a>(outs: impl IntoIterator<Item = &'a Outs>) -> BTreeMap<String, i64> {
        use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
        let mut net = BTreeMap::new();
        let opts = FormatOptions::default().with_null("NULL");
        for out in outs {
            for (batch, ops) in out {
                let fmts: Vec<_> = batch
                    .columns()
                    .iter()
                    .map(|c| ArrayFormatter::try_new(c.as_ref(), &opts).unwrap())
                    .collect();
                for (i, op) in ops.iter().enumerate() {
                    let row: Vec<String> = fmts.iter().map(|f| f.value(i).to_string()).collect();
                    *net.entry(row.join("|")).or_insert(0) += op.sign();
                }
            }
        }
        net.retain(|_, n| *n != 0);
        net
    }

    /// At each cut: run A up to the cut; B restored from A's full snapshot
    /// with `reemit` must emit, at `open`, exactly A's net output so far
    /// (an upgrade feeds that to new operators above it).
    pub fn check_reemit(make: Make<'_>, inputs: &[Input], cuts: &[usize]) {
        let c = ctx(0, 1);
        for &cut in cuts {
            let cut = cut.min(inputs.len());
            let mut a = make();
            assert!(a.can_reemit());
            let mut outs = vec![open(a.as_mut(), &c, false)];
            for input in &inputs[..cut] {
                outs.push(feed(a.as_mut(), input));
            }
            let entries = snapshot(a.as_mut(), true);
            let mut b = make();
            let again = OperatorContext {
                reemit: true,
                ..ctx(0, 1)
            };
            b.restore(&again, entries).unwrap();
            let reemitted = open(b.as_mut(), &again, true);
            assert!(
                reemitted
                    .iter()
                    .all(|(_, ops)| ops.iter().all(|o| *o == Op::Insert)),
                "cut {cut}: re-emitted a delete"
            );
            assert_eq!(net_rows(&[reemitted]), net_rows(&outs), "cut {cut}");
        }
    }

    /// At each cut: run A up to the cut, restore B from A's full snapshot,
    /// then both must emit exactly the same for the rest of the input.
    pub fn check_restore(make: Make<'_>, inputs: &[Input], cuts: &[usize]) {
        let c = ctx(0, 1);
        for &cut in cuts {
            let cut = cut.min(inputs.len());
            let mut a = make();
            open(a.as_mut(), &c, false);
            for input in &inputs[..cut] {
                feed(a.as_mut(), input);
            }
            let entries = snapshot(a.as_mut(), true);
            let mut b = make();
            b.restore(&c, entries).unwrap();
            assert!(
                open(b.as_mut(), &c, true).is_empty(),
                "restored open emitted"
            );
            for (i, input) in inputs[cut..].iter().enumerate() {
                let oa = feed(a.as_mut(), input);
                let ob = feed(b.as_mut(), input);
                assert_eq!(oa, ob, "cut {cut}, chunk {}", cut + i);
            }
            // And the state ends up the same.
            assert_eq!(
                to_map(snapshot(a.as_mut(), true)),
                to_map(snapshot(b.as_mut(), true)),
                "cut {cut}: final state"
            );
        }
    }

    /// A keeps its state in memory; B keeps it in a store with a cache of
    /// `cache_keys` keys (so it evicts and reads back all the time) and
    /// takes a checkpoint (snapshot into the store, then a cut) after every
    /// few chunks and at each cut in `cuts`, where a C restored from that
    /// checkpoint joins. All emit exactly the same, and in the end B's
    /// store holds A's state.
    pub fn check_store(make: Make<'_>, inputs: &[Input], cuts: &[usize], cache_keys: usize) {
        use crate::state::SubtaskStore;
        static RUN: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let root = std::env::temp_dir().join(format!(
            "weir-check-store-{}-{}",
            std::process::id(),
            RUN.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let plain = ctx(0, 1);
        let with_store = |store: Arc<SubtaskStore>| OperatorContext {
            state: Some(store),
            ..ctx(0, 1)
        };
        let checkpoint = |op: &mut dyn Operator, store: &SubtaskStore, n: usize| {
            store.write_snapshot(snapshot(op, false)).unwrap();
            let dir = root.join(format!("chk-{n}"));
            store.cut(&dir).unwrap();
            dir
        };
        let mut a = make();
        open(a.as_mut(), &plain, false);
        let b_store = SubtaskStore::open(&root.join("work"), "b", None, cache_keys).unwrap();
        let mut b = make();
        open(b.as_mut(), &with_store(b_store.clone()), false);
        let mut cs: Vec<(Box<dyn Operator>, Arc<SubtaskStore>)> = Vec::new();
        for (i, input) in inputs.iter().enumerate() {
            if cuts.contains(&i) {
                let latest = checkpoint(b.as_mut(), &b_store, i);
                let store =
                    SubtaskStore::open(&root.join("work"), "c", Some(&latest), cache_keys).unwrap();
                let mut c = make();
                c.restore(&with_store(store.clone()), Vec::new()).unwrap();
                assert!(
                    open(c.as_mut(), &with_store(store.clone()), true).is_empty(),
                    "restored open emitted"
                );
                cs.push((c, store));
            }
            let oa = feed(a.as_mut(), input);
            let ob = feed(b.as_mut(), input);
            assert_eq!(
                oa, ob,
                "chunk {i}: with a store of {cache_keys} cached keys"
            );
            for (n, (c, _)) in cs.iter_mut().enumerate() {
                assert_eq!(oa, feed(c.as_mut(), input), "chunk {i}: restored #{n}");
            }
            if i % 3 == 2 {
                checkpoint(b.as_mut(), &b_store, 1000 + i);
            }
        }
        let last = checkpoint(b.as_mut(), &b_store, inputs.len() + 1);
        let stored: StateMap = weir_storage::StateDb::read_checkpoint(&last, b"")
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k[2..].to_vec(), (u16::from_be_bytes([k[0], k[1]]), v)))
            .collect();
        assert_eq!(to_map(snapshot(a.as_mut(), true)), stored, "final state");
        drop((b, b_store, cs));
        let _ = std::fs::remove_dir_all(&root);
    }

    /// A takes a full snapshot, then incremental ones; A2, fed the same,
    /// takes full ones. The full snapshot with the incremental ones applied
    /// in order must equal A2's, and an operator restored from it midway
    /// must go on like A.
    pub fn check_incremental(make: Make<'_>, inputs: &[Input], rng: &mut Rng) {
        let c = ctx(0, 1);
        let mut a = make();
        let mut a2 = make();
        open(a.as_mut(), &c, false);
        open(a2.as_mut(), &c, false);
        let base = rng.below(inputs.len() / 2 + 1);
        let restore_at = base + rng.below(inputs.len() - base + 1);
        for input in &inputs[..base] {
            feed(a.as_mut(), input);
            feed(a2.as_mut(), input);
            if rng.percent(30) {
                // Snapshots before the base do not matter.
                snapshot(a.as_mut(), false);
            }
        }
        let mut map = to_map(snapshot(a.as_mut(), true));
        let mut b: Option<Box<dyn Operator>> = None;
        let mut incrementals = 0;
        for i in base..=inputs.len() {
            if i > base && (rng.percent(40) || i == inputs.len() || i == restore_at) {
                let delta = snapshot(a.as_mut(), false);
                let full = to_map(snapshot(a2.as_mut(), true));
                apply(&mut map, delta);
                incrementals += 1;
                assert_eq!(map, full, "after chunk {i}");
            }
            if i == restore_at {
                let mut op = make();
                op.restore(&c, from_map(&map)).unwrap();
                assert!(open(op.as_mut(), &c, true).is_empty());
                b = Some(op);
            }
            if i == inputs.len() {
                break;
            }
            let oa = feed(a.as_mut(), &inputs[i]);
            feed(a2.as_mut(), &inputs[i]);
            if let Some(b) = b.as_mut() {
                assert_eq!(
                    oa,
                    feed(b.as_mut(), &inputs[i]),
                    "restored midway, chunk {i}"
                );
            }
        }
        assert!(incrementals > 0 || inputs.len() == base);
    }

    /// How the exchange into input `i` routes: key expressions over the
    /// upstream schema (empty: everything to subtask 0).
    pub struct Route {
        pub keys: Vec<Arc<dyn PhysicalExpr>>,
        pub schema: SchemaRef,
    }

    impl Route {
        /// The bytes the router hashes for each row, as in
        /// `runtime/router.rs`: a KeyEncoder over the key expressions' types.
        pub fn key_bytes(&self, chunk: &Chunk) -> Vec<Vec<u8>> {
            let types: Vec<DataType> = self
                .keys
                .iter()
                .map(|k| k.data_type(&self.schema).unwrap())
                .collect();
            let enc = KeyEncoder::new(&types).unwrap();
            let n = chunk.num_rows();
            let cols: Vec<_> = self
                .keys
                .iter()
                .map(|k| k.evaluate(&chunk.batch).unwrap().into_array(n).unwrap())
                .collect();
            let rows = enc.encode(&cols).unwrap();
            (0..n).map(|i| rows.row(i).as_ref().to_vec()).collect()
        }
    }

    /// Net multiplicity of each emitted row.
    fn net(outs: &[Outs], into: &mut HashMap<Vec<u8>, i64>) {
        for (batch, ops) in outs.iter().flatten() {
            let types: Vec<DataType> = batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.data_type().clone())
                .collect();
            let rows = KeyEncoder::new(&types)
                .unwrap()
                .encode(batch.columns())
                .unwrap();
            for (i, op) in ops.iter().enumerate() {
                *into.entry(rows.row(i).as_ref().to_vec()).or_default() += op.sign();
            }
        }
        into.retain(|_, v| *v != 0);
    }

    /// Snapshot A at `cut` and check every entry's key group against the
    /// router's (`key_of` maps a state key to (input, router key bytes), or
    /// `None` for the global group, which must be in key group 0). Then
    /// restore the entries at parallelism `p`, each subtask getting the key
    /// groups it owns, route the rest of the input like the exchanges do,
    /// Stored key → (key group, routing key bytes), if the key is routed.
    pub type KeyOf<'a> = &'a dyn Fn(&[u8]) -> Option<(usize, Vec<u8>)>;

    /// and compare the net output with A's.
    pub fn check_rescale(
        make: Make<'_>,
        inputs: &[Input],
        routes: &[Route],
        key_of: KeyOf<'_>,
        cut: usize,
        p: usize,
    ) {
        let mut a = make();
        open(a.as_mut(), &ctx(0, 1), false);
        let mut routed: Vec<std::collections::HashSet<Vec<u8>>> =
            vec![Default::default(); routes.len()];
        for input in &inputs[..cut] {
            feed(a.as_mut(), input);
            if !routes[input.0].keys.is_empty() {
                for k in routes[input.0].key_bytes(&input.1) {
                    routed[input.0].insert(k);
                }
            }
        }
        let entries = snapshot(a.as_mut(), true);
        assert!(!entries.is_empty());
        for e in &entries {
            match key_of(&e.key) {
                None => assert_eq!(e.key_group, 0),
                Some((input, bytes)) => {
                    assert!(
                        routed[input].contains(&bytes),
                        "state key is not a key the router saw"
                    );
                    assert_eq!(e.key_group as usize, key_group_of(&bytes));
                }
            }
        }
        let mut bs: Vec<Box<dyn Operator>> = (0..p)
            .map(|i| {
                let mut b = make();
                let mine = entries
                    .iter()
                    .filter(|e| subtask_for_key_group(e.key_group as usize, p) == i)
                    .cloned()
                    .collect();
                b.restore(&ctx(i, p), mine).unwrap();
                assert!(open(b.as_mut(), &ctx(i, p), true).is_empty());
                b
            })
            .collect();
        let mut out_a = Vec::new();
        let mut out_b = Vec::new();
        for (input, chunk) in &inputs[cut..] {
            out_a.push(feed(a.as_mut(), &(*input, chunk.clone())));
            let route = &routes[*input];
            let mut parts: Vec<Vec<u32>> = vec![Vec::new(); p];
            if route.keys.is_empty() {
                parts[0] = (0..chunk.num_rows() as u32).collect();
            } else {
                for (i, k) in route.key_bytes(chunk).iter().enumerate() {
                    parts[subtask_for_key_group(key_group_of(k), p)].push(i as u32);
                }
            }
            for (t, idx) in parts.into_iter().enumerate() {
                if !idx.is_empty() {
                    let part = chunk.take(&idx).unwrap();
                    out_b.push(feed(bs[t].as_mut(), &(*input, part)));
                }
            }
        }
        let (mut na, mut nb) = (HashMap::new(), HashMap::new());
        net(&out_a, &mut na);
        net(&out_b, &mut nb);
        assert_eq!(na, nb, "net output after rescale to {p}");
    }
}
