//! Why a WebSocket did not open. The browser says nothing about a failed WebSocket (a close
//! 1006, whatever happened), so the app asks the same URL over plain HTTP: an answer tells a
//! missing path (404, an unknown upstream on a Kite gateway) or a server that refuses
//! (401/403/503) from a server that was not reached at all — and there, where the browser
//! allows no more, the possible causes are named (refused, the name not found, a TLS
//! certificate not trusted) with how to tell them apart.

/// What a plain `GET` of the endpoint's `http(s)://` URL gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// An answer: its status and the first line of its body.
    Status(u16, String),
    /// An answer from another origin, which the browser does not let the page read.
    Opaque,
    /// No answer (the network request failed); `online` is the browser's own idea.
    Unreachable {
        /// `navigator.onLine`.
        online: bool,
    },
}

/// The `http(s)://` URL of a `ws(s)://` one (`None` for anything else).
pub fn http_of(ws_url: &str) -> Option<String> {
    if let Some(rest) = ws_url.strip_prefix("wss://") {
        return Some(format!("https://{rest}"));
    }
    ws_url
        .strip_prefix("ws://")
        .map(|rest| format!("http://{rest}"))
}

/// `scheme://host:port` of a URL.
pub fn origin_of(url: &str) -> &str {
    let after = url.find("://").map_or(0, |i| i + 3);
    let end = url[after..].find('/').map_or(url.len(), |i| after + i);
    &url[..end]
}

/// Why `ws_url` did not open, from the probe's outcome: one sentence for the status line.
pub fn explain(ws_url: &str, probe: &Probe) -> String {
    let http = http_of(ws_url).unwrap_or_else(|| ws_url.to_owned());
    let host = origin_of(&http)
        .split_once("://")
        .map_or(http.as_str(), |(_, h)| h);
    let said = |body: &str| {
        if body.is_empty() {
            String::new()
        } else {
            format!(": {body}")
        }
    };
    match probe {
        Probe::Status(404, body) => format!("nothing at {ws_url} (HTTP 404{})", said(body)),
        Probe::Status(status @ (401 | 403), body) => {
            format!("{host} refused this browser (HTTP {status}{})", said(body))
        }
        Probe::Status(503, body) => format!("{ws_url} is unavailable (HTTP 503{})", said(body)),
        // The endpoint is there (a Kite gateway answers a plain GET with 426): the WebSocket
        // itself was refused.
        Probe::Status(400 | 426, _) | Probe::Opaque => format!(
            "{host} answers, but refused the WebSocket at {ws_url} (a limit, a proxy in between, or not an MQTT endpoint)"
        ),
        Probe::Status(status, body) => {
            format!(
                "{ws_url} answered HTTP {status}{} instead of a WebSocket",
                said(body)
            )
        }
        Probe::Unreachable { online: false } => "this browser is offline".to_owned(),
        Probe::Unreachable { .. } if http.starts_with("https://") => format!(
            "cannot reach {host}: the connection was refused, the name does not resolve, or its TLS certificate is not trusted by this browser (open {} in a tab to see which)",
            origin_of(&http)
        ),
        Probe::Unreachable { .. } => {
            format!("cannot reach {host}: the connection was refused or the name does not resolve")
        }
    }
}

/// The first line of an answer's body, at most 200 characters.
pub fn first_line(body: &str) -> String {
    body.lines()
        .next()
        .unwrap_or_default()
        .trim()
        .chars()
        .take(200)
        .collect()
}

/// Asks `ws_url`'s HTTP twin (same origin: readable; another origin: `no-cors`, answered or
/// not).
pub async fn probe(ws_url: &str) -> Probe {
    use wasm_bindgen::JsCast;
    use wasm_bindgen_futures::JsFuture;
    let (Some(window), Some(http)) = (web_sys::window(), http_of(ws_url)) else {
        return Probe::Unreachable { online: true };
    };
    let same = window
        .location()
        .origin()
        .is_ok_and(|o| o == origin_of(&http));
    let init = web_sys::RequestInit::new();
    init.set_method("GET");
    if !same {
        init.set_mode(web_sys::RequestMode::NoCors);
    }
    let answer = match JsFuture::from(window.fetch_with_str_and_init(&http, &init)).await {
        Ok(r) => r,
        Err(_) => {
            return Probe::Unreachable {
                online: window.navigator().on_line(),
            };
        }
    };
    let Ok(response) = answer.dyn_into::<web_sys::Response>() else {
        return Probe::Opaque;
    };
    // An opaque answer has status 0.
    if response.status() == 0 {
        return Probe::Opaque;
    }
    let text = match response.text() {
        Ok(p) => JsFuture::from(p)
            .await
            .ok()
            .and_then(|t| t.as_string())
            .unwrap_or_default(),
        Err(_) => String::new(),
    };
    Probe::Status(response.status(), first_line(&text))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue #21, bug 8: the failures the browser lets the page tell apart read differently.
    #[test]
    fn each_failure_says_what_it_is() {
        let url = "ws://kite.local:8080/mqtt/lab";
        let missing = explain(
            url,
            &Probe::Status(
                404,
                first_line("no upstream named \"lab\"; GET /api/v1/upstreams lists them\n"),
            ),
        );
        assert_eq!(
            missing,
            "nothing at ws://kite.local:8080/mqtt/lab (HTTP 404: no upstream named \"lab\"; GET /api/v1/upstreams lists them)"
        );
        let refused = explain(url, &Probe::Status(426, String::new()));
        assert!(refused.starts_with("kite.local:8080 answers, but refused the WebSocket"));
        assert_eq!(explain(url, &Probe::Opaque), refused);
        assert!(explain(url, &Probe::Status(403, "no".into())).contains("HTTP 403: no"));
        assert!(explain(url, &Probe::Status(503, String::new())).contains("unavailable"));
        assert!(explain(url, &Probe::Status(502, String::new())).contains("HTTP 502 instead"));
        let plain = explain(url, &Probe::Unreachable { online: true });
        assert_eq!(
            plain,
            "cannot reach kite.local:8080: the connection was refused or the name does not resolve"
        );
        let tls = explain(
            "wss://kite.local/mqtt",
            &Probe::Unreachable { online: true },
        );
        assert!(tls.contains("TLS certificate"), "{tls}");
        assert!(tls.contains("open https://kite.local in a tab"), "{tls}");
        assert_eq!(
            explain(url, &Probe::Unreachable { online: false }),
            "this browser is offline"
        );
    }

    #[test]
    fn urls() {
        assert_eq!(
            http_of("wss://h:1/mqtt").as_deref(),
            Some("https://h:1/mqtt")
        );
        assert_eq!(http_of("ws://h/mqtt").as_deref(), Some("http://h/mqtt"));
        assert_eq!(http_of("http://h"), None);
        assert_eq!(origin_of("https://h:1/mqtt/x"), "https://h:1");
        assert_eq!(origin_of("http://h"), "http://h");
        assert_eq!(first_line(&"x".repeat(300)).len(), 200);
    }
}
