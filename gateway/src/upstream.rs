//! Connecting to an upstream broker: TCP or TLS, trying each address in order (failover).

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, pki_types::ServerName};

use crate::config::{BrokerUrl, Upstream};

/// How long one address may take to accept a TCP connection and finish a TLS handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A byte stream to a broker, plain or TLS.
pub trait BrokerIo: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> BrokerIo for T {}

/// Why no address of an upstream could be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach upstream {name:?}: {attempts}")]
pub struct ConnectError {
    name: String,
    attempts: String,
}

/// Makes connections to upstream brokers. Cheap to clone.
#[derive(Clone)]
pub struct Connector {
    tls: Option<TlsConnector>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl Connector {
    /// A connector for these upstreams; TLS is set up (system roots) only if one needs it.
    pub fn new(upstreams: &[Upstream]) -> Result<Self, anyhow::Error> {
        let needs_tls = upstreams.iter().flat_map(|u| &u.addresses).any(|a| a.tls);
        let tls = if needs_tls {
            Some(TlsConnector::from(Arc::new(system_tls_config()?)))
        } else {
            None
        };
        Ok(Self { tls })
    }

    /// Connects to the first address of `upstream` that answers.
    pub async fn connect(&self, upstream: &Upstream) -> Result<Box<dyn BrokerIo>, ConnectError> {
        let mut attempts = String::new();
        for url in &upstream.addresses {
            match tokio::time::timeout(CONNECT_TIMEOUT, self.connect_one(url)).await {
                Ok(Ok(stream)) => return Ok(stream),
                Ok(Err(e)) => {
                    let _ = write!(attempts, "{}{url}: {e}", sep(&attempts));
                }
                Err(_) => {
                    let _ = write!(
                        attempts,
                        "{}{url}: no answer within {}s",
                        sep(&attempts),
                        CONNECT_TIMEOUT.as_secs()
                    );
                }
            }
            tracing::warn!(upstream = %upstream.name, %url, "upstream address failed, trying the next");
        }
        Err(ConnectError {
            name: upstream.name.clone(),
            attempts,
        })
    }

    async fn connect_one(&self, url: &BrokerUrl) -> std::io::Result<Box<dyn BrokerIo>> {
        let tcp = TcpStream::connect((url.host.as_str(), url.port)).await?;
        tcp.set_nodelay(true)?;
        if !url.tls {
            return Ok(Box::new(tcp));
        }
        let Some(tls) = &self.tls else {
            return Err(std::io::Error::other(
                "TLS was not set up for this upstream",
            ));
        };
        let name = ServerName::try_from(url.host.clone())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
        Ok(Box::new(tls.connect(name, tcp).await?))
    }
}

fn sep(s: &str) -> &'static str {
    if s.is_empty() { "" } else { "; " }
}

fn system_tls_config() -> Result<ClientConfig, anyhow::Error> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        anyhow::bail!(
            "an upstream uses mqtts:// but no system CA certificates were found ({} errors); install the ca-certificates package",
            found.errors.len()
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn failover_to_the_next_address() {
        let live = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let live_port = live.local_addr().unwrap().port();
        // A port that refuses: bind, note the port, close.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_port = dead.local_addr().unwrap().port();
        drop(dead);
        let upstream = Upstream {
            name: "u".into(),
            addresses: vec![
                format!("mqtt://127.0.0.1:{dead_port}").parse().unwrap(),
                format!("mqtt://127.0.0.1:{live_port}").parse().unwrap(),
            ],
        };
        let connector = Connector::new(std::slice::from_ref(&upstream)).unwrap();
        let accept = tokio::spawn(async move { live.accept().await.map(|_| ()) });
        connector.connect(&upstream).await.unwrap();
        accept.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn all_addresses_down_names_each() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = dead.local_addr().unwrap().port();
        drop(dead);
        let upstream = Upstream {
            name: "lab".into(),
            addresses: vec![format!("mqtt://127.0.0.1:{port}").parse().unwrap()],
        };
        let err = Connector::new(&[])
            .unwrap()
            .connect(&upstream)
            .await
            .err()
            .unwrap()
            .to_string();
        assert!(
            err.starts_with("cannot reach upstream \"lab\": mqtt://127.0.0.1:"),
            "{err}"
        );
    }
}
