//! Grouping a chunk's rows by key, shared by the keyed operators: each
//! key's rows once, in order of first use, as one permutation of the chunk
//! (a counting sort) rather than a vector per key.

use datafusion::arrow::row::Rows;
use datafusion::common::HashMap;

/// Groups rows by their key bytes: the first row of each group, groups in
/// order of first use, and each row's group.
pub(crate) fn group_rows(keys: &Rows) -> (Vec<usize>, Vec<u32>) {
    let mut index: HashMap<&[u8], u32> = HashMap::default();
    let mut firsts: Vec<usize> = Vec::new();
    let mut row_group: Vec<u32> = Vec::with_capacity(keys.num_rows());
    for i in 0..keys.num_rows() {
        let g = *index.entry(keys.row(i).data()).or_insert_with(|| {
            firsts.push(i);
            (firsts.len() - 1) as u32
        });
        row_group.push(g);
    }
    (firsts, row_group)
}

/// The rows of a chunk grouped: `perm` lists group 0's inserts, then its
/// deletes, then group 1's, ...; group `g`'s rows are
/// `perm[start[g]..start[g + 1]]`, its inserts the first `inserts[g]`.
#[derive(Debug, Clone)]
pub(crate) struct Layout {
    pub perm: Vec<u32>,
    pub start: Vec<usize>,
    pub inserts: Vec<usize>,
}

impl Layout {
    /// Groups rows `0..row_group.len()` (row `i` in group `row_group[i]`),
    /// keeping their order within a group.
    pub fn new(row_group: &[u32], groups: usize, is_insert: impl Fn(usize) -> bool) -> Layout {
        let mut start = vec![0usize; groups + 1];
        let mut inserts = vec![0usize; groups];
        for (i, g) in row_group.iter().enumerate() {
            start[*g as usize + 1] += 1;
            if is_insert(i) {
                inserts[*g as usize] += 1;
            }
        }
        for g in 0..groups {
            start[g + 1] += start[g];
        }
        let mut next_ins: Vec<usize> = start[..groups].to_vec();
        let mut next_del: Vec<usize> = (0..groups).map(|g| start[g] + inserts[g]).collect();
        let mut perm = vec![0u32; row_group.len()];
        for (i, g) in row_group.iter().enumerate() {
            let next = if is_insert(i) {
                &mut next_ins[*g as usize]
            } else {
                &mut next_del[*g as usize]
            };
            perm[*next] = i as u32;
            *next += 1;
        }
        Layout {
            perm,
            start,
            inserts,
        }
    }

    /// The same groups with only the rows `keep` accepts.
    pub fn filter(&self, keep: impl Fn(usize) -> bool) -> Layout {
        let groups = self.inserts.len();
        let mut perm = Vec::with_capacity(self.perm.len());
        let mut start = Vec::with_capacity(groups + 1);
        let mut inserts = Vec::with_capacity(groups);
        start.push(0);
        for g in 0..groups {
            let (ins, del) = self.rows(g);
            perm.extend(ins.iter().copied().filter(|i| keep(*i as usize)));
            inserts.push(perm.len() - start[g]);
            perm.extend(del.iter().copied().filter(|i| keep(*i as usize)));
            start.push(perm.len());
        }
        Layout {
            perm,
            start,
            inserts,
        }
    }

    /// Group `g`'s inserts and deletes (row indexes in the chunk).
    pub fn rows(&self, g: usize) -> (&[u32], &[u32]) {
        let (start, mid, end) = self.ranges(g);
        (&self.perm[start..mid], &self.perm[mid..end])
    }

    /// Where group `g`'s inserts start, its deletes start, and it ends, in
    /// `perm`.
    pub fn ranges(&self, g: usize) -> (usize, usize, usize) {
        let start = self.start[g];
        (start, start + self.inserts[g], self.start[g + 1])
    }
}
