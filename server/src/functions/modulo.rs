//! `mod(a, b)`: PostgreSQL's and Flink's remainder function (`a % b`), for
//! integers.

use std::sync::Arc;

use datafusion::arrow::compute::kernels::numeric::rem;
use datafusion::arrow::datatypes::DataType;
use datafusion::logical_expr::{create_udf, ColumnarValue, ScalarUDF, Volatility};

pub fn udf() -> ScalarUDF {
    create_udf(
        "mod",
        vec![DataType::Int64, DataType::Int64],
        DataType::Int64,
        Volatility::Immutable,
        Arc::new(|args: &[ColumnarValue]| {
            let arrays = ColumnarValue::values_to_arrays(args)?;
            super::result(args, rem(&arrays[0], &arrays[1])?)
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::super::test_util::{eval, eval1};

    #[test]
    fn remainder_of_integers() {
        assert_eq!(eval1("mod(7, 3)").unwrap(), "1");
        assert_eq!(eval1("mod(-7, 3)").unwrap(), "-1");
        assert_eq!(
            eval("mod(a, 4)", "(10), (NULL), (3)").unwrap(),
            ["2", "NULL", "3"]
        );
        assert!(eval1("mod(1, 0)").unwrap_err().contains("by zero"));
    }
}
