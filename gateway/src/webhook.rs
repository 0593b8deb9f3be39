//! Webhooks: a JSON body POSTed to an `http://` or `https://` URL — hyper's HTTP/1 client over
//! the gateway's own TCP and TLS (rustls with the system's CA certificates), one connection
//! per request, 10 s at most.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use tokio_rustls::rustls::{self, ClientConfig, pki_types::ServerName};

/// How long one request may take, connecting included.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// A webhook URL, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    https: bool,
    host: String,
    port: u16,
    /// `host[:port]` as written (the Host header).
    authority: String,
    /// Path and query (`/` at least).
    path: String,
}

impl Target {
    /// `url` checked: `http://` or `https://`, a host, an optional port, a path.
    pub fn parse(url: &str) -> Result<Self, String> {
        let (https, rest) = if let Some(r) = url.strip_prefix("https://") {
            (true, r)
        } else if let Some(r) = url.strip_prefix("http://") {
            (false, r)
        } else {
            return Err("a webhook URL starts with http:// or https://".into());
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let (authority, path) = match rest.find(['/', '?']) {
            Some(i) if rest.as_bytes()[i] == b'/' => (&rest[..i], rest[i..].to_owned()),
            Some(i) => (&rest[..i], format!("/{}", &rest[i..])),
            None => (rest, "/".to_owned()),
        };
        if authority.contains('@') {
            return Err(
                "credentials in the URL are not sent: put a token in its path or query".into(),
            );
        }
        if path.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err("the path has spaces or control characters: percent-encode them".into());
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or("an IPv6 address needs its closing ]")?;
            (h.to_owned(), after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h.to_owned(), Some(p)),
                None => (authority.to_owned(), None),
            }
        };
        if host.is_empty() {
            return Err("the URL has no host".into());
        }
        let port = match port {
            None => {
                if https {
                    443
                } else {
                    80
                }
            }
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(format!("port {p:?}: 1 to 65535")),
            },
        };
        Ok(Self {
            https,
            host,
            port,
            authority: authority.to_owned(),
            path,
        })
    }
}

/// The TLS settings for https webhooks: the system's CA certificates (read once).
fn tls() -> Result<Arc<ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let roots = crate::upstream::system_roots()
                .map_err(|e| format!("https webhooks need the system's CA certificates: {e}"))?;
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

/// POSTs `body` (JSON) to `target`: `Ok` on a 2xx answer, else why not.
pub async fn post(target: &Target, body: Bytes) -> Result<(), String> {
    match tokio::time::timeout(TIMEOUT, post_inner(target, body)).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {} s", TIMEOUT.as_secs())),
    }
}

async fn post_inner(target: &Target, body: Bytes) -> Result<(), String> {
    let tcp = tokio::net::TcpStream::connect((target.host.as_str(), target.port))
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", target.authority))?;
    let _ = tcp.set_nodelay(true);
    if target.https {
        let name = ServerName::try_from(target.host.clone())
            .map_err(|e| format!("{:?} is not a host name: {e}", target.host))?;
        let stream = tokio_rustls::TlsConnector::from(tls()?)
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS with {}: {e}", target.authority))?;
        send(hyper_util::rt::TokioIo::new(stream), target, body).await
    } else {
        send(hyper_util::rt::TokioIo::new(tcp), target, body).await
    }
}

async fn send<I>(io: I, target: &Target, body: Bytes) -> Result<(), String>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP with {}: {e}", target.authority))?;
    let driver = tokio::spawn(conn);
    let request = hyper::Request::post(target.path.as_str())
        .header(hyper::header::HOST, target.authority.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .header(hyper::header::USER_AGENT, "kite")
        .body(http_body_util::Full::new(body))
        .map_err(|e| e.to_string())?;
    let answer = sender.send_request(request).await;
    driver.abort();
    let answer = answer.map_err(|e| format!("HTTP with {}: {e}", target.authority))?;
    let status = answer.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("{} answered HTTP {status}", target.authority))
    }
}

#[cfg(test)]
mod tests {
    use super::Target;

    #[test]
    fn urls_are_checked() {
        let t = Target::parse("https://ops.example.com/hook?x=1#frag").unwrap();
        assert_eq!(
            (t.https, t.host.as_str(), t.port, t.path.as_str()),
            (true, "ops.example.com", 443, "/hook?x=1")
        );
        let t = Target::parse("http://127.0.0.1:8099").unwrap();
        assert_eq!(
            (t.port, t.path.as_str(), t.authority.as_str()),
            (8099, "/", "127.0.0.1:8099")
        );
        let t = Target::parse("http://[::1]:81/a").unwrap();
        assert_eq!((t.host.as_str(), t.port), ("::1", 81));
        for bad in [
            "ftp://x",
            "http://",
            "http://u:p@x/",
            "http://x:0/",
            "http://x:99999/",
            "http://x/a b",
        ] {
            assert!(Target::parse(bad).is_err(), "{bad}");
        }
    }
}
