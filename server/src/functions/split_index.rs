//! `SPLIT_INDEX(s, delimiter, i)`: Flink's zero-based `i`-th piece of `s`
//! split at every `delimiter` (a string; consecutive delimiters give empty
//! pieces). NULL when `i` is negative or past the last piece, and for an
//! empty `s` (which has no pieces, as in Flink). An empty delimiter is
//! refused.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::types::{logical_int64, logical_string, NativeType};
use datafusion::error::Result;
use datafusion::logical_expr::{
    Coercion, ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, TypeSignatureClass, Volatility,
};

use super::{invalid_argument, invalid_value, literal_text, result, text_rows, Int, Text};

const NAME: &str = "split_index";
const EMPTY: &str = "the delimiter must not be empty";

pub fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(SplitIndex {
        signature: Signature::coercible(
            vec![
                Coercion::new_exact(TypeSignatureClass::Native(logical_string())),
                Coercion::new_exact(TypeSignatureClass::Native(logical_string())),
                Coercion::new_implicit(
                    TypeSignatureClass::Native(logical_int64()),
                    vec![TypeSignatureClass::Integer],
                    NativeType::Int64,
                ),
            ],
            Volatility::Immutable,
        ),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct SplitIndex {
    signature: Signature,
}

fn piece<'a>(s: &'a str, delimiter: &str, i: i64) -> Option<&'a str> {
    if s.is_empty() || i < 0 {
        return None;
    }
    s.split(delimiter).nth(usize::try_from(i).ok()?)
}

impl ScalarUDFImpl for SplitIndex {
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
        if literal_text(args.scalar_arguments, 1)?.is_some_and(|d| d.is_empty()) {
            return Err(invalid_argument(NAME, EMPTY));
        }
        Ok(Arc::new(Field::new(NAME, DataType::Utf8, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let s = Text::new(&args.args[0])?;
        let delimiter = Text::new(&args.args[1])?;
        let index = Int::new(&args.args[2])?;
        let out = text_rows(args.number_rows, |row| {
            let (Some(s), Some(d), Some(i)) = (s.get(row), delimiter.get(row), index.get(row))
            else {
                return Ok(None);
            };
            if d.is_empty() {
                return Err(invalid_value(NAME, EMPTY));
            }
            Ok(piece(s, d, i))
        })?;
        result(&args.args, out)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{eval, eval1};

    const URL: &str = "'https://www.nexmark.com/a_b/cd/e/item.htm?query=1'";

    #[test]
    fn zero_based_pieces() {
        let at = |i: i64| eval1(&format!("split_index({URL}, '/', {i})")).unwrap();
        assert_eq!(at(0), "https:");
        assert_eq!(at(1), "");
        assert_eq!(at(2), "www.nexmark.com");
        assert_eq!(at(3), "a_b");
        assert_eq!(at(6), "item.htm?query=1");
        assert_eq!(at(7), "NULL");
        assert_eq!(at(-1), "NULL");
        assert_eq!(eval1("split_index('a--b--', '--', 1)").unwrap(), "b");
        assert_eq!(eval1("split_index('a--b--', '--', 2)").unwrap(), "");
        assert_eq!(eval1("split_index('', '/', 0)").unwrap(), "NULL");
        assert_eq!(eval1("split_index('abc', '/', 0)").unwrap(), "abc");
        assert_eq!(eval1("split_index(NULL, '/', 0)").unwrap(), "NULL");
        assert_eq!(eval1("split_index('a/b', NULL, 0)").unwrap(), "NULL");
        assert_eq!(eval1("split_index('a/b', '/', NULL)").unwrap(), "NULL");
        assert_eq!(
            eval(
                "split_index(a, b, c)",
                "('a/b/c', '/', 2), ('x,y', ',', 0), (NULL, '/', 0), ('a/b', '/', 5)"
            )
            .unwrap(),
            ["c", "x", "NULL", "NULL"]
        );
        // An integer of another width is widened.
        assert_eq!(
            eval1("split_index('a/b', '/', CAST(1 AS smallint))").unwrap(),
            "b"
        );
    }

    #[test]
    fn empty_delimiter_is_refused() {
        let err = eval1("split_index('a/b', '', 0)").unwrap_err();
        assert!(err.contains("invalid argument for split_index"), "{err}");
        let err = eval("split_index('a/b', a, 0)", "('/'), ('')").unwrap_err();
        assert!(err.contains("must not be empty"), "{err}");
    }
}
