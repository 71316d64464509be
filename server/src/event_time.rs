//! Event-time syntax that sqlparser does not know, rewritten at the token
//! level before parsing:
//!
//! - `WATERMARK FOR ts AS <expr>` inside `CREATE TABLE (...)` is taken out
//!   of the column list and returned on its own;
//! - the window table functions, in Flink's form
//!   `TABLE(TUMBLE(TABLE t, DESCRIPTOR(ts), size))` and RisingWave's
//!   `tumble(t, ts, size)` (likewise `HOP(..., slide, size)`), become
//!   derived tables that add `window_start` and `window_end`:
//!   `date_bin(size, ts)` and that plus `size`. A hop window unnests the
//!   array of the `size / slide` window starts that hold the row.

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::Token;
use weir_executor::SqlState;

use crate::error::{SqlError, SqlResult};
use crate::sql_text::{text, tokenize, Tok};

/// `WATERMARK FOR column AS expr` of a table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WatermarkSpec {
    pub column: String,
    /// SQL text of the watermark expression over the table's columns.
    pub expr: String,
}

fn is_word(t: &Tok, s: &str) -> bool {
    matches!(&t.token, Token::Word(w) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(s))
}

/// Index of the next token that is not whitespace, from `i` on.
fn skip_ws(tokens: &[Tok], mut i: usize) -> usize {
    while tokens.get(i).is_some_and(Tok::is_whitespace) {
        i += 1;
    }
    i
}

/// The index of the parenthesis closing the one at `open`.
fn closing(tokens: &[Tok], open: usize) -> SqlResult<usize> {
    let mut depth = 0;
    for (i, t) in tokens.iter().enumerate().skip(open) {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Ok(i);
                }
            }
            _ => {}
        }
    }
    Err(SqlError::syntax("syntax error: unbalanced parentheses"))
}

/// Splits the tokens between parentheses at top-level commas.
fn split_args(tokens: &[Tok]) -> Vec<Vec<Tok>> {
    let mut out = vec![Vec::new()];
    let mut depth = 0;
    for t in tokens {
        match t.token {
            Token::LParen => depth += 1,
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => {
                out.push(Vec::new());
                continue;
            }
            _ => {}
        }
        out.last_mut().expect("one").push(t.clone());
    }
    out
}

/// A `CREATE TABLE` without its `WATERMARK FOR` clause, and the clause.
pub fn extract_watermark(sql: &str) -> SqlResult<(String, Option<WatermarkSpec>)> {
    if !crate::sql_text::may_begin_with(sql, &["create"]) {
        return Ok((sql.to_string(), None));
    }
    let tokens = tokenize(sql)?;
    let sig: Vec<usize> = (0..tokens.len())
        .filter(|i| !tokens[*i].is_whitespace())
        .collect();
    let create_table = sig.len() > 2
        && matches!(&tokens[sig[0]].token, Token::Word(w) if w.keyword == Keyword::CREATE)
        && matches!(&tokens[sig[1]].token, Token::Word(w) if w.keyword == Keyword::TABLE);
    if !create_table {
        return Ok((sql.to_string(), None));
    }
    let Some(at) = sig.iter().position(|i| is_word(&tokens[*i], "watermark")) else {
        return Ok((sql.to_string(), None));
    };
    let get = |k: usize| sig.get(at + k).map(|i| &tokens[*i]);
    let column = match (get(1), get(2).map(|t| &t.token), get(3).map(|t| &t.token)) {
        (Some(f), Some(Token::Word(c)), Some(a))
            if is_word(f, "for") && matches!(a, Token::Word(w) if w.keyword == Keyword::AS) =>
        {
            if c.quote_style.is_some() {
                c.value.clone()
            } else {
                c.value.to_lowercase()
            }
        }
        _ => {
            return Err(SqlError::syntax(
                "syntax error: expected WATERMARK FOR <column> AS <expression>",
            ))
        }
    };
    // The expression runs to the next top-level comma or the closing
    // parenthesis of the column list.
    let Some(&start) = sig.get(at + 4) else {
        return Err(SqlError::syntax(
            "syntax error: expected WATERMARK FOR <column> AS <expression>",
        ));
    };
    let mut depth = 0i32;
    let mut end = start;
    while end < tokens.len() {
        match tokens[end].token {
            Token::LParen => depth += 1,
            Token::RParen if depth == 0 => break,
            Token::RParen => depth -= 1,
            Token::Comma if depth == 0 => break,
            _ => {}
        }
        end += 1;
    }
    let expr = text(&tokens[start..end]).trim().to_string();
    if expr.is_empty() || end >= tokens.len() {
        return Err(SqlError::syntax(
            "syntax error: expected WATERMARK FOR <column> AS <expression>",
        ));
    }
    // Drop the clause with the comma before it (or after it, if first).
    let before = sig[..at].last().copied().expect("CREATE TABLE precedes");
    let (cut_from, cut_to) = if tokens[before].token == Token::Comma {
        (before, end)
    } else if tokens[end].token == Token::Comma {
        (sig[at], end + 1)
    } else {
        return Err(SqlError::syntax(
            "syntax error: a table needs columns besides its WATERMARK",
        ));
    };
    let mut out = text(&tokens[..cut_from]);
    out.push_str(&text(&tokens[cut_to..]));
    Ok((out, Some(WatermarkSpec { column, expr })))
}

/// A query without its trailing `EMIT ON WINDOW CLOSE`, and whether it had
/// one.
pub fn strip_emit_on_window_close(sql: &str) -> SqlResult<(String, bool)> {
    let tokens = tokenize(sql)?;
    let sig: Vec<usize> = (0..tokens.len())
        .filter(|i| !tokens[*i].is_whitespace() && tokens[*i].token != Token::SemiColon)
        .collect();
    let n = sig.len();
    let tail = ["emit", "on", "window", "close"];
    if n >= 4
        && tail
            .iter()
            .enumerate()
            .all(|(k, w)| is_word(&tokens[sig[n - 4 + k]], w))
    {
        return Ok((text(&tokens[..sig[n - 4]]).trim_end().to_string(), true));
    }
    Ok((sql.to_string(), false))
}

/// Milliseconds of an interval written as SQL (`INTERVAL '10' SECOND`,
/// `INTERVAL '2 seconds'`, ...), for the hop arithmetic.
fn interval_ms(tokens: &[Tok]) -> SqlResult<i64> {
    let sig: Vec<&Tok> = tokens.iter().filter(|t| !t.is_whitespace()).collect();
    let bad = || {
        SqlError::new(
            SqlState::INVALID_DATETIME_FORMAT,
            format!(
                "window size must be a constant interval such as INTERVAL '10' SECOND, got {}",
                text(tokens).trim()
            ),
        )
    };
    if sig.len() < 2 || !is_word(sig[0], "interval") {
        return Err(bad());
    }
    let Token::SingleQuotedString(body) = &sig[1].token else {
        return Err(bad());
    };
    let mut words: Vec<String> = body.split_whitespace().map(|s| s.to_lowercase()).collect();
    for t in &sig[2..] {
        match &t.token {
            Token::Word(w) => words.push(w.value.to_lowercase()),
            _ => return Err(bad()),
        }
    }
    let mut total = 0i64;
    let mut i = 0;
    while i < words.len() {
        let n: f64 = words[i].parse().map_err(|_| bad())?;
        let unit = words.get(i + 1).ok_or_else(bad)?;
        let ms = match unit.trim_end_matches('s') {
            "millisecond" | "m" => 1.0,
            "second" | "sec" => 1_000.0,
            "minute" | "min" => 60_000.0,
            "hour" => 3_600_000.0,
            "day" => 86_400_000.0,
            _ => return Err(bad()),
        };
        total += (n * ms).round() as i64;
        i += 2;
    }
    if total <= 0 {
        return Err(bad());
    }
    Ok(total)
}

/// One window table function call found in a FROM clause.
struct WindowCall {
    /// Token range it replaces.
    from: usize,
    to: usize,
    kind: WindowKind,
    table: String,
    column: String,
}

enum WindowKind {
    Tumble { size: i64 },
    Hop { slide: i64, size: i64 },
    Session { gap: i64, partition: Vec<String> },
}

/// An identifier as the catalog names it: unquoted ones lower-cased.
fn ident(t: &Tok) -> Option<String> {
    match &t.token {
        Token::Word(w) if w.quote_style.is_some() => Some(w.value.clone()),
        Token::Word(w) => Some(w.value.to_lowercase()),
        _ => None,
    }
}

/// `TABLE t [PARTITION BY k | PARTITION BY (k1, k2)]` of a SESSION call:
/// the table and the partition columns.
fn session_table_arg(arg: &[Tok]) -> SqlResult<(String, Vec<String>)> {
    let sig: Vec<&Tok> = arg.iter().filter(|t| !t.is_whitespace()).collect();
    let bad = || {
        SqlError::syntax(
            "syntax error: SESSION's first argument is TABLE t [PARTITION BY k | PARTITION BY (k1, k2)]",
        )
    };
    if sig.len() < 2 || !is_word(sig[0], "table") {
        return Err(bad());
    }
    let table = ident(sig[1]).ok_or_else(bad)?;
    let rest = &sig[2..];
    if rest.is_empty() {
        return Ok((table, Vec::new()));
    }
    if rest.len() < 3 || !is_word(rest[0], "partition") || !is_word(rest[1], "by") {
        return Err(bad());
    }
    let keys: &[&Tok] = match &rest[2..] {
        [open, inner @ .., close]
            if open.token == Token::LParen && close.token == Token::RParen =>
        {
            inner
        }
        single => single,
    };
    let mut partition = Vec::new();
    for (i, t) in keys.iter().enumerate() {
        if i % 2 == 1 {
            if t.token != Token::Comma {
                return Err(bad());
            }
        } else {
            partition.push(ident(t).ok_or_else(bad)?);
        }
    }
    if partition.is_empty() || keys.len().is_multiple_of(2) {
        return Err(bad());
    }
    Ok((table, partition))
}

/// Argument text without a leading `TABLE` / inside `DESCRIPTOR(...)`.
fn plain_arg(arg: &[Tok], prefix: &str) -> String {
    let sig: Vec<&Tok> = arg.iter().filter(|t| !t.is_whitespace()).collect();
    if prefix == "table" && sig.len() == 2 && is_word(sig[0], "table") {
        return sig[1].text.clone();
    }
    if prefix == "descriptor" && sig.len() == 4 && is_word(sig[0], "descriptor") {
        return sig[2].text.clone();
    }
    text(arg).trim().to_string()
}

fn find_window_call(tokens: &[Tok], from: usize) -> SqlResult<Option<WindowCall>> {
    let mut i = from;
    while i < tokens.len() {
        let is_session = is_word(&tokens[i], "session");
        let is_window = is_word(&tokens[i], "tumble") || is_word(&tokens[i], "hop") || is_session;
        // Preceded by FROM, JOIN, a comma or `TABLE(`: a table function.
        let prev = (0..i).rev().find(|k| !tokens[*k].is_whitespace());
        let open = skip_ws(tokens, i + 1);
        if is_window && tokens.get(open).is_some_and(|t| t.token == Token::LParen) {
            let close = closing(tokens, open)?;
            let args = split_args(&tokens[open + 1..close]);
            // Flink's form: TABLE( <call> ) around it.
            let (mut start, mut end) = (i, close + 1);
            if let Some(p) = prev {
                if tokens[p].token == Token::LParen {
                    let before = (0..p).rev().find(|k| !tokens[*k].is_whitespace());
                    if let Some(b) = before.filter(|b| is_word(&tokens[*b], "table")) {
                        let outer_close = skip_ws(tokens, close + 1);
                        if tokens
                            .get(outer_close)
                            .is_some_and(|t| t.token == Token::RParen)
                        {
                            start = b;
                            end = outer_close + 1;
                        }
                    }
                }
            }
            if is_session {
                // Only Flink's form, `TABLE(SESSION(...))`: a bare
                // `session(` may be anything else.
                if start == i {
                    i += 1;
                    continue;
                }
                if args.len() != 3 {
                    return Err(SqlError::syntax(
                        "syntax error: SESSION takes 3 arguments (TABLE t [PARTITION BY k], \
                         DESCRIPTOR(time column), gap)",
                    ));
                }
                let (table, partition) = session_table_arg(&args[0])?;
                return Ok(Some(WindowCall {
                    from: start,
                    to: end,
                    kind: WindowKind::Session {
                        gap: interval_ms(&args[2])?,
                        partition,
                    },
                    table,
                    column: plain_arg(&args[1], "descriptor"),
                }));
            }
            let hop = is_word(&tokens[i], "hop");
            let want = if hop { 4 } else { 3 };
            if args.len() != want {
                return Err(SqlError::syntax(format!(
                    "syntax error: {} takes {want} arguments (table, time column, {})",
                    if hop { "HOP" } else { "TUMBLE" },
                    if hop { "slide, size" } else { "size" }
                )));
            }
            let table = plain_arg(&args[0], "table");
            let column = plain_arg(&args[1], "descriptor");
            let kind = if hop {
                let slide = interval_ms(&args[2])?;
                let size = interval_ms(&args[3])?;
                if size % slide != 0 {
                    return Err(SqlError::new(
                        SqlState::INVALID_PARAMETER_VALUE,
                        "HOP window size must be a multiple of its slide",
                    ));
                }
                WindowKind::Hop { slide, size }
            } else {
                WindowKind::Tumble {
                    size: interval_ms(&args[2])?,
                }
            };
            return Ok(Some(WindowCall {
                from: start,
                to: end,
                kind,
                table,
                column,
            }));
        }
        i += 1;
    }
    Ok(None)
}

/// A derived table adding window bounds to `table`'s rows.
fn window_subquery(call: &WindowCall) -> String {
    let (t, c) = (&call.table, &call.column);
    let body = match &call.kind {
        WindowKind::Session { gap, partition } => {
            // A table function (see the planner's session_window.rs).
            let quote = |s: &str| format!("'{}'", s.replace('\'', "''"));
            let mut args = vec![quote(t), quote(c.trim_matches('"')), gap.to_string()];
            args.extend(partition.iter().map(|k| quote(k)));
            return format!("session_window({})", args.join(", "));
        }
        &WindowKind::Tumble { size } => {
            let start = format!("date_bin(INTERVAL '{size} milliseconds', {c})");
            format!(
                "SELECT *, {start} AS window_start, {start} + INTERVAL '{size} milliseconds' AS window_end FROM {t}"
            )
        }
        &WindowKind::Hop { slide, size } => {
            // One row per window: unnest the starts of the size / slide
            // windows that hold the row (the latest first).
            let bin = format!("date_bin(INTERVAL '{slide} milliseconds', {c})");
            let starts: Vec<String> = (0..size / slide)
                .map(|k| match k {
                    0 => bin.clone(),
                    k => format!("{bin} - INTERVAL '{} milliseconds'", k * slide),
                })
                .collect();
            format!(
                "SELECT *, window_start + INTERVAL '{size} milliseconds' AS window_end FROM \
                 (SELECT *, unnest(make_array({})) AS window_start FROM {t}) AS {t}",
                starts.join(", ")
            )
        }
    };
    format!("({body})")
}

/// Rewrites every window table function call into a derived table. An
/// alias is added (the table's name) when the call has none.
pub fn rewrite_windows(sql: &str) -> SqlResult<String> {
    let lower = sql.to_ascii_lowercase();
    if !lower.contains("tumble") && !lower.contains("hop") && !lower.contains("session") {
        return Ok(sql.to_string());
    }
    let mut tokens = tokenize(sql)?;
    let mut from = 0;
    while let Some(call) = find_window_call(&tokens, from)? {
        let next = skip_ws(&tokens, call.to);
        let has_alias = match tokens.get(next).map(|t| (t, &t.token)) {
            Some((t, Token::Word(w))) if !is_word(t, "emit") => {
                w.keyword == Keyword::AS
                    || !matches!(
                        w.keyword,
                        Keyword::WHERE
                            | Keyword::GROUP
                            | Keyword::JOIN
                            | Keyword::INNER
                            | Keyword::LEFT
                            | Keyword::RIGHT
                            | Keyword::FULL
                            | Keyword::CROSS
                            | Keyword::ON
                            | Keyword::ORDER
                            | Keyword::LIMIT
                            | Keyword::UNION
                            | Keyword::HAVING
                            | Keyword::WINDOW
                    )
            }
            _ => false,
        };
        let mut replacement = window_subquery(&call);
        if !has_alias {
            replacement.push_str(&format!(" AS {}", call.table));
        }
        let new_tokens = tokenize(&replacement)?;
        let n = new_tokens.len();
        tokens.splice(call.from..call.to, new_tokens);
        from = call.from + n;
    }
    Ok(text(&tokens))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watermark_clause_is_taken_out() {
        let (sql, wm) = extract_watermark(
            "CREATE TABLE bid (auction bigint, date_time timestamp, WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND, price bigint)",
        )
        .unwrap();
        assert_eq!(
            sql,
            "CREATE TABLE bid (auction bigint, date_time timestamp, price bigint)"
        );
        assert_eq!(
            wm,
            Some(WatermarkSpec {
                column: "date_time".into(),
                expr: "date_time - INTERVAL '4' SECOND".into()
            })
        );
        let (sql, wm) =
            extract_watermark("create table t (ts timestamp, watermark for ts as ts)").unwrap();
        assert_eq!(sql, "create table t (ts timestamp)");
        assert_eq!(wm.unwrap().expr, "ts");
        let (same, none) = extract_watermark("SELECT watermark FROM t").unwrap();
        assert_eq!((same.as_str(), none), ("SELECT watermark FROM t", None));
        assert!(extract_watermark("create table t (ts timestamp, watermark ts)").is_err());
    }

    #[test]
    fn emit_on_window_close_is_a_trailing_clause() {
        assert_eq!(
            strip_emit_on_window_close("SELECT 1 FROM t GROUP BY x EMIT ON WINDOW CLOSE").unwrap(),
            ("SELECT 1 FROM t GROUP BY x".to_string(), true)
        );
        assert_eq!(
            strip_emit_on_window_close("SELECT 1").unwrap(),
            ("SELECT 1".to_string(), false)
        );
    }

    #[test]
    fn intervals_in_milliseconds() {
        let ms = |s: &str| interval_ms(&tokenize(s).unwrap());
        assert_eq!(ms("INTERVAL '10' SECOND").unwrap(), 10_000);
        assert_eq!(ms("interval '2 seconds'").unwrap(), 2_000);
        assert_eq!(ms("INTERVAL '1' MINUTE").unwrap(), 60_000);
        assert_eq!(ms("INTERVAL '500 milliseconds'").unwrap(), 500);
        assert!(ms("'10'").is_err());
        assert!(ms("INTERVAL '0' SECOND").is_err());
    }

    #[test]
    fn both_window_forms_become_the_same_derived_table() {
        let flink = rewrite_windows(
            "SELECT window_start, count(*) FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND)) GROUP BY window_start",
        )
        .unwrap();
        let rw = rewrite_windows(
            "SELECT window_start, count(*) FROM tumble(bid, date_time, INTERVAL '10' SECOND) GROUP BY window_start",
        )
        .unwrap();
        assert_eq!(flink, rw);
        assert!(flink.contains(
            "(SELECT *, date_bin(INTERVAL '10000 milliseconds', date_time) AS window_start"
        ));
        assert!(flink.contains(") AS bid GROUP BY"), "{flink}");
        let hop = rewrite_windows(
            "SELECT * FROM hop(bid, date_time, INTERVAL '2' SECOND, INTERVAL '10' SECOND) AS h",
        )
        .unwrap();
        assert_eq!(hop.matches("date_bin(").count(), 5, "{hop}");
        assert!(hop.contains("unnest(make_array("), "{hop}");
        assert!(hop.ends_with(") AS h"), "{hop}");
        assert!(rewrite_windows(
            "SELECT * FROM hop(bid, date_time, INTERVAL '3' SECOND, INTERVAL '10' SECOND)"
        )
        .is_err());
        // Not a call: left alone.
        assert_eq!(
            rewrite_windows("SELECT hop FROM t").unwrap(),
            "SELECT hop FROM t"
        );
    }
}
