//! PostgreSQL's `to_char(timestamp, template)`: a timestamp, timestamptz
//! or date written by a PostgreSQL template (`YYYY-MM-DD HH24:MI:SS`,
//! see `pg_format`). A timestamptz is written in UTC, the sessions' zone
//! (its `TZ` is `UTC`); a timestamp has no zone (`TZ` is empty).
//!
//! This replaces DataFusion's `to_char`, which takes chrono patterns.
//! PostgreSQL's `to_char` of numbers and intervals is not provided.

use std::sync::Arc;

use chrono::DateTime;
use datafusion::arrow::array::{Array, AsArray, StringBuilder};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit, TimestampMicrosecondType};
use datafusion::common::types::logical_string;
use datafusion::error::Result;
use datafusion::logical_expr::{
    Coercion, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignatureClass, Volatility,
};

use super::pg_format::Templates;
use super::{invalid_value, result};

const NAME: &str = "to_char";

pub fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(ToChar {
        signature: Signature::coercible(
            vec![
                super::hour::timestamp_arg(),
                Coercion::new_exact(TypeSignatureClass::Native(logical_string())),
            ],
            Volatility::Immutable,
        ),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ToChar {
    signature: Signature,
}

impl ScalarUDFImpl for ToChar {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let ts = args.args[0].to_array(n)?;
        let tz = match ts.data_type() {
            DataType::Timestamp(_, tz) => tz.clone(),
            _ => None,
        };
        let zone = tz.is_some().then_some("UTC");
        // Microseconds since the epoch: of the instant (in UTC) for a
        // timestamptz, of the wall clock for a timestamp.
        let micros = cast(&ts, &DataType::Timestamp(TimeUnit::Microsecond, tz))?;
        let micros = micros.as_primitive::<TimestampMicrosecondType>();
        let mut templates = Templates::new(&args.args[1])?;
        let mut out = StringBuilder::with_capacity(n, n * 20);
        let mut buf = String::with_capacity(32);
        for i in 0..n {
            let (Some(pattern), true) = (templates.get(i), micros.is_valid(i)) else {
                out.append_null();
                continue;
            };
            let Some(time) = DateTime::from_timestamp_micros(micros.value(i)) else {
                return Err(invalid_value(NAME, "timestamp out of range"));
            };
            buf.clear();
            pattern.format(&time.naive_utc(), zone, &mut buf);
            out.append_value(&buf);
        }
        result(&args.args, Arc::new(out.finish()))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{eval, eval1};

    #[test]
    fn timestamps_dates_and_nulls() {
        assert_eq!(
            eval1("to_char(TIMESTAMP '2020-04-05 08:02:03.0456', 'YYYY-MM-DD HH24:MI:SS.US')")
                .unwrap(),
            "2020-04-05 08:02:03.045600"
        );
        assert_eq!(
            eval1("to_char(DATE '2020-04-05', 'FMDay, FMDD Month YYYY')").unwrap(),
            "Sunday, 5 April     2020"
        );
        // A timestamp with a zone is written in UTC (a Berlin one too).
        assert_eq!(
            eval1("to_char(to_timestamp(1586952123), 'YYYY-MM-DD HH24:MI:SS TZ')").unwrap(),
            "2020-04-15 12:02:03 UTC"
        );
        assert_eq!(
            eval1(&format!(
                "to_char({}, 'YYYY-MM-DD HH24:MI tz')",
                super::super::date_format::tests::BERLIN
            ))
            .unwrap(),
            "2025-01-01 23:30 utc"
        );
        assert_eq!(
            eval1("to_char(CAST(NULL AS timestamp), 'YYYY')").unwrap(),
            "NULL"
        );
        assert_eq!(
            eval(
                "to_char(a, b)",
                "(TIMESTAMP '2020-01-02 03:04:05', 'YYYY'), (TIMESTAMP '2020-01-02 03:04:05', 'MI:SS'), (NULL, 'YYYY')"
            )
            .unwrap(),
            ["2020", "04:05", "NULL"]
        );
    }
}
