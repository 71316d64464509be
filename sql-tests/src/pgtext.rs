//! Conversion of Postgres *binary* wire values into the exact text that
//! Postgres itself (and therefore `psql`) prints for them.
//!
//! The extended-protocol test mode receives every value in binary format
//! (tokio-postgres always asks for binary results). To compare those results
//! with the same expected text as the simple-protocol mode, each value is
//! rendered here the way the Postgres output functions (`int4out`,
//! `float8out`, `numeric_out`, `timestamp_out`, `interval_out` with
//! `IntervalStyle = postgres`, `DateStyle = ISO`, `TimeZone = UTC`, ...)
//! would render it.

use tokio_postgres::types::{FromSql, Kind, Type};

/// A raw column value of any type, as received from the server.
///
/// Implements [`FromSql`] for every type so a row can be read without the
/// client trying to interpret it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RawValue {
    Null,
    Value { ty: Type, bytes: Vec<u8> },
}

impl<'a> FromSql<'a> for RawValue {
    fn from_sql(
        ty: &Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue::Value {
            ty: ty.clone(),
            bytes: raw.to_vec(),
        })
    }

    fn from_sql_null(_ty: &Type) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(RawValue::Null)
    }

    fn accepts(_ty: &Type) -> bool {
        true
    }
}

impl RawValue {
    /// Renders the value as Postgres text, `None` for SQL NULL.
    pub fn to_pg_text(&self) -> Result<Option<String>, String> {
        match self {
            RawValue::Null => Ok(None),
            RawValue::Value { ty, bytes } => format_binary(ty, bytes).map(Some),
        }
    }
}

const POSTGRES_EPOCH_JDATE: i64 = 2_451_545;
const USECS_PER_SEC: i64 = 1_000_000;
const USECS_PER_MINUTE: i64 = 60 * USECS_PER_SEC;
const USECS_PER_HOUR: i64 = 60 * USECS_PER_MINUTE;
const USECS_PER_DAY: i64 = 24 * USECS_PER_HOUR;

struct Reader<'a> {
    buf: &'a [u8],
    what: &'static str,
}

impl<'a> Reader<'a> {
    fn new(buf: &'a [u8], what: &'static str) -> Self {
        Reader { buf, what }
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        if self.buf.len() < n {
            return Err(format!(
                "truncated binary {} value (needed {n} more bytes, have {})",
                self.what,
                self.buf.len()
            ));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn i16(&mut self) -> Result<i16, String> {
        Ok(i16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn i32(&mut self) -> Result<i32, String> {
        Ok(i32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn i64(&mut self) -> Result<i64, String> {
        Ok(i64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn done(&self) -> Result<(), String> {
        if self.buf.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{} trailing bytes after binary {} value",
                self.buf.len(),
                self.what
            ))
        }
    }
}

fn utf8(bytes: &[u8], what: &str) -> Result<String, String> {
    String::from_utf8(bytes.to_vec()).map_err(|e| format!("invalid UTF-8 in {what} value: {e}"))
}

/// Formats one binary-encoded value of type `ty` as Postgres text output.
pub fn format_binary(ty: &Type, bytes: &[u8]) -> Result<String, String> {
    if let Kind::Array(elem) = ty.kind() {
        return format_array(elem, bytes);
    }
    if let Kind::Domain(base) = ty.kind() {
        return format_binary(base, bytes);
    }
    let s = match *ty {
        Type::BOOL => {
            let mut r = Reader::new(bytes, "bool");
            let b = r.take(1)?[0];
            r.done()?;
            if b != 0 { "t" } else { "f" }.to_string()
        }
        Type::INT2 => {
            let mut r = Reader::new(bytes, "int2");
            let v = r.i16()?;
            r.done()?;
            v.to_string()
        }
        Type::INT4 => {
            let mut r = Reader::new(bytes, "int4");
            let v = r.i32()?;
            r.done()?;
            v.to_string()
        }
        Type::INT8 => {
            let mut r = Reader::new(bytes, "int8");
            let v = r.i64()?;
            r.done()?;
            v.to_string()
        }
        Type::OID | Type::REGPROC | Type::XID | Type::CID | Type::REGTYPE | Type::REGCLASS => {
            let mut r = Reader::new(bytes, "oid");
            let v = r.u32()?;
            r.done()?;
            v.to_string()
        }
        Type::FLOAT4 => {
            let mut r = Reader::new(bytes, "float4");
            let v = f32::from_bits(r.u32()?);
            r.done()?;
            format_float4(v)
        }
        Type::FLOAT8 => {
            let mut r = Reader::new(bytes, "float8");
            let v = f64::from_bits(r.i64()? as u64);
            r.done()?;
            format_float8(v)
        }
        Type::NUMERIC => format_numeric(bytes)?,
        Type::TEXT
        | Type::VARCHAR
        | Type::BPCHAR
        | Type::NAME
        | Type::UNKNOWN
        | Type::JSON
        | Type::XML => utf8(bytes, ty.name())?,
        Type::JSONB => match bytes.split_first() {
            Some((1, rest)) => utf8(rest, "jsonb")?,
            Some((v, _)) => return Err(format!("unsupported jsonb binary version {v}")),
            None => return Err("empty jsonb binary value".to_string()),
        },
        Type::CHAR => {
            // The single-byte internal "char" type.
            match bytes {
                [] => String::new(),
                [b] => (*b as char).to_string(),
                _ => return Err("\"char\" value longer than one byte".to_string()),
            }
        }
        Type::BYTEA => format_bytea(bytes),
        Type::UUID => {
            if bytes.len() != 16 {
                return Err(format!("uuid value has {} bytes", bytes.len()));
            }
            let h = hex(bytes);
            format!(
                "{}-{}-{}-{}-{}",
                &h[0..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..32]
            )
        }
        Type::DATE => {
            let mut r = Reader::new(bytes, "date");
            let v = r.i32()?;
            r.done()?;
            format_date(v)
        }
        Type::TIME => {
            let mut r = Reader::new(bytes, "time");
            let v = r.i64()?;
            r.done()?;
            format_time_of_day(v)
        }
        Type::TIMETZ => {
            let mut r = Reader::new(bytes, "timetz");
            let v = r.i64()?;
            let zone_west = r.i32()?;
            r.done()?;
            format!(
                "{}{}",
                format_time_of_day(v),
                format_utc_offset(-i64::from(zone_west))
            )
        }
        Type::TIMESTAMP => {
            let mut r = Reader::new(bytes, "timestamp");
            let v = r.i64()?;
            r.done()?;
            format_timestamp(v, false)
        }
        Type::TIMESTAMPTZ => {
            let mut r = Reader::new(bytes, "timestamptz");
            let v = r.i64()?;
            r.done()?;
            format_timestamp(v, true)
        }
        Type::INTERVAL => {
            let mut r = Reader::new(bytes, "interval");
            let micros = r.i64()?;
            let days = r.i32()?;
            let months = r.i32()?;
            r.done()?;
            format_interval(months, days, micros)
        }
        _ => {
            return Err(format!(
                "cannot render binary value of type {} (oid {}) as text",
                ty.name(),
                ty.oid()
            ))
        }
    };
    Ok(s)
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// `bytea_output = hex`.
pub fn format_bytea(bytes: &[u8]) -> String {
    format!("\\x{}", hex(bytes))
}

/// Postgres `float8out` with the default `extra_float_digits = 1`:
/// the shortest representation that round-trips, switching to exponent
/// notation when the decimal exponent is < -4 or >= 15.
pub fn format_float8(v: f64) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    shortest_to_pg(&format!("{v:e}"), 15)
}

/// Postgres `float4out`: like [`format_float8`] but with the exponent
/// threshold of 6 significant digits.
pub fn format_float4(v: f32) -> String {
    if v.is_nan() {
        return "NaN".to_string();
    }
    if v.is_infinite() {
        return if v > 0.0 { "Infinity" } else { "-Infinity" }.to_string();
    }
    shortest_to_pg(&format!("{v:e}"), 6)
}

/// Converts Rust's shortest round-trip scientific rendering (`-1.25e-7`)
/// into Postgres' layout.
fn shortest_to_pg(sci: &str, max_fixed_exp: i32) -> String {
    let (mantissa, exp) = sci.split_once('e').expect("scientific float format");
    let exp: i32 = exp.parse().expect("float exponent");
    let (neg, mantissa) = match mantissa.strip_prefix('-') {
        Some(m) => (true, m),
        None => (false, mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let mut out = String::new();
    if neg {
        out.push('-');
    }
    if digits == "0" {
        out.push('0');
        return out;
    }
    let olength = digits.len() as i32;
    if (-4..max_fixed_exp).contains(&exp) {
        if exp >= 0 {
            if olength <= exp + 1 {
                out.push_str(&digits);
                out.extend(std::iter::repeat_n('0', (exp + 1 - olength) as usize));
            } else {
                let split = (exp + 1) as usize;
                out.push_str(&digits[..split]);
                out.push('.');
                out.push_str(&digits[split..]);
            }
        } else {
            out.push_str("0.");
            out.extend(std::iter::repeat_n('0', (-exp - 1) as usize));
            out.push_str(&digits);
        }
    } else {
        out.push_str(&digits[..1]);
        if olength > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        out.push('e');
        out.push(if exp < 0 { '-' } else { '+' });
        out.push_str(&format!("{:02}", exp.abs()));
    }
    out
}

/// Postgres `numeric_out` from the binary format
/// (`ndigits, weight, sign, dscale, digits[ndigits]` in base 10000).
pub fn format_numeric(bytes: &[u8]) -> Result<String, String> {
    let mut r = Reader::new(bytes, "numeric");
    let ndigits = r.u16()? as usize;
    let weight = i64::from(r.i16()?);
    let sign = r.u16()?;
    let dscale = i64::from(r.u16()?);
    let mut digits = Vec::with_capacity(ndigits);
    for _ in 0..ndigits {
        let d = r.i16()?;
        if !(0..10000).contains(&d) {
            return Err(format!("invalid numeric digit {d}"));
        }
        digits.push(d as u32);
    }
    r.done()?;
    match sign {
        0x0000 | 0x4000 => {}
        0xC000 => return Ok("NaN".to_string()),
        0xD000 => return Ok("Infinity".to_string()),
        0xF000 => return Ok("-Infinity".to_string()),
        other => return Err(format!("invalid numeric sign 0x{other:04x}")),
    }
    // Digit group with weight `w` lives at index `weight - w`.
    let group = |w: i64| -> u32 {
        let k = weight - w;
        if k >= 0 && (k as usize) < digits.len() {
            digits[k as usize]
        } else {
            0
        }
    };
    let mut out = String::new();
    if sign == 0x4000 {
        out.push('-');
    }
    if weight < 0 {
        out.push('0');
    } else {
        for w in (0..=weight).rev() {
            if w == weight {
                out.push_str(&group(w).to_string());
            } else {
                out.push_str(&format!("{:04}", group(w)));
            }
        }
    }
    if dscale > 0 {
        out.push('.');
        let mut frac = String::new();
        let mut w = -1;
        while (frac.len() as i64) < dscale {
            frac.push_str(&format!("{:04}", group(w)));
            w -= 1;
        }
        frac.truncate(dscale as usize);
        out.push_str(&frac);
    }
    Ok(out)
}

/// Postgres' `j2date`: Julian day number to proleptic Gregorian (year, month, day).
fn j2date(jd: i64) -> (i64, u32, u32) {
    let mut julian = jd as u64 as u32;
    julian = julian.wrapping_add(32044);
    let mut quad = julian / 146_097;
    let extra = (julian - quad * 146_097) * 4 + 3;
    julian += 60 + quad * 3 + extra / 146_097;
    quad = julian / 1461;
    julian -= quad * 1461;
    let mut y = julian * 4 / 1461;
    julian = if y != 0 {
        (julian + 305) % 365
    } else {
        (julian + 306) % 366
    } + 123;
    y += quad * 4;
    let year = i64::from(y) - 4800;
    let quad = julian * 2141 / 65536;
    let day = julian - 7834 * quad / 256;
    let month = (quad + 10) % 12 + 1;
    (year, month, day)
}

/// Returns the ISO date text without era and whether the year is BC.
fn ymd_text(jd: i64) -> (String, bool) {
    let (year, month, day) = j2date(jd);
    let (year, bc) = if year <= 0 {
        (1 - year, true)
    } else {
        (year, false)
    };
    (format!("{year:04}-{month:02}-{day:02}"), bc)
}

/// `date_out` with `DateStyle = ISO`.
pub fn format_date(days_since_2000: i32) -> String {
    match days_since_2000 {
        i32::MAX => "infinity".to_string(),
        i32::MIN => "-infinity".to_string(),
        d => {
            let (s, bc) = ymd_text(i64::from(d) + POSTGRES_EPOCH_JDATE);
            if bc {
                format!("{s} BC")
            } else {
                s
            }
        }
    }
}

/// Appends `.ffffff` with trailing zeros removed, nothing for zero.
fn push_fraction(out: &mut String, fsec: i64) {
    if fsec != 0 {
        let f = format!("{:06}", fsec.abs());
        out.push('.');
        out.push_str(f.trim_end_matches('0'));
    }
}

/// `HH:MM:SS[.ffffff]` for microseconds since midnight.
pub fn format_time_of_day(micros: i64) -> String {
    let hour = micros / USECS_PER_HOUR;
    let min = (micros % USECS_PER_HOUR) / USECS_PER_MINUTE;
    let sec = (micros % USECS_PER_MINUTE) / USECS_PER_SEC;
    let fsec = micros % USECS_PER_SEC;
    let mut out = format!("{hour:02}:{min:02}:{sec:02}");
    push_fraction(&mut out, fsec);
    out
}

/// `+HH`, `+HH:MM` or `+HH:MM:SS` for an offset in seconds east of UTC.
fn format_utc_offset(east_secs: i64) -> String {
    let sign = if east_secs < 0 { '-' } else { '+' };
    let a = east_secs.abs();
    let (h, m, s) = (a / 3600, (a / 60) % 60, a % 60);
    if s != 0 {
        format!("{sign}{h:02}:{m:02}:{s:02}")
    } else if m != 0 {
        format!("{sign}{h:02}:{m:02}")
    } else {
        format!("{sign}{h:02}")
    }
}

/// `timestamp_out` / `timestamptz_out` (the latter in UTC, printed as `+00`).
pub fn format_timestamp(micros_since_2000: i64, with_tz: bool) -> String {
    match micros_since_2000 {
        i64::MAX => return "infinity".to_string(),
        i64::MIN => return "-infinity".to_string(),
        _ => {}
    }
    let date = micros_since_2000.div_euclid(USECS_PER_DAY);
    let time = micros_since_2000.rem_euclid(USECS_PER_DAY);
    let (ymd, bc) = ymd_text(date + POSTGRES_EPOCH_JDATE);
    let mut out = format!("{ymd} {}", format_time_of_day(time));
    if with_tz {
        out.push_str("+00");
    }
    if bc {
        out.push_str(" BC");
    }
    out
}

/// `interval_out` with `IntervalStyle = postgres`.
pub fn format_interval(months: i32, days: i32, micros: i64) -> String {
    let year = i64::from(months / 12);
    let mon = i64::from(months % 12);
    let mday = i64::from(days);
    let mut time = micros;
    let hour = time / USECS_PER_HOUR;
    time -= hour * USECS_PER_HOUR;
    let min = time / USECS_PER_MINUTE;
    time -= min * USECS_PER_MINUTE;
    let sec = time / USECS_PER_SEC;
    let fsec = time - sec * USECS_PER_SEC;

    let mut out = String::new();
    let mut is_zero = true;
    let mut is_before = false;
    for (value, unit) in [(year, "year"), (mon, "mon"), (mday, "day")] {
        if value == 0 {
            continue;
        }
        if !is_zero {
            out.push(' ');
        }
        if is_before && value > 0 {
            out.push('+');
        }
        out.push_str(&format!(
            "{value} {unit}{}",
            if value != 1 { "s" } else { "" }
        ));
        is_before = value < 0;
        is_zero = false;
    }
    if is_zero || hour != 0 || min != 0 || sec != 0 || fsec != 0 {
        let minus = hour < 0 || min < 0 || sec < 0 || fsec < 0;
        if !is_zero {
            out.push(' ');
        }
        if minus {
            out.push('-');
        } else if is_before {
            out.push('+');
        }
        out.push_str(&format!(
            "{:02}:{:02}:{:02}",
            hour.abs(),
            min.abs(),
            sec.abs()
        ));
        push_fraction(&mut out, fsec);
    }
    out
}

/// `array_out` for the binary array format.
fn format_array(elem: &Type, bytes: &[u8]) -> Result<String, String> {
    let mut r = Reader::new(bytes, "array");
    let ndim = r.i32()?;
    let _has_nulls = r.i32()?;
    let _elem_oid = r.u32()?;
    if ndim < 0 {
        return Err(format!("invalid array dimension count {ndim}"));
    }
    if ndim == 0 {
        r.done()?;
        return Ok("{}".to_string());
    }
    let mut dims = Vec::new();
    let mut decoration = String::new();
    let mut any_lbound = false;
    for _ in 0..ndim {
        let len = r.i32()?;
        let lbound = r.i32()?;
        if len < 0 {
            return Err(format!("invalid array dimension length {len}"));
        }
        if lbound != 1 {
            any_lbound = true;
        }
        decoration.push_str(&format!(
            "[{}:{}]",
            lbound,
            i64::from(lbound) + i64::from(len) - 1
        ));
        dims.push(len as usize);
    }
    let total: usize = dims.iter().product();
    let mut elems = Vec::with_capacity(total);
    for _ in 0..total {
        let len = r.i32()?;
        if len < 0 {
            elems.push("NULL".to_string());
        } else {
            let text = format_binary(elem, r.take(len as usize)?)?;
            elems.push(quote_array_element(&text));
        }
    }
    r.done()?;
    let mut out = String::new();
    if any_lbound {
        out.push_str(&decoration);
        out.push('=');
    }
    let mut idx = 0;
    write_array_level(&mut out, &dims, &elems, &mut idx);
    Ok(out)
}

fn write_array_level(out: &mut String, dims: &[usize], elems: &[String], idx: &mut usize) {
    out.push('{');
    for i in 0..dims[0] {
        if i > 0 {
            out.push(',');
        }
        if dims.len() == 1 {
            out.push_str(&elems[*idx]);
            *idx += 1;
        } else {
            write_array_level(out, &dims[1..], elems, idx);
        }
    }
    out.push('}');
}

fn quote_array_element(s: &str) -> String {
    let needs_quotes = s.is_empty()
        || s.eq_ignore_ascii_case("NULL")
        || s.chars().any(|c| {
            matches!(
                c,
                '"' | '\\' | '{' | '}' | ',' | ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c'
            )
        });
    if !needs_quotes {
        return s.to_string();
    }
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats() {
        assert_eq!(format_float8(1.5), "1.5");
        assert_eq!(format_float8(0.1), "0.1");
        assert_eq!(format_float8(1e20), "1e+20");
        assert_eq!(format_float8(1e15), "1e+15");
        assert_eq!(format_float8(123456789012345.0), "123456789012345");
        assert_eq!(format_float8(0.0001), "0.0001");
        assert_eq!(format_float8(0.00001), "1e-05");
        assert_eq!(format_float8(-2.5e-7), "-2.5e-07");
        assert_eq!(format_float8(100.0), "100");
        assert_eq!(format_float8(0.0), "0");
        assert_eq!(format_float8(-0.0), "-0");
        assert_eq!(format_float8(f64::NAN), "NaN");
        assert_eq!(format_float8(f64::NEG_INFINITY), "-Infinity");
        assert_eq!(format_float8(1.0 / 3.0), "0.3333333333333333");
        assert_eq!(format_float4(1234567.0), "1.234567e+06");
        assert_eq!(format_float4(123456.0), "123456");
        assert_eq!(format_float4(0.1), "0.1");
        assert_eq!(format_float4(3.25), "3.25");
    }

    fn numeric(ndigits: &[i16], weight: i16, sign: u16, dscale: u16) -> String {
        let mut b = Vec::new();
        b.extend((ndigits.len() as u16).to_be_bytes());
        b.extend(weight.to_be_bytes());
        b.extend(sign.to_be_bytes());
        b.extend(dscale.to_be_bytes());
        for d in ndigits {
            b.extend(d.to_be_bytes());
        }
        format_numeric(&b).unwrap()
    }

    #[test]
    fn numerics() {
        assert_eq!(numeric(&[1234, 5000], 0, 0, 2), "1234.50");
        assert_eq!(numeric(&[], 0, 0, 2), "0.00");
        assert_eq!(numeric(&[], 0, 0, 0), "0");
        assert_eq!(numeric(&[1, 0], 1, 0x4000, 0), "-10000");
        assert_eq!(numeric(&[1], 1, 0, 0), "10000");
        assert_eq!(numeric(&[5], -1, 0, 4), "0.0005");
        assert_eq!(numeric(&[5], -2, 0, 8), "0.00000005");
        assert_eq!(numeric(&[12, 3400], 0, 0x4000, 3), "-12.340");
        assert_eq!(numeric(&[], 0, 0xC000, 0), "NaN");
    }

    #[test]
    fn dates_and_times() {
        assert_eq!(format_date(0), "2000-01-01");
        assert_eq!(format_date(8796), "2024-01-31");
        assert_eq!(format_date(-1), "1999-12-31");
        assert_eq!(format_date(-730_119), "0001-01-01");
        assert_eq!(format_date(-730_120), "0001-12-31 BC");
        assert_eq!(
            format_timestamp(8796 * USECS_PER_DAY + 10 * USECS_PER_HOUR, false),
            "2024-01-31 10:00:00"
        );
        assert_eq!(
            format_timestamp(8796 * USECS_PER_DAY + 10 * USECS_PER_HOUR + 500_000, true),
            "2024-01-31 10:00:00.5+00"
        );
        assert_eq!(format_timestamp(-1, false), "1999-12-31 23:59:59.999999");
        assert_eq!(format_time_of_day(USECS_PER_HOUR + 1), "01:00:00.000001");
    }

    #[test]
    fn intervals() {
        assert_eq!(format_interval(0, 1, 2 * USECS_PER_HOUR), "1 day 02:00:00");
        assert_eq!(format_interval(14, 0, 0), "1 year 2 mons");
        assert_eq!(format_interval(0, 0, 1_500_000), "00:00:01.5");
        assert_eq!(format_interval(0, 0, 0), "00:00:00");
        assert_eq!(format_interval(0, -1, 0), "-1 days");
        assert_eq!(format_interval(0, -1, USECS_PER_HOUR), "-1 days +01:00:00");
        assert_eq!(format_interval(0, 1, -USECS_PER_HOUR), "1 day -01:00:00");
        assert_eq!(format_interval(0, 0, -1_500_000), "-00:00:01.5");
        assert_eq!(format_interval(-13, 0, 0), "-1 years -1 mons");
        assert_eq!(format_interval(0, 0, 30 * USECS_PER_HOUR), "30:00:00");
    }

    #[test]
    fn array_quoting() {
        assert_eq!(quote_array_element("a"), "a");
        assert_eq!(quote_array_element(""), "\"\"");
        assert_eq!(quote_array_element("a b"), "\"a b\"");
        assert_eq!(quote_array_element("null"), "\"null\"");
        assert_eq!(quote_array_element("x\"y"), "\"x\\\"y\"");
    }
}
