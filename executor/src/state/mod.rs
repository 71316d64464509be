//! Keyed state of operator subtasks.
//!
//! With `state_backend = 'rocksdb'` every stateful operator subtask owns a
//! [`SubtaskStore`]: a RocksDB instance that holds all of its keyed state,
//! while the operator keeps a bounded cache of decoded entries in memory
//! (`state_cache_keys` per map). A key missing from the cache is read from
//! the store; when the cache grows past its bound, entries are evicted (a
//! changed one is written to the store first). At a checkpoint the subtask
//! writes the entries it changed and the checkpointer cuts a RocksDB
//! checkpoint of the store (hard links, so unchanged files are shared).
//! Restoring at the same parallelism links the checkpoint's files back:
//! nothing is loaded until a key is touched.
//!
//! With `state_backend = 'memory'` the operator's maps are all the state,
//! and every checkpoint writes them in full.

mod restore;
mod store;

pub(crate) use restore::{RestoreFrom, StatePlan};
pub use store::SubtaskStore;

use crate::keys::{subtask_for_key_group, MAX_PARALLELISM};

/// Default bound of an operator's in-memory cache, in keys per map.
pub const DEFAULT_STATE_CACHE_KEYS: usize = 1_000_000;

/// Key of an entry in a subtask store: key group (big endian, so a key
/// group's entries are contiguous and a range of key groups is a key range)
/// then the operator's key.
pub fn store_key(key_group: usize, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + key.len());
    k.extend_from_slice(&(key_group as u16).to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// The key groups `[first, end)` that `subtask` of `parallelism` owns.
pub fn key_group_range(subtask: usize, parallelism: usize) -> (usize, usize) {
    let first = (0..MAX_PARALLELISM)
        .find(|kg| subtask_for_key_group(*kg, parallelism) == subtask)
        .unwrap_or(MAX_PARALLELISM);
    let end = (first..MAX_PARALLELISM)
        .find(|kg| subtask_for_key_group(*kg, parallelism) != subtask)
        .unwrap_or(MAX_PARALLELISM);
    (first, end)
}

/// Name of a subtask's state directory inside a checkpoint.
pub fn subtask_dir_name(node: usize, subtask: usize) -> String {
    format!("n{node}-s{subtask}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_group_ranges_cover_every_group_once() {
        for p in 1..=9 {
            let mut next = 0;
            for s in 0..p {
                let (first, end) = key_group_range(s, p);
                assert_eq!(first, next, "parallelism {p} subtask {s}");
                assert!(end > first);
                for kg in first..end {
                    assert_eq!(subtask_for_key_group(kg, p), s);
                }
                next = end;
            }
            assert_eq!(next, MAX_PARALLELISM);
        }
    }
}
