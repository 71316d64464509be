//! PostgreSQL's `string_agg(value, delimiter [ORDER BY ...])`: the non-NULL
//! values concatenated, each but the first preceded by the delimiter of
//! its own row (a NULL delimiter is empty), so the delimiter may be a
//! column as well as a constant; NULL when no value is non-NULL.
//! `DISTINCT` keeps the first of equal (value, delimiter) pairs.
//!
//! This replaces DataFusion's `string_agg`, which only takes a literal
//! delimiter. The accumulator keeps its rows (value, delimiter, ORDER BY
//! keys) and sorts them when it is evaluated, so it needs no sorted input
//! and partial states merge in any order. A streaming aggregation feeds
//! it its argument rows only (no ORDER BY keys): they then come sorted by
//! their encoded bytes.

use std::cmp::Ordering;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, ListArray};
use datafusion::arrow::compute::{cast, SortOptions};
use datafusion::arrow::datatypes::{DataType, Field, FieldRef};
use datafusion::common::types::logical_string;
use datafusion::common::{DataFusionError, ScalarValue};
use datafusion::error::Result;
use datafusion::logical_expr::function::{AccumulatorArgs, StateFieldsArgs};
use datafusion::logical_expr::utils::AggregateOrderSensitivity;
use datafusion::logical_expr::{
    Accumulator, AggregateUDF, AggregateUDFImpl, Coercion, Signature, TypeSignatureClass,
    Volatility,
};

const NAME: &str = "string_agg";

pub fn udaf() -> AggregateUDF {
    let text = || Coercion::new_exact(TypeSignatureClass::Native(logical_string()));
    AggregateUDF::new_from_impl(StringAgg {
        signature: Signature::coercible(vec![text(), text()], Volatility::Immutable),
    })
}

#[derive(Debug, PartialEq, Eq, Hash)]
struct StringAgg {
    signature: Signature,
}

impl AggregateUDFImpl for StringAgg {
    fn name(&self) -> &str {
        NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> Result<DataType> {
        Ok(DataType::Utf8)
    }

    fn state_fields(&self, args: StateFieldsArgs) -> Result<Vec<FieldRef>> {
        let list = |name: &str, t: &DataType| -> FieldRef {
            Arc::new(Field::new(
                format!("{}[{name}]", args.name),
                DataType::new_list(t.clone(), true),
                true,
            ))
        };
        let mut fields = vec![
            list("values", &DataType::Utf8),
            list("delimiters", &DataType::Utf8),
        ];
        for (i, f) in args.ordering_fields.iter().enumerate() {
            fields.push(list(&format!("order{i}"), f.data_type()));
        }
        Ok(fields)
    }

    fn accumulator(&self, args: AccumulatorArgs) -> Result<Box<dyn Accumulator>> {
        let order_types = args
            .order_bys
            .iter()
            .map(|o| o.expr.data_type(args.schema))
            .collect::<Result<Vec<_>>>()?;
        Ok(Box::new(StringAggAccumulator {
            rows: Vec::new(),
            options: args.order_bys.iter().map(|o| o.options).collect(),
            order_types,
            distinct: args.is_distinct,
            bytes: 0,
        }))
    }

    /// Sorted input is not needed: the accumulator sorts.
    fn order_sensitivity(&self) -> AggregateOrderSensitivity {
        AggregateOrderSensitivity::Beneficial
    }

    fn with_beneficial_ordering(
        self: Arc<Self>,
        _beneficial_ordering: bool,
    ) -> Result<Option<Arc<dyn AggregateUDFImpl>>> {
        Ok(Some(self))
    }
}

#[derive(Debug)]
struct Row {
    value: String,
    delimiter: Option<String>,
    order: Vec<ScalarValue>,
}

#[derive(Debug)]
struct StringAggAccumulator {
    rows: Vec<Row>,
    options: Vec<SortOptions>,
    order_types: Vec<DataType>,
    distinct: bool,
    /// Bytes held by the rows' text.
    bytes: usize,
}

fn utf8(a: &ArrayRef) -> Result<ArrayRef> {
    Ok(if a.data_type() == &DataType::Utf8 {
        Arc::clone(a)
    } else {
        cast(a, &DataType::Utf8)?
    })
}

fn compare(a: &[ScalarValue], b: &[ScalarValue], options: &[SortOptions]) -> Ordering {
    for ((x, y), o) in a.iter().zip(b).zip(options) {
        let ord = match (x.is_null(), y.is_null()) {
            (true, true) => Ordering::Equal,
            (true, false) if o.nulls_first => Ordering::Less,
            (true, false) => Ordering::Greater,
            (false, true) if o.nulls_first => Ordering::Greater,
            (false, true) => Ordering::Less,
            (false, false) => {
                let ord = x.partial_cmp(y).unwrap_or(Ordering::Equal);
                if o.descending {
                    ord.reverse()
                } else {
                    ord
                }
            }
        };
        if ord != Ordering::Equal {
            return ord;
        }
    }
    Ordering::Equal
}

impl StringAggAccumulator {
    /// Adds the rows of value, delimiter and ORDER BY key columns (the
    /// keys are absent when a streaming aggregation replays argument rows).
    fn add(&mut self, values: &ArrayRef, delimiters: &ArrayRef, keys: &[ArrayRef]) -> Result<()> {
        let values = utf8(values)?;
        let delimiters = utf8(delimiters)?;
        let (values, delimiters) = (values.as_string::<i32>(), delimiters.as_string::<i32>());
        let keys = if keys.len() == self.options.len() {
            keys
        } else {
            &[]
        };
        for i in 0..values.len() {
            if values.is_null(i) {
                continue;
            }
            let row = Row {
                value: values.value(i).to_string(),
                delimiter: delimiters
                    .is_valid(i)
                    .then(|| delimiters.value(i).to_string()),
                order: keys
                    .iter()
                    .map(|k| ScalarValue::try_from_array(k, i))
                    .collect::<Result<_>>()?,
            };
            self.bytes += row.value.len() + row.delimiter.as_ref().map_or(0, String::len);
            self.rows.push(row);
        }
        Ok(())
    }
}

impl Accumulator for StringAggAccumulator {
    fn update_batch(&mut self, values: &[ArrayRef]) -> Result<()> {
        let [value, delimiter, keys @ ..] = values else {
            return Err(DataFusionError::Internal(format!(
                "{NAME} expects 2 arguments, got {}",
                values.len()
            )));
        };
        self.add(value, delimiter, keys)
    }

    fn merge_batch(&mut self, states: &[ArrayRef]) -> Result<()> {
        let lists: Vec<&ListArray> = states.iter().map(|s| s.as_list::<i32>()).collect();
        let [values, delimiters, keys @ ..] = lists.as_slice() else {
            return Err(DataFusionError::Internal(format!(
                "{NAME}: unexpected state with {} columns",
                states.len()
            )));
        };
        for r in 0..values.len() {
            if values.is_null(r) {
                continue;
            }
            let keys = keys.iter().map(|k| k.value(r)).collect::<Vec<_>>();
            self.add(&values.value(r), &delimiters.value(r), &keys)?;
        }
        Ok(())
    }

    fn state(&mut self) -> Result<Vec<ScalarValue>> {
        let list = |items: Vec<ScalarValue>, t: &DataType| {
            ScalarValue::List(ScalarValue::new_list_nullable(&items, t))
        };
        let mut state = vec![
            list(
                self.rows
                    .iter()
                    .map(|r| ScalarValue::Utf8(Some(r.value.clone())))
                    .collect(),
                &DataType::Utf8,
            ),
            list(
                self.rows
                    .iter()
                    .map(|r| ScalarValue::Utf8(r.delimiter.clone()))
                    .collect(),
                &DataType::Utf8,
            ),
        ];
        for (k, t) in self.order_types.iter().enumerate() {
            let keys = self
                .rows
                .iter()
                .map(|r| match r.order.get(k) {
                    Some(v) => Ok(v.clone()),
                    None => ScalarValue::try_from(t),
                })
                .collect::<Result<Vec<_>>>()?;
            state.push(list(keys, t));
        }
        Ok(state)
    }

    fn evaluate(&mut self) -> Result<ScalarValue> {
        if !self.options.is_empty() {
            let options = &self.options;
            self.rows
                .sort_by(|a, b| compare(&a.order, &b.order, options));
        }
        let mut out: Option<String> = None;
        let mut seen = std::collections::HashSet::new();
        for row in &self.rows {
            if self.distinct && !seen.insert((&row.value, &row.delimiter)) {
                continue;
            }
            match &mut out {
                None => out = Some(row.value.clone()),
                Some(s) => {
                    s.push_str(row.delimiter.as_deref().unwrap_or(""));
                    s.push_str(&row.value);
                }
            }
        }
        Ok(ScalarValue::Utf8(out))
    }

    fn size(&self) -> usize {
        std::mem::size_of_val(self)
            + self.rows.capacity() * std::mem::size_of::<Row>()
            + self.bytes
            + self
                .rows
                .iter()
                .map(|r| r.order.iter().map(ScalarValue::size).sum::<usize>())
                .sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::eval;

    fn agg(expr: &str, values: &str) -> Vec<String> {
        eval(
            &format!("(SELECT {expr} FROM (VALUES {values}) AS s(v, d, k))"),
            "(1)",
        )
        .unwrap()
    }

    #[test]
    fn delimiter_of_each_row() {
        let rows = "('a', ',', 3), ('b', '-', 1), (NULL, '+', 2), ('c', NULL, 4)";
        // b, then (NULL skipped) a after its ',', then c after its NULL (empty).
        assert_eq!(agg("string_agg(v, d ORDER BY k)", rows), ["b,ac"]);
        assert_eq!(
            agg("string_agg(v, ', ' ORDER BY k DESC)", rows),
            ["c, a, b"]
        );
        // The first value's delimiter is not used.
        assert_eq!(agg("string_agg(v, d ORDER BY v DESC)", rows), ["c-b,a"]);
        assert_eq!(
            agg("string_agg(v, d)", "(CAST(NULL AS text), ',', 1)"),
            ["NULL"]
        );
        assert_eq!(
            agg(
                "string_agg(DISTINCT v, ',' ORDER BY v)",
                "('x', ',', 1), ('y', ',', 2), ('x', ',', 3)"
            ),
            ["x,y"]
        );
    }
}
