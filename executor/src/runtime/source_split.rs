//! Splitting a table's changes among the subtasks of its source: subtask
//! i keeps the rows whose key (the primary key, or the whole row) falls in
//! a key group it owns, the same key groups an exchange would send it. All
//! changes to one row therefore stay in one lane, in order, and a
//! forward-only pipeline behind the source forms independent lanes
//! (failover regions).
//!
//! After a change of parallelism, the old subtasks had read the log up to
//! different offsets. A new subtask then starts at the lowest offset of
//! the old owners of its key groups and drops, per key group, the changes
//! its old owner had already read (`floors`).

use std::sync::Arc;

use datafusion::arrow::array::BooleanArray;

use crate::chunk::Chunk;
use crate::error::ExecResult;
use crate::keys::{key_group_of, subtask_for_key_group, KeyEncoder, MAX_PARALLELISM};
use crate::table::Table;

pub(crate) struct SourceSplit {
    subtask: usize,
    parallelism: usize,
    key_columns: Vec<usize>,
    encoder: KeyEncoder,
    /// Per key group: changes at log offsets up to this one were read
    /// before a rescale.
    floors: Option<Vec<u64>>,
}

impl SourceSplit {
    /// `None` when subtask 0 of 1 reads everything.
    pub(crate) fn new(
        table: &Arc<Table>,
        subtask: usize,
        parallelism: usize,
        floors: Option<Vec<u64>>,
    ) -> ExecResult<Option<SourceSplit>> {
        if parallelism <= 1 && floors.is_none() {
            return Ok(None);
        }
        let schema = table.schema();
        let key_columns: Vec<usize> = if table.desc.primary_key.is_empty() {
            (0..schema.fields().len()).collect()
        } else {
            table.desc.primary_key.clone()
        };
        let types: Vec<_> = key_columns
            .iter()
            .map(|c| schema.field(*c).data_type().clone())
            .collect();
        Ok(Some(SourceSplit {
            subtask,
            parallelism,
            key_columns,
            encoder: KeyEncoder::new(&types)?,
            floors,
        }))
    }

    /// The rows of `chunk` (read at log `offset`; 0 for the initial
    /// snapshot) that this subtask emits.
    pub(crate) fn keep(&self, chunk: Chunk, offset: u64) -> ExecResult<Chunk> {
        if chunk.is_empty() {
            return Ok(chunk);
        }
        let columns: Vec<_> = self
            .key_columns
            .iter()
            .map(|c| chunk.batch.column(*c).clone())
            .collect();
        let rows = self.encoder.encode(&columns)?;
        let mask: BooleanArray = (0..chunk.num_rows())
            .map(|i| {
                let kg = key_group_of(rows.row(i).as_ref());
                let mine = subtask_for_key_group(kg, self.parallelism) == self.subtask;
                let unread = self.floors.as_ref().is_none_or(|f| offset > f[kg]);
                Some(mine && unread)
            })
            .collect();
        if mask.true_count() == chunk.num_rows() {
            Ok(chunk)
        } else {
            chunk.filter(&mask)
        }
    }
}

/// Where each subtask of a source resumes after a checkpoint taken at
/// `old` parallelism, now running at `new`: (start offset, floors).
pub(crate) fn rescaled_offsets(old_offsets: &[u64], new: usize) -> Vec<(u64, Option<Vec<u64>>)> {
    let old = old_offsets.len();
    if old == new {
        return old_offsets.iter().map(|o| (*o, None)).collect();
    }
    let floors: Vec<u64> = (0..MAX_PARALLELISM)
        .map(|kg| old_offsets[subtask_for_key_group(kg, old)])
        .collect();
    (0..new)
        .map(|s| {
            let start = (0..MAX_PARALLELISM)
                .filter(|kg| subtask_for_key_group(*kg, new) == s)
                .map(|kg| floors[kg])
                .min()
                .unwrap_or(0);
            (start, Some(floors.clone()))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescaled_subtasks_start_at_the_lowest_floor_of_their_key_groups() {
        let same = rescaled_offsets(&[5, 9], 2);
        assert_eq!(same, vec![(5, None), (9, None)]);
        let down = rescaled_offsets(&[5, 9], 1);
        assert_eq!(down.len(), 1);
        assert_eq!(down[0].0, 5);
        let floors = down[0].1.as_ref().unwrap();
        assert_eq!(floors[0], 5);
        assert_eq!(floors[MAX_PARALLELISM - 1], 9);
        let up = rescaled_offsets(&[5, 9], 4);
        assert_eq!(up.iter().map(|u| u.0).collect::<Vec<_>>(), [5, 5, 9, 9]);
    }
}
