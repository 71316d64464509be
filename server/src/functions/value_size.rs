//! A bound on the size of the values a function builds. DataFusion's
//! `repeat`, `lpad`, `rpad` and `array_repeat` build whatever size they
//! are asked for (up to Arrow's 2 GiB per column, or all of memory):
//! `repeat('x', 2147483647)` spent half a minute and gigabytes of memory
//! before the result was refused on the way out. [`SizeBounded`] wraps such a built-in: before it runs, the
//! size of every row's result is worked out from the arguments, and a call
//! that would build a value over [`VALUE_BYTES_MAX`] (or a column of
//! results over what a text column can hold) fails with PostgreSQL's
//! `requested length too large` (SQLSTATE 54000) without building
//! anything.

use std::fmt::Debug;
use std::hash::Hash;

use datafusion::arrow::array::{Array, AsArray, Int64Array};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, Documentation, ScalarFunctionArgs, ScalarUDFImpl, Signature,
};
use weir_executor::ExecError;

/// The largest value, in bytes, that a function may build: 256 MiB.
/// PostgreSQL allows 1 GB; Weir holds a result about four times on its
/// way to the client (the Arrow column, the collected batch, the encoded
/// row, the socket buffer), so a quarter of that keeps one statement's
/// peak near PostgreSQL's.
pub const VALUE_BYTES_MAX: u64 = 256 << 20;

/// The most bytes one text column of results can hold (Arrow's `Utf8`
/// has 32-bit offsets).
pub const COLUMN_BYTES_MAX: u64 = i32::MAX as u64;

/// Upper bounds of what one call would build.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ResultBytes {
    /// The largest row's value.
    pub max_value: u64,
    /// All rows together.
    pub total: u64,
}

impl ResultBytes {
    /// Adds one row's value of `bytes` (saturating).
    pub fn add(&mut self, bytes: u64) {
        self.max_value = self.max_value.max(bytes);
        self.total = self.total.saturating_add(bytes);
    }
}

/// Works out, from a call's arguments, how large its results would be.
pub trait ResultSize: Debug + PartialEq + Eq + Hash + Send + Sync + 'static {
    /// An upper bound of the bytes of each of the `rows` results; a NULL
    /// argument counts as an empty result.
    fn result_bytes(&self, args: &[ColumnarValue], rows: usize) -> Result<ResultBytes>;
}

/// A DataFusion built-in whose results are checked against
/// [`VALUE_BYTES_MAX`] before it runs; everything else is the built-in's.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct SizeBounded<F, S> {
    inner: F,
    size: S,
}

impl<F, S> SizeBounded<F, S> {
    pub fn new(inner: F, size: S) -> Self {
        SizeBounded { inner, size }
    }
}

/// The error for a value over the bound: PostgreSQL's message and code.
pub fn too_large(function: &str, bytes: u64, limit: u64, what: &str) -> DataFusionError {
    let err = ExecError::User {
        sqlstate: weir_executor::SqlState::PROGRAM_LIMIT_EXCEEDED,
        message: "requested length too large".to_string(),
        hint: Some(format!(
            "{function} would build {what} of {bytes} bytes; the limit is {limit} bytes."
        )),
    };
    DataFusionError::External(Box::new(err))
}

impl<F, S> ScalarUDFImpl for SizeBounded<F, S>
where
    F: ScalarUDFImpl + PartialEq + Eq + Hash,
    S: ResultSize,
{
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn aliases(&self) -> &[String] {
        self.inner.aliases()
    }

    fn signature(&self) -> &Signature {
        self.inner.signature()
    }

    fn return_type(&self, arg_types: &[DataType]) -> Result<DataType> {
        self.inner.return_type(arg_types)
    }

    fn coerce_types(&self, arg_types: &[DataType]) -> Result<Vec<DataType>> {
        self.inner.coerce_types(arg_types)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let rows = if args
            .args
            .iter()
            .all(|a| matches!(a, ColumnarValue::Scalar(_)))
        {
            1
        } else {
            args.number_rows
        };
        let bytes = self.size.result_bytes(&args.args, rows)?;
        if bytes.max_value > VALUE_BYTES_MAX {
            return Err(too_large(
                self.name(),
                bytes.max_value,
                VALUE_BYTES_MAX,
                "a value",
            ));
        }
        if bytes.total > COLUMN_BYTES_MAX {
            return Err(too_large(
                self.name(),
                bytes.total,
                COLUMN_BYTES_MAX,
                "a column of values (one batch of rows)",
            ));
        }
        self.inner.invoke_with_args(args)
    }

    fn documentation(&self) -> Option<&Documentation> {
        self.inner.documentation()
    }
}

/// A text argument's byte length at `row` (`None` for NULL), read without
/// copying the column.
pub fn text_len(arg: &ColumnarValue, row: usize) -> Result<Option<usize>> {
    match arg {
        ColumnarValue::Scalar(s) => Ok(scalar_str(s)?.map(str::len)),
        ColumnarValue::Array(a) => {
            if a.is_null(row) {
                return Ok(None);
            }
            Ok(Some(match a.data_type() {
                DataType::Utf8 => a.as_string::<i32>().value(row).len(),
                DataType::LargeUtf8 => a.as_string::<i64>().value(row).len(),
                DataType::Utf8View => a.as_string_view().value(row).len(),
                other => return Err(unexpected("text", other)),
            }))
        }
    }
}

/// The most bytes one character of a text argument at `row` takes (1 for
/// an empty text or NULL).
pub fn widest_char_bytes(arg: &ColumnarValue, row: usize) -> Result<usize> {
    let widest = |s: &str| s.chars().map(char::len_utf8).max().unwrap_or(1);
    match arg {
        ColumnarValue::Scalar(s) => Ok(scalar_str(s)?.map_or(1, widest)),
        ColumnarValue::Array(a) => {
            if a.is_null(row) {
                return Ok(1);
            }
            Ok(match a.data_type() {
                DataType::Utf8 => widest(a.as_string::<i32>().value(row)),
                DataType::LargeUtf8 => widest(a.as_string::<i64>().value(row)),
                DataType::Utf8View => widest(a.as_string_view().value(row)),
                other => return Err(unexpected("text", other)),
            })
        }
    }
}

/// An integer argument: one value or a column, as `Int64`.
pub enum IntArg {
    Const(Option<i64>),
    Column(Int64Array),
}

impl IntArg {
    pub fn new(arg: &ColumnarValue) -> Result<IntArg> {
        Ok(match arg {
            ColumnarValue::Scalar(s) => match s.cast_to(&DataType::Int64)? {
                ScalarValue::Int64(v) => IntArg::Const(v),
                other => return Err(unexpected("an integer", &other.data_type())),
            },
            ColumnarValue::Array(a) => {
                IntArg::Column(cast(a, &DataType::Int64)?.as_primitive().clone())
            }
        })
    }

    pub fn get(&self, row: usize) -> Option<i64> {
        match self {
            IntArg::Const(v) => *v,
            IntArg::Column(a) => a.is_valid(row).then(|| a.value(row)),
        }
    }
}

fn scalar_str(s: &ScalarValue) -> Result<Option<&str>> {
    if s.is_null() {
        return Ok(None);
    }
    match s.try_as_str() {
        Some(v) => Ok(v),
        None => Err(unexpected("text", &s.data_type())),
    }
}

fn unexpected(wanted: &str, got: &DataType) -> DataFusionError {
    DataFusionError::Internal(format!("expected {wanted}, got {got}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::StringArray;
    use std::sync::Arc;

    #[test]
    fn reads_text_lengths_and_widths_without_copying() {
        let col = ColumnarValue::Array(Arc::new(StringArray::from(vec![
            Some("ab"),
            None,
            Some("é"),
        ])));
        assert_eq!(text_len(&col, 0).unwrap(), Some(2));
        assert_eq!(text_len(&col, 1).unwrap(), None);
        assert_eq!(widest_char_bytes(&col, 2).unwrap(), 2);
        assert_eq!(widest_char_bytes(&col, 1).unwrap(), 1);
        let lit = ColumnarValue::Scalar(ScalarValue::Utf8(Some("€".into())));
        assert_eq!(text_len(&lit, 7).unwrap(), Some(3));
        assert_eq!(widest_char_bytes(&lit, 7).unwrap(), 3);
    }
}
