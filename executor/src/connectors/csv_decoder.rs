//! CSV records decoded into Arrow batches, for the file source.
//!
//! Records are split by `simd-csv`, which finds delimiters, quotes and line
//! ends with SIMD searches instead of a byte-at-a-time state machine (the
//! byte-at-a-time tokenizer was half of the CPU of a plain projection over a
//! CSV file). Only the columns a query reads are parsed; the others come out
//! NULL, and their bytes are never looked at again (not even UTF-8 checked).
//!
//! Values read as arrow-csv reads them: an empty cell (quoted or not) is
//! NULL; numbers, dates and times parse with arrow's parsers; a timestamp
//! without an offset is wall-clock time in the column's zone (UTC for
//! `timestamp`). The common `YYYY-MM-DD HH:MM:SS[.fffffffff]` shape is parsed
//! directly, anything else by arrow's `string_to_datetime`. Types arrow-csv
//! cannot read (intervals, bytea) are read as text and cast.

use std::borrow::Cow;
use std::io::Read;
use std::sync::Arc;

use atoi::FromRadix10SignedChecked;
use chrono::NaiveDate;
use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, BinaryBuilder, BooleanBuilder, PrimitiveBuilder, RecordBatch,
    StringArray,
};
use datafusion::arrow::compute::kernels::cast::{cast_with_options, CastOptions};
use datafusion::arrow::compute::kernels::cast_utils::{parse_decimal, string_to_datetime, Parser};
use datafusion::arrow::datatypes::*;
use simd_csv::{ZeroCopyByteRecord, ZeroCopyReader, ZeroCopyReaderBuilder};

/// A CSV stream read as batches of `schema`'s rows.
pub struct CsvBatchReader<R: Read> {
    records: ZeroCopyReader<R>,
    schema: SchemaRef,
    /// The parsed columns: (index in `schema`, its decoder).
    columns: Vec<(usize, Box<dyn ColumnDecoder>)>,
    batch_rows: usize,
    /// Records read so far, the header included.
    record: u64,
}

impl<R: Read> CsvBatchReader<R> {
    /// A reader of `input` as rows of `schema`, parsing only `columns`
    /// (empty: all) and the NOT NULL ones (a NULL put in their place would
    /// break the schema, and their values must be checked), `batch_rows`
    /// rows per batch.
    pub fn new(
        input: R,
        schema: SchemaRef,
        columns: &[usize],
        header: bool,
        delimiter: u8,
        batch_rows: usize,
    ) -> Result<Self, String> {
        let records = ZeroCopyReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(header)
            .flexible(true)
            .buffer_capacity(1 << 20)
            .from_reader(input);
        let columns = (0..schema.fields().len())
            .filter(|i| {
                columns.is_empty() || columns.contains(i) || !schema.field(*i).is_nullable()
            })
            .map(|i| Ok((i, decoder_for(schema.field(i).data_type(), batch_rows)?)))
            .collect::<Result<_, String>>()?;
        Ok(CsvBatchReader {
            records,
            schema,
            columns,
            batch_rows,
            record: header as u64,
        })
    }

    /// The next batch of at most `batch_rows` rows; `None` at the end. A
    /// record with the wrong number of fields or a value that does not
    /// parse is an error naming its record number and column.
    pub fn next_batch(&mut self) -> Result<Option<RecordBatch>, String> {
        let width = self.schema.fields().len();
        let first_record = self.record + 1;
        let mut rows = 0;
        while rows < self.batch_rows {
            let Some(record) = self.records.read_byte_record().map_err(|e| e.to_string())? else {
                break;
            };
            self.record += 1;
            if let Some(i) = stray_quote(&record) {
                return Err(format!(
                    "record {}, field {}: a quote inside a value that is not quoted as a whole; \
                     quote the value and double its quotes (\"12\"\" pipe\")",
                    self.record,
                    i + 1
                ));
            }
            if record.len() != width {
                return Err(format!(
                    "record {} has {} fields, expected {width}",
                    self.record,
                    record.len()
                ));
            }
            for (i, decoder) in &mut self.columns {
                let cell = record.unescape(*i).unwrap_or(Cow::Borrowed(b""));
                if cell.is_empty() {
                    decoder.push_null();
                } else if let Err(e) = decoder.push(&cell) {
                    let field = self.schema.field(*i);
                    return Err(format!(
                        "record {}, column {}: {e}",
                        self.record,
                        field.name()
                    ));
                }
            }
            rows += 1;
        }
        if rows == 0 {
            return Ok(None);
        }
        let mut out: Vec<Option<ArrayRef>> = vec![None; width];
        for (i, decoder) in &mut self.columns {
            let field = self.schema.field(*i);
            out[*i] = Some(decoder.finish().map_err(|e| match e.row {
                Some(r) => format!(
                    "record {}, column {}: {}",
                    first_record + r as u64,
                    field.name(),
                    e.message
                ),
                None => format!("column {}: {}", field.name(), e.message),
            })?);
        }
        let out = out
            .into_iter()
            .zip(self.schema.fields())
            .map(|(a, f)| a.unwrap_or_else(|| new_null_array(f.data_type(), rows)))
            .collect();
        RecordBatch::try_new(self.schema.clone(), out)
            .map(Some)
            .map_err(|e| e.to_string())
    }
}

/// The first field of `record` with a quote that is not part of quoting
/// the whole field (`"..."`, inner quotes doubled). simd-csv starts a quoted
/// section at any quote, where arrow-csv's csv-core takes a quote inside an
/// unquoted value as a character: `12" pipe,1` would silently swallow the
/// next line into this record. Such records are refused instead.
fn stray_quote(record: &ZeroCopyByteRecord<'_>) -> Option<usize> {
    memchr::memchr(b'"', record.as_slice())?;
    (0..record.len()).find(|&i| {
        let cell = record.get(i).unwrap_or(b"");
        if memchr::memchr(b'"', cell).is_none() {
            return false;
        }
        let quoted = cell.len() >= 2 && cell[0] == b'"' && cell[cell.len() - 1] == b'"';
        if !quoted {
            return true;
        }
        // Inside the quotes, quotes come in pairs.
        let mut inner = cell[1..cell.len() - 1].iter();
        while let Some(&b) = inner.next() {
            if b == b'"' && inner.next() != Some(&b'"') {
                return true;
            }
        }
        false
    })
}

/// Builds one column of a batch from non-empty cells and NULLs.
trait ColumnDecoder: Send {
    fn push(&mut self, cell: &[u8]) -> Result<(), String>;
    fn push_null(&mut self);
    /// The column so far; the decoder starts over empty.
    fn finish(&mut self) -> Result<ArrayRef, CellError>;
}

/// A column that could not be finished: which of its rows (if known) and
/// why.
struct CellError {
    row: Option<usize>,
    message: String,
}

fn decoder_for(t: &DataType, capacity: usize) -> Result<Box<dyn ColumnDecoder>, String> {
    fn primitive<T: ArrowPrimitiveType>(
        capacity: usize,
        parse: impl Fn(&[u8]) -> Result<T::Native, String> + Send + 'static,
    ) -> Box<dyn ColumnDecoder> {
        Box::new(Primitive::<T, _> {
            builder: PrimitiveBuilder::with_capacity(capacity),
            parse,
        })
    }
    fn parsed<T: ArrowPrimitiveType + Parser>(capacity: usize) -> Box<dyn ColumnDecoder> {
        primitive::<T>(capacity, |cell| {
            let s = utf8(cell)?;
            T::parse(s).ok_or_else(|| cannot_parse(s, &T::DATA_TYPE))
        })
    }
    fn integers<T: ArrowPrimitiveType>(capacity: usize) -> Box<dyn ColumnDecoder>
    where
        T::Native: FromRadix10SignedChecked,
    {
        primitive::<T>(capacity, parse_integer::<T>)
    }
    fn timestamps<T: ArrowTimestampType>(
        tz: &Option<Arc<str>>,
        capacity: usize,
    ) -> Result<Box<dyn ColumnDecoder>, String> {
        let zone = match tz {
            Some(name) => Some(name.parse::<Tz>().map_err(|e| e.to_string())?),
            None => None,
        };
        // Wall-clock time without an offset is UTC in these zones.
        let naive_is_utc = match tz.as_deref() {
            None => true,
            Some(name) => matches!(name, "UTC" | "utc" | "+00:00" | "Z" | "+00"),
        };
        Ok(Box::new(Primitive::<T, _> {
            builder: PrimitiveBuilder::with_capacity(capacity).with_timezone_opt(tz.clone()),
            parse: move |cell: &[u8]| parse_timestamp::<T>(cell, naive_is_utc, zone.as_ref()),
        }))
    }
    Ok(match t {
        DataType::Utf8 => Box::new(Text::with_capacity(capacity)),
        DataType::Boolean => Box::new(Booleans(BooleanBuilder::with_capacity(capacity))),
        DataType::Int8 => integers::<Int8Type>(capacity),
        DataType::Int16 => integers::<Int16Type>(capacity),
        DataType::Int32 => integers::<Int32Type>(capacity),
        DataType::Int64 => integers::<Int64Type>(capacity),
        DataType::UInt8 => integers::<UInt8Type>(capacity),
        DataType::UInt16 => integers::<UInt16Type>(capacity),
        DataType::UInt32 => integers::<UInt32Type>(capacity),
        DataType::UInt64 => integers::<UInt64Type>(capacity),
        DataType::Float32 => parsed::<Float32Type>(capacity),
        DataType::Float64 => parsed::<Float64Type>(capacity),
        DataType::Date32 => parsed::<Date32Type>(capacity),
        DataType::Date64 => parsed::<Date64Type>(capacity),
        DataType::Timestamp(TimeUnit::Second, tz) => {
            timestamps::<TimestampSecondType>(tz, capacity)?
        }
        DataType::Timestamp(TimeUnit::Millisecond, tz) => {
            timestamps::<TimestampMillisecondType>(tz, capacity)?
        }
        DataType::Timestamp(TimeUnit::Microsecond, tz) => {
            timestamps::<TimestampMicrosecondType>(tz, capacity)?
        }
        DataType::Timestamp(TimeUnit::Nanosecond, tz) => {
            timestamps::<TimestampNanosecondType>(tz, capacity)?
        }
        DataType::Decimal128(precision, scale) => {
            let (precision, scale) = (*precision, *scale);
            Box::new(Primitive::<Decimal128Type, _> {
                builder: PrimitiveBuilder::with_capacity(capacity)
                    .with_precision_and_scale(precision, scale)
                    .map_err(|e| e.to_string())?,
                parse: move |cell: &[u8]| {
                    parse_decimal::<Decimal128Type>(utf8(cell)?, precision, scale)
                        .map_err(|e| e.to_string())
                },
            })
        }
        other => Box::new(CastFromText {
            text: Text::with_capacity(capacity),
            to: other.clone(),
        }),
    })
}

fn utf8(cell: &[u8]) -> Result<&str, String> {
    std::str::from_utf8(cell).map_err(|e| format!("invalid UTF-8: {e}"))
}

fn cannot_parse(cell: &str, t: &DataType) -> String {
    format!("cannot parse '{cell}' as {t}")
}

/// Text cells, gathered as bytes and checked to be UTF-8 all at once when
/// the batch is done: one check per batch instead of one per cell.
struct Text(BinaryBuilder);

impl Text {
    fn with_capacity(rows: usize) -> Text {
        Text(BinaryBuilder::with_capacity(rows, rows * 16))
    }
}

impl ColumnDecoder for Text {
    fn push(&mut self, cell: &[u8]) -> Result<(), String> {
        self.0.append_value(cell);
        Ok(())
    }
    fn push_null(&mut self) {
        self.0.append_null();
    }
    fn finish(&mut self) -> Result<ArrayRef, CellError> {
        let bytes = self.0.finish();
        match StringArray::try_from_binary(bytes.clone()) {
            Ok(text) => Ok(Arc::new(text)),
            Err(e) => {
                let row = bytes
                    .iter()
                    .position(|v| v.is_some_and(|v| utf8(v).is_err()));
                Err(CellError {
                    row,
                    message: match row.map(|r| utf8(bytes.value(r))) {
                        Some(Err(e)) => e,
                        _ => e.to_string(),
                    },
                })
            }
        }
    }
}

/// Integers parsed from the cell's bytes as arrow parses them (digits with
/// an optional sign, surrounding ASCII white space ignored), without a
/// UTF-8 check first: the bytes are digits or the cell is an error.
fn parse_integer<T: ArrowPrimitiveType>(cell: &[u8]) -> Result<T::Native, String>
where
    T::Native: FromRadix10SignedChecked,
{
    // A digit last, as arrow-cast requires: atoi alone reads "-" as 0.
    let parse = |b: &[u8]| match T::Native::from_radix_10_signed_checked(b) {
        (Some(n), used) if used == b.len() && b.last().is_some_and(u8::is_ascii_digit) => Some(n),
        _ => None,
    };
    parse(cell)
        .or_else(|| parse(cell.trim_ascii()))
        .ok_or_else(|| cannot_parse(&String::from_utf8_lossy(cell), &T::DATA_TYPE))
}

/// A column of numbers (integers, floats, dates, timestamps, decimals),
/// each cell parsed by `parse`.
struct Primitive<T: ArrowPrimitiveType, F> {
    builder: PrimitiveBuilder<T>,
    parse: F,
}

impl<T, F> ColumnDecoder for Primitive<T, F>
where
    T: ArrowPrimitiveType,
    F: Fn(&[u8]) -> Result<T::Native, String> + Send,
{
    fn push(&mut self, cell: &[u8]) -> Result<(), String> {
        let v = (self.parse)(cell)?;
        self.builder.append_value(v);
        Ok(())
    }
    fn push_null(&mut self) {
        self.builder.append_null();
    }
    fn finish(&mut self) -> Result<ArrayRef, CellError> {
        Ok(Arc::new(self.builder.finish()))
    }
}

struct Booleans(BooleanBuilder);

impl ColumnDecoder for Booleans {
    /// Postgres's spellings of a boolean, in any case.
    fn push(&mut self, cell: &[u8]) -> Result<(), String> {
        let s = utf8(cell)?;
        let v = match s.to_ascii_lowercase().as_str() {
            "true" | "t" | "yes" | "y" | "on" | "1" => true,
            "false" | "f" | "no" | "n" | "off" | "0" => false,
            _ => return Err(cannot_parse(s, &DataType::Boolean)),
        };
        self.0.append_value(v);
        Ok(())
    }
    fn push_null(&mut self) {
        self.0.append_null();
    }
    fn finish(&mut self) -> Result<ArrayRef, CellError> {
        Ok(Arc::new(self.0.finish()))
    }
}

/// The value in `T`'s unit of `secs` seconds and `nanos` nanoseconds
/// since the epoch; `None` on overflow.
fn timestamp_value<T: ArrowTimestampType>(secs: i64, nanos: u32) -> Option<i64> {
    match T::UNIT {
        TimeUnit::Second => Some(secs),
        TimeUnit::Millisecond => secs
            .checked_mul(1_000)?
            .checked_add((nanos / 1_000_000) as i64),
        TimeUnit::Microsecond => secs
            .checked_mul(1_000_000)?
            .checked_add((nanos / 1_000) as i64),
        TimeUnit::Nanosecond => secs.checked_mul(1_000_000_000)?.checked_add(nanos as i64),
    }
}

/// A timestamp in `T`'s unit: the common shape directly when wall-clock
/// time is UTC (`naive_is_utc`), otherwise as arrow-csv parses it
/// (`string_to_datetime` in the column's zone, UTC without one).
fn parse_timestamp<T: ArrowTimestampType>(
    cell: &[u8],
    naive_is_utc: bool,
    zone: Option<&Tz>,
) -> Result<i64, String> {
    if naive_is_utc {
        if let Some(v) = naive_timestamp(cell).and_then(|(s, n)| timestamp_value::<T>(s, n)) {
            return Ok(v);
        }
    }
    let s = utf8(cell)?;
    let (secs, nanos) = match zone {
        Some(tz) => string_to_datetime(tz, s).map(|d| (d.timestamp(), d.timestamp_subsec_nanos())),
        None => {
            string_to_datetime(&chrono::Utc, s).map(|d| (d.timestamp(), d.timestamp_subsec_nanos()))
        }
    }
    .map_err(|e| e.to_string())?;
    timestamp_value::<T>(secs, nanos)
        .ok_or_else(|| format!("'{s}' is out of range for {}", T::DATA_TYPE))
}

/// `YYYY-MM-DD HH:MM:SS` (or with `T` between date and time), with an
/// optional fraction of 1 to 9 digits and nothing after, as seconds and
/// nanoseconds since the epoch of that wall-clock time in UTC; `None` for
/// any other shape or an invalid date or time.
fn naive_timestamp(b: &[u8]) -> Option<(i64, u32)> {
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || (b[10] != b' ' && b[10] != b'T')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let digit = |i: usize| {
        let d = b[i].wrapping_sub(b'0');
        (d < 10).then_some(d as u32)
    };
    let two = |i: usize| Some(digit(i)? * 10 + digit(i + 1)?);
    let year = two(0)? * 100 + two(2)?;
    let (month, day) = (two(5)?, two(8)?);
    let (hour, minute, second) = (two(11)?, two(14)?, two(17)?);
    let mut nanos = 0u32;
    if b.len() > 19 {
        let fraction = &b[20..];
        if b[19] != b'.' || fraction.is_empty() || fraction.len() > 9 {
            return None;
        }
        for i in 20..b.len() {
            nanos = nanos * 10 + digit(i)?;
        }
        nanos *= 10u32.pow(9 - fraction.len() as u32);
    }
    let secs = NaiveDate::from_ymd_opt(year as i32, month, day)?
        .and_hms_opt(hour, minute, second)?
        .and_utc()
        .timestamp();
    Some((secs, nanos))
}

/// Text cast to a type arrow-csv cannot parse (intervals, bytea, ...).
struct CastFromText {
    text: Text,
    to: DataType,
}

impl ColumnDecoder for CastFromText {
    fn push(&mut self, cell: &[u8]) -> Result<(), String> {
        self.text.push(cell)
    }
    fn push_null(&mut self) {
        self.text.push_null();
    }
    fn finish(&mut self) -> Result<ArrayRef, CellError> {
        let text = self.text.finish()?;
        let options = CastOptions {
            safe: false,
            ..Default::default()
        };
        cast_with_options(&text, &self.to, &options).map_err(|e| {
            // The first row that does not cast, for the error's record.
            let row = (0..text.len())
                .find(|&r| cast_with_options(&text.slice(r, 1), &self.to, &options).is_err());
            CellError {
                row,
                message: e.to_string(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operators::state_codec::test_util::Rng;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::util::pretty::pretty_format_batches;

    fn schema(fields: &[(&str, DataType)]) -> SchemaRef {
        Arc::new(Schema::new(
            fields
                .iter()
                .map(|(n, t)| Field::new(*n, t.clone(), true))
                .collect::<Vec<_>>(),
        ))
    }

    fn read_all(
        text: &str,
        schema: &SchemaRef,
        columns: &[usize],
        rows: usize,
    ) -> Result<Vec<RecordBatch>, String> {
        let mut r =
            CsvBatchReader::new(text.as_bytes(), schema.clone(), columns, false, b',', rows)?;
        let mut out = vec![];
        while let Some(b) = r.next_batch()? {
            out.push(b);
        }
        Ok(out)
    }

    /// arrow-csv's reader over the same text: the oracle.
    fn arrow_csv(text: &str, schema: &SchemaRef) -> Vec<RecordBatch> {
        datafusion::arrow::csv::ReaderBuilder::new(schema.clone())
            .with_header(false)
            .with_batch_size(3)
            .build(text.as_bytes())
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn pretty(batches: &[RecordBatch]) -> String {
        pretty_format_batches(batches).unwrap().to_string()
    }

    #[test]
    fn reads_what_arrow_csv_reads() {
        let s = schema(&[
            ("id", DataType::Int64),
            ("name", DataType::Utf8),
            ("price", DataType::Float64),
            ("n", DataType::Int32),
            ("ts", DataType::Timestamp(TimeUnit::Microsecond, None)),
            (
                "tz",
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
            ),
            ("d", DataType::Date32),
            ("amount", DataType::Decimal128(10, 2)),
        ]);
        let text = "1,alice,1.5,7,2025-01-01 00:00:00.000,2025-01-01T10:20:30.5,2025-01-01,12.5\n\
                    2,\"bob, jr\",-2e3,,2024-02-29 23:59:59.123456,2024-02-29T23:59:59Z,1999-12-31,-0.01\r\n\
                    3,,0, -8 ,1969-12-31 23:59:59.999,1969-12-31 23:59:59.5+01:00,1970-01-01,\n\
                    +4,\"say \"\"hi\"\"\",3,5,2025-01-01T00:00:00,2025-01-01 00:00:00.000000001,2000-01-01,1\n";
        let ours = read_all(text, &s, &[], 3).unwrap();
        assert_eq!(ours.len(), 2, "4 rows in batches of 3");
        assert_eq!(pretty(&ours), pretty(&arrow_csv(text, &s)));
        assert!(ours[0].column(1).is_null(2), "an empty cell is NULL");
        assert_eq!(ours[0].column(1).as_string::<i32>().value(1), "bob, jr");
        assert_eq!(ours[1].column(1).as_string::<i32>().value(0), "say \"hi\"");
    }

    #[test]
    fn only_the_projected_columns_are_parsed() {
        let s = schema(&[
            ("a", DataType::Int64),
            ("b", DataType::Int64),
            ("c", DataType::Utf8),
        ]);
        // Column b is not a number and column c not UTF-8: neither is read.
        let text = b"1,x,\xff\n2,y,\xfe\n".to_vec();
        let mut r = CsvBatchReader::new(&text[..], s.clone(), &[0], false, b',', 10).unwrap();
        let b = r.next_batch().unwrap().unwrap();
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.column(0).as_primitive::<Int64Type>().values(), &[1, 2]);
        assert_eq!(b.column(1).null_count(), 2);
        assert_eq!(b.column(2).null_count(), 2);
        assert!(r.next_batch().unwrap().is_none());
        // Read in full, both are errors naming the record and column.
        let mut r = CsvBatchReader::new(&text[..], s.clone(), &[], false, b',', 10).unwrap();
        let e = r.next_batch().unwrap_err();
        assert!(e.contains("record 1, column b") && e.contains("'x'"), "{e}");
        let mut r = CsvBatchReader::new(&text[..], s, &[2], false, b',', 10).unwrap();
        let e = r.next_batch().unwrap_err();
        assert!(e.contains("record 1, column c: invalid UTF-8"), "{e}");
        // A NOT NULL column is parsed even when not asked for: a NULL in
        // its place would break the batch's schema.
        let s = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Int64, false),
        ]));
        let mut r =
            CsvBatchReader::new(&b"1,7\n2,8\n"[..], s.clone(), &[0], false, b',', 10).unwrap();
        let b = r.next_batch().unwrap().unwrap();
        assert_eq!(b.column(1).as_primitive::<Int64Type>().values(), &[7, 8]);
        let mut r = CsvBatchReader::new(&b"1,7\n2,\n"[..], s, &[0], false, b',', 10).unwrap();
        assert!(r.next_batch().is_err(), "a NULL in a NOT NULL column");
    }

    #[test]
    fn bad_records_are_errors_with_their_number() {
        let s = schema(&[("a", DataType::Int64), ("b", DataType::Utf8)]);
        let e = read_all("1,x\n2,y,z\n", &s, &[], 10).unwrap_err();
        assert!(e.contains("record 2 has 3 fields, expected 2"), "{e}");
        let e = read_all("1,x\n99999999999999999999,y\n", &s, &[], 10).unwrap_err();
        assert!(e.contains("record 2, column a"), "{e}");
        let text = b"1,x\n2,y\n3,\"\xc3\"\n";
        let mut r = CsvBatchReader::new(&text[..], s, &[], false, b',', 10).unwrap();
        let e = r.next_batch().unwrap_err();
        assert!(e.contains("record 3, column b: invalid UTF-8"), "{e}");
        let ts = schema(&[("t", DataType::Timestamp(TimeUnit::Microsecond, None))]);
        let e = read_all("2025-02-30 00:00:00\n", &ts, &[], 10).unwrap_err();
        assert!(e.contains("record 1, column t"), "{e}");
    }

    #[test]
    fn a_header_is_skipped_and_counted() {
        let s = schema(&[("a", DataType::Int64)]);
        let mut r = CsvBatchReader::new(&b"a\n1\nx\n"[..], s, &[], true, b',', 10).unwrap();
        let e = r.next_batch().unwrap_err();
        assert!(e.contains("record 3, column a"), "{e}");
    }

    #[test]
    fn intervals_are_cast_from_text_and_booleans_take_postgres_spellings() {
        let s = schema(&[
            ("i", DataType::Interval(IntervalUnit::MonthDayNano)),
            ("b", DataType::Boolean),
        ]);
        let b = &read_all("1 day,t\n,FALSE\n2 hours,yes\n", &s, &[], 10).unwrap()[0];
        let i = b.column(0).as_primitive::<IntervalMonthDayNanoType>();
        assert_eq!(i.value(0), IntervalMonthDayNano::new(0, 1, 0));
        assert!(i.is_null(1));
        assert_eq!(
            i.value(2),
            IntervalMonthDayNano::new(0, 0, 7_200_000_000_000)
        );
        let bools: Vec<_> = b.column(1).as_boolean().iter().collect();
        assert_eq!(bools, vec![Some(true), Some(false), Some(true)]);
        let e = read_all("1 day,t\n2 hours,f\nsoon,t\n", &s, &[], 10).unwrap_err();
        assert!(e.contains("record 3, column i"), "{e}");
    }

    /// A quote inside a value that is not quoted as a whole: arrow-csv read
    /// it as a character, simd-csv as the start of a quoted section (which
    /// would swallow the next line). Refused, naming the record; quoted
    /// values with doubled quotes, and newlines inside quotes, still read.
    #[test]
    fn stray_quotes_are_refused_not_merged() {
        let s = schema(&[("a", DataType::Utf8), ("b", DataType::Int64)]);
        for text in [
            "x,0\n12\" pipe,1\n3\" pipe,2\n",
            "x,0\n\"ab\"c,1\n",
            "x,0\n\"a\"b\",1\n",
        ] {
            let e = read_all(text, &s, &[1], 10).unwrap_err();
            assert!(
                e.contains("record 2, field 1: a quote inside"),
                "{text:?}: {e}"
            );
        }
        let b = &read_all("\"12\"\" pipe\",1\n\"two\nlines\",2\n\"\",3\n", &s, &[], 10).unwrap()[0];
        let a: Vec<_> = b.column(0).as_string::<i32>().iter().collect();
        assert_eq!(a, vec![Some("12\" pipe"), Some("two\nlines"), None]);
    }

    #[test]
    fn a_sign_alone_is_not_a_number() {
        let s = schema(&[("b", DataType::Int64)]);
        for cell in ["-", "+", " - "] {
            let e = read_all(&format!("{cell}\n"), &s, &[], 10).unwrap_err();
            assert!(e.contains("record 1, column b"), "{cell:?}: {e}");
        }
        let b = &read_all(" -7 \n+3\n", &s, &[], 10).unwrap()[0];
        assert_eq!(b.column(0).as_primitive::<Int64Type>().values(), &[-7, 3]);
    }

    /// The direct timestamp parse agrees with arrow's `string_to_datetime`
    /// wherever it accepts a string, and leaves the rest to it.
    #[test]
    fn the_timestamp_fast_path_agrees_with_arrow() {
        let mut rng = Rng::new(0x2545_f491_4f6c_dd1d);
        let mut next = |n: u64| rng.below(n as usize) as u64;
        let mut checked = 0;
        for _ in 0..20_000 {
            let frac_digits = next(11) as usize;
            let mut s = format!(
                "{:04}-{:02}-{:02}{}{:02}:{:02}:{:02}",
                1900 + next(200),
                next(14),
                next(32),
                if next(2) == 0 { ' ' } else { 'T' },
                next(25),
                next(61),
                next(61),
            );
            if frac_digits > 0 {
                s.push('.');
                for _ in 0..frac_digits.min(10) {
                    s.push((b'0' + next(10) as u8) as char);
                }
            }
            let arrow = string_to_datetime(&chrono::Utc, &s)
                .ok()
                .map(|d| (d.timestamp(), d.timestamp_subsec_nanos()));
            match naive_timestamp(s.as_bytes()) {
                Some(ours) => {
                    assert_eq!(Some(ours), arrow, "{s}");
                    checked += 1;
                }
                None => assert!(
                    arrow.is_none() || frac_digits > 9 || s.contains(":60"),
                    "{s}: fast path refused what arrow reads as {arrow:?}"
                ),
            }
        }
        assert!(checked > 5_000, "only {checked} strings took the fast path");
    }
}
