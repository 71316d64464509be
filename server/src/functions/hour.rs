//! `HOUR(ts)`: Flink's hour of the day (0–23) of a timestamp, as a BIGINT.
//! A timestamp with a time zone gives the hour in that zone; text and dates
//! are cast to timestamps first.

use std::sync::Arc;

use datafusion::arrow::compute::cast;
use datafusion::arrow::compute::kernels::temporal::{date_part, DatePart};
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::types::{logical_date, logical_string, NativeType};
use datafusion::error::Result;
use datafusion::logical_expr::{
    Coercion, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignatureClass, Volatility,
};

use super::result;

pub fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(Hour {
        signature: Signature::coercible(vec![timestamp_arg()], Volatility::Immutable),
    })
}

/// A timestamp argument; text and dates are cast to a timestamp.
pub(super) fn timestamp_arg() -> Coercion {
    Coercion::new_implicit(
        TypeSignatureClass::Timestamp,
        vec![
            TypeSignatureClass::Native(logical_string()),
            TypeSignatureClass::Native(logical_date()),
        ],
        NativeType::Timestamp(TimeUnit::Microsecond, None),
    )
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct Hour {
    signature: Signature,
}

impl ScalarUDFImpl for Hour {
    fn name(&self) -> &str {
        "hour"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Int64)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let ts = args.args[0].to_array(args.number_rows)?;
        let hours = cast(&date_part(&ts, DatePart::Hour)?, &DataType::Int64)?;
        result(&args.args, Arc::clone(&hours))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{eval, eval1};

    #[test]
    fn hour_of_the_day() {
        assert_eq!(
            eval1("hour(TIMESTAMP '2025-01-01 13:59:59.999')").unwrap(),
            "13"
        );
        assert_eq!(eval1("hour('2025-01-01 07:00:00')").unwrap(), "7");
        assert_eq!(eval1("hour(DATE '2025-01-01')").unwrap(), "0");
        assert_eq!(eval1("hour(CAST(NULL AS timestamp))").unwrap(), "NULL");
        assert_eq!(
            eval1("arrow_typeof(hour(TIMESTAMP '2025-01-01 13:00:00'))").unwrap(),
            "Int64"
        );
        // In the timestamp's zone.
        assert_eq!(
            eval1(&format!(
                "hour({})",
                super::super::date_format::tests::BERLIN
            ))
            .unwrap(),
            "0"
        );
        assert_eq!(
            eval(
                "hour(a)",
                "(TIMESTAMP '2025-01-01 00:00:00'), (NULL), (TIMESTAMP '1969-12-31 23:00:00')"
            )
            .unwrap(),
            ["0", "NULL", "23"]
        );
    }
}
