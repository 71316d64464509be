//! `array_repeat(x, n)`: DataFusion's, refusing a list over
//! [`VALUE_BYTES_MAX`](super::value_size::VALUE_BYTES_MAX) with
//! PostgreSQL's `requested length too large` (54000) before building it:
//! `array_repeat(1, 2147483647)` would allocate 16 GiB.

use datafusion::arrow::array::{Array, ArrayRef};
use datafusion::error::Result;
use datafusion::functions_nested::repeat::ArrayRepeat;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF};

use super::value_size::{IntArg, ResultBytes, ResultSize, SizeBounded};

pub fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(SizeBounded::new(ArrayRepeat::new(), ArrayRepeatSize))
}

/// `n` times the bytes of `x` (at least one byte, as a NULL element
/// still takes an offset or a slot), per row.
#[derive(Debug, PartialEq, Eq, Hash)]
struct ArrayRepeatSize;

impl ResultSize for ArrayRepeatSize {
    fn result_bytes(&self, args: &[ColumnarValue], rows: usize) -> Result<ResultBytes> {
        let mut bytes = ResultBytes::default();
        let [x, n] = args else {
            return Ok(bytes);
        };
        let n = IntArg::new(n)?;
        let x: ArrayRef = match x {
            ColumnarValue::Scalar(s) => s.to_array()?,
            ColumnarValue::Array(a) => a.clone(),
        };
        let x = x.to_data();
        for row in 0..rows {
            let Some(count) = n.get(row) else {
                continue;
            };
            let element = if x.len() == 1 { 0 } else { row };
            let size = x.slice(element, 1).get_slice_memory_size()?;
            bytes.add((size.max(1) as u64).saturating_mul(count.max(0) as u64));
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::eval1;

    #[test]
    fn repeats_up_to_the_bound() {
        assert_eq!(eval1("cardinality(array_repeat(1, 1000))").unwrap(), "1000");
        assert_eq!(eval1("array_repeat('ab', 2)").unwrap(), "[ab, ab]");
    }

    #[test]
    fn refuses_a_list_over_the_bound() {
        for call in [
            "array_repeat(1, 2147483647)",
            "array_repeat(repeat('x', 1000), 1000000)",
        ] {
            let err = eval1(call).unwrap_err();
            assert!(err.contains("requested length too large"), "{call}: {err}");
        }
    }
}
