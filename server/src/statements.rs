//! Statement splitting and the statements that PostgreSQL's grammar does not
//! have (`CREATE STREAMING QUERY`, `FLUSH`, `SHOW STREAMING QUERIES`, ...).
//! Everything else goes to sqlparser and DataFusion.

use std::collections::BTreeMap;
use weir_executor::SqlState;

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::Token;

use crate::error::{SqlError, SqlResult};
use crate::sql_text::{may_begin_with, text, tokenize, Tok};

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

/// The identifier in a word token: unquoted ones fold to lower case.
fn ident(t: &Token) -> Option<String> {
    match t {
        Token::Word(w) if w.quote_style.is_some() => Some(w.value.clone()),
        Token::Word(w) => Some(w.value.to_lowercase()),
        _ => None,
    }
}

fn kw(t: Option<&(usize, Token)>, k: Keyword) -> bool {
    matches!(t, Some((_, Token::Word(w))) if w.keyword == k && w.quote_style.is_none())
}

fn word(t: Option<&(usize, Token)>, s: &str) -> bool {
    matches!(t, Some((_, Token::Word(w))) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(s))
}

/// Parses one statement if it is one of Weir's own; `None` otherwise.
/// `( key = value [, ...] )` starting at `sig[q]`; returns the options and
/// the index after the closing parenthesis.
fn option_list(
    sig: &[(usize, Token)],
    mut q: usize,
    after: &str,
) -> SqlResult<(BTreeMap<String, String>, usize)> {
    let at = |i: usize| sig.get(i);
    let mut options = BTreeMap::new();
    if !matches!(at(q), Some((_, Token::LParen))) {
        return Err(SqlError::syntax(format!(
            "syntax error: expected ( after {after}"
        )));
    }
    q += 1;
    loop {
        let key = match at(q) {
            Some((_, Token::Word(w))) => w.value.to_lowercase(),
            Some((_, Token::SingleQuotedString(s))) => s.to_lowercase(),
            Some((_, Token::RParen)) => {
                q += 1;
                break;
            }
            _ => {
                return Err(SqlError::syntax(format!(
                    "syntax error in {after} options: expected an option name"
                )))
            }
        };
        q += 1;
        // dotted keys: restart_strategy.attempts
        let mut key = key;
        while matches!(at(q), Some((_, Token::Period))) {
            match at(q + 1) {
                Some((_, Token::Word(w))) => key = format!("{key}.{}", w.value.to_lowercase()),
                _ => return Err(SqlError::syntax(format!("syntax error in {after} options"))),
            }
            q += 2;
        }
        if !matches!(at(q), Some((_, Token::Eq))) {
            return Err(SqlError::syntax(format!(
                "syntax error in {after} options: expected = after {key}"
            )));
        }
        let value = match at(q + 1) {
            Some((_, Token::Number(n, _))) => n.clone(),
            Some((_, Token::SingleQuotedString(s))) => s.clone(),
            Some((_, Token::Word(w))) => w.value.clone(),
            _ => {
                return Err(SqlError::syntax(format!(
                    "syntax error in {after} options: expected a value for {key}"
                )))
            }
        };
        options.insert(key, value);
        q += 2;
        match at(q) {
            Some((_, Token::Comma)) => q += 1,
            Some((_, Token::RParen)) => {
                q += 1;
                break;
            }
            _ => {
                return Err(SqlError::syntax(format!(
                    "syntax error in {after} options: expected , or )"
                )))
            }
        }
    }
    Ok((options, q))
}

pub fn parse_custom(sql: &str) -> SqlResult<Option<Custom>> {
    if !may_begin_with(
        sql,
        &[
            "alter", "create", "drop", "explain", "flush", "show", "start", "stop",
        ],
    ) {
        return Ok(None);
    }
    let tokens = tokenize(sql)?;
    // Significant tokens with their index in `tokens`.
    let sig: Vec<(usize, Token)> = tokens
        .iter()
        .enumerate()
        .filter(|(_, t)| !t.is_whitespace())
        .map(|(i, t)| (i, t.token.clone()))
        .collect();
    let mut p = 0;
    let explain = kw(sig.first(), Keyword::EXPLAIN);
    if explain {
        p += 1;
    }
    let at = |i: usize| sig.get(i);
    if !explain && kw(at(p), Keyword::ALTER) {
        let (kind, q) = if word(at(p + 1), "streaming") && kw(at(p + 2), Keyword::QUERY) {
            (QueryKind::StreamingQuery, p + 3)
        } else if kw(at(p + 1), Keyword::MATERIALIZED) && kw(at(p + 2), Keyword::VIEW) {
            (QueryKind::MaterializedView, p + 3)
        } else {
            return Ok(None);
        };
        let name = at(q).and_then(|(_, t)| ident(t)).ok_or_else(|| {
            SqlError::syntax(format!(
                "syntax error: expected a name after ALTER {}",
                kind.noun().to_uppercase()
            ))
        })?;
        if word(at(q + 1), "restart") {
            if at(q + 2).is_some() {
                return Err(SqlError::syntax(
                    "syntax error: unexpected text after RESTART",
                ));
            }
            return Ok(Some(Custom::RestartQuery { kind, name }));
        }
        if let Some(c) = parse_alter_lifecycle(&tokens, &sig, kind, &name, q + 1, false)? {
            return Ok(Some(c));
        }
        if !kw(at(q + 1), Keyword::SET) {
            return Err(SqlError::syntax(format!(
                "syntax error: expected SET (...), RESTART, SAVEPOINT, DROP SAVEPOINT, ROLLBACK or AS SELECT ... after ALTER {} {name}",
                kind.noun().to_uppercase()
            )));
        }
        let (options, end) = option_list(&sig, q + 2, "SET")?;
        if end < sig.len() {
            return Err(SqlError::syntax(
                "syntax error: unexpected text after SET (...)",
            ));
        }
        return Ok(Some(Custom::AlterQuery {
            kind,
            name,
            options,
        }));
    }
    if explain && kw(at(p), Keyword::ALTER) {
        let (kind, q) = if word(at(p + 1), "streaming") && kw(at(p + 2), Keyword::QUERY) {
            (QueryKind::StreamingQuery, p + 3)
        } else if kw(at(p + 1), Keyword::MATERIALIZED) && kw(at(p + 2), Keyword::VIEW) {
            (QueryKind::MaterializedView, p + 3)
        } else {
            return Ok(None);
        };
        let name = at(q)
            .and_then(|(_, t)| ident(t))
            .ok_or_else(|| SqlError::syntax("syntax error: expected a name after EXPLAIN ALTER"))?;
        return match parse_alter_lifecycle(&tokens, &sig, kind, &name, q + 1, true)? {
            Some(c @ Custom::UpgradeQuery { .. }) => Ok(Some(c)),
            _ => Err(SqlError::syntax(
                "syntax error: EXPLAIN ALTER explains only ALTER ... [WITHOUT STATE] AS SELECT ...",
            )),
        };
    }
    if !explain && (word(at(p), "stop") || word(at(p), "start")) {
        if let Some(c) = parse_stop_start(&sig)? {
            return Ok(Some(c));
        }
    }
    if !explain && kw(at(p), Keyword::CREATE) {
        if let Some(c) = parse_create_enricher(&tokens, &sig)? {
            return Ok(Some(c));
        }
    }
    if kw(at(p), Keyword::CREATE) {
        let (kind, next) = if word(at(p + 1), "streaming") && kw(at(p + 2), Keyword::QUERY) {
            (QueryKind::StreamingQuery, p + 3)
        } else if kw(at(p + 1), Keyword::MATERIALIZED) && kw(at(p + 2), Keyword::VIEW) {
            (QueryKind::MaterializedView, p + 3)
        } else {
            return Ok(None);
        };
        let mut q = next;
        let mut if_not_exists = false;
        if kw(at(q), Keyword::IF) && kw(at(q + 1), Keyword::NOT) && kw(at(q + 2), Keyword::EXISTS) {
            if_not_exists = true;
            q += 3;
        }
        let mut name = at(q).and_then(|(_, t)| ident(t)).ok_or_else(|| {
            SqlError::syntax(format!(
                "syntax error: expected a name after CREATE {}",
                kind.noun().to_uppercase()
            ))
        })?;
        q += 1;
        // Schema-qualified names: only `public` exists.
        if matches!(at(q), Some((_, Token::Period))) {
            if name != "public" {
                return Err(SqlError::new(
                    SqlState::INVALID_SCHEMA_NAME,
                    format!("schema \"{name}\" does not exist"),
                ));
            }
            name = at(q + 1).and_then(|(_, t)| ident(t)).ok_or_else(|| {
                SqlError::syntax("syntax error: expected a name after the schema")
            })?;
            q += 2;
        }
        let mut options = BTreeMap::new();
        if kw(at(q), Keyword::WITH) {
            (options, q) = option_list(&sig, q + 1, "WITH")?;
        }
        let mut from_savepoint = None;
        if kw(at(q), Keyword::FROM) && kw(at(q + 1), Keyword::SAVEPOINT) {
            from_savepoint = Some(string_literal(at(q + 2), "FROM SAVEPOINT")?);
            q += 3;
        }
        if !kw(at(q), Keyword::AS) {
            return Err(SqlError::syntax(format!(
                "syntax error: expected AS SELECT ... after CREATE {} {name}",
                kind.noun().to_uppercase()
            )));
        }
        let start = at(q).map(|(i, _)| i + 1).unwrap_or(tokens.len());
        let query = text(&tokens[start..]);
        let query = query.trim().to_string();
        if query.is_empty() {
            return Err(SqlError::syntax("syntax error: expected a query after AS"));
        }
        return Ok(Some(Custom::CreateQuery {
            kind,
            name,
            if_not_exists,
            options,
            query,
            explain,
            from_savepoint,
        }));
    }
    if explain {
        return Ok(None);
    }
    if word(at(0), "flush") && at(1).is_none() {
        return Ok(Some(Custom::Flush));
    }
    if kw(at(0), Keyword::SHOW) {
        if word(at(1), "streaming") && word(at(2), "queries") && at(3).is_none() {
            return Ok(Some(Custom::ShowQueries(Some(QueryKind::StreamingQuery))));
        }
        if kw(at(1), Keyword::MATERIALIZED) && word(at(2), "views") && at(3).is_none() {
            return Ok(Some(Custom::ShowQueries(Some(QueryKind::MaterializedView))));
        }
        if word(at(1), "tables") && at(2).is_none() {
            return Ok(Some(Custom::ShowTables));
        }
    }
    if kw(at(0), Keyword::DROP) && word(at(1), "failure") && word(at(2), "enricher") {
        let mut q = 3;
        let mut if_exists = false;
        if kw(at(q), Keyword::IF) && kw(at(q + 1), Keyword::EXISTS) {
            if_exists = true;
            q += 2;
        }
        let name = at(q).and_then(|(_, t)| ident(t)).ok_or_else(|| {
            SqlError::syntax("syntax error: expected a name after DROP FAILURE ENRICHER")
        })?;
        if at(q + 1).is_some() {
            return Err(SqlError::syntax(
                "syntax error at end of DROP FAILURE ENRICHER statement",
            ));
        }
        return Ok(Some(Custom::DropEnricher { name, if_exists }));
    }
    if kw(at(0), Keyword::DROP) {
        let (kind, mut q) = if word(at(1), "streaming") && kw(at(2), Keyword::QUERY) {
            (QueryKind::StreamingQuery, 3)
        } else if kw(at(1), Keyword::MATERIALIZED) && kw(at(2), Keyword::VIEW) {
            (QueryKind::MaterializedView, 3)
        } else {
            return Ok(None);
        };
        let mut if_exists = false;
        if kw(at(q), Keyword::IF) && kw(at(q + 1), Keyword::EXISTS) {
            if_exists = true;
            q += 2;
        }
        let mut names = Vec::new();
        loop {
            let mut name = at(q)
                .and_then(|(_, t)| ident(t))
                .ok_or_else(|| SqlError::syntax("syntax error: expected a name after DROP"))?;
            q += 1;
            if matches!(at(q), Some((_, Token::Period))) {
                name = at(q + 1)
                    .and_then(|(_, t)| ident(t))
                    .ok_or_else(|| SqlError::syntax("syntax error: expected a name after DROP"))?;
                q += 2;
            }
            names.push(name);
            if matches!(at(q), Some((_, Token::Comma))) {
                q += 1;
                continue;
            }
            break;
        }
        if kw(at(q), Keyword::CASCADE) {
            return Err(SqlError::unsupported("DROP ... CASCADE is not supported")
                .with_hint("Drop the dependent objects first."));
        }
        if kw(at(q), Keyword::RESTRICT) {
            q += 1;
        }
        if at(q).is_some() {
            return Err(SqlError::syntax("syntax error at end of DROP statement"));
        }
        return Ok(Some(Custom::DropQuery {
            kind,
            names,
            if_exists,
        }));
    }
    Ok(None)
}

/// A single-quoted string (a savepoint's name or path).
fn string_literal(t: Option<&(usize, Token)>, after: &str) -> SqlResult<String> {
    match t {
        Some((_, Token::SingleQuotedString(s))) => Ok(s.clone()),
        _ => Err(SqlError::syntax(format!(
            "syntax error: expected a quoted name after {after}"
        ))),
    }
}

/// The lifecycle forms of `ALTER STREAMING QUERY name ...` from `sig[q]`
/// on: `SAVEPOINT [AS 'sp']`, `DROP SAVEPOINT [IF EXISTS] 'sp'`,
/// `ROLLBACK [TO VERSION n]`, `[WITHOUT STATE] AS SELECT ...`; `None` for
/// the others.
fn parse_alter_lifecycle(
    tokens: &[Tok],
    sig: &[(usize, Token)],
    kind: QueryKind,
    name: &str,
    q: usize,
    explain: bool,
) -> SqlResult<Option<Custom>> {
    let at = |i: usize| sig.get(i);
    let name = name.to_string();
    let end = |i: usize, what: &str| {
        if at(i).is_some() {
            Err(SqlError::syntax(format!(
                "syntax error: unexpected text after {what}"
            )))
        } else {
            Ok(())
        }
    };
    if kw(at(q), Keyword::SAVEPOINT) {
        if kw(at(q + 1), Keyword::AS) {
            let savepoint = string_literal(at(q + 2), "SAVEPOINT AS")?;
            end(q + 3, "SAVEPOINT AS '...'")?;
            return Ok(Some(Custom::Savepoint {
                kind,
                name,
                savepoint: Some(savepoint),
            }));
        }
        end(q + 1, "SAVEPOINT")?;
        return Ok(Some(Custom::Savepoint {
            kind,
            name,
            savepoint: None,
        }));
    }
    if kw(at(q), Keyword::DROP) && kw(at(q + 1), Keyword::SAVEPOINT) {
        let mut i = q + 2;
        let mut if_exists = false;
        if kw(at(i), Keyword::IF) && kw(at(i + 1), Keyword::EXISTS) {
            if_exists = true;
            i += 2;
        }
        let savepoint = string_literal(at(i), "DROP SAVEPOINT")?;
        end(i + 1, "DROP SAVEPOINT '...'")?;
        return Ok(Some(Custom::DropSavepoint {
            kind,
            name,
            savepoint,
            if_exists,
        }));
    }
    if kw(at(q), Keyword::ROLLBACK) {
        if at(q + 1).is_none() {
            return Ok(Some(Custom::RollbackQuery {
                kind,
                name,
                version: None,
            }));
        }
        let version = match (at(q + 1), at(q + 2), at(q + 3)) {
            (t, v, Some((_, Token::Number(n, _)))) if kw(t, Keyword::TO) && word(v, "version") => {
                n.parse::<u64>().map_err(|_| {
                    SqlError::syntax(format!("syntax error: invalid version number {n}"))
                })?
            }
            _ => {
                return Err(SqlError::syntax(
                    "syntax error: expected ROLLBACK or ROLLBACK TO VERSION <n>",
                ))
            }
        };
        end(q + 4, "ROLLBACK TO VERSION n")?;
        return Ok(Some(Custom::RollbackQuery {
            kind,
            name,
            version: Some(version),
        }));
    }
    let mut i = q;
    let mut without_state = false;
    if kw(at(i), Keyword::WITHOUT) && word(at(i + 1), "state") {
        without_state = true;
        i += 2;
    }
    if !kw(at(i), Keyword::AS) {
        if without_state {
            return Err(SqlError::syntax(
                "syntax error: expected AS SELECT ... after WITHOUT STATE",
            ));
        }
        return Ok(None);
    }
    let start = at(i).map(|(t, _)| t + 1).unwrap_or(tokens.len());
    let query = text(&tokens[start..]).trim().to_string();
    if query.is_empty() {
        return Err(SqlError::syntax("syntax error: expected a query after AS"));
    }
    Ok(Some(Custom::UpgradeQuery {
        kind,
        name,
        query,
        without_state,
        explain,
    }))
}

/// `STOP STREAMING QUERY name [FORCE]` and `START STREAMING QUERY name
/// [FROM LATEST | FROM SAVEPOINT 'sp' | FROM CHECKPOINT n | WITHOUT STATE]`
/// (also with MATERIALIZED VIEW); `None` for other statements.
fn parse_stop_start(sig: &[(usize, Token)]) -> SqlResult<Option<Custom>> {
    let at = |i: usize| sig.get(i);
    let stop = word(at(0), "stop");
    let (kind, q) = if word(at(1), "streaming") && kw(at(2), Keyword::QUERY) {
        (QueryKind::StreamingQuery, 3)
    } else if kw(at(1), Keyword::MATERIALIZED) && kw(at(2), Keyword::VIEW) {
        (QueryKind::MaterializedView, 3)
    } else {
        return Ok(None);
    };
    let verb = if stop { "STOP" } else { "START" };
    let name = at(q).and_then(|(_, t)| ident(t)).ok_or_else(|| {
        SqlError::syntax(format!(
            "syntax error: expected a name after {verb} {}",
            kind.noun().to_uppercase()
        ))
    })?;
    if stop {
        let force = word(at(q + 1), "force");
        if at(q + 1 + force as usize).is_some() {
            return Err(SqlError::syntax(format!(
                "syntax error: expected nothing or FORCE after STOP {} {name}",
                kind.noun().to_uppercase()
            )));
        }
        return Ok(Some(Custom::StopQuery { kind, name, force }));
    }
    let (from, len) = if at(q + 1).is_none() {
        (StartFrom::Latest, 0)
    } else if kw(at(q + 1), Keyword::FROM) && word(at(q + 2), "latest") {
        (StartFrom::Latest, 2)
    } else if kw(at(q + 1), Keyword::FROM) && kw(at(q + 2), Keyword::SAVEPOINT) {
        (
            StartFrom::Savepoint(string_literal(at(q + 3), "FROM SAVEPOINT")?),
            3,
        )
    } else if kw(at(q + 1), Keyword::FROM) && word(at(q + 2), "checkpoint") {
        let id = match at(q + 3) {
            Some((_, Token::Number(n, _))) => n.parse::<u64>().ok(),
            _ => None,
        }
        .ok_or_else(|| {
            SqlError::syntax("syntax error: expected a checkpoint id after FROM CHECKPOINT")
        })?;
        (StartFrom::Checkpoint(id), 3)
    } else if kw(at(q + 1), Keyword::WITHOUT) && word(at(q + 2), "state") {
        (StartFrom::WithoutState, 2)
    } else {
        return Err(SqlError::syntax(format!(
            "syntax error: expected FROM LATEST, FROM SAVEPOINT '...', FROM CHECKPOINT n or WITHOUT STATE after START {} {name}",
            kind.noun().to_uppercase()
        )));
    };
    if at(q + 1 + len).is_some() {
        return Err(SqlError::syntax(format!(
            "syntax error: unexpected text after START {} {name}",
            kind.noun().to_uppercase()
        )));
    }
    Ok(Some(Custom::StartQuery { kind, name, from }))
}

/// `CREATE [OR REPLACE] FAILURE ENRICHER [IF NOT EXISTS] name WHEN
/// predicate SET LABELS (...)`; `None` when the statement is another CREATE.
fn parse_create_enricher(tokens: &[Tok], sig: &[(usize, Token)]) -> SqlResult<Option<Custom>> {
    let at = |i: usize| sig.get(i);
    let mut q = 1;
    let mut or_replace = false;
    if kw(at(q), Keyword::OR) && kw(at(q + 1), Keyword::REPLACE) {
        or_replace = true;
        q += 2;
    }
    if !(word(at(q), "failure") && word(at(q + 1), "enricher")) {
        return Ok(None);
    }
    q += 2;
    let mut if_not_exists = false;
    if kw(at(q), Keyword::IF) && kw(at(q + 1), Keyword::NOT) && kw(at(q + 2), Keyword::EXISTS) {
        if_not_exists = true;
        q += 3;
    }
    let name = at(q).and_then(|(_, t)| ident(t)).ok_or_else(|| {
        SqlError::syntax("syntax error: expected a name after CREATE FAILURE ENRICHER")
    })?;
    q += 1;
    if !kw(at(q), Keyword::WHEN) {
        return Err(SqlError::syntax(format!(
            "syntax error: expected WHEN <condition> SET LABELS (...) after CREATE FAILURE ENRICHER {name}"
        )));
    }
    let set = (q + 1..sig.len())
        .rev()
        .find(|&i| kw(at(i), Keyword::SET) && word(at(i + 1), "labels"))
        .ok_or_else(|| {
            SqlError::syntax(
                "syntax error: expected SET LABELS (key = 'value', ...) after the WHEN condition",
            )
        })?;
    let (from, to) = (sig[q].0 + 1, sig[set].0);
    let predicate = text(&tokens[from..to]);
    let predicate = predicate.trim().to_string();
    if predicate.is_empty() {
        return Err(SqlError::syntax(
            "syntax error: expected a condition after WHEN",
        ));
    }
    let (labels, end) = option_list(sig, set + 2, "SET LABELS")?;
    if end < sig.len() {
        return Err(SqlError::syntax(
            "syntax error: unexpected text after SET LABELS (...)",
        ));
    }
    if labels.is_empty() {
        return Err(SqlError::syntax(
            "syntax error: SET LABELS needs at least one label",
        ));
    }
    Ok(Some(Custom::CreateEnricher {
        name,
        or_replace,
        if_not_exists,
        predicate,
        labels,
    }))
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
}
