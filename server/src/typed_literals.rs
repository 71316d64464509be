//! Numeric literals PostgreSQL reads and DataFusion does not, rewritten
//! before planning (called by `naming::normalize_literals` for every
//! expression): `NaN` and `Infinity` as numeric (`'NaN'::numeric`,
//! `numeric 'NaN'`). Arrow's decimals have neither, so the literal becomes
//! a `double precision` one, which has both and orders them as PostgreSQL
//! orders numeric (NaN above every number, equal to itself). The value
//! prints as in PostgreSQL; its type is float8 instead of numeric. A
//! numeric with a declared precision cannot hold an infinity, in
//! PostgreSQL either (22003).
//!
//! (Date-time literals are read in PostgreSQL's forms by
//! `literal_casts`, after DataFusion typed them.)

use datafusion::sql::sqlparser::ast::{DataType as SqlType, ExactNumberInfo, Expr, Value};
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use weir_executor::SqlState;

use crate::error::{SqlError, SqlResult};

/// Rewrites `e` if it is one of the literals above.
pub fn rewrite(e: &mut Expr) -> SqlResult<()> {
    let (data_type, text) = match e {
        Expr::Cast {
            data_type, expr, ..
        } => match expr.as_ref() {
            Expr::Value(v) => match &v.value {
                Value::SingleQuotedString(s) => (data_type.clone(), s.clone()),
                _ => return Ok(()),
            },
            _ => return Ok(()),
        },
        Expr::TypedString(ts) => match &ts.value.value {
            Value::SingleQuotedString(s) => (ts.data_type.clone(), s.clone()),
            _ => return Ok(()),
        },
        _ => return Ok(()),
    };
    if let Some(info) = numeric_info(&data_type) {
        let Some(special) = special_number(&text) else {
            return Ok(());
        };
        if special != "NaN" && !matches!(info, ExactNumberInfo::None) {
            let (p, s) = match info {
                ExactNumberInfo::PrecisionAndScale(p, s) => (p, s),
                ExactNumberInfo::Precision(p) => (p, 0),
                ExactNumberInfo::None => (0, 0),
            };
            return Err(SqlError::new(
                SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
                "numeric field overflow",
            )
            .with_detail(format!(
                "A field with precision {p}, scale {s} cannot hold an infinite value."
            )));
        }
        *e = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(&format!("CAST('{special}' AS DOUBLE PRECISION)"))
            .and_then(|mut p| p.parse_expr())
            .map_err(|err| SqlError::internal(err.to_string()))?;
    }
    Ok(())
}

fn numeric_info(t: &SqlType) -> Option<ExactNumberInfo> {
    match t {
        SqlType::Numeric(i) | SqlType::Decimal(i) | SqlType::Dec(i) => Some(*i),
        _ => None,
    }
}

/// The float text of PostgreSQL's special numeric inputs (any case,
/// surrounding spaces allowed), `None` for any other text.
pub fn special_number(text: &str) -> Option<&'static str> {
    match text.trim().to_ascii_lowercase().as_str() {
        "nan" => Some("NaN"),
        "infinity" | "+infinity" | "inf" | "+inf" => Some("Infinity"),
        "-infinity" | "-inf" => Some("-Infinity"),
        _ => None,
    }
}

/// The error for NaN or an infinity (`special`) bound for a numeric
/// column or cast (0A000).
pub fn special_numeric_refused(special: &str) -> SqlError {
    SqlError::unsupported(format!("numeric value \"{special}\" is not supported")).with_hint(
        "Weir's numeric is a 128-bit decimal, without NaN or infinity; double precision has them.",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewritten(sql: &str) -> Result<String, String> {
        let mut e = Parser::new(&PostgreSqlDialect {})
            .try_with_sql(sql)
            .unwrap()
            .parse_expr()
            .unwrap();
        rewrite(&mut e).map_err(|e| format!("{} {}", e.sqlstate.code(), e.message))?;
        Ok(e.to_string())
    }

    #[test]
    fn numeric_specials_become_floats() {
        assert_eq!(
            rewritten("'NaN'::numeric").unwrap(),
            "CAST('NaN' AS DOUBLE PRECISION)"
        );
        assert_eq!(
            rewritten("numeric ' -inf '").unwrap(),
            "CAST('-Infinity' AS DOUBLE PRECISION)"
        );
        assert_eq!(
            rewritten("'nan'::numeric(10,2)").unwrap(),
            "CAST('NaN' AS DOUBLE PRECISION)"
        );
        assert_eq!(
            rewritten("'Infinity'::numeric(10,2)").unwrap_err(),
            "22003 numeric field overflow"
        );
        assert_eq!(rewritten("'1.5'::numeric").unwrap(), "'1.5'::NUMERIC");
    }
}
