//! SQL text as sqlparser's tokens, each with the exact text it was read
//! from. The statement splitter and the token-level rewrites (`WATERMARK
//! FOR`, window table functions) put statements back together from these
//! slices, and Weir's own statements cut the query after `AS` from the text
//! by its tokens' spans ([`text_between`]), never from a token's `Display`:
//! that prints a string's value between quotes (`'O'Brien'` for
//! `'O''Brien'`, `E'a'b'` for `E'a\'b'`), which no longer reads back as the
//! same literal.

use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::tokenizer::{
    Location, Token, TokenWithSpan, Tokenizer, Whitespace,
};

use crate::error::{SqlError, SqlResult};

/// A token and the text it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Tok {
    pub token: Token,
    pub text: String,
}

impl Tok {
    pub fn is_whitespace(&self) -> bool {
        matches!(self.token, Token::Whitespace(_))
    }

    pub fn is_comment(&self) -> bool {
        matches!(
            self.token,
            Token::Whitespace(Whitespace::SingleLineComment { .. })
                | Token::Whitespace(Whitespace::MultiLineComment(_))
        )
    }
}

/// Tokenizes `sql` (PostgreSQL's lexical rules).
pub fn tokenize(sql: &str) -> SqlResult<Vec<Tok>> {
    let with_spans = tokenize_spans(sql)?;
    let mut cursor = Cursor::new(sql);
    let mut out = Vec::with_capacity(with_spans.len());
    for t in with_spans {
        let start = cursor.offset;
        cursor.advance_to(t.span.end);
        out.push(Tok {
            token: t.token,
            text: sql[start..cursor.offset].to_string(),
        });
    }
    Ok(out)
}

/// Tokenizes `sql` (PostgreSQL's lexical rules) into tokens with their
/// spans, what sqlparser's `Parser` reads (`with_tokens_with_locations`).
pub fn tokenize_spans(sql: &str) -> SqlResult<Vec<TokenWithSpan>> {
    Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .map_err(|e| SqlError::syntax(format!("syntax error: {}", e.message)))
}

/// The text of `sql` between two of the tokenizer's locations, e.g. from
/// one token's span start to a later token's span end: exactly as written.
pub fn text_between(sql: &str, from: Location, to: Location) -> &str {
    let mut cursor = Cursor::new(sql);
    cursor.advance_to(from);
    let start = cursor.offset;
    cursor.advance_to(to);
    &sql[start..cursor.offset]
}

/// Whether `sql` may be a statement that one of `words` begins: its first
/// word is one of them, or it does not open with a word (a comment, a
/// parenthesis), which only tokenizing can tell. Spares the statements
/// that cannot be (INSERT, SELECT, ...) a tokenization per rewrite.
pub fn may_begin_with(sql: &str, words: &[&str]) -> bool {
    let s = sql.trim_start();
    let end = s
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(s.len());
    end == 0 || words.iter().any(|w| s[..end].eq_ignore_ascii_case(w))
}

/// The tokens' text, as written.
pub fn text(tokens: &[Tok]) -> String {
    tokens.iter().map(|t| t.text.as_str()).collect()
}

/// A byte offset into the text and the tokenizer's (line, column) there:
/// columns count characters from 1, a `\n` starts the next line.
struct Cursor<'a> {
    sql: &'a str,
    offset: usize,
    line: u64,
    column: u64,
}

impl<'a> Cursor<'a> {
    fn new(sql: &'a str) -> Self {
        Cursor {
            sql,
            offset: 0,
            line: 1,
            column: 1,
        }
    }

    /// Moves up to `to`. The tokenizer's spans are contiguous, so the walk
    /// over the whole text is linear.
    fn advance_to(&mut self, to: Location) {
        let mut chars = self.sql[self.offset..].chars();
        while (self.line, self.column) < (to.line, to.column) {
            let Some(c) = chars.next() else { break };
            self.offset += c.len_utf8();
            if c == '\n' {
                self.line += 1;
                self.column = 1;
            } else {
                self.column += 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_their_text() {
        let sql = "SELECT 'O''Brien', E'a\\'b', $$it's$$, \"Ünï\" -- it's\n/* a 'b */ FROM t";
        let toks = tokenize(sql).unwrap();
        assert_eq!(text(&toks), sql);
        let texts: Vec<&str> = toks
            .iter()
            .filter(|t| !t.is_whitespace())
            .map(|t| t.text.as_str())
            .collect();
        assert_eq!(
            texts,
            [
                "SELECT",
                "'O''Brien'",
                ",",
                "E'a\\'b'",
                ",",
                "$$it's$$",
                ",",
                "\"Ünï\"",
                "FROM",
                "t"
            ]
        );
        assert!(toks.iter().any(|t| t.is_comment() && t.text == "-- it's\n"));
    }

    #[test]
    fn text_between_spans() {
        let sql = "SELECT 'it''s',\n  $$a'b$$ /* c */ FROM \"Ünï\"";
        let toks = tokenize_spans(sql).unwrap();
        let sig: Vec<&TokenWithSpan> = toks
            .iter()
            .filter(|t| !matches!(t.token, Token::Whitespace(_)))
            .collect();
        assert_eq!(
            text_between(sql, sig[1].span.start, sig[1].span.end),
            "'it''s'"
        );
        assert_eq!(
            text_between(sql, sig[1].span.start, sig[3].span.end),
            "'it''s',\n  $$a'b$$"
        );
        assert_eq!(
            text_between(sql, sig[3].span.start, sig[5].span.end),
            "$$a'b$$ /* c */ FROM \"Ünï\""
        );
    }

    #[test]
    fn first_words() {
        assert!(may_begin_with("  CREATE SOURCE s", &["create"]));
        assert!(!may_begin_with("INSERT INTO t VALUES (1)", &["create"]));
        assert!(!may_begin_with("createx", &["create"]));
        assert!(may_begin_with("/* c */ create", &["create"]));
        assert!(may_begin_with("(SELECT 1)", &["create"]));
    }
}
