//! `lpad(s, n [, fill])` and `rpad(s, n [, fill])`: DataFusion's, refusing
//! a result over [`VALUE_BYTES_MAX`](super::value_size::VALUE_BYTES_MAX)
//! with PostgreSQL's `requested length too large` (54000) before building
//! it. The two are one function padded on either side, so they share
//! this file and their size bound.

use datafusion::error::Result;
use datafusion::functions::unicode::{lpad::LPadFunc, rpad::RPadFunc};
use datafusion::logical_expr::{ColumnarValue, ScalarUDF};

use super::value_size::{
    text_len, widest_char_bytes, IntArg, ResultBytes, ResultSize, SizeBounded,
};

pub fn lpad() -> ScalarUDF {
    ScalarUDF::new_from_impl(SizeBounded::new(LPadFunc::new(), PadSize))
}

pub fn rpad() -> ScalarUDF {
    ScalarUDF::new_from_impl(SizeBounded::new(RPadFunc::new(), PadSize))
}

/// At most `len(s)` bytes of `s` plus `n` characters of the fill (a space
/// when there is none), each as wide as the fill's widest.
#[derive(Debug, PartialEq, Eq, Hash)]
struct PadSize;

impl ResultSize for PadSize {
    fn result_bytes(&self, args: &[ColumnarValue], rows: usize) -> Result<ResultBytes> {
        let mut bytes = ResultBytes::default();
        let (Some(s), Some(n)) = (args.first(), args.get(1)) else {
            return Ok(bytes);
        };
        let n = IntArg::new(n)?;
        for row in 0..rows {
            let (Some(len), Some(chars)) = (text_len(s, row)?, n.get(row)) else {
                continue;
            };
            let width = match args.get(2) {
                Some(fill) => widest_char_bytes(fill, row)?,
                None => 1,
            };
            let fill = (chars.max(0) as u64).saturating_mul(width as u64);
            bytes.add(fill.saturating_add(len as u64));
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_util::eval1;

    #[test]
    fn pads_up_to_the_bound() {
        assert_eq!(eval1("lpad('ab', 5, '-')").unwrap(), "---ab");
        assert_eq!(eval1("rpad('ab', 5)").unwrap(), "ab   ");
        assert_eq!(eval1("length(lpad('', 100000, 'é'))").unwrap(), "100000");
    }

    #[test]
    fn refuses_a_value_over_the_bound() {
        for call in [
            "lpad('x', 2147483647)",
            "rpad('x', 2147483647, 'ab')",
            // 100M characters of a 4-byte fill: 400 MB.
            "lpad('', 100000000, '😀')",
        ] {
            let err = eval1(call).unwrap_err();
            assert!(err.contains("requested length too large"), "{call}: {err}");
        }
    }
}
