//! Rewrites of physical expressions that keep their results and make them
//! cheaper to evaluate per row.
//!
//! `ts - INTERVAL '4' SECOND` is planned as timestamp minus a month-day-nano
//! interval, which arrow evaluates through calendar arithmetic (a date-time
//! conversion per row, since months have no fixed length). Every watermark,
//! window bound and interval-join condition has this shape. An interval
//! without months (and without days, for a timestamp with a time zone, where
//! a day may have 23 or 25 hours) is a fixed duration, so the rewrite turns
//! it into a duration in the timestamp's unit: plain integer arithmetic.

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, IntervalMonthDayNano, Schema, TimeUnit};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::ScalarValue;
use datafusion::logical_expr::Operator;
use datafusion::physical_expr::expressions::{BinaryExpr, Literal};
use datafusion::physical_expr::PhysicalExpr;

/// `expr` with every `timestamp ± constant interval` of a fixed length
/// computed on durations instead (same values, same type).
pub fn simplify(expr: Arc<dyn PhysicalExpr>, schema: &Schema) -> Arc<dyn PhysicalExpr> {
    let rewritten = Arc::clone(&expr).transform_up(|e| {
        let Some(bin) = e.downcast_ref::<BinaryExpr>() else {
            return Ok(Transformed::no(e));
        };
        if !matches!(bin.op(), Operator::Plus | Operator::Minus) {
            return Ok(Transformed::no(e));
        }
        let Some(lit) = bin.right().downcast_ref::<Literal>() else {
            return Ok(Transformed::no(e));
        };
        let ScalarValue::IntervalMonthDayNano(Some(interval)) = lit.value() else {
            return Ok(Transformed::no(e));
        };
        let Ok(DataType::Timestamp(unit, tz)) = bin.left().data_type(schema) else {
            return Ok(Transformed::no(e));
        };
        match fixed_duration(*interval, &unit, tz.is_some()) {
            Some(duration) => Ok(Transformed::yes(Arc::new(BinaryExpr::new(
                Arc::clone(bin.left()),
                *bin.op(),
                Arc::new(Literal::new(duration)),
            )) as Arc<dyn PhysicalExpr>)),
            None => Ok(Transformed::no(e)),
        }
    });
    match rewritten {
        Ok(t) => t.data,
        Err(_) => expr,
    }
}

/// The interval as a duration literal in `unit`, when it has a fixed
/// length that `unit` represents exactly.
fn fixed_duration(
    interval: IntervalMonthDayNano,
    unit: &TimeUnit,
    zoned: bool,
) -> Option<ScalarValue> {
    if interval.months != 0 || (zoned && interval.days != 0) {
        return None;
    }
    let nanos = (interval.days as i128) * 86_400_000_000_000 + interval.nanoseconds as i128;
    let per = match unit {
        TimeUnit::Second => 1_000_000_000,
        TimeUnit::Millisecond => 1_000_000,
        TimeUnit::Microsecond => 1_000,
        TimeUnit::Nanosecond => 1,
    };
    if nanos % per != 0 {
        return None;
    }
    let v = i64::try_from(nanos / per).ok()?;
    Some(match unit {
        TimeUnit::Second => ScalarValue::DurationSecond(Some(v)),
        TimeUnit::Millisecond => ScalarValue::DurationMillisecond(Some(v)),
        TimeUnit::Microsecond => ScalarValue::DurationMicrosecond(Some(v)),
        TimeUnit::Nanosecond => ScalarValue::DurationNanosecond(Some(v)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, TimestampMicrosecondArray};
    use datafusion::arrow::datatypes::Field;
    use datafusion::physical_expr::expressions::Column;

    fn ts_batch(tz: Option<&str>) -> RecordBatch {
        let values: Vec<Option<i64>> = vec![
            Some(0),
            Some(1_700_000_000_123_456),
            None,
            Some(-86_400_000_000),
            Some(1_711_846_800_000_000), // 2024-03-31 01:00 UTC: a DST change in Europe
        ];
        let arr = TimestampMicrosecondArray::from(values).with_timezone_opt(tz.map(Arc::from));
        let schema = Schema::new(vec![Field::new("ts", arr.data_type().clone(), true)]);
        RecordBatch::try_new(Arc::new(schema), vec![Arc::new(arr) as ArrayRef]).unwrap()
    }

    fn interval(months: i32, days: i32, nanos: i64) -> Arc<dyn PhysicalExpr> {
        Arc::new(Literal::new(ScalarValue::IntervalMonthDayNano(Some(
            IntervalMonthDayNano::new(months, days, nanos),
        ))))
    }

    /// (original, rewritten) evaluated over the batch, with whether the
    /// rewrite changed the expression.
    fn both(
        batch: &RecordBatch,
        op: Operator,
        iv: Arc<dyn PhysicalExpr>,
    ) -> (ArrayRef, ArrayRef, bool) {
        let e: Arc<dyn PhysicalExpr> =
            Arc::new(BinaryExpr::new(Arc::new(Column::new("ts", 0)), op, iv));
        let s = simplify(Arc::clone(&e), batch.schema_ref());
        assert_eq!(
            e.data_type(batch.schema_ref()).unwrap(),
            s.data_type(batch.schema_ref()).unwrap()
        );
        let a = e
            .evaluate(batch)
            .unwrap()
            .into_array(batch.num_rows())
            .unwrap();
        let b = s
            .evaluate(batch)
            .unwrap()
            .into_array(batch.num_rows())
            .unwrap();
        (a, b, s.to_string() != e.to_string())
    }

    #[test]
    fn fixed_intervals_become_durations_with_the_same_values() {
        for tz in [None, Some("Europe/Amsterdam")] {
            let batch = ts_batch(tz);
            for op in [Operator::Plus, Operator::Minus] {
                for nanos in [4_000_000_000, 1_000, 3_600_000_000_000, 0] {
                    let (a, b, changed) = both(&batch, op, interval(0, 0, nanos));
                    assert!(changed, "{tz:?} {op} {nanos}");
                    assert_eq!(a.as_ref(), b.as_ref(), "{tz:?} {op} {nanos}");
                }
            }
        }
        // A day is fixed without a time zone.
        let (a, b, changed) = both(&ts_batch(None), Operator::Minus, interval(0, 2, 5_000));
        assert!(changed);
        assert_eq!(a.as_ref(), b.as_ref());
    }

    #[test]
    fn calendar_intervals_are_left_alone() {
        // Months have no fixed length; a day in a time zone may not be 24 h;
        // a nanosecond is not a whole number of microseconds.
        let cases = [
            (None, interval(1, 0, 0)),
            (Some("Europe/Amsterdam"), interval(0, 1, 0)),
            (None, interval(0, 0, 1)),
        ];
        for (tz, iv) in cases {
            let (a, b, changed) = both(&ts_batch(tz), Operator::Plus, iv);
            assert!(!changed, "{tz:?}");
            assert_eq!(a.as_ref(), b.as_ref());
        }
    }
}
