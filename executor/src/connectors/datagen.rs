//! The `datagen` source connector, modelled on Flink's: random or
//! sequential values per column, generated in the source subtasks.
//!
//! Options: `rows-per-second` over all subtasks (default 10000 as in Flink;
//! 0: no limit), `number-of-rows` (default: no end), `seed` (default 0), and
//! per column `fields.<col>.kind` = `random` (default) or `sequence` with:
//!
//! | type | random | sequence |
//! |---|---|---|
//! | smallint, integer, bigint | `min`, `max` (default: the type's range) | `start` (0), `end` (the type's maximum), `step` (1) |
//! | real, double precision | `min`, `max` (default 0 and 1) | `start` (0), `end` (none), `step` (1) |
//! | boolean | (none) | — |
//! | text, varchar | `length` (default 100; letters a–z) | `start`, `end`, `step`: the numbers as text |
//! | timestamp | `max-past` (a duration, default 0): the wall clock minus up to that | `start` (a timestamp, required), `end` (none), `step` (a duration, 1 ms) |
//!
//! Rows are numbered 0, 1, ... over the whole source; subtask `i` of `p`
//! emits rows `i`, `i + p`, ... (a position `k` is row `i + k * p`, where it
//! starts directly; after a change of parallelism the rows other layouts
//! emitted are skipped, `row_split.rs`). Every value is a function of the seed, the row number
//! and the column — the same at any parallelism and after a restore — except
//! random timestamps, which follow the wall clock as in Flink. A sequence is
//! `start + row * step`; the source ends after `number-of-rows` rows or when
//! a sequence with an end reaches it, whichever comes first.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use datafusion::arrow::array::{
    ArrayRef, BooleanArray, Float32Array, Float64Array, Int16Array, Int32Array, Int64Array,
    RecordBatch, StringBuilder, TimestampMicrosecondArray,
};
use datafusion::arrow::compute::kernels::cast_utils::string_to_timestamp_nanos;
use datafusion::arrow::datatypes::{DataType, SchemaRef, TimeUnit};

use super::row_split::{split_id, RowCursor};
use super::{bad_option, ConnectorOptions, OpenSplit, SourceConnector, SplitPositions, SplitRead};
use crate::error::{ExecError, ExecResult};

/// `rows-per-second` unless set (Flink's default).
pub const DATAGEN_ROWS_PER_SECOND: u64 = 10_000;

/// `fields.<col>.length` of random text unless set (Flink's default).
pub const DATAGEN_TEXT_LENGTH: usize = 100;

/// Largest `fields.<col>.length`.
pub const DATAGEN_TEXT_LENGTH_MAX: usize = 1 << 20;

const OPTIONS: &str = "connector, rows-per-second, number-of-rows, seed, fields.<column>.kind \
     ('random' or 'sequence'), and per column: min, max (random numbers), length (random text), \
     max-past (random timestamps), start, end, step (sequences)";

/// How one column's values are made.
#[derive(Debug, Clone, PartialEq)]
enum FieldGen {
    /// Uniform in `min..=max`.
    RandomInt {
        min: i64,
        max: i64,
    },
    /// Uniform in `min..max`.
    RandomFloat {
        min: f64,
        max: f64,
    },
    RandomBool,
    /// `length` letters a–z.
    RandomText {
        length: usize,
    },
    /// The wall clock minus up to `max_past_us`.
    RandomTimestamp {
        max_past_us: u64,
    },
    /// `start + row * step` (integers, text and timestamps in µs).
    SequenceInt {
        start: i64,
        step: i64,
    },
    SequenceFloat {
        start: f64,
        step: f64,
    },
}

/// A `datagen` source.
#[derive(Debug)]
pub struct DatagenSource {
    /// Rows over all subtasks (`None`: no end).
    pub rows: Option<u64>,
    /// Rows per second over all subtasks (`None`: no limit).
    pub rows_per_second: Option<u64>,
    pub seed: u64,
    /// One per column of the schema.
    fields: Vec<FieldGen>,
}

fn int_range(t: &DataType) -> Option<(i64, i64)> {
    match t {
        DataType::Int16 => Some((i16::MIN as i64, i16::MAX as i64)),
        DataType::Int32 => Some((i32::MIN as i64, i32::MAX as i64)),
        DataType::Int64 => Some((i64::MIN, i64::MAX)),
        _ => None,
    }
}

impl DatagenSource {
    /// A source from its `WITH` options, for a table with `schema`.
    pub fn from_options(
        options: &BTreeMap<String, String>,
        schema: &SchemaRef,
    ) -> ExecResult<Arc<DatagenSource>> {
        let mut o = ConnectorOptions::new("datagen", options);
        let rows_per_second = match o.take_u64("rows-per-second")? {
            None => Some(DATAGEN_ROWS_PER_SECOND),
            Some(0) => None,
            Some(n) => Some(n),
        };
        let mut rows = o.take_u64("number-of-rows")?;
        let seed = o.take_u64("seed")?.unwrap_or(0);
        let mut fields = Vec::with_capacity(schema.fields().len());
        for f in schema.fields() {
            let (field, len) = parse_field(&mut o, f.name(), f.data_type())?;
            if let Some(len) = len {
                rows = Some(rows.map_or(len, |r| r.min(len)));
            }
            fields.push(field);
        }
        if let Some(k) = o.keys_under("fields.").first() {
            let col = k["fields.".len()..].split('.').next().unwrap_or_default();
            if schema.field_with_name(col).is_err() {
                return Err(bad_option(format!(
                    "datagen source option \"{k}\" names no column of the source"
                )));
            }
        }
        o.finish(OPTIONS)?;
        Ok(Arc::new(DatagenSource {
            rows,
            rows_per_second,
            seed,
            fields,
        }))
    }
}

/// Column `name`'s generator, and the rows its sequence has (if it ends).
fn parse_field(
    o: &mut ConnectorOptions<'_>,
    name: &str,
    t: &DataType,
) -> ExecResult<(FieldGen, Option<u64>)> {
    let key = |p: &str| format!("fields.{name}.{p}");
    let sequence = match o.take(&key("kind")).map(str::to_ascii_lowercase).as_deref() {
        None | Some("random") => false,
        Some("sequence") => true,
        Some(other) => {
            return Err(bad_option(format!(
                "invalid value for option \"{}\": \"{other}\" (expected 'random' or 'sequence')",
                key("kind")
            )))
        }
    };
    let int = |o: &mut ConnectorOptions<'_>, p: &str, (lo, hi): (i64, i64)| {
        let k = key(p);
        o.take(&k)
            .map(|v| match v.parse::<i64>() {
                Ok(n) if (lo..=hi).contains(&n) => Ok(n),
                _ => Err(bad_option(format!(
                    "invalid value for option \"{k}\": \"{v}\" (expected an integer from {lo} to {hi})"
                ))),
            })
            .transpose()
    };
    let float = |o: &mut ConnectorOptions<'_>, p: &str| {
        let k = key(p);
        o.take(&k)
            .map(|v| {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| {
                        bad_option(format!(
                            "invalid value for option \"{k}\": \"{v}\" (expected a number)"
                        ))
                    })
            })
            .transpose()
    };
    let duration_us = |o: &mut ConnectorOptions<'_>, p: &str| {
        let k = key(p);
        o.take(&k)
            .map(|v| {
                crate::checkpoint::config::duration(&k, v)
                    .map(|d| d.as_micros().min(i64::MAX as u128) as i64)
                    .map_err(bad_option)
            })
            .transpose()
    };
    let timestamp_us = |o: &mut ConnectorOptions<'_>, p: &str| {
        let k = key(p);
        o.take(&k)
            .map(|v| {
                string_to_timestamp_nanos(v).map(|ns| ns / 1000).map_err(|_| {
                    bad_option(format!(
                        "invalid value for option \"{k}\": \"{v}\" (expected a timestamp such as '2025-01-01 00:00:00')"
                    ))
                })
            })
            .transpose()
    };
    // A positive step; the rows from start to end (inclusive) by it.
    let positive = |step: i64| {
        if step > 0 {
            Ok(step)
        } else {
            Err(bad_option(format!("{} must be positive", key("step"))))
        }
    };
    let len = |start: i64, end: Option<i64>, step: i64| {
        end.map(|end| {
            if end < start {
                0
            } else {
                ((end as i128 - start as i128) / step as i128 + 1) as u64
            }
        })
    };
    let out = match (t, sequence) {
        (DataType::Int16 | DataType::Int32 | DataType::Int64, false) => {
            let range = int_range(t).expect("integer type");
            let min = int(o, "min", range)?.unwrap_or(range.0);
            let max = int(o, "max", range)?.unwrap_or(range.1);
            if min > max {
                return Err(bad_option(format!(
                    "{} ({min}) is above {} ({max})",
                    key("min"),
                    key("max")
                )));
            }
            (FieldGen::RandomInt { min, max }, None)
        }
        (DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::Utf8, true) => {
            let range = int_range(t).unwrap_or((i64::MIN, i64::MAX));
            let start = int(o, "start", range)?.unwrap_or(0);
            let end = int(o, "end", range)?.unwrap_or(range.1);
            let step = positive(int(o, "step", (1, i64::MAX))?.unwrap_or(1))?;
            (
                FieldGen::SequenceInt { start, step },
                len(start, Some(end), step),
            )
        }
        (DataType::Float32 | DataType::Float64, false) => {
            let min = float(o, "min")?.unwrap_or(0.0);
            let max = float(o, "max")?.unwrap_or(1.0);
            if min > max {
                return Err(bad_option(format!(
                    "{} ({min}) is above {} ({max})",
                    key("min"),
                    key("max")
                )));
            }
            (FieldGen::RandomFloat { min, max }, None)
        }
        (DataType::Float32 | DataType::Float64, true) => {
            let start = float(o, "start")?.unwrap_or(0.0);
            let end = float(o, "end")?;
            let step = float(o, "step")?.unwrap_or(1.0);
            if step <= 0.0 {
                return Err(bad_option(format!("{} must be positive", key("step"))));
            }
            let len = end.map(|end| {
                if end < start {
                    0
                } else {
                    ((end - start) / step).floor() as u64 + 1
                }
            });
            (FieldGen::SequenceFloat { start, step }, len)
        }
        (DataType::Boolean, false) => (FieldGen::RandomBool, None),
        (DataType::Utf8, false) => {
            let length = match o.take(&key("length")) {
                None => DATAGEN_TEXT_LENGTH,
                Some(v) => match v.parse::<usize>() {
                    Ok(n) if n <= DATAGEN_TEXT_LENGTH_MAX => n,
                    _ => {
                        return Err(bad_option(format!(
                            "invalid value for option \"{}\": \"{v}\" (expected an integer from 0 to {DATAGEN_TEXT_LENGTH_MAX})",
                            key("length")
                        )))
                    }
                },
            };
            (FieldGen::RandomText { length }, None)
        }
        (DataType::Timestamp(TimeUnit::Microsecond, None), false) => {
            let max_past_us = duration_us(o, "max-past")?.unwrap_or(0) as u64;
            (FieldGen::RandomTimestamp { max_past_us }, None)
        }
        (DataType::Timestamp(TimeUnit::Microsecond, None), true) => {
            let start = timestamp_us(o, "start")?.ok_or_else(|| {
                bad_option(format!(
                    "a timestamp sequence needs a start: set \"{}\"",
                    key("start")
                ))
            })?;
            let end = timestamp_us(o, "end")?;
            let step = positive(duration_us(o, "step")?.unwrap_or(1000))?;
            (FieldGen::SequenceInt { start, step }, len(start, end, step))
        }
        (DataType::Boolean, true) => {
            return Err(bad_option(format!(
                "column \"{name}\" is boolean: it can only be random"
            )))
        }
        (other, _) => {
            return Err(ExecError::User {
                sqlstate: crate::SqlState::FEATURE_NOT_SUPPORTED,
                message: format!("datagen cannot generate column \"{name}\" of type {other}"),
                hint: Some(
                    "Supported: smallint, integer, bigint, real, double precision, boolean, text, timestamp."
                        .into(),
                ),
            })
        }
    };
    Ok(out)
}

impl SourceConnector for DatagenSource {
    fn name(&self) -> &'static str {
        "datagen"
    }

    fn is_bounded(&self) -> bool {
        self.rows.is_some()
    }

    fn open_splits(
        &self,
        subtask: usize,
        parallelism: usize,
        schema: &SchemaRef,
        from: &SplitPositions,
        _columns: &[usize],
    ) -> ExecResult<Vec<OpenSplit>> {
        // About ten batches a second when paced.
        let chunk_rows = match self.rows_per_second(parallelism) {
            None => super::SOURCE_BATCH_ROWS,
            Some(r) => ((r / 10.0) as usize).clamp(1, super::SOURCE_BATCH_ROWS),
        };
        let split = DatagenSplit {
            cursor: RowCursor::new(subtask, parallelism, self.rows, from),
            rows: Vec::with_capacity(chunk_rows),
            chunk_rows,
            fields: self
                .fields
                .iter()
                .enumerate()
                .map(|(i, f)| (f.clone(), mix(self.seed ^ mix(i as u64))))
                .collect(),
            schema: schema.clone(),
        };
        Ok(vec![OpenSplit {
            reader: Box::new(split),
            skip: 0,
        }])
    }

    fn legacy_positions(
        &self,
        subtask: usize,
        parallelism: usize,
        _schema: &SchemaRef,
        rows: u64,
    ) -> ExecResult<SplitPositions> {
        Ok([(split_id(parallelism as u64, subtask as u64), rows)].into())
    }

    fn rows_per_second(&self, parallelism: usize) -> Option<f64> {
        self.rows_per_second.map(|r| r as f64 / parallelism as f64)
    }
}

/// SplitMix64's output function: a well-mixed 64-bit hash.
fn mix(z: u64) -> u64 {
    let z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The rows of one subtask.
struct DatagenSplit {
    cursor: RowCursor,
    /// The numbers of the batch's rows (reused).
    rows: Vec<u64>,
    chunk_rows: usize,
    /// Each column's generator and hash seed.
    fields: Vec<(FieldGen, u64)>,
    schema: SchemaRef,
}

impl DatagenSplit {
    fn column(&self, i: usize, rows: &[u64]) -> ExecResult<ArrayRef> {
        let (gen, seed) = &self.fields[i];
        let t = self.schema.field(i).data_type();
        let h = |n: u64| mix(seed ^ n.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        let ints = |f: &dyn Fn(u64) -> i64| -> ArrayRef {
            let v = rows.iter().map(|&n| f(n));
            match t {
                DataType::Int16 => Arc::new(Int16Array::from_iter_values(v.map(|x| x as i16))),
                DataType::Int32 => Arc::new(Int32Array::from_iter_values(v.map(|x| x as i32))),
                DataType::Timestamp(..) => Arc::new(TimestampMicrosecondArray::from_iter_values(v)),
                _ => Arc::new(Int64Array::from_iter_values(v)),
            }
        };
        let floats = |f: &dyn Fn(u64) -> f64| -> ArrayRef {
            let v = rows.iter().map(|&n| f(n));
            match t {
                DataType::Float32 => Arc::new(Float32Array::from_iter_values(v.map(|x| x as f32))),
                _ => Arc::new(Float64Array::from_iter_values(v)),
            }
        };
        Ok(match gen {
            FieldGen::RandomInt { min, max } => {
                let span = (*max as i128 - *min as i128 + 1) as u128;
                ints(&|n| (*min as i128 + ((h(n) as u128 * span) >> 64) as i128) as i64)
            }
            FieldGen::RandomFloat { min, max } => floats(&|n| {
                let unit = (h(n) >> 11) as f64 / (1u64 << 53) as f64;
                min + unit * (max - min)
            }),
            FieldGen::RandomBool => Arc::new(BooleanArray::from_iter(
                rows.iter().map(|&n| Some(h(n) >> 63 == 1)),
            )),
            FieldGen::RandomText { length } => {
                let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * length);
                let mut text = Vec::with_capacity(*length);
                for &n in rows {
                    text.clear();
                    let mut state = h(n);
                    while text.len() < *length {
                        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                        let word = mix(state).to_le_bytes();
                        let take = (*length - text.len()).min(8);
                        text.extend(
                            word[..take]
                                .iter()
                                .map(|&byte| b'a' + ((byte as u32 * 26) >> 8) as u8),
                        );
                    }
                    b.append_value(std::str::from_utf8(&text).expect("ascii letters"));
                }
                Arc::new(b.finish())
            }
            FieldGen::RandomTimestamp { max_past_us } => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .unwrap_or(Duration::ZERO)
                    .as_micros() as i64;
                ints(&|n| match max_past_us {
                    0 => now,
                    m => now - (h(n) % (m + 1)) as i64,
                })
            }
            FieldGen::SequenceInt { start, step } => {
                let value = |n: u64| start.wrapping_add((n as i64).wrapping_mul(*step));
                match t {
                    DataType::Utf8 => {
                        let mut b = StringBuilder::with_capacity(rows.len(), rows.len() * 8);
                        for &n in rows {
                            b.append_value(value(n).to_string());
                        }
                        Arc::new(b.finish())
                    }
                    _ => ints(&value),
                }
            }
            FieldGen::SequenceFloat { start, step } => floats(&|n| start + n as f64 * step),
        })
    }
}

impl SplitRead for DatagenSplit {
    fn read(&mut self, max_rows: usize) -> ExecResult<Option<RecordBatch>> {
        let mut rows = std::mem::take(&mut self.rows);
        self.cursor
            .next_rows(self.chunk_rows.min(max_rows), &mut rows);
        if rows.is_empty() {
            self.rows = rows;
            return Ok(None);
        }
        let columns = (0..self.fields.len())
            .map(|i| self.column(i, &rows))
            .collect::<ExecResult<Vec<_>>>();
        let n = rows.len();
        self.rows = rows;
        let options = datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(n));
        Ok(Some(RecordBatch::try_new_with_options(
            self.schema.clone(),
            columns?,
            &options,
        )?))
    }

    fn positions(&self, out: &mut Vec<(u64, u64)>) {
        self.cursor.positions(out);
    }

    fn position(&self) -> u64 {
        self.cursor.position()
    }

    fn hold_at(&mut self, target: Option<&SplitPositions>) {
        self.cursor.hold_at(target);
    }
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::{Field, Int64Type, Schema};

    use super::*;

    fn schema(cols: &[(&str, DataType)]) -> SchemaRef {
        Arc::new(Schema::new(
            cols.iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        ))
    }

    fn source(options: &[(&str, &str)], s: &SchemaRef) -> ExecResult<Arc<DatagenSource>> {
        let mut o: BTreeMap<String, String> = options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        o.insert("connector".into(), "datagen".into());
        DatagenSource::from_options(&o, s)
    }

    fn batches(src: &DatagenSource, s: &SchemaRef, subtask: usize, par: usize) -> Vec<RecordBatch> {
        let mut split = src.open(subtask, par, s, 0).unwrap().splits.remove(0);
        std::iter::from_fn(|| split.next_batch().unwrap()).collect()
    }

    fn ints(batches: &[RecordBatch], col: usize) -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| b.column(col).as_primitive::<Int64Type>().values().to_vec())
            .collect()
    }

    #[test]
    fn sequences_end_and_values_do_not_depend_on_the_parallelism() {
        let s = schema(&[("id", DataType::Int64), ("r", DataType::Int64)]);
        let src = source(
            &[
                ("rows-per-second", "0"),
                ("fields.id.kind", "sequence"),
                ("fields.id.start", "10"),
                ("fields.id.end", "10009"),
                ("fields.r.min", "-5"),
                ("fields.r.max", "5"),
            ],
            &s,
        )
        .unwrap();
        assert_eq!(src.rows, Some(10_000));
        let one = batches(&src, &s, 0, 1);
        assert_eq!(ints(&one, 0), (10..10_010).collect::<Vec<_>>());
        let r = ints(&one, 1);
        assert!(r.iter().all(|v| (-5..=5).contains(v)));
        assert!((-5..=5).all(|v| r.contains(&v)), "every value comes up");
        let mut two: Vec<(i64, i64)> = Vec::new();
        for sub in 0..2 {
            let b = batches(&src, &s, sub, 2);
            two.extend(ints(&b, 0).into_iter().zip(ints(&b, 1)));
        }
        two.sort();
        let one: Vec<(i64, i64)> = ints(&one, 0).into_iter().zip(r).collect();
        assert_eq!(two, one);
    }

    #[test]
    fn a_position_resumes_at_its_row() {
        let s = schema(&[("id", DataType::Int64)]);
        let src = source(
            &[("fields.id.kind", "sequence"), ("number-of-rows", "100")],
            &s,
        )
        .unwrap();
        let mut split = src.open(1, 3, &s, 5).unwrap().splits.remove(0);
        let b = split.next_batch().unwrap().unwrap();
        assert_eq!(ints(&[b], 0), (16..100).step_by(3).collect::<Vec<_>>());
    }

    #[test]
    fn text_timestamps_and_floats() {
        let ts = DataType::Timestamp(TimeUnit::Microsecond, None);
        let s = schema(&[
            ("t", DataType::Utf8),
            ("at", ts),
            ("x", DataType::Float64),
            ("b", DataType::Boolean),
        ]);
        let src = source(
            &[
                ("number-of-rows", "50"),
                ("fields.t.length", "13"),
                ("fields.at.kind", "sequence"),
                ("fields.at.start", "2025-01-01 00:00:00"),
                ("fields.at.step", "1s"),
                ("fields.x.min", "2.5"),
                ("fields.x.max", "3"),
            ],
            &s,
        )
        .unwrap();
        let b = &batches(&src, &s, 0, 1)[0];
        let t = b.column(0).as_string::<i32>();
        assert!(
            t.iter()
                .all(|v| v
                    .is_some_and(|v| v.len() == 13 && v.bytes().all(|c| c.is_ascii_lowercase())))
        );
        let at = b
            .column(1)
            .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>();
        assert_eq!(at.value(3) - at.value(0), 3_000_000);
        assert_eq!(at.value(0), 1_735_689_600_000_000);
        let x = b
            .column(2)
            .as_primitive::<datafusion::arrow::datatypes::Float64Type>();
        assert!(x.values().iter().all(|v| (2.5..3.0).contains(v)));
    }

    #[test]
    fn bad_options_are_refused() {
        let s = schema(&[("id", DataType::Int32), ("ok", DataType::Boolean)]);
        let code = |o: &[(&str, &str)]| source(o, &s).unwrap_err().sqlstate().code().to_owned();
        assert_eq!(code(&[("fields.id.kind", "zigzag")]), "22023");
        assert_eq!(code(&[("fields.id.min", "x")]), "22023");
        assert_eq!(code(&[("fields.id.max", "3000000000")]), "22023");
        assert_eq!(
            code(&[("fields.id.min", "5"), ("fields.id.max", "1")]),
            "22023"
        );
        assert_eq!(code(&[("fields.id.length", "5")]), "22023");
        assert_eq!(code(&[("fields.nope.min", "5")]), "22023");
        assert_eq!(code(&[("fields.ok.kind", "sequence")]), "22023");
        assert_eq!(code(&[("colour", "red")]), "22023");
        let n = schema(&[("n", DataType::Decimal128(10, 2))]);
        assert_eq!(source(&[], &n).unwrap_err().sqlstate().code(), "0A000");
    }
}
