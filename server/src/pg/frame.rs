//! Reading frontend messages off the socket, and checking them, before
//! pgwire decodes them.
//!
//! pgwire's decoders trust the counts and lengths inside a message: a Bind
//! that declares 1000 parameters and carries none reads past the message
//! (into the next one, or past the buffer: a panic, and the client's
//! socket just closes). So Weir frames messages itself: [`FrameReader`]
//! reads one message by its length word, with a bound on that length, and
//! [`check`] walks its body the way PostgreSQL's `pq_getmsg*` do. pgwire
//! then decodes a buffer holding exactly one message that is known to be
//! well-formed. A malformed message is answered like PostgreSQL answers
//! it (`insufficient data left in message`, SQLSTATE 08P01) and skipped;
//! the session goes on.

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use weir_executor::SqlState;

/// A startup-phase packet (startup, SSL, GSS or cancel request) is at most
/// this long, length word included: PostgreSQL's `MAX_STARTUP_PACKET_LENGTH`.
pub const STARTUP_BYTES_MAX: usize = 10_000;

/// Messages of the types that carry no data of the client's (Describe,
/// Execute, Close, Sync, ...) are at most this long, length word
/// included: PostgreSQL's `PQ_SMALL_MESSAGE_LIMIT`.
pub const SMALL_MESSAGE_BYTES_MAX: usize = 10_000;

/// A CopyData message longer than this is passed on as several, each of
/// at most this many bytes of data, so that a client sending its whole
/// input as one message does not make the server buffer it twice.
pub const COPY_DATA_PIECE_BYTES: usize = 1 << 20;

/// Bytes read from the socket at a time while skipping a message.
const SKIP_CHUNK_BYTES: usize = 64 << 10;

pub const SSL_REQUEST_CODE: i32 = 80877103;
pub const GSSENC_REQUEST_CODE: i32 = 80877104;
pub const CANCEL_REQUEST_CODE: i32 = 80877102;

/// What the reader found next on the socket.
#[derive(Debug)]
pub enum Frame {
    /// One whole message (type byte, length word, body) for pgwire.
    Message(BytesMut),
    /// A message whose body does not parse: skipped.
    Malformed { tag: u8, error: Malformed },
    /// A message longer than the bound: its body was read and dropped.
    TooLarge { tag: u8, len: usize, max: usize },
}

/// Why a message is refused: PostgreSQL's SQLSTATE and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed {
    pub sqlstate: SqlState,
    pub message: String,
}

impl Malformed {
    fn new(sqlstate: SqlState, message: impl Into<String>) -> Self {
        Malformed {
            sqlstate,
            message: message.into(),
        }
    }

    fn protocol(message: impl Into<String>) -> Self {
        Malformed::new(SqlState::PROTOCOL_VIOLATION, message)
    }
}

/// A framing error after which the stream cannot be followed: the
/// connection ends with a FATAL error.
#[derive(Debug)]
pub enum Fatal {
    Io(std::io::Error),
    /// The peer closed the connection inside a message.
    Eof,
    Protocol(String),
}

impl From<std::io::Error> for Fatal {
    fn from(e: std::io::Error) -> Self {
        Fatal::Io(e)
    }
}

/// Reads messages from one connection's socket.
pub struct FrameReader {
    buf: BytesMut,
    message_bytes_max: usize,
    /// Bytes of a long CopyData message still to pass on.
    copy_data_left: usize,
}

impl FrameReader {
    pub fn new(message_bytes_max: usize) -> Self {
        FrameReader {
            buf: BytesMut::with_capacity(8 << 10),
            message_bytes_max,
            copy_data_left: 0,
        }
    }

    /// Reads until `n` bytes are buffered; `false` at a clean end of the
    /// stream before any of them.
    async fn fill<R: AsyncRead + Unpin>(&mut self, io: &mut R, n: usize) -> Result<bool, Fatal> {
        while self.buf.len() < n {
            self.buf.reserve(n - self.buf.len());
            if io.read_buf(&mut self.buf).await? == 0 {
                return if self.buf.is_empty() {
                    Ok(false)
                } else {
                    Err(Fatal::Eof)
                };
            }
        }
        Ok(true)
    }

    /// The next startup-phase packet (no type byte): the whole packet,
    /// length word included. `None` at the end of the stream.
    pub async fn startup_packet<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
    ) -> Result<Option<BytesMut>, Fatal> {
        if !self.fill(io, 4).await? {
            return Ok(None);
        }
        let len = i32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        if len < 8 || len as usize > STARTUP_BYTES_MAX {
            return Err(Fatal::Protocol("invalid length of startup packet".into()));
        }
        let len = len as usize;
        if !self.fill(io, len).await? {
            return Err(Fatal::Eof);
        }
        Ok(Some(self.buf.split_to(len)))
    }

    /// The next message after startup. `None` at the end of the stream.
    pub async fn message<R: AsyncRead + Unpin>(
        &mut self,
        io: &mut R,
    ) -> Result<Option<Frame>, Fatal> {
        if self.copy_data_left > 0 {
            return self.copy_data_piece(io).await.map(Some);
        }
        if !self.fill(io, 5).await? {
            return Ok(None);
        }
        let tag = self.buf[0];
        let len = i32::from_be_bytes([self.buf[1], self.buf[2], self.buf[3], self.buf[4]]);
        if len < 4 {
            return Err(Fatal::Protocol(format!(
                "invalid message length {len} for message type \"{}\"",
                tag.escape_ascii()
            )));
        }
        let body_len = len as usize - 4;
        let max =
            max_message_bytes(tag, self.message_bytes_max).ok_or_else(|| invalid_type(tag))?;
        if tag == b'd' && body_len > COPY_DATA_PIECE_BYTES {
            self.buf.advance(5);
            self.copy_data_left = body_len;
            return self.copy_data_piece(io).await.map(Some);
        }
        if len as usize > max {
            self.buf.advance(5);
            self.skip(io, body_len).await?;
            return Ok(Some(Frame::TooLarge {
                tag,
                len: len as usize,
                max,
            }));
        }
        if !self.fill(io, 5 + body_len).await? {
            return Err(Fatal::Eof);
        }
        let message = self.buf.split_to(5 + body_len);
        Ok(Some(match check(tag, &message[5..]) {
            Ok(()) => Frame::Message(message),
            Err(error) => Frame::Malformed { tag, error },
        }))
    }

    /// The next piece of a long CopyData message, framed as a CopyData
    /// message of its own.
    async fn copy_data_piece<R: AsyncRead + Unpin>(&mut self, io: &mut R) -> Result<Frame, Fatal> {
        let n = self.copy_data_left.min(COPY_DATA_PIECE_BYTES);
        if !self.fill(io, n).await? {
            return Err(Fatal::Eof);
        }
        self.copy_data_left -= n;
        let mut message = BytesMut::with_capacity(5 + n);
        message.put_u8(b'd');
        message.put_i32(4 + n as i32);
        message.extend_from_slice(&self.buf[..n]);
        self.buf.advance(n);
        Ok(Frame::Message(message))
    }

    /// Reads and drops `n` bytes.
    async fn skip<R: AsyncRead + Unpin>(&mut self, io: &mut R, mut n: usize) -> Result<(), Fatal> {
        loop {
            let here = n.min(self.buf.len());
            self.buf.advance(here);
            n -= here;
            if n == 0 {
                return Ok(());
            }
            if !self.fill(io, n.min(SKIP_CHUNK_BYTES)).await? {
                return Err(Fatal::Eof);
            }
        }
    }
}

/// The longest message of type `tag`, length word included; `None` for a
/// type a client never sends.
fn max_message_bytes(tag: u8, message_bytes_max: usize) -> Option<usize> {
    match tag {
        // Query, Parse, Bind, CopyData, CopyFail, password and SASL.
        b'Q' | b'P' | b'B' | b'd' | b'f' | b'p' => Some(message_bytes_max),
        // Describe, Execute, Close, Sync, Flush, CopyDone, Terminate.
        b'D' | b'E' | b'C' | b'S' | b'H' | b'c' | b'X' => {
            Some(SMALL_MESSAGE_BYTES_MAX.min(message_bytes_max))
        }
        _ => None,
    }
}

fn invalid_type(tag: u8) -> Fatal {
    Fatal::Protocol(format!("invalid frontend message type {tag}"))
}

/// The name of a message type, for errors and the log.
pub fn type_name(tag: u8) -> &'static str {
    match tag {
        b'Q' => "Query",
        b'P' => "Parse",
        b'B' => "Bind",
        b'D' => "Describe",
        b'E' => "Execute",
        b'C' => "Close",
        b'S' => "Sync",
        b'H' => "Flush",
        b'd' => "CopyData",
        b'c' => "CopyDone",
        b'f' => "CopyFail",
        b'X' => "Terminate",
        b'p' => "password",
        _ => "unknown",
    }
}

/// Whether a message belongs to the extended query protocol: after an
/// error in one, messages are skipped until Sync.
pub fn is_extended(tag: u8) -> bool {
    matches!(tag, b'P' | b'B' | b'D' | b'E' | b'C' | b'S' | b'H')
}

/// A cursor over a message body, reading as PostgreSQL's `pq_getmsg*` do.
struct Body<'a> {
    rest: &'a [u8],
}

impl<'a> Body<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Malformed> {
        if n > self.rest.len() {
            return Err(Malformed::protocol("insufficient data left in message"));
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    fn u8(&mut self) -> Result<u8, Malformed> {
        Ok(self.take(1)?[0])
    }

    fn i16(&mut self) -> Result<i16, Malformed> {
        let b = self.take(2)?;
        Ok(i16::from_be_bytes([b[0], b[1]]))
    }

    fn i32(&mut self) -> Result<i32, Malformed> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A count: an int16 that must not be negative.
    fn count(&mut self) -> Result<usize, Malformed> {
        let n = self.i16()?;
        usize::try_from(n).map_err(|_| Malformed::protocol("invalid message format"))
    }

    fn cstring(&mut self) -> Result<&'a [u8], Malformed> {
        match self.rest.iter().position(|b| *b == 0) {
            Some(i) => {
                let s = &self.rest[..i];
                self.rest = &self.rest[i + 1..];
                Ok(s)
            }
            None => Err(Malformed::protocol("invalid string in message")),
        }
    }

    fn format_codes(&mut self, n: usize) -> Result<(), Malformed> {
        for _ in 0..n {
            let code = self.i16()?;
            if code != 0 && code != 1 {
                return Err(Malformed::new(
                    SqlState::INVALID_PARAMETER_VALUE,
                    format!("unsupported format code: {code}"),
                ));
            }
        }
        Ok(())
    }

    fn end(&self) -> Result<(), Malformed> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(Malformed::protocol("invalid message format"))
        }
    }
}

/// Checks the body of a message of type `tag`: every count and length
/// inside it must be backed by its bytes, and nothing may follow.
pub fn check(tag: u8, body: &[u8]) -> Result<(), Malformed> {
    let mut b = Body { rest: body };
    match tag {
        b'Q' | b'f' => {
            b.cstring()?;
        }
        b'P' => {
            b.cstring()?;
            b.cstring()?;
            let types = b.count()?;
            b.take(types * 4)?;
        }
        b'B' => {
            b.cstring()?;
            b.cstring()?;
            let formats = b.count()?;
            b.format_codes(formats)?;
            let params = b.count()?;
            if formats > 1 && formats != params {
                return Err(Malformed::protocol(format!(
                    "bind message has {formats} parameter formats but {params} parameters"
                )));
            }
            for _ in 0..params {
                let len = b.i32()?;
                if len == -1 {
                    continue;
                }
                let len = usize::try_from(len)
                    .map_err(|_| Malformed::protocol("insufficient data left in message"))?;
                b.take(len)?;
            }
            let results = b.count()?;
            b.format_codes(results)?;
        }
        b'D' | b'C' => {
            let kind = b.u8()?;
            if kind != b'S' && kind != b'P' {
                let what = if tag == b'D' { "DESCRIBE" } else { "CLOSE" };
                return Err(Malformed::protocol(format!(
                    "invalid {what} message subtype {kind}"
                )));
            }
            b.cstring()?;
        }
        b'E' => {
            b.cstring()?;
            b.i32()?;
        }
        b'S' | b'H' | b'c' | b'X' => {}
        // CopyData and password messages are bytes of any shape.
        _ => return Ok(()),
    }
    b.end()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(params: &[Option<&[u8]>], declared: i16, formats: &[i16]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(b"\0\0");
        b.extend_from_slice(&(formats.len() as i16).to_be_bytes());
        for f in formats {
            b.extend_from_slice(&f.to_be_bytes());
        }
        b.extend_from_slice(&declared.to_be_bytes());
        for p in params {
            match p {
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            }
        }
        b.extend_from_slice(&0i16.to_be_bytes());
        b
    }

    #[test]
    fn well_formed_messages_pass() {
        assert_eq!(check(b'Q', b"SELECT 1\0"), Ok(()));
        assert_eq!(check(b'B', &bind(&[Some(b"42"), None], 2, &[0])), Ok(()));
        assert_eq!(check(b'B', &bind(&[Some(b"1"), None], 2, &[0, 1])), Ok(()));
        let mut parse = b"s1\0SELECT $1\0".to_vec();
        parse.extend_from_slice(&1i16.to_be_bytes());
        parse.extend_from_slice(&23i32.to_be_bytes());
        assert_eq!(check(b'P', &parse), Ok(()));
        assert_eq!(check(b'E', b"\0\0\0\0\0"), Ok(()));
        assert_eq!(check(b'D', b"Sname\0"), Ok(()));
        assert_eq!(check(b'S', b""), Ok(()));
    }

    #[test]
    fn counts_without_their_bytes_are_refused() {
        let insufficient = Err(Malformed::protocol("insufficient data left in message"));
        // 1000 parameters declared, none sent.
        assert_eq!(check(b'B', &bind(&[], 1000, &[])), insufficient);
        // A parameter longer than the message.
        let mut b = bind(&[Some(b"ab")], 1, &[]);
        b[6..10].copy_from_slice(&1_000_000i32.to_be_bytes());
        assert_eq!(check(b'B', &b), insufficient);
        // Parse declaring more parameter types than it carries.
        let mut parse = b"\0SELECT $1\0".to_vec();
        parse.extend_from_slice(&100i16.to_be_bytes());
        parse.extend_from_slice(&23i32.to_be_bytes());
        assert_eq!(check(b'P', &parse), insufficient);
        // Negative counts.
        let mut parse = b"\0SELECT 1\0".to_vec();
        parse.extend_from_slice(&(-1i16).to_be_bytes());
        assert!(check(b'P', &parse).is_err());
        assert_eq!(check(b'E', b"\0\0"), insufficient);
        assert_eq!(check(b'D', b""), insufficient);
    }

    #[test]
    fn strings_formats_and_trailing_bytes() {
        assert_eq!(
            check(b'Q', b"SELECT 1"),
            Err(Malformed::protocol("invalid string in message"))
        );
        assert_eq!(
            check(b'S', b"x"),
            Err(Malformed::protocol("invalid message format"))
        );
        assert_eq!(
            check(
                b'B',
                &bind(&[Some(b"1"), Some(b"2"), Some(b"3")], 3, &[0, 1])
            ),
            Err(Malformed::protocol(
                "bind message has 2 parameter formats but 3 parameters"
            ))
        );
        assert_eq!(
            check(b'B', &bind(&[], 0, &[7])).unwrap_err().sqlstate,
            SqlState::INVALID_PARAMETER_VALUE
        );
        assert!(check(b'D', b"Xname\0").is_err());
    }

    #[tokio::test]
    async fn frames_messages_and_skips_bad_ones() {
        let mut input = Vec::new();
        // A Bind declaring 1000 parameters, then a Sync.
        let bad = bind(&[], 1000, &[]);
        input.push(b'B');
        input.extend_from_slice(&(4 + bad.len() as i32).to_be_bytes());
        input.extend_from_slice(&bad);
        input.extend_from_slice(b"S\0\0\0\x04");
        // A message over the bound.
        input.push(b'Q');
        input.extend_from_slice(&(4 + 100i32).to_be_bytes());
        input.extend_from_slice(&[b'x'; 100]);
        // A long CopyData, passed on in pieces.
        let copy_len = COPY_DATA_PIECE_BYTES + 10;
        input.push(b'd');
        input.extend_from_slice(&(4 + copy_len as i32).to_be_bytes());
        input.extend(std::iter::repeat_n(b'z', copy_len));
        let mut io = &input[..];
        let mut r = FrameReader::new(64);
        match r.message(&mut io).await.unwrap() {
            Some(Frame::Malformed { tag: b'B', error }) => {
                assert_eq!(error.sqlstate, SqlState::PROTOCOL_VIOLATION)
            }
            other => panic!("{other:?}"),
        }
        match r.message(&mut io).await.unwrap() {
            Some(Frame::Message(m)) => assert_eq!(&m[..], b"S\0\0\0\x04"),
            other => panic!("{other:?}"),
        }
        match r.message(&mut io).await.unwrap() {
            Some(Frame::TooLarge {
                tag: b'Q',
                len: 104,
                max: 64,
            }) => {}
            other => panic!("{other:?}"),
        }
        let mut copied = 0;
        for _ in 0..2 {
            match r.message(&mut io).await.unwrap() {
                Some(Frame::Message(m)) => {
                    assert_eq!(m[0], b'd');
                    let len = i32::from_be_bytes([m[1], m[2], m[3], m[4]]) as usize;
                    assert_eq!(len, m.len() - 1);
                    copied += len - 4;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(copied, copy_len);
        assert!(r.message(&mut io).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn unknown_types_and_bad_lengths_are_fatal() {
        let mut io: &[u8] = b"Z\0\0\0\x04";
        assert!(matches!(
            FrameReader::new(64).message(&mut io).await,
            Err(Fatal::Protocol(_))
        ));
        let mut io: &[u8] = b"Q\0\0\0\x02";
        assert!(matches!(
            FrameReader::new(64).message(&mut io).await,
            Err(Fatal::Protocol(_))
        ));
        let mut io: &[u8] = b"\0\0\0\x02";
        assert!(matches!(
            FrameReader::new(64).startup_packet(&mut io).await,
            Err(Fatal::Protocol(_))
        ));
    }
}
