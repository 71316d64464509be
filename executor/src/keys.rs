//! Keys: row encoding of key columns, hashing and key groups.
//!
//! Rows are routed by `hash(key) % MAX_PARALLELISM` to a key group and key
//! groups to subtasks in contiguous ranges. The same function routes rows in
//! exchanges and will locate keyed state, so a restore at another parallelism
//! only reassigns ranges.

use datafusion::arrow::array::ArrayRef;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::row::{OwnedRow, RowConverter, Rows, SortField};

use crate::error::ExecResult;

/// Number of key groups; fixed for the life of a query.
pub const MAX_PARALLELISM: usize = 128;

/// The subtask owning a key group.
pub fn subtask_for_key_group(key_group: usize, parallelism: usize) -> usize {
    key_group * parallelism / MAX_PARALLELISM
}

/// Stable 64-bit hash of bytes (FNV-1a then a finalizer); stable across
/// runs and versions, unlike std's `RandomState`.
pub fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in bytes {
        h ^= *b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h
}

pub fn key_group_of(bytes: &[u8]) -> usize {
    (stable_hash(bytes) % MAX_PARALLELISM as u64) as usize
}

/// Encodes key columns into comparable, hashable byte rows.
pub struct KeyEncoder {
    converter: RowConverter,
}

impl KeyEncoder {
    pub fn new(types: &[DataType]) -> ExecResult<Self> {
        let fields = types.iter().map(|t| SortField::new(t.clone())).collect();
        Ok(KeyEncoder {
            converter: RowConverter::new(fields)?,
        })
    }

    pub fn encode(&self, columns: &[ArrayRef]) -> ExecResult<Rows> {
        Ok(self.converter.convert_columns(columns)?)
    }

    pub fn decode<'a>(
        &self,
        rows: impl IntoIterator<Item = datafusion::arrow::row::Row<'a>>,
    ) -> ExecResult<Vec<ArrayRef>> {
        Ok(self.converter.convert_rows(rows)?)
    }

    pub fn decode_owned<'a>(
        &self,
        rows: impl IntoIterator<Item = &'a OwnedRow>,
    ) -> ExecResult<Vec<ArrayRef>> {
        Ok(self
            .converter
            .convert_rows(rows.into_iter().map(|r| r.row()))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_groups_map_to_contiguous_ranges() {
        for p in 1..=8 {
            let mut last = 0;
            for kg in 0..MAX_PARALLELISM {
                let s = subtask_for_key_group(kg, p);
                assert!(s < p && s >= last);
                last = s;
            }
            assert_eq!(last, p - 1);
        }
    }

    #[test]
    fn hash_is_stable() {
        assert_eq!(stable_hash(b"weir"), stable_hash(b"weir"));
        assert_ne!(stable_hash(b"weir"), stable_hash(b"wear"));
    }
}
