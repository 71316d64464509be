//! Bid rows for connector tests: CSV part files that a `file` source reads,
//! and the same rows in an ordinary table for the batch oracle.

use std::fmt::Write as _;
use std::path::Path;

use tokio_postgres::Client;

use crate::sql::exec;

/// The columns of the bid rows, as in `CREATE TABLE` / `CREATE SOURCE`.
pub const COLUMNS: &str = "auction bigint, price bigint, date_time timestamp";

/// Rows (auction, price, epoch ms), in event-time order, split over
/// `parts` CSV files in `dir` (`part-<p>.csv`, each in event-time order, as
/// the Nexmark generator's part files are).
pub fn write_parts(dir: &Path, parts: usize, rows: usize) -> Vec<(i64, i64, i64)> {
    std::fs::create_dir_all(dir).unwrap();
    let base = 1_735_689_600_000i64; // 2025-01-01 00:00:00
    let all: Vec<(i64, i64, i64)> = (0..rows as i64)
        .map(|i| (i % 13, (i * 37) % 1000, base + i * 70))
        .collect();
    for p in 0..parts {
        let mut csv = String::new();
        for (k, (a, price, ms)) in all.iter().enumerate() {
            if k % parts == p {
                let t = chrono_like(ms / 1000, ms % 1000);
                writeln!(csv, "{a},{price},{t}").unwrap();
            }
        }
        std::fs::write(dir.join(format!("part-{p}.csv")), csv).unwrap();
    }
    all
}

/// `YYYY-MM-DD HH:MM:SS.mmm` for a time on 2025-01-01 (the rows span less
/// than a day), from epoch seconds and milliseconds.
pub fn chrono_like(epoch_s: i64, ms: i64) -> String {
    let day_start = 1_735_689_600i64;
    let s = epoch_s - day_start;
    format!(
        "2025-01-01 {:02}:{:02}:{:02}.{ms:03}",
        s / 3600,
        (s / 60) % 60,
        s % 60
    )
}

/// `CREATE SOURCE bid` over the CSV part files in `dir`, with the Nexmark
/// watermark (4 s behind the newest `date_time`).
pub async fn create_bid_source(client: &Client, dir: &Path) {
    exec(
        client,
        &format!(
            "CREATE SOURCE bid ({COLUMNS}, WATERMARK FOR date_time AS date_time - INTERVAL '4' SECOND) \
             WITH (connector = 'file', path = '{}', format = 'csv')",
            dir.display()
        ),
    )
    .await;
}

/// The same rows in an ordinary table `bid_t`, for the batch oracle.
pub async fn oracle_table(client: &Client, rows: &[(i64, i64, i64)]) {
    exec(client, &format!("CREATE TABLE bid_t ({COLUMNS})")).await;
    for chunk in rows.chunks(500) {
        let values: Vec<String> = chunk
            .iter()
            .map(|(a, p, ms)| format!("({a}, {p}, CAST(to_timestamp_millis({ms}) AS timestamp))"))
            .collect();
        exec(
            client,
            &format!("INSERT INTO bid_t VALUES {}", values.join(", ")),
        )
        .await;
    }
}
