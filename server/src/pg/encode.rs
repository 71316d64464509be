//! Arrow values → PostgreSQL wire values, in text (as psql prints them) or
//! binary format.

use bytes::{BufMut, BytesMut};
use chrono::{DateTime, NaiveDate};
use datafusion::arrow::array::*;
use datafusion::arrow::datatypes::*;
use datafusion::arrow::util::display::{ArrayFormatter, FormatOptions};
use pgwire::api::portal::Format;
use pgwire::api::results::{FieldFormat, FieldInfo};
use pgwire::api::Type;
use pgwire::messages::data::DataRow;

use crate::error::{SqlError, SqlResult};

/// The PostgreSQL type shown for an Arrow type.
pub fn pg_type(dt: &DataType) -> Type {
    match dt {
        DataType::Boolean => Type::BOOL,
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => Type::INT2,
        DataType::Int32 | DataType::UInt16 => Type::INT4,
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => Type::INT8,
        DataType::Float16 | DataType::Float32 => Type::FLOAT4,
        DataType::Float64 => Type::FLOAT8,
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => Type::NUMERIC,
        DataType::Date32 | DataType::Date64 => Type::DATE,
        DataType::Timestamp(_, None) => Type::TIMESTAMP,
        DataType::Timestamp(_, Some(_)) => Type::TIMESTAMPTZ,
        DataType::Interval(_) | DataType::Duration(_) => Type::INTERVAL,
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => Type::BYTEA,
        DataType::Time32(_) | DataType::Time64(_) => Type::TIME,
        DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _) => {
            array_type(&pg_type(f.data_type())).unwrap_or(Type::TEXT)
        }
        _ => Type::TEXT,
    }
}

/// The array type of an element type (`None` for an array: a list of
/// lists is shown as text).
fn array_type(element: &Type) -> Option<Type> {
    Some(match *element {
        Type::BOOL => Type::BOOL_ARRAY,
        Type::INT2 => Type::INT2_ARRAY,
        Type::INT4 => Type::INT4_ARRAY,
        Type::INT8 => Type::INT8_ARRAY,
        Type::FLOAT4 => Type::FLOAT4_ARRAY,
        Type::FLOAT8 => Type::FLOAT8_ARRAY,
        Type::NUMERIC => Type::NUMERIC_ARRAY,
        Type::DATE => Type::DATE_ARRAY,
        Type::TIMESTAMP => Type::TIMESTAMP_ARRAY,
        Type::TIMESTAMPTZ => Type::TIMESTAMPTZ_ARRAY,
        Type::INTERVAL => Type::INTERVAL_ARRAY,
        Type::BYTEA => Type::BYTEA_ARRAY,
        Type::TIME => Type::TIME_ARRAY,
        Type::TEXT => Type::TEXT_ARRAY,
        _ => return None,
    })
}

/// The elements of row `r` of a list column shown as an array.
fn array_elements(col: &ArrayRef, r: usize) -> Option<ArrayRef> {
    if !matches!(
        pg_type(col.data_type()).kind(),
        postgres_types::Kind::Array(_)
    ) {
        return None;
    }
    match col.data_type() {
        DataType::List(_) => Some(col.as_list::<i32>().value(r)),
        DataType::LargeList(_) => Some(col.as_list::<i64>().value(r)),
        DataType::FixedSizeList(..) => Some(col.as_fixed_size_list().value(r)),
        _ => None,
    }
}

/// PostgreSQL's text form of an array: `{1,2,NULL}`, an element quoted
/// (with `"` and `\` escaped) when it is empty, `NULL`, or holds a
/// delimiter, quote, backslash or white space.
fn encode_array_text(values: &ArrayRef, out: &mut String) {
    let Ok(fallback) = ArrayFormatter::try_new(values.as_ref(), &FormatOptions::default()) else {
        return;
    };
    out.push('{');
    let mut cell = BytesMut::new();
    for i in 0..values.len() {
        if i > 0 {
            out.push(',');
        }
        if values.is_null(i) {
            out.push_str("NULL");
            continue;
        }
        cell.clear();
        encode_text(values, i, &mut cell, &fallback);
        let text = String::from_utf8_lossy(&cell);
        let quote = text.is_empty()
            || text.eq_ignore_ascii_case("NULL")
            || text
                .chars()
                .any(|c| matches!(c, '{' | '}' | ',' | '"' | '\\') || c.is_ascii_whitespace());
        if quote {
            out.push('"');
            for c in text.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        } else {
            out.push_str(&text);
        }
    }
    out.push('}');
}

/// PostgreSQL's binary form of a one-dimensional array: dimensions, a
/// has-NULL flag, the element type, then each element's length and bytes.
fn encode_array_binary(values: &ArrayRef, out: &mut BytesMut) -> SqlResult<()> {
    let element = pg_type(values.data_type());
    if values.is_empty() {
        out.put_i32(0);
        out.put_i32(0);
        out.put_u32(element.oid());
        return Ok(());
    }
    out.put_i32(1);
    out.put_i32((values.null_count() > 0) as i32);
    out.put_u32(element.oid());
    out.put_i32(values.len() as i32);
    out.put_i32(1);
    let mut cell = BytesMut::new();
    for i in 0..values.len() {
        if values.is_null(i) {
            out.put_i32(-1);
            continue;
        }
        cell.clear();
        encode_binary(values, i, &mut cell)?;
        out.put_i32(cell.len() as i32);
        out.put_slice(&cell);
    }
    Ok(())
}

pub fn fields(schema: &Schema, format: &Format) -> Vec<FieldInfo> {
    schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            FieldInfo::new(
                f.name().clone(),
                None,
                None,
                pg_type(f.data_type()),
                format.format_for(i),
            )
        })
        .collect()
}

/// Encodes every row of a batch.
pub fn encode_batch(batch: &RecordBatch, fields: &[FieldInfo]) -> SqlResult<Vec<DataRow>> {
    let n = batch.num_rows();
    let ncols = batch.num_columns();
    let mut rows: Vec<BytesMut> = (0..n).map(|_| BytesMut::new()).collect();
    for c in 0..ncols {
        let col = batch.column(c);
        let binary = fields
            .get(c)
            .is_some_and(|f| f.format() == FieldFormat::Binary);
        let fallback = ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default())
            .map_err(|e| SqlError::internal(e.to_string()))?;
        let mut cell = BytesMut::new();
        // Logical: a NULL literal's column (type Null) has no null buffer.
        let nulls = col.logical_nulls();
        for (r, row) in rows.iter_mut().enumerate() {
            if nulls.as_ref().is_some_and(|n| n.is_null(r)) {
                row.put_i32(-1);
                continue;
            }
            cell.clear();
            if binary {
                encode_binary(col, r, &mut cell)?;
            } else {
                encode_text(col, r, &mut cell, &fallback);
            }
            row.put_i32(cell.len() as i32);
            row.put_slice(&cell);
        }
    }
    Ok(rows
        .into_iter()
        .map(|data| DataRow::new(data, ncols as i16))
        .collect())
}

const PG_EPOCH_DAYS: i32 = 10_957;
const PG_EPOCH_MICROS: i64 = 946_684_800_000_000;

fn ts_micros(col: &ArrayRef, r: usize) -> i64 {
    match col.data_type() {
        DataType::Timestamp(TimeUnit::Second, _) => {
            col.as_primitive::<TimestampSecondType>().value(r) * 1_000_000
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            col.as_primitive::<TimestampMillisecondType>().value(r) * 1_000
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            col.as_primitive::<TimestampMicrosecondType>().value(r)
        }
        DataType::Timestamp(TimeUnit::Nanosecond, _) => col
            .as_primitive::<TimestampNanosecondType>()
            .value(r)
            .div_euclid(1_000),
        _ => 0,
    }
}

/// (months, days, microseconds) of an interval or duration value.
fn interval_parts(col: &ArrayRef, r: usize) -> (i32, i32, i64) {
    match col.data_type() {
        DataType::Interval(IntervalUnit::MonthDayNano) => {
            let v = col.as_primitive::<IntervalMonthDayNanoType>().value(r);
            (v.months, v.days, v.nanoseconds / 1_000)
        }
        DataType::Interval(IntervalUnit::DayTime) => {
            let v = col.as_primitive::<IntervalDayTimeType>().value(r);
            (0, v.days, v.milliseconds as i64 * 1_000)
        }
        DataType::Interval(IntervalUnit::YearMonth) => {
            (col.as_primitive::<IntervalYearMonthType>().value(r), 0, 0)
        }
        DataType::Duration(u) => {
            let micros = match u {
                TimeUnit::Second => col.as_primitive::<DurationSecondType>().value(r) * 1_000_000,
                TimeUnit::Millisecond => {
                    col.as_primitive::<DurationMillisecondType>().value(r) * 1_000
                }
                TimeUnit::Microsecond => col.as_primitive::<DurationMicrosecondType>().value(r),
                TimeUnit::Nanosecond => {
                    col.as_primitive::<DurationNanosecondType>().value(r) / 1_000
                }
            };
            (0, 0, micros)
        }
        _ => (0, 0, 0),
    }
}

fn decimal_parts(col: &ArrayRef, r: usize) -> Option<(i128, i8)> {
    match col.data_type() {
        DataType::Decimal128(_, s) => Some((col.as_primitive::<Decimal128Type>().value(r), *s)),
        DataType::Decimal64(_, s) => {
            Some((col.as_primitive::<Decimal64Type>().value(r) as i128, *s))
        }
        DataType::Decimal32(_, s) => {
            Some((col.as_primitive::<Decimal32Type>().value(r) as i128, *s))
        }
        _ => None,
    }
}

fn encode_text(col: &ArrayRef, r: usize, out: &mut BytesMut, fallback: &ArrayFormatter) {
    use std::fmt::Write;
    let mut s = String::new();
    match col.data_type() {
        DataType::Boolean => s.push(if col.as_boolean().value(r) { 't' } else { 'f' }),
        DataType::Float32 => {
            s = format_float(col.as_primitive::<Float32Type>().value(r) as f64, true)
        }
        DataType::Float64 => s = format_float(col.as_primitive::<Float64Type>().value(r), false),
        DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..) => {
            let (v, scale) = decimal_parts(col, r).expect("decimal");
            s = format_decimal(v, scale);
        }
        DataType::Date32 => {
            let days = col.as_primitive::<Date32Type>().value(r);
            match NaiveDate::from_num_days_from_ce_opt(days + 719_163) {
                Some(d) => s = d.format("%Y-%m-%d").to_string(),
                None => s = days.to_string(),
            }
        }
        DataType::Timestamp(_, tz) => {
            s = format_timestamp(ts_micros(col, r));
            if tz.is_some() {
                s.push_str("+00");
            }
        }
        DataType::Interval(_) | DataType::Duration(_) => {
            let (m, d, us) = interval_parts(col, r);
            s = format_interval(m, d, us);
        }
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => {
            let bytes: &[u8] = match col.data_type() {
                DataType::Binary => col.as_binary::<i32>().value(r),
                DataType::LargeBinary => col.as_binary::<i64>().value(r),
                DataType::BinaryView => col.as_binary_view().value(r),
                _ => col.as_fixed_size_binary().value(r),
            };
            s.push_str("\\x");
            for b in bytes {
                let _ = write!(s, "{b:02x}");
            }
        }
        _ => match array_elements(col, r) {
            Some(values) => encode_array_text(&values, &mut s),
            None => {
                let _ = write!(s, "{}", fallback.value(r));
            }
        },
    }
    out.put_slice(s.as_bytes());
}

fn encode_binary(col: &ArrayRef, r: usize, out: &mut BytesMut) -> SqlResult<()> {
    match col.data_type() {
        DataType::Boolean => out.put_u8(col.as_boolean().value(r) as u8),
        DataType::Int8 => out.put_i16(col.as_primitive::<Int8Type>().value(r) as i16),
        DataType::UInt8 => out.put_i16(col.as_primitive::<UInt8Type>().value(r) as i16),
        DataType::Int16 => out.put_i16(col.as_primitive::<Int16Type>().value(r)),
        DataType::UInt16 => out.put_i32(col.as_primitive::<UInt16Type>().value(r) as i32),
        DataType::Int32 => out.put_i32(col.as_primitive::<Int32Type>().value(r)),
        DataType::UInt32 => out.put_i64(col.as_primitive::<UInt32Type>().value(r) as i64),
        DataType::Int64 => out.put_i64(col.as_primitive::<Int64Type>().value(r)),
        DataType::UInt64 => out.put_i64(col.as_primitive::<UInt64Type>().value(r) as i64),
        DataType::Float32 => out.put_f32(col.as_primitive::<Float32Type>().value(r)),
        DataType::Float64 => out.put_f64(col.as_primitive::<Float64Type>().value(r)),
        DataType::Date32 => out.put_i32(col.as_primitive::<Date32Type>().value(r) - PG_EPOCH_DAYS),
        DataType::Timestamp(_, _) => out.put_i64(ts_micros(col, r) - PG_EPOCH_MICROS),
        DataType::Interval(_) | DataType::Duration(_) => {
            let (m, d, us) = interval_parts(col, r);
            out.put_i64(us);
            out.put_i32(d);
            out.put_i32(m);
        }
        DataType::Decimal32(..) | DataType::Decimal64(..) | DataType::Decimal128(..) => {
            let (v, scale) = decimal_parts(col, r).expect("decimal");
            encode_numeric_binary(v, scale, out);
        }
        DataType::Binary => out.put_slice(col.as_binary::<i32>().value(r)),
        DataType::LargeBinary => out.put_slice(col.as_binary::<i64>().value(r)),
        DataType::BinaryView => out.put_slice(col.as_binary_view().value(r)),
        _ if array_elements(col, r).is_some() => {
            let values = array_elements(col, r).expect("array");
            encode_array_binary(&values, out)?;
        }
        _ => {
            // Text types and everything shown as text: the text form is the binary form.
            let fallback = ArrayFormatter::try_new(col.as_ref(), &FormatOptions::default())
                .map_err(|e| SqlError::internal(e.to_string()))?;
            encode_text(col, r, out, &fallback);
        }
    }
    Ok(())
}

/// PostgreSQL's binary numeric: digit count, weight, sign, display scale,
/// then base-10000 digits.
pub fn encode_numeric_binary(v: i128, scale: i8, out: &mut BytesMut) {
    let dscale = scale.max(0) as i16;
    // Scale the integer so that its decimal point falls on a base-10000 boundary.
    let mut mag = v.unsigned_abs();
    let mut s = scale as i32;
    if s < 0 {
        mag *= 10u128.pow((-s) as u32);
        s = 0;
    }
    let pad = (4 - s % 4) % 4;
    mag *= 10u128.pow(pad as u32);
    let frac_groups = (s + pad) / 4;
    let mut groups: Vec<i16> = Vec::new();
    while mag > 0 {
        groups.push((mag % 10_000) as i16);
        mag /= 10_000;
    }
    groups.reverse();
    // weight = index of the first group relative to the decimal point
    let weight = groups.len() as i32 - frac_groups - 1;
    // strip trailing and leading zero groups
    let mut first = 0;
    while first < groups.len() && groups[first] == 0 {
        first += 1;
    }
    let mut last = groups.len();
    while last > first && groups[last - 1] == 0 {
        last -= 1;
    }
    let digits = &groups[first..last];
    let weight = if digits.is_empty() {
        0
    } else {
        weight - first as i32
    };
    out.put_i16(digits.len() as i16);
    out.put_i16(weight as i16);
    out.put_u16(if v < 0 && !digits.is_empty() {
        0x4000
    } else {
        0
    });
    out.put_i16(dscale);
    for d in digits {
        out.put_i16(*d);
    }
}

/// PostgreSQL's shortest-exact float output (extra_float_digits = 1).
pub fn format_float(v: f64, single: bool) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    if v == 0.0 {
        return if v.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let sci = if single {
        format!("{:e}", v as f32)
    } else {
        format!("{v:e}")
    };
    let (mant, exp) = sci.split_once('e').expect("scientific format");
    let exp: i32 = exp.parse().expect("exponent");
    let neg = mant.starts_with('-');
    let digits: String = mant.chars().filter(|c| c.is_ascii_digit()).collect();
    let max_exp = if single { 6 } else { 15 };
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if exp < -4 || exp >= max_exp {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.abs()));
    } else if exp < 0 {
        out.push_str("0.");
        for _ in 0..(-exp - 1) {
            out.push('0');
        }
        out.push_str(&digits);
    } else {
        let int_len = exp as usize + 1;
        if digits.len() <= int_len {
            out.push_str(&digits);
            for _ in digits.len()..int_len {
                out.push('0');
            }
        } else {
            out.push_str(&digits[..int_len]);
            out.push('.');
            out.push_str(&digits[int_len..]);
        }
    }
    out
}

pub fn format_decimal(v: i128, scale: i8) -> String {
    if scale <= 0 {
        let mut s = v.to_string();
        for _ in 0..(-scale) {
            s.push('0');
        }
        return s;
    }
    let neg = v < 0;
    let abs = v.unsigned_abs().to_string();
    let scale = scale as usize;
    let padded = if abs.len() <= scale {
        format!("{}{}", "0".repeat(scale - abs.len() + 1), abs)
    } else {
        abs
    };
    let (int, frac) = padded.split_at(padded.len() - scale);
    format!("{}{int}.{frac}", if neg { "-" } else { "" })
}

pub fn format_timestamp(micros: i64) -> String {
    match DateTime::from_timestamp_micros(micros) {
        Some(dt) => {
            let naive = dt.naive_utc();
            let mut s = naive.format("%Y-%m-%d %H:%M:%S").to_string();
            let frac = micros.rem_euclid(1_000_000);
            if frac != 0 {
                let f = format!("{frac:06}");
                s.push('.');
                s.push_str(f.trim_end_matches('0'));
            }
            s
        }
        None => micros.to_string(),
    }
}

/// PostgreSQL's `postgres` interval style: fields with their own signs, a
/// `+` on a positive field after a negative one, plural unless exactly 1.
pub fn format_interval(months: i32, days: i32, micros: i64) -> String {
    let mut out = String::new();
    let mut neg_seen = false;
    let mut field = |out: &mut String, n: i64, unit: &str| {
        if n == 0 {
            return;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        if n > 0 && neg_seen {
            out.push('+');
        }
        neg_seen |= n < 0;
        out.push_str(&format!("{n} {unit}{}", if n == 1 { "" } else { "s" }));
    };
    field(&mut out, (months / 12) as i64, "year");
    field(&mut out, (months % 12) as i64, "mon");
    field(&mut out, days as i64, "day");
    if micros != 0 || out.is_empty() {
        if !out.is_empty() {
            out.push(' ');
        }
        let abs = micros.unsigned_abs();
        let secs = abs / 1_000_000;
        let frac = abs % 1_000_000;
        let sign = if micros < 0 {
            "-"
        } else if neg_seen {
            "+"
        } else {
            ""
        };
        out.push_str(&format!(
            "{sign}{:02}:{:02}:{:02}",
            secs / 3600,
            (secs / 60) % 60,
            secs % 60
        ));
        if frac != 0 {
            let f = format!("{frac:06}");
            out.push('.');
            out.push_str(f.trim_end_matches('0'));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_like_postgres() {
        assert_eq!(format_float(1.5, false), "1.5");
        assert_eq!(format_float(0.1, false), "0.1");
        assert_eq!(format_float(1e20, false), "1e+20");
        assert_eq!(format_float(1e14, false), "100000000000000");
        assert_eq!(format_float(1e15, false), "1e+15");
        assert_eq!(format_float(0.0001, false), "0.0001");
        assert_eq!(format_float(0.00001, false), "1e-05");
        assert_eq!(format_float(-2.0, false), "-2");
        assert_eq!(format_float(123.456, false), "123.456");
        assert_eq!(format_float(1e6, true), "1e+06");
        assert_eq!(format_float(100000.0, true), "100000");
        assert_eq!(format_float(f64::INFINITY, false), "Infinity");
        assert_eq!(format_float(0.1f32 as f64, true), "0.1");
    }

    #[test]
    fn lists_are_arrays() {
        use postgres_types::FromSql;
        use std::sync::Arc;
        let ints: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Int16Type, _, _>(vec![
            Some(vec![Some(1), None, Some(3)]),
            Some(vec![]),
        ]));
        assert_eq!(pg_type(ints.data_type()), Type::INT2_ARRAY);
        let texts: ArrayRef = {
            let mut b = ListBuilder::new(StringBuilder::new());
            b.append_value([
                Some("a b"),
                Some(""),
                Some("x\"y\\"),
                Some("null"),
                Some("ok"),
            ]);
            b.append_null();
            Arc::new(b.finish())
        };
        assert_eq!(pg_type(texts.data_type()), Type::TEXT_ARRAY);
        let batch =
            RecordBatch::try_from_iter([("i", ints.clone()), ("t", texts.clone())]).unwrap();
        let text_fields = fields(batch.schema().as_ref(), &Format::UnifiedText);
        let rows = encode_batch(&batch, &text_fields).unwrap();
        let cell = |row: &DataRow, i: usize| -> String {
            let mut data = &row.data[..];
            let mut out = String::new();
            for _ in 0..=i {
                let len = i32::from_be_bytes(data[..4].try_into().unwrap()) as usize;
                out = String::from_utf8(data[4..4 + len].to_vec()).unwrap();
                data = &data[4 + len..];
            }
            out
        };
        assert_eq!(cell(&rows[0], 0), "{1,NULL,3}");
        let nulls =
            RecordBatch::try_from_iter([("n", Arc::new(NullArray::new(1)) as ArrayRef)]).unwrap();
        let row = &encode_batch(
            &nulls,
            &fields(nulls.schema().as_ref(), &Format::UnifiedText),
        )
        .unwrap()[0];
        assert_eq!(
            &row.data[..],
            &(-1i32).to_be_bytes(),
            "a NULL literal is NULL"
        );
        assert_eq!(cell(&rows[1], 0), "{}");
        assert_eq!(cell(&rows[0], 1), r#"{"a b","","x\"y\\","null",ok}"#);
        // Binary: what a client library reads back.
        let mut bin = BytesMut::new();
        encode_binary(&ints, 0, &mut bin).unwrap();
        let back = Vec::<Option<i16>>::from_sql(&Type::INT2_ARRAY, &bin).unwrap();
        assert_eq!(back, vec![Some(1), None, Some(3)]);
        let mut bin = BytesMut::new();
        encode_binary(&texts, 0, &mut bin).unwrap();
        let back = Vec::<Option<String>>::from_sql(&Type::TEXT_ARRAY, &bin).unwrap();
        assert_eq!(back[2].as_deref(), Some("x\"y\\"));
        let mut bin = BytesMut::new();
        encode_binary(&ints, 1, &mut bin).unwrap();
        assert!(Vec::<i16>::from_sql(&Type::INT2_ARRAY, &bin)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn numeric_binary_matches_postgres() {
        use postgres_types::FromSql;
        for (v, s) in [
            (150i128, 2i8),
            (-5, 2),
            (123456789, 0),
            (1, 4),
            (-100000, 3),
            (10000, 0),
            (12345678, 2),
        ] {
            let mut mine = BytesMut::new();
            encode_numeric_binary(v, s, &mut mine);
            let back = rust_decimal::Decimal::from_sql(&Type::NUMERIC, &mine).unwrap();
            assert_eq!(
                back,
                rust_decimal::Decimal::from_i128_with_scale(v, s as u32),
                "{v} scale {s}"
            );
            assert_eq!(back.scale(), s as u32, "display scale of {v}");
        }
        let mut zero = BytesMut::new();
        encode_numeric_binary(0, 2, &mut zero);
        assert_eq!(&zero[..], &[0, 0, 0, 0, 0, 0, 0, 2]);
        // More than 28 digits.
        let mut big = BytesMut::new();
        encode_numeric_binary(12345678901234567890123456789012345, 5, &mut big);
        assert_eq!(i16::from_be_bytes([big[0], big[1]]), 10);
    }

    #[test]
    fn decimals_intervals_timestamps() {
        assert_eq!(format_decimal(150, 2), "1.50");
        assert_eq!(format_decimal(-5, 2), "-0.05");
        assert_eq!(format_decimal(7, 0), "7");
        assert_eq!(
            format_interval(14, 3, 3_600_000_000 + 500_000),
            "1 year 2 mons 3 days 01:00:00.5"
        );
        assert_eq!(format_interval(0, 1, 0), "1 day");
        assert_eq!(format_interval(0, 0, 0), "00:00:00");
        assert_eq!(format_interval(0, -2, -60_000_000), "-2 days -00:01:00");
        assert_eq!(format_interval(0, -1, 0), "-1 days");
        assert_eq!(format_interval(0, -1, 3_600_000_000), "-1 days +01:00:00");
        assert_eq!(format_interval(-13, 0, 0), "-1 years -1 mons");
        assert_eq!(format_timestamp(0), "1970-01-01 00:00:00");
        assert_eq!(format_timestamp(1_500_000), "1970-01-01 00:00:01.5");
    }
}
