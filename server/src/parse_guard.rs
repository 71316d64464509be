//! Bounds on the work one statement's text may cause before it is planned,
//! so that no statement can take the server down or stall other sessions:
//!
//! - parsing runs with a work budget ([`WeirDialect`]): sqlparser backtracks
//!   on some malformed input (nested `CASE` with a `WHEN` missing took
//!   exponential time), and every expression it tries costs one step;
//! - an expression nested deeper than [`EXPRESSION_DEPTH_MAX`] is refused
//!   right after parsing, before anything walks it recursively (cloning,
//!   printing, planning): `1+1+...+1` with thousands of terms parses into a
//!   tree whose depth is the number of terms;
//! - a statement with more than [`OPERATORS_MAX`] operators is refused
//!   before parsing, which bounds the depth of what the parser builds.
//!
//! All three answer SQLSTATE 54001 (statement too complex).

use std::any::TypeId;
use std::cell::Cell;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{Expr, Visit, Visitor};
use datafusion::sql::sqlparser::dialect::{Dialect, PostgreSqlDialect, Precedence};
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

use weir_executor::SqlState;

use crate::error::SqlError;

/// Deepest expression nesting a statement may have.
pub const EXPRESSION_DEPTH_MAX: usize = 512;
/// Operators (`+`, `AND`, `=`, ...) one statement may contain.
pub const OPERATORS_MAX: usize = 100_000;
/// Expressions the parser may try per token of the statement (plus a
/// fixed allowance): a statement parses with about one per operand, so only
/// runaway backtracking reaches it.
pub const PARSE_STEPS_PER_TOKEN_MAX: u64 = 16;
const PARSE_STEPS_BASE: u64 = 10_000;

/// PostgreSQL's lexical and grammar rules (sqlparser's PostgreSQL dialect,
/// which it stands in for everywhere), with a budget of parse steps.
#[derive(Debug)]
pub struct WeirDialect {
    inner: PostgreSqlDialect,
    steps_left: Cell<u64>,
    exhausted: Cell<bool>,
}

impl WeirDialect {
    /// A dialect for parsing a statement of `tokens` tokens.
    pub fn for_tokens(tokens: usize) -> Self {
        WeirDialect {
            inner: PostgreSqlDialect {},
            steps_left: Cell::new(PARSE_STEPS_BASE + PARSE_STEPS_PER_TOKEN_MAX * tokens as u64),
            exhausted: Cell::new(false),
        }
    }

    /// Whether the parse stopped because it ran out of steps.
    pub fn exhausted(&self) -> bool {
        self.exhausted.get()
    }

    /// The error for a parse that ran out of steps.
    pub fn too_complex() -> SqlError {
        SqlError::new(
            SqlState::STATEMENT_TOO_COMPLEX,
            "statement too complex: parsing it took too many steps",
        )
        .with_hint(
            "Check the statement for a missing keyword, e.g. a WHEN in nested CASE expressions.",
        )
    }
}

impl Dialect for WeirDialect {
    fn dialect(&self) -> TypeId {
        // sqlparser's `dialect_of!(... is PostgreSqlDialect)` checks.
        TypeId::of::<PostgreSqlDialect>()
    }

    fn parse_prefix(&self, _parser: &mut Parser) -> Option<Result<Expr, ParserError>> {
        match self.steps_left.get() {
            0 => {
                self.exhausted.set(true);
                // Not swallowed by the parser's backtracking (`maybe_parse`).
                Some(Err(ParserError::RecursionLimitExceeded))
            }
            n => {
                self.steps_left.set(n - 1);
                None
            }
        }
    }

    fn identifier_quote_style(&self, identifier: &str) -> Option<char> {
        self.inner.identifier_quote_style(identifier)
    }
    fn is_delimited_identifier_start(&self, ch: char) -> bool {
        self.inner.is_delimited_identifier_start(ch)
    }
    fn is_identifier_start(&self, ch: char) -> bool {
        self.inner.is_identifier_start(ch)
    }
    fn is_identifier_part(&self, ch: char) -> bool {
        self.inner.is_identifier_part(ch)
    }
    fn supports_unicode_string_literal(&self) -> bool {
        self.inner.supports_unicode_string_literal()
    }
    fn is_reserved_for_identifier(&self, kw: Keyword) -> bool {
        self.inner.is_reserved_for_identifier(kw)
    }
    fn is_custom_operator_part(&self, ch: char) -> bool {
        self.inner.is_custom_operator_part(ch)
    }
    fn get_next_precedence(&self, parser: &Parser) -> Option<Result<u8, ParserError>> {
        self.inner.get_next_precedence(parser)
    }
    fn supports_filter_during_aggregation(&self) -> bool {
        self.inner.supports_filter_during_aggregation()
    }
    fn supports_group_by_expr(&self) -> bool {
        self.inner.supports_group_by_expr()
    }
    fn prec_value(&self, prec: Precedence) -> u8 {
        self.inner.prec_value(prec)
    }
    fn allow_extract_custom(&self) -> bool {
        self.inner.allow_extract_custom()
    }
    fn allow_extract_single_quotes(&self) -> bool {
        self.inner.allow_extract_single_quotes()
    }
    fn supports_create_index_with_clause(&self) -> bool {
        self.inner.supports_create_index_with_clause()
    }
    fn supports_explain_with_utility_options(&self) -> bool {
        self.inner.supports_explain_with_utility_options()
    }
    fn supports_listen_notify(&self) -> bool {
        self.inner.supports_listen_notify()
    }
    fn supports_factorial_operator(&self) -> bool {
        self.inner.supports_factorial_operator()
    }
    fn supports_bitwise_shift_operators(&self) -> bool {
        self.inner.supports_bitwise_shift_operators()
    }
    fn supports_comment_on(&self) -> bool {
        self.inner.supports_comment_on()
    }
    fn supports_load_extension(&self) -> bool {
        self.inner.supports_load_extension()
    }
    fn supports_named_fn_args_with_colon_operator(&self) -> bool {
        self.inner.supports_named_fn_args_with_colon_operator()
    }
    fn supports_named_fn_args_with_expr_name(&self) -> bool {
        self.inner.supports_named_fn_args_with_expr_name()
    }
    fn supports_empty_projections(&self) -> bool {
        self.inner.supports_empty_projections()
    }
    fn supports_nested_comments(&self) -> bool {
        self.inner.supports_nested_comments()
    }
    fn supports_string_escape_constant(&self) -> bool {
        self.inner.supports_string_escape_constant()
    }
    fn supports_numeric_literal_underscores(&self) -> bool {
        self.inner.supports_numeric_literal_underscores()
    }
    fn supports_array_typedef_with_brackets(&self) -> bool {
        self.inner.supports_array_typedef_with_brackets()
    }
    fn supports_geometric_types(&self) -> bool {
        self.inner.supports_geometric_types()
    }
    fn supports_set_names(&self) -> bool {
        self.inner.supports_set_names()
    }
    fn supports_alter_column_type_using(&self) -> bool {
        self.inner.supports_alter_column_type_using()
    }
    fn supports_notnull_operator(&self) -> bool {
        self.inner.supports_notnull_operator()
    }
    fn supports_interval_options(&self) -> bool {
        self.inner.supports_interval_options()
    }
    fn supports_insert_table_alias(&self) -> bool {
        self.inner.supports_insert_table_alias()
    }
    fn supports_create_table_like_parenthesized(&self) -> bool {
        self.inner.supports_create_table_like_parenthesized()
    }
    fn supports_select_wildcard_with_alias(&self) -> bool {
        self.inner.supports_select_wildcard_with_alias()
    }
    fn supports_comma_separated_trim(&self) -> bool {
        self.inner.supports_comma_separated_trim()
    }
    fn supports_xml_expressions(&self) -> bool {
        self.inner.supports_xml_expressions()
    }
    fn supports_comment_optimizer_hint(&self) -> bool {
        self.inner.supports_comment_optimizer_hint()
    }
}

/// Refuses a statement with more operators than [`OPERATORS_MAX`].
/// The number of tokens of `sql` (the parse budget is per token),
/// refusing a statement with more than [`OPERATORS_MAX`] operators.
pub fn check_operators(sql: &str) -> Result<usize, SqlError> {
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize()
        .map_err(|e| SqlError::syntax(format!("syntax error: {}", e.message)))?;
    let operators = tokens
        .iter()
        .filter(|t| match t {
            Token::Word(w) => {
                w.quote_style.is_none() && matches!(w.keyword, Keyword::AND | Keyword::OR)
            }
            Token::Plus
            | Token::Minus
            | Token::Mul
            | Token::Div
            | Token::Mod
            | Token::StringConcat
            | Token::Eq
            | Token::DoubleEq
            | Token::Neq
            | Token::Lt
            | Token::Gt
            | Token::LtEq
            | Token::GtEq
            | Token::Caret
            | Token::Ampersand
            | Token::Pipe
            | Token::DoubleColon
            | Token::CustomBinaryOperator(_) => true,
            _ => false,
        })
        .count();
    if operators > OPERATORS_MAX {
        return Err(SqlError::new(
            SqlState::STATEMENT_TOO_COMPLEX,
            format!("statement too complex: {operators} operators (at most {OPERATORS_MAX})"),
        ));
    }
    Ok(tokens.len())
}

/// Refuses a statement whose expressions nest deeper than
/// [`EXPRESSION_DEPTH_MAX`]. The walk stops descending at the limit, so
/// its own recursion is bounded.
pub fn check_depth<V: Visit>(stmt: &V) -> Result<(), SqlError> {
    struct Depth {
        now: usize,
    }
    impl Visitor for Depth {
        type Break = ();
        fn pre_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<()> {
            self.now += 1;
            if self.now > EXPRESSION_DEPTH_MAX {
                return ControlFlow::Break(());
            }
            ControlFlow::Continue(())
        }
        fn post_visit_expr(&mut self, _expr: &Expr) -> ControlFlow<()> {
            self.now -= 1;
            ControlFlow::Continue(())
        }
    }
    match stmt.visit(&mut Depth { now: 0 }) {
        ControlFlow::Continue(()) => Ok(()),
        ControlFlow::Break(()) => Err(SqlError::new(
            SqlState::STATEMENT_TOO_COMPLEX,
            format!(
                "statement too complex: expressions nested more than {EXPRESSION_DEPTH_MAX} levels deep"
            ),
        )
        .with_hint("Split the expression, or use IN (...) or a table instead of long chains of operators.")),
    }
}

/// Drops a value that may be too deep for a recursive drop on a normal
/// stack (an expression the checks above refused) on a thread with a
/// large one. [`OPERATORS_MAX`] bounds the depth.
pub fn drop_deep<T: Send + 'static>(value: T) {
    const DROP_STACK_BYTES: usize = 512 << 20;
    let spawned = std::thread::Builder::new()
        .name("weir-drop".into())
        .stack_size(DROP_STACK_BYTES)
        .spawn(move || drop(value));
    match spawned {
        Ok(handle) => {
            let _ = handle.join();
        }
        Err(e) => {
            tracing::error!(error = %e, "could not start a thread to free a refused statement")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::parser::Parser;

    fn parse(
        sql: &str,
    ) -> (
        Result<Vec<datafusion::sql::sqlparser::ast::Statement>, ParserError>,
        bool,
    ) {
        let tokens = crate::sql_text::tokenize(sql).unwrap();
        let dialect = WeirDialect::for_tokens(tokens.len());
        let r = Parser::new(&dialect)
            .with_recursion_limit(200)
            .try_with_sql(sql)
            .and_then(|mut p| p.parse_statements());
        (r, dialect.exhausted())
    }

    #[test]
    fn parses_as_postgres_does() {
        for sql in [
            "SELECT a::int, b || 'x', c ~ 'r', d ->> 'k', e IS NOT NULL, f NOTNULL FROM t WHERE g BETWEEN 1 AND 2",
            "SELECT E'a\\'b', U&'x', $$d$$, ARRAY[1,2][1], x AT TIME ZONE 'UTC', interval '1' day",
            "CREATE TABLE t (a int PRIMARY KEY, b text NOT NULL) WITH (connector = 'file')",
            "SELECT count(*) FILTER (WHERE a > 1), string_agg(b, ',' ORDER BY b) FROM t GROUP BY ROLLUP (a)",
        ] {
            let ours = parse(sql).0.unwrap();
            let theirs = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
            assert_eq!(ours, theirs, "{sql}");
        }
    }

    #[test]
    fn runaway_backtracking_runs_out_of_steps() {
        let n = 200;
        let mut sql = format!(
            "SELECT {}1{}",
            "CASE WHEN true THEN ".repeat(n),
            " END".repeat(n)
        );
        let i = sql[sql.len() / 2..].find("WHEN").unwrap() + sql.len() / 2;
        sql.replace_range(i..i + 4, "");
        let start = std::time::Instant::now();
        let (r, exhausted) = parse(&sql);
        eprintln!("{:?} {exhausted} {:?}", start.elapsed(), r.as_ref().err());
        assert!(r.is_err() && exhausted);
    }

    #[test]
    fn depth_and_operators() {
        let sql = format!("SELECT {}", vec!["1"; 600].join("+"));
        let (r, _) = parse(&sql);
        let stmts = r.unwrap();
        let e = check_depth(&stmts).unwrap_err();
        assert_eq!(e.sqlstate, SqlState::STATEMENT_TOO_COMPLEX);
        drop_deep(stmts);
        let sql = format!("SELECT {}", vec!["1"; 500].join("+"));
        check_depth(&parse(&sql).0.unwrap()).unwrap();
        let many = format!("SELECT {}", vec!["1"; OPERATORS_MAX + 2].join("+"));
        assert!(check_operators(&many).is_err());
    }
}
