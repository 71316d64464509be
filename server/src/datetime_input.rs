//! PostgreSQL's text input of `timestamp`, `timestamptz` and `date`.
//!
//! Arrow reads only `YYYY-MM-DD[( |T)HH:MM:SS[.f]][zone]`; PostgreSQL
//! reads much more, and scripts written for it use it: minutes without
//! seconds (`2020-04-15 12:02`), one-digit fields (`2020-4-5 1:2:3`),
//! `T`, AM/PM, month names (`April 15, 2020`, `15-Apr-2020`), `M/D/Y`
//! (DateStyle MDY, PostgreSQL's default), run-together digits
//! (`20200415 120203`), zones as offsets (`+05`, `-08:00`, `+0530`),
//! names (`Europe/Paris`) or common abbreviations (`UTC`, `PST`, ...),
//! `BC`, and the words `epoch`, `now`, `today`, `tomorrow`, `yesterday`.
//! [`parse`] reads these into a date-time; the literal rewriting
//! (`naming.rs`) and the casts of text into table columns (`copy.rs`) use
//! it. Errors are PostgreSQL's: 22007 for text that is not a date-time,
//! 22008 for a field out of range, 22023 for an unknown time zone.
//!
//! Sessions are in UTC (`SET TimeZone` accepts nothing else), so a
//! `timestamptz` without a zone is read as UTC. As in PostgreSQL, a zone
//! written in a `timestamp` or `date` value is checked and then ignored.
//! `infinity` is refused (0A000): Arrow timestamps have no infinite value.

use std::sync::Arc;
use weir_executor::SqlState;

use chrono::{Duration, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};
use datafusion::arrow::array::timezone::Tz;
use datafusion::arrow::array::{
    ArrayRef, Date32Array, TimestampMicrosecondArray, TimestampMillisecondArray,
    TimestampNanosecondArray, TimestampSecondArray,
};
use datafusion::arrow::datatypes::{DataType, TimeUnit};

use crate::error::{SqlError, SqlResult};

/// The type a text is read as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DateTimeType {
    Timestamp,
    TimestampTz,
    Date,
}

impl DateTimeType {
    /// PostgreSQL's name of the type, as its error messages say it.
    pub fn sql_name(self) -> &'static str {
        match self {
            DateTimeType::Timestamp => "timestamp",
            DateTimeType::TimestampTz => "timestamp with time zone",
            DateTimeType::Date => "date",
        }
    }
}

/// Reads `text` as PostgreSQL reads a value of type `ty`: the local
/// date-time written for `timestamp`, the UTC instant for `timestamptz`,
/// midnight of the date for `date`. `now` is the current UTC time (for
/// `now`, `today`, ...).
pub fn parse(text: &str, ty: DateTimeType, now: NaiveDateTime) -> SqlResult<NaiveDateTime> {
    let syntax = || {
        SqlError::new(
            SqlState::INVALID_DATETIME_FORMAT,
            format!(
                "invalid input syntax for type {}: \"{text}\"",
                ty.sql_name()
            ),
        )
    };
    let range = || {
        SqlError::new(
            SqlState::DATETIME_FIELD_OVERFLOW,
            format!("date/time field value out of range: \"{text}\""),
        )
    };
    let tokens = tokenize(text).ok_or_else(syntax)?;
    let fields = Fields::read(&tokens, text, ty).map_err(|e| match e {
        FieldError::Syntax => syntax(),
        FieldError::Range => range(),
        FieldError::Other(e) => e,
    })?;
    let (local, zone) = match &fields.special {
        Some(Special::Epoch) => (chrono::DateTime::UNIX_EPOCH.naive_utc(), None),
        Some(Special::Now) => (now, Some(Zone::Fixed(0))),
        Some(Special::Day(offset)) => {
            let day = now.date() + Duration::days(*offset);
            (fields.time_on(day).map_err(|_| range())?, fields.zone)
        }
        None => {
            let date = fields.date().ok_or_else(syntax)?.ok_or_else(range)?;
            (fields.time_on(date).map_err(|_| range())?, fields.zone)
        }
    };
    match ty {
        DateTimeType::Timestamp => Ok(local),
        DateTimeType::Date => Ok(local.date().and_time(NaiveTime::MIN)),
        DateTimeType::TimestampTz => match zone {
            None | Some(Zone::Fixed(0)) => Ok(local),
            Some(Zone::Fixed(secs)) => Ok(local - Duration::seconds(secs as i64)),
            Some(Zone::Named(tz)) => {
                let instant = match tz.from_local_datetime(&local) {
                    chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => t,
                    // A local time skipped by a clock change: read with the
                    // offset in force before it, as PostgreSQL does.
                    chrono::LocalResult::None => {
                        let before = tz.offset_from_utc_datetime(&(local - Duration::hours(3)));
                        tz.from_utc_datetime(
                            &(local
                                - Duration::seconds(
                                    chrono::Offset::fix(&before).local_minus_utc() as i64,
                                )),
                        )
                    }
                };
                Ok(instant.naive_utc())
            }
        },
    }
}

/// The current time for [`parse`].
pub fn now_utc() -> NaiveDateTime {
    Utc::now().naive_utc()
}

/// Texts read as values of a date or timestamp column of type `target`
/// (`None` if `target` is neither), NULL staying NULL; an error names the
/// row that failed.
pub fn parse_array<'a>(
    values: impl Iterator<Item = Option<&'a str>>,
    target: &DataType,
) -> Option<Result<ArrayRef, (usize, SqlError)>> {
    let ty = match target {
        DataType::Date32 => DateTimeType::Date,
        DataType::Timestamp(_, None) => DateTimeType::Timestamp,
        DataType::Timestamp(_, Some(_)) => DateTimeType::TimestampTz,
        _ => return None,
    };
    let now = now_utc();
    let epoch = chrono::DateTime::UNIX_EPOCH.naive_utc();
    // Days for a date, ticks of the unit for a timestamp.
    let count = |t: NaiveDateTime| -> Option<i64> {
        let utc = t.and_utc();
        match target {
            DataType::Date32 => {
                Some((t.date() - epoch.date()).num_days()).filter(|d| i32::try_from(*d).is_ok())
            }
            DataType::Timestamp(TimeUnit::Second, _) => Some(utc.timestamp()),
            DataType::Timestamp(TimeUnit::Millisecond, _) => Some(utc.timestamp_millis()),
            DataType::Timestamp(TimeUnit::Microsecond, _) => Some(utc.timestamp_micros()),
            _ => utc.timestamp_nanos_opt(),
        }
    };
    let mut counts = Vec::new();
    for (row, v) in values.enumerate() {
        let Some(text) = v else {
            counts.push(None);
            continue;
        };
        let t = match parse(text, ty, now) {
            Ok(t) => t,
            Err(e) => return Some(Err((row, e))),
        };
        match count(t) {
            Some(c) => counts.push(Some(c)),
            None => {
                let e = SqlError::new(
                    SqlState::DATETIME_FIELD_OVERFLOW,
                    format!("{} out of range: \"{text}\"", ty.sql_name()),
                );
                return Some(Err((row, e)));
            }
        }
    }
    let tz = match target {
        DataType::Timestamp(_, tz) => tz.clone(),
        _ => None,
    };
    Some(Ok(match target {
        DataType::Date32 => Arc::new(
            counts
                .into_iter()
                .map(|c| c.map(|d| d as i32))
                .collect::<Date32Array>(),
        ),
        DataType::Timestamp(TimeUnit::Second, _) => {
            Arc::new(TimestampSecondArray::from(counts).with_timezone_opt(tz))
        }
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            Arc::new(TimestampMillisecondArray::from(counts).with_timezone_opt(tz))
        }
        DataType::Timestamp(TimeUnit::Microsecond, _) => {
            Arc::new(TimestampMicrosecondArray::from(counts).with_timezone_opt(tz))
        }
        _ => Arc::new(TimestampNanosecondArray::from(counts).with_timezone_opt(tz)),
    }))
}

/// One field of the input, as PostgreSQL's `ParseDateTime` splits it.
#[derive(Debug, PartialEq)]
enum Token<'a> {
    /// Digits, maybe with a fraction (`120203.5`).
    Number(&'a str),
    /// Parts joined by one of `-`, `/`, `.` (`2020-04-15`, `15-Apr-2020`).
    Date(Vec<&'a str>),
    /// `h:m[:s[.f]]`.
    Time(&'a str),
    /// A word (lowercased later): month, day, AM/PM, zone, special.
    Word(&'a str),
    /// A signed zone offset (`+05`, `-08:00`, `+0530`).
    Offset(i8, &'a str),
}

fn tokenize(text: &str) -> Option<Vec<Token<'_>>> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let take = |i: &mut usize, f: &dyn Fn(u8) -> bool| {
        let start = *i;
        while *i < b.len() && f(b[*i]) {
            *i += 1;
        }
        &text[start..*i]
    };
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() || c == b',' {
            i += 1;
        } else if c.is_ascii_digit() {
            let start = i;
            take(&mut i, &|c| c.is_ascii_digit());
            match b.get(i) {
                Some(b':') => {
                    take(&mut i, &|c| c.is_ascii_digit() || c == b':' || c == b'.');
                    out.push(Token::Time(&text[start..i]));
                }
                Some(&sep @ (b'-' | b'/' | b'.')) => {
                    // `a.b` alone is a number with a fraction; a date
                    // needs two separators.
                    let mut parts = vec![&text[start..i]];
                    let mut j = i;
                    while b.get(j) == Some(&sep) {
                        // A part is digits or letters (`15-Apr-2020`), so
                        // `2020-04-15T12:02` ends the date at `T`.
                        let part_start = j + 1;
                        let digits = b.get(part_start).is_some_and(u8::is_ascii_digit);
                        let mut k = part_start;
                        while k < b.len()
                            && if digits {
                                b[k].is_ascii_digit()
                            } else {
                                b[k].is_ascii_alphabetic()
                            }
                        {
                            k += 1;
                        }
                        if k == part_start {
                            break;
                        }
                        parts.push(&text[part_start..k]);
                        j = k;
                    }
                    if sep == b'.'
                        && parts.len() == 2
                        && parts[1].bytes().all(|c| c.is_ascii_digit())
                    {
                        i = j;
                        out.push(Token::Number(&text[start..i]));
                    } else if parts.len() >= 2 {
                        i = j;
                        out.push(Token::Date(parts));
                    } else {
                        return None;
                    }
                }
                _ => out.push(Token::Number(&text[start..i])),
            }
        } else if c.is_ascii_alphabetic() {
            let start = i;
            take(&mut i, &|c| c.is_ascii_alphabetic());
            // `T` before a time (`2020-04-15T12:02`).
            if i - start == 1
                && (c == b'T' || c == b't')
                && b.get(i).is_some_and(u8::is_ascii_digit)
            {
                out.push(Token::Word("t"));
                continue;
            }
            // Zone names: `Europe/Paris`, `America/Argentina/Buenos_Aires`, `Etc/GMT+3`.
            if b.get(i) == Some(&b'/') || b.get(i) == Some(&b'_') {
                take(&mut i, &|c| {
                    c.is_ascii_alphanumeric() || matches!(c, b'/' | b'_' | b'+' | b'-')
                });
            }
            out.push(Token::Word(&text[start..i]));
        } else if c == b'+' || c == b'-' {
            let sign = if c == b'-' { -1 } else { 1 };
            i += 1;
            match b.get(i) {
                Some(d) if d.is_ascii_digit() => {
                    let s = take(&mut i, &|c| c.is_ascii_digit() || c == b':');
                    out.push(Token::Offset(sign, s));
                }
                Some(d) if d.is_ascii_alphabetic() => {
                    let start = i - 1;
                    take(&mut i, &|c| c.is_ascii_alphabetic());
                    out.push(Token::Word(&text[start..i]));
                }
                _ => return None,
            }
        } else {
            return None;
        }
    }
    Some(out)
}

enum Special {
    Epoch,
    Now,
    /// today (0), tomorrow (1), yesterday (-1).
    Day(i64),
}

enum Zone {
    /// Seconds east of UTC.
    Fixed(i32),
    Named(Tz),
}

enum FieldError {
    Syntax,
    Range,
    Other(SqlError),
}

#[derive(Default)]
struct Fields {
    year: Option<(i64, usize)>,
    month: Option<u32>,
    day: Option<u32>,
    /// Hour, minute, second, microseconds (maybe 1_000_000 after rounding).
    time: Option<(u32, u32, u32, u32)>,
    ampm: Option<bool>,
    bc: bool,
    zone: Option<Zone>,
    special: Option<Special>,
}

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const FULL_MONTHS: [&str; 12] = [
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];
const FULL_DAYS: [&str; 7] = [
    "sunday",
    "monday",
    "tuesday",
    "wednesday",
    "thursday",
    "friday",
    "saturday",
];

/// Zone abbreviations of PostgreSQL's default set that scripts commonly
/// use, in hours east of UTC (PostgreSQL's `Default` table has more).
const ZONE_ABBREVIATIONS: [(&str, i32); 22] = [
    ("utc", 0),
    ("gmt", 0),
    ("ut", 0),
    ("z", 0),
    ("zulu", 0),
    ("est", -5),
    ("edt", -4),
    ("cst", -6),
    ("cdt", -5),
    ("mst", -7),
    ("mdt", -6),
    ("pst", -8),
    ("pdt", -7),
    ("akst", -9),
    ("hst", -10),
    ("wet", 0),
    ("west", 1),
    ("cet", 1),
    ("cest", 2),
    ("eet", 2),
    ("eest", 3),
    ("jst", 9),
];

fn month_number(word: &str) -> Option<u32> {
    let w = word.to_ascii_lowercase();
    let w = if w == "sept" { "sep".to_string() } else { w };
    MONTHS
        .iter()
        .position(|m| *m == w)
        .or_else(|| FULL_MONTHS.iter().position(|m| *m == w))
        .map(|i| i as u32 + 1)
}

fn is_day_name(word: &str) -> bool {
    let w = word.to_ascii_lowercase();
    DAYS.contains(&w.as_str())
        || FULL_DAYS.contains(&w.as_str())
        || matches!(w.as_str(), "tues" | "wednes" | "thur" | "thurs")
}

/// Digits as a number, with its digit count (for two-digit years).
fn number(s: &str) -> Result<(i64, usize), FieldError> {
    if s.is_empty() || s.len() > 9 || !s.bytes().all(|c| c.is_ascii_digit()) {
        return Err(FieldError::Syntax);
    }
    s.parse()
        .map(|n| (n, s.len()))
        .map_err(|_| FieldError::Syntax)
}

/// Fraction digits (after the point) as microseconds, rounded half up to
/// the microsecond as PostgreSQL does (1_000_000 when it carries).
fn micros(frac: &str) -> Result<u32, FieldError> {
    if frac.is_empty() {
        return Ok(0);
    }
    if !frac.bytes().all(|c| c.is_ascii_digit()) {
        return Err(FieldError::Syntax);
    }
    let mut digits: Vec<u32> = frac.bytes().map(|c| (c - b'0') as u32).collect();
    digits.resize(digits.len().max(7), 0);
    let mut us = digits[..6].iter().fold(0, |a, d| a * 10 + d);
    if digits[6] >= 5 {
        us += 1;
    }
    Ok(us)
}

impl Fields {
    fn read(tokens: &[Token<'_>], text: &str, ty: DateTimeType) -> Result<Fields, FieldError> {
        let mut f = Fields::default();
        let mut after_t = false;
        for (i, token) in tokens.iter().enumerate() {
            let was_after_t = std::mem::take(&mut after_t);
            match token {
                Token::Date(parts) => {
                    if f.year.is_some() || f.month.is_some() || f.day.is_some() || f.time.is_some()
                    {
                        return Err(FieldError::Syntax);
                    }
                    f.read_date(parts)?;
                }
                Token::Time(t) => {
                    if f.time.is_some() {
                        return Err(FieldError::Syntax);
                    }
                    f.time = Some(read_time(t)?);
                }
                Token::Number(n) => f.read_number(n, was_after_t)?,
                Token::Offset(sign, o) => {
                    if f.time.is_none() && f.year.is_none() || f.zone.is_some() {
                        return Err(FieldError::Syntax);
                    }
                    f.zone = Some(Zone::Fixed(read_offset(*sign, o)?));
                }
                Token::Word(w) => {
                    let lower = w.to_ascii_lowercase();
                    match lower.as_str() {
                        "t" => after_t = true,
                        "am" | "pm" if f.ampm.is_none() => f.ampm = Some(lower == "pm"),
                        "bc" if !f.bc => f.bc = true,
                        "ad" => {}
                        "epoch" | "now" | "today" | "tomorrow" | "yesterday" => {
                            if f.special.is_some() {
                                return Err(FieldError::Syntax);
                            }
                            f.special = Some(match lower.as_str() {
                                "epoch" => Special::Epoch,
                                "now" => Special::Now,
                                "today" => Special::Day(0),
                                "tomorrow" => Special::Day(1),
                                _ => Special::Day(-1),
                            });
                        }
                        "infinity" | "+infinity" | "-infinity" => {
                            return Err(FieldError::Other(
                                SqlError::unsupported(format!(
                                    "{} value \"{}\" is not supported",
                                    ty.sql_name(),
                                    text.trim()
                                ))
                                .with_detail(
                                    "Weir stores date-times as 64-bit counts, which have no infinite values.",
                                ),
                            ))
                        }
                        _ if f.month.is_none() && month_number(&lower).is_some() => {
                            f.month = month_number(&lower);
                        }
                        _ if is_day_name(&lower) => {}
                        _ => {
                            if f.zone.is_some() || i == 0 {
                                return Err(FieldError::Syntax);
                            }
                            f.zone = Some(read_zone_name(w)?);
                        }
                    }
                }
            }
        }
        if after_t {
            return Err(FieldError::Syntax);
        }
        if let Some(special) = &f.special {
            let dated = f.year.is_some() || f.month.is_some() || f.day.is_some();
            let timed = f.time.is_some() || f.ampm.is_some() || f.bc;
            match special {
                Special::Day(_) if !dated => {}
                _ if !dated && !timed && f.zone.is_none() => {}
                _ => return Err(FieldError::Syntax),
            }
        }
        Ok(f)
    }

    /// `2020-04-15`, `04/15/2020`, `15-Apr-2020`, `Apr-15-2020`, `2020-Apr-15`.
    fn read_date(&mut self, parts: &[&str]) -> Result<(), FieldError> {
        if parts.len() != 3 {
            return Err(FieldError::Syntax);
        }
        let alpha: Vec<usize> = (0..3)
            .filter(|&i| parts[i].bytes().any(|c| c.is_ascii_alphabetic()))
            .collect();
        match alpha.as_slice() {
            [] => {
                if parts[0].len() >= 3 {
                    self.year = Some(number(parts[0])?);
                    self.month = Some(number(parts[1])?.0 as u32);
                    self.day = Some(number(parts[2])?.0 as u32);
                } else {
                    // DateStyle MDY, PostgreSQL's default.
                    self.month = Some(number(parts[0])?.0 as u32);
                    self.day = Some(number(parts[1])?.0 as u32);
                    self.year = Some(number(parts[2])?);
                }
            }
            [m] => {
                self.month = Some(month_number(parts[*m]).ok_or(FieldError::Syntax)?);
                let (a, b) = match m {
                    0 => (parts[1], parts[2]),
                    1 => (parts[0], parts[2]),
                    _ => (parts[0], parts[1]),
                };
                // The year is the part with three digits or more, else
                // the last one.
                if a.len() >= 3 {
                    self.year = Some(number(a)?);
                    self.day = Some(number(b)?.0 as u32);
                } else {
                    self.day = Some(number(a)?.0 as u32);
                    self.year = Some(number(b)?);
                }
            }
            _ => return Err(FieldError::Syntax),
        }
        Ok(())
    }

    /// A field of digits: `20200415`, `120203` after a date or `T`, or the
    /// day and year next to a month name.
    fn read_number(&mut self, n: &str, after_t: bool) -> Result<(), FieldError> {
        let (digits, frac) = n.split_once('.').unwrap_or((n, ""));
        let dated = self.year.is_some() && self.month.is_some() && self.day.is_some();
        if after_t || (dated && self.time.is_none() && matches!(digits.len(), 4 | 6)) {
            if self.time.is_some() || !matches!(digits.len(), 2 | 4 | 6) {
                return Err(FieldError::Syntax);
            }
            let part = |i: usize| {
                digits
                    .get(i..i + 2)
                    .map_or(Ok(0), |p| number(p).map(|v| v.0 as u32))
            };
            self.time = Some((part(0)?, part(2)?, part(4)?, micros(frac)?));
            return Ok(());
        }
        if !frac.is_empty() {
            return Err(FieldError::Syntax);
        }
        if self.year.is_none() && self.month.is_none() && self.day.is_none() && digits.len() == 8 {
            self.year = Some(number(&digits[..4])?);
            self.month = Some(number(&digits[4..6])?.0 as u32);
            self.day = Some(number(&digits[6..])?.0 as u32);
            return Ok(());
        }
        if self.month.is_some() && !dated {
            let value = number(digits)?;
            if self.day.is_none() && digits.len() <= 2 && value.0 <= 31 {
                self.day = Some(value.0 as u32);
            } else if self.year.is_none() {
                self.year = Some(value);
            } else {
                return Err(FieldError::Syntax);
            }
            return Ok(());
        }
        Err(FieldError::Syntax)
    }

    /// The date, `None` if incomplete, `Some(None)` if out of range.
    fn date(&self) -> Option<Option<NaiveDate>> {
        let ((year, digits), month, day) = (self.year?, self.month?, self.day?);
        // Two-digit years: 70..99 are 19xx, the others 20xx.
        let mut year = if digits <= 2 {
            if year >= 70 {
                year + 1900
            } else {
                year + 2000
            }
        } else {
            year
        };
        if self.bc {
            if year == 0 {
                return Some(None);
            }
            year = 1 - year;
        }
        Some(
            i32::try_from(year)
                .ok()
                .and_then(|y| NaiveDate::from_ymd_opt(y, month, day)),
        )
    }

    /// The date at the time of day read, with AM/PM applied; `Err` if a
    /// time field is out of range.
    fn time_on(&self, date: NaiveDate) -> Result<NaiveDateTime, ()> {
        let (mut h, m, s, us) = self.time.unwrap_or((0, 0, 0, 0));
        if let Some(pm) = self.ampm {
            if h > 12 {
                return Err(());
            }
            h = match (h, pm) {
                (12, false) => 0,
                (h, true) if h < 12 => h + 12,
                (h, _) => h,
            };
        }
        if h > 24 || m > 59 || s > 60 || (h == 24 && (m, s, us) != (0, 0, 0)) {
            return Err(());
        }
        let midnight = date.and_time(NaiveTime::MIN);
        midnight
            .checked_add_signed(Duration::hours(h as i64))
            .and_then(|t| t.checked_add_signed(Duration::minutes(m as i64)))
            .and_then(|t| t.checked_add_signed(Duration::seconds(s as i64)))
            .and_then(|t| t.checked_add_signed(Duration::microseconds(us as i64)))
            .ok_or(())
    }
}

/// `h:m`, `h:m:s`, `h:m:s.f`.
fn read_time(t: &str) -> Result<(u32, u32, u32, u32), FieldError> {
    let parts: Vec<&str> = t.split(':').collect();
    let field = |p: &str| -> Result<u32, FieldError> {
        if p.is_empty() || p.len() > 2 {
            return Err(FieldError::Syntax);
        }
        number(p).map(|v| v.0 as u32)
    };
    match parts.as_slice() {
        [h, m] => {
            let (m, frac) = m.split_once('.').unwrap_or((m, ""));
            // `12:02.5` is minutes and seconds in PostgreSQL; not read here.
            if !frac.is_empty() {
                return Err(FieldError::Syntax);
            }
            Ok((field(h)?, field(m)?, 0, 0))
        }
        [h, m, s] => {
            let (s, frac) = s.split_once('.').unwrap_or((s, ""));
            if s.contains('.') || frac.contains('.') {
                return Err(FieldError::Syntax);
            }
            Ok((field(h)?, field(m)?, field(s)?, micros(frac)?))
        }
        _ => Err(FieldError::Syntax),
    }
}

/// `05`, `5`, `0530`, `05:30`, `05:30:15` with a sign, in seconds.
fn read_offset(sign: i8, o: &str) -> Result<i32, FieldError> {
    let parts: Vec<&str> = o.split(':').collect();
    let (h, m, s) = match parts.as_slice() {
        [hm] if hm.len() <= 2 => (number(hm)?.0, 0, 0),
        [hm] if hm.len() == 4 => (number(&hm[..2])?.0, number(&hm[2..])?.0, 0),
        [hm] if hm.len() == 6 => (
            number(&hm[..2])?.0,
            number(&hm[2..4])?.0,
            number(&hm[4..])?.0,
        ),
        [h, m] => (number(h)?.0, number(m)?.0, 0),
        [h, m, s] => (number(h)?.0, number(m)?.0, number(s)?.0),
        _ => return Err(FieldError::Syntax),
    };
    if h > 15 || m > 59 || s > 59 {
        return Err(FieldError::Range);
    }
    Ok(sign as i32 * (h * 3600 + m * 60 + s) as i32)
}

/// A zone abbreviation or name (`PST`, `Europe/Paris`).
fn read_zone_name(w: &str) -> Result<Zone, FieldError> {
    let lower = w.to_ascii_lowercase();
    if let Some((_, hours)) = ZONE_ABBREVIATIONS.iter().find(|(a, _)| *a == lower) {
        return Ok(Zone::Fixed(hours * 3600));
    }
    if w.contains('/') {
        return match w.parse::<Tz>() {
            Ok(tz) => Ok(Zone::Named(tz)),
            Err(_) => Err(FieldError::Other(SqlError::new(
                SqlState::INVALID_PARAMETER_VALUE,
                format!("time zone \"{lower}\" not recognized"),
            ))),
        };
    }
    Err(FieldError::Syntax)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> NaiveDateTime {
        NaiveDate::from_ymd_opt(2024, 2, 29)
            .unwrap()
            .and_hms_opt(15, 30, 0)
            .unwrap()
    }

    fn ts(text: &str) -> Result<String, String> {
        at(text, DateTimeType::Timestamp)
    }

    fn at(text: &str, ty: DateTimeType) -> Result<String, String> {
        parse(text, ty, now())
            .map(|t| t.format("%Y-%m-%d %H:%M:%S%.f").to_string())
            .map_err(|e| format!("{} {}", e.sqlstate.code(), e.message))
    }

    /// Each form and the value PostgreSQL 15 gives for it (checked with
    /// psql against a PostgreSQL 15 server, TimeZone UTC).
    #[test]
    fn reads_what_postgres_reads() {
        for (text, want) in [
            ("2020-04-15 12:02", "2020-04-15 12:02:00"),
            ("2020-04-15", "2020-04-15 00:00:00"),
            ("2020-04-15T12:02", "2020-04-15 12:02:00"),
            ("2020-04-15t12:02:03", "2020-04-15 12:02:03"),
            ("2020-04-15T12:02:03.5", "2020-04-15 12:02:03.500"),
            ("2020-4-5 1:2:3", "2020-04-05 01:02:03"),
            ("2020-04-15 12:02:03.5", "2020-04-15 12:02:03.500"),
            ("2020-04-15 12:02:03.1234567", "2020-04-15 12:02:03.123457"),
            ("2020-04-15 12:02:03+05", "2020-04-15 12:02:03"),
            ("  2020-04-15 12:02  ", "2020-04-15 12:02:00"),
            ("2020-04-15 24:00", "2020-04-16 00:00:00"),
            ("2020-04-15 12:02:60", "2020-04-15 12:03:00"),
            ("epoch", "1970-01-01 00:00:00"),
            ("2020-04-15 12:02 pm", "2020-04-15 12:02:00"),
            ("2020-04-15 12:02 am", "2020-04-15 00:02:00"),
            ("April 15, 2020 12:02", "2020-04-15 12:02:00"),
            ("15-Apr-2020", "2020-04-15 00:00:00"),
            ("2020/04/15 12:02", "2020-04-15 12:02:00"),
            ("20200415 120203", "2020-04-15 12:02:03"),
            ("20200415T120203", "2020-04-15 12:02:03"),
            ("04/15/2020", "2020-04-15 00:00:00"),
            ("04/15/20", "2020-04-15 00:00:00"),
            ("Wed Apr 15 12:02:03 2020", "2020-04-15 12:02:03"),
            ("2020-04-15 12:02:03 Europe/Paris", "2020-04-15 12:02:03"),
            ("today", "2024-02-29 00:00:00"),
            ("tomorrow", "2024-03-01 00:00:00"),
            ("yesterday 10:00", "2024-02-28 10:00:00"),
            ("now", "2024-02-29 15:30:00"),
        ] {
            assert_eq!(ts(text).as_deref(), Ok(want), "{text}");
        }
    }

    #[test]
    fn zones_apply_to_timestamptz() {
        for (text, want) in [
            ("2020-04-15 12:02", "2020-04-15 12:02:00"),
            ("2020-04-15 12:02+02", "2020-04-15 10:02:00"),
            ("2020-04-15 12:02:03 +05:30", "2020-04-15 06:32:03"),
            ("2020-04-15 12:02:03-0530", "2020-04-15 17:32:03"),
            ("2020-04-15 12:02:03.5 +05", "2020-04-15 07:02:03.500"),
            ("2020-04-15 12:02 UTC", "2020-04-15 12:02:00"),
            ("2020-04-15T12:02:03Z", "2020-04-15 12:02:03"),
            ("2020-04-15 12:02 EST", "2020-04-15 17:02:00"),
            ("2020-04-15 12:02 PST", "2020-04-15 20:02:00"),
            ("2020-04-15 12:02:03 Europe/Paris", "2020-04-15 10:02:03"),
            ("2020-01-15 12:02:03 Europe/Paris", "2020-01-15 11:02:03"),
        ] {
            assert_eq!(
                at(text, DateTimeType::TimestampTz).as_deref(),
                Ok(want),
                "{text}"
            );
        }
    }

    #[test]
    fn dates_drop_the_time() {
        assert_eq!(
            at("2020-04-15 12:02", DateTimeType::Date).as_deref(),
            Ok("2020-04-15 00:00:00")
        );
        assert_eq!(
            at("2020-4-5", DateTimeType::Date).as_deref(),
            Ok("2020-04-05 00:00:00")
        );
        assert_eq!(
            at("0001-01-01 BC", DateTimeType::Date).as_deref(),
            Ok("0000-01-01 00:00:00")
        );
    }

    #[test]
    fn columns_of_each_type() {
        use datafusion::arrow::util::display::array_value_to_string;
        let texts = [Some("2020-04-15 12:02"), None, Some("15-Apr-2020")];
        for (target, want) in [
            (DataType::Date32, ["2020-04-15", "", "2020-04-15"]),
            (
                DataType::Timestamp(TimeUnit::Microsecond, None),
                ["2020-04-15T12:02:00", "", "2020-04-15T00:00:00"],
            ),
            (
                DataType::Timestamp(TimeUnit::Second, Some("+00:00".into())),
                ["2020-04-15T12:02:00Z", "", "2020-04-15T00:00:00Z"],
            ),
        ] {
            let a = parse_array(texts.into_iter(), &target).unwrap().unwrap();
            assert_eq!(a.data_type(), &target);
            let shown: Vec<String> = (0..3)
                .map(|i| array_value_to_string(&a, i).unwrap())
                .collect();
            assert_eq!(shown, want, "{target}");
        }
        let bad = [Some("2020-04-15"), Some("2020-02-30")];
        let (row, e) = parse_array(bad.into_iter(), &DataType::Date32)
            .unwrap()
            .unwrap_err();
        assert_eq!((row, e.sqlstate.code()), (1, "22008"));
        let far = [Some("2500-01-01")];
        let (_, e) = parse_array(
            far.into_iter(),
            &DataType::Timestamp(TimeUnit::Nanosecond, None),
        )
        .unwrap()
        .unwrap_err();
        assert_eq!(e.message, "timestamp out of range: \"2500-01-01\"");
        assert!(parse_array(texts.into_iter(), &DataType::Utf8).is_none());
    }

    /// PostgreSQL's errors and SQLSTATEs for the same texts.
    #[test]
    fn refuses_what_postgres_refuses() {
        for (text, want) in [
            (
                "garbage",
                "22007 invalid input syntax for type timestamp: \"garbage\"",
            ),
            ("", "22007 invalid input syntax for type timestamp: \"\""),
            (
                "   ",
                "22007 invalid input syntax for type timestamp: \"   \"",
            ),
            (
                "2020-04-15 12",
                "22007 invalid input syntax for type timestamp: \"2020-04-15 12\"",
            ),
            (
                "12:02 2020-04-15",
                "22007 invalid input syntax for type timestamp: \"12:02 2020-04-15\"",
            ),
            (
                "2020-04-15 garbage",
                "22007 invalid input syntax for type timestamp: \"2020-04-15 garbage\"",
            ),
            (
                "2020-02-30",
                "22008 date/time field value out of range: \"2020-02-30\"",
            ),
            (
                "2020-04-15 25:00",
                "22008 date/time field value out of range: \"2020-04-15 25:00\"",
            ),
            (
                "2020-04-15 12:60",
                "22008 date/time field value out of range: \"2020-04-15 12:60\"",
            ),
            (
                "2020-04-15 13:00 pm",
                "22008 date/time field value out of range: \"2020-04-15 13:00 pm\"",
            ),
            (
                "20-04-15",
                "22008 date/time field value out of range: \"20-04-15\"",
            ),
            (
                "2020-04-15 12:02 Foo/Bar",
                "22023 time zone \"foo/bar\" not recognized",
            ),
        ] {
            assert_eq!(ts(text), Err(want.to_string()), "{text}");
        }
        let inf = ts("infinity").unwrap_err();
        assert!(
            inf.starts_with("0A000 timestamp value \"infinity\" is not supported"),
            "{inf}"
        );
    }
}
