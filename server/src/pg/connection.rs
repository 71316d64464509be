//! One client connection: the startup packet, then message after message,
//! each read and checked by [`frame`](super::frame) and handed to pgwire
//! (`process_message`, the dispatch `pgwire::tokio::process_socket` uses)
//! only when it is well-formed. Weir offers no TLS: an SSL or GSSAPI
//! encryption request is answered `N` and the client goes on in plain
//! text, as with PostgreSQL without SSL.

use std::sync::Arc;
use std::time::Duration;

use futures::SinkExt;
use pgwire::api::{ClientInfo, DefaultClient, PgWireConnectionState};
use pgwire::error::{ErrorInfo, PgWireError};
use pgwire::messages::response::{GssEncResponse, SslResponse};
use pgwire::messages::{DecodeContext, PgWireBackendMessage, PgWireFrontendMessage};
use pgwire::tokio::server::{process_error, process_message, PgWireMessageServerCodec};
use tokio::net::TcpStream;
use tokio_util::codec::Framed;
use weir_executor::SqlState;

use super::corked::Corked;
use super::frame::{
    self, Fatal, Frame, FrameReader, CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE, SSL_REQUEST_CODE,
};
use super::{Factory, Prepared};

/// How long a client may take from connecting to the end of startup
/// (pgwire's and PostgreSQL's `authentication_timeout` default is 60 s).
pub const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

type Socket = Framed<Corked, PgWireMessageServerCodec<Prepared>>;

/// Serves one connection until the client leaves or breaks the protocol.
pub async fn serve(tcp: TcpStream, factory: Arc<Factory>) -> std::io::Result<()> {
    let peer = tcp.peer_addr()?;
    let mut socket: Socket = Framed::new(
        Corked::new(tcp),
        PgWireMessageServerCodec::new(DefaultClient::new(peer, false)),
    );
    let result = serve_socket(&mut socket, peer, factory).await;
    // What the last messages answered (a FATAL error, ...) goes out.
    let _ = socket.get_mut().drain().await;
    result
}

async fn serve_socket(
    socket: &mut Socket,
    peer: std::net::SocketAddr,
    factory: Arc<Factory>,
) -> std::io::Result<()> {
    let socket = &mut *socket;
    socket.set_state(PgWireConnectionState::AwaitingStartup);
    let mut reader = FrameReader::new(factory.limits().message_bytes_max);
    let started = tokio::time::Instant::now();
    loop {
        let starting = matches!(
            socket.state(),
            PgWireConnectionState::AwaitingStartup
                | PgWireConnectionState::AuthenticationInProgress
        );
        let next = if starting {
            let deadline = started + STARTUP_TIMEOUT;
            match tokio::time::timeout_at(deadline, next_input(&mut reader, socket)).await {
                Ok(next) => next,
                Err(_) => {
                    tracing::info!(%peer, "connection closed: startup took too long");
                    return Ok(());
                }
            }
        } else {
            next_input(&mut reader, socket).await
        };
        let input = match next {
            Ok(Some(input)) => input,
            Ok(None) | Err(Fatal::Eof) => return Ok(()),
            Err(Fatal::Io(e)) => return Err(e),
            Err(Fatal::Protocol(message)) => {
                tracing::warn!(%peer, "protocol violation, connection closed: {message}");
                let info = ErrorInfo::new(
                    "FATAL".into(),
                    SqlState::PROTOCOL_VIOLATION.code().into(),
                    message,
                );
                return process_error(socket, PgWireError::UserError(Box::new(info)), false).await;
            }
        };
        match input {
            Input::Message(message) => {
                if matches!(message, PgWireFrontendMessage::Terminate(_)) {
                    return Ok(());
                }
                let cancel = matches!(message, PgWireFrontendMessage::CancelRequest(_));
                let extended = match socket.state() {
                    PgWireConnectionState::CopyInProgress(extended) => extended,
                    _ => message.is_extended_query(),
                };
                let handler = factory.handler.clone();
                let result = process_message(
                    message,
                    socket,
                    handler.clone(),
                    handler.clone(),
                    handler.clone(),
                    handler,
                    factory.cancel.clone(),
                )
                .await;
                if cancel {
                    // pgwire closed the socket: a cancel request has a
                    // connection of its own.
                    return Ok(());
                }
                if let Err(e) = result {
                    if matches!(socket.state(), PgWireConnectionState::CopyInProgress(_)) {
                        // The COPY ends with the error; what it read goes.
                        super::abort_copy(&*socket);
                    }
                    process_error(socket, e, extended).await?;
                }
            }
            Input::Refused {
                tag,
                sqlstate,
                message,
                detail,
            } => {
                // One line per refused message, no backtrace: the peer
                // and what was wrong.
                tracing::warn!(%peer, message_type = frame::type_name(tag), "refused a message: {message}");
                if matches!(socket.state(), PgWireConnectionState::AwaitingSync) {
                    // After an error, messages up to Sync are skipped
                    // without an answer.
                    continue;
                }
                let extended = match socket.state() {
                    PgWireConnectionState::CopyInProgress(extended) => {
                        super::abort_copy(&*socket);
                        extended
                    }
                    _ => frame::is_extended(tag),
                };
                let mut info = ErrorInfo::new("ERROR".into(), sqlstate.code().into(), message);
                info.detail = detail;
                process_error(socket, PgWireError::UserError(Box::new(info)), extended).await?;
            }
            Input::Negotiation(code) => {
                let reply = if code == SSL_REQUEST_CODE {
                    PgWireBackendMessage::SslResponse(SslResponse::Refuse)
                } else {
                    PgWireBackendMessage::GssEncResponse(GssEncResponse::Refuse)
                };
                socket.send(reply).await?;
            }
        }
    }
}

/// What the connection loop acts on next.
enum Input {
    /// A well-formed message, decoded by pgwire.
    Message(PgWireFrontendMessage),
    /// A message refused before decoding (malformed, or too large).
    Refused {
        tag: u8,
        sqlstate: SqlState,
        message: String,
        detail: Option<String>,
    },
    /// An SSL or GSSAPI encryption request (its code).
    Negotiation(i32),
}

async fn next_input(reader: &mut FrameReader, socket: &mut Socket) -> Result<Option<Input>, Fatal> {
    if matches!(socket.state(), PgWireConnectionState::AwaitingStartup) {
        let Some(packet) = reader.startup_packet(socket.get_mut()).await? else {
            return Ok(None);
        };
        return startup_input(packet, socket.protocol_version()).map(Some);
    }
    let Some(frame) = reader.message(socket.get_mut()).await? else {
        return Ok(None);
    };
    Ok(Some(match frame {
        Frame::Message(mut bytes) => {
            let mut ctx = DecodeContext::new(socket.protocol_version());
            ctx.awaiting_frontend_ssl = false;
            ctx.awaiting_frontend_startup = false;
            Input::Message(decode(&mut bytes, &ctx)?)
        }
        Frame::Malformed { tag, error } => Input::Refused {
            tag,
            sqlstate: error.sqlstate,
            message: format!("{} (in a {} message)", error.message, frame::type_name(tag)),
            detail: None,
        },
        Frame::TooLarge { tag, len, max } => Input::Refused {
            tag,
            sqlstate: SqlState::PROGRAM_LIMIT_EXCEEDED,
            message: format!("{} message too large", frame::type_name(tag)),
            detail: Some(format!(
                "The message holds {len} bytes; the limit is {max} bytes (message_bytes_max)."
            )),
        },
    }))
}

/// A startup-phase packet: an SSL/GSS request, a cancel request or the
/// startup message.
fn startup_input(
    mut packet: bytes::BytesMut,
    version: pgwire::messages::ProtocolVersion,
) -> Result<Input, Fatal> {
    let code = i32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    if (code == SSL_REQUEST_CODE || code == GSSENC_REQUEST_CODE) && packet.len() == 8 {
        return Ok(Input::Negotiation(code));
    }
    if code == CANCEL_REQUEST_CODE && packet.len() < 16 {
        return Err(Fatal::Protocol("invalid length of cancel request".into()));
    }
    if code != CANCEL_REQUEST_CODE && packet.last() != Some(&0) {
        return Err(Fatal::Protocol(
            "invalid startup packet layout: expected terminator as last byte".into(),
        ));
    }
    let mut ctx = DecodeContext::new(version);
    ctx.awaiting_frontend_ssl = false;
    ctx.awaiting_frontend_startup = true;
    Ok(Input::Message(decode(&mut packet, &ctx)?))
}

/// pgwire's decoding of one whole, checked message.
fn decode(
    bytes: &mut bytes::BytesMut,
    ctx: &DecodeContext,
) -> Result<PgWireFrontendMessage, Fatal> {
    match PgWireFrontendMessage::decode(bytes, ctx) {
        Ok(Some(message)) => Ok(message),
        Ok(None) => Err(Fatal::Protocol("incomplete message".into())),
        Err(e) => Err(Fatal::Protocol(format!("invalid message: {e}"))),
    }
}
