//! PostgreSQL's `to_date(text, template)`: the date of the text read by a
//! PostgreSQL template (`YYYY-MM-DD`, see `pg_format`); time fields are
//! read and dropped. With one argument (DataFusion's form, kept), the text
//! is read as a date literal in PostgreSQL's input forms
//! (`crate::datetime_input`).
//!
//! This replaces DataFusion's `to_date`, which takes chrono patterns.

use std::sync::Arc;

use chrono::NaiveDateTime;
use datafusion::arrow::array::Date32Array;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::types::logical_string;
use datafusion::common::DataFusionError;
use datafusion::error::Result;
use datafusion::logical_expr::{
    Coercion, ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature,
    TypeSignature, TypeSignatureClass, Volatility,
};

use super::pg_format::Templates;
use super::{result, Text};
use crate::datetime_input::{self, DateTimeType};

const NAME: &str = "to_date";

pub fn udf() -> ScalarUDF {
    let text = || Coercion::new_exact(TypeSignatureClass::Native(logical_string()));
    ScalarUDF::new_from_impl(ToDate {
        signature: Signature::one_of(
            vec![
                TypeSignature::Coercible(vec![text()]),
                TypeSignature::Coercible(vec![text(), text()]),
            ],
            Volatility::Immutable,
        ),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct ToDate {
    signature: Signature,
}

/// Days since 1970-01-01 of a date-time's date.
fn days(t: NaiveDateTime) -> Result<i32> {
    let epoch = chrono::DateTime::UNIX_EPOCH.date_naive();
    i32::try_from((t.date() - epoch).num_days())
        .map_err(|_| DataFusionError::Execution("date out of range".into()))
}

impl ScalarUDFImpl for ToDate {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Date32)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let n = args.number_rows;
        let text = Text::new(&args.args[0])?;
        let out = match args.args.get(1) {
            None => {
                let now = datetime_input::now_utc();
                (0..n)
                    .map(|i| {
                        text.get(i)
                            .map(|s| {
                                datetime_input::parse(s, DateTimeType::Date, now)
                                    .map_err(|e| {
                                        DataFusionError::External(Box::new(
                                            weir_executor::ExecError::user(e.sqlstate, e.message),
                                        ))
                                    })
                                    .and_then(days)
                            })
                            .transpose()
                    })
                    .collect::<Result<Date32Array>>()?
            }
            Some(template) => {
                let mut templates = Templates::new(template)?;
                (0..n)
                    .map(|i| {
                        let (Some(s), Some(pattern)) = (text.get(i), templates.get(i)) else {
                            return Ok(None);
                        };
                        days(pattern.parse(s)?).map(Some)
                    })
                    .collect::<Result<Date32Array>>()?
            }
        };
        result(&args.args, Arc::new(out))
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{eval, eval1};

    #[test]
    fn dates() {
        assert_eq!(
            eval1("to_date('2020-04-15', 'YYYY-MM-DD')").unwrap(),
            "2020-04-15"
        );
        assert_eq!(
            eval1("to_date('15 Apr 2020 12:02', 'DD Mon YYYY HH24:MI')").unwrap(),
            "2020-04-15"
        );
        assert_eq!(eval1("to_date('2020-4-5')").unwrap(), "2020-04-05");
        assert_eq!(
            eval("to_date(a, 'YYYYMMDD')", "('20200415'), (NULL)").unwrap(),
            ["2020-04-15", "NULL"]
        );
        let err = eval1("to_date('2020-02-30', 'YYYY-MM-DD')").unwrap_err();
        assert!(err.contains("date/time field value out of range"), "{err}");
    }
}
