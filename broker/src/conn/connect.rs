//! CONNECT: admission (the policy's `Auth::admit`, the login checked on `Logins` unless the
//! gateway did), the client id, limits, the session attached or resumed, the CONNACK; and
//! what happens when the connection ends (`Opened::close`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Instant;

use kite_mqtt::codec::{ConnAck, Connect, Disconnect, Props, ReasonCode, Will};
use kite_mqtt::{Limits, MqttStr, Packet};
use kite_policy::{Admission, Refused};

use crate::out::Out;
use crate::{Broker, Stats, lock};

use super::{Conn, ConnInfo, End, encode, reason_text, refusal};

/// A client past its CONNECT: the connection's state, its keep-alive and its Will.
pub(super) struct Opened {
    pub(super) conn: Conn,
    pub(super) keep_alive: u16,
    will: Option<Will>,
}

impl Opened {
    /// After the connection's loop: the DISCONNECT that says why (MQTT 5), the session
    /// released and the Will routed — before the transport closes, so a client that sees the
    /// close can rely on both having happened. Returns the client id.
    pub(super) fn close(self, end: &End, out: &mut Out) -> Arc<str> {
        let Self { conn, will, .. } = self;
        if conn.version.is_v5()
            && let Some((code, detail)) = end.disconnect()
        {
            let mut d = Disconnect::new(code);
            if conn.problem_info || matches!(end, End::Violation(..)) {
                d.properties.reason_string = Some(reason_text(&detail));
            }
            encode(Packet::Disconnect(d), conn.version, out);
        }
        let client_id = conn.client_id.clone();
        conn.finish(end, will, Instant::now());
        client_id
    }
}

/// The CONNECT: admission, client id, limits, the session attached (resumed or new), and the
/// CONNACK in `out` — or a refusal in `out` and `None`.
pub(super) async fn open(
    broker: &Broker,
    connect: Connect,
    info: &ConnInfo,
    limits: Limits,
    out: &mut Out,
) -> Option<Opened> {
    let broker = broker.clone();
    let config = broker.config().clone();
    let version = connect.version;

    let (client_id, assigned) = if connect.client_id.is_empty() {
        (broker.assign_client_id(), true)
    } else {
        (Arc::<str>::from(&*connect.client_id), false)
    };
    let admission = match admit(&broker, &connect, &client_id, info).await {
        Ok(admitted) => admitted,
        Err(refused) => {
            tracing::info!(peer = %info.peer, client_id = %connect.client_id, "connection refused: {}", refused.detail);
            let (p, v) = refusal(version, refused.code, &refused.detail);
            encode(p, v, out);
            return None;
        }
    };
    // 3.1.1: an empty client id needs a clean session [MQTT-3.1.3-8].
    if assigned && !version.is_v5() && !connect.clean_start {
        let (p, v) = refusal(
            version,
            ReasonCode::ClientIdentifierNotValid,
            "an empty client id needs clean session",
        );
        encode(p, v, out);
        return None;
    }
    // The login's user name: a token's `sub` with JWT.
    let login_user = admission.user().map(str::to_owned);
    let user: Arc<str> = login_user
        .as_deref()
        .or(connect.username.as_deref())
        .unwrap_or("")
        .into();
    let acl = admission.acl().cloned();
    if let Some(why) = connect
        .will
        .as_ref()
        .and_then(|w| config.topic_beyond_limits(&w.topic))
    {
        Stats::add(&broker.stats().topics_refused, 1);
        let detail = format!("the Will topic is refused: {why}");
        tracing::info!(peer = %info.peer, "connection refused: {detail}");
        // 0x90 Topic Name invalid (3.1.1: 3, Server unavailable — it has no closer code).
        let (p, v) = refusal(version, ReasonCode::TopicNameInvalid, &detail);
        encode(p, v, out);
        return None;
    }
    let expiry = if version.is_v5() {
        connect
            .properties
            .session_expiry_interval
            .unwrap_or(0)
            .min(config.max_session_expiry)
    } else if connect.clean_start {
        0
    } else {
        config.max_session_expiry
    };
    // Only an MQTT 5 client can be told (Server Keep Alive, which it must then use
    // [MQTT-3.2.2-21]); a 3.1.1 client keeps what it asked for — held to a shorter one it
    // cannot know of, it would be cut off between its pings.
    let (keep_alive, server_keep_alive) = if version.is_v5()
        && config.max_keep_alive > 0
        && (connect.keep_alive == 0 || connect.keep_alive > config.max_keep_alive)
    {
        (config.max_keep_alive, true)
    } else {
        (connect.keep_alive, false)
    };
    let id = broker.next_id();
    let owner: Option<Arc<str>> = login_user.as_deref().map(Arc::from);
    let Ok((slot, present)) =
        broker.attach(&client_id, owner.as_ref(), connect.clean_start, id, expiry)
    else {
        // Neither resumed nor ended: a session is its login's, and another user must not take
        // its subscriptions and queue, nor cut its connection off.
        let detail =
            "this client id holds a session of another user; connect with another client id";
        tracing::info!(peer = %info.peer, client_id = %client_id.escape_debug(), "connection refused: {detail}");
        let (p, v) = refusal(version, ReasonCode::NotAuthorized, detail);
        encode(p, v, out);
        return None;
    };
    if let Some(bounds) = info.queue {
        crate::lock(&slot.state).bounds = Some(bounds);
    }
    if present && let Some(acl) = &acl {
        // Resumed under rules that may differ from those it subscribed under (a role changed,
        // or a token with another role claim): what they no longer grant is dropped.
        let refused: Vec<MqttStr> = lock(&slot.state)
            .subscriptions
            .keys()
            .filter(|f| acl.subscribe_refusal(f, &user, &client_id).is_some())
            .cloned()
            .collect();
        for f in refused {
            lock(&slot.state).subscriptions.remove(&f);
            broker.unsubscribe(slot.id, &f);
        }
    }
    Stats::add(&broker.stats().clients_connected, 1);
    if info.transport != "local" {
        broker.report(crate::events::ClientEvent::Connected {
            conn: id,
            client_id: client_id.clone(),
            transport: info.transport,
            keep_alive,
            t: crate::events::now_ms(),
        });
    }
    tracing::debug!(peer = %info.peer, transport = info.transport, client_id = %client_id, present, "client connected");

    let mut ack = ConnAck {
        session_present: present,
        reason: ReasonCode::Success,
        properties: Props::default(),
    };
    if version.is_v5() {
        let p = &mut ack.properties;
        if assigned {
            p.assigned_client_identifier = Some(MqttStr::from(&*client_id));
        }
        if server_keep_alive {
            p.server_keep_alive = Some(keep_alive);
        }
        p.receive_maximum = Some(config.receive_maximum);
        p.maximum_packet_size = Some(config.max_packet_size);
        p.topic_alias_maximum = Some(config.topic_alias_maximum);
    }
    let props = &connect.properties;
    let read_denied = acl
        .as_ref()
        .map(|a| a.read_denials(&user, &client_id))
        .unwrap_or_default();
    let read_allowed = acl
        .as_ref()
        .and_then(|a| a.read_allowances(&user, &client_id));
    let mut conn = Conn {
        broker: broker.clone(),
        id,
        version,
        slot,
        client_id,
        limits,
        connect_expiry_zero: expiry == 0,
        client_receive_max: props.receive_maximum.unwrap_or(u16::MAX),
        client_max_packet: props.maximum_packet_size.unwrap_or(u32::MAX),
        client_alias_max: props.topic_alias_maximum.unwrap_or(0),
        problem_info: props.request_problem_information.unwrap_or(true),
        aliases_in: HashMap::new(),
        aliases_out: HashMap::new(),
        pending: VecDeque::new(),
        committed: broker.committed(),
        acl,
        read_denied,
        read_allowed,
        user,
    };
    // A persistent session is stored before the CONNACK that confirms it.
    let ticket = broker.persist_session(&conn.slot, 0);
    if ticket > 0
        && let Some(mut committed) = broker.committed()
    {
        // Nothing may go out before the CONNACK [MQTT-3.2.0-1]: wait here, not in `pending`.
        let _ = committed.wait_for(|c| *c >= ticket).await.is_ok();
    }
    encode(Packet::ConnAck(ack), version, out);
    let will = connect.will.clone();
    drop(connect);
    if present {
        conn.resend(out, Instant::now());
    }
    Some(Opened {
        conn,
        keep_alive,
        will,
    })
}

/// Checks credentials (unless the gateway did, for its sessions) on the login workers, then
/// admits the CONNECT by the policy (role, Will topic rules), and refuses what the broker does
/// not support.
pub(super) async fn admit(
    broker: &Broker,
    connect: &Connect,
    client_id: &str,
    info: &ConnInfo,
) -> Result<Admission, Refused> {
    let checked = match &info.authenticated {
        Some(login) => Some(login.clone()),
        None if broker.auth().required() => {
            let auth = broker.auth().clone();
            let deadline = broker.config().connect_timeout;
            let checking = broker
                .logins()
                .check_connect(connect, info.peer.ip(), deadline, {
                    move |user, password| auth.check(user, password)
                });
            Some(checking.await?)
        }
        None => None,
    };
    if connect.properties.authentication_method.is_some() {
        return Err(Refused::new(
            ReasonCode::BadAuthenticationMethod,
            "enhanced authentication (AUTH) is not supported; use a user name and password",
        ));
    }
    broker.auth().admit(connect, client_id, checked)
}
