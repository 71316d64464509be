//! Which stored keys an ad hoc SELECT needs to read: the conditions of its
//! WHERE clause on a table's leading key column (the first primary-key
//! column, or the first column of a table without a primary key) become
//! ranges of stored keys, so `WHERE id = 42`, `id IN (..)`, `id BETWEEN ..`
//! and comparisons read only those keys. The ranges only narrow the scan:
//! DataFusion still applies every condition to the rows read.

use std::ops::Bound;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::Column;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};
use weir_executor::table::{KeyRange, Table};

/// Whether a condition narrows the keys of `table` (then it is pushed down
/// as inexact).
pub fn narrows(table: &Table, filter: &Expr) -> bool {
    condition(table, filter).is_some()
}

/// The key ranges that hold every row meeting all `filters` (`None`: the
/// whole table), sorted and not overlapping.
pub fn key_ranges(table: &Table, filters: &[Expr]) -> Option<Vec<KeyRange>> {
    let mut result: Option<Vec<Interval>> = None;
    for f in filters {
        let Some(set) = condition(table, f) else {
            continue;
        };
        result = Some(match result {
            None => set,
            Some(prev) => intersect(&prev, &set),
        });
    }
    result.map(|set| set.into_iter().map(Interval::into_range).collect())
}

/// A range of stored keys, bounds as key prefixes.
#[derive(Debug, Clone, PartialEq)]
struct Interval {
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
}

impl Interval {
    fn into_range(self) -> KeyRange {
        KeyRange {
            lower: self.lower,
            upper: self.upper,
        }
    }

    fn is_empty(&self) -> bool {
        match (&self.lower, &self.upper) {
            (Bound::Included(l), Bound::Included(u)) => l > u,
            (Bound::Included(l), Bound::Excluded(u))
            | (Bound::Excluded(l), Bound::Included(u))
            | (Bound::Excluded(l), Bound::Excluded(u)) => l >= u,
            _ => false,
        }
    }
}

/// The smallest byte string greater than every string starting with `p`
/// (`None`: there is none, `p` is all 0xFF).
fn successor(p: &[u8]) -> Option<Vec<u8>> {
    let mut s = p.to_vec();
    while let Some(last) = s.pop() {
        if last < 0xFF {
            s.push(last + 1);
            return Some(s);
        }
    }
    None
}

/// Every key starting with `p`.
fn prefix_interval(p: Vec<u8>) -> Interval {
    let upper = match successor(&p) {
        Some(s) => Bound::Excluded(s),
        None => Bound::Unbounded,
    };
    Interval {
        lower: Bound::Included(p),
        upper,
    }
}

/// Keys whose leading value is above (`strict`) or at least the one
/// encoded as `p`.
fn above(p: Vec<u8>, strict: bool) -> Interval {
    let lower = if strict {
        match successor(&p) {
            Some(s) => Bound::Included(s),
            // Nothing is above: an empty interval.
            None => {
                return Interval {
                    lower: Bound::Included(p.clone()),
                    upper: Bound::Excluded(p),
                }
            }
        }
    } else {
        Bound::Included(p)
    };
    Interval {
        lower,
        upper: Bound::Unbounded,
    }
}

/// Keys whose leading value is below (`strict`) or at most the one
/// encoded as `p`.
fn below(p: Vec<u8>, strict: bool) -> Interval {
    let upper = if strict {
        Bound::Excluded(p)
    } else {
        match successor(&p) {
            Some(s) => Bound::Excluded(s),
            None => Bound::Unbounded,
        }
    };
    Interval {
        lower: Bound::Unbounded,
        upper,
    }
}

fn max_lower(a: &Bound<Vec<u8>>, b: &Bound<Vec<u8>>) -> Bound<Vec<u8>> {
    match (a, b) {
        (Bound::Unbounded, x) | (x, Bound::Unbounded) => x.clone(),
        (Bound::Included(x), Bound::Included(y)) => Bound::Included(x.max(y).clone()),
        (Bound::Excluded(x), Bound::Excluded(y)) => Bound::Excluded(x.max(y).clone()),
        (Bound::Included(i), Bound::Excluded(e)) | (Bound::Excluded(e), Bound::Included(i)) => {
            if i > e {
                Bound::Included(i.clone())
            } else {
                Bound::Excluded(e.clone())
            }
        }
    }
}

fn min_upper(a: &Bound<Vec<u8>>, b: &Bound<Vec<u8>>) -> Bound<Vec<u8>> {
    match (a, b) {
        (Bound::Unbounded, x) | (x, Bound::Unbounded) => x.clone(),
        (Bound::Included(x), Bound::Included(y)) => Bound::Included(x.min(y).clone()),
        (Bound::Excluded(x), Bound::Excluded(y)) => Bound::Excluded(x.min(y).clone()),
        (Bound::Included(i), Bound::Excluded(e)) | (Bound::Excluded(e), Bound::Included(i)) => {
            if i < e {
                Bound::Included(i.clone())
            } else {
                Bound::Excluded(e.clone())
            }
        }
    }
}

fn intersect(a: &[Interval], b: &[Interval]) -> Vec<Interval> {
    let mut out = Vec::new();
    for x in a {
        for y in b {
            let i = Interval {
                lower: max_lower(&x.lower, &y.lower),
                upper: min_upper(&x.upper, &y.upper),
            };
            if !i.is_empty() {
                out.push(i);
            }
        }
    }
    normalize(out)
}

/// Sorted by lower bound, overlapping intervals merged (so no key is read
/// twice).
fn normalize(mut set: Vec<Interval>) -> Vec<Interval> {
    fn lower_key(b: &Bound<Vec<u8>>) -> (Vec<u8>, u8) {
        match b {
            Bound::Unbounded => (Vec::new(), 0),
            Bound::Included(k) => (k.clone(), 1),
            Bound::Excluded(k) => (k.clone(), 2),
        }
    }
    set.sort_by_key(|i| lower_key(&i.lower));
    let mut out: Vec<Interval> = Vec::new();
    for i in set {
        if let Some(last) = out.last_mut() {
            let overlaps = match (&last.upper, &i.lower) {
                (Bound::Unbounded, _) | (_, Bound::Unbounded) => true,
                (Bound::Included(u), Bound::Included(l)) => l <= u,
                (Bound::Included(u), Bound::Excluded(l)) => l < u,
                (Bound::Excluded(u), Bound::Included(l)) => l < u,
                (Bound::Excluded(u), Bound::Excluded(l)) => l < u,
            };
            if overlaps {
                let upper = match (&last.upper, &i.upper) {
                    (Bound::Unbounded, _) | (_, Bound::Unbounded) => Bound::Unbounded,
                    (a, b) => {
                        if min_upper(a, b) == *a {
                            b.clone()
                        } else {
                            a.clone()
                        }
                    }
                };
                last.upper = upper;
                continue;
            }
        }
        out.push(i);
    }
    out
}

/// The leading key column's data type, if its values order the same way
/// in SQL and in the stored encoding (floats do not: NaN and -0.0).
pub(crate) fn key_type(table: &Table) -> Option<(String, DataType)> {
    let field = table.desc.schema.field(table.leading_key_column());
    let t = field.data_type();
    let ordered = t.is_integer()
        || matches!(
            t,
            DataType::Utf8
                | DataType::LargeUtf8
                | DataType::Utf8View
                | DataType::Boolean
                | DataType::Date32
                | DataType::Date64
                | DataType::Timestamp(_, _)
                | DataType::Decimal128(_, _)
        );
    ordered.then(|| (field.name().clone(), t.clone()))
}

fn is_key_column(e: &Expr, name: &str) -> bool {
    matches!(e, Expr::Column(Column { name: n, .. }) if n == name)
}

/// The encoded prefix of a literal of the key column's type.
fn literal(table: &Table, e: &Expr, t: &DataType) -> Option<Vec<u8>> {
    let Expr::Literal(v, _) = e else {
        return None;
    };
    if v.is_null() || v.data_type() != *t {
        return None;
    }
    let array = v.to_array().ok()?;
    table.leading_key_prefix(&array).ok()
}

/// The keys a condition allows (`None`: it does not narrow them).
fn condition(table: &Table, e: &Expr) -> Option<Vec<Interval>> {
    let (name, t) = key_type(table)?;
    match e {
        Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
            if *op == Operator::And {
                return match (condition(table, left), condition(table, right)) {
                    (Some(a), Some(b)) => Some(intersect(&a, &b)),
                    (Some(a), None) | (None, Some(a)) => Some(a),
                    (None, None) => None,
                };
            }
            if *op == Operator::Or {
                let mut a = condition(table, left)?;
                a.extend(condition(table, right)?);
                return Some(normalize(a));
            }
            let (op, value) = if is_key_column(left, &name) {
                (*op, literal(table, right, &t)?)
            } else if is_key_column(right, &name) {
                (op.swap()?, literal(table, left, &t)?)
            } else {
                return None;
            };
            let i = match op {
                Operator::Eq => prefix_interval(value),
                Operator::Gt => above(value, true),
                Operator::GtEq => above(value, false),
                Operator::Lt => below(value, true),
                Operator::LtEq => below(value, false),
                _ => return None,
            };
            Some(vec![i].into_iter().filter(|i| !i.is_empty()).collect())
        }
        Expr::Between(Between {
            expr,
            negated: false,
            low,
            high,
        }) if is_key_column(expr, &name) => {
            let lo = above(literal(table, low, &t)?, false);
            let hi = below(literal(table, high, &t)?, false);
            Some(intersect(&[lo], &[hi]))
        }
        Expr::InList(list) if !list.negated && is_key_column(&list.expr, &name) => {
            let set = list
                .list
                .iter()
                .map(|v| literal(table, v, &t).map(prefix_interval))
                .collect::<Option<Vec<_>>>()?;
            Some(normalize(set))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(b: &[u8]) -> Vec<u8> {
        b.to_vec()
    }

    #[test]
    fn successor_skips_trailing_ff() {
        assert_eq!(successor(b"ab"), Some(p(b"ac")));
        assert_eq!(successor(&[1, 0xFF]), Some(vec![2]));
        assert_eq!(successor(&[0xFF, 0xFF]), None);
    }

    #[test]
    fn intervals_intersect_and_merge() {
        let a = vec![above(p(b"b"), false)];
        let b = vec![below(p(b"d"), true)];
        let i = intersect(&a, &b);
        assert_eq!(
            i,
            vec![Interval {
                lower: Bound::Included(p(b"b")),
                upper: Bound::Excluded(p(b"d"))
            }]
        );
        // Disjoint: nothing.
        assert!(intersect(&[above(p(b"x"), true)], &[below(p(b"c"), false)]).is_empty());
        // Overlapping points merge; distinct ones stay apart, in order.
        let set = normalize(vec![
            prefix_interval(p(b"m")),
            prefix_interval(p(b"a")),
            prefix_interval(p(b"m")),
        ]);
        assert_eq!(set.len(), 2);
        assert_eq!(set[0].lower, Bound::Included(p(b"a")));
    }
}
