//! `count_char(s, c)`: how often the character `c` occurs in `s` — the
//! user-defined function of Nexmark q14 (`CountChar` in the Nexmark
//! repository), as a BIGINT. `c` must be exactly one character. Unlike
//! the Java UDF, which returns 0 for a NULL `s`, NULL gives NULL.

use datafusion::arrow::array::{ArrayRef, Int64Array};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::types::logical_string;
use datafusion::error::Result;
use datafusion::logical_expr::{
    Coercion, ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, TypeSignatureClass, Volatility,
};
use std::sync::Arc;

use super::{invalid_argument, invalid_value, literal_text, result, Text};

const NAME: &str = "count_char";

pub fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(CountChar {
        signature: Signature::coercible(
            vec![
                Coercion::new_exact(TypeSignatureClass::Native(logical_string())),
                Coercion::new_exact(TypeSignatureClass::Native(logical_string())),
            ],
            Volatility::Immutable,
        ),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct CountChar {
    signature: Signature,
}

/// The one character of `c`.
fn the_char(c: &str) -> Option<char> {
    let mut chars = c.chars();
    let first = chars.next()?;
    chars.next().is_none().then_some(first)
}

fn expected(c: &str) -> String {
    format!("the character to count must be one character, not '{c}'")
}

/// Occurrences of `c` in `s`.
fn count(s: &str, c: char) -> i64 {
    if c.is_ascii() {
        let b = c as u8;
        s.bytes().filter(|x| *x == b).count() as i64
    } else {
        s.chars().filter(|x| *x == c).count() as i64
    }
}

impl ScalarUDFImpl for CountChar {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn return_field_from_args(&self, args: ReturnFieldArgs) -> Result<FieldRef> {
        if let Some(c) = literal_text(args.scalar_arguments, 1)? {
            if the_char(&c).is_none() {
                return Err(invalid_argument(NAME, expected(&c)));
            }
        }
        Ok(Arc::new(Field::new(NAME, DataType::Int64, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let s = Text::new(&args.args[0])?;
        let c = Text::new(&args.args[1])?;
        let out: Int64Array = match (&s, &c) {
            // The common case: a column and a literal character.
            (Text::Column(_), Text::Const(Some(one))) => {
                let ch = the_char(one).ok_or_else(|| invalid_value(NAME, expected(one)))?;
                (0..args.number_rows)
                    .map(|i| s.get(i).map(|s| count(s, ch)))
                    .collect()
            }
            _ => (0..args.number_rows)
                .map(|i| match (s.get(i), c.get(i)) {
                    (Some(s), Some(c)) => {
                        let ch = the_char(c).ok_or_else(|| invalid_value(NAME, expected(c)))?;
                        Ok(Some(count(s, ch)))
                    }
                    _ => Ok(None),
                })
                .collect::<Result<_>>()?,
        };
        result(&args.args, Arc::new(out) as ArrayRef)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{eval, eval1};

    #[test]
    fn counts_one_character() {
        assert_eq!(eval1("count_char('accbc', 'c')").unwrap(), "3");
        assert_eq!(eval1("count_char('', 'c')").unwrap(), "0");
        assert_eq!(eval1("count_char('çça', 'ç')").unwrap(), "2");
        assert_eq!(
            eval("count_char(a, 'c')", "('cc'), (NULL), ('abc'), ('xyz')").unwrap(),
            ["2", "NULL", "1", "0"]
        );
        assert_eq!(
            eval("count_char(a, b)", "('cc', 'c'), ('aba', 'a'), ('x', NULL)").unwrap(),
            ["2", "2", "NULL"]
        );
        assert_eq!(eval1("count_char(NULL, 'c')").unwrap(), "NULL");
    }

    #[test]
    fn the_character_must_be_one() {
        for c in ["''", "'cc'"] {
            let err = eval1(&format!("count_char('abc', {c})")).unwrap_err();
            assert!(err.contains("invalid argument for count_char"), "{err}");
        }
        let err = eval("count_char('abc', a)", "('c'), ('cd')").unwrap_err();
        assert!(err.contains("must be one character, not 'cd'"), "{err}");
    }
}
