//! COPY ... FROM STDIN: parsing PostgreSQL's text and CSV formats into a
//! batch of the table's types.

use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, BinaryBuilder, RecordBatch, StringArray};
use datafusion::arrow::compute::{cast_with_options, CastOptions};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::util::display::FormatOptions;

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

fn unescape_text(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let mut chars = field.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('b') => out.push('\u{8}'),
            Some('f') => out.push('\u{c}'),
            Some('v') => out.push('\u{b}'),
            Some(o) => out.push(o),
            None => {}
        }
    }
    out
}

fn parse_text(data: &str, delimiter: u8, null: &str) -> Vec<Vec<Option<String>>> {
    let mut rows = Vec::new();
    for line in data.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line == "\\." {
            break;
        }
        if line.is_empty() {
            continue;
        }
        // Split on unescaped delimiters.
        let mut fields = Vec::new();
        let mut cur = String::new();
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\\' {
                cur.push(c);
                if let Some(n) = chars.next() {
                    cur.push(n);
                }
            } else if c as u32 == delimiter as u32 {
                fields.push(std::mem::take(&mut cur));
            } else {
                cur.push(c);
            }
        }
        fields.push(cur);
        rows.push(
            fields
                .into_iter()
                .map(|f| {
                    if f == null {
                        None
                    } else {
                        Some(unescape_text(&f))
                    }
                })
                .collect(),
        );
    }
    rows
}

fn parse_csv(
    data: &str,
    delimiter: u8,
    null: &str,
    header: bool,
    quote: u8,
) -> Vec<Vec<Option<String>>> {
    let mut rows = Vec::new();
    let mut row: Vec<Option<String>> = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut chars = data.chars().peekable();
    let q = quote as char;
    let d = delimiter as char;
    let finish_field = |row: &mut Vec<Option<String>>, cur: &mut String, was_quoted: &mut bool| {
        let f = std::mem::take(cur);
        row.push(if !*was_quoted && f == null {
            None
        } else {
            Some(f)
        });
        *was_quoted = false;
    };
    while let Some(c) = chars.next() {
        if quoted {
            if c == q {
                if chars.peek() == Some(&q) {
                    cur.push(q);
                    chars.next();
                } else {
                    quoted = false;
                }
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            c if c == q => {
                quoted = true;
                was_quoted = true;
            }
            c if c == d => finish_field(&mut row, &mut cur, &mut was_quoted),
            '\r' => {}
            '\n' => {
                if cur == "\\." && row.is_empty() {
                    break;
                }
                finish_field(&mut row, &mut cur, &mut was_quoted);
                rows.push(std::mem::take(&mut row));
            }
            other => cur.push(other),
        }
    }
    // A last line without a newline, unless it is the end marker.
    let end_marker = cur == "\\." && row.is_empty();
    let nothing_left = cur.is_empty() && row.is_empty();
    if !end_marker && !nothing_left {
        finish_field(&mut row, &mut cur, &mut was_quoted);
        rows.push(row);
    }
    if header && !rows.is_empty() {
        rows.remove(0);
    }
    rows
}

fn decode_bytea(s: &str) -> SqlResult<Vec<u8>> {
    if let Some(hex) = s.strip_prefix("\\x") {
        if hex.len() % 2 != 0 {
            return Err(SqlError::new(
                "22P02",
                "invalid hexadecimal data: odd number of digits",
            ));
        }
        (0..hex.len())
            .step_by(2)
            .map(|i| {
                u8::from_str_radix(&hex[i..i + 2], 16).map_err(|_| {
                    SqlError::new(
                        "22P02",
                        format!("invalid hexadecimal digit: \"{}\"", &hex[i..i + 2]),
                    )
                })
            })
            .collect()
    } else {
        Ok(s.as_bytes().to_vec())
    }
}

/// Converts text values to an array of `target` type.
pub fn cast_strings(
    values: Vec<Option<String>>,
    target: &DataType,
    column: &str,
) -> SqlResult<ArrayRef> {
    if matches!(target, DataType::Binary) {
        let mut b = BinaryBuilder::new();
        for v in values {
            match v {
                Some(s) => b.append_value(decode_bytea(&s)?),
                None => b.append_null(),
            }
        }
        return Ok(Arc::new(b.finish()));
    }
    let values: Vec<Option<String>> = if matches!(target, DataType::Interval(_)) {
        values
            .into_iter()
            .map(|v| v.map(|s| crate::naming::normalize_interval_text(&s).unwrap_or(s)))
            .collect()
    } else {
        values
    };
    let strings: ArrayRef = Arc::new(StringArray::from(values));
    let opts = CastOptions {
        safe: false,
        format_options: FormatOptions::default(),
    };
    cast_with_options(&strings, target, &opts).map_err(|e| {
        SqlError::new(
            "22P02",
            format!(
                "invalid input syntax for type {} in column \"{column}\": {e}",
                crate::types::sql_type_name(target)
            ),
        )
    })
}

/// Parses COPY data into a batch of the table's schema.
pub fn parse_copy(
    data: &[u8],
    format: &CopyFormat,
    schema: &SchemaRef,
    columns: &[usize],
) -> SqlResult<RecordBatch> {
    let text = std::str::from_utf8(data)
        .map_err(|_| SqlError::new("22021", "invalid byte sequence for encoding \"UTF8\""))?;
    let rows = match format {
        CopyFormat::Text { delimiter, null } => parse_text(text, *delimiter, null),
        CopyFormat::Csv {
            delimiter,
            null,
            header,
            quote,
        } => parse_csv(text, *delimiter, null, *header, *quote),
    };
    let ncols = schema.fields().len();
    let mut per_col: Vec<Vec<Option<String>>> = vec![Vec::with_capacity(rows.len()); ncols];
    for (line, row) in rows.into_iter().enumerate() {
        if row.len() != columns.len() {
            let msg = if row.len() < columns.len() {
                "missing data for column"
            } else {
                "extra data after last expected column"
            };
            return Err(SqlError::new("22P04", format!("{msg} (line {})", line + 1)));
        }
        let mut vals: Vec<Option<String>> = vec![None; ncols];
        for (i, v) in row.into_iter().enumerate() {
            vals[columns[i]] = v;
        }
        for (c, v) in vals.into_iter().enumerate() {
            per_col[c].push(v);
        }
    }
    let n = per_col.first().map_or(0, |c| c.len());
    let arrays = per_col
        .into_iter()
        .enumerate()
        .map(|(c, vals)| cast_strings(vals, schema.field(c).data_type(), schema.field(c).name()))
        .collect::<SqlResult<Vec<_>>>()?;
    RecordBatch::try_new_with_options(
        schema.clone(),
        arrays,
        &datafusion::arrow::array::RecordBatchOptions::new().with_row_count(Some(n)),
    )
    .map_err(|e| SqlError::new("23502", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_format() {
        let rows = parse_text("1\ta\\tb\n2\t\\N\n\\.\n", b'\t', "\\N");
        assert_eq!(
            rows,
            vec![
                vec![Some("1".into()), Some("a\tb".into())],
                vec![Some("2".into()), None]
            ]
        );
    }

    #[test]
    fn csv_format() {
        let rows = parse_csv("id,s\n1,\"a,\"\"b\"\"\"\n2,\n", b',', "", true, b'"');
        assert_eq!(
            rows,
            vec![
                vec![Some("1".into()), Some("a,\"b\"".into())],
                vec![Some("2".into()), None]
            ]
        );
    }
}
