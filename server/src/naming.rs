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

fn name_query(q: &mut Query) {
    name_set_expr(&mut q.body);
}

fn name_set_expr(body: &mut SetExpr) {
    match body {
        SetExpr::Select(select) => {
            let mut names: Vec<Option<String>> = select
                .projection
                .iter()
                .map(|item| match item {
                    SelectItem::UnnamedExpr(e) => pg_name(e),
                    _ => None,
                })
                .collect();
            // Keep DataFusion's name where PostgreSQL's would repeat one
            // already used (DataFusion requires unique names).
            let mut taken: Vec<String> = select
                .projection
                .iter()
                .filter_map(|item| match item {
                    SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.to_lowercase()),
                    SelectItem::UnnamedExpr(Expr::Identifier(i)) => Some(i.value.to_lowercase()),
                    SelectItem::UnnamedExpr(Expr::CompoundIdentifier(p)) => {
                        p.last().map(|i| i.value.to_lowercase())
                    }
                    _ => None,
                })
                .collect();
            for n in names.iter_mut() {
                if let Some(name) = n {
                    if taken.contains(name) {
                        *n = None;
                    } else {
                        taken.push(name.clone());
                    }
                }
            }
            for (item, name) in select.projection.iter_mut().zip(names) {
                if let (SelectItem::UnnamedExpr(e), Some(name)) = (&*item, name) {
                    *item = SelectItem::ExprWithAlias {
                        expr: e.clone(),
                        alias: Ident::with_quote('"', name),
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
        let mut s = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap().remove(0);
        apply(&mut s);
        s.to_string()
    }

    #[test]
    fn names_like_postgres() {
        assert_eq!(
            named("SELECT k, count(*), sum(v) AS s, v::int, 1 + 1 FROM t"),
            "SELECT k, count(*) AS \"count\", sum(v) AS s, v::INT AS \"v\", 1 + 1 AS \"?column?\" FROM t"
        );
        // A repeated name keeps DataFusion's.
        assert_eq!(named("SELECT count(*), count(v) FROM t"), "SELECT count(*) AS \"count\", count(v) FROM t");
    }
}
