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
    Ok(Upstreams { names, default })
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
