//! Authentication at the gateway, with the broker's own credentials injected per role.

use kite_policy::auth::{Auth, Role, User, hash_password};
use kite_tests::mqtt::{WsClient, connect_v311, connect_with_credentials};
use kite_tests::{Gateway, Mosquitto};

/// A broker that only admits `kite-gw`, and a gateway whose user alice (role operator) is let
/// through with those broker credentials.
fn setup() -> (Mosquitto, Gateway) {
    let broker = Mosquitto::start_with_password("kite-gw", "broker-secret");
    let gateway = Gateway::start_with(&[&broker.url()], None, |c| {
        c.auth = Auth::new(
            vec![User {
                name: "alice".into(),
                password_hash: hash_password(b"s3cret").unwrap(),
                role: Some("operator".into()),
            }],
            vec![Role {
                name: "operator".into(),
                upstream_username: Some("kite-gw".into()),
                upstream_password: Some("broker-secret".into()),
                client_id_prefix: "web-".into(),
                ..Role::default()
            }],
        )
        .unwrap();
    });
    (broker, gateway)
}

fn open(gateway: &Gateway) -> WsClient {
    WsClient::connect(&gateway.ws_url("/mqtt"), Some("mqtt")).unwrap()
}

#[test]
fn a_gateway_user_reaches_a_broker_whose_password_it_never_sees() {
    let (_broker, gateway) = setup();
    for v5 in [false, true] {
        let mut c = open(&gateway);
        c.send(&connect_with_credentials(v5, "tab", "alice", "s3cret"));
        let connack = c.read_packet();
        assert_eq!(connack[0], 0x20);
        assert_eq!(
            connack[3], 0x00,
            "accepted by mosquitto (v5 {v5}): {connack:02x?}"
        );
    }
}

#[test]
fn wrong_password_is_refused_by_the_gateway_with_0x86_or_4() {
    let (_broker, gateway) = setup();
    let mut v5 = open(&gateway);
    v5.send(&connect_with_credentials(true, "tab", "alice", "guess"));
    let connack = v5.read_packet();
    assert_eq!(
        connack[..4],
        [0x20, connack[1], 0x00, 0x86],
        "v5 CONNACK Bad User Name or Password: {connack:02x?}"
    );
    // With a reason string (property 0x1F) saying what was refused, never which part.
    assert_eq!(connack[5], 0x1f, "{connack:02x?}");
    let why = String::from_utf8_lossy(&connack[8..]);
    assert!(why.contains("unknown user or wrong password"), "{why}");
    assert_eq!(u16::from(v5.read_close().unwrap().code), 1008);
    let mut v3 = open(&gateway);
    v3.send(&connect_with_credentials(false, "tab", "mallory", "s3cret"));
    assert_eq!(
        v3.read_packet(),
        [0x20, 0x02, 0x00, 0x04],
        "3.1.1 return code 4"
    );
}

#[test]
fn no_credentials_is_not_authorized_0x87_or_5() {
    let (_broker, gateway) = setup();
    let mut v3 = open(&gateway);
    v3.send(&connect_v311("anonymous"));
    assert_eq!(
        v3.read_packet(),
        [0x20, 0x02, 0x00, 0x05],
        "3.1.1 return code 5"
    );
}

#[test]
fn the_users_own_credentials_do_not_open_the_broker() {
    // Proof that the browser's secret is not the broker's: alice's credentials sent straight
    // to mosquitto (through a gateway without users, which forwards them unchanged) fail.
    let broker = Mosquitto::start_with_password("kite-gw", "broker-secret");
    let plain = Gateway::start(&[&broker.url()], None);
    let mut c = open(&plain);
    c.send(&connect_with_credentials(false, "tab", "alice", "s3cret"));
    let connack = c.read_packet();
    assert_ne!(
        connack[3], 0x00,
        "mosquitto must refuse alice: {connack:02x?}"
    );
}
