//! `fail_if(condition, message [, times])`: causes a failure on purpose,
//! for tests, demos and fire drills of alerting and restart settings.
//!
//! - `fail_if(v = 13, 'bad row')` raises `bad row` (SQLSTATE P0001, error
//!   class `injected`, domain `user`: not retryable) for every row where
//!   the condition is true, however often it is retried — a permanent
//!   failure, like bad data.
//! - `fail_if(v = 13, 'connection reset', 3)` raises only for the first 3
//!   rows (server-wide, counted per message) where the condition is true,
//!   then lets them pass — a transient failure, domain `external` and
//!   retryable, as a flaky dependency would give.
//!
//! Returns false when it does not raise, so it fits a filter:
//! `WHERE NOT fail_if(...)`.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use datafusion::arrow::array::{Array, BooleanArray, Int64Array, StringArray};
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, TypeSignature,
    Volatility,
};
use parking_lot::Mutex;
use weir_executor::error::InjectedFailure;

/// Transient failures raised so far, per message.
static RAISED: LazyLock<Mutex<HashMap<String, i64>>> = LazyLock::new(Default::default);

pub fn fail_if_udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(FailIf {
        signature: Signature::one_of(
            vec![
                TypeSignature::Exact(vec![DataType::Boolean, DataType::Utf8]),
                TypeSignature::Exact(vec![DataType::Boolean, DataType::Utf8, DataType::Int64]),
            ],
            Volatility::Volatile,
        ),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct FailIf {
    signature: Signature,
}

/// An argument as an array of `n` rows.
fn column(v: &ColumnarValue, n: usize) -> datafusion::error::Result<Arc<dyn Array>> {
    v.clone().into_array(n)
}

impl ScalarUDFImpl for FailIf {
    fn name(&self) -> &str {
        "fail_if"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(
        &self,
        args: ScalarFunctionArgs,
    ) -> datafusion::error::Result<ColumnarValue> {
        let n = args.number_rows;
        let cond = column(&args.args[0], n)?;
        let cond = cond
            .as_any()
            .downcast_ref::<BooleanArray>()
            .ok_or_else(|| DataFusionError::Internal("fail_if: condition is not boolean".into()))?;
        let messages = column(&args.args[1], n)?;
        let messages = messages
            .as_any()
            .downcast_ref::<StringArray>()
            .ok_or_else(|| DataFusionError::Internal("fail_if: message is not text".into()))?;
        let times = match args.args.get(2) {
            Some(t) => Some(column(t, n)?),
            None => None,
        };
        let times = times
            .as_ref()
            .map(|t| {
                t.as_any().downcast_ref::<Int64Array>().ok_or_else(|| {
                    DataFusionError::Internal("fail_if: times is not an integer".into())
                })
            })
            .transpose()?;
        for i in 0..n {
            if !(cond.is_valid(i) && cond.value(i)) {
                continue;
            }
            let message = if messages.is_valid(i) {
                messages.value(i).to_string()
            } else {
                "fail_if".to_string()
            };
            let transient = match times {
                None => false,
                Some(t) => {
                    let limit = if t.is_valid(i) { t.value(i) } else { 0 };
                    let mut raised = RAISED.lock();
                    let count = raised.entry(message.clone()).or_insert(0);
                    if *count >= limit {
                        continue;
                    }
                    *count += 1;
                    true
                }
            };
            return Err(DataFusionError::External(Box::new(InjectedFailure {
                message,
                transient,
            })));
        }
        Ok(match &args.args[0] {
            ColumnarValue::Scalar(_) => ColumnarValue::Scalar(ScalarValue::Boolean(Some(false))),
            ColumnarValue::Array(_) => {
                ColumnarValue::Array(Arc::new(BooleanArray::from(vec![false; n])))
            }
        })
    }
}
