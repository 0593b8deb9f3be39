//! Upstream brokers: their addresses (`BrokerUrl`), TLS options (`UpstreamTls`), and
//! connecting to them — TCP or TLS, trying each address in order (failover).

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore, pki_types::ServerName};

use thiserror::Error;

/// Why an upstream URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("invalid upstream URL {url:?}: {reason}")]
pub struct UrlError {
    url: String,
    reason: String,
}

impl UrlError {
    fn new(url: &str, reason: impl Into<String>) -> Self {
        Self {
            url: url.to_owned(),
            reason: reason.into(),
        }
    }
}

/// One address of an upstream broker: `mqtt://host:port` (TCP) or `mqtts://host:port` (TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    /// Whether to speak TLS to the broker.
    pub tls: bool,
    /// Host name or IP address (without brackets for IPv6).
    pub host: String,
    /// TCP port.
    pub port: u16,
}

impl FromStr for BrokerUrl {
    type Err = UrlError;

    fn from_str(url: &str) -> Result<Self, UrlError> {
        let (tls, rest) = if let Some(rest) = url.strip_prefix("mqtt://") {
            (false, rest)
        } else if let Some(rest) = url.strip_prefix("mqtts://") {
            (true, rest)
        } else {
            let scheme = url.split_once("://").map_or("", |(s, _)| s);
            let reason = if scheme.is_empty() {
                "missing scheme: write mqtt://HOST:PORT or mqtts://HOST:PORT".to_owned()
            } else {
                format!(
                    "unsupported scheme {scheme:?}: use mqtt:// (TCP) or mqtts:// (TLS); WebSocket brokers are not upstreams"
                )
            };
            return Err(UrlError::new(url, reason));
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(UrlError::new(
                url,
                "only mqtt(s)://HOST:PORT is allowed: no path, query or user info (put credentials in the config file)",
            ));
        }
        let default_port = if tls { 8883 } else { 1883 };
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let Some((host, after)) = v6.split_once(']') else {
                return Err(UrlError::new(url, "unclosed '[' in IPv6 address"));
            };
            let port = match after {
                "" => None,
                p => match p.strip_prefix(':') {
                    Some(p) => Some(p),
                    None => return Err(UrlError::new(url, "expected ':PORT' after ']'")),
                },
            };
            (host, port)
        } else {
            match rest.rsplit_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (rest, None),
            }
        };
        if host.is_empty() {
            return Err(UrlError::new(url, "missing host"));
        }
        let port = match port {
            None => default_port,
            Some(p) => match p.parse::<u16>() {
                Ok(0) | Err(_) => {
                    return Err(UrlError::new(
                        url,
                        format!("port {p:?} is not a number from 1 to 65535"),
                    ));
                }
                Ok(p) => p,
            },
        };
        Ok(Self {
            tls,
            host: host.to_owned(),
            port,
        })
    }
}

impl fmt::Display for BrokerUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "mqtts" } else { "mqtt" };
        if self.host.contains(':') {
            write!(f, "{scheme}://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{scheme}://{}:{}", self.host, self.port)
        }
    }
}

/// A broker the gateway forwards to, with its addresses in failover order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    /// Name, as used in `/mqtt/<name>` and listed by `/api/v1/upstreams`.
    pub name: String,
    /// Addresses, tried in order until one connects.
    pub addresses: Vec<BrokerUrl>,
    /// How its `mqtts://` addresses are reached.
    pub tls: UpstreamTls,
}

impl Upstream {
    /// An upstream with default TLS settings (system roots, no client certificate).
    pub fn new(name: impl Into<String>, addresses: Vec<BrokerUrl>) -> Self {
        Self {
            name: name.into(),
            addresses,
            tls: UpstreamTls::default(),
        }
    }
}

/// TLS to an upstream broker: whom to trust, and who the gateway is.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct UpstreamTls {
    /// PEM file of the CA certificates to trust instead of the system's.
    pub ca_file: Option<PathBuf>,
    /// PEM file of the gateway's client certificate chain (brokers that require one).
    pub client_cert: Option<PathBuf>,
    /// PEM file of its private key.
    pub client_key: Option<PathBuf>,
    /// The name to ask for (SNI) and check the certificate against, when it is not the host
    /// in the address (e.g. connecting by IP address).
    pub server_name: Option<String>,
}

impl UpstreamTls {
    pub(crate) fn is_set(&self) -> bool {
        *self != Self::default()
    }
}

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

impl ConnectError {
    /// Each address tried and why it failed, without the "upstream" framing (a bridge's
    /// remote says this in its own words).
    pub fn attempts(&self) -> &str {
        &self.attempts
    }
}

/// Makes connections to upstream brokers. Cheap to clone.
#[derive(Clone, Default)]
pub struct Connector {
    /// Per upstream name (those with an `mqtts://` address): its TLS setup.
    tls: HashMap<String, Tls>,
}

#[derive(Clone)]
struct Tls {
    connector: TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl std::fmt::Debug for Connector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connector")
            .field("tls", &self.tls.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Connector {
    /// A connector for these upstreams: each with an `mqtts://` address gets its TLS set up
    /// now (system roots or its `ca_file`, its client certificate), so a bad file stops the
    /// start with its name rather than failing every session.
    pub fn new(upstreams: &[Upstream]) -> Result<Self, anyhow::Error> {
        let mut tls = HashMap::new();
        let mut system: Option<RootCertStore> = None;
        for u in upstreams {
            if !u.addresses.iter().any(|a| a.tls) {
                continue;
            }
            let roots = match &u.tls.ca_file {
                Some(path) => {
                    let mut roots = RootCertStore::empty();
                    let certs = crate::tls::read_certificates(path, "CA certificate (ca_file)")
                        .map_err(|e| anyhow::anyhow!("upstream {:?}: {e}", u.name))?;
                    for cert in certs {
                        roots.add(cert).map_err(|e| {
                            anyhow::anyhow!(
                                "upstream {:?}: the CA certificate in {} is unusable: {e}",
                                u.name,
                                path.display()
                            )
                        })?;
                    }
                    roots
                }
                None => match &system {
                    Some(roots) => roots.clone(),
                    None => system.insert(system_roots()?).clone(),
                },
            };
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let builder = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots);
            let config = match (&u.tls.client_cert, &u.tls.client_key) {
                (Some(cert), Some(key)) => builder
                    .with_client_auth_cert(
                        crate::tls::read_certificates(cert, "client certificate (client_cert)")
                            .map_err(|e| anyhow::anyhow!("upstream {:?}: {e}", u.name))?,
                        crate::tls::read_key(key).map_err(|e| {
                            anyhow::anyhow!("upstream {:?}: client_key: {e}", u.name)
                        })?,
                    )
                    .map_err(|e| {
                        anyhow::anyhow!(
                            "upstream {:?}: the client certificate {} and key {} cannot be used together: {e}",
                            u.name,
                            cert.display(),
                            key.display()
                        )
                    })?,
                _ => builder.with_no_client_auth(),
            };
            let server_name = match &u.tls.server_name {
                Some(name) => Some(ServerName::try_from(name.clone()).map_err(|e| {
                    anyhow::anyhow!("upstream {:?}: server_name {name:?}: {e}", u.name)
                })?),
                None => None,
            };
            tls.insert(
                u.name.clone(),
                Tls {
                    connector: TlsConnector::from(Arc::new(config)),
                    server_name,
                },
            );
        }
        Ok(Self { tls })
    }

    /// Connects to the first address of `upstream` that answers.
    pub async fn connect(&self, upstream: &Upstream) -> Result<Box<dyn BrokerIo>, ConnectError> {
        self.connect_indexed(upstream)
            .await
            .map(|(stream, _)| stream)
    }

    /// Whether address `index` of `upstream` answers now (connected, TLS included, then
    /// closed) within the connect timeout.
    pub async fn answers(&self, upstream: &Upstream, index: usize) -> bool {
        let Some(url) = upstream.addresses.get(index) else {
            return false;
        };
        matches!(
            tokio::time::timeout(CONNECT_TIMEOUT, self.connect_one(&upstream.name, url)).await,
            Ok(Ok(_))
        )
    }

    /// [`Connector::connect`], with the index of the address that answered.
    pub async fn connect_indexed(
        &self,
        upstream: &Upstream,
    ) -> Result<(Box<dyn BrokerIo>, usize), ConnectError> {
        let mut attempts = String::new();
        for (index, url) in upstream.addresses.iter().enumerate() {
            match tokio::time::timeout(CONNECT_TIMEOUT, self.connect_one(&upstream.name, url)).await
            {
                Ok(Ok(stream)) => return Ok((stream, index)),
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

    async fn connect_one(
        &self,
        upstream: &str,
        url: &BrokerUrl,
    ) -> std::io::Result<Box<dyn BrokerIo>> {
        let tcp = TcpStream::connect((url.host.as_str(), url.port)).await?;
        tcp.set_nodelay(true)?;
        if !url.tls {
            return Ok(Box::new(tcp));
        }
        let Some(tls) = self.tls.get(upstream) else {
            return Err(std::io::Error::other(
                "TLS was not set up for this upstream",
            ));
        };
        let name = match &tls.server_name {
            Some(name) => name.clone(),
            None => ServerName::try_from(url.host.clone())
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        };
        Ok(Box::new(tls.connector.connect(name, tcp).await?))
    }
}

fn sep(s: &str) -> &'static str {
    if s.is_empty() { "" } else { "; " }
}

pub(crate) fn system_roots() -> Result<RootCertStore, anyhow::Error> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (added, _ignored) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        anyhow::bail!(
            "an upstream uses mqtts:// but no system CA certificates were found ({} errors); install the ca-certificates package, or give the upstream a ca_file",
            found.errors.len()
        );
    }
    Ok(roots)
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
        let upstream = Upstream::new(
            "u",
            vec![
                format!("mqtt://127.0.0.1:{dead_port}").parse().unwrap(),
                format!("mqtt://127.0.0.1:{live_port}").parse().unwrap(),
            ],
        );
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
        let upstream = Upstream::new(
            "lab",
            vec![format!("mqtt://127.0.0.1:{port}").parse().unwrap()],
        );
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
