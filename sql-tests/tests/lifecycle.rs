//! Process lifecycle of the server: readiness log line, clean exit on
//! SIGTERM, restarts on the same data dir after SIGTERM and SIGKILL.

use std::time::{Duration, Instant};

use tokio::task::block_in_place;
use weir_sql_tests::{simple_query_rows, TestServer};

fn wait_for_log(server: &TestServer, needle: &str, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if server.log_contents().contains(needle) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_is_clean_and_data_survives_restarts() {
    let mut server = block_in_place(TestServer::start).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        block_in_place(|| wait_for_log(&server, "listening on", Duration::from_secs(10))),
        "no 'listening on' line in the server log"
    );

    let client = server.connect().await.unwrap();
    client
        .batch_execute("CREATE TABLE life (id int PRIMARY KEY, note text)")
        .await
        .unwrap();
    client
        .batch_execute("INSERT INTO life VALUES (1, 'before stop')")
        .await
        .unwrap();
    drop(client);

    let status = block_in_place(|| server.stop()).unwrap_or_else(|e| panic!("{e:#}"));
    assert!(
        status.success(),
        "weir exited with {status} after SIGTERM; expected a clean exit (status 0)\n{}",
        server.log_tail_block(40)
    );

    block_in_place(|| server.start_again()).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    client
        .batch_execute("INSERT INTO life VALUES (2, 'before kill')")
        .await
        .unwrap();
    drop(client);

    block_in_place(|| server.crash_and_restart()).unwrap_or_else(|e| panic!("{e:#}"));
    let client = server.connect().await.unwrap();
    let rows = simple_query_rows(&client, "SELECT id, note FROM life ORDER BY id")
        .await
        .unwrap();
    assert_eq!(
        rows,
        vec![
            vec![Some("1".to_string()), Some("before stop".to_string())],
            vec![Some("2".to_string()), Some("before kill".to_string())],
        ]
    );
    assert_eq!(server.generation(), 3);
}
