//! Scalar functions Weir adds to DataFusion's: Flink's built-ins that the
//! Nexmark queries use (`HOUR`, `DATE_FORMAT`, `SPLIT_INDEX`,
//! `REGEXP_EXTRACT`), Nexmark's `count_char` UDF, and `mod`. [`register`]
//! adds them all to a session context.
//! `repeat`, `lpad`, `rpad` and `array_repeat` are DataFusion's, wrapped so
//! that a value over [`value_size::VALUE_BYTES_MAX`] is refused (54000)
//! before it is built.
//!
//! Every function is a DataFusion UDF evaluated over whole Arrow arrays.
//! A NULL argument gives NULL. An argument value a function cannot use (an
//! invalid regular expression, an unknown date pattern letter, ...) is
//! refused when the query is planned if it is a literal — a plan error
//! "invalid argument for f: ..." (SQLSTATE 22023) — and otherwise fails the
//! row that carries it, with the same message. A wrong number or type of
//! arguments is DataFusion's "no function matches" plan error (42883).

mod array_repeat;
mod count_char;
mod date_format;
mod hour;
mod modulo;
mod pad;
mod pg_format;
pub mod pg_sleep;
mod regexp_extract;
mod repeat;
mod split_index;
mod string_agg;
mod to_char;
mod to_date;
mod to_timestamp;
pub mod value_size;

use std::fmt::Display;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int64Array, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF};
use datafusion::prelude::SessionContext;

/// Registers every function of this module with `ctx` (replacing
/// DataFusion's `date_format`, an alias of `to_char` with strftime
/// patterns, by Flink's with Java patterns).
pub fn register(ctx: &SessionContext) {
    for f in all() {
        ctx.register_udf(f);
    }
    // PostgreSQL's, replacing DataFusion's (literal delimiters only).
    ctx.register_udaf(string_agg::udaf());
}

/// Every function of this module.
pub fn all() -> Vec<ScalarUDF> {
    vec![
        modulo::udf(),
        count_char::udf(),
        hour::udf(),
        date_format::udf(),
        split_index::udf(),
        regexp_extract::udf(),
        // PostgreSQL's template patterns, replacing DataFusion's (chrono's).
        to_char::udf(),
        to_date::udf(),
        to_timestamp::udf(),
        // DataFusion's, with a bound on the value they build (value_size.rs).
        repeat::udf(),
        pad::lpad(),
        pad::rpad(),
        array_repeat::udf(),
    ]
}

/// A literal argument the function cannot use, found while planning.
fn invalid_argument(function: &str, detail: impl Display) -> DataFusionError {
    DataFusionError::Plan(format!("invalid argument for {function}: {detail}"))
}

/// A row's argument value the function cannot use.
fn invalid_value(function: &str, detail: impl Display) -> DataFusionError {
    DataFusionError::Execution(format!("invalid argument for {function}: {detail}"))
}

/// A text argument: one value for every row, or a column (as `Utf8`).
enum Text {
    Const(Option<String>),
    Column(ArrayRef),
}

impl Text {
    fn new(v: &ColumnarValue) -> Result<Text> {
        Ok(match v {
            ColumnarValue::Scalar(s) => Text::Const(scalar_text(s)?),
            ColumnarValue::Array(a) => Text::Column(if a.data_type() == &DataType::Utf8 {
                a.clone()
            } else {
                cast(a, &DataType::Utf8)?
            }),
        })
    }

    fn get(&self, row: usize) -> Option<&str> {
        match self {
            Text::Const(v) => v.as_deref(),
            Text::Column(a) => {
                let a = a.as_string::<i32>();
                a.is_valid(row).then(|| a.value(row))
            }
        }
    }
}

/// An integer argument: one value for every row, or a column.
enum Int {
    Const(Option<i64>),
    Column(ArrayRef),
}

impl Int {
    fn new(v: &ColumnarValue) -> Result<Int> {
        Ok(match v {
            ColumnarValue::Scalar(s) => Int::Const(scalar_int(s)?),
            ColumnarValue::Array(a) => Int::Column(cast(a, &DataType::Int64)?),
        })
    }

    fn get(&self, row: usize) -> Option<i64> {
        match self {
            Int::Const(v) => *v,
            Int::Column(a) => {
                let a = a
                    .as_any()
                    .downcast_ref::<Int64Array>()
                    .expect("cast to Int64");
                a.is_valid(row).then(|| a.value(row))
            }
        }
    }
}

/// The text of a literal argument (`None` for NULL).
fn scalar_text(s: &ScalarValue) -> Result<Option<String>> {
    if s.is_null() {
        return Ok(None);
    }
    match s.try_as_str() {
        Some(v) => Ok(v.map(str::to_string)),
        None => match s.cast_to(&DataType::Utf8)? {
            ScalarValue::Utf8(v) => Ok(v),
            other => Err(DataFusionError::Internal(format!(
                "expected text, got {other:?}"
            ))),
        },
    }
}

/// The value of a literal integer argument (`None` for NULL).
fn scalar_int(s: &ScalarValue) -> Result<Option<i64>> {
    match s.cast_to(&DataType::Int64)? {
        ScalarValue::Int64(v) => Ok(v),
        other => Err(DataFusionError::Internal(format!(
            "expected an integer, got {other:?}"
        ))),
    }
}

/// The literal text at argument `i` while planning, if it is a non-NULL
/// literal.
fn literal_text(args: &[Option<&ScalarValue>], i: usize) -> Result<Option<String>> {
    match args.get(i).copied().flatten() {
        Some(s) => scalar_text(s),
        None => Ok(None),
    }
}

/// The literal integer at argument `i` while planning, if it is a non-NULL
/// literal.
fn literal_int(args: &[Option<&ScalarValue>], i: usize) -> Result<Option<i64>> {
    match args.get(i).copied().flatten() {
        Some(s) => scalar_int(s),
        None => Ok(None),
    }
}

/// The function's result: a scalar when every argument was one (so that
/// constant folding gets a constant), otherwise the array.
fn result(args: &[ColumnarValue], out: ArrayRef) -> Result<ColumnarValue> {
    if args.iter().all(|a| matches!(a, ColumnarValue::Scalar(_))) {
        Ok(ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?))
    } else {
        Ok(ColumnarValue::Array(out))
    }
}

/// A text result of `n` rows from a function of the row index.
fn text_rows<'a>(n: usize, f: impl FnMut(usize) -> Result<Option<&'a str>>) -> Result<ArrayRef> {
    let out = (0..n).map(f).collect::<Result<StringArray>>()?;
    Ok(Arc::new(out))
}

#[cfg(test)]
mod test_util {
    //! Calling a UDF the way a query does: planned in a session (so that
    //! literal arguments are checked and arguments coerced), evaluated over
    //! a batch with DataFusion.
    use datafusion::arrow::array::RecordBatch;
    use datafusion::arrow::util::display::array_value_to_string;
    use datafusion::prelude::SessionContext;

    /// The rows of `SELECT <expr> FROM (VALUES ...)`: `values` is the
    /// inside of VALUES with columns named `a`, `b`, `c`...; NULL shows as
    /// "NULL".
    pub fn eval(expr: &str, values: &str) -> Result<Vec<String>, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ctx = SessionContext::new();
        super::register(&ctx);
        let width = values
            .trim_start()
            .trim_start_matches('(')
            .split(')')
            .next()
            .map_or(1, |row| split_top_level(row).len());
        let cols: Vec<String> = (0..width)
            .map(|i| ((b'a' + i as u8) as char).to_string())
            .collect();
        let sql = format!(
            "SELECT {expr} FROM (VALUES {values}) AS t({})",
            cols.join(", ")
        );
        let batches: Vec<RecordBatch> = rt
            .block_on(async { ctx.sql(&sql).await?.collect().await })
            .map_err(|e| e.strip_backtrace())?;
        let mut out = Vec::new();
        for b in &batches {
            for i in 0..b.num_rows() {
                let c = b.column(0);
                out.push(if c.is_null(i) {
                    "NULL".to_string()
                } else {
                    array_value_to_string(c, i).unwrap()
                });
            }
        }
        Ok(out)
    }

    /// `eval` of a constant expression (one row, constant-folded).
    pub fn eval1(expr: &str) -> Result<String, String> {
        eval(expr, "(1)").map(|mut v| v.remove(0))
    }

    /// Splits a VALUES row at commas outside quotes and parentheses.
    fn split_top_level(row: &str) -> Vec<&str> {
        let (mut depth, mut quoted, mut start, mut parts) = (0, false, 0, Vec::new());
        for (i, ch) in row.char_indices() {
            match ch {
                '\'' => quoted = !quoted,
                '(' if !quoted => depth += 1,
                ')' if !quoted => depth -= 1,
                ',' if !quoted && depth == 0 => {
                    parts.push(&row[start..i]);
                    start = i + 1;
                }
                _ => {}
            }
        }
        parts.push(&row[start..]);
        parts
    }
}

#[cfg(test)]
mod tests {
    use super::test_util::eval1;

    /// Wrong arity or argument types: DataFusion's "no function matches"
    /// error (SQLSTATE 42883, see weir_executor::error).
    #[test]
    fn wrong_arguments_are_plan_errors() {
        for call in [
            "count_char('abc')",
            "hour(1, 2)",
            "date_format(TIMESTAMP '2025-01-01 00:00:00')",
            "split_index('a/b', '/')",
            "regexp_extract('a')",
            "mod(1)",
        ] {
            let err = eval1(call).expect_err(call);
            assert!(
                err.to_ascii_lowercase().contains("no function matches")
                    || err.to_ascii_lowercase().contains("failed to coerce"),
                "{call}: {err}"
            );
        }
    }
}
