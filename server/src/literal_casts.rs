//! Text cast to dates and timestamps, read the way PostgreSQL reads it.
//!
//! Text becomes a date-time through a cast: written
//! (`TIMESTAMP '2020-04-15 12:02'`, `'2020-04-15'::date`, `s::timestamp`)
//! or added by DataFusion (`WHERE ts >= '2020-04-15 12:02'`,
//! `INSERT ... VALUES` into a timestamp column, `UPDATE ... SET d =
//! '15-Apr-2020'`). Arrow's cast reads only `YYYY-MM-DD[ HH:MM:SS]`.
//! [`PgTextCasts`], an analyzer rule run after DataFusion's type
//! coercion, replaces such a cast: of a literal, by the value
//! `crate::datetime_input` reads, as a literal of the cast's type (text
//! PostgreSQL refuses is refused with its error, 22007, 22008 or 22023,
//! when the statement is planned); of any other text expression, by a
//! function that reads each row the same way. Output names stay those of
//! the casts.
//!
//! Text cast to numeric is left to Arrow, except PostgreSQL's `NaN` and
//! infinities as literals, which a decimal cannot hold: refused (0A000)
//! instead of Arrow's "invalid input syntax". (`'NaN'::numeric` written
//! as such is a float, see `typed_literals`.)

use std::sync::Arc;
use weir_executor::SqlState;

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{DFSchema, DataFusionError, ScalarValue};
use datafusion::config::ConfigOptions;
use datafusion::error::Result;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::{
    ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl,
    Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use weir_executor::ExecError;

use crate::datetime_input::{self, DateTimeType};
use crate::error::SqlError;

/// The analyzer rule; add it to the session after DataFusion's rules.
#[derive(Debug, Default)]
pub struct PgTextCasts;

impl AnalyzerRule for PgTextCasts {
    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        let now = datetime_input::now_utc();
        plan.transform_up_with_subqueries(|node| {
            let names = NamePreserver::new(&node);
            let schema = input_schema(&node);
            node.map_expressions(|e| {
                let saved = names.save(&e);
                let t = e.transform_up(|e| rewrite(e, &schema, now))?;
                Ok(if t.transformed {
                    t.update_data(|e| saved.restore(e))
                } else {
                    t
                })
            })
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "weir_pg_text_casts"
    }
}

/// The columns a node's expressions can refer to.
fn input_schema(node: &LogicalPlan) -> DFSchema {
    let mut schema = DFSchema::empty();
    let inputs = node.inputs();
    if inputs.is_empty() {
        schema.merge(node.schema());
    }
    for input in inputs {
        schema.merge(input.schema());
    }
    schema
}

fn date_time_type(target: &DataType) -> Option<DateTimeType> {
    match target {
        DataType::Date32 => Some(DateTimeType::Date),
        DataType::Timestamp(_, None) => Some(DateTimeType::Timestamp),
        DataType::Timestamp(_, Some(_)) => Some(DateTimeType::TimestampTz),
        _ => None,
    }
}

fn carried(e: SqlError) -> DataFusionError {
    let mut err = ExecError::user(e.sqlstate, e.message);
    if let (ExecError::User { hint, .. }, Some(h)) = (&mut err, e.hint) {
        *hint = Some(h);
    }
    DataFusionError::External(Box::new(err))
}

fn rewrite(e: Expr, schema: &DFSchema, now: chrono::NaiveDateTime) -> Result<Transformed<Expr>> {
    // (TRY_CAST, DataFusion's, keeps Arrow's reading: NULL when it fails.)
    let Expr::Cast(datafusion::logical_expr::Cast { expr, field }) = &e else {
        return Ok(Transformed::no(e));
    };
    let target = field.data_type();
    let Expr::Literal(value, _) = expr.as_ref() else {
        // Another expression: read by PostgreSQL's rules row by row, if
        // it is text.
        let is_text = expr
            .get_type(schema)
            .is_ok_and(|t| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View));
        if !is_text || date_time_type(target).is_none() {
            return Ok(Transformed::no(e));
        }
        let udf = ScalarUDF::new_from_impl(TextToDateTime::new(target.clone()));
        let call = Expr::ScalarFunction(ScalarFunction::new_udf(
            Arc::new(udf),
            vec![expr.as_ref().clone()],
        ));
        return Ok(Transformed::yes(call));
    };
    let Some(Some(text)) = value.try_as_str() else {
        return Ok(Transformed::no(e));
    };
    if let DataType::Decimal128(..) | DataType::Decimal256(..) = target {
        if let Some(special) = crate::typed_literals::special_number(text) {
            return Err(carried(crate::typed_literals::special_numeric_refused(
                special,
            )));
        }
        return Ok(Transformed::no(e));
    }
    let Some(ty) = date_time_type(target) else {
        return Ok(Transformed::no(e));
    };
    let t = datetime_input::parse(text, ty, now).map_err(carried)?;
    let out_of_range = || {
        carried(SqlError::new(
            SqlState::DATETIME_FIELD_OVERFLOW,
            format!("{} out of range: \"{text}\"", ty.sql_name()),
        ))
    };
    let utc = t.and_utc();
    let literal = match target {
        DataType::Date32 => {
            let epoch = chrono::DateTime::UNIX_EPOCH.date_naive();
            let days = i32::try_from((t.date() - epoch).num_days()).map_err(|_| out_of_range())?;
            ScalarValue::Date32(Some(days))
        }
        DataType::Timestamp(unit, tz) => {
            let tz = tz.clone();
            match unit {
                TimeUnit::Second => ScalarValue::TimestampSecond(Some(utc.timestamp()), tz),
                TimeUnit::Millisecond => {
                    ScalarValue::TimestampMillisecond(Some(utc.timestamp_millis()), tz)
                }
                TimeUnit::Microsecond => {
                    ScalarValue::TimestampMicrosecond(Some(utc.timestamp_micros()), tz)
                }
                TimeUnit::Nanosecond => ScalarValue::TimestampNanosecond(
                    Some(utc.timestamp_nanos_opt().ok_or_else(out_of_range)?),
                    tz,
                ),
            }
        }
        _ => return Ok(Transformed::no(e)),
    };
    Ok(Transformed::yes(Expr::Literal(literal, None)))
}

/// Text read as a date or timestamp of type `target` row by row, as a
/// cast of text to it reads in PostgreSQL.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TextToDateTime {
    target: DataType,
    signature: Signature,
}

impl TextToDateTime {
    fn new(target: DataType) -> TextToDateTime {
        TextToDateTime {
            target,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for TextToDateTime {
    fn name(&self) -> &str {
        match self.target {
            DataType::Date32 => "text_to_date",
            DataType::Timestamp(_, Some(_)) => "text_to_timestamptz",
            _ => "text_to_timestamp",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(self.target.clone())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let scalar = matches!(args.args[0], ColumnarValue::Scalar(_));
        let text: ArrayRef = cast(&args.args[0].to_array(args.number_rows)?, &DataType::Utf8)?;
        let text = text
            .as_any()
            .downcast_ref::<datafusion::arrow::array::StringArray>()
            .ok_or_else(|| DataFusionError::Internal("expected text".into()))?;
        let out = datetime_input::parse_array(text.iter(), &self.target)
            .ok_or_else(|| DataFusionError::Internal("not a date-time type".into()))?
            .map_err(|(_, e)| carried(e))?;
        Ok(if scalar && out.len() == 1 {
            ColumnarValue::Scalar(ScalarValue::try_from_array(&out, 0)?)
        } else {
            ColumnarValue::Array(out)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::util::display::array_value_to_string;
    use datafusion::prelude::SessionContext;

    fn select(sql: &str) -> Result<String, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let ctx = SessionContext::new();
        ctx.add_analyzer_rule(Arc::new(super::PgTextCasts));
        rt.block_on(async {
            let batches = ctx.sql(sql).await?.collect().await?;
            Ok::<_, datafusion::error::DataFusionError>(
                array_value_to_string(batches[0].column(0), 0).unwrap(),
            )
        })
        .map_err(|e| {
            let e = weir_executor::ExecError::from(e);
            format!("{} {}", e.sqlstate().code(), e.message())
        })
    }

    #[test]
    fn literal_casts_read_postgres_forms() {
        assert_eq!(
            select("SELECT CAST('2020-04-15 12:02' AS timestamp)").unwrap(),
            "2020-04-15T12:02:00"
        );
        assert_eq!(
            select("SELECT CAST('15-Apr-2020' AS date)").unwrap(),
            "2020-04-15"
        );
        // Added by type coercion.
        assert_eq!(
            select("SELECT CAST('2020-04-15 12:02:01' AS timestamp) > '2020-04-15 12:02'").unwrap(),
            "true"
        );
        assert_eq!(
            select("SELECT CAST('garbage' AS timestamp)").unwrap_err(),
            "22007 invalid input syntax for type timestamp: \"garbage\""
        );
        assert_eq!(
            select("SELECT CAST('1500-01-01' AS timestamp)").unwrap_err(),
            "22008 timestamp out of range: \"1500-01-01\""
        );
        assert!(select("SELECT CAST('NaN' AS decimal(10,2))")
            .unwrap_err()
            .starts_with("0A000 numeric value \"NaN\" is not supported"));
        assert_eq!(
            select("SELECT CAST('1.5' AS decimal(10,2))").unwrap(),
            "1.50"
        );
    }

    #[test]
    fn text_expressions_are_read_row_by_row() {
        assert_eq!(
            select("SELECT CAST(s AS timestamp) FROM (VALUES ('2020-04-15 12:02')) AS t(s)")
                .unwrap(),
            "2020-04-15T12:02:00"
        );
        assert_eq!(
            select("SELECT CAST(s AS date) FROM (VALUES ('2020-02-30')) AS t(s)").unwrap_err(),
            "22008 date/time field value out of range: \"2020-02-30\""
        );
        // Unnamed casts keep their names: the outer query still finds them.
        assert_eq!(
            select(
                "SELECT * FROM (SELECT CAST(s AS date), CAST('2020-04-16' AS date) \
                 FROM (VALUES ('15-Apr-2020')) AS t(s)) AS x"
            )
            .unwrap(),
            "2020-04-15"
        );
    }
}
