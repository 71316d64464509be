//! Accumulators of the commonest aggregates, updated from the typed
//! argument column row by row: sum and min/max of a BIGINT, avg of a DOUBLE
//! (an integer avg's argument is cast to DOUBLE by the planner).
//!
//! The aggregation calls DataFusion's accumulators with the rows of one
//! group at a time; a group mostly has one or two rows in a chunk, and each
//! call then pays for sliced arrays, a dynamic call and scalar values more
//! than for the sum. These do the same arithmetic on plain numbers, and
//! their state is DataFusion's state of the same aggregate (same values,
//! same types), so a checkpoint reads the same either way; the tests check
//! both against DataFusion's accumulators.

use datafusion::arrow::array::{Array, ArrayRef, AsArray};
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};
use datafusion::common::ScalarValue;

use crate::error::{ExecError, ExecResult};

/// Which numeric accumulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumericKind {
    /// sum(BIGINT) with retraction: state [sum or NULL, count].
    SumInt,
    /// avg(DOUBLE) with retraction: state [count, sum].
    AvgFloat,
    /// min(BIGINT) / max(BIGINT) over an append-only input: state [value].
    MinInt,
    MaxInt,
}

impl NumericKind {
    /// The kind for aggregate `name` (lower case) over `args`, returning
    /// `output`, whose DataFusion accumulator has a state of `state`
    /// types; `None` when it is not one of these.
    pub fn of(
        name: &str,
        retractable: bool,
        args: &[DataType],
        output: &DataType,
        state: &[DataType],
    ) -> Option<NumericKind> {
        use DataType::*;
        let kind = match (name, args, output, state) {
            ("sum", [Int64], Int64, [Int64, UInt64]) if retractable => NumericKind::SumInt,
            ("avg" | "mean", [Float64], Float64, [UInt64, Float64]) if retractable => {
                NumericKind::AvgFloat
            }
            ("min", [Int64], Int64, [Int64]) if !retractable => NumericKind::MinInt,
            ("max", [Int64], Int64, [Int64]) if !retractable => NumericKind::MaxInt,
            _ => return None,
        };
        Some(kind)
    }
}

/// One group's accumulator.
#[derive(Debug, Clone, PartialEq)]
pub enum NumericAcc {
    SumInt {
        sum: i64,
        count: u64,
    },
    /// `sum` is NULL until a value came, as in DataFusion's state.
    AvgFloat {
        sum: Option<f64>,
        count: u64,
    },
    MinInt(Option<i64>),
    MaxInt(Option<i64>),
}

impl NumericAcc {
    pub fn new(kind: NumericKind) -> NumericAcc {
        match kind {
            NumericKind::SumInt => NumericAcc::SumInt { sum: 0, count: 0 },
            NumericKind::AvgFloat => NumericAcc::AvgFloat {
                sum: None,
                count: 0,
            },
            NumericKind::MinInt => NumericAcc::MinInt(None),
            NumericKind::MaxInt => NumericAcc::MaxInt(None),
        }
    }

    /// Adds the non-NULL values of `col` at `ins` and takes away the ones
    /// at `del` (min and max: `del` must be empty).
    pub fn update(&mut self, col: &ArrayRef, ins: &[u32], del: &[u32]) -> ExecResult<()> {
        let valid = |i: u32| col.is_valid(i as usize);
        let is_min = matches!(self, NumericAcc::MinInt(_));
        match self {
            NumericAcc::SumInt { sum, count } => {
                let v = col.as_primitive::<Int64Type>().values();
                for &i in ins.iter().filter(|i| valid(**i)) {
                    *sum = sum.wrapping_add(v[i as usize]);
                    *count += 1;
                }
                for &i in del.iter().filter(|i| valid(**i)) {
                    *sum = sum.wrapping_sub(v[i as usize]);
                    *count = count.saturating_sub(1);
                }
            }
            NumericAcc::AvgFloat { sum, count } => {
                let v = col.as_primitive::<Float64Type>().values();
                for &i in ins.iter().filter(|i| valid(**i)) {
                    *sum = Some(sum.unwrap_or(0.0) + v[i as usize]);
                    *count += 1;
                }
                for &i in del.iter().filter(|i| valid(**i)) {
                    *sum = Some(sum.unwrap_or(0.0) - v[i as usize]);
                    *count = count.saturating_sub(1);
                }
            }
            NumericAcc::MinInt(_) | NumericAcc::MaxInt(_) if !del.is_empty() => {
                return Err(ExecError::internal(
                    "a delete reached min/max over an append-only input",
                ));
            }
            NumericAcc::MinInt(m) | NumericAcc::MaxInt(m) => {
                let pick = if is_min { i64::min } else { i64::max };
                let v = col.as_primitive::<Int64Type>().values();
                for &i in ins.iter().filter(|i| valid(**i)) {
                    let x = v[i as usize];
                    *m = Some(m.map_or(x, |cur| pick(cur, x)));
                }
            }
        }
        Ok(())
    }

    pub fn evaluate(&self) -> ScalarValue {
        match self {
            NumericAcc::SumInt { sum, count } => ScalarValue::Int64((*count > 0).then_some(*sum)),
            NumericAcc::AvgFloat { sum, count } => {
                ScalarValue::Float64(sum.filter(|_| *count > 0).map(|s| s / *count as f64))
            }
            NumericAcc::MinInt(m) | NumericAcc::MaxInt(m) => ScalarValue::Int64(*m),
        }
    }

    /// The state DataFusion's accumulator of the same aggregate reports.
    pub fn state(&self) -> Vec<ScalarValue> {
        match self {
            NumericAcc::SumInt { sum, count } => vec![
                ScalarValue::Int64((*count > 0).then_some(*sum)),
                ScalarValue::UInt64(Some(*count)),
            ],
            NumericAcc::AvgFloat { sum, count } => vec![
                ScalarValue::UInt64(Some(*count)),
                ScalarValue::Float64(*sum),
            ],
            NumericAcc::MinInt(m) | NumericAcc::MaxInt(m) => vec![ScalarValue::Int64(*m)],
        }
    }

    /// The accumulator whose state is `state` (as [`NumericAcc::state`]
    /// or DataFusion's accumulator wrote it).
    pub fn from_state(kind: NumericKind, state: &[ScalarValue]) -> ExecResult<NumericAcc> {
        use ScalarValue::*;
        Ok(match (kind, state) {
            (NumericKind::SumInt, [Int64(sum), UInt64(count)]) => NumericAcc::SumInt {
                sum: sum.unwrap_or(0),
                count: count.unwrap_or(0),
            },
            (NumericKind::AvgFloat, [UInt64(count), Float64(sum)]) => NumericAcc::AvgFloat {
                sum: *sum,
                count: count.unwrap_or(0),
            },
            (NumericKind::MinInt, [Int64(m)]) => NumericAcc::MinInt(*m),
            (NumericKind::MaxInt, [Int64(m)]) => NumericAcc::MaxInt(*m),
            _ => {
                return Err(ExecError::internal(format!(
                    "aggregate state: {state:?} is not the state of {kind:?}"
                )))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{Float64Array, Int64Array, UInt32Array};
    use datafusion::arrow::compute::take;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::functions_aggregate::average::avg_udaf;
    use datafusion::functions_aggregate::min_max::{max_udaf, min_udaf};
    use datafusion::functions_aggregate::sum::sum_udaf;
    use datafusion::logical_expr::{Accumulator, AggregateUDF};
    use datafusion::physical_expr::aggregate::AggregateExprBuilder;
    use datafusion::physical_expr::expressions::col;

    use super::*;
    use crate::operators::state_codec::test_util::Rng;

    /// Random chunks of (inserted rows, deleted rows) over a column with
    /// NULLs; deletes only take rows inserted before.
    fn script(seed: u64, retract: bool) -> Vec<(Vec<u32>, Vec<u32>)> {
        let mut rng = Rng::new(seed);
        let mut live: Vec<u32> = vec![];
        (0..200)
            .map(|_| {
                let ins: Vec<u32> = (0..rng.below(3)).map(|_| rng.below(64) as u32).collect();
                let mut del = vec![];
                if retract && !live.is_empty() && rng.below(3) == 0 {
                    del.push(live.swap_remove(rng.below(live.len())));
                }
                live.extend(&ins);
                (ins, del)
            })
            .collect()
    }

    /// The native accumulator and DataFusion's, fed the same rows, report
    /// the same state and value after every chunk, and the native one
    /// restored from DataFusion's state carries on the same.
    fn agrees(
        kind: NumericKind,
        col: ArrayRef,
        df: impl Fn() -> Box<dyn Accumulator>,
        retract: bool,
    ) {
        for seed in [1u64, 7, 42, 1234] {
            let mut ours = NumericAcc::new(kind);
            let mut df = df();
            for (ins, del) in script(seed, retract) {
                ours.update(&col, &ins, &del).unwrap();
                let rows =
                    |idx: &[u32]| take(&col, &UInt32Array::from(idx.to_vec()), None).unwrap();
                if !ins.is_empty() {
                    df.update_batch(&[rows(&ins)]).unwrap();
                }
                if !del.is_empty() {
                    df.retract_batch(&[rows(&del)]).unwrap();
                }
                assert_eq!(ours.evaluate(), df.evaluate().unwrap(), "{kind:?} value");
                let state = df.state().unwrap();
                assert_eq!(ours.state(), state, "{kind:?} state");
                assert_eq!(NumericAcc::from_state(kind, &state).unwrap(), ours);
            }
        }
    }

    /// DataFusion's accumulator of `udaf` over one column of type `t`: the
    /// sliding one (as the aggregation makes for a retractable aggregate)
    /// or the plain one (min and max over an append-only input).
    fn datafusion(udaf: Arc<AggregateUDF>, t: DataType, sliding: bool) -> Box<dyn Accumulator> {
        let schema = Arc::new(Schema::new(vec![Field::new("a", t, true)]));
        let expr = AggregateExprBuilder::new(udaf, vec![col("a", &schema).unwrap()])
            .schema(schema)
            .alias("x")
            .build()
            .unwrap();
        match sliding {
            true => expr.create_sliding_accumulator().unwrap(),
            false => expr.create_accumulator().unwrap(),
        }
    }

    fn ints() -> ArrayRef {
        Arc::new(Int64Array::from_iter((0..64).map(|i: i64| {
            (i % 7 != 3).then_some((i * 7919) % 1000 - 400 + if i == 5 { i64::MAX / 2 } else { 0 })
        })))
    }

    #[test]
    fn sum_of_bigint_agrees_with_datafusion() {
        let df = || datafusion(sum_udaf(), DataType::Int64, true);
        agrees(NumericKind::SumInt, ints(), df, true);
    }

    #[test]
    fn avg_of_double_agrees_with_datafusion() {
        // Whole numbers, as the avg of an integer column (exact sums).
        let col: ArrayRef = Arc::new(Float64Array::from_iter(
            (0..64).map(|i| (i % 5 != 0).then_some(((i * 31) % 97) as f64)),
        ));
        let df = || datafusion(avg_udaf(), DataType::Float64, true);
        agrees(NumericKind::AvgFloat, col, df, true);
    }

    #[test]
    fn min_and_max_of_bigint_agree_with_datafusion() {
        let min = || datafusion(min_udaf(), DataType::Int64, false);
        agrees(NumericKind::MinInt, ints(), min, false);
        let max = || datafusion(max_udaf(), DataType::Int64, false);
        agrees(NumericKind::MaxInt, ints(), max, false);
    }

    #[test]
    fn a_delete_is_refused_by_min_and_max() {
        let mut m = NumericAcc::new(NumericKind::MaxInt);
        assert!(m.update(&ints(), &[1], &[0]).is_err());
    }
}
