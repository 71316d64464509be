//! Statement splitting and the statements that PostgreSQL's grammar does not
//! have (`CREATE STREAMING QUERY`, `FLUSH`, `SHOW STREAMING QUERIES`, ...).
//! Everything else goes to sqlparser and DataFusion.
//!
//! Weir's statements are read by sqlparser's `Parser` (with `WeirDialect`),
//! one function per statement form: `query.rs` (streaming queries and
//! materialized views: CREATE, ALTER, EXPLAIN ALTER, STOP, START, DROP),
//! `enricher.rs` (failure enrichers), SHOW and FLUSH here; `syntax.rs` has
//! what they share. A query after `AS` (and an enricher's condition) is
//! kept exactly as written, taken from the text by its tokens' spans.

mod enricher;
mod query;
mod syntax;

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::error::SqlResult;
use crate::parse_guard::WeirDialect;
use crate::sql_text::{may_begin_with, tokenize, tokenize_spans};
use syntax::WeirParser;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    StreamingQuery,
    MaterializedView,
}

impl QueryKind {
    pub fn noun(self) -> &'static str {
        match self {
            QueryKind::StreamingQuery => "streaming query",
            QueryKind::MaterializedView => "materialized view",
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            QueryKind::StreamingQuery => "streaming_query",
            QueryKind::MaterializedView => "materialized_view",
        }
    }

    /// The words naming the kind in a statement.
    pub fn keywords(self) -> &'static str {
        match self {
            QueryKind::StreamingQuery => "STREAMING QUERY",
            QueryKind::MaterializedView => "MATERIALIZED VIEW",
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Custom {
    CreateQuery {
        kind: QueryKind,
        name: String,
        if_not_exists: bool,
        options: BTreeMap<String, String>,
        query: String,
        explain: bool,
        /// `FROM SAVEPOINT 'name'`: start from another query's savepoint.
        from_savepoint: Option<String>,
    },
    ShowQueries(Option<QueryKind>),
    ShowTables,
    DropQuery {
        kind: QueryKind,
        names: Vec<String>,
        if_exists: bool,
    },
    Flush,
    /// `VACUUM`: truncates the change logs of tables now (it also happens
    /// in the background).
    Vacuum,
    /// ALTER STREAMING QUERY / MATERIALIZED VIEW name SET (...)
    AlterQuery {
        kind: QueryKind,
        name: String,
        options: BTreeMap<String, String>,
    },
    /// ALTER STREAMING QUERY / MATERIALIZED VIEW name RESTART
    RestartQuery {
        kind: QueryKind,
        name: String,
    },
    /// ALTER ... name SAVEPOINT [AS 'savepoint']
    Savepoint {
        kind: QueryKind,
        name: String,
        savepoint: Option<String>,
    },
    /// ALTER ... name DROP SAVEPOINT [IF EXISTS] 'savepoint'
    DropSavepoint {
        kind: QueryKind,
        name: String,
        savepoint: String,
        if_exists: bool,
    },
    /// STOP STREAMING QUERY / MATERIALIZED VIEW name [FORCE]
    StopQuery {
        kind: QueryKind,
        name: String,
        force: bool,
    },
    /// START STREAMING QUERY / MATERIALIZED VIEW name [FROM ... | WITHOUT STATE]
    StartQuery {
        kind: QueryKind,
        name: String,
        from: StartFrom,
    },
    /// [EXPLAIN] ALTER ... name [WITHOUT STATE] AS SELECT ...
    UpgradeQuery {
        kind: QueryKind,
        name: String,
        query: String,
        without_state: bool,
        explain: bool,
    },
    /// ALTER ... name ROLLBACK [TO VERSION n]
    RollbackQuery {
        kind: QueryKind,
        name: String,
        version: Option<u64>,
    },
    /// CREATE [OR REPLACE] FAILURE ENRICHER [IF NOT EXISTS] name
    /// WHEN predicate SET LABELS (key = 'value', ...)
    CreateEnricher {
        name: String,
        or_replace: bool,
        if_not_exists: bool,
        predicate: String,
        labels: BTreeMap<String, String>,
    },
    DropEnricher {
        name: String,
        if_exists: bool,
    },
}

/// Where `START STREAMING QUERY` resumes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartFrom {
    /// The newest completed checkpoint (the default).
    Latest,
    /// A savepoint, by name or directory path.
    Savepoint(String),
    /// A retained checkpoint, by id.
    Checkpoint(u64),
    /// No state: recompute from the inputs.
    WithoutState,
}

/// Splits a query string into statements at top-level semicolons.
pub fn split_statements(sql: &str) -> SqlResult<Vec<String>> {
    let tokens = tokenize(sql)?;
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut significant = false;
    for t in tokens {
        if t.token == Token::SemiColon {
            if significant {
                out.push(std::mem::take(&mut cur).trim().to_string());
            }
            cur.clear();
            significant = false;
        } else if t.is_comment() {
            // A line comment would swallow text appended after it.
            cur.push(' ');
        } else {
            significant |= !t.is_whitespace();
            cur.push_str(&t.text);
        }
    }
    if significant {
        out.push(cur.trim().to_string());
    }
    Ok(out)
}

/// `CREATE SOURCE ...` (RisingWave's word) as `CREATE TABLE ...`: a table
/// with a connector is a source.
pub fn create_source_as_table(sql: &str) -> SqlResult<Option<String>> {
    if !may_begin_with(sql, &["create"]) {
        return Ok(None);
    }
    let tokens = tokenize(sql)?;
    let sig: Vec<usize> = (0..tokens.len())
        .filter(|i| !tokens[*i].is_whitespace())
        .collect();
    let is = |k: usize, w: &str| {
        sig.get(k).is_some_and(|i| {
            matches!(&tokens[*i].token, Token::Word(x) if x.quote_style.is_none() && x.value.eq_ignore_ascii_case(w))
        })
    };
    if !(is(0, "create") && is(1, "source")) {
        return Ok(None);
    }
    let mut out = String::new();
    for (i, t) in tokens.iter().enumerate() {
        if i == sig[1] {
            out.push_str("TABLE");
        } else {
            out.push_str(&t.text);
        }
    }
    Ok(Some(out))
}

/// Parses one statement if it is one of Weir's own; `None` for the others
/// (PostgreSQL's grammar, for sqlparser and DataFusion).
pub fn parse_custom(sql: &str) -> SqlResult<Option<Custom>> {
    if !may_begin_with(
        sql,
        &[
            "alter", "create", "drop", "explain", "flush", "show", "start", "stop", "vacuum",
        ],
    ) {
        return Ok(None);
    }
    let tokens = tokenize_spans(sql)?;
    let dialect = WeirDialect::for_tokens(tokens.len());
    WeirParser::new(sql, &dialect, tokens).statement()
}

impl WeirParser<'_> {
    /// Weir's statement, told apart by its first words.
    fn statement(&mut self) -> SqlResult<Option<Custom>> {
        if self.p.parse_keyword(Keyword::EXPLAIN) {
            return match self
                .p
                .parse_one_of_keywords(&[Keyword::ALTER, Keyword::CREATE])
            {
                Some(Keyword::ALTER) => self.explain_alter(),
                Some(Keyword::CREATE) => self.create(true),
                _ => Ok(None),
            };
        }
        match self.p.parse_one_of_keywords(&[
            Keyword::ALTER,
            Keyword::CREATE,
            Keyword::DROP,
            Keyword::FLUSH,
            Keyword::SHOW,
            Keyword::START,
        ]) {
            Some(Keyword::ALTER) => self.alter(),
            Some(Keyword::CREATE) => self.create(false),
            Some(Keyword::DROP) => self.drop(),
            Some(Keyword::FLUSH) => Ok(self.flush()),
            Some(Keyword::SHOW) => Ok(self.show()),
            Some(Keyword::START) => self.start(),
            _ if self.word("stop") => self.stop(),
            _ if self.word("vacuum") => Ok(self.at_end().then_some(Custom::Vacuum)),
            _ => Ok(None),
        }
    }

    /// `[EXPLAIN] CREATE ...`: a failure enricher (not explained) or a
    /// streaming query / materialized view.
    fn create(&mut self, explain: bool) -> SqlResult<Option<Custom>> {
        let or_replace = self.p.parse_keywords(&[Keyword::OR, Keyword::REPLACE]);
        if !explain && self.words(&["failure", "enricher"]) {
            return self.create_enricher(or_replace).map(Some);
        }
        if or_replace {
            return Ok(None);
        }
        self.create_query(explain)
    }

    /// `DROP ...`: a failure enricher, or streaming queries / materialized
    /// views.
    fn drop(&mut self) -> SqlResult<Option<Custom>> {
        if self.words(&["failure", "enricher"]) {
            return self.drop_enricher().map(Some);
        }
        self.drop_queries()
    }

    /// `FLUSH`.
    fn flush(&mut self) -> Option<Custom> {
        self.at_end().then_some(Custom::Flush)
    }

    /// `SHOW STREAMING QUERIES | MATERIALIZED VIEWS | TABLES`; other SHOWs
    /// are PostgreSQL's.
    fn show(&mut self) -> Option<Custom> {
        let custom = if self.words(&["streaming", "queries"]) {
            Custom::ShowQueries(Some(QueryKind::StreamingQuery))
        } else if self
            .p
            .parse_keywords(&[Keyword::MATERIALIZED, Keyword::VIEWS])
        {
            Custom::ShowQueries(Some(QueryKind::MaterializedView))
        } else if self.p.parse_keyword(Keyword::TABLES) {
            Custom::ShowTables
        } else {
            return None;
        };
        self.at_end().then_some(custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_outside_quotes() {
        let s = split_statements("select 1; select ';' -- x;\n; ;insert into t values ('a;b')")
            .unwrap();
        assert_eq!(s.len(), 3);
        assert_eq!(s[1], "select ';'");
        assert_eq!(s[2], "insert into t values ('a;b')");
    }

    #[test]
    fn quotes_survive_splitting_and_rewriting() {
        let s = split_statements(
            "INSERT INTO t VALUES ('O''Brien', E'a\\'b;', $$x;'y$$); -- it's\nSELECT 'a''b' /* ' */",
        )
        .unwrap();
        assert_eq!(
            s,
            [
                "INSERT INTO t VALUES ('O''Brien', E'a\\'b;', $$x;'y$$)",
                "SELECT 'a''b'"
            ]
        );
        match parse_custom("CREATE MATERIALIZED VIEW v AS SELECT 'it''s' AS x").unwrap() {
            Some(Custom::CreateQuery { query, .. }) => assert_eq!(query, "SELECT 'it''s' AS x"),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            create_source_as_table(
                "CREATE SOURCE s (a text) WITH (connector = 'file', path = '/a''b')"
            )
            .unwrap()
            .unwrap(),
            "CREATE TABLE s (a text) WITH (connector = 'file', path = '/a''b')"
        );
    }

    #[test]
    fn create_streaming_query_with_options() {
        let c = parse_custom(
            "CREATE STREAMING QUERY Q1 WITH (parallelism = 4, 'restart_strategy.attempts' = 3, restart_strategy = 'fixed-delay') AS SELECT k, count(*) FROM t GROUP BY k",
        )
        .unwrap()
        .unwrap();
        match c {
            Custom::CreateQuery {
                kind,
                name,
                options,
                query,
                explain,
                ..
            } => {
                assert_eq!(kind, QueryKind::StreamingQuery);
                assert_eq!(name, "q1");
                assert_eq!(options["parallelism"], "4");
                assert_eq!(options["restart_strategy.attempts"], "3");
                assert_eq!(options["restart_strategy"], "fixed-delay");
                assert_eq!(query, "SELECT k, count(*) FROM t GROUP BY k");
                assert!(!explain);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn others() {
        assert_eq!(parse_custom("flush").unwrap(), Some(Custom::Flush));
        assert_eq!(parse_custom("VACUUM").unwrap(), Some(Custom::Vacuum));
        assert_eq!(
            parse_custom("SHOW MATERIALIZED VIEWS").unwrap(),
            Some(Custom::ShowQueries(Some(QueryKind::MaterializedView)))
        );
        assert!(matches!(
            parse_custom("explain create materialized view \"MV\" as select 1").unwrap(),
            Some(Custom::CreateQuery { explain: true, ref name, .. }) if name == "MV"
        ));
        assert_eq!(parse_custom("select 1").unwrap(), None);
        match parse_custom("CREATE FAILURE ENRICHER cast_errors WHEN error_class = 'cast' OR message LIKE '%invalid input syntax%' SET LABELS ('priority' = 'High', team = 'ingest')").unwrap() {
            Some(Custom::CreateEnricher { name, predicate, labels, or_replace: false, if_not_exists: false }) => {
                assert_eq!(name, "cast_errors");
                assert_eq!(predicate, "error_class = 'cast' OR message LIKE '%invalid input syntax%'");
                assert_eq!(labels["priority"], "High");
                assert_eq!(labels["team"], "ingest");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_custom("drop failure enricher if exists e").unwrap(),
            Some(Custom::DropEnricher {
                name: "e".into(),
                if_exists: true
            })
        );
        assert!(parse_custom("create failure enricher e when true").is_err());
        assert!(parse_custom("create streaming query q select 1").is_err());
    }

    #[test]
    fn show_and_flush() {
        assert_eq!(
            parse_custom("show streaming queries").unwrap(),
            Some(Custom::ShowQueries(Some(QueryKind::StreamingQuery)))
        );
        assert_eq!(
            parse_custom("SHOW TABLES").unwrap(),
            Some(Custom::ShowTables)
        );
        assert_eq!(
            parse_custom("/* c */ FLUSH -- now").unwrap(),
            Some(Custom::Flush)
        );
        // Other SHOWs and FLUSHes are PostgreSQL's (or refused there).
        for sql in [
            "SHOW search_path",
            "SHOW TABLES FROM x",
            "SHOW STREAMING",
            "SHOW \"tables\"",
            "FLUSH x",
            "FLUSH;",
        ] {
            assert_eq!(parse_custom(sql).unwrap(), None, "{sql}");
        }
    }

    #[test]
    fn other_statements_are_not_weirs() {
        for sql in [
            "",
            "SELECT 1",
            "INSERT INTO t VALUES ('CREATE MATERIALIZED VIEW')",
            "(SELECT 1)",
            "-- CREATE MATERIALIZED VIEW v AS SELECT 1\nSELECT 1",
            "\"create\" materialized view v as select 1",
            "CREATE SOURCE s (a int) WITH (connector = 'file')",
            "EXPLAIN SELECT 1",
            "EXPLAIN ANALYZE CREATE MATERIALIZED VIEW v AS SELECT 1",
            "EXPLAIN FLUSH",
            "explaining",
        ] {
            assert_eq!(parse_custom(sql).unwrap(), None, "{sql}");
        }
        // A statement that cannot be tokenized is a syntax error.
        let e = parse_custom("CREATE TABLE t (a text DEFAULT 'x)").unwrap_err();
        assert_eq!(e.sqlstate, weir_executor::SqlState::SYNTAX_ERROR);
    }
}
