//! TLS termination: `wss://` MQTT and `https://` through the gateway, and certificate reload.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use kite_gateway::tls::TlsFiles;
use kite_tests::mqtt::connect_v311;
use kite_tests::{Gateway, Mosquitto, TempDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

/// A self-signed certificate for localhost, written as PEM files.
fn certificate(dir: &TempDir, name: &str) -> (TlsFiles, CertificateDer<'static>) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let files = TlsFiles {
        cert: dir.path().join(format!("{name}.crt")),
        key: dir.path().join(format!("{name}.key")),
    };
    std::fs::write(&files.cert, ck.cert.pem()).unwrap();
    std::fs::write(&files.key, ck.signing_key.serialize_pem()).unwrap();
    (files, ck.cert.der().clone())
}

/// A TLS connection to the gateway trusting `cert` only.
async fn tls_connect(
    gateway: &Gateway,
    cert: &CertificateDer<'static>,
) -> Result<TlsStream<TcpStream>, std::io::Error> {
    let mut roots = RootCertStore::empty();
    roots.add(cert.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(gateway.addr).await?;
    TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_and_https_are_served_and_the_certificate_reloads() {
    let broker = Mosquitto::start();
    let dir = TempDir::new("tls");
    let (files, first) = certificate(&dir, "live");
    let gateway = Gateway::start_with(&[&broker.url()], None, |c| c.tls = Some(files.clone()));

    // MQTT over wss:// to mosquitto.
    let tls = tls_connect(&gateway, &first).await.unwrap();
    let mut request = format!("wss://localhost:{}/mqtt", gateway.addr.port())
        .into_client_request()
        .unwrap();
    request
        .headers_mut()
        .insert("Sec-WebSocket-Protocol", "mqtt".parse().unwrap());
    let (mut ws, _) = tokio_tungstenite::client_async(request, tls).await.unwrap();
    ws.send(Message::binary(connect_v311("kite-tls")))
        .await
        .unwrap();
    match ws.next().await {
        Some(Ok(Message::Binary(b))) => assert_eq!(&b[..], [0x20, 0x02, 0x00, 0x00]),
        other => panic!("{other:?}"),
    }

    // https:// for the rest.
    let mut https = tls_connect(&gateway, &first).await.unwrap();
    https
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    https.read_to_string(&mut answer).await.unwrap();
    assert!(
        answer.starts_with("HTTP/1.1 200") && answer.ends_with("ok\n"),
        "{answer}"
    );

    // A new certificate in the same files, then a reload: new connections get it.
    let (renewed, second) = certificate(&dir, "next");
    std::fs::copy(&renewed.cert, &files.cert).unwrap();
    std::fs::copy(&renewed.key, &files.key).unwrap();
    let tls = gateway.state().tls().unwrap();
    tls.reload().unwrap();
    let conn = tls_connect(&gateway, &second).await.unwrap();
    assert_eq!(conn.get_ref().1.peer_certificates().unwrap()[0], second);
    assert!(
        tls_connect(&gateway, &first).await.is_err(),
        "the old certificate is no longer served"
    );

    // A broken file: the reload is refused with the reason, the current certificate stays.
    std::fs::write(&files.key, "not a key").unwrap();
    let err = tls.reload().unwrap_err().to_string();
    assert!(
        err.contains("private key") && err.contains(files.key.to_str().unwrap()),
        "{err}"
    );
    assert!(tls_connect(&gateway, &second).await.is_ok());
}

#[test]
fn bad_certificate_files_say_what_is_wrong() {
    let dir = TempDir::new("tls-bad");
    let (good, _) = certificate(&dir, "good");
    let missing = TlsFiles {
        cert: dir.path().join("nope.crt"),
        key: good.key.clone(),
    };
    let err = kite_gateway::tls::load(&missing).unwrap_err().to_string();
    assert!(
        err.contains("certificate") && err.contains("nope.crt"),
        "{err}"
    );
    let (other, _) = certificate(&dir, "other");
    let mismatched = TlsFiles {
        cert: good.cert.clone(),
        key: other.key,
    };
    let err = kite_gateway::tls::load(&mismatched)
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot be used together"), "{err}");
}

/// PEM files of a private CA, a server certificate for localhost and a client certificate,
/// both signed by it; relative names in `dir`.
pub(crate) fn private_pki(dir: &TempDir) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Kite test CA");
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    std::fs::write(dir.path().join("ca.crt"), ca.pem()).unwrap();
    for (name, sans) in [("server", vec!["localhost".to_owned()]), ("client", vec![])] {
        let mut params = CertificateParams::new(sans).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("kite-{name}"));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        std::fs::write(dir.path().join(format!("{name}.crt")), cert.pem()).unwrap();
        std::fs::write(dir.path().join(format!("{name}.key")), key.serialize_pem()).unwrap();
    }
}

/// An upstream over TLS that trusts only a private CA and requires a client certificate
/// (mosquitto `require_certificate true`): configured in the file with paths relative to it.
#[test]
fn an_upstream_over_tls_with_a_private_ca_and_a_client_certificate() {
    let dir = TempDir::new("upstream-tls");
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    private_pki(&dir);
    let tls_port = kite_tests::free_port();
    let p = |name: &str| dir.path().join(name).display().to_string();
    let broker = Mosquitto::start_with(&format!(
        "listener {tls_port} 127.0.0.1\ncafile {}\ncertfile {}\nkeyfile {}\nrequire_certificate true\n",
        p("ca.crt"),
        p("server.crt"),
        p("server.key"),
    ));
    kite_tests::wait_for(
        "mosquitto's TLS listener",
        std::time::Duration::from_secs(10),
        || std::net::TcpStream::connect(("127.0.0.1", tls_port)).ok(),
    );
    // Reached as 127.0.0.1, checked as "localhost" (server_name); the second upstream has no
    // client certificate.
    let file = dir.path().join("kite.toml");
    std::fs::write(
        &file,
        format!(
            "[[upstream]]\nname = \"secure\"\naddresses = [\"mqtts://127.0.0.1:{tls_port}\"]\nca_file = \"ca.crt\"\nclient_cert = \"client.crt\"\nclient_key = \"client.key\"\nserver_name = \"localhost\"\n\n[[upstream]]\nname = \"anonymous\"\naddresses = [\"mqtts://127.0.0.1:{tls_port}\"]\nca_file = \"ca.crt\"\nserver_name = \"localhost\"\n"
        ),
    )
    .unwrap();
    assert!(
        kite_gateway::config::check::check_file(&file).is_empty(),
        "{:?}",
        kite_gateway::config::check::check_file(&file)
    );
    let gateway = Gateway::start_with(&[], None, |c| {
        let loaded = kite_gateway::config::Config::load(Some(&file), Default::default()).unwrap();
        c.upstreams = loaded.upstreams;
    });

    let mut client =
        kite_tests::mqtt::WsClient::connect(&gateway.ws_url("/mqtt/secure"), Some("mqtt")).unwrap();
    client.send(&connect_v311("kite-tls-upstream"));
    assert_eq!(client.read_packet(), [0x20, 0x02, 0x00, 0x00], "CONNACK");

    // Without the client certificate mosquitto refuses the handshake: a clean close.
    let mut client =
        kite_tests::mqtt::WsClient::connect(&gateway.ws_url("/mqtt/anonymous"), Some("mqtt"))
            .unwrap();
    client.send(&connect_v311("kite-tls-no-cert"));
    let close = client.read_close().expect("a close frame");
    assert_eq!(u16::from(close.code), 1011, "{close:?}");
    drop(broker);

    // A client key that does not match its certificate is refused when loading, by name.
    std::fs::copy(dir.path().join("server.key"), dir.path().join("client.key")).unwrap();
    let problems = kite_gateway::config::check::check_file(&file);
    assert!(
        problems
            .iter()
            .any(|p| p.line == 5 && p.message.contains("cannot be used together")),
        "{problems:?}"
    );
    // `kite serve` loads with the same pass, and so stops on it.
    let err = kite_gateway::config::Config::load(Some(&file), Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("client.key") && err.contains("\"secure\""),
        "{err}"
    );
}
