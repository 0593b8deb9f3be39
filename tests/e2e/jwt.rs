//! JSON Web Tokens as logins (`[jwt]`): in front of a real mosquitto that only knows the
//! role's credentials, into the embedded broker from a device, and for the publish API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use kite_gateway::config::Config;
use kite_mqtt::codec::{ConnAck, Connect, ReasonCode};
use kite_mqtt::{QoS, Version};
use kite_policy::auth::{Auth, Role};
use kite_policy::jwt::JwtSettings;
use kite_tests::client::{TestClient, Via, publish};
use kite_tests::{Gateway, Mosquitto, TempDir};

const SECRET: &[u8] = b"kite-test-secret-of-at-least-32-bytes";

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join(name)
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A token for `sub` with role `operator`, valid for a minute.
fn claims(sub: &str) -> serde_json::Value {
    serde_json::json!({"sub": sub, "exp": now() + 60, "role": "operator", "iss": "test-idp"})
}

fn hs256(claims: &serde_json::Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET),
    )
    .unwrap()
}

/// Roles: operator (the broker's credentials; publish and subscribe under `users/%u/#`).
/// `[jwt]`: HS256 with `SECRET`, or RS256 with the fixture's public key; issuer `test-idp`.
fn configure(c: &mut Config, dir: &Path, rs256: bool) {
    let key_file = if rs256 {
        fixture("jwt-rs256-public.pem")
    } else {
        let f = dir.join("secret");
        std::fs::write(&f, SECRET).unwrap();
        f
    };
    let jwt = kite_gateway::config::load_jwt(
        &JwtSettings {
            algorithm: if rs256 { "RS256" } else { "HS256" }.into(),
            key_file,
            issuer: Some("test-idp".into()),
            audience: None,
            role_claim: None,
            leeway_secs: Some(0),
        },
        Path::new(""),
    )
    .unwrap();
    c.auth = Auth::new(
        vec![],
        vec![Role {
            name: "operator".into(),
            upstream_username: Some("kite-gw".into()),
            upstream_password: Some("broker-secret".into()),
            acl: kite_policy::acl::Acl {
                publish: Some(vec!["users/%u/#".into()]),
                subscribe: Some(vec!["users/%u/#".into()]),
                ..Default::default()
            },
            ..Role::default()
        }],
    )
    .unwrap()
    .with_jwt(jwt);
}

fn login(version: Version, user: Option<&str>, token: &str) -> Connect {
    Connect {
        version,
        client_id: "tab".into(),
        keep_alive: 60,
        username: user.map(Into::into),
        password: Some(Bytes::copy_from_slice(token.as_bytes())),
        ..Connect::default()
    }
}

fn connack(via: &Via, connect: Connect) -> ConnAck {
    TestClient::connect(via, connect).1
}

/// A valid token is a login: MQTT 5 may send it alone, 3.1.1 with the token's `sub` as user
/// name [MQTT-3.1.2-22]; `sub` is the user of the topic rules (`%u`), and the broker gets the
/// role's credentials.
#[test]
fn a_token_logs_in_as_its_subject() {
    let broker = Mosquitto::start_with_password("kite-gw", "broker-secret");
    let dir = TempDir::new("jwt");
    let gateway = Gateway::start_with(&[&broker.url()], None, |c| configure(c, dir.path(), false));
    let via = Via::Ws(gateway.ws_url("/mqtt"));
    let token = hs256(&claims("alice"));
    let (mut c, ack) = TestClient::connect(&via, login(Version::V5, None, &token));
    assert_eq!(ack.reason, ReasonCode::Success, "{ack:?}");
    c.subscribe("users/alice/#", QoS::AtLeastOnce);
    c.publish(publish("users/alice/x", "mine", QoS::AtMostOnce, 0));
    assert_eq!(&c.recv_publish().payload[..], b"mine");
    assert_eq!(
        c.publish(publish("users/bob/x", "not mine", QoS::AtLeastOnce, 2)),
        ReasonCode::NotAuthorized
    );
    let v3 = connack(&via, login(Version::V3_1_1, Some("alice"), &token));
    assert_eq!(v3.reason, ReasonCode::Success);
    // Someone else's name with alice's token: 3.1.1 return code 4.
    let v3 = connack(&via, login(Version::V3_1_1, Some("bob"), &token));
    assert_eq!(v3.reason, ReasonCode::BadUserNameOrPassword);
}

/// Expired, forged, unsigned, foreign-issuer and unknown-role tokens are refused by the
/// gateway (the broker is never asked), MQTT 5 clients are told why in the reason string.
#[test]
fn bad_tokens_are_refused_with_a_reason() {
    let broker = Mosquitto::start_with_password("kite-gw", "broker-secret");
    let dir = TempDir::new("jwt");
    let gateway = Gateway::start_with(&[&broker.url()], None, |c| configure(c, dir.path(), false));
    let via = Via::Ws(gateway.ws_url("/mqtt"));
    let mut expired = claims("alice");
    expired["exp"] = (now() - 5).into();
    let mut foreign = claims("alice");
    foreign["iss"] = "evil-idp".into();
    let mut admin = claims("alice");
    admin["role"] = "admin".into();
    let forged = encode(
        &Header::new(Algorithm::HS256),
        &claims("alice"),
        &EncodingKey::from_secret(b"a different secret, also 32 bytes long"),
    )
    .unwrap();
    let unsigned = {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
        format!(
            "{}.{}.",
            b64(r#"{"alg":"none","typ":"JWT"}"#),
            b64(&claims("alice").to_string())
        )
    };
    for (token, code, why) in [
        (
            hs256(&expired),
            ReasonCode::BadUserNameOrPassword,
            "expired",
        ),
        (forged, ReasonCode::BadUserNameOrPassword, "signature"),
        (unsigned, ReasonCode::BadUserNameOrPassword, ""),
        (hs256(&foreign), ReasonCode::BadUserNameOrPassword, "issuer"),
        (hs256(&admin), ReasonCode::NotAuthorized, "not a [[role]]"),
    ] {
        let ack = connack(&via, login(Version::V5, None, &token));
        assert_eq!(ack.reason, code, "{ack:?}");
        let reason = ack.properties.reason_string.as_deref().unwrap_or("");
        assert!(reason.contains(why), "{why:?} in {reason:?}");
    }
}

/// RS256: tokens signed with the issuer's private key pass; an HS256 token whose "secret" is
/// the public key (the classic algorithm confusion) does not.
#[test]
fn rs256_tokens_and_no_algorithm_confusion() {
    let broker = Mosquitto::start_with_password("kite-gw", "broker-secret");
    let dir = TempDir::new("jwt");
    let gateway = Gateway::start_with(&[&broker.url()], None, |c| configure(c, dir.path(), true));
    let via = Via::Ws(gateway.ws_url("/mqtt"));
    let private = std::fs::read(fixture("jwt-rs256-private.pem")).unwrap();
    let token = encode(
        &Header::new(Algorithm::RS256),
        &claims("alice"),
        &EncodingKey::from_rsa_pem(&private).unwrap(),
    )
    .unwrap();
    assert_eq!(
        connack(&via, login(Version::V5, None, &token)).reason,
        ReasonCode::Success
    );
    let public = std::fs::read(fixture("jwt-rs256-public.pem")).unwrap();
    let confused = encode(
        &Header::new(Algorithm::HS256),
        &claims("alice"),
        &EncodingKey::from_secret(&public),
    )
    .unwrap();
    let ack = connack(&via, login(Version::V5, None, &confused));
    assert_eq!(ack.reason, ReasonCode::BadUserNameOrPassword);
}

/// A device logs into the embedded broker with a token; the rules use its `sub`.
#[test]
fn devices_log_into_the_embedded_broker_with_a_token() {
    let dir = TempDir::new("jwt");
    let gateway = Gateway::start_with(&[], None, |c| configure(c, dir.path(), false));
    let via = Via::Tcp(gateway.mqtt_addr.unwrap());
    let token = hs256(&claims("sensor-7"));
    let (mut c, ack) = TestClient::connect(&via, login(Version::V5, None, &token));
    assert_eq!(ack.reason, ReasonCode::Success, "{ack:?}");
    // 0x10 No matching subscribers: accepted, nobody listens.
    let reason = c.publish(publish("users/sensor-7/t", "21.5", QoS::AtLeastOnce, 1));
    assert!(!reason.is_error(), "{reason:?}");
    assert_eq!(
        c.publish(publish("users/other/t", "x", QoS::AtLeastOnce, 2)),
        ReasonCode::NotAuthorized
    );
    let mut expired = claims("sensor-7");
    expired["exp"] = (now() - 5).into();
    let ack = connack(
        &via,
        login(Version::V3_1_1, Some("sensor-7"), &hs256(&expired)),
    );
    assert_eq!(ack.reason, ReasonCode::BadUserNameOrPassword);
}

/// `POST /api/v1/publish` with `Authorization: Bearer <token>`: 200 within the rules, 403
/// outside them, 401 with the reason for a bad token.
#[test]
fn the_publish_api_takes_bearer_tokens() {
    let dir = TempDir::new("jwt");
    let gateway = Gateway::start_with(&[], None, |c| configure(c, dir.path(), false));
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let post = |token: &str, topic: &str| {
        let mut r = agent
            .post(&gateway.http_url("/api/v1/publish"))
            .header("Content-Type", "application/json")
            .header("Authorization", &format!("Bearer {token}"))
            .send(&format!(r#"{{"topic":"{topic}","payload":"x","qos":1}}"#))
            .unwrap();
        (r.status().as_u16(), r.body_mut().read_to_string().unwrap())
    };
    let token = hs256(&claims("alice"));
    assert_eq!(post(&token, "users/alice/x").0, 200);
    assert_eq!(post(&token, "users/bob/x").0, 403);
    let mut expired = claims("alice");
    expired["exp"] = (now() - 5).into();
    let (status, body) = post(&hs256(&expired), "users/alice/x");
    assert_eq!(status, 401);
    assert!(body.contains("expired"), "{body}");
}

/// Found attacking 0.9: a valid token without a role claim (or with `"role": null`) logged in
/// unrestricted — `#` and any topic granted. Now it fails closed: it logs in with no
/// permissions, over MQTT (embedded broker and in front of mosquitto) and the publish API.
#[test]
fn a_token_without_a_role_grants_nothing() {
    let dir = TempDir::new("jwt");
    // Anonymous, so that what refuses is the gateway's rules (a password-protected one would
    // refuse the login itself: a token without a role carries no broker credentials).
    let broker = Mosquitto::start();
    let mut roleless = claims("mallory");
    roleless.as_object_mut().unwrap().remove("role");
    let mut null_role = claims("mallory");
    null_role["role"] = serde_json::Value::Null;
    for upstream in [None, Some(broker.url())] {
        let upstreams: Vec<&str> = upstream.iter().map(String::as_str).collect();
        let gateway = Gateway::start_with(&upstreams, None, |c| configure(c, dir.path(), false));
        let mut vias = vec![Via::Ws(gateway.ws_url("/mqtt"))];
        vias.extend(gateway.mqtt_addr.map(Via::Tcp));
        for via in &vias {
            for token in [hs256(&roleless), hs256(&null_role)] {
                let (mut c, ack) = TestClient::connect(via, login(Version::V5, None, &token));
                assert_eq!(ack.reason, ReasonCode::Success, "{ack:?}");
                let suback = c.subscribe_all(1, &["#", "users/mallory/#"], QoS::AtMostOnce);
                assert!(
                    suback.reasons.iter().all(|r| r.is_error()),
                    "{:?}",
                    suback.reasons
                );
                assert_eq!(
                    c.publish(publish("users/mallory/x", "x", QoS::AtLeastOnce, 2)),
                    ReasonCode::NotAuthorized
                );
            }
        }
        let status = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent()
            .post(&gateway.http_url("/api/v1/publish"))
            .header("Content-Type", "application/json")
            .header("Authorization", &format!("Bearer {}", hs256(&roleless)))
            .send(r#"{"topic":"users/mallory/x","payload":"x"}"#)
            .unwrap()
            .status()
            .as_u16();
        assert_eq!(status, 403);
    }
}

/// A page given a short-lived token (issue #22, item 5): kite.js logs in with it as the
/// password; its role publishes only under `users/<sub>/`, the rest is refused with the
/// broker's reason; an expired token is refused at connect.
#[test]
fn a_web_page_logs_in_with_a_token() {
    let dir = TempDir::new("jwt-page");
    let gateway = Gateway::start_with(&[], Some(kite_tests::assets_dir()), |c| {
        configure(c, dir.path(), false);
        c.allowed_origins = vec!["*".into()];
    });
    let token = hs256(&claims("panel-1"));
    let mut expired = claims("panel-1");
    expired["exp"] = (now() - 5).into();
    let expired = hs256(&expired);
    let script = format!(
        r#"
      try {{ await Kite.connect(url, {{ clientId: "old", password: "{expired}" }}); say("expired let in?"); }}
      catch (e) {{ say("expired: " + e.message); }}
      const kite = await Kite.connect(url, {{ clientId: "panel-1", password: "{token}" }});
      await kite.publish("users/panel-1/cmd", "open", {{ qos: 1 }});
      say("own topic published");
      try {{ await kite.publish("users/other/cmd", "open", {{ qos: 1 }}); say("other published?"); }}
      catch (e) {{ say("other: " + e.message); }}
    "#
    );
    let browser = kite_tests::browser::Browser::start();
    browser.goto(&kite_tests::page_server(crate::embed::page(
        &gateway, &script,
    )));
    let lines = crate::embed::wait_for_line(&browser, "own topic published");
    assert!(
        lines.iter().any(|l| l.starts_with("expired: ")
            && l.contains("Bad User Name or Password")
            && l.contains("expired")),
        "{lines:?}"
    );
    let lines = kite_tests::wait_for("the refusal", Duration::from_secs(20), || {
        let l = crate::embed::log(&browser);
        l.iter().any(|x| x.starts_with("other")).then_some(l)
    });
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("other: ") && l.contains("Not authorized")),
        "{lines:?}"
    );
}
