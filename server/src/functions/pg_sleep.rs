//! `pg_sleep(seconds)` as PostgreSQL has it; evaluated once per row.

use datafusion::arrow::datatypes::DataType;

/// `pg_sleep(seconds)`: waits, then returns void (shown as an empty value).
/// Evaluated once per row, so in a streaming query it makes a slow
/// operator — what backpressure tests need.
pub fn pg_sleep_udf() -> datafusion::logical_expr::ScalarUDF {
    datafusion::logical_expr::ScalarUDF::new_from_impl(PgSleep {
        signature: datafusion::logical_expr::Signature::exact(
            vec![DataType::Float64],
            datafusion::logical_expr::Volatility::Volatile,
        ),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct PgSleep {
    signature: datafusion::logical_expr::Signature,
}

impl datafusion::logical_expr::ScalarUDFImpl for PgSleep {
    fn name(&self) -> &str {
        "pg_sleep"
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::error::Result<datafusion::logical_expr::ColumnarValue> {
        use datafusion::arrow::array::{Array, Float64Array};
        use datafusion::logical_expr::ColumnarValue;
        let rows = args.number_rows;
        let seconds: f64 = match &args.args[0] {
            ColumnarValue::Scalar(datafusion::common::ScalarValue::Float64(Some(s))) => {
                s.max(0.0) * rows.max(1) as f64
            }
            ColumnarValue::Scalar(_) => 0.0,
            ColumnarValue::Array(a) => a
                .as_any()
                .downcast_ref::<Float64Array>()
                .map_or(0.0, |a| a.iter().flatten().filter(|s| *s > 0.0).sum()),
        };
        if seconds > 0.0 && seconds.is_finite() {
            let pause = std::time::Duration::from_secs_f64(seconds.min(3600.0));
            // Sleep without starving the runtime's other tasks.
            match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                    tokio::task::block_in_place(|| std::thread::sleep(pause))
                }
                _ => std::thread::sleep(pause),
            }
        }
        Ok(match &args.args[0] {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(datafusion::common::ScalarValue::Utf8(None))
            }
            ColumnarValue::Array(a) => ColumnarValue::Array(
                datafusion::arrow::array::new_null_array(&DataType::Utf8, a.len()),
            ),
        })
    }
}
