//! The rows of a generator source (`nexmark`, `datagen`) among its
//! subtasks, and what a checkpoint keeps of them.
//!
//! Rows are numbered 0, 1, ... over the whole source; subtask `i` of `p`
//! emits rows `i`, `i + p`, `i + 2p`, ... in that order. Its position `k`
//! says that rows `i + m p` for `m < k` are done: one entry `(p, i) → k`,
//! stored as split id `p << 32 | i` (see [`split_id`]). An entry means the
//! same at any parallelism, so a checkpoint's entries, merged over the
//! subtasks (the larger `k` wins), describe exactly the rows emitted so far
//! whatever the layouts that emitted them.
//!
//! After a change of parallelism a new subtask `j` of `q` goes on from its
//! own entry `(q, j)` (0 if there is none) and skips the rows that the
//! entries of other layouts cover, so nothing is emitted twice. It keeps
//! the entries of other layouts that can still cover one of its rows and
//! reports them with its own; an entry that no subtask reports any more
//! lies wholly below every subtask's own position, so the entries of the
//! current layout cover it. Rows below what an old layout covered for all
//! of its subtasks are jumped over without a look.
//!
//! Every subtask's rows come in ascending order — in event-time order for
//! nexmark and for sequences — also right after a change of parallelism,
//! so one watermark per subtask stays right.

use std::collections::BTreeMap;

use super::SplitPositions;

/// The largest parallelism an entry may have.
const MAX_LAYOUT: u64 = 1 << 16;

/// The split id of entry `(parallelism, subtask)`.
pub(crate) fn split_id(parallelism: u64, subtask: u64) -> u64 {
    (parallelism << 32) | subtask
}

/// Rows done: per parallelism `p`, the position `k` of each subtask `i`
/// (0 where there is no entry).
#[derive(Debug, Clone, Default, PartialEq)]
struct Layouts(BTreeMap<u64, Vec<u64>>);

impl Layouts {
    fn from_positions(positions: &SplitPositions) -> Layouts {
        let mut out = Layouts::default();
        for (&id, &k) in positions {
            let (p, i) = (id >> 32, id & 0xffff_ffff);
            // (A parallelism beyond any Weir allows is not an entry.)
            if i < p && p <= MAX_LAYOUT && k > 0 {
                out.merge(p, i, k);
            }
        }
        out
    }

    fn merge(&mut self, p: u64, i: u64, k: u64) {
        let ks = self.0.entry(p).or_insert_with(|| vec![0; p as usize]);
        ks[i as usize] = ks[i as usize].max(k);
    }

    fn contains(&self, row: u64) -> bool {
        self.0
            .iter()
            .any(|(p, ks)| row / p < ks[(row % p) as usize])
    }

    /// Rows below this are all covered (by one layout's every subtask).
    fn covered_below(&self) -> u64 {
        self.0
            .iter()
            .map(|(p, ks)| {
                ks.iter()
                    .enumerate()
                    .map(|(i, k)| (i as u64).saturating_add(p.saturating_mul(*k)))
                    .min()
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0)
    }

    /// The highest row covered, if any.
    fn last_row(&self) -> Option<u64> {
        self.0
            .iter()
            .flat_map(|(p, ks)| {
                ks.iter()
                    .enumerate()
                    .filter(|(_, k)| **k > 0)
                    .map(move |(i, k)| i as u64 + p * (k - 1))
            })
            .max()
    }

    /// Drops the entries that cover no row at or above `row`.
    fn prune_below(&mut self, row: u64) {
        self.0.retain(|p, ks| {
            for (i, k) in ks.iter_mut().enumerate() {
                if *k > 0 && (i as u64) + *p * (*k - 1) < row {
                    *k = 0;
                }
            }
            ks.iter().any(|k| *k > 0)
        });
    }

    fn positions(&self, out: &mut Vec<(u64, u64)>) {
        for (p, ks) in &self.0 {
            for (i, k) in ks.iter().enumerate() {
                if *k > 0 {
                    out.push((split_id(*p, i as u64), *k));
                }
            }
        }
    }
}

/// Which rows subtask `subtask` of `parallelism` emits next.
#[derive(Debug, Clone)]
pub(crate) struct RowCursor {
    subtask: u64,
    parallelism: u64,
    /// Own position: rows `subtask + m * parallelism` for `m < next` are
    /// done (emitted, or covered by `older`).
    next: u64,
    /// Rows of the source (`None`: no end).
    total: Option<u64>,
    /// Entries of other layouts that may still cover one of the rows.
    older: Layouts,
    /// Catching up: the rows to emit (a newer checkpoint's), and the own
    /// position when it began.
    target: Option<(Layouts, u64)>,
}

impl RowCursor {
    /// The cursor of `subtask` of `parallelism` over `total` rows, after the
    /// rows `from` covers.
    pub(crate) fn new(
        subtask: usize,
        parallelism: usize,
        total: Option<u64>,
        from: &SplitPositions,
    ) -> RowCursor {
        let (subtask, parallelism) = (subtask as u64, parallelism.max(1) as u64);
        let mut c = RowCursor {
            subtask,
            parallelism,
            next: 0,
            total,
            older: Layouts::default(),
            target: None,
        };
        c.take_over(Layouts::from_positions(from));
        c
    }

    /// Continues after what `done` covers too.
    fn take_over(&mut self, mut done: Layouts) {
        if let Some(own) = done.0.remove(&self.parallelism) {
            self.next = self.next.max(own[self.subtask as usize]);
            // The other subtasks of this layout: not this subtask's rows.
        }
        for (p, ks) in done.0 {
            for (i, k) in ks.into_iter().enumerate() {
                if k > 0 {
                    self.older.merge(p, i as u64, k);
                }
            }
        }
        // Rows below what a layout covered for all its subtasks are done.
        let below = self.older.covered_below();
        if below > self.subtask {
            self.next = self
                .next
                .max((below - self.subtask).div_ceil(self.parallelism));
        }
        self.older.prune_below(self.row(self.next));
    }

    fn row(&self, m: u64) -> u64 {
        self.subtask
            .saturating_add(m.saturating_mul(self.parallelism))
    }

    /// Up to `max` next rows into `out` (cleared first); none at the end,
    /// or where a catch-up target holds.
    pub(crate) fn next_rows(&mut self, max: usize, out: &mut Vec<u64>) {
        out.clear();
        let end = self.total.unwrap_or(u64::MAX);
        let hold = self
            .target
            .as_ref()
            .map(|(t, _)| t.last_row().map_or(0, |r| r.saturating_add(1)));
        let limit = end.min(hold.unwrap_or(u64::MAX));
        while out.len() < max {
            let row = self.row(self.next);
            if row >= limit || row == u64::MAX {
                break;
            }
            self.next += 1;
            if self.older.contains(row) {
                continue;
            }
            match &self.target {
                // Catching up: only the target's rows; the others come
                // again once the hold is lifted.
                Some((t, _)) if !t.contains(row) => {}
                _ => out.push(row),
            }
        }
        if self.target.is_none() && !self.older.0.is_empty() {
            self.older.prune_below(self.row(self.next));
        }
    }

    /// Rows of its own emitted (the own position).
    pub(crate) fn position(&self) -> u64 {
        match &self.target {
            Some((_, start)) => *start,
            None => self.next,
        }
    }

    /// The checkpoint's entries: the own one, and those of other layouts
    /// still needed.
    pub(crate) fn positions(&self, out: &mut Vec<(u64, u64)>) {
        out.push((split_id(self.parallelism, self.subtask), self.position()));
        self.older.positions(out);
    }

    /// See [`super::SplitRead::hold_at`].
    pub(crate) fn hold_at(&mut self, target: Option<&SplitPositions>) {
        match target {
            Some(t) => {
                let start = self.position();
                self.target = Some((Layouts::from_positions(t), start));
            }
            None => {
                if let Some((t, start)) = self.target.take() {
                    // Again from where the catch-up began, skipping what it
                    // emitted.
                    self.next = start;
                    self.take_over(t);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn drain(c: &mut RowCursor, max: usize, limit: usize) -> Vec<u64> {
        let mut all = Vec::new();
        let mut rows = Vec::new();
        while all.len() < limit {
            c.next_rows(max.min(limit - all.len()), &mut rows);
            if rows.is_empty() {
                break;
            }
            all.extend(&rows);
        }
        all
    }

    /// The merged positions of `cursors`.
    fn checkpoint(cursors: &[RowCursor]) -> SplitPositions {
        let mut out = SplitPositions::new();
        for c in cursors {
            let mut v = Vec::new();
            c.positions(&mut v);
            for (id, k) in v {
                let e = out.entry(id).or_insert(0);
                *e = (*e).max(k);
            }
        }
        out
    }

    fn layout(p: usize, total: Option<u64>, from: &SplitPositions) -> Vec<RowCursor> {
        (0..p).map(|i| RowCursor::new(i, p, total, from)).collect()
    }

    #[test]
    fn a_subtask_emits_every_pth_row() {
        let mut c = RowCursor::new(1, 3, Some(20), &SplitPositions::new());
        assert_eq!(drain(&mut c, 4, 100), vec![1, 4, 7, 10, 13, 16, 19]);
        let mut c = RowCursor::new(1, 3, Some(20), &[(split_id(3, 1), 5)].into());
        assert_eq!(drain(&mut c, 4, 100), vec![16, 19]);
    }

    /// Rescales 1 → 4 → 2 → 3 → 4 with subtasks stopping at uneven
    /// points: every row exactly once, each subtask's rows ascending.
    #[test]
    fn rescales_emit_every_row_once() {
        let total = 10_000;
        let mut seen = BTreeSet::new();
        let mut from = SplitPositions::new();
        for (p, steps) in [
            (1usize, vec![700usize]),
            (4, vec![13, 500, 0, 260]),
            (2, vec![1000, 7]),
            (3, vec![5, 1200, 333]),
            (4, vec![usize::MAX; 4]),
        ] {
            let mut cursors = layout(p, Some(total), &from);
            for (c, n) in cursors.iter_mut().zip(&steps) {
                let rows = drain(c, 64, *n);
                assert!(rows.windows(2).all(|w| w[0] < w[1]), "ascending");
                for r in rows {
                    assert!(seen.insert(r), "row {r} twice (parallelism {p})");
                }
            }
            from = checkpoint(&cursors);
        }
        assert_eq!(seen.len() as u64, total);
        // At the end only the last layout's entries are left.
        assert!(from.keys().all(|id| id >> 32 == 4), "{from:?}");
    }

    /// Catching up emits exactly the newer checkpoint's rows, holds, then
    /// goes on with the rest.
    #[test]
    fn catch_up_emits_the_targets_rows_then_the_rest() {
        let total = 2_000;
        // Older checkpoint A at parallelism 2, newer B at parallelism 3.
        let mut a = layout(2, Some(total), &SplitPositions::new());
        let mut a_rows = BTreeSet::new();
        for (c, n) in a.iter_mut().zip([100, 40]) {
            a_rows.extend(drain(c, 16, n));
        }
        let a_pos = checkpoint(&a);
        let mut b = layout(3, Some(total), &a_pos);
        let mut b_rows = a_rows.clone();
        for (c, n) in b.iter_mut().zip([90, 10, 200]) {
            b_rows.extend(drain(c, 16, n));
        }
        let b_pos = checkpoint(&b);
        // Restore A at parallelism 4, catching up to B.
        let mut now = layout(4, Some(total), &a_pos);
        let mut caught = BTreeSet::new();
        for c in &mut now {
            c.hold_at(Some(&b_pos));
            caught.extend(drain(c, 16, usize::MAX));
        }
        let want: BTreeSet<u64> = b_rows.difference(&a_rows).copied().collect();
        assert_eq!(caught, want);
        let mut rest = BTreeSet::new();
        for c in &mut now {
            c.hold_at(None);
            for r in drain(c, 16, usize::MAX) {
                assert!(rest.insert(r));
            }
        }
        assert!(rest.is_disjoint(&b_rows));
        assert_eq!(rest.len() + b_rows.len(), total as usize);
    }
}
