//! Free space on the data directory's filesystem, and the reserve below
//! which Weir refuses writes.
//!
//! RocksDB that meets a full disk while writing its write-ahead log stops
//! taking writes until it is opened again, so Weir refuses a write before
//! that can happen: when the space left would fall under a reserve (5% of
//! the filesystem, at most 256 MiB), an INSERT, COPY or checkpoint fails
//! with SQLSTATE 53100 and writes nothing; reads keep working, and writes
//! succeed again once space is freed.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::error::{StorageError, StorageResult};

/// Space kept free: this share of the filesystem, at most `MAX_RESERVE`.
const RESERVE_SHARE: u64 = 20;
const MAX_RESERVE: u64 = 256 << 20;

/// (available bytes for an unprivileged writer, total bytes) of the
/// filesystem holding `dir`.
pub fn space(dir: &Path) -> std::io::Result<(u64, u64)> {
    let c = CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `c` is a valid NUL-terminated path and `st` a zeroed struct
    // that statvfs fills in.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c.as_ptr(), &mut st) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok((st.f_bavail as u64 * frsize, st.f_blocks as u64 * frsize))
}

/// Watches the space left under a directory.
#[derive(Debug, Clone)]
pub struct DiskSpace {
    dir: PathBuf,
}

impl DiskSpace {
    pub fn new(dir: &Path) -> Self {
        DiskSpace {
            dir: dir.to_path_buf(),
        }
    }

    /// Fails with [`StorageError::DiskFull`] when writing `bytes` more
    /// would leave less than the reserve free.
    pub fn check(&self, bytes: u64) -> StorageResult<()> {
        let Ok((available, total)) = space(&self.dir) else {
            // Unknown: let the write try.
            return Ok(());
        };
        let reserve = (total / RESERVE_SHARE).min(MAX_RESERVE);
        if available < reserve.saturating_add(bytes) {
            return Err(StorageError::DiskFull {
                dir: self.dir.display().to_string(),
                available,
                reserve,
            });
        }
        Ok(())
    }
}
