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
