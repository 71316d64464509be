//! `DATE_FORMAT(ts, pattern)`: Flink's formatting of a timestamp with a Java
//! `SimpleDateFormat` pattern, e.g. `DATE_FORMAT(ts, 'yyyy-MM-dd')` or
//! `'HH:mm'`. Text and dates are cast to timestamps first; a timestamp with
//! a time zone is formatted in that zone.
//!
//! Pattern letters (a run of one letter is one field; text in single
//! quotes is literal, `''` is a quote; other characters are literal):
//! `y` year (`yy`: two digits), `M` month (`MMM` Jan, `MMMM` January),
//! `d` day of month, `D` day of year, `H` hour 0–23, `h` hour 1–12,
//! `m` minute, `s` second, `S` millisecond, `a` AM/PM, `E` weekday
//! (`EEEE`: full name). A numeric field is zero-padded to the length of
//! its run (`SSS` = 3-digit milliseconds). Any other letter is refused.
//!
//! The pattern is compiled once per distinct value (a literal: once per
//! query, and checked when the query is planned), and the fields are
//! written straight into the output buffer.

use std::collections::HashMap;
use std::fmt::Write;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Datelike, NaiveDateTime, Offset, TimeZone, Timelike};
use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, FieldRef, TimeUnit, TimestampMicrosecondType};
use datafusion::common::types::logical_string;
use datafusion::error::Result;
use datafusion::logical_expr::{
    Coercion, ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, TypeSignatureClass, Volatility,
};

use super::{invalid_argument, invalid_value, literal_text, result, Text};

const NAME: &str = "date_format";

pub fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(DateFormat {
        signature: Signature::coercible(
            vec![
                super::hour::timestamp_arg(),
                Coercion::new_exact(TypeSignatureClass::Native(logical_string())),
            ],
            Volatility::Immutable,
        ),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct DateFormat {
    signature: Signature,
}

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Item {
    Literal(String),
    /// A numeric field, zero-padded to `width` digits.
    Number(DateField, usize),
    /// The year's last two digits (`yy`).
    Year2,
    MonthName {
        full: bool,
    },
    WeekdayName {
        full: bool,
    },
    AmPm,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DateField {
    Year,
    Month,
    Day,
    DayOfYear,
    Hour,
    Hour12,
    Minute,
    Second,
    Milli,
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Compiles a Java `SimpleDateFormat` pattern; the error names the problem.
fn compile(pattern: &str) -> std::result::Result<Vec<Item>, String> {
    let chars: Vec<char> = pattern.chars().collect();
    let mut items = Vec::new();
    let mut literal = String::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c == '\'' {
            if chars.get(i + 1) == Some(&'\'') {
                literal.push('\'');
                i += 2;
                continue;
            }
            // Quoted text up to the closing quote ('' inside is a quote).
            i += 1;
            loop {
                match chars.get(i) {
                    None => return Err(format!("unterminated quote in pattern '{pattern}'")),
                    Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                        literal.push('\'');
                        i += 2;
                    }
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some(other) => {
                        literal.push(*other);
                        i += 1;
                    }
                }
            }
            continue;
        }
        if !c.is_ascii_alphabetic() {
            literal.push(c);
            i += 1;
            continue;
        }
        let run = chars[i..].iter().take_while(|x| **x == c).count();
        i += run;
        let item = match c {
            'y' if run == 2 => Item::Year2,
            'y' => Item::Number(DateField::Year, run),
            'M' if run >= 4 => Item::MonthName { full: true },
            'M' if run == 3 => Item::MonthName { full: false },
            'M' => Item::Number(DateField::Month, run),
            'd' => Item::Number(DateField::Day, run),
            'D' => Item::Number(DateField::DayOfYear, run),
            'H' => Item::Number(DateField::Hour, run),
            'h' => Item::Number(DateField::Hour12, run),
            'm' => Item::Number(DateField::Minute, run),
            's' => Item::Number(DateField::Second, run),
            'S' => Item::Number(DateField::Milli, run),
            'a' => Item::AmPm,
            'E' => Item::WeekdayName { full: run >= 4 },
            other => {
                return Err(format!(
                    "pattern letter '{other}' in '{pattern}' is not supported \
                     (supported: y M d D H h m s S a E)"
                ))
            }
        };
        if !literal.is_empty() {
            items.push(Item::Literal(std::mem::take(&mut literal)));
        }
        items.push(item);
    }
    if !literal.is_empty() {
        items.push(Item::Literal(literal));
    }
    Ok(items)
}

/// Appends `v` zero-padded to `width` digits.
fn push_number(out: &mut String, v: i64, width: usize) {
    if (0..10_000).contains(&v) && width <= 4 {
        let digits = if v >= 1000 {
            4
        } else if v >= 100 {
            3
        } else if v >= 10 {
            2
        } else {
            1
        };
        for _ in digits..width {
            out.push('0');
        }
        let mut buf = [0u8; 4];
        let mut x = v;
        for d in (0..digits).rev() {
            buf[d] = b'0' + (x % 10) as u8;
            x /= 10;
        }
        out.push_str(std::str::from_utf8(&buf[..digits]).expect("digits"));
    } else {
        let _ = write!(out, "{v:0width$}");
    }
}

/// The span of time within which a pattern's text cannot change, in
/// microseconds: the unit of its finest field (a literal-only pattern:
/// never changes, so any span will do).
fn granularity(items: &[Item]) -> i64 {
    const DAY: i64 = 86_400_000_000;
    items
        .iter()
        .map(|item| match item {
            Item::Literal(_) => DAY,
            Item::Number(field, _) => match field {
                DateField::Year | DateField::Month | DateField::Day | DateField::DayOfYear => DAY,
                DateField::Hour | DateField::Hour12 => 3_600_000_000,
                DateField::Minute => 60_000_000,
                DateField::Second => 1_000_000,
                DateField::Milli => 1_000,
            },
            Item::Year2 | Item::MonthName { .. } | Item::WeekdayName { .. } => DAY,
            Item::AmPm => 3_600_000_000,
        })
        .min()
        .unwrap_or(DAY)
}

fn format_into(out: &mut String, items: &[Item], t: &NaiveDateTime) {
    for item in items {
        match item {
            Item::Literal(s) => out.push_str(s),
            Item::Number(field, width) => {
                let v = match field {
                    DateField::Year => t.year() as i64,
                    DateField::Month => t.month() as i64,
                    DateField::Day => t.day() as i64,
                    DateField::DayOfYear => t.ordinal() as i64,
                    DateField::Hour => t.hour() as i64,
                    DateField::Hour12 => match t.hour() % 12 {
                        0 => 12,
                        h => h as i64,
                    },
                    DateField::Minute => t.minute() as i64,
                    DateField::Second => t.second() as i64,
                    DateField::Milli => (t.nanosecond() / 1_000_000) as i64,
                };
                push_number(out, v, *width);
            }
            Item::Year2 => push_number(out, (t.year() as i64).rem_euclid(100), 2),
            Item::MonthName { full } => {
                let name = MONTHS[t.month0() as usize];
                out.push_str(if *full { name } else { &name[..3] });
            }
            Item::WeekdayName { full } => {
                let name = WEEKDAYS[t.weekday().num_days_from_monday() as usize];
                out.push_str(if *full { name } else { &name[..3] });
            }
            Item::AmPm => out.push_str(if t.hour() < 12 { "AM" } else { "PM" }),
        }
    }
}

impl ScalarUDFImpl for DateFormat {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        if let Some(p) = literal_text(args.scalar_arguments, 1)? {
            compile(&p).map_err(|e| invalid_argument(NAME, e))?;
        }
        Ok(Arc::new(Field::new(NAME, DataType::Utf8, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let ts = args.args[0].to_array(n)?;
        let zone = match ts.data_type() {
            DataType::Timestamp(_, Some(tz)) => Some(Tz::from_str(tz)?),
            _ => None,
        };
        // Microseconds since the epoch, wall clock of the zone if any.
        let micros: ArrayRef = cast(&ts, &DataType::Timestamp(TimeUnit::Microsecond, None))?;
        let micros = micros.as_primitive::<TimestampMicrosecondType>();
        let pattern = Text::new(&args.args[1])?;
        // The usual case, a literal pattern: compiled once.
        let fixed = match &pattern {
            Text::Const(Some(p)) => Some(compile(p).map_err(|e| invalid_value(NAME, e))?),
            _ => None,
        };
        // Otherwise compiled once per distinct pattern.
        let mut compiled: HashMap<String, Vec<Item>> = HashMap::new();
        let mut out = StringBuilder::with_capacity(n, n * 16);
        let mut buf = String::with_capacity(32);
        // A literal pattern over wall-clock times (no zone): the text only
        // changes between spans of its finest field, and timestamps mostly
        // come in order, so the last span's text is kept and reused.
        let span = fixed
            .as_ref()
            .filter(|_| zone.is_none())
            .map(|items| granularity(items));
        let mut last_span: Option<i64> = None;
        for i in 0..n {
            let (Some(p), true) = (pattern.get(i), micros.is_valid(i)) else {
                out.append_null();
                continue;
            };
            if fixed.is_none() && !compiled.contains_key(p) {
                let items = compile(p).map_err(|e| invalid_value(NAME, e))?;
                compiled.insert(p.to_string(), items);
            }
            let items = match &fixed {
                Some(items) => items,
                None => &compiled[p],
            };
            if let Some(span) = span {
                let this = micros.value(i).div_euclid(span);
                if last_span == Some(this) {
                    out.append_value(&buf);
                    continue;
                }
                last_span = Some(this);
            }
            let Some(utc) = DateTime::from_timestamp_micros(micros.value(i)) else {
                return Err(invalid_value(NAME, "timestamp out of range"));
            };
            let t = match &zone {
                Some(z) => {
                    let offset = z.offset_from_utc_datetime(&utc.naive_utc()).fix();
                    utc.naive_utc() + offset
                }
                None => utc.naive_utc(),
            };
            buf.clear();
            format_into(&mut buf, items, &t);
            out.append_value(&buf);
        }
        result(&args.args, Arc::new(out.finish()))
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::super::test_util::{eval, eval1};
    use super::*;

    const TS: &str = "TIMESTAMP '2025-03-04 05:06:07.089'";
    /// 2025-01-01 23:30 UTC, in Berlin's zone (UTC+1 in winter).
    pub const BERLIN: &str = "arrow_cast(TIMESTAMP '2025-01-01 23:30:00' AT TIME ZONE 'UTC', \
         'Timestamp(Second, Some(\"Europe/Berlin\"))')";

    fn fmt(pattern: &str) -> String {
        let quoted = pattern.replace('\'', "''");
        eval1(&format!("date_format({TS}, '{quoted}')")).unwrap()
    }

    #[test]
    fn java_patterns() {
        assert_eq!(fmt("yyyy-MM-dd"), "2025-03-04");
        assert_eq!(fmt("HH:mm"), "05:06");
        assert_eq!(fmt("yyyy-MM-dd HH:mm:ss.SSS"), "2025-03-04 05:06:07.089");
        assert_eq!(fmt("yy/M/d H:m:s S"), "25/3/4 5:6:7 89");
        assert_eq!(
            fmt("D EEE EEEE MMM MMMM hh a"),
            "63 Tue Tuesday Mar March 05 AM"
        );
        assert_eq!(fmt("yyyy''MM'T'dd'o''clock'"), "2025'03T04o'clock");
        assert_eq!(fmt("% [-] :"), "% [-] :");
        assert_eq!(fmt(""), "");
        assert_eq!(
            eval1("date_format(TIMESTAMP '2025-01-01 12:00:00', 'h a')").unwrap(),
            "12 PM"
        );
        assert_eq!(
            eval1("date_format(TIMESTAMP '1905-01-01 00:00:00', 'yyyy yy y')").unwrap(),
            "1905 05 1905"
        );
    }

    #[test]
    fn text_dates_zones_and_nulls() {
        assert_eq!(
            eval1("date_format('2025-01-02 03:04:05', 'yyyyMMddHHmmss')").unwrap(),
            "20250102030405"
        );
        assert_eq!(
            eval1("date_format(DATE '2025-01-02', 'yyyy-MM-dd HH')").unwrap(),
            "2025-01-02 00"
        );
        assert_eq!(
            eval1("date_format(CAST(NULL AS timestamp), 'yyyy')").unwrap(),
            "NULL"
        );
        assert_eq!(eval1(&format!("date_format({TS}, NULL)")).unwrap(), "NULL");
        assert_eq!(
            eval(
                "date_format(a, b)",
                "(TIMESTAMP '2025-01-01 00:00:00', 'yyyy'), (NULL, 'yyyy'), \
                 (TIMESTAMP '2025-12-31 23:59:59', 'MM-dd'), (TIMESTAMP '2025-12-31 23:59:59', 'yyyy')"
            )
            .unwrap(),
            ["2025", "NULL", "12-31", "2025"]
        );
        assert_eq!(
            eval1(&format!("date_format({BERLIN}, 'yyyy-MM-dd HH:mm')")).unwrap(),
            "2025-01-02 00:30"
        );
    }

    /// A literal pattern reuses the text of the previous row's span; the
    /// same rows with the pattern as a column (compiled per row, no reuse)
    /// are the oracle. Times repeat, go back, cross midnight and 1970.
    #[test]
    fn reused_text_follows_the_rows() {
        let times = [
            "2025-01-01 23:59:59.999",
            "2025-01-01 23:59:59.999",
            "2025-01-02 00:00:00",
            "2025-01-01 23:00:00",
            "2025-01-01 23:00:00.5",
            "2025-01-01 23:59:00.5",
            "2025-01-01 23:59:01.5",
            "2025-01-02 00:00:00",
            "1969-12-31 23:59:59.9",
            "1970-01-01 00:00:00",
            "1969-12-31 00:00:00",
        ];
        for pattern in ["yyyy-MM-dd", "HH:mm", "ss.SSS", "hh a", "'day' D"] {
            let rows = |with_pattern: bool| {
                times
                    .iter()
                    .map(|t| match with_pattern {
                        true => format!("(TIMESTAMP '{t}', '{}')", pattern.replace('\'', "''")),
                        false => format!("(TIMESTAMP '{t}')"),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let literal = format!("date_format(a, '{}')", pattern.replace('\'', "''"));
            let reused = eval(&literal, &rows(false)).unwrap();
            let per_row = eval("date_format(a, b)", &rows(true)).unwrap();
            assert_eq!(reused, per_row, "{pattern}");
            assert_eq!(reused.len(), times.len());
        }
    }

    #[test]
    fn bad_patterns_are_refused() {
        for p in ["yyyy-MM-dd Q", "'open", "XXX", "zzz"] {
            let quoted = p.replace('\'', "''");
            let err = eval1(&format!("date_format({TS}, '{quoted}')")).unwrap_err();
            assert!(
                err.contains("invalid argument for date_format"),
                "{p}: {err}"
            );
        }
        let err = eval("date_format(a, b)", &format!("({TS}, 'yyyy'), ({TS}, 'Q')")).unwrap_err();
        assert!(err.contains("pattern letter 'Q'"), "{err}");
        assert!(compile("yyyy").is_ok());
    }
}
