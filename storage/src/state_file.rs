//! A checksummed file: the format of full state snapshots and of captured
//! channel state. Layout: 8-byte magic, payload, then the payload's length
//! (u64 LE) and CRC-32 (u32 LE). Written to a temporary name, synced and
//! renamed, so a crash leaves either the whole file or none.

use std::io::Write;
use std::path::Path;

use crate::error::{StorageError, StorageResult};

const MAGIC: &[u8; 8] = b"WEIRST01";
const TRAILER: usize = 12;

pub fn write(path: &Path, payload: &[u8]) -> StorageResult<()> {
    let tmp = path.with_extension("tmp");
    let ctx = |what: &str| format!("{what} {}", tmp.display());
    let mut f = std::fs::File::create(&tmp).map_err(|e| StorageError::io(ctx("create"), e))?;
    f.write_all(MAGIC)
        .and_then(|_| f.write_all(payload))
        .and_then(|_| f.write_all(&(payload.len() as u64).to_le_bytes()))
        .and_then(|_| f.write_all(&crc32fast::hash(payload).to_le_bytes()))
        .and_then(|_| f.sync_all())
        .map_err(|e| StorageError::io(ctx("write"), e))?;
    std::fs::rename(&tmp, path)
        .map_err(|e| StorageError::io(format!("rename to {}", path.display()), e))?;
    Ok(())
}

/// Reads and verifies a file written by [`write`].
pub fn read(path: &Path) -> StorageResult<Vec<u8>> {
    let mut bytes =
        std::fs::read(path).map_err(|e| StorageError::io(format!("read {}", path.display()), e))?;
    let corrupt = |why: &str| StorageError::Corrupt(format!("{}: {why}", path.display()));
    if bytes.len() < MAGIC.len() + TRAILER || &bytes[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not a Weir state file (bad header)"));
    }
    let end = bytes.len() - TRAILER;
    let len = u64::from_le_bytes(bytes[end..end + 8].try_into().expect("8 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[end + 8..].try_into().expect("4 bytes"));
    if len != end - MAGIC.len() {
        return Err(corrupt("truncated"));
    }
    if crc32fast::hash(&bytes[MAGIC.len()..end]) != crc {
        return Err(corrupt("checksum mismatch"));
    }
    bytes.truncate(end);
    bytes.drain(..MAGIC.len());
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_detects_damage() {
        let dir = std::env::temp_dir().join(format!("weir-state-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.bin");
        write(&path, b"hello state").unwrap();
        assert_eq!(read(&path).unwrap(), b"hello state");
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(read(&path), Err(StorageError::Corrupt(m)) if m.contains("checksum")));
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert!(read(&path).is_err());
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(read(&path), Err(StorageError::Io { .. })));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
