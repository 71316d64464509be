//! `REGEXP_EXTRACT(s, pattern [, group])`: Flink's text of capture group
//! `group` (default 0, the whole match) of the first match of `pattern` in
//! `s`, as Java's `Matcher.find()` gives it: NULL when the pattern does
//! not match or the group took no part in the match. The pattern has the
//! syntax of Rust's `regex` crate (Perl-like, without look-around or
//! back-references). An invalid pattern, or a group the pattern does not
//! have, is refused.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::types::{logical_int64, logical_string, NativeType};
use datafusion::error::Result;
use datafusion::logical_expr::{
    Coercion, ColumnarValue, ReturnFieldArgs, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, TypeSignature, TypeSignatureClass, Volatility,
};
use regex::{CaptureLocations, Regex};

use super::{
    invalid_argument, invalid_value, literal_int, literal_text, result, text_rows, Int, Text,
};

const NAME: &str = "regexp_extract";

pub fn udf() -> ScalarUDF {
    let text = || Coercion::new_exact(TypeSignatureClass::Native(logical_string()));
    let int = Coercion::new_implicit(
        TypeSignatureClass::Native(logical_int64()),
        vec![TypeSignatureClass::Integer],
        NativeType::Int64,
    );
    ScalarUDF::new_from_impl(RegexpExtract {
        signature: Signature::one_of(
            vec![
                TypeSignature::Coercible(vec![text(), text()]),
                TypeSignature::Coercible(vec![text(), text(), int]),
            ],
            Volatility::Immutable,
        ),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct RegexpExtract {
    signature: Signature,
}

fn compile(pattern: &str) -> std::result::Result<Regex, String> {
    Regex::new(pattern).map_err(|e| {
        // The crate's message draws the pattern over several lines; its
        // last line says what is wrong.
        let text = e.to_string();
        let what = text.lines().last().unwrap_or_default();
        let what = what.trim_start_matches("error: ");
        format!("invalid regular expression '{pattern}': {what}")
    })
}

/// Checks that `re` has capture group `group`.
fn check_group(re: &Regex, group: i64) -> std::result::Result<usize, String> {
    let groups = re.captures_len() - 1;
    usize::try_from(group)
        .ok()
        .filter(|g| *g <= groups)
        .ok_or_else(|| {
            format!(
                "group {group} does not exist: the pattern '{}' has {groups} group(s)",
                re.as_str()
            )
        })
}

/// Group `group` of the first match of `re` in `s` (`locations`: scratch
/// space of `re`, reused from row to row).
fn extract<'a>(
    re: &Regex,
    s: &'a str,
    group: usize,
    locations: &mut CaptureLocations,
) -> Option<&'a str> {
    if group == 0 {
        return re.find(s).map(|m| m.as_str());
    }
    re.captures_read(locations, s)?;
    let (start, end) = locations.get(group)?;
    Some(&s[start..end])
}

impl ScalarUDFImpl for RegexpExtract {
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
            let re = compile(&p).map_err(|e| invalid_argument(NAME, e))?;
            if let Some(g) = literal_int(args.scalar_arguments, 2)? {
                check_group(&re, g).map_err(|e| invalid_argument(NAME, e))?;
            }
        } else if literal_int(args.scalar_arguments, 2)?.is_some_and(|g| g < 0) {
            return Err(invalid_argument(NAME, "the group must not be negative"));
        }
        Ok(Arc::new(Field::new(NAME, DataType::Utf8, true)))
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let s = Text::new(&args.args[0])?;
        let pattern = Text::new(&args.args[1])?;
        let group = match args.args.get(2) {
            Some(g) => Int::new(g)?,
            None => Int::Const(Some(0)),
        };
        // The usual case, a literal pattern and group: checked once.
        let fixed = match (&pattern, &group) {
            (Text::Const(Some(p)), Int::Const(Some(g))) => {
                let re = compile(p).map_err(|e| invalid_value(NAME, e))?;
                let g = check_group(&re, *g).map_err(|e| invalid_value(NAME, e))?;
                Some((re, g))
            }
            _ => None,
        };
        let mut locations = fixed.as_ref().map(|(re, _)| re.capture_locations());
        // Otherwise compiled once per distinct pattern.
        let mut compiled: HashMap<String, Regex> = HashMap::new();
        let out = text_rows(args.number_rows, |row| {
            let (Some(s), Some(p), Some(g)) = (s.get(row), pattern.get(row), group.get(row)) else {
                return Ok(None);
            };
            if let (Some((re, g)), Some(locations)) = (&fixed, &mut locations) {
                return Ok(extract(re, s, *g, locations));
            }
            if !compiled.contains_key(p) {
                let re = compile(p).map_err(|e| invalid_value(NAME, e))?;
                compiled.insert(p.to_string(), re);
            }
            let re = &compiled[p];
            let g = check_group(re, g).map_err(|e| invalid_value(NAME, e))?;
            Ok(extract(re, s, g, &mut re.capture_locations()))
        });
        result(&args.args, out?)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{eval, eval1};

    const Q21: &str = "'(&|^)channel_id=([^&]*)'";

    #[test]
    fn first_match_and_group() {
        let x = |s: &str, g: i64| eval1(&format!("regexp_extract('{s}', {Q21}, {g})")).unwrap();
        assert_eq!(x("https://x/item.htm?query=1&channel_id=42", 2), "42");
        assert_eq!(x("channel_id=7&channel_id=8", 2), "7");
        assert_eq!(x("channel_id=7", 1), "");
        assert_eq!(x("a=1&channel_id=&b=2", 2), "");
        assert_eq!(x("https://x/item.htm?query=1", 2), "NULL");
        assert_eq!(x("a=1&channel_id=9", 0), "&channel_id=9");
        // Without a group: the whole match.
        assert_eq!(
            eval1("regexp_extract('abc123def', '[0-9]+')").unwrap(),
            "123"
        );
        // A group that took no part in the match.
        assert_eq!(eval1("regexp_extract('b', '(a)|b', 1)").unwrap(), "NULL");
        assert_eq!(
            eval(
                "regexp_extract(a, b, c)",
                "('x1y22', '[0-9]+', 0), ('k=v', '(\\w)=(\\w)', 2), (NULL, 'a', 0), ('abc', NULL, 0), ('abc', 'a', NULL)"
            )
            .unwrap(),
            ["1", "v", "NULL", "NULL", "NULL"]
        );
        assert_eq!(
            eval(
                &format!("regexp_extract(a, {Q21}, 2)"),
                "('q=1&channel_id=5'), ('q=1'), (NULL)"
            )
            .unwrap(),
            ["5", "NULL", "NULL"]
        );
    }

    #[test]
    fn bad_patterns_and_groups_are_refused() {
        for call in [
            "regexp_extract('abc', '(a', 1)",
            "regexp_extract('abc', '(a)', 2)",
            "regexp_extract('abc', '(a)', -1)",
            "regexp_extract('abc', a, -1)",
        ] {
            let err = eval(call, "('x')").unwrap_err();
            assert!(
                err.contains("invalid argument for regexp_extract"),
                "{call}: {err}"
            );
        }
        let err = eval("regexp_extract('abc', a, 1)", "('(b)'), ('b')").unwrap_err();
        assert!(err.contains("group 1 does not exist"), "{err}");
    }
}
