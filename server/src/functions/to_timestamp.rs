//! PostgreSQL's `to_timestamp`, both forms returning `timestamptz`:
//!
//! - `to_timestamp(double precision)`: seconds since 1970-01-01 00:00 UTC,
//!   rounded to the microsecond. Integers and decimals are read as
//!   doubles; so is text, as PostgreSQL resolves `to_timestamp('123')`.
//!   NaN is refused (22008, PostgreSQL's "timestamp cannot be NaN");
//!   so are the infinities (0A000: Arrow timestamps have no infinite value,
//!   PostgreSQL gives `infinity`) and values beyond the range (22008).
//! - `to_timestamp(text, template)`: the text read by a PostgreSQL
//!   template (`YYYY-MM-DD HH24:MI:SS`, see `pg_format`), in UTC, the
//!   sessions' zone.
//!
//! This replaces DataFusion's `to_timestamp`, which takes chrono
//! patterns and returns a timestamp without a zone.

use std::sync::Arc;
use weir_executor::SqlState;

use datafusion::arrow::array::{Array, AsArray, TimestampMicrosecondArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, TimeUnit};
use datafusion::common::types::{logical_string, NativeType};
use datafusion::common::DataFusionError;
use datafusion::error::Result;
use datafusion::logical_expr::{
    Coercion, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignature, TypeSignatureClass, Volatility,
};
use weir_executor::ExecError;

use super::pg_format::Templates;
use super::{result, Text};

const NAME: &str = "to_timestamp";

pub fn udf() -> ScalarUDF {
    let text = || Coercion::new_exact(TypeSignatureClass::Native(logical_string()));
    ScalarUDF::new_from_impl(ToTimestamp {
        signature: Signature::one_of(
            vec![
                TypeSignature::Coercible(vec![Coercion::new_implicit(
                    TypeSignatureClass::Float,
                    vec![
                        TypeSignatureClass::Numeric,
                        TypeSignatureClass::Native(logical_string()),
                    ],
                    NativeType::Float64,
                )]),
                TypeSignature::Coercible(vec![text(), text()]),
            ],
            Volatility::Immutable,
        ),
    })
}

/// The type of the result: PostgreSQL's timestamptz, as Weir stores it.
pub(super) fn timestamptz() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from(crate::types::UTC)))
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ToTimestamp {
    signature: Signature,
}

fn user_error(sqlstate: SqlState, message: String) -> DataFusionError {
    DataFusionError::External(Box::new(ExecError::user(sqlstate, message)))
}

/// Microseconds since the epoch of `seconds`, as PostgreSQL rounds them.
fn epoch_micros(seconds: f64) -> Result<i64> {
    if seconds.is_nan() {
        return Err(user_error(
            SqlState::DATETIME_FIELD_OVERFLOW,
            "timestamp cannot be NaN".into(),
        ));
    }
    if seconds.is_infinite() {
        let sign = if seconds < 0.0 { "-" } else { "" };
        return Err(user_error(
            SqlState::FEATURE_NOT_SUPPORTED,
            format!("timestamp value \"{sign}infinity\" is not supported"),
        ));
    }
    let micros = (seconds * 1e6).round();
    // Within what a timestamp can show (PostgreSQL stops at 294276 AD).
    if micros.abs() >= 9.2e18 || chrono::DateTime::from_timestamp_micros(micros as i64).is_none() {
        return Err(user_error(
            SqlState::DATETIME_FIELD_OVERFLOW,
            format!("timestamp out of range: \"{seconds}\""),
        ));
    }
    Ok(micros as i64)
}

impl ScalarUDFImpl for ToTimestamp {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(timestamptz())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let out = match args.args.as_slice() {
            [seconds] => {
                let seconds = cast(&seconds.to_array(n)?, &DataType::Float64)?;
                let seconds = seconds.as_primitive::<Float64Type>();
                (0..n)
                    .map(|i| {
                        seconds
                            .is_valid(i)
                            .then(|| epoch_micros(seconds.value(i)))
                            .transpose()
                    })
                    .collect::<Result<TimestampMicrosecondArray>>()?
            }
            [text, template] => {
                let text = Text::new(text)?;
                let mut templates = Templates::new(template)?;
                (0..n)
                    .map(|i| {
                        let (Some(s), Some(pattern)) = (text.get(i), templates.get(i)) else {
                            return Ok(None);
                        };
                        Ok(Some(pattern.parse(s)?.and_utc().timestamp_micros()))
                    })
                    .collect::<Result<TimestampMicrosecondArray>>()?
            }
            _ => {
                return Err(DataFusionError::Plan(format!(
                    "no function matches {NAME} with {} arguments",
                    args.args.len()
                )))
            }
        };
        let out = out.with_timezone(crate::types::UTC);
        result(&args.args, Arc::new(out))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{eval, eval1};

    #[test]
    fn epoch_seconds() {
        assert_eq!(
            eval1("to_timestamp(1586952123)").unwrap(),
            "2020-04-15T12:02:03Z"
        );
        assert_eq!(
            eval1("to_timestamp(1586952123.5)").unwrap(),
            "2020-04-15T12:02:03.500Z"
        );
        assert_eq!(eval1("to_timestamp(0)").unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(
            eval1("to_timestamp('1586952123')").unwrap(),
            "2020-04-15T12:02:03Z"
        );
        assert_eq!(eval1("to_timestamp(NULL)").unwrap(), "NULL");
        assert_eq!(
            eval1("arrow_typeof(to_timestamp(0))").unwrap(),
            "Timestamp(µs, \"+00:00\")"
        );
        let nan = eval1("to_timestamp(CAST('NaN' AS double))").unwrap_err();
        assert!(nan.contains("timestamp cannot be NaN"), "{nan}");
        let big = eval1("to_timestamp(1e300)").unwrap_err();
        assert!(big.contains("timestamp out of range"), "{big}");
    }

    #[test]
    fn templates() {
        assert_eq!(
            eval1("to_timestamp('2020-04-15 12:02:03', 'YYYY-MM-DD HH24:MI:SS')").unwrap(),
            "2020-04-15T12:02:03Z"
        );
        assert_eq!(
            eval(
                "to_timestamp(a, b)",
                "('15/04/2020', 'DD/MM/YYYY'), (NULL, 'YYYY'), ('2020', NULL), ('5 PM', 'HH AM')"
            )
            .unwrap(),
            [
                "2020-04-15T00:00:00Z",
                "NULL",
                "NULL",
                "0000-01-01T17:00:00Z"
            ]
        );
        let err = eval1("to_timestamp('abcd', 'YYYY')").unwrap_err();
        assert!(err.contains("invalid value \"abcd\" for \"YYYY\""), "{err}");
    }
}
