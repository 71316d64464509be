//! PostgreSQL's names for unnamed output columns: `count(*)` is `count`,
//! `x::int` is `x`, other expressions are `?column?`. DataFusion would call
//! them `count(*)` or `Int64(1) + Int64(1)`; clients and views expect
//! PostgreSQL's names.

use datafusion::sql::sqlparser::ast::{Expr, Ident, Query, SelectItem, SetExpr, Statement};

fn pg_name(e: &Expr) -> Option<String> {
    match e {
        Expr::Identifier(_) | Expr::CompoundIdentifier(_) => None,
        Expr::Function(f) => f
            .name
            .0
            .last()
            .and_then(|p| p.as_ident())
            .map(|i| i.value.to_lowercase()),
        Expr::Cast { expr, .. } => match expr.as_ref() {
            Expr::Identifier(i) => Some(i.value.to_lowercase()),
            Expr::CompoundIdentifier(parts) => parts.last().map(|i| i.value.to_lowercase()),
            inner => pg_name(inner),
        },
        Expr::Nested(inner) => pg_name(inner),
        Expr::Case { .. } => Some("case".into()),
        _ => Some("?column?".into()),
    }
}

/// Marks an output name that repeats an earlier one.
pub const REPEAT_MARK: &str = "#weir";

/// The name a client sees for an output column.
pub fn display_name(name: &str) -> &str {
    match name.find(REPEAT_MARK) {
        Some(p) => &name[..p],
        None => name,
    }
}

fn fold(id: &Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_lowercase()
    }
}

fn name_query(q: &mut Query) {
    name_set_expr(&mut q.body);
}

fn name_set_expr(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            // PostgreSQL allows repeated output names; DataFusion does not.
            // A repeat is aliased `name#weir<i>` and renamed back in the
            // result (see `display_name`).
            let mut seen: Vec<String> = Vec::new();
            for (i, item) in select.projection.iter_mut().enumerate() {
                let (expr, name, keep) = match &*item {
                    SelectItem::ExprWithAlias { expr, alias } => {
                        let n = if alias.quote_style.is_some() {
                            alias.value.clone()
                        } else {
                            alias.value.to_lowercase()
                        };
                        (expr.clone(), n, true)
                    }
                    SelectItem::UnnamedExpr(e @ Expr::Identifier(id)) => {
                        (e.clone(), fold(id), true)
                    }
                    SelectItem::UnnamedExpr(e @ Expr::CompoundIdentifier(parts)) => {
                        match parts.last() {
                            Some(id) => (e.clone(), fold(id), true),
                            None => continue,
                        }
                    }
                    SelectItem::UnnamedExpr(e) => match pg_name(e) {
                        Some(n) => (e.clone(), n, false),
                        None => continue,
                    },
                    _ => continue,
                };
                let alias = if seen.contains(&name) {
                    Some(format!("{name}{REPEAT_MARK}{i}"))
                } else {
                    seen.push(name.clone());
                    (!keep).then_some(name)
                };
                if let Some(alias) = alias {
                    *item = SelectItem::ExprWithAlias {
                        expr,
                        alias: Ident::with_quote('"', alias),
                    };
                }
            }
        }
        SetExpr::SetOperation { left, .. } => name_set_expr(left),
        SetExpr::Query(q) => name_query(q),
        _ => {}
    }
}

/// Gives the unnamed output columns of a query statement PostgreSQL's names.
pub fn apply(stmt: &mut Statement) {
    if let Statement::Query(q) = stmt {
        name_query(q);
    }
}

#[cfg(test)]
mod tests {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    use super::*;

    fn named(sql: &str) -> String {
        let mut s = Parser::parse_sql(&PostgreSqlDialect {}, sql)
            .unwrap()
            .remove(0);
        apply(&mut s);
        s.to_string()
    }

    #[test]
    fn names_like_postgres() {
        assert_eq!(
            named("SELECT k, count(*), sum(v) AS s, v::int, 1 + 1 FROM t"),
            "SELECT k, count(*) AS \"count\", sum(v) AS s, v::INT AS \"v\", 1 + 1 AS \"?column?\" FROM t"
        );
        // A repeated name is marked for DataFusion and shown without the mark.
        assert_eq!(
            named("SELECT count(*), count(v), a, a FROM t"),
            "SELECT count(*) AS \"count\", count(v) AS \"count#weir1\", a, a AS \"a#weir3\" FROM t"
        );
        assert_eq!(display_name("count#weir1"), "count");
        assert_eq!(display_name("plain"), "plain");
    }
}

/// Rewrites interval literals written in PostgreSQL's output form
/// (`'3 days 04:05:06'`, `'-01:30'`) into the unit form DataFusion parses
/// (`'3 days 4 hours 5 minutes 6 seconds'`), and numeric NaN and
/// infinities (`typed_literals`), refusing an infinity a numeric with a
/// precision cannot hold, with PostgreSQL's error.
pub fn normalize_literals(stmt: &mut Statement) -> crate::error::SqlResult<()> {
    use datafusion::sql::sqlparser::ast::{visit_expressions_mut, DataType as SqlType, Value};
    use std::ops::ControlFlow;
    let fix = |v: &mut Value| {
        if let Value::SingleQuotedString(s) = v {
            if let Some(n) = normalize_interval_text(s) {
                *s = n;
            }
        }
    };
    let refused = visit_expressions_mut(stmt, |e| {
        if let Err(err) = crate::typed_literals::rewrite(e) {
            return ControlFlow::Break(err);
        }
        match e {
            Expr::Interval(i) => {
                if let Expr::Value(v) = i.value.as_mut() {
                    fix(&mut v.value);
                }
            }
            Expr::Cast {
                data_type: SqlType::Interval { .. },
                expr,
                ..
            } => {
                if let Expr::Value(v) = expr.as_mut() {
                    fix(&mut v.value);
                }
            }
            Expr::Value(v) if matches!(&v.value, Value::Number(n, _) if n.contains(['e', 'E'])) => {
                // Literals with an exponent stay floating point: numeric
                // literals are parsed as decimals, which cannot hold 1e300.
                if let Value::Number(n, _) = &v.value {
                    let text = format!("CAST('{n}' AS DOUBLE PRECISION)");
                    if let Ok(parsed) = datafusion::sql::sqlparser::parser::Parser::new(
                        &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
                    )
                    .try_with_sql(&text)
                    .and_then(|mut p| p.parse_expr())
                    {
                        *e = parsed;
                    }
                }
            }
            Expr::Cast {
                data_type: SqlType::Bytea,
                expr,
                ..
            } => {
                if let Some(decoded) = bytea_hex_literal(expr) {
                    *e = decoded;
                }
            }
            Expr::TypedString(ts) if matches!(ts.data_type, SqlType::Interval { .. }) => {
                fix(&mut ts.value.value);
            }
            _ => {}
        }
        ControlFlow::Continue(())
    });
    match refused {
        ControlFlow::Break(err) => Err(err),
        ControlFlow::Continue(()) => Ok(()),
    }
}

/// `'\x0102'` (PostgreSQL's bytea hex input) as `decode('0102', 'hex')`.
pub fn bytea_hex_literal(e: &Expr) -> Option<Expr> {
    use datafusion::sql::sqlparser::ast::Value;
    let Expr::Value(v) = e else { return None };
    let Value::SingleQuotedString(s) = &v.value else {
        return None;
    };
    let hex = s.strip_prefix("\\x")?;
    if !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    datafusion::sql::sqlparser::parser::Parser::new(
        &datafusion::sql::sqlparser::dialect::PostgreSqlDialect {},
    )
    .try_with_sql(&format!("decode('{hex}', 'hex')"))
    .ok()?
    .parse_expr()
    .ok()
}

/// `None` when the text has no `h:m[:s]` part.
pub(crate) fn normalize_interval_text(s: &str) -> Option<String> {
    let mut changed = false;
    let mut out = Vec::new();
    for tok in s.split_whitespace() {
        let (sign, body) = match tok.strip_prefix('-') {
            Some(b) => ("-", b),
            None => ("", tok.strip_prefix('+').unwrap_or(tok)),
        };
        let parts: Vec<&str> = body.split(':').collect();
        let numeric = parts.len() >= 2
            && parts.len() <= 3
            && parts
                .iter()
                .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit() || c == '.'));
        if !numeric {
            out.push(tok.to_string());
            continue;
        }
        changed = true;
        out.push(format!("{sign}{} hours", parts[0]));
        out.push(format!("{sign}{} minutes", parts[1]));
        if let Some(sec) = parts.get(2) {
            out.push(format!("{sign}{sec} seconds"));
        }
    }
    changed.then(|| out.join(" "))
}

#[cfg(test)]
mod interval_tests {
    use super::normalize_interval_text;

    #[test]
    fn clock_parts_become_units() {
        assert_eq!(
            normalize_interval_text("3 days 04:05:06.5").unwrap(),
            "3 days 04 hours 05 minutes 06.5 seconds"
        );
        assert_eq!(
            normalize_interval_text("-01:30").unwrap(),
            "-01 hours -30 minutes"
        );
        assert_eq!(normalize_interval_text("1 day"), None);
    }
}
