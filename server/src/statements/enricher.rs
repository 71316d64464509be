//! Failure enrichers: `CREATE [OR REPLACE] FAILURE ENRICHER` and `DROP
//! FAILURE ENRICHER`.

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::{Parser, ParserError};
use datafusion::sql::sqlparser::tokenizer::Token;

use super::syntax::{option_list, rule_error, syntax, WeirParser};
use super::Custom;
use crate::error::{SqlError, SqlResult};

impl WeirParser<'_> {
    /// `CREATE [OR REPLACE] FAILURE ENRICHER [IF NOT EXISTS] name WHEN
    /// condition SET LABELS (key = 'value', ...)`, after FAILURE ENRICHER.
    pub(super) fn create_enricher(&mut self, or_replace: bool) -> SqlResult<Custom> {
        let if_not_exists = self
            .p
            .parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let name = self.name("CREATE FAILURE ENRICHER")?;
        self.expect_keyword(
            Keyword::WHEN,
            format!("WHEN <condition> SET LABELS (...) after CREATE FAILURE ENRICHER {name}"),
        )?;
        let (predicate, labels) = self.condition_and_labels()?;
        if labels.is_empty() {
            return Err(SqlError::syntax(
                "syntax error: SET LABELS needs at least one label",
            ));
        }
        Ok(Custom::CreateEnricher {
            name,
            or_replace,
            if_not_exists,
            predicate,
            labels,
        })
    }

    /// The condition after WHEN, as written, and the labels of the `SET
    /// LABELS (...)` that ends the statement. The condition is the text
    /// before that clause (the enricher compiles it): at each `SET LABELS`
    /// the clause is tried to the end, and the condition goes on if it does
    /// not end the statement.
    fn condition_and_labels(&mut self) -> SqlResult<(String, BTreeMap<String, String>)> {
        const LABELS: [&str; 2] = ["set", "labels"];
        if self.at_end() || self.peek_words(&LABELS) {
            return self.expected("a condition after WHEN");
        }
        let from = self.p.peek_token_ref().span.start;
        let mut refused = None;
        loop {
            self.p.advance_token();
            let to = self.p.get_current_token().span.end;
            if self.at_end() {
                break;
            }
            if self.peek_words(&LABELS) {
                match self.p.try_parse(labels_to_end) {
                    Ok(labels) => return Ok((self.text(from, to).to_string(), labels)),
                    Err(e) => refused = Some(e),
                }
            }
        }
        match refused {
            Some(e) => Err(syntax(e)),
            None => self.expected("SET LABELS (key = 'value', ...) after the WHEN condition"),
        }
    }

    /// `DROP FAILURE ENRICHER [IF EXISTS] name`, after FAILURE ENRICHER.
    pub(super) fn drop_enricher(&mut self) -> SqlResult<Custom> {
        let if_exists = self.p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let name = self.name("DROP FAILURE ENRICHER")?;
        self.end(format!(
            "the end of the statement after DROP FAILURE ENRICHER {name}"
        ))?;
        Ok(Custom::DropEnricher { name, if_exists })
    }
}

/// `SET LABELS (key = 'value', ...)` and the end of the statement; the
/// caller saw `SET LABELS` next.
fn labels_to_end(p: &mut Parser) -> Result<BTreeMap<String, String>, ParserError> {
    p.advance_token();
    p.advance_token();
    let labels = option_list(p, "SET LABELS")?;
    if p.peek_token_ref().token != Token::EOF {
        return Err(rule_error(
            p.peek_token_ref(),
            "the end of the statement after SET LABELS (...)",
        ));
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::super::parse_custom;
    use super::*;
    use weir_executor::SqlState;

    fn refused(sql: &str) -> String {
        let e = parse_custom(sql).expect_err(sql);
        assert_eq!(e.sqlstate, SqlState::SYNTAX_ERROR, "{sql}: {e}");
        e.message
    }

    #[test]
    fn create() {
        assert_eq!(
            parse_custom(
                "CREATE OR REPLACE FAILURE ENRICHER IF NOT EXISTS \"Casts\" WHEN message LIKE '%it''s%' \
                 AND (error_class = 'cast' OR sqlstate = $$22P02$$) SET LABELS ('Priority' = 'High', team = ingest)"
            )
            .unwrap(),
            Some(Custom::CreateEnricher {
                name: "Casts".into(),
                or_replace: true,
                if_not_exists: true,
                predicate: "message LIKE '%it''s%' AND (error_class = 'cast' OR sqlstate = $$22P02$$)"
                    .into(),
                labels: [
                    ("priority".to_string(), "High".to_string()),
                    ("team".to_string(), "ingest".to_string())
                ]
                .into(),
            })
        );
        // The clause that ends the statement is the labels; an earlier
        // SET LABELS is part of the condition (the enricher refuses it).
        match parse_custom(
            "CREATE FAILURE ENRICHER e WHEN a SET LABELS (x = 'y') b SET LABELS (c = 'd')",
        )
        .unwrap()
        {
            Some(Custom::CreateEnricher {
                predicate, labels, ..
            }) => {
                assert_eq!(predicate, "a SET LABELS (x = 'y') b");
                assert_eq!(labels["c"], "d");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_custom("EXPLAIN CREATE FAILURE ENRICHER e WHEN true SET LABELS (a = 'b')")
                .unwrap(),
            None
        );
    }

    #[test]
    fn create_errors() {
        for (sql, wanted) in [
            (
                "CREATE FAILURE ENRICHER",
                "syntax error at end of input: expected a name after CREATE FAILURE ENRICHER",
            ),
            (
                "CREATE FAILURE ENRICHER e SET LABELS (a = 'b')",
                "syntax error at or near \"SET\": expected WHEN <condition> SET LABELS (...) after CREATE FAILURE ENRICHER e",
            ),
            (
                "CREATE FAILURE ENRICHER e WHEN SET LABELS (a = 'b')",
                "syntax error at or near \"SET\": expected a condition after WHEN",
            ),
            (
                "create failure enricher e when true",
                "syntax error at end of input: expected SET LABELS (key = 'value', ...) after the WHEN condition",
            ),
            (
                "CREATE FAILURE ENRICHER e WHEN true SET LABELS ()",
                "syntax error: SET LABELS needs at least one label",
            ),
            (
                "CREATE FAILURE ENRICHER e WHEN true SET LABELS (a 'b')",
                "syntax error at or near \"'b'\": expected = after a",
            ),
            (
                "CREATE FAILURE ENRICHER e WHEN true SET LABELS (a = 'b') x",
                "syntax error at or near \"x\": expected the end of the statement after SET LABELS (...)",
            ),
        ] {
            assert_eq!(refused(sql), wanted, "{sql}");
        }
    }

    #[test]
    fn drop() {
        assert_eq!(
            parse_custom("DROP FAILURE ENRICHER E").unwrap(),
            Some(Custom::DropEnricher {
                name: "e".into(),
                if_exists: false
            })
        );
        assert_eq!(
            refused("DROP FAILURE ENRICHER e, f"),
            "syntax error at or near \",\": expected the end of the statement after DROP FAILURE ENRICHER e"
        );
        assert_eq!(
            refused("DROP FAILURE ENRICHER IF EXISTS"),
            "syntax error at end of input: expected a name after DROP FAILURE ENRICHER"
        );
        assert_eq!(parse_custom("DROP FAILURE x").unwrap(), None);
    }
}
