//! Why the gateway closes a browser's session: the WebSocket close code, the MQTT 5 reason
//! code, and the detail for the log. Used by the proxy (`proxy`) and the topic rules (`rules`).

use axum::extract::ws::close_code;
use kite_mqtt::DecodeError;
use kite_mqtt::codec::ReasonCode;

/// Why the gateway closes a browser's session, with the close code and (MQTT 5) reason code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// WebSocket close code.
    pub ws_code: u16,
    /// MQTT 5 DISCONNECT reason code sent before closing (MQTT 5 sessions only).
    pub reason: ReasonCode,
    /// What happened, for the close frame and the log.
    pub detail: String,
}

impl Violation {
    /// A text frame: MQTT over WebSocket uses binary frames only [MQTT-6.0.0-1].
    pub(crate) fn text_frame() -> Self {
        Self {
            ws_code: close_code::UNSUPPORTED,
            reason: ReasonCode::ProtocolError,
            detail: "MQTT over WebSocket uses binary frames only [MQTT-6.0.0-1]".into(),
        }
    }

    pub(crate) fn protocol(detail: impl Into<String>) -> Self {
        Self {
            ws_code: close_code::PROTOCOL,
            reason: ReasonCode::ProtocolError,
            detail: detail.into(),
        }
    }

    /// How a WebSocket stream the browser broke ends its session: a frame or message over
    /// the size limit closes with 1009 (MQTT 5: DISCONNECT 0x95 first), one the WebSocket
    /// protocol forbids (a bad opcode, a length with its top bit set, a fragment where none
    /// may be, ...) with 1002 (0x81); `None`: the connection itself failed (nothing to say).
    pub(crate) fn from_ws_error(e: &(dyn std::error::Error + 'static)) -> Option<Self> {
        use tokio_tungstenite::tungstenite::Error as WsError;
        let mut cur = Some(e);
        while let Some(err) = cur {
            match err.downcast_ref::<WsError>() {
                Some(WsError::Capacity(c)) => {
                    return Some(Self {
                        ws_code: close_code::SIZE,
                        reason: ReasonCode::PacketTooLarge,
                        detail: format!("the browser's WebSocket frame is too large: {c}"),
                    });
                }
                Some(WsError::Protocol(p)) => {
                    return Some(Self {
                        ws_code: close_code::PROTOCOL,
                        reason: ReasonCode::MalformedPacket,
                        detail: format!("WebSocket protocol error from the browser: {p}"),
                    });
                }
                Some(WsError::Utf8(_)) => return Some(Self::text_frame()),
                Some(_) => return None,
                None => cur = err.source(),
            }
        }
        None
    }

    pub(crate) fn from_decode(e: &DecodeError) -> Self {
        match e {
            DecodeError::PacketTooLarge { .. } => Self {
                ws_code: close_code::SIZE,
                reason: ReasonCode::PacketTooLarge,
                detail: e.to_string(),
            },
            DecodeError::TooManyUserProperties { .. } => Self {
                ws_code: close_code::POLICY,
                reason: ReasonCode::QuotaExceeded,
                detail: format!("{e} ([limits] max_user_properties)"),
            },
            _ => Self {
                ws_code: close_code::PROTOCOL,
                reason: ReasonCode::MalformedPacket,
                detail: format!("malformed packet: {e}"),
            },
        }
    }
}
