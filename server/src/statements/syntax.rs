//! What Weir's statements share, on sqlparser's `Parser`: words that are
//! not sqlparser keywords, the `STREAMING QUERY | MATERIALIZED VIEW` kind,
//! names, quoted names, numbers, option lists, the end of a statement and
//! the text of a query as written. Errors are syntax errors (42601) naming
//! what was expected and what was found there.

use std::collections::BTreeMap;
use std::fmt::Display;

use datafusion::sql::sqlparser::ast::{Ident, ObjectName, ObjectNamePart};
use datafusion::sql::sqlparser::dialect::Dialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::{Location, Token, TokenWithSpan};
use weir_executor::SqlState;

use super::QueryKind;
use crate::error::{SqlError, SqlResult};
use crate::sql_text::text_between;

/// sqlparser's `Parser` over one statement, and the statement's text (a
/// query after `AS` is kept exactly as written, by its tokens' spans).
pub(super) struct WeirParser<'a> {
    sql: &'a str,
    pub(super) p: Parser<'a>,
}

impl<'a> WeirParser<'a> {
    pub(super) fn new(sql: &'a str, dialect: &'a dyn Dialect, tokens: Vec<TokenWithSpan>) -> Self {
        WeirParser {
            sql,
            p: Parser::new(dialect).with_tokens_with_locations(tokens),
        }
    }

    /// Consumes `words` (unquoted, any case; sqlparser keywords or not) if
    /// they come next; consumes nothing otherwise.
    pub(super) fn words(&mut self, words: &[&str]) -> bool {
        let next = self.peek_words(words);
        if next {
            words.iter().for_each(|_| self.p.advance_token());
        }
        next
    }

    pub(super) fn word(&mut self, word: &str) -> bool {
        self.words(&[word])
    }

    /// Whether the next tokens are `words`, consuming nothing.
    pub(super) fn peek_words(&self, words: &[&str]) -> bool {
        words
            .iter()
            .enumerate()
            .all(|(i, w)| is_word(&self.p.peek_nth_token_ref(i).token, w))
    }

    pub(super) fn expect_word(&mut self, word: &str, what: impl Display) -> SqlResult<()> {
        if self.word(word) {
            return Ok(());
        }
        self.expected(what)
    }

    pub(super) fn expect_keyword(&mut self, keyword: Keyword, what: impl Display) -> SqlResult<()> {
        if self.p.parse_keyword(keyword) {
            return Ok(());
        }
        self.expected(what)
    }

    /// `STREAMING QUERY` or `MATERIALIZED VIEW`; `None` (nothing consumed)
    /// when neither comes next.
    pub(super) fn kind(&mut self) -> Option<QueryKind> {
        if self.words(&["streaming", "query"]) {
            Some(QueryKind::StreamingQuery)
        } else if self
            .p
            .parse_keywords(&[Keyword::MATERIALIZED, Keyword::VIEW])
        {
            Some(QueryKind::MaterializedView)
        } else {
            None
        }
    }

    /// A name: one identifier, folded to lower case unless quoted.
    pub(super) fn name(&mut self, after: impl Display) -> SqlResult<String> {
        if !matches!(self.p.peek_token_ref().token, Token::Word(_)) {
            return self.expected(format!("a name after {after}"));
        }
        let ident = self.p.parse_identifier().map_err(syntax)?;
        Ok(fold(&ident))
    }

    /// A name that may carry the schema `public` (the only one there is).
    pub(super) fn object_name(&mut self, after: impl Display) -> SqlResult<String> {
        let what = format!("a name after {after}");
        match self.p.parse_object_name(false) {
            Ok(name) => unqualified(&name, &what),
            Err(_) => Err(self.failed_at_current(what)),
        }
    }

    /// `name [, ...]`, each as [`Self::object_name`].
    pub(super) fn object_names(&mut self, after: impl Display) -> SqlResult<Vec<String>> {
        let what = format!("a name after {after}");
        match self.p.parse_comma_separated(|p| p.parse_object_name(false)) {
            Ok(names) => names.iter().map(|n| unqualified(n, &what)).collect(),
            Err(_) => Err(self.failed_at_current(what)),
        }
    }

    /// A quoted string: a savepoint's name or path.
    pub(super) fn quoted(&mut self, what: impl Display) -> SqlResult<String> {
        match self.p.peek_token_ref().token {
            Token::SingleQuotedString(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_) => self.p.parse_literal_string().map_err(syntax),
            _ => self.expected(what),
        }
    }

    /// An unsigned integer (a version, a checkpoint id).
    pub(super) fn number(&mut self, what: impl Display) -> SqlResult<u64> {
        if !matches!(self.p.peek_token_ref().token, Token::Number(..)) {
            return self.expected(what);
        }
        let found = self.p.peek_token();
        self.p
            .parse_literal_uint()
            .map_err(|_| SqlError::syntax(message(&found.token, what)))
    }

    /// `( key = value [, ...] )` after `clause` (`WITH`, `SET`).
    pub(super) fn options(&mut self, clause: &str) -> SqlResult<BTreeMap<String, String>> {
        option_list(&mut self.p, clause).map_err(syntax)
    }

    pub(super) fn at_end(&self) -> bool {
        self.p.peek_token_ref().token == Token::EOF
    }

    /// Nothing more: the statement ends here, or `what` was expected.
    pub(super) fn end(&self, what: impl Display) -> SqlResult<()> {
        if self.at_end() {
            return Ok(());
        }
        self.expected(what)
    }

    /// The rest of the statement exactly as written, from the next token
    /// to the last (the query after `AS`); `what` names it when it is
    /// missing.
    pub(super) fn rest(&mut self, what: impl Display) -> SqlResult<String> {
        if self.at_end() {
            return self.expected(what);
        }
        let from = self.p.peek_token_ref().span.start;
        let mut to = from;
        loop {
            self.p.advance_token();
            let t = self.p.get_current_token();
            if t.token == Token::EOF {
                break;
            }
            to = t.span.end;
        }
        Ok(self.text(from, to).to_string())
    }

    /// The statement's text between two locations, as written.
    pub(super) fn text(&self, from: Location, to: Location) -> &'a str {
        text_between(self.sql, from, to)
    }

    /// The error for the next token when `what` was expected.
    pub(super) fn expected<T>(&self, what: impl Display) -> SqlResult<T> {
        Err(SqlError::syntax(message(
            &self.p.peek_token_ref().token,
            what,
        )))
    }

    /// The error for a sqlparser rule that failed at the token it consumed
    /// last.
    fn failed_at_current(&self, what: impl Display) -> SqlError {
        SqlError::syntax(message(&self.p.get_current_token().token, what))
    }
}

/// `( key = value [, ...] )` after `clause`: keys are words (dotted ones,
/// such as `restart_strategy.attempts`, too) or quoted strings, folded to
/// lower case; values are numbers, strings or words, as written. A rule on
/// the `Parser` itself, so that it can be tried (`Parser::try_parse`).
pub(super) fn option_list(
    p: &mut Parser,
    clause: &str,
) -> Result<BTreeMap<String, String>, ParserError> {
    if !p.consume_token(&Token::LParen) {
        return Err(rule_error(p.peek_token_ref(), format!("( after {clause}")));
    }
    let mut options = BTreeMap::new();
    if p.consume_token(&Token::RParen) {
        return Ok(options);
    }
    options.extend(p.parse_comma_separated(|p| option(p, clause))?);
    if !p.consume_token(&Token::RParen) {
        return Err(rule_error(
            p.peek_token_ref(),
            format!(", or ) in {clause} options"),
        ));
    }
    Ok(options)
}

/// `key = value` of an option list.
fn option(p: &mut Parser, clause: &str) -> Result<(String, String), ParserError> {
    let mut key = match &p.peek_token_ref().token {
        Token::Word(_) | Token::SingleQuotedString(_) => p.parse_identifier()?.value.to_lowercase(),
        _ => {
            return Err(rule_error(
                p.peek_token_ref(),
                format!("an option name in {clause} options"),
            ))
        }
    };
    while p.consume_token(&Token::Period) {
        match &p.peek_token_ref().token {
            Token::Word(_) => {
                let part = p.parse_identifier()?;
                key = format!("{key}.{}", part.value.to_lowercase());
            }
            _ => {
                return Err(rule_error(
                    p.peek_token_ref(),
                    format!("a word after {key}."),
                ))
            }
        }
    }
    if !p.consume_token(&Token::Eq) {
        return Err(rule_error(p.peek_token_ref(), format!("= after {key}")));
    }
    let value = match &p.peek_token_ref().token {
        Token::Number(n, _) => n.clone(),
        Token::SingleQuotedString(s)
        | Token::EscapedStringLiteral(s)
        | Token::UnicodeStringLiteral(s) => s.clone(),
        Token::DollarQuotedString(s) => s.value.clone(),
        Token::Word(w) => w.value.clone(),
        _ => return Err(rule_error(p.peek_token_ref(), format!("a value for {key}"))),
    };
    p.advance_token();
    Ok((key, value))
}

/// A name without its schema: only `public` exists (3F000 for others).
fn unqualified(name: &ObjectName, what: &str) -> SqlResult<String> {
    let mut parts = Vec::with_capacity(name.0.len());
    for part in &name.0 {
        match part {
            ObjectNamePart::Identifier(id) if id.quote_style != Some('\'') => parts.push(fold(id)),
            ObjectNamePart::Identifier(id) => {
                return Err(SqlError::syntax(message(
                    &Token::SingleQuotedString(id.value.clone()),
                    what,
                )))
            }
            other => {
                return Err(SqlError::syntax(message(
                    &Token::make_word(&other.to_string(), None),
                    what,
                )))
            }
        }
    }
    match parts.as_slice() {
        [name] => Ok(name.clone()),
        [schema, name] if schema == "public" => Ok(name.clone()),
        [schema, _] => Err(SqlError::new(
            SqlState::INVALID_SCHEMA_NAME,
            format!("schema \"{schema}\" does not exist"),
        )),
        _ => Err(SqlError::syntax(format!(
            "syntax error: improper qualified name (too many dotted names): {name}"
        ))),
    }
}

/// An identifier's name: unquoted ones fold to lower case.
fn fold(id: &Ident) -> String {
    match id.quote_style {
        Some(_) => id.value.clone(),
        None => id.value.to_lowercase(),
    }
}

fn is_word(t: &Token, word: &str) -> bool {
    matches!(t, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(word))
}

/// PostgreSQL's wording (`syntax error at or near "x"`, `... at end of
/// input`) and what was expected there.
fn message(found: &Token, what: impl Display) -> String {
    if *found == Token::EOF {
        return format!("syntax error at end of input: expected {what}");
    }
    let found = found.to_string();
    const SHOWN_MAX: usize = 64;
    let found = match found.char_indices().nth(SHOWN_MAX) {
        Some((cut, _)) => format!("{}...", &found[..cut]),
        None => found,
    };
    format!("syntax error at or near \"{found}\": expected {what}")
}

/// The error of a rule on the `Parser` that found `found` where `what`
/// was expected.
pub(super) fn rule_error(found: &TokenWithSpan, what: impl Display) -> ParserError {
    ParserError::ParserError(message(&found.token, what))
}

/// A parser error as a syntax error; the rules above word their own.
pub(super) fn syntax(e: ParserError) -> SqlError {
    match e {
        ParserError::ParserError(m) if m.starts_with("syntax error") => SqlError::syntax(m),
        ParserError::ParserError(m) | ParserError::TokenizerError(m) => {
            SqlError::syntax(format!("syntax error: {m}"))
        }
        ParserError::RecursionLimitExceeded => {
            SqlError::syntax("syntax error: statement nested too deeply")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_guard::WeirDialect;
    use crate::sql_text::tokenize_spans;

    fn with_parser<T>(sql: &str, f: impl FnOnce(&mut WeirParser) -> T) -> T {
        let tokens = tokenize_spans(sql).unwrap();
        let dialect = WeirDialect::for_tokens(tokens.len());
        f(&mut WeirParser::new(sql, &dialect, tokens))
    }

    fn options(sql: &str) -> SqlResult<BTreeMap<String, String>> {
        with_parser(sql, |p| {
            let o = p.options("WITH")?;
            p.end("the end")?;
            Ok(o)
        })
    }

    #[test]
    fn option_lists() {
        let o = options(
            "(Parallelism = 4, 'Restart_Strategy.Attempts' = 3, restart_strategy.delay = '1 s', \
             mode = Fixed, e = E'a\\'b', d = $$x'y$$, \"Q\" = 'v')",
        )
        .unwrap();
        assert_eq!(
            o.into_iter().collect::<Vec<_>>(),
            [
                ("d", "x'y"),
                ("e", "a'b"),
                ("mode", "Fixed"),
                ("parallelism", "4"),
                ("q", "v"),
                ("restart_strategy.attempts", "3"),
                ("restart_strategy.delay", "1 s"),
            ]
            .map(|(k, v)| (k.to_string(), v.to_string()))
        );
        assert!(options("()").unwrap().is_empty());
        for (sql, wanted) in [
            (
                "parallelism = 4",
                "at or near \"parallelism\": expected ( after WITH",
            ),
            (
                "(= 4)",
                "at or near \"=\": expected an option name in WITH options",
            ),
            ("(a 4)", "at or near \"4\": expected = after a"),
            ("(a.= 4)", "at or near \"=\": expected a word after a."),
            ("(a = )", "at or near \")\": expected a value for a"),
            ("(a = -1)", "at or near \"-\": expected a value for a"),
            (
                "(a = 1 b = 2)",
                "at or near \"b\": expected , or ) in WITH options",
            ),
            (
                "(a = 1,",
                "at end of input: expected an option name in WITH options",
            ),
            ("(a = 1) x", "at or near \"x\": expected the end"),
        ] {
            let e = options(sql).unwrap_err();
            assert_eq!(e.sqlstate, SqlState::SYNTAX_ERROR, "{sql}");
            assert_eq!(e.message, format!("syntax error {wanted}"), "{sql}");
        }
    }

    #[test]
    fn names_fold_unless_quoted() {
        let name = |sql: &str| with_parser(sql, |p| p.object_name("X"));
        assert_eq!(name("Orders").unwrap(), "orders");
        assert_eq!(name("\"Orders\"").unwrap(), "Orders");
        assert_eq!(name("PUBLIC.Orders").unwrap(), "orders");
        assert_eq!(name("\"public\".\"O\"").unwrap(), "O");
        let e = name("other.orders").unwrap_err();
        assert_eq!(e.sqlstate, SqlState::INVALID_SCHEMA_NAME);
        assert_eq!(e.message, "schema \"other\" does not exist");
        for sql in ["a.b.c", "public.", "'x'", "1", ""] {
            let e = name(sql).unwrap_err();
            assert_eq!(e.sqlstate, SqlState::SYNTAX_ERROR, "{sql}");
        }
        assert_eq!(
            name("public.").unwrap_err().message,
            "syntax error at end of input: expected a name after X"
        );
        assert_eq!(
            with_parser("a, \"B\", public.c", |p| p.object_names("X")).unwrap(),
            ["a", "B", "c"]
        );
        assert_eq!(
            with_parser("a, ", |p| p.object_names("X"))
                .unwrap_err()
                .message,
            "syntax error at end of input: expected a name after X"
        );
    }

    #[test]
    fn words_and_kinds() {
        with_parser("Streaming query MATERIALIZED VIEW streaming view", |p| {
            assert_eq!(p.kind(), Some(QueryKind::StreamingQuery));
            assert_eq!(p.kind(), Some(QueryKind::MaterializedView));
            assert_eq!(p.kind(), None);
            assert!(p.word("STREAMING"));
            assert!(!p.words(&["query"]));
            assert!(p.word("view"));
            assert!(p.at_end());
        });
        with_parser("\"streaming\" query", |p| assert_eq!(p.kind(), None));
    }

    #[test]
    fn rest_is_the_text_as_written() {
        let sql = "AS /* lead */ SELECT 'it''s', $$a;'b$$, E'\\'' -- x\n  FROM \"T\" -- trailing\n";
        let rest = with_parser(sql, |p| {
            assert!(p.p.parse_keyword(Keyword::AS));
            p.rest("a query")
        });
        assert_eq!(
            rest.unwrap(),
            "SELECT 'it''s', $$a;'b$$, E'\\'' -- x\n  FROM \"T\""
        );
        let e = with_parser("AS -- nothing", |p| {
            assert!(p.p.parse_keyword(Keyword::AS));
            p.rest("a query after AS")
        })
        .unwrap_err();
        assert_eq!(
            e.message,
            "syntax error at end of input: expected a query after AS"
        );
    }

    #[test]
    fn long_tokens_are_cut_in_messages() {
        let long = format!("'{}'", "x".repeat(100));
        let e = with_parser(&long, |p| p.end("the end")).unwrap_err();
        assert!(e.message.len() < 120, "{}", e.message);
        assert!(
            e.message.contains("...\": expected the end"),
            "{}",
            e.message
        );
    }
}
