//! Parsing one statement: Weir's rewrites (window table functions, output
//! names, literal forms) and the bounds of `parse_guard`, off the threads
//! that serve other sessions.

use super::*;

impl Engine {
    /// Parses one statement and applies Weir's rewrites: PostgreSQL's output
    /// column names and the literal forms DataFusion reads differently.
    pub(super) fn parse_rewritten(&self, sql: &str) -> SqlResult<DfStatement> {
        let mut stmt = self.parse(sql)?;
        if let DfStatement::Statement(inner) = &mut stmt {
            crate::naming::apply(inner);
            crate::naming::normalize_literals(inner)?;
            self.bytea_in_insert_values(inner);
        }
        Ok(stmt)
    }

    /// Parses one statement. Queries over `pg_catalog` (what psql's `\d` and
    /// BI tools send) go through datafusion-pg-catalog's rewriting parser;
    /// everything else through DataFusion's, unchanged.
    pub(super) fn parse(&self, sql: &str) -> SqlResult<DfStatement> {
        let rewritten = crate::event_time::rewrite_windows(sql)?;
        let sql = rewritten.as_str();
        let tokens = crate::parse_guard::check_operators(sql)?;
        // Parsing a long statement takes a while: not on a thread that
        // serves other sessions.
        let stmt = off_runtime(|| self.parse_bounded(sql, tokens))?;
        if let Err(e) = check_statement_depth(&stmt) {
            crate::parse_guard::drop_deep(stmt);
            return Err(e);
        }
        Ok(stmt)
    }

    /// Parses one statement with a budget of parse steps (see
    /// `parse_guard`).
    pub(super) fn parse_bounded(&self, sql: &str, tokens: usize) -> SqlResult<DfStatement> {
        use crate::parse_guard::WeirDialect;
        let dialect = WeirDialect::for_tokens(tokens);
        let recursion_limit = self
            .ctx
            .state()
            .config()
            .options()
            .sql_parser
            .recursion_limit
            .get();
        let syntax = |e: String| {
            if dialect.exhausted() {
                return WeirDialect::too_complex();
            }
            let msg = e
                .trim_start_matches("SQL error: ")
                .trim_start_matches("ParserError(\"")
                .trim_end_matches("\")")
                .replace("sql parser error: ", "");
            SqlError::syntax(format!("syntax error: {msg}"))
        };
        let lower = sql.to_ascii_lowercase();
        if lower.contains("pg_catalog")
            || lower.contains("pg_class")
            || lower.contains("pg_namespace")
            || lower.contains("::regclass")
            || crate::providers::pg_catalog::names_catalog_relation(sql)
        {
            // Its parser has no budget: the statement is parsed with one
            // first (they are short).
            datafusion::sql::parser::DFParserBuilder::new(sql)
                .with_dialect(&dialect)
                .with_recursion_limit(recursion_limit)
                .build()
                .and_then(|mut p| p.parse_statements())
                .map_err(|e| syntax(e.strip_backtrace()))?;
            let mut stmts = self
                .compat
                .parse(sql)
                .map_err(|e| SqlError::syntax(format!("syntax error: {e}")))?;
            if stmts.len() == 1 {
                let stmt = crate::providers::pg_catalog::rewrite(stmts.remove(0));
                return Ok(DfStatement::Statement(Box::new(stmt)));
            }
        }
        if lower.trim_start().starts_with("copy") {
            // DataFusion's parser reads COPY as its own COPY TO; PostgreSQL's grammar is wanted.
            let mut stmts = datafusion::sql::sqlparser::parser::Parser::new(&dialect)
                .with_recursion_limit(recursion_limit)
                .try_with_sql(sql)
                .and_then(|mut p| p.parse_statements())
                .map_err(|e| syntax(e.to_string()))?;
            if stmts.len() == 1 {
                return Ok(DfStatement::Statement(Box::new(stmts.remove(0))));
            }
        }
        let mut statements = datafusion::sql::parser::DFParserBuilder::new(sql)
            .with_dialect(&dialect)
            .with_recursion_limit(recursion_limit)
            .build()
            .and_then(|mut p| p.parse_statements())
            .map_err(|e| syntax(e.strip_backtrace()))?;
        if statements.len() > 1 {
            return Err(SqlError::syntax(
                "cannot insert multiple commands into a prepared statement",
            ));
        }
        statements
            .pop_front()
            .ok_or_else(|| SqlError::syntax("syntax error: empty statement"))
    }
}

/// [`crate::parse_guard::check_depth`] over a DataFusion statement.
pub(super) fn check_statement_depth(stmt: &DfStatement) -> SqlResult<()> {
    match stmt {
        DfStatement::Statement(s) => crate::parse_guard::check_depth(s.as_ref()),
        DfStatement::Explain(e) => check_statement_depth(&e.statement),
        _ => Ok(()),
    }
}
