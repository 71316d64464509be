//! A full disk over the wire, on a small tmpfs the test mounts on the
//! server's data directory: INSERT and COPY are refused with 53100 and
//! write nothing, checkpoints fail and are counted, reads keep working, and
//! once space is freed everything goes on with results equal to the batch
//! oracle. Mounting needs root, as on the machines the suite runs on.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use futures::{pin_mut, SinkExt};
use tokio::task::block_in_place;
use tokio_postgres::Client;
use weir_sql_tests::sql::{assert_view_matches, eventually, exec, int};
use weir_sql_tests::TestServer;

const SUMS: &str = "SELECT k, count(*) AS n, sum(v) AS s FROM t GROUP BY k";

/// Size of the filesystem; Weir keeps 5% of it in reserve.
const FS_BYTES: u64 = 256 << 20;

fn mount_tmpfs(dir: &Path) -> anyhow::Result<()> {
    let out = Command::new("mount")
        .args(["-t", "tmpfs", "-o", &format!("size={FS_BYTES}")])
        .arg("tmpfs")
        .arg(dir)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "mounting a tmpfs on {} failed (this test needs root): {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Detaches the tmpfs when the test ends (lazily: the server may still
/// hold files open).
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn available(dir: &Path) -> u64 {
    let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid path and a zeroed struct for statvfs to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut st) }, 0);
    st.f_bavail as u64 * st.f_frsize as u64
}

/// Fills the filesystem until `leave` bytes are free.
fn fill(path: &Path, dir: &Path, leave: u64) {
    let free = available(dir);
    assert!(free > leave, "only {free} bytes free");
    let f = std::fs::File::create(path).unwrap();
    f.set_len(0).unwrap();
    use std::io::Write;
    let mut w = std::io::BufWriter::new(f);
    let chunk = vec![7u8; 1 << 20];
    let mut left = free - leave;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        w.write_all(&chunk[..n]).unwrap();
        left -= n as u64;
    }
    w.flush().unwrap();
}

async fn insert(c: &Client, from: i64, to: i64) -> Result<u64, tokio_postgres::Error> {
    c.execute(
        &format!(
            "INSERT INTO t SELECT id, id % 7, id * 2 FROM generate_series({from}, {}) AS g(id)",
            to - 1
        ),
        &[],
    )
    .await
}

fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .map(|d| d.code().code().to_string())
        .unwrap_or_else(|| format!("not a server error: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_writes_and_everything_resumes_when_space_returns() {
    let server = block_in_place(|| TestServer::start_prepared(Vec::new(), mount_tmpfs))
        .unwrap_or_else(|e| panic!("{e:#}"));
    let dir = server.data_dir().to_path_buf();
    let _mount = Unmount(dir.clone());
    let c = server.connect().await.unwrap();
    exec(
        &c,
        "CREATE TABLE t (id bigint PRIMARY KEY, k bigint, v bigint)",
    )
    .await;
    exec(&c, &format!("CREATE MATERIALIZED VIEW mv AS {SUMS}")).await;
    insert(&c, 0, 1000).await.unwrap();
    exec(&c, "FLUSH").await;
    assert_view_matches(&c, "mv", SUMS).await;

    // Down to 1 MiB free: below the reserve (5% of the filesystem).
    let ballast = dir.join("ballast");
    fill(&ballast, &dir, 1 << 20);
    let err = insert(&c, 1000, 1100)
        .await
        .expect_err("INSERT on a full disk");
    assert_eq!(sqlstate(&err), "53100", "{err:?}");
    let msg = err.as_db_error().unwrap().message().to_string();
    assert!(msg.contains("disk full"), "{msg}");
    let sink = c
        .copy_in::<_, Cursor<Vec<u8>>>("COPY t FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    pin_mut!(sink);
    let _ = sink
        .send(Cursor::new(b"5000,1,1\n5001,2,2\n".to_vec()))
        .await;
    let err = sink.finish().await.expect_err("COPY on a full disk");
    assert_eq!(sqlstate(&err), "53100", "{err:?}");
    // Nothing of them was written; reads work.
    assert_eq!(int(&c, "SELECT count(*) FROM t").await, 1000);
    assert_eq!(int(&c, "SELECT count(*) FROM t WHERE id >= 1000").await, 0);
    assert_view_matches(&c, "mv", SUMS).await;
    // The query's checkpoints fail, counted, as a storage error.
    eventually(
        "a checkpoint to fail on the full disk",
        Duration::from_secs(30),
        || async {
            int(
                &c,
                "SELECT count(*) FROM system.checkpoints WHERE query = 'mv' AND status = 'failed' \
             AND failure LIKE '%disk full%'",
            )
            .await
                > 0
        },
    )
    .await;

    // Space returns: writes and checkpoints go on, results are exact.
    std::fs::remove_file(&ballast).unwrap();
    insert(&c, 1000, 1500).await.unwrap();
    exec(&c, "DELETE FROM t WHERE id % 10 = 0").await;
    exec(&c, "FLUSH").await;
    assert_view_matches(&c, "mv", SUMS).await;
    assert_eq!(int(&c, "SELECT count(*) FROM t").await, 1350);
    assert_eq!(
        weir_sql_tests::sql::text(
            &c,
            "SELECT status FROM system.streaming_queries WHERE name = 'mv'"
        )
        .await
        .as_deref(),
        Some("RUNNING")
    );
}
