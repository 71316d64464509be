//! COPY ... FROM STDIN: PostgreSQL's text and CSV formats, parsed as the
//! data arrives into batches of the table's types.
//!
//! [`CopyIn`] takes the input in whatever pieces the client sends
//! ([`CopyIn::feed`]), keeps only the line it has not seen the end of,
//! and appends each complete line's values to one text column per input
//! field; every [`TEXT_ROWS_MAX`] rows (or [`TEXT_BYTES_MAX`] bytes) those
//! are cast to the table's types. [`CopyIn::finish`] returns the whole
//! input as one batch, which the caller writes in one go, so a COPY that
//! fails leaves the table as it was. What a COPY holds until then is
//! bounded by [`CopyLimits`]: the bytes of one line, and everything it
//! holds (parsed values, typed batches, the unfinished line).

use std::ops::Range;
use std::sync::Arc;

use datafusion::arrow::array::{
    new_null_array, Array, ArrayRef, BinaryBuilder, RecordBatch, RecordBatchOptions, StringArray,
    StringBuilder,
};
use datafusion::arrow::compute::{cast_with_options, concat_batches, CastOptions};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::util::display::FormatOptions;

use weir_executor::SqlState;

use crate::error::{SqlError, SqlResult};

#[derive(Debug, Clone)]
pub enum CopyFormat {
    Text {
        delimiter: u8,
        null: String,
    },
    Csv {
        delimiter: u8,
        null: String,
        header: bool,
        quote: u8,
    },
}

/// What one COPY may hold before its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyLimits {
    /// One line of input (in CSV, one record: newlines inside quotes
    /// included), in bytes.
    pub line_bytes_max: usize,
    /// Everything a COPY holds until its end — parsed values, typed
    /// batches, the unfinished line — in bytes.
    pub input_bytes_max: usize,
}

impl Default for CopyLimits {
    fn default() -> Self {
        CopyLimits {
            line_bytes_max: 64 << 20,
            input_bytes_max: 1 << 30,
        }
    }
}

/// Rows of text values kept before they are cast to the table's types.
pub const TEXT_ROWS_MAX: usize = 8192;
/// Bytes of text values kept before they are cast to the table's types.
pub const TEXT_BYTES_MAX: usize = 8 << 20;

/// How many bytes of a line an error's CONTEXT quotes.
const CONTEXT_LINE_CHARS_MAX: usize = 80;

/// One COPY's input being parsed.
pub struct CopyIn {
    table: String,
    schema: SchemaRef,
    /// Target column index for each input field.
    columns: Vec<usize>,
    format: CopyFormat,
    /// The line whose end has not arrived yet.
    partial: Vec<u8>,
    /// CSV: `partial` ends inside a quoted field.
    in_quotes: bool,
    /// Lines read so far (the number of the line being read, less one).
    line: u64,
    /// The end marker `\.` was read: the rest is ignored.
    ended: bool,
    /// CSV HEADER: the first line is still to be skipped.
    skip_header: bool,
    /// Text values of the rows not yet cast, one column per input field.
    text: Vec<StringBuilder>,
    /// The line number of each of those rows.
    text_lines: Vec<u64>,
    text_bytes: usize,
    /// Rows already cast to the table's types.
    batches: Vec<RecordBatch>,
    batch_bytes: usize,
    /// One line's fields: decoded bytes and, per field, its range in
    /// `scratch` (`None` for NULL). Reused from line to line.
    scratch: Vec<u8>,
    fields: Vec<Option<Range<usize>>>,
}

impl CopyIn {
    pub fn new(table: &str, schema: SchemaRef, columns: Vec<usize>, format: CopyFormat) -> Self {
        let skip_header = matches!(format, CopyFormat::Csv { header: true, .. });
        CopyIn {
            table: table.to_string(),
            text: columns.iter().map(|_| StringBuilder::new()).collect(),
            schema,
            columns,
            format,
            partial: Vec::new(),
            in_quotes: false,
            line: 0,
            ended: false,
            skip_header,
            text_lines: Vec::new(),
            text_bytes: 0,
            batches: Vec::new(),
            batch_bytes: 0,
            scratch: Vec::new(),
            fields: Vec::new(),
        }
    }

    /// Bytes held: parsed values, typed batches and the unfinished line.
    pub fn held_bytes(&self) -> usize {
        self.text_bytes + self.batch_bytes + self.partial.len()
    }

    /// Takes the next piece of input.
    pub fn feed(&mut self, data: &[u8], limits: &CopyLimits) -> SqlResult<()> {
        let mut start = 0;
        while start < data.len() && !self.ended {
            match self.line_end(&data[start..]) {
                Some(n) => {
                    let piece = &data[start..start + n];
                    start += n + 1;
                    if self.partial.len() + piece.len() > limits.line_bytes_max {
                        self.line += 1;
                        return Err(self.line_too_long(limits));
                    }
                    if self.partial.is_empty() {
                        self.read_line(piece)?;
                    } else {
                        let mut line = std::mem::take(&mut self.partial);
                        line.extend_from_slice(piece);
                        let result = self.read_line(&line);
                        line.clear();
                        self.partial = line;
                        result?;
                    }
                    self.check_held(limits)?;
                }
                None => {
                    let rest = &data[start..];
                    if self.partial.len() + rest.len() > limits.line_bytes_max {
                        self.line += 1;
                        return Err(self.line_too_long(limits));
                    }
                    self.partial.extend_from_slice(rest);
                    self.check_held(limits)?;
                    break;
                }
            }
        }
        Ok(())
    }

    /// The input has ended: the whole of it as one batch of the table's
    /// schema.
    pub fn finish(mut self) -> SqlResult<RecordBatch> {
        if !self.ended && !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            if self.in_quotes {
                self.line += 1;
                return Err(SqlError::new(
                    SqlState::BAD_COPY_FILE_FORMAT,
                    "unterminated CSV quoted field",
                )
                .with_context(self.context(Some(&line))));
            }
            self.read_line(&line)?;
        }
        self.cast_text()?;
        let batch = if self.batches.len() == 1 {
            self.batches.pop().expect("one batch")
        } else {
            concat_batches(&self.schema, &self.batches)
                .map_err(|e| SqlError::internal(format!("cannot join COPY batches: {e}")))?
        };
        Ok(batch)
    }

    /// The length of `data` up to the newline that ends the current line,
    /// if it is there; keeps track of CSV quotes on the way.
    fn line_end(&mut self, data: &[u8]) -> Option<usize> {
        match &self.format {
            CopyFormat::Text { .. } => data.iter().position(|b| *b == b'\n'),
            CopyFormat::Csv { quote, .. } => {
                for (i, b) in data.iter().enumerate() {
                    if *b == *quote {
                        self.in_quotes = !self.in_quotes;
                    } else if *b == b'\n' && !self.in_quotes {
                        return Some(i);
                    }
                }
                None
            }
        }
    }

    /// One complete line, without its newline.
    fn read_line(&mut self, line: &[u8]) -> SqlResult<()> {
        self.line += 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line == b"\\." {
            self.ended = true;
            return Ok(());
        }
        if std::mem::take(&mut self.skip_header) {
            return Ok(());
        }
        let Ok(text) = std::str::from_utf8(line) else {
            return Err(SqlError::new(
                SqlState::CHARACTER_NOT_IN_REPERTOIRE,
                "invalid byte sequence for encoding \"UTF8\"",
            )
            .with_context(self.context(None)));
        };
        self.scratch.clear();
        self.fields.clear();
        match &self.format {
            CopyFormat::Text { delimiter, null } => {
                if text.is_empty() {
                    return Ok(());
                }
                split_text(text, *delimiter, null, &mut self.scratch, &mut self.fields);
            }
            CopyFormat::Csv {
                delimiter,
                null,
                quote,
                ..
            } => split_csv(
                text,
                *delimiter,
                *quote,
                null,
                &mut self.scratch,
                &mut self.fields,
            ),
        }
        if self.fields.len() != self.columns.len() {
            let message = if self.fields.len() < self.columns.len() {
                let column = self.schema.field(self.columns[self.fields.len()]).name();
                format!("missing data for column \"{column}\"")
            } else {
                "extra data after last expected column".to_string()
            };
            return Err(SqlError::new(SqlState::BAD_COPY_FILE_FORMAT, message)
                .with_context(self.context(Some(line))));
        }
        for (builder, field) in self.text.iter_mut().zip(&self.fields) {
            match field {
                // Only ASCII delimiters and quotes were removed from valid
                // UTF-8, so the pieces are valid UTF-8.
                Some(r) => {
                    let value = std::str::from_utf8(&self.scratch[r.clone()])
                        .map_err(|_| SqlError::internal("COPY value split inside a character"))?;
                    builder.append_value(value);
                    self.text_bytes += value.len() + 4;
                }
                None => {
                    builder.append_null();
                    self.text_bytes += 4;
                }
            }
        }
        self.text_lines.push(self.line);
        if self.text_lines.len() >= TEXT_ROWS_MAX || self.text_bytes >= TEXT_BYTES_MAX {
            self.cast_text()?;
        }
        Ok(())
    }

    /// Casts the text rows held to a batch of the table's types.
    fn cast_text(&mut self) -> SqlResult<()> {
        let rows = self.text_lines.len();
        if rows == 0 && !self.batches.is_empty() {
            return Ok(());
        }
        let mut text: Vec<Option<StringArray>> = vec![None; self.schema.fields().len()];
        for (builder, &c) in self.text.iter_mut().zip(&self.columns) {
            text[c] = Some(builder.finish());
        }
        let mut arrays = Vec::with_capacity(text.len());
        for (c, values) in text.into_iter().enumerate() {
            let field = self.schema.field(c);
            arrays.push(match values {
                None => new_null_array(field.data_type(), rows),
                Some(values) => cast_text(&values, field.data_type()).map_err(|bad| {
                    let value = values.value(bad.row);
                    let line = self.text_lines[bad.row];
                    let context = format!(
                        "COPY {}, line {line}, column {}: \"{}\"",
                        self.table,
                        field.name(),
                        clip(value)
                    );
                    bad.error.with_context(context)
                })?,
            });
        }
        let batch = RecordBatch::try_new_with_options(
            self.schema.clone(),
            arrays,
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
        .map_err(|e| SqlError::new(SqlState::NOT_NULL_VIOLATION, e.to_string()))?;
        self.batch_bytes += batch.get_array_memory_size();
        self.batches.push(batch);
        self.text_lines.clear();
        self.text_bytes = 0;
        Ok(())
    }

    fn check_held(&self, limits: &CopyLimits) -> SqlResult<()> {
        let held = self.held_bytes();
        if held <= limits.input_bytes_max {
            return Ok(());
        }
        let detail = format!(
            "A COPY holds its input until it ends, at most {} bytes (copy_input_bytes_max); \
             this one reached {held} bytes by line {}.",
            limits.input_bytes_max, self.line
        );
        Err(
            SqlError::new(SqlState::PROGRAM_LIMIT_EXCEEDED, "COPY input too large")
                .with_detail(detail)
                .with_hint("Split the input into several COPY statements.")
                .with_context(self.context(None)),
        )
    }

    fn line_too_long(&self, limits: &CopyLimits) -> SqlError {
        SqlError::new(SqlState::PROGRAM_LIMIT_EXCEEDED, "COPY line too long")
            .with_detail(format!(
                "A line of COPY input may hold at most {} bytes (copy_line_bytes_max).",
                limits.line_bytes_max
            ))
            .with_context(self.context(None))
    }

    /// PostgreSQL's CONTEXT of a COPY error: the table, the line number,
    /// and the start of the line's text when there is one.
    fn context(&self, line: Option<&[u8]>) -> String {
        match line {
            Some(l) => format!(
                "COPY {}, line {}: \"{}\"",
                self.table,
                self.line,
                clip(&String::from_utf8_lossy(l))
            ),
            None => format!("COPY {}, line {}", self.table, self.line),
        }
    }
}

/// The first [`CONTEXT_LINE_CHARS_MAX`] characters of `s`, with "..." if
/// there is more.
fn clip(s: &str) -> String {
    match s.char_indices().nth(CONTEXT_LINE_CHARS_MAX) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

/// Splits a text-format line on unescaped delimiters; each field's value,
/// unescaped, goes to `out`, its range to `fields` (`None` for the NULL
/// string, which is compared before unescaping).
fn split_text(
    line: &str,
    delimiter: u8,
    null: &str,
    out: &mut Vec<u8>,
    fields: &mut Vec<Option<Range<usize>>>,
) {
    let bytes = line.as_bytes();
    let mut start = 0;
    let mut i = 0;
    while i <= bytes.len() {
        if i == bytes.len() || bytes[i] == delimiter {
            let raw = &line[start..i];
            if raw == null {
                fields.push(None);
            } else {
                let from = out.len();
                unescape_text(raw, out);
                fields.push(Some(from..out.len()));
            }
            start = i + 1;
            i += 1;
        } else if bytes[i] == b'\\' {
            i = (i + 2).min(bytes.len());
        } else {
            i += 1;
        }
    }
}

fn unescape_text(field: &str, out: &mut Vec<u8>) {
    let mut chars = field.chars();
    let mut buf = [0u8; 4];
    while let Some(c) = chars.next() {
        let c = if c != '\\' {
            c
        } else {
            match chars.next() {
                Some('t') => '\t',
                Some('n') => '\n',
                Some('r') => '\r',
                Some('b') => '\u{8}',
                Some('f') => '\u{c}',
                Some('v') => '\u{b}',
                Some(o) => o,
                None => break,
            }
        };
        out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
    }
}

/// Splits a CSV record (quoted newlines included); each field's value,
/// unquoted, goes to `out`, its range to `fields` (`None` for an unquoted
/// field equal to the NULL string).
fn split_csv(
    line: &str,
    delimiter: u8,
    quote: u8,
    null: &str,
    out: &mut Vec<u8>,
    fields: &mut Vec<Option<Range<usize>>>,
) {
    let mut from = out.len();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut bytes = line.as_bytes().iter().peekable();
    let mut finish = |out: &mut Vec<u8>, from: &mut usize, was_quoted: &mut bool| {
        let value = &out[*from..];
        if !*was_quoted && value == null.as_bytes() {
            out.truncate(*from);
            fields.push(None);
        } else {
            fields.push(Some(*from..out.len()));
        }
        *from = out.len();
        *was_quoted = false;
    };
    while let Some(&b) = bytes.next() {
        if quoted {
            if b == quote {
                if bytes.peek() == Some(&&quote) {
                    out.push(quote);
                    bytes.next();
                } else {
                    quoted = false;
                }
            } else {
                out.push(b);
            }
        } else if b == quote {
            quoted = true;
            was_quoted = true;
        } else if b == delimiter {
            finish(out, &mut from, &mut was_quoted);
        } else {
            out.push(b);
        }
    }
    finish(out, &mut from, &mut was_quoted);
}

fn decode_bytea(s: &str) -> SqlResult<Vec<u8>> {
    if let Some(hex) = s.strip_prefix("\\x") {
        if hex.len() % 2 != 0 {
            return Err(SqlError::new(
                SqlState::INVALID_TEXT_REPRESENTATION,
                "invalid hexadecimal data: odd number of digits",
            ));
        }
        (0..hex.len())
            .step_by(2)
            .map(|i| {
                hex.get(i..i + 2)
                    .and_then(|d| u8::from_str_radix(d, 16).ok())
                    .ok_or_else(|| {
                        SqlError::new(
                            SqlState::INVALID_TEXT_REPRESENTATION,
                            format!(
                                "invalid hexadecimal digit: \"{}\"",
                                hex.get(i..).unwrap_or("").chars().next().unwrap_or(' ')
                            ),
                        )
                    })
            })
            .collect()
    } else {
        Ok(s.as_bytes().to_vec())
    }
}

/// A value [`cast_text`] could not convert: its row and the error.
struct BadValue {
    row: usize,
    error: SqlError,
}

/// Converts text values to an array of `target` type; on failure, the
/// first row that does not convert. Dates and timestamps are read in
/// PostgreSQL's input forms (`crate::datetime_input`); numeric NaN and
/// infinities, which a decimal cannot hold, are refused by name.
fn cast_text(values: &StringArray, target: &DataType) -> Result<ArrayRef, Box<BadValue>> {
    if let Some(array) = crate::datetime_input::parse_array(values.iter(), target) {
        return array.map_err(|(row, error)| Box::new(BadValue { row, error }));
    }
    if let DataType::Decimal128(..) = target {
        let special = values.iter().enumerate().find_map(|(row, v)| {
            v.and_then(crate::typed_literals::special_number)
                .map(|s| (row, s))
        });
        if let Some((row, special)) = special {
            return Err(Box::new(BadValue {
                row,
                error: crate::typed_literals::special_numeric_refused(special),
            }));
        }
    }
    if matches!(target, DataType::Binary) {
        let mut b = BinaryBuilder::new();
        for (row, v) in values.iter().enumerate() {
            match v {
                Some(s) => b.append_value(
                    decode_bytea(s).map_err(|error| Box::new(BadValue { row, error }))?,
                ),
                None => b.append_null(),
            }
        }
        return Ok(Arc::new(b.finish()));
    }
    let normalized;
    let values = if matches!(target, DataType::Interval(_)) {
        normalized = values
            .iter()
            .map(|v| {
                v.map(|s| {
                    crate::naming::normalize_interval_text(s).unwrap_or_else(|| s.to_string())
                })
            })
            .collect::<StringArray>();
        &normalized
    } else {
        values
    };
    let strict = CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    };
    match cast_with_options(values, target, &strict) {
        Ok(a) => Ok(a),
        Err(e) => {
            // The first value that became NULL is the one that failed.
            let lenient = CastOptions {
                safe: true,
                format_options: FormatOptions::default(),
            };
            let row = cast_with_options(values, target, &lenient)
                .ok()
                .and_then(|a| (0..values.len()).find(|&i| values.is_valid(i) && a.is_null(i)))
                .unwrap_or(0);
            let message = if values.is_valid(row) {
                format!(
                    "invalid input syntax for type {}: \"{}\"",
                    crate::types::sql_type_name(target),
                    clip(values.value(row))
                )
            } else {
                format!(
                    "invalid input for type {}: {e}",
                    crate::types::sql_type_name(target)
                )
            };
            Err(Box::new(BadValue {
                row,
                error: SqlError::new(SqlState::INVALID_TEXT_REPRESENTATION, message),
            }))
        }
    }
}

/// Converts text values to an array of `target` type.
pub fn cast_strings(
    values: Vec<Option<String>>,
    target: &DataType,
    column: &str,
) -> SqlResult<ArrayRef> {
    let values = StringArray::from(values);
    cast_text(&values, target).map_err(|bad| {
        let mut e = bad.error;
        e.message = format!("{} in column \"{column}\"", e.message);
        e
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{AsArray, Int32Array};
    use datafusion::arrow::datatypes::{Field, Int32Type, Schema};

    fn schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int32, false),
            Field::new("s", DataType::Utf8, true),
        ]))
    }

    fn csv(header: bool) -> CopyFormat {
        CopyFormat::Csv {
            delimiter: b',',
            null: String::new(),
            header,
            quote: b'"',
        }
    }

    fn text() -> CopyFormat {
        CopyFormat::Text {
            delimiter: b'\t',
            null: "\\N".into(),
        }
    }

    /// Parses `pieces` fed one by one.
    fn copy(format: CopyFormat, pieces: &[&str], limits: &CopyLimits) -> SqlResult<RecordBatch> {
        let mut c = CopyIn::new("t", schema(), vec![0, 1], format);
        for p in pieces {
            c.feed(p.as_bytes(), limits)?;
        }
        c.finish()
    }

    fn rows(b: &RecordBatch) -> Vec<(i32, Option<String>)> {
        let ids = b.column(0).as_primitive::<Int32Type>();
        let s = b.column(1).as_string::<i32>();
        (0..b.num_rows())
            .map(|i| (ids.value(i), s.is_valid(i).then(|| s.value(i).to_string())))
            .collect()
    }

    #[test]
    fn text_format() {
        let b = copy(text(), &["1\ta\\tb\n2\t\\N\n\\.\n"], &CopyLimits::default()).unwrap();
        assert_eq!(rows(&b), [(1, Some("a\tb".into())), (2, None)]);
    }

    #[test]
    fn csv_format() {
        let b = copy(
            csv(true),
            &["id,s\n1,\"a,\"\"b\"\"\"\n2,\n3,\"\"\n"],
            &CopyLimits::default(),
        )
        .unwrap();
        assert_eq!(
            rows(&b),
            [
                (1, Some("a,\"b\"".into())),
                (2, None),
                (3, Some(String::new()))
            ]
        );
    }

    #[test]
    fn lines_and_quotes_split_across_pieces() {
        let input = "1,\"multi\nline, \"\"quoted\"\"\"\r\n2,é\n3,last";
        let whole = copy(csv(false), &[input], &CopyLimits::default()).unwrap();
        assert_eq!(
            rows(&whole),
            [
                (1, Some("multi\nline, \"quoted\"".into())),
                (2, Some("é".into())),
                (3, Some("last".into()))
            ]
        );
        // Every split point, including inside the two-byte character.
        let bytes = input.as_bytes();
        for cut in 0..bytes.len() {
            let mut c = CopyIn::new("t", schema(), vec![0, 1], csv(false));
            c.feed(&bytes[..cut], &CopyLimits::default()).unwrap();
            c.feed(&bytes[cut..], &CopyLimits::default()).unwrap();
            assert_eq!(rows(&c.finish().unwrap()), rows(&whole), "cut at {cut}");
        }
    }

    #[test]
    fn unterminated_quote_is_refused() {
        let err = copy(csv(false), &["1,\"abc\n2,x\n"], &CopyLimits::default()).unwrap_err();
        assert_eq!(err.sqlstate, SqlState::BAD_COPY_FILE_FORMAT);
        assert_eq!(err.message, "unterminated CSV quoted field");
        assert_eq!(
            err.context.as_deref(),
            Some("COPY t, line 1: \"1,\"abc\n2,x\n\"")
        );
    }

    #[test]
    fn wrong_field_counts_name_the_line() {
        let err = copy(csv(false), &["1,a\n2\n"], &CopyLimits::default()).unwrap_err();
        assert_eq!(err.sqlstate, SqlState::BAD_COPY_FILE_FORMAT);
        assert_eq!(err.message, "missing data for column \"s\"");
        assert_eq!(err.context.as_deref(), Some("COPY t, line 2: \"2\""));
        let err = copy(text(), &["1\ta\tb\n"], &CopyLimits::default()).unwrap_err();
        assert_eq!(err.message, "extra data after last expected column");
    }

    #[test]
    fn bad_values_name_line_and_column() {
        let err = copy(csv(false), &["1,a\n2,b\nx,c\n"], &CopyLimits::default()).unwrap_err();
        assert_eq!(err.sqlstate, SqlState::INVALID_TEXT_REPRESENTATION);
        assert_eq!(err.message, "invalid input syntax for type integer: \"x\"");
        assert_eq!(
            err.context.as_deref(),
            Some("COPY t, line 3, column id: \"x\"")
        );
    }

    #[test]
    fn line_and_input_bounds() {
        let limits = CopyLimits {
            line_bytes_max: 16,
            input_bytes_max: 1000,
        };
        // A long line refused while it arrives, before its end.
        let err = copy(csv(false), &["1,a\n2,", &"x".repeat(20)], &limits).unwrap_err();
        assert_eq!(err.sqlstate, SqlState::PROGRAM_LIMIT_EXCEEDED);
        assert_eq!(err.message, "COPY line too long");
        assert_eq!(err.context.as_deref(), Some("COPY t, line 2"));
        // Many short lines: the input bound.
        let many: String = (0..200).map(|i| format!("{i},abc\n")).collect();
        let err = copy(csv(false), &[&many], &limits).unwrap_err();
        assert_eq!(err.sqlstate, SqlState::PROGRAM_LIMIT_EXCEEDED);
        assert_eq!(err.message, "COPY input too large");
        assert!(err.detail.unwrap().contains("copy_input_bytes_max"));
    }

    #[test]
    fn many_rows_cast_in_batches() {
        let input: String = (0..20_000).map(|i| format!("{i}\tv{i}\n")).collect();
        let mut c = CopyIn::new("t", schema(), vec![0, 1], text());
        c.feed(input.as_bytes(), &CopyLimits::default()).unwrap();
        // Held as typed batches, not as text, past the first batch.
        assert!(c.batches.len() >= 2);
        let b = c.finish().unwrap();
        assert_eq!(b.num_rows(), 20_000);
        let ids = b.column(0).as_any().downcast_ref::<Int32Array>().unwrap();
        assert_eq!(ids.value(19_999), 19_999);
    }

    #[test]
    fn columns_not_listed_are_null() {
        let mut c = CopyIn::new("t", schema(), vec![0], csv(false));
        c.feed(b"7\n", &CopyLimits::default()).unwrap();
        assert_eq!(rows(&c.finish().unwrap()), [(7, None)]);
    }

    #[test]
    fn strings_cast_with_the_column_named() {
        let err = cast_strings(vec![Some("x".into())], &DataType::Int64, "n").unwrap_err();
        assert_eq!(
            err.message,
            "invalid input syntax for type bigint: \"x\" in column \"n\""
        );
    }
}
