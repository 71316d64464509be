//! Streaming queries and materialized views: CREATE, ALTER (SET, RESTART,
//! savepoints, rollback, a new version), EXPLAIN ALTER, STOP, START and
//! DROP. Each function starts after the words that chose it and returns
//! `None` when the statement names no streaming query or materialized view
//! (`ALTER TABLE`, `START TRANSACTION`, `DROP VIEW`, ...).

use std::collections::BTreeMap;

use datafusion::sql::sqlparser::keywords::Keyword;

use super::syntax::WeirParser;
use super::{Custom, QueryKind, StartFrom};
use crate::error::{SqlError, SqlResult};

impl WeirParser<'_> {
    /// `[EXPLAIN] CREATE kind [IF NOT EXISTS] [public.]name [WITH (...)]
    /// [FROM SAVEPOINT 'savepoint'] AS query`, after CREATE.
    pub(super) fn create_query(&mut self, explain: bool) -> SqlResult<Option<Custom>> {
        let Some(kind) = self.kind() else {
            return Ok(None);
        };
        let statement = format!("CREATE {}", kind.keywords());
        let if_not_exists = self
            .p
            .parse_keywords(&[Keyword::IF, Keyword::NOT, Keyword::EXISTS]);
        let name = self.object_name(&statement)?;
        let with = self.p.parse_keyword(Keyword::WITH);
        let options = if with {
            self.options("WITH")?
        } else {
            BTreeMap::new()
        };
        let from_savepoint = if self.p.parse_keywords(&[Keyword::FROM, Keyword::SAVEPOINT]) {
            Some(self.quoted("a quoted savepoint name after FROM SAVEPOINT")?)
        } else {
            None
        };
        if !self.p.parse_keyword(Keyword::AS) {
            let mut next = Vec::new();
            if !with {
                next.push("WITH (...)");
            }
            if from_savepoint.is_none() {
                next.push("FROM SAVEPOINT '...'");
            }
            next.push("AS SELECT ...");
            return self.expected(format!("{} after {statement} {name}", one_of(&next)));
        }
        let query = self.rest("a query after AS")?;
        Ok(Some(Custom::CreateQuery {
            kind,
            name,
            if_not_exists,
            options,
            query,
            explain,
            from_savepoint,
        }))
    }

    /// `ALTER kind name` and one of `SET (...)`, `RESTART`, `SAVEPOINT`,
    /// `DROP SAVEPOINT`, `ROLLBACK`, `[WITHOUT STATE] AS query`; after
    /// ALTER.
    pub(super) fn alter(&mut self) -> SqlResult<Option<Custom>> {
        let Some(kind) = self.kind() else {
            return Ok(None);
        };
        let name = self.name(format!("ALTER {}", kind.keywords()))?;
        let custom = if self.p.parse_keyword(Keyword::SET) {
            self.alter_set(kind, name)?
        } else if self.p.parse_keyword(Keyword::RESTART) {
            self.end("the end of the statement after RESTART")?;
            Custom::RestartQuery { kind, name }
        } else if self.p.parse_keyword(Keyword::SAVEPOINT) {
            self.savepoint(kind, name)?
        } else if self.p.parse_keywords(&[Keyword::DROP, Keyword::SAVEPOINT]) {
            self.drop_savepoint(kind, name)?
        } else if self.p.parse_keyword(Keyword::ROLLBACK) {
            self.rollback(kind, name)?
        } else if self.upgrade_next() {
            self.upgrade(kind, name, false)?
        } else {
            return self.expected(format!(
                "SET (...), RESTART, SAVEPOINT, DROP SAVEPOINT, ROLLBACK or [WITHOUT STATE] AS SELECT ... after ALTER {} {name}",
                kind.keywords()
            ));
        };
        Ok(Some(custom))
    }

    /// `SET (option = value, ...)` of ALTER: options merged into the
    /// query's.
    fn alter_set(&mut self, kind: QueryKind, name: String) -> SqlResult<Custom> {
        let options = self.options("SET")?;
        self.end("the end of the statement after SET (...)")?;
        Ok(Custom::AlterQuery {
            kind,
            name,
            options,
        })
    }

    /// `SAVEPOINT [AS 'savepoint']` of ALTER.
    fn savepoint(&mut self, kind: QueryKind, name: String) -> SqlResult<Custom> {
        let savepoint = if self.p.parse_keyword(Keyword::AS) {
            let savepoint = self.quoted("a quoted savepoint name after SAVEPOINT AS")?;
            self.end("the end of the statement after SAVEPOINT AS '...'")?;
            Some(savepoint)
        } else {
            self.end("AS '...' or the end of the statement after SAVEPOINT")?;
            None
        };
        Ok(Custom::Savepoint {
            kind,
            name,
            savepoint,
        })
    }

    /// `DROP SAVEPOINT [IF EXISTS] 'savepoint'` of ALTER.
    fn drop_savepoint(&mut self, kind: QueryKind, name: String) -> SqlResult<Custom> {
        let if_exists = self.p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let savepoint = self.quoted(if if_exists {
            "a quoted savepoint name after DROP SAVEPOINT IF EXISTS"
        } else {
            "IF EXISTS or a quoted savepoint name after DROP SAVEPOINT"
        })?;
        self.end("the end of the statement after DROP SAVEPOINT '...'")?;
        Ok(Custom::DropSavepoint {
            kind,
            name,
            savepoint,
            if_exists,
        })
    }

    /// `ROLLBACK [TO VERSION n]` of ALTER.
    fn rollback(&mut self, kind: QueryKind, name: String) -> SqlResult<Custom> {
        let version = if self.p.parse_keyword(Keyword::TO) {
            self.expect_keyword(Keyword::VERSION, "VERSION after ROLLBACK TO")?;
            let version = self.number("a version number after ROLLBACK TO VERSION")?;
            self.end("the end of the statement after ROLLBACK TO VERSION n")?;
            Some(version)
        } else {
            self.end("TO VERSION n or the end of the statement after ROLLBACK")?;
            None
        };
        Ok(Custom::RollbackQuery {
            kind,
            name,
            version,
        })
    }

    /// Whether `[WITHOUT STATE] AS` comes next.
    fn upgrade_next(&self) -> bool {
        self.p
            .peek_one_of_keywords(&[Keyword::WITHOUT, Keyword::AS])
            .is_some()
    }

    /// `[WITHOUT STATE] AS query` of `[EXPLAIN] ALTER kind name`: a new
    /// version of the query.
    fn upgrade(&mut self, kind: QueryKind, name: String, explain: bool) -> SqlResult<Custom> {
        let without_state = self.p.parse_keyword(Keyword::WITHOUT);
        if without_state {
            self.expect_word("state", "STATE after WITHOUT")?;
            self.expect_keyword(Keyword::AS, "AS SELECT ... after WITHOUT STATE")?;
        } else {
            self.expect_keyword(Keyword::AS, "AS SELECT ...")?;
        }
        let query = self.rest("a query after AS")?;
        Ok(Custom::UpgradeQuery {
            kind,
            name,
            query,
            without_state,
            explain,
        })
    }

    /// `EXPLAIN ALTER kind name [WITHOUT STATE] AS query`, after EXPLAIN
    /// ALTER: only a new version is explained.
    pub(super) fn explain_alter(&mut self) -> SqlResult<Option<Custom>> {
        let Some(kind) = self.kind() else {
            return Ok(None);
        };
        let name = self.name(format!("EXPLAIN ALTER {}", kind.keywords()))?;
        if !self.upgrade_next() {
            return self.expected(
                "[WITHOUT STATE] AS SELECT ... (EXPLAIN ALTER explains only a new version of the query)",
            );
        }
        self.upgrade(kind, name, true).map(Some)
    }

    /// `STOP kind name [FORCE]`, after STOP.
    pub(super) fn stop(&mut self) -> SqlResult<Option<Custom>> {
        let Some(kind) = self.kind() else {
            return Ok(None);
        };
        let name = self.name(format!("STOP {}", kind.keywords()))?;
        let force = self.p.parse_keyword(Keyword::FORCE);
        self.end(if force {
            "the end of the statement after FORCE".to_string()
        } else {
            format!(
                "FORCE or the end of the statement after STOP {} {name}",
                kind.keywords()
            )
        })?;
        Ok(Some(Custom::StopQuery { kind, name, force }))
    }

    /// `START kind name [FROM LATEST | FROM SAVEPOINT 'savepoint' | FROM
    /// CHECKPOINT n | WITHOUT STATE]`, after START.
    pub(super) fn start(&mut self) -> SqlResult<Option<Custom>> {
        let Some(kind) = self.kind() else {
            return Ok(None);
        };
        let name = self.name(format!("START {}", kind.keywords()))?;
        let from = if self.p.parse_keyword(Keyword::FROM) {
            self.start_from()?
        } else if self.p.parse_keyword(Keyword::WITHOUT) {
            self.expect_word("state", "STATE after WITHOUT")?;
            StartFrom::WithoutState
        } else {
            self.end(format!(
                "FROM LATEST, FROM SAVEPOINT '...', FROM CHECKPOINT n, WITHOUT STATE or the end of the statement after START {} {name}",
                kind.keywords()
            ))?;
            StartFrom::Latest
        };
        self.end("the end of the statement")?;
        Ok(Some(Custom::StartQuery { kind, name, from }))
    }

    /// What follows `START ... FROM`.
    fn start_from(&mut self) -> SqlResult<StartFrom> {
        if self.word("latest") {
            Ok(StartFrom::Latest)
        } else if self.p.parse_keyword(Keyword::SAVEPOINT) {
            let savepoint = self.quoted("a quoted savepoint name after FROM SAVEPOINT")?;
            Ok(StartFrom::Savepoint(savepoint))
        } else if self.word("checkpoint") {
            let id = self.number("a checkpoint id after FROM CHECKPOINT")?;
            Ok(StartFrom::Checkpoint(id))
        } else {
            self.expected("LATEST, SAVEPOINT '...' or CHECKPOINT n after FROM")
        }
    }

    /// `DROP kind [IF EXISTS] [public.]name [, ...] [RESTRICT]`, after
    /// DROP. CASCADE is refused.
    pub(super) fn drop_queries(&mut self) -> SqlResult<Option<Custom>> {
        let Some(kind) = self.kind() else {
            return Ok(None);
        };
        let if_exists = self.p.parse_keywords(&[Keyword::IF, Keyword::EXISTS]);
        let names = self.object_names(format!("DROP {}", kind.keywords()))?;
        if self.p.parse_keyword(Keyword::CASCADE) {
            return Err(SqlError::unsupported("DROP ... CASCADE is not supported")
                .with_hint("Drop the dependent objects first."));
        }
        let restrict = self.p.parse_keyword(Keyword::RESTRICT);
        self.end(if restrict {
            "the end of the statement after RESTRICT"
        } else {
            "a comma, RESTRICT or the end of the statement"
        })?;
        Ok(Some(Custom::DropQuery {
            kind,
            names,
            if_exists,
        }))
    }
}

/// `a`, `a or b`, `a, b or c`.
fn one_of(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{} or {last}", init.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::parse_custom;
    use super::*;
    use weir_executor::SqlState;

    fn parse(sql: &str) -> Custom {
        parse_custom(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .unwrap_or_else(|| panic!("{sql}: not one of Weir's statements"))
    }

    /// The message of the syntax error `sql` gets.
    fn refused(sql: &str) -> String {
        let e = parse_custom(sql).expect_err(sql);
        assert_eq!(e.sqlstate, SqlState::SYNTAX_ERROR, "{sql}: {e}");
        e.message
    }

    const MV: QueryKind = QueryKind::MaterializedView;
    const SQ: QueryKind = QueryKind::StreamingQuery;

    #[test]
    fn create() {
        assert_eq!(
            parse("create materialized view IF NOT EXISTS public.Mv AS SELECT 1"),
            Custom::CreateQuery {
                kind: MV,
                name: "mv".into(),
                if_not_exists: true,
                options: BTreeMap::new(),
                query: "SELECT 1".into(),
                explain: false,
                from_savepoint: None,
            }
        );
        assert_eq!(
            parse(
                "CREATE STREAMING QUERY \"Q\" WITH (parallelism = 2) FROM SAVEPOINT 'sp' AS\n  SELECT * FROM t"
            ),
            Custom::CreateQuery {
                kind: SQ,
                name: "Q".into(),
                if_not_exists: false,
                options: [("parallelism".to_string(), "2".to_string())].into(),
                query: "SELECT * FROM t".into(),
                explain: false,
                from_savepoint: Some("sp".into()),
            }
        );
        assert!(matches!(
            parse("EXPLAIN CREATE MATERIALIZED VIEW v FROM SAVEPOINT '/data/sp-1' AS SELECT 1"),
            Custom::CreateQuery { explain: true, from_savepoint: Some(sp), .. } if sp == "/data/sp-1"
        ));
        // Not Weir's: PostgreSQL's grammar.
        for sql in [
            "CREATE VIEW v AS SELECT 1",
            "CREATE OR REPLACE MATERIALIZED VIEW v AS SELECT 1",
            "CREATE TABLE streaming (query int)",
            "EXPLAIN CREATE TABLE t (a int)",
        ] {
            assert_eq!(parse_custom(sql).unwrap(), None, "{sql}");
        }
    }

    #[test]
    fn query_text_is_kept_as_written() {
        for query in [
            "SELECT 'it''s' AS x, $$a;'b$$ AS y, E'c\\'d' AS z",
            "SELECT k,\n       count(*)  AS \"N\"\n  FROM t\n GROUP BY k",
            "(SELECT 1) UNION ALL (SELECT 2)",
            "SELECT 'Ünïcode' AS \"ä\", 'x' || 'y'",
        ] {
            match parse(&format!("CREATE MATERIALIZED VIEW v AS {query}")) {
                Custom::CreateQuery { query: got, .. } => assert_eq!(got, query),
                other => panic!("{other:?}"),
            }
            match parse(&format!(
                "ALTER STREAMING QUERY q WITHOUT STATE AS\n\t{query}\n"
            )) {
                Custom::UpgradeQuery { query: got, .. } => assert_eq!(got, query),
                other => panic!("{other:?}"),
            }
        }
        // Comments around the query are not part of it.
        match parse("CREATE MATERIALIZED VIEW v AS /* c */ SELECT 1 -- trailing") {
            Custom::CreateQuery { query, .. } => assert_eq!(query, "SELECT 1"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_errors() {
        assert_eq!(
            refused("CREATE STREAMING QUERY q SELECT 1"),
            "syntax error at or near \"SELECT\": expected WITH (...), FROM SAVEPOINT '...' or AS SELECT ... after CREATE STREAMING QUERY q"
        );
        assert_eq!(
            refused("CREATE STREAMING QUERY q WITH (a = 1) SELECT 1"),
            "syntax error at or near \"SELECT\": expected FROM SAVEPOINT '...' or AS SELECT ... after CREATE STREAMING QUERY q"
        );
        assert_eq!(
            refused("CREATE MATERIALIZED VIEW AS SELECT 1"),
            "syntax error at or near \"SELECT\": expected WITH (...), FROM SAVEPOINT '...' or AS SELECT ... after CREATE MATERIALIZED VIEW as"
        );
        assert_eq!(
            refused("CREATE MATERIALIZED VIEW"),
            "syntax error at end of input: expected a name after CREATE MATERIALIZED VIEW"
        );
        assert_eq!(
            refused("CREATE MATERIALIZED VIEW v AS"),
            "syntax error at end of input: expected a query after AS"
        );
        assert_eq!(
            refused("CREATE MATERIALIZED VIEW v FROM SAVEPOINT sp AS SELECT 1"),
            "syntax error at or near \"sp\": expected a quoted savepoint name after FROM SAVEPOINT"
        );
        assert_eq!(
            refused("CREATE MATERIALIZED VIEW v WITH parallelism = 1 AS SELECT 1"),
            "syntax error at or near \"parallelism\": expected ( after WITH"
        );
        assert_eq!(
            refused("CREATE MATERIALIZED VIEW a.b.c AS SELECT 1"),
            "syntax error: improper qualified name (too many dotted names): a.b.c"
        );
        let e = parse_custom("CREATE MATERIALIZED VIEW other.v AS SELECT 1").unwrap_err();
        assert_eq!(e.sqlstate, SqlState::INVALID_SCHEMA_NAME);
        assert_eq!(e.message, "schema \"other\" does not exist");
        // An unterminated string is the tokenizer's syntax error.
        assert!(refused("CREATE MATERIALIZED VIEW v AS SELECT 'x").starts_with("syntax error: "));
    }

    #[test]
    fn alter() {
        assert_eq!(
            parse("ALTER STREAMING QUERY Q SET (parallelism = 3, restart_strategy.attempts = 5)"),
            Custom::AlterQuery {
                kind: SQ,
                name: "q".into(),
                options: [
                    ("parallelism".to_string(), "3".to_string()),
                    ("restart_strategy.attempts".to_string(), "5".to_string()),
                ]
                .into(),
            }
        );
        assert_eq!(
            parse("alter materialized view mv restart"),
            Custom::RestartQuery {
                kind: MV,
                name: "mv".into()
            }
        );
        assert_eq!(
            parse("ALTER MATERIALIZED VIEW mv SAVEPOINT"),
            Custom::Savepoint {
                kind: MV,
                name: "mv".into(),
                savepoint: None
            }
        );
        assert_eq!(
            parse("ALTER MATERIALIZED VIEW mv SAVEPOINT AS 'early'"),
            Custom::Savepoint {
                kind: MV,
                name: "mv".into(),
                savepoint: Some("early".into())
            }
        );
        assert_eq!(
            parse("ALTER STREAMING QUERY q DROP SAVEPOINT 'it''s'"),
            Custom::DropSavepoint {
                kind: SQ,
                name: "q".into(),
                savepoint: "it's".into(),
                if_exists: false
            }
        );
        assert_eq!(
            parse("ALTER STREAMING QUERY q DROP SAVEPOINT IF EXISTS 'early'"),
            Custom::DropSavepoint {
                kind: SQ,
                name: "q".into(),
                savepoint: "early".into(),
                if_exists: true
            }
        );
        assert_eq!(
            parse("ALTER MATERIALIZED VIEW mv ROLLBACK"),
            Custom::RollbackQuery {
                kind: MV,
                name: "mv".into(),
                version: None
            }
        );
        assert_eq!(
            parse("ALTER MATERIALIZED VIEW mv ROLLBACK TO VERSION 2"),
            Custom::RollbackQuery {
                kind: MV,
                name: "mv".into(),
                version: Some(2)
            }
        );
        assert_eq!(
            parse("ALTER MATERIALIZED VIEW mv AS SELECT 1"),
            Custom::UpgradeQuery {
                kind: MV,
                name: "mv".into(),
                query: "SELECT 1".into(),
                without_state: false,
                explain: false
            }
        );
        assert_eq!(
            parse("EXPLAIN ALTER STREAMING QUERY q WITHOUT STATE AS SELECT 2"),
            Custom::UpgradeQuery {
                kind: SQ,
                name: "q".into(),
                query: "SELECT 2".into(),
                without_state: true,
                explain: true
            }
        );
        for sql in [
            "ALTER TABLE t ADD COLUMN a int",
            "ALTER VIEW v RENAME TO w",
            "EXPLAIN ALTER TABLE t ADD COLUMN a int",
        ] {
            assert_eq!(parse_custom(sql).unwrap(), None, "{sql}");
        }
    }

    #[test]
    fn alter_errors() {
        for (sql, wanted) in [
            (
                "ALTER MATERIALIZED VIEW",
                "at end of input: expected a name after ALTER MATERIALIZED VIEW",
            ),
            (
                "ALTER MATERIALIZED VIEW mv RENAME TO w",
                "at or near \"RENAME\": expected SET (...), RESTART, SAVEPOINT, DROP SAVEPOINT, ROLLBACK or [WITHOUT STATE] AS SELECT ... after ALTER MATERIALIZED VIEW mv",
            ),
            (
                "ALTER MATERIALIZED VIEW mv RESTART NOW",
                "at or near \"NOW\": expected the end of the statement after RESTART",
            ),
            (
                "ALTER MATERIALIZED VIEW mv SET (a = 1) x",
                "at or near \"x\": expected the end of the statement after SET (...)",
            ),
            (
                "ALTER MATERIALIZED VIEW mv SET a = 1",
                "at or near \"a\": expected ( after SET",
            ),
            (
                "ALTER MATERIALIZED VIEW mv SAVEPOINT 'x'",
                "at or near \"'x'\": expected AS '...' or the end of the statement after SAVEPOINT",
            ),
            (
                "ALTER MATERIALIZED VIEW mv SAVEPOINT AS x",
                "at or near \"x\": expected a quoted savepoint name after SAVEPOINT AS",
            ),
            (
                "ALTER MATERIALIZED VIEW mv SAVEPOINT AS 'x' y",
                "at or near \"y\": expected the end of the statement after SAVEPOINT AS '...'",
            ),
            (
                "ALTER MATERIALIZED VIEW mv DROP SAVEPOINT",
                "at end of input: expected IF EXISTS or a quoted savepoint name after DROP SAVEPOINT",
            ),
            (
                "ALTER MATERIALIZED VIEW mv DROP SAVEPOINT IF EXISTS",
                "at end of input: expected a quoted savepoint name after DROP SAVEPOINT IF EXISTS",
            ),
            (
                "ALTER MATERIALIZED VIEW mv DROP SAVEPOINT 'a' 'b'",
                "at or near \"'b'\": expected the end of the statement after DROP SAVEPOINT '...'",
            ),
            (
                "ALTER MATERIALIZED VIEW mv DROP COLUMN a",
                "at or near \"DROP\": expected SET (...), RESTART, SAVEPOINT, DROP SAVEPOINT, ROLLBACK or [WITHOUT STATE] AS SELECT ... after ALTER MATERIALIZED VIEW mv",
            ),
            (
                "ALTER MATERIALIZED VIEW mv ROLLBACK 2",
                "at or near \"2\": expected TO VERSION n or the end of the statement after ROLLBACK",
            ),
            (
                "ALTER MATERIALIZED VIEW mv ROLLBACK TO 2",
                "at or near \"2\": expected VERSION after ROLLBACK TO",
            ),
            (
                "ALTER MATERIALIZED VIEW mv ROLLBACK TO VERSION x",
                "at or near \"x\": expected a version number after ROLLBACK TO VERSION",
            ),
            (
                "ALTER MATERIALIZED VIEW mv ROLLBACK TO VERSION 1.5",
                "at or near \"1.5\": expected a version number after ROLLBACK TO VERSION",
            ),
            (
                "ALTER MATERIALIZED VIEW mv ROLLBACK TO VERSION 1 2",
                "at or near \"2\": expected the end of the statement after ROLLBACK TO VERSION n",
            ),
            (
                "ALTER MATERIALIZED VIEW mv WITHOUT SELECT 1",
                "at or near \"SELECT\": expected STATE after WITHOUT",
            ),
            (
                "ALTER MATERIALIZED VIEW mv WITHOUT STATE SELECT 1",
                "at or near \"SELECT\": expected AS SELECT ... after WITHOUT STATE",
            ),
            (
                "ALTER MATERIALIZED VIEW mv AS",
                "at end of input: expected a query after AS",
            ),
            (
                "EXPLAIN ALTER MATERIALIZED VIEW mv SAVEPOINT",
                "at or near \"SAVEPOINT\": expected [WITHOUT STATE] AS SELECT ... (EXPLAIN ALTER explains only a new version of the query)",
            ),
            (
                "EXPLAIN ALTER STREAMING QUERY",
                "at end of input: expected a name after EXPLAIN ALTER STREAMING QUERY",
            ),
        ] {
            assert_eq!(refused(sql), format!("syntax error {wanted}"), "{sql}");
        }
    }

    #[test]
    fn stop_and_start() {
        assert_eq!(
            parse("STOP MATERIALIZED VIEW mv"),
            Custom::StopQuery {
                kind: MV,
                name: "mv".into(),
                force: false
            }
        );
        assert_eq!(
            parse("stop streaming query \"Q\" force"),
            Custom::StopQuery {
                kind: SQ,
                name: "Q".into(),
                force: true
            }
        );
        let start = |sql: &str| match parse(sql) {
            Custom::StartQuery { kind, name, from } => (kind, name, from),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            start("START MATERIALIZED VIEW mv"),
            (MV, "mv".into(), StartFrom::Latest)
        );
        assert_eq!(
            start("START STREAMING QUERY q FROM LATEST"),
            (SQ, "q".into(), StartFrom::Latest)
        );
        assert_eq!(
            start("START MATERIALIZED VIEW mv FROM SAVEPOINT 'early'"),
            (MV, "mv".into(), StartFrom::Savepoint("early".into()))
        );
        assert_eq!(
            start("START MATERIALIZED VIEW mv FROM CHECKPOINT 42"),
            (MV, "mv".into(), StartFrom::Checkpoint(42))
        );
        assert_eq!(
            start("START MATERIALIZED VIEW mv WITHOUT STATE"),
            (MV, "mv".into(), StartFrom::WithoutState)
        );
        for sql in ["START TRANSACTION", "STOP", "stop the world"] {
            assert_eq!(parse_custom(sql).unwrap(), None, "{sql}");
        }
        for (sql, wanted) in [
            (
                "STOP MATERIALIZED VIEW mv NOW",
                "at or near \"NOW\": expected FORCE or the end of the statement after STOP MATERIALIZED VIEW mv",
            ),
            (
                "STOP MATERIALIZED VIEW mv FORCE NOW",
                "at or near \"NOW\": expected the end of the statement after FORCE",
            ),
            (
                "STOP STREAMING QUERY",
                "at end of input: expected a name after STOP STREAMING QUERY",
            ),
            (
                "START MATERIALIZED VIEW mv NOW",
                "at or near \"NOW\": expected FROM LATEST, FROM SAVEPOINT '...', FROM CHECKPOINT n, WITHOUT STATE or the end of the statement after START MATERIALIZED VIEW mv",
            ),
            (
                "START MATERIALIZED VIEW mv FROM",
                "at end of input: expected LATEST, SAVEPOINT '...' or CHECKPOINT n after FROM",
            ),
            (
                "START MATERIALIZED VIEW mv FROM SAVEPOINT early",
                "at or near \"early\": expected a quoted savepoint name after FROM SAVEPOINT",
            ),
            (
                "START MATERIALIZED VIEW mv FROM CHECKPOINT 'x'",
                "at or near \"'x'\": expected a checkpoint id after FROM CHECKPOINT",
            ),
            (
                "START MATERIALIZED VIEW mv FROM LATEST NOW",
                "at or near \"NOW\": expected the end of the statement",
            ),
            (
                "START MATERIALIZED VIEW mv WITHOUT",
                "at end of input: expected STATE after WITHOUT",
            ),
        ] {
            assert_eq!(refused(sql), format!("syntax error {wanted}"), "{sql}");
        }
    }

    #[test]
    fn drop() {
        assert_eq!(
            parse("DROP MATERIALIZED VIEW IF EXISTS a, public.B, \"C\" RESTRICT"),
            Custom::DropQuery {
                kind: MV,
                names: vec!["a".into(), "b".into(), "C".into()],
                if_exists: true
            }
        );
        assert_eq!(
            parse("drop streaming query q"),
            Custom::DropQuery {
                kind: SQ,
                names: vec!["q".into()],
                if_exists: false
            }
        );
        let e = parse_custom("DROP MATERIALIZED VIEW a CASCADE").unwrap_err();
        assert_eq!(e.sqlstate, SqlState::FEATURE_NOT_SUPPORTED);
        let e = parse_custom("DROP MATERIALIZED VIEW a, other.b").unwrap_err();
        assert_eq!(e.sqlstate, SqlState::INVALID_SCHEMA_NAME);
        for (sql, wanted) in [
            (
                "DROP MATERIALIZED VIEW a b",
                "at or near \"b\": expected a comma, RESTRICT or the end of the statement",
            ),
            (
                "DROP MATERIALIZED VIEW a,",
                "at end of input: expected a name after DROP MATERIALIZED VIEW",
            ),
            (
                "DROP STREAMING QUERY IF EXISTS",
                "at end of input: expected a name after DROP STREAMING QUERY",
            ),
            (
                "DROP MATERIALIZED VIEW a RESTRICT x",
                "at or near \"x\": expected the end of the statement after RESTRICT",
            ),
        ] {
            assert_eq!(refused(sql), format!("syntax error {wanted}"), "{sql}");
        }
        for sql in ["DROP TABLE t", "DROP VIEW v", "drop streaming"] {
            assert_eq!(parse_custom(sql).unwrap(), None, "{sql}");
        }
    }
}
