//! SQL types of Weir tables and their Arrow representation.

use std::sync::Arc;
use weir_executor::SqlState;

use datafusion::arrow::datatypes::{DataType, IntervalUnit, TimeUnit};

use crate::error::{SqlError, SqlResult};

/// Time zone of `timestamptz` columns: values are stored as UTC instants.
pub const UTC: &str = "+00:00";

/// Arrow type for a SQL type name as written in CREATE TABLE.
pub fn arrow_type(sql: &str) -> SqlResult<DataType> {
    let norm = sql.trim().to_ascii_lowercase();
    let (base, args) = match norm.find('(') {
        Some(p) => {
            let close = norm.rfind(')').unwrap_or(norm.len());
            let args: Vec<u32> = norm[p + 1..close]
                .split(',')
                .filter_map(|a| a.trim().parse().ok())
                .collect();
            let rest = norm[close + 1..].trim();
            let base = format!("{} {}", norm[..p].trim(), rest);
            (base.trim().to_string(), args)
        }
        None => (norm.clone(), vec![]),
    };
    let t = match base.as_str() {
        "smallint" | "int2" => DataType::Int16,
        "int" | "integer" | "int4" => DataType::Int32,
        "bigint" | "int8" => DataType::Int64,
        "real" | "float4" => DataType::Float32,
        "double precision" | "double" | "float8" | "float" => DataType::Float64,
        "numeric" | "decimal" => {
            let p = args.first().copied().unwrap_or(38).min(38) as u8;
            let s = args
                .get(1)
                .copied()
                .unwrap_or(if args.is_empty() { 10 } else { 0 }) as i8;
            if p == 0 || s as i32 > p as i32 {
                return Err(SqlError::new(
                    SqlState::INVALID_PARAMETER_VALUE,
                    format!("NUMERIC scale {s} must be between 0 and precision {p}"),
                ));
            }
            DataType::Decimal128(p, s)
        }
        "boolean" | "bool" => DataType::Boolean,
        "text" | "varchar" | "character varying" | "char" | "character" | "string" | "bpchar" => {
            DataType::Utf8
        }
        "date" => DataType::Date32,
        "timestamp" | "timestamp without time zone" => {
            DataType::Timestamp(TimeUnit::Microsecond, None)
        }
        "timestamptz" | "timestamp with time zone" => {
            DataType::Timestamp(TimeUnit::Microsecond, Some(Arc::from(UTC)))
        }
        "interval" => DataType::Interval(IntervalUnit::MonthDayNano),
        "bytea" => DataType::Binary,
        _ => {
            return Err(SqlError::new(
                SqlState::UNDEFINED_OBJECT,
                format!("type \"{sql}\" does not exist"),
            ));
        }
    };
    Ok(t)
}

/// Canonical SQL name of an Arrow type (as stored in the catalog and shown
/// to users).
pub fn sql_type_name(t: &DataType) -> String {
    match t {
        DataType::Int16 => "smallint".into(),
        DataType::Int32 => "integer".into(),
        DataType::Int64 => "bigint".into(),
        DataType::Float32 => "real".into(),
        DataType::Float64 => "double precision".into(),
        DataType::Decimal128(p, s) => format!("numeric({p},{s})"),
        DataType::Boolean => "boolean".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "text".into(),
        DataType::Date32 => "date".into(),
        DataType::Timestamp(_, None) => "timestamp".into(),
        DataType::Timestamp(_, Some(_)) => "timestamptz".into(),
        DataType::Interval(_) => "interval".into(),
        DataType::Binary | DataType::LargeBinary | DataType::BinaryView => "bytea".into(),
        other => other.to_string().to_ascii_lowercase(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for name in [
            "smallint",
            "integer",
            "bigint",
            "real",
            "double precision",
            "numeric(10,2)",
            "boolean",
            "text",
            "date",
            "timestamp",
            "timestamptz",
            "interval",
            "bytea",
        ] {
            let t = arrow_type(name).unwrap();
            assert_eq!(sql_type_name(&t), name);
        }
        assert_eq!(arrow_type("VARCHAR(20)").unwrap(), DataType::Utf8);
        assert_eq!(
            arrow_type("timestamp with time zone").unwrap(),
            arrow_type("timestamptz").unwrap()
        );
        assert!(arrow_type("blob").is_err());
    }
}
