//! One statement or message must not take the server down: each case gets
//! a clear error with its SQLSTATE, and another session (and the same
//! one, where the protocol allows) keeps working afterwards.

use std::io::Cursor;
use std::time::Duration;

use futures::{pin_mut, SinkExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::block_in_place;
use tokio_postgres::{Client, NoTls};
use weir_sql_tests::TestServer;

/// Far longer than any case takes on a loaded machine; only there so that
/// a regression fails the test instead of hanging it.
const GUARD: Duration = Duration::from_secs(300);

fn start(args: Vec<String>) -> TestServer {
    block_in_place(|| TestServer::start_with_args(args)).unwrap_or_else(|e| panic!("{e:#}"))
}

async fn count(client: &Client, table: &str) -> i64 {
    client
        .query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

/// A fresh session answers a query.
async fn other_session_works(server: &TestServer) {
    let other = server.connect().await.expect("a new session connects");
    let n: i64 = other
        .query_one("SELECT count(*) FROM (VALUES (1), (2)) AS t(x)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

/// The SQLSTATE and message of a failed statement.
fn db_error(e: &tokio_postgres::Error) -> (String, String) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("expected an error from the server, got: {e:?}"));
    (db.code().code().to_string(), db.message().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_refuse_to_build_huge_values() {
    let server = start(Vec::new());
    let client = server.connect().await.unwrap();
    for sql in [
        "SELECT repeat('x', 2147483647)",
        "SELECT lpad('x', 2147483647)",
        "SELECT rpad('x', 2147483647, 'ab')",
        // Over a column: the second row is the huge one.
        "SELECT length(repeat('x', n)) FROM (VALUES (1), (2147483647)) AS t(n)",
        // Nested: each step is checked.
        "SELECT repeat(repeat('x', 100000), 100000)",
        // 16 GiB of integers.
        "SELECT cardinality(array_repeat(1, 2147483647))",
    ] {
        let err = tokio::time::timeout(GUARD, client.simple_query(sql))
            .await
            .unwrap_or_else(|_| panic!("{sql}: no answer"))
            .expect_err(sql);
        assert_eq!(
            db_error(&err),
            ("54000".into(), "requested length too large".into()),
            "{sql}"
        );
    }
    // The same session goes on, and values below the bound are built.
    let n: i32 = client
        .query_one("SELECT length(repeat('ab', 1000000))", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2_000_000);
    other_session_works(&server).await;
}

/// Sends cancel requests until the query returns: one sent before the
/// query started is a no-op, so this does not depend on timing.
async fn cancel_until_done(client: &Client, sql: &str) {
    let token = client.cancel_token();
    let canceller = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let _ = token.cancel_query(NoTls).await;
        }
    });
    let result = tokio::time::timeout(GUARD, client.simple_query(sql)).await;
    canceller.abort();
    let err = result
        .unwrap_or_else(|_| panic!("{sql}: the cancel request did not stop it"))
        .expect_err(sql);
    assert_eq!(db_error(&err).0, "57014", "{sql}: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_long_ad_hoc_queries() {
    let server = start(Vec::new());
    let client = server.connect().await.unwrap();
    for sql in [
        // The filters keep the counts from being read off the inputs'
        // statistics.
        "SELECT count(*) FROM generate_series(1, 10000000000) AS t(x) WHERE x % 7 = 3",
        "SELECT count(*) FROM generate_series(1, 1000000) AS a(x), \
         generate_series(1, 1000000) AS b(y) WHERE a.x % 7 <> b.y % 5",
    ] {
        cancel_until_done(&client, sql).await;
        let rows = client.simple_query("SELECT 1").await.unwrap();
        assert!(!rows.is_empty());
    }
    other_session_works(&server).await;
}

/// COPY FROM STDIN in CSV of `data` into `table`.
async fn copy_csv(
    client: &Client,
    table: &str,
    data: Vec<u8>,
) -> Result<u64, tokio_postgres::Error> {
    let sink = client
        .copy_in::<_, Cursor<Vec<u8>>>(&format!("COPY {table} FROM STDIN WITH (FORMAT csv)"))
        .await?;
    pin_mut!(sink);
    // The server may refuse the input before it has all of it; the error
    // comes with `finish`.
    let _ = sink.send(Cursor::new(data)).await;
    sink.finish().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_refuses_an_unterminated_quote() {
    let server = start(Vec::new());
    let client = server.connect().await.unwrap();
    client
        .batch_execute("CREATE TABLE t (id int, s text)")
        .await
        .unwrap();
    let err = copy_csv(&client, "t", b"1,\"abc\n2,x\n".to_vec())
        .await
        .expect_err("an unterminated quote");
    assert_eq!(
        db_error(&err),
        ("22P04".into(), "unterminated CSV quoted field".into())
    );
    let context = err.as_db_error().and_then(|d| d.where_()).unwrap_or("");
    assert!(context.starts_with("COPY t, line 1"), "{context}");
    assert_eq!(count(&client, "t").await, 0);
    // A quoted newline is data, and the session copies again.
    let n = copy_csv(&client, "t", b"1,\"a\nb\"\n2,x\n".to_vec())
        .await
        .unwrap();
    assert_eq!(n, 2);
    let s: String = client
        .query_one("SELECT s FROM t WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(s, "a\nb");
    other_session_works(&server).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weir.toml");
    std::fs::write(
        &config,
        "copy_line_bytes_max = 65536\ncopy_input_bytes_max = 4194304\n",
    )
    .unwrap();
    let server = start(vec!["--config".into(), config.display().to_string()]);
    let client = server.connect().await.unwrap();
    client
        .batch_execute("CREATE TABLE t (id int, s text)")
        .await
        .unwrap();

    // One line of 8 MB: refused while it arrives.
    let mut line = b"1,".to_vec();
    line.resize(8 << 20, b'x');
    line.push(b'\n');
    let err = copy_csv(&client, "t", line).await.expect_err("a long line");
    assert_eq!(
        db_error(&err),
        ("54000".into(), "COPY line too long".into())
    );
    let detail = err.as_db_error().and_then(|d| d.detail()).unwrap_or("");
    assert!(detail.contains("copy_line_bytes_max"), "{detail}");
    assert_eq!(count(&client, "t").await, 0);

    // Short lines, 16 MB in all: over what a COPY may hold.
    let many: Vec<u8> = (0..400_000)
        .flat_map(|i| format!("{i},{}\n", "y".repeat(32)).into_bytes())
        .collect();
    let err = copy_csv(&client, "t", many)
        .await
        .expect_err("too much input");
    assert_eq!(
        db_error(&err),
        ("54000".into(), "COPY input too large".into())
    );
    let detail = err.as_db_error().and_then(|d| d.detail()).unwrap_or("");
    assert!(detail.contains("copy_input_bytes_max"), "{detail}");
    assert_eq!(count(&client, "t").await, 0);

    // The same session copies what fits.
    let n = copy_csv(&client, "t", b"1,a\n2,b\n3,c\n".to_vec())
        .await
        .unwrap();
    assert_eq!(n, 3);
    assert_eq!(count(&client, "t").await, 3);
    other_session_works(&server).await;
}

/// A raw protocol 3.0 session.
struct Raw {
    stream: TcpStream,
}

impl Raw {
    async fn connect(server: &TestServer) -> Raw {
        let stream = TcpStream::connect((server.host(), server.port()))
            .await
            .unwrap();
        let mut raw = Raw { stream };
        let mut body = 196608i32.to_be_bytes().to_vec();
        body.extend_from_slice(b"user\0weir\0database\0weir\0\0");
        let mut packet = ((body.len() + 4) as i32).to_be_bytes().to_vec();
        packet.extend_from_slice(&body);
        raw.stream.write_all(&packet).await.unwrap();
        raw.until_ready().await;
        raw
    }

    async fn send(&mut self, tag: u8, body: &[u8]) {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        m.extend_from_slice(body);
        self.stream.write_all(&m).await.unwrap();
    }

    /// The next backend message: its type and body; `None` if the server
    /// closed the connection.
    async fn next(&mut self) -> Option<(u8, Vec<u8>)> {
        let mut head = [0u8; 5];
        tokio::time::timeout(GUARD, self.stream.read_exact(&mut head))
            .await
            .expect("no answer")
            .ok()?;
        let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len - 4];
        self.stream.read_exact(&mut body).await.ok()?;
        Some((head[0], body))
    }

    /// Messages up to ReadyForQuery, which ends the list.
    async fn until_ready(&mut self) -> Vec<(u8, Vec<u8>)> {
        let mut out = Vec::new();
        loop {
            let m = self
                .next()
                .await
                .unwrap_or_else(|| panic!("connection closed after {:?}", tags(&out)));
            let ready = m.0 == b'Z';
            out.push(m);
            if ready {
                return out;
            }
        }
    }
}

fn tags(messages: &[(u8, Vec<u8>)]) -> String {
    messages.iter().map(|m| m.0 as char).collect()
}

/// The SQLSTATE field of an ErrorResponse body.
fn sqlstate(body: &[u8]) -> String {
    body.split(|b| *b == 0)
        .find_map(|f| f.strip_prefix(b"C"))
        .map(|c| String::from_utf8_lossy(c).into_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_messages_get_a_protocol_error() {
    let server = start(Vec::new());
    let mut raw = Raw::connect(&server).await;

    // A Bind declaring 1000 parameters with no data, then Sync.
    let mut bind = b"\0\0".to_vec();
    bind.extend_from_slice(&0i16.to_be_bytes());
    bind.extend_from_slice(&1000i16.to_be_bytes());
    // A Parse declaring 100 parameter types and carrying one.
    let mut parse = b"\0SELECT $1\0".to_vec();
    parse.extend_from_slice(&100i16.to_be_bytes());
    parse.extend_from_slice(&23i32.to_be_bytes());
    // A Bind with two format codes for three parameters (pgwire indexes
    // the codes by parameter).
    let mut formats = b"\0\0".to_vec();
    formats.extend_from_slice(&2i16.to_be_bytes());
    formats.extend_from_slice(&[0, 0, 0, 1]);
    formats.extend_from_slice(&3i16.to_be_bytes());
    for _ in 0..3 {
        formats.extend_from_slice(&(-1i32).to_be_bytes());
    }
    formats.extend_from_slice(&0i16.to_be_bytes());
    let cases = [(b'B', bind), (b'P', parse), (b'B', formats)];
    for (tag, body) in &cases {
        raw.send(*tag, body).await;
        raw.send(b'S', b"").await;
        let answer = raw.until_ready().await;
        assert_eq!(tags(&answer), "EZ", "{}", *tag as char);
        assert_eq!(sqlstate(&answer[0].1), "08P01");
    }
    // The session itself goes on.
    raw.send(b'Q', b"SELECT 41 + 1\0").await;
    let answer = raw.until_ready().await;
    assert_eq!(tags(&answer), "TDCZ");
    assert!(answer[1].1.ends_with(b"42"));
    other_session_works(&server).await;

    // One short line per refused message, no panic.
    let log = server.log_contents();
    assert!(!log.contains("panicked"), "{log}");
    assert_eq!(
        log.matches("refused a message").count(),
        cases.len(),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_framing_closes_with_a_fatal_error() {
    let server = start(Vec::new());
    // A message type no client sends: the stream cannot be followed.
    let mut raw = Raw::connect(&server).await;
    raw.send(b'!', b"junk").await;
    let (tag, body) = raw.next().await.expect("an error before closing");
    assert_eq!(tag, b'E');
    assert_eq!(sqlstate(&body), "08P01");
    // A length word below its own size.
    let mut raw = Raw::connect(&server).await;
    raw.stream.write_all(b"Q\0\0\0\x01").await.unwrap();
    let (tag, body) = raw.next().await.expect("an error before closing");
    assert_eq!(tag, b'E');
    assert_eq!(sqlstate(&body), "08P01");
    other_session_works(&server).await;
    assert!(!server.log_contents().contains("panicked"));
}
