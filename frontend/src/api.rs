//! The gateway's REST API, as the app sees it.

use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;

/// What `GET /api/v1/upstreams` says: the broker names this gateway can reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstreams {
    /// All names, in the gateway's order.
    pub names: Vec<String>,
    /// The one `/mqtt` goes to.
    pub default: Option<String>,
    /// Whether the gateway records that one's topics (`[history]`).
    pub history: bool,
    /// Whether it monitors devices (`[[devices]]`).
    pub devices: bool,
    /// Whether it keeps alarms.
    pub alarms: bool,
    /// Whether it keeps dashboards.
    pub dashboards: bool,
}

/// Asks the gateway that served the page for its upstreams.
pub async fn upstreams() -> Result<Upstreams, String> {
    let window = web_sys::window().ok_or("no browser window")?;
    let response = JsFuture::from(window.fetch_with_str("/api/v1/upstreams"))
        .await
        .map_err(describe)?;
    let response: web_sys::Response = response
        .dyn_into()
        .map_err(|_| "fetch did not return a Response".to_owned())?;
    if !response.ok() {
        return Err(format!(
            "GET /api/v1/upstreams answered HTTP {}",
            response.status()
        ));
    }
    let json = JsFuture::from(response.json().map_err(describe)?)
        .await
        .map_err(|e| format!("the answer is not JSON: {}", describe(e)))?;
    parse_upstreams(&json)
}

fn parse_upstreams(json: &JsValue) -> Result<Upstreams, String> {
    let list = js_sys::Reflect::get(json, &JsValue::from_str("upstreams")).map_err(describe)?;
    let list: js_sys::Array = list
        .dyn_into()
        .map_err(|_| "`upstreams` is not a list".to_owned())?;
    let names = list
        .iter()
        .map(|v| {
            v.as_string()
                .ok_or_else(|| "an upstream name is not a string".to_owned())
        })
        .collect::<Result<Vec<_>, _>>()?;
    let default = js_sys::Reflect::get(json, &JsValue::from_str("default"))
        .map_err(describe)?
        .as_string();
    let flag = |name: &str| field(json, name).as_bool().unwrap_or(false);
    Ok(Upstreams {
        names,
        default,
        history: flag("history"),
        devices: flag("devices"),
        alarms: flag("alarms"),
        dashboards: flag("dashboards"),
    })
}

/// One bridge of the gateway's embedded broker, as `GET /api/v1/bridges` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bridge {
    /// Its name.
    pub name: String,
    /// Whether its remote broker is connected.
    pub up: bool,
    /// Messages waiting for the remote (or sent and not yet acknowledged by it).
    pub queued: u64,
    /// Why the remote was last lost or refused.
    pub last_error: Option<String>,
}

/// What the gateway says of its bridges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bridges {
    /// The bridges this page may see (none: the gateway has none, or none for this role).
    List(Vec<Bridge>),
    /// The gateway lists them to logged-in users only (HTTP 401).
    LoginNeeded,
}

/// Asks the gateway that served the page for its bridges.
pub async fn bridges() -> Result<Bridges, String> {
    let window = web_sys::window().ok_or("no browser window")?;
    let response = JsFuture::from(window.fetch_with_str("/api/v1/bridges"))
        .await
        .map_err(describe)?;
    let response: web_sys::Response = response
        .dyn_into()
        .map_err(|_| "fetch did not return a Response".to_owned())?;
    if response.status() == 401 {
        return Ok(Bridges::LoginNeeded);
    }
    if !response.ok() {
        return Err(format!(
            "GET /api/v1/bridges answered HTTP {}",
            response.status()
        ));
    }
    let json = JsFuture::from(response.json().map_err(describe)?)
        .await
        .map_err(|e| format!("the answer is not JSON: {}", describe(e)))?;
    parse_bridges(&json).map(Bridges::List)
}

fn parse_bridges(json: &JsValue) -> Result<Vec<Bridge>, String> {
    let field = |v: &JsValue, name: &str| js_sys::Reflect::get(v, &JsValue::from_str(name));
    let list: js_sys::Array = field(json, "bridges")
        .map_err(describe)?
        .dyn_into()
        .map_err(|_| "`bridges` is not a list".to_owned())?;
    list.iter()
        .map(|b| {
            let name = field(&b, "name")
                .map_err(describe)?
                .as_string()
                .ok_or("a bridge has no name")?;
            let up = field(&b, "state").map_err(describe)?.as_string().as_deref() == Some("up");
            let queued = field(&b, "queued")
                .map_err(describe)?
                .as_f64()
                .map_or(0, |n| n.max(0.0) as u64);
            let last_error = field(&b, "last_error").map_err(describe)?.as_string();
            Ok(Bridge {
                name,
                up,
                queued,
                last_error,
            })
        })
        .collect()
}

/// A JavaScript error as one readable line.
pub fn describe(value: JsValue) -> String {
    if let Some(e) = value.dyn_ref::<js_sys::Error>() {
        return String::from(e.message());
    }
    value
        .as_string()
        .or_else(|| js_sys::JSON::stringify(&value).ok().map(String::from))
        .unwrap_or_else(|| "an unknown error".to_owned())
}

/// `GET path` with an optional `Authorization` header: the HTTP status and, for a JSON
/// answer, its value (`null` otherwise).
pub async fn get_json(path: &str, auth: Option<&str>) -> Result<(u16, JsValue), String> {
    send_json("GET", path, None, auth).await
}

/// What the gateway answers an app view's question.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// 200, with its JSON.
    Ok(JsValue),
    /// 404: the gateway does not have it (not configured).
    Off,
    /// 401: a login is needed that no connection gives.
    Login,
    /// Anything else: why.
    Failed(String),
}

/// What an app view has of the gateway's answer.
#[derive(Debug, Clone, PartialEq)]
pub enum Load<T> {
    /// Asked, no answer yet.
    Loading,
    /// An answer that is not the data (not configured, a login needed, a failure).
    Not(Answer),
    /// The data, read.
    Ready(std::rc::Rc<T>),
}

impl<T> Load<T> {
    /// The answer, read with `parse` when it is the data.
    pub fn from(answer: Answer, parse: impl FnOnce(&JsValue) -> T) -> Self {
        match answer {
            Answer::Ok(json) => Self::Ready(std::rc::Rc::new(parse(&json))),
            other => Self::Not(other),
        }
    }

    /// The data; else the card to show instead (titled `title`; `off` says how to turn the
    /// feature on).
    pub fn ready(&self, title: &str, off: &str) -> Result<std::rc::Rc<T>, yew::Html> {
        use yew::html;
        let body = match self {
            Self::Ready(data) => return Ok(data.clone()),
            Self::Loading => html! { <p class="muted">{ "Asking the gateway…" }</p> },
            Self::Not(Answer::Off) => html! { <p class="muted">{ off.to_owned() }</p> },
            Self::Not(Answer::Login) => html! {
                <p class="muted">{ "The gateway shows this to logged-in users: give a connection to this gateway a user name and password." }</p>
            },
            Self::Not(Answer::Failed(e)) => {
                html! { <p class="error" role="alert">{ format!("Could not read it: {e}") }</p> }
            }
            // `from` makes no `Not(Ok)`.
            Self::Not(Answer::Ok(_)) => html! {},
        };
        Err(html! { <section class="card"><h2>{ title.to_owned() }</h2>{ body }</section> })
    }
}

/// `GET path` as an app view reads it.
pub async fn ask(path: &str, auth: Option<&str>) -> Answer {
    match get_json(path, auth).await {
        Ok((200, json)) => Answer::Ok(json),
        Ok((404, _)) => Answer::Off,
        Ok((401, _)) => Answer::Login,
        Ok((status, json)) => Answer::Failed(
            field(&json, "error")
                .as_string()
                .unwrap_or_else(|| format!("HTTP {status}")),
        ),
        Err(e) => Answer::Failed(e),
    }
}

/// `method path` with a JSON `body` (or none) and an optional `Authorization` header: the
/// HTTP status and, for a JSON answer, its value (`null` otherwise).
pub async fn send_json(
    method: &str,
    path: &str,
    body: Option<&str>,
    auth: Option<&str>,
) -> Result<(u16, JsValue), String> {
    let window = web_sys::window().ok_or("no browser window")?;
    let init = web_sys::RequestInit::new();
    init.set_method(method);
    let headers = web_sys::Headers::new().map_err(describe)?;
    if let Some(auth) = auth {
        headers.set("Authorization", auth).map_err(describe)?;
    }
    if let Some(body) = body {
        headers
            .set("Content-Type", "application/json")
            .map_err(describe)?;
        init.set_body(&JsValue::from_str(body));
    }
    init.set_headers(&headers);
    let response = JsFuture::from(window.fetch_with_str_and_init(path, &init))
        .await
        .map_err(describe)?;
    let response: web_sys::Response = response
        .dyn_into()
        .map_err(|_| "fetch did not return a Response".to_owned())?;
    let status = response.status();
    let json = match response.json() {
        Ok(p) => JsFuture::from(p).await.unwrap_or(JsValue::NULL),
        Err(_) => JsValue::NULL,
    };
    Ok((status, json))
}

/// `value[name]`.
pub fn field(value: &JsValue, name: &str) -> JsValue {
    js_sys::Reflect::get(value, &JsValue::from_str(name)).unwrap_or(JsValue::UNDEFINED)
}

/// `value[name]` as a list.
pub fn list(value: &JsValue, name: &str) -> Vec<JsValue> {
    field(value, name)
        .dyn_into::<js_sys::Array>()
        .map(|a| a.iter().collect())
        .unwrap_or_default()
}
