//! `repeat(s, n)`: DataFusion's, refusing a result over
//! [`VALUE_BYTES_MAX`](super::value_size::VALUE_BYTES_MAX) with
//! PostgreSQL's `requested length too large` (54000) before building it.

use datafusion::error::Result;
use datafusion::functions::string::repeat::RepeatFunc;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF};

use super::value_size::{text_len, IntArg, ResultBytes, ResultSize, SizeBounded};

pub fn udf() -> ScalarUDF {
    ScalarUDF::new_from_impl(SizeBounded::new(RepeatFunc::new(), RepeatSize))
}

/// `len(s) * n` bytes per row.
#[derive(Debug, PartialEq, Eq, Hash)]
struct RepeatSize;

impl ResultSize for RepeatSize {
    fn result_bytes(&self, args: &[ColumnarValue], rows: usize) -> Result<ResultBytes> {
        let mut bytes = ResultBytes::default();
        let [s, n] = args else {
            return Ok(bytes);
        };
        let n = IntArg::new(n)?;
        for row in 0..rows {
            let (Some(len), Some(count)) = (text_len(s, row)?, n.get(row)) else {
                continue;
            };
            bytes.add((len as u64).saturating_mul(count.max(0) as u64));
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{eval, eval1};

    #[test]
    fn builds_values_up_to_the_bound() {
        assert_eq!(eval1("length(repeat('ab', 1000))").unwrap(), "2000");
        assert_eq!(eval1("repeat('ab', -1)").unwrap(), "");
        assert_eq!(eval1("repeat(NULL, 3)").unwrap(), "NULL");
    }

    #[test]
    fn refuses_a_value_over_the_bound() {
        let err = eval1("repeat('x', 2147483647)").unwrap_err();
        assert!(err.contains("requested length too large"), "{err}");
        // 2 bytes * 200M = 400 MB > 256 MiB, over a column too.
        let err = eval("repeat(a, b)", "('ab', 3), ('ab', 200000000)").unwrap_err();
        assert!(err.contains("requested length too large"), "{err}");
    }
}
