//! Running test SQL against a real Postgres, to check hand-written expected
//! results. Weir-specific statements are rewritten to their closest
//! Postgres equivalent: a streaming query or materialized view (which in
//! Weir is always up to date after `FLUSH`) is a plain view in Postgres.

/// Environment variable holding the reference Postgres connection string,
/// e.g. `host=127.0.0.1 port=5432 user=postgres dbname=postgres`.
pub const REFERENCE_ENV: &str = "WEIR_REFERENCE_PG";

/// Result of [`rewrite_for_postgres`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rewritten {
    /// Send this SQL instead.
    Sql(String),
    /// Do not send anything; report success.
    Skip,
}

/// If `sql` starts with `words` (case-insensitive, separated by any
/// whitespace), returns the remainder.
fn strip_words<'a>(sql: &'a str, words: &[&str]) -> Option<&'a str> {
    let mut rest = sql.trim_start();
    for w in words {
        let end = rest
            .find(|c: char| c.is_whitespace() || c == ';')
            .unwrap_or(rest.len());
        if !rest[..end].eq_ignore_ascii_case(w) {
            return None;
        }
        rest = rest[end..].trim_start();
    }
    Some(rest)
}

/// Rewrites Weir-only statements for Postgres.
pub fn rewrite_for_postgres(sql: &str) -> Rewritten {
    const VIEW_CREATES: [&[&str]; 2] = [
        &["CREATE", "STREAMING", "QUERY"],
        &["CREATE", "MATERIALIZED", "VIEW"],
    ];
    const VIEW_DROPS: [&[&str]; 2] = [
        &["DROP", "STREAMING", "QUERY"],
        &["DROP", "MATERIALIZED", "VIEW"],
    ];
    for words in VIEW_CREATES {
        if let Some(rest) = strip_words(sql, words) {
            return Rewritten::Sql(format!("CREATE VIEW {rest}"));
        }
    }
    for words in VIEW_DROPS {
        if let Some(rest) = strip_words(sql, words) {
            return Rewritten::Sql(format!("DROP VIEW {rest}"));
        }
    }
    if let Some(rest) = strip_words(sql, &["FLUSH"]) {
        if rest.trim().trim_end_matches(';').trim().is_empty() {
            return Rewritten::Skip;
        }
    }
    Rewritten::Sql(sql.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rewrites() {
        assert_eq!(
            rewrite_for_postgres("create materialized view v as select 1"),
            Rewritten::Sql("CREATE VIEW v as select 1".into())
        );
        assert_eq!(
            rewrite_for_postgres("CREATE STREAMING\n QUERY q AS SELECT * FROM t"),
            Rewritten::Sql("CREATE VIEW q AS SELECT * FROM t".into())
        );
        assert_eq!(
            rewrite_for_postgres("DROP MATERIALIZED VIEW v"),
            Rewritten::Sql("DROP VIEW v".into())
        );
        assert_eq!(rewrite_for_postgres("flush;"), Rewritten::Skip);
        assert_eq!(rewrite_for_postgres("FLUSH"), Rewritten::Skip);
        assert_eq!(
            rewrite_for_postgres("SELECT 1"),
            Rewritten::Sql("SELECT 1".into())
        );
        assert_eq!(
            rewrite_for_postgres("flushed"),
            Rewritten::Sql("flushed".into())
        );
    }
}
