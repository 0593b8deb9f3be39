//! Carrying one browser session between its WebSocket and its broker connection.
//!
//! Today this is a byte pipe with the WebSocket rules of MQTT (binary frames only; packets may
//! span frames and frames may hold several packets, so bytes are forwarded as they come).
//! Backpressure is end to end: a frame is read only after the previous one was written to the
//! broker, and the broker is read only after the previous frame went to the browser, so memory
//! per session is bounded by one read buffer and one in-flight frame each way.

use axum::extract::ws::{CloseFrame, Message, close_code};
use bytes::BytesMut;
use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Bytes read from the broker at most per WebSocket frame sent to the browser.
pub const READ_CHUNK: usize = 64 * 1024;

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The browser closed the WebSocket (or it dropped).
    Browser,
    /// The broker closed the TCP connection.
    Broker,
    /// The browser sent a text frame, which MQTT forbids ([MQTT-6.0.0-1]).
    TextFrame,
    /// Reading or writing failed.
    Error(String),
}

/// Forwards bytes both ways until one side ends, then closes the other side with a reason.
pub async fn pump<Tx, Rx, E, B>(mut ws_tx: Tx, mut ws_rx: Rx, broker: B) -> End
where
    Tx: Sink<Message> + Unpin,
    Tx::Error: std::fmt::Display,
    Rx: Stream<Item = Result<Message, E>> + Unpin,
    E: std::fmt::Display,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let (mut broker_rd, mut broker_wr) = tokio::io::split(broker);
    let end = {
        let up = async {
            while let Some(msg) = ws_rx.next().await {
                match msg {
                    Ok(Message::Binary(bytes)) => {
                        if let Err(e) = broker_wr.write_all(&bytes).await {
                            return End::Error(format!("writing to the broker: {e}"));
                        }
                    }
                    Ok(Message::Text(_)) => return End::TextFrame,
                    Ok(Message::Close(_)) => return End::Browser,
                    Ok(Message::Ping(_) | Message::Pong(_)) => {}
                    Err(e) => return End::Error(format!("reading from the browser: {e}")),
                }
            }
            End::Browser
        };
        let down = async {
            let mut buf = BytesMut::with_capacity(READ_CHUNK);
            loop {
                buf.reserve(READ_CHUNK);
                match broker_rd.read_buf(&mut buf).await {
                    Ok(0) => return End::Broker,
                    Ok(_) => {
                        let frame = Message::Binary(buf.split().freeze());
                        if let Err(e) = ws_tx.send(frame).await {
                            return End::Error(format!("writing to the browser: {e}"));
                        }
                    }
                    Err(e) => return End::Error(format!("reading from the broker: {e}")),
                }
            }
        };
        tokio::select! {
            end = up => end,
            end = down => end,
        }
    };
    let close = match &end {
        End::Browser => None,
        End::Broker => Some((close_code::NORMAL, "the broker closed the connection")),
        End::TextFrame => Some((
            close_code::UNSUPPORTED,
            "MQTT over WebSocket uses binary frames only [MQTT-6.0.0-1]",
        )),
        End::Error(_) => Some((close_code::ERROR, "connection to the broker failed")),
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        let _ = ws_tx.send(Message::Close(Some(frame))).await;
    }
    let _ = ws_tx.close().await;
    let _ = broker_wr.shutdown().await;
    end
}

/// Closes a WebSocket that cannot be served, telling the browser why (code 1011).
pub async fn refuse<Tx>(mut ws_tx: Tx, reason: &'static str)
where
    Tx: Sink<Message> + Unpin,
{
    let frame = CloseFrame {
        code: close_code::ERROR,
        reason: reason.into(),
    };
    let _ = ws_tx.send(Message::Close(Some(frame))).await;
    let _ = ws_tx.close().await;
}
