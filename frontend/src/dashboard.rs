//! Dashboards (issue #21): the list (`/dashboards`: open, make, import, export, delete) and
//! one dashboard (`/dashboards/<id>`; `?kiosk` for a wall screen) — stored on the gateway
//! (`/api/v1/dashboards`), fed by one of this browser's connections: the widgets read the
//! connection's store once per animation frame (the app's rule: messages never go through
//! Yew one by one), their controls publish through it, the device and alarm widgets ask the
//! gateway every 5 s, and charts start from the gateway's recorded history.
//!
//! The document is kept as the gateway sends it ([`Json`]) and edited as such: what the app
//! does not know (keys of a newer version) goes back untouched. The gateway checks it on
//! save and names the key at fault, shown on the widget.

use std::cell::RefCell;
use std::rc::Rc;

use wasm_bindgen::JsCast;
use yew::prelude::*;

use crate::api::{self, Load};
use crate::explorer::StoreHandle;
use crate::forms::value_of;
use crate::history::{Bucket, Line, Span};
use crate::payload::{self, Json};
use crate::route::{Route, go, link};
use crate::workspace::Handle;

/// The kinds a widget may be, as the gateway knows them (`gateway/src/dashboards.rs`).
pub const KINDS: [&str; 13] = [
    "value", "gauge", "chart", "bar", "timeline", "table", "text", "switch", "button", "slider",
    "input", "device", "alarms",
];

/// The height of one grid row, in CSS pixels.
const ROW: u32 = 56;

/// Where the chosen connection of the dashboards is kept in the browser.
const CONN_KEY: &str = "kite.dashboards.connection";

/// A colour of a threshold or series, by name (else as written: `#rrggbb`).
pub fn tone(name: &str) -> &str {
    match name {
        "green" => "#16a34a",
        "yellow" => "#ca8a04",
        "orange" => "#ea580c",
        "red" => "#dc2626",
        "blue" => "#2563eb",
        "purple" => "#9333ea",
        "grey" => "#6b7280",
        "teal" => "#0d9488",
        other => other,
    }
}

/// `${name}` replaced by the variables' chosen values (an unknown one by nothing).
pub fn substitute(text: &str, vars: &[(String, String)]) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            out.push_str(&rest[i..]);
            return out;
        };
        if let Some((_, v)) = vars.iter().find(|(n, _)| *n == after[..end]) {
            out.push_str(v);
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The values a variable may take: the level `level` of the topics `filter` matches, each
/// once, in natural order.
pub fn variable_values(topics: &[String], level: usize) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in topics {
        if let Some(v) = t.split('/').nth(level)
            && !out.iter().any(|o| o == v)
        {
            out.push(v.to_owned());
        }
    }
    crate::sort::sort_by(&mut out, |a, b| kite_mqtt::topic::natural_cmp(a, b));
    out
}

/// A payload as JSON: JSON text as it parses, any other text as a string.
pub fn payload_json(bytes: &[u8]) -> Json {
    let text = String::from_utf8_lossy(bytes);
    payload::parse(&text).unwrap_or_else(|| Json::Str(text.into_owned()))
}

/// The value at `field` (a JSON Pointer; empty: the whole payload) of a payload.
pub fn read_field(bytes: &[u8], field: &str) -> Option<Json> {
    payload_json(bytes).pointer(field).cloned()
}

/// The colour of the last threshold `v` reaches (thresholds go up), if any.
pub fn threshold_tone(thresholds: &[(f64, String)], v: f64) -> Option<&str> {
    thresholds
        .iter()
        .rev()
        .find(|(at, _)| v >= *at)
        .map(|(_, c)| tone(c))
}

/// `v` with `decimals` digits after the point (JavaScript's `toFixed`), or as it comes.
fn fixed(v: f64, decimals: Option<u8>) -> String {
    match decimals {
        #[cfg(target_arch = "wasm32")]
        Some(d) => js_sys::Number::from(v)
            .to_fixed(d)
            .map(String::from)
            .unwrap_or_default(),
        _ => crate::explorer::tenths(v).replace(".0", ""),
    }
}

/// One series of a chart or timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesSpec {
    /// Its topic (variables substituted).
    pub topic: String,
    /// Its JSON Pointer.
    pub field: String,
    /// Its label.
    pub label: String,
    /// Its colour.
    pub colour: String,
}

/// A widget, read from the document with the variables substituted (absent keys: their
/// defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct Widget {
    pub id: String,
    pub kind: String,
    pub title: String,
    pub topic: String,
    pub field: String,
    pub unit: String,
    pub decimals: Option<u8>,
    pub thresholds: Vec<(f64, String)>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub step: f64,
    pub series: Vec<SeriesSpec>,
    pub window_ms: f64,
    pub area: bool,
    pub band: bool,
    pub columns: Vec<(String, String)>,
    pub text: String,
    pub command_topic: String,
    pub on: String,
    pub off: String,
    pub on_words: Vec<String>,
    pub payload: String,
    pub qos: u8,
    pub retain: bool,
    pub confirm: bool,
    pub number_input: bool,
    pub device: String,
    pub state: String,
    pub limit: u32,
    /// x, y, w, h in grid cells (`None`: placed by the grid until saved).
    pub layout: Option<(u32, u32, u32, u32)>,
}

const SERIES_COLOURS: [&str; 6] = ["blue", "red", "green", "purple", "orange", "teal"];

impl Widget {
    /// `j` read, `${var}`s replaced by `vars`.
    pub fn read(j: &Json, vars: &[(String, String)]) -> Self {
        let s = |k: &str| {
            j.get(k)
                .and_then(Json::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let sub = |k: &str| substitute(&s(k), vars);
        let n = |k: &str| j.get(k).and_then(Json::as_f64);
        let b = |k: &str| matches!(j.get(k), Some(Json::Bool(true)));
        let topic = sub("topic");
        let field = s("field");
        let mut series: Vec<SeriesSpec> = j
            .get("series")
            .map(Json::items)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let g = |k: &str| x.get(k).and_then(Json::as_str).unwrap_or_default();
                let topic = substitute(g("topic"), vars);
                SeriesSpec {
                    label: Some(g("label"))
                        .filter(|l| !l.is_empty())
                        .map_or_else(|| topic.clone(), str::to_owned),
                    topic,
                    field: g("field").to_owned(),
                    colour: Some(g("color"))
                        .filter(|c| !c.is_empty())
                        .unwrap_or(SERIES_COLOURS[i % SERIES_COLOURS.len()])
                        .to_owned(),
                }
            })
            .collect();
        if series.is_empty() && !topic.is_empty() {
            series.push(SeriesSpec {
                topic: topic.clone(),
                field: field.clone(),
                label: topic.clone(),
                colour: "blue".into(),
            });
        }
        let layout = j.get("layout").and_then(|l| {
            let c = |k: &str| l.get(k).and_then(Json::as_f64).map(|v| v as u32);
            Some((c("x")?, c("y")?, c("w")?, c("h")?))
        });
        let kind = s("kind");
        Self {
            id: s("id"),
            title: s("title"),
            unit: s("unit"),
            decimals: n("decimals").map(|d| d as u8),
            thresholds: j
                .get("thresholds")
                .map(Json::items)
                .unwrap_or_default()
                .iter()
                .filter_map(|t| {
                    Some((
                        t.get("value")?.as_f64()?,
                        t.get("color")?.as_str()?.to_owned(),
                    ))
                })
                .collect(),
            min: n("min"),
            max: n("max"),
            step: n("step").unwrap_or(1.0),
            series,
            window_ms: n("windowSecs").unwrap_or(3600.0) * 1000.0,
            area: s("style") == "area",
            band: !matches!(j.get("band"), Some(Json::Bool(false))),
            columns: j
                .get("columns")
                .map(Json::items)
                .unwrap_or_default()
                .iter()
                .map(|c| {
                    let g = |k: &str| c.get(k).and_then(Json::as_str).unwrap_or_default();
                    let label = if g("label").is_empty() {
                        g("field")
                    } else {
                        g("label")
                    };
                    (g("field").to_owned(), label.to_owned())
                })
                .collect(),
            text: s("text"),
            command_topic: Some(sub("commandTopic"))
                .filter(|t| !t.is_empty())
                .unwrap_or_else(|| topic.clone()),
            on: j
                .get("on")
                .and_then(Json::as_str)
                .unwrap_or(if kind == "switch" { "on" } else { "" })
                .to_owned(),
            off: j
                .get("off")
                .and_then(Json::as_str)
                .unwrap_or("off")
                .to_owned(),
            on_words: match j.get("on") {
                Some(Json::Arr(words)) => words
                    .iter()
                    .filter_map(|w| w.as_str())
                    .map(str::to_owned)
                    .collect(),
                _ => vec!["on".into(), "1".into(), "true".into()],
            },
            payload: s("payload"),
            qos: n("qos").map_or(1, |q| q as u8),
            retain: b("retain"),
            confirm: b("confirm"),
            number_input: s("input") == "number",
            device: sub("device"),
            state: Some(s("state"))
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| "open".into()),
            limit: n("limit").map_or(10, |l| l as u32),
            topic,
            field,
            kind,
            layout,
        }
    }

    /// The filters it needs subscribed.
    pub fn filters(&self) -> Vec<String> {
        match self.kind.as_str() {
            "text" | "device" | "alarms" => Vec::new(),
            "chart" | "timeline" => self.series.iter().map(|s| s.topic.clone()).collect(),
            _ if self.topic.is_empty() => Vec::new(),
            _ => vec![self.topic.clone()],
        }
        .into_iter()
        .filter(|t| kite_mqtt::topic::validate_filter(t).is_ok())
        .collect()
    }
}

/// The document's variables: name, filter, level, default, label.
fn variables(doc: &Json) -> Vec<(String, String, usize, String, String)> {
    doc.get("variables")
        .map(Json::items)
        .unwrap_or_default()
        .iter()
        .filter_map(|v| {
            let g = |k: &str| {
                v.get(k)
                    .and_then(Json::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let name = g("name");
            (!name.is_empty()).then(|| {
                let level = v.get("level").and_then(Json::as_f64).unwrap_or(0.0) as usize;
                let label = Some(g("label"))
                    .filter(|l| !l.is_empty())
                    .unwrap_or_else(|| name.clone());
                (name, g("filter"), level, g("default"), label)
            })
        })
        .collect()
}

// ---- the list ------------------------------------------------------------------------------

/// One dashboard in the list.
#[derive(Debug, Clone, PartialEq)]
struct Summary {
    id: String,
    title: String,
    description: String,
    widgets: u32,
    updated_by: String,
}

fn parse_list(json: &wasm_bindgen::JsValue) -> (Vec<Summary>, bool) {
    let list = api::list(json, "dashboards")
        .iter()
        .map(|d| {
            let s = |k: &str| api::field(d, k).as_string().unwrap_or_default();
            Summary {
                id: s("id"),
                title: s("title"),
                description: s("description"),
                widgets: api::field(d, "widgets").as_f64().unwrap_or(0.0) as u32,
                updated_by: s("updatedBy"),
            }
        })
        .collect();
    (list, api::field(json, "edit").as_bool().unwrap_or(false))
}

/// Properties of [`DashboardList`].
#[derive(Properties, PartialEq)]
pub struct ListProps {
    /// `Authorization` for the gateway's API, if a connection gives a login.
    pub auth: Option<String>,
}

/// The dashboards the gateway keeps: open one, make one, import one, delete one.
#[component]
pub fn DashboardList(props: &ListProps) -> Html {
    let load = use_state(|| Load::<(Vec<Summary>, bool)>::Loading);
    let reload = use_state(|| 0u32);
    let message = use_state(|| None::<String>);
    let armed = use_state(|| None::<String>);
    {
        let (load, auth) = (load.clone(), props.auth.clone());
        use_effect_with(*reload, move |_| {
            wasm_bindgen_futures::spawn_local(async move {
                let answer = api::ask("/api/v1/dashboards", auth.as_deref()).await;
                load.set(Load::from(answer, parse_list));
            });
        });
    }
    let data = match load.ready(
        "Dashboards",
        "This gateway keeps no dashboards: they need a data directory ([broker] data_dir).",
    ) {
        Ok(d) => d,
        Err(card) => return card,
    };
    let (list, may_edit) = (&data.0, data.1);
    // POST a document: made from a title, or imported.
    let create = {
        let (auth, message) = (props.auth.clone(), message.clone());
        move |body: String| {
            let (auth, message) = (auth.clone(), message.clone());
            wasm_bindgen_futures::spawn_local(async move {
                match api::send_json("POST", "/api/v1/dashboards", Some(&body), auth.as_deref())
                    .await
                {
                    Ok((201, json)) => {
                        let id = api::field(&json, "id").as_string().unwrap_or_default();
                        go(&Route::Dashboard { id }, false);
                    }
                    Ok((_, json)) => message.set(Some(api_error(&json))),
                    Err(e) => message.set(Some(e)),
                }
            });
        }
    };
    let on_new = {
        let create = create.clone();
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let title = form_value(&e, "title");
            let mut body = String::from("{\"schemaVersion\": 1, \"title\": ");
            payload::quote(title.trim(), &mut body);
            body.push('}');
            create(body);
        })
    };
    let on_import = Callback::from(move |e: SubmitEvent| {
        e.prevent_default();
        create(form_value(&e, "import"));
    });
    let rows = list.iter().map(|d| {
        let delete = {
            let (auth, id, armed, reload, message) = (props.auth.clone(), d.id.clone(), armed.clone(), reload.clone(), message.clone());
            Callback::from(move |_: MouseEvent| {
                if armed.as_deref() != Some(id.as_str()) {
                    armed.set(Some(id.clone()));
                    return;
                }
                let (auth, id, reload, message) = (auth.clone(), id.clone(), reload.clone(), message.clone());
                wasm_bindgen_futures::spawn_local(async move {
                    match api::send_json("DELETE", &format!("/api/v1/dashboards/{id}"), None, auth.as_deref()).await {
                        Ok((204, _)) => reload.set(*reload + 1),
                        Ok((_, json)) => message.set(Some(api_error(&json))),
                        Err(e) => message.set(Some(e)),
                    }
                });
            })
        };
        let is_armed = armed.as_deref() == Some(d.id.as_str());
        html! {
            <li class="dashboard-item" data-id={d.id.clone()}>
                { link(Route::Dashboard { id: d.id.clone() }, "dashboard-link", html! { <>
                    <span class="dashboard-title">{ d.title.clone() }</span>
                    <span class="muted">{ format!(" · {} widgets", d.widgets) }</span>
                </> }) }
                if !d.description.is_empty() { <p class="muted">{ d.description.clone() }</p> }
                if !d.updated_by.is_empty() { <span class="muted small">{ format!("changed by {}", d.updated_by) }</span> }
                if may_edit {
                    <button class="secondary danger delete-dashboard" onclick={delete}>{ if is_armed { "Really delete?" } else { "Delete" } }</button>
                }
            </li>
        }
    });
    html! {
        <section class="card" aria-labelledby="dashboards-title">
            <h2 id="dashboards-title">{ "Dashboards" }</h2>
            if let Some(m) = &*message { <p class="error" role="alert">{ m.clone() }</p> }
            if list.is_empty() { <p class="muted">{ "No dashboard yet." }</p> }
            <ul class="dashboards">{ for rows }</ul>
            if may_edit {
                <form class="row" onsubmit={on_new}>
                    <label for="new-dashboard">{ "New dashboard" }</label>
                    <input id="new-dashboard" name="title" required=true placeholder="Line 1" />
                    <button type="submit">{ "Create" }</button>
                </form>
                <details class="import">
                    <summary>{ "Import a dashboard (JSON)" }</summary>
                    <form onsubmit={on_import}>
                        <textarea id="import-json" name="import" rows="6" spellcheck="false" placeholder="{\"schemaVersion\": 1, \"title\": \"Line 1\", \"widgets\": [...]}" />
                        <button type="submit" id="import-dashboard">{ "Import" }</button>
                    </form>
                </details>
            } else {
                <p class="muted">{ "Your role may open dashboards, not change them." }</p>
            }
        </section>
    }
}

/// The value of the form field `name` of a submit event's form.
fn form_value(e: &SubmitEvent, name: &str) -> String {
    e.target()
        .and_then(|f| js_sys::Reflect::get(&f, &"elements".into()).ok())
        .and_then(|els| js_sys::Reflect::get(&els, &name.into()).ok())
        .and_then(|el| js_sys::Reflect::get(&el, &"value".into()).ok())
        .and_then(|v| v.as_string())
        .unwrap_or_default()
}

/// The gateway's error as one line: what, and the key at fault.
fn api_error(json: &wasm_bindgen::JsValue) -> String {
    let error = api::field(json, "error")
        .as_string()
        .unwrap_or_else(|| "the gateway refused it".into());
    match api::field(json, "field").as_string() {
        Some(f) => format!("{f}: {error}"),
        None => error,
    }
}

// ---- one dashboard -------------------------------------------------------------------------

/// A dashboard as loaded: its document and version.
#[derive(Debug, Clone, PartialEq)]
struct Doc {
    json: Json,
    version: u64,
}

fn parse_doc(json: &wasm_bindgen::JsValue) -> Doc {
    let text = js_sys::JSON::stringify(json)
        .map(String::from)
        .unwrap_or_default();
    let mut json = payload::parse(&text).unwrap_or(Json::Null);
    let version = json.get("version").and_then(Json::as_f64).unwrap_or(0.0) as u64;
    for k in ["id", "created", "updated", "updatedBy"] {
        json.set(k, None);
    }
    Doc { json, version }
}

/// What the device and alarm widgets show: the gateway's answers, by widget id.
type Asked = Rc<RefCell<Vec<(String, wasm_bindgen::JsValue)>>>;

/// Properties of [`DashboardView`].
#[derive(Properties, PartialEq)]
pub struct ViewProps {
    /// The app's workspace (the connections).
    pub handle: Handle,
    /// The dashboard's id.
    pub id: String,
    /// A wall screen: no editing, the connection kept up.
    pub kiosk: bool,
    /// `Authorization` for the gateway's API, if a connection gives a login.
    pub auth: Option<String>,
    /// The animation frame (a new one when messages arrived).
    pub frame: u64,
    /// Whether the gateway records its default broker's topics (charts start from them).
    pub recorded: bool,
}

/// One dashboard: its variables, its widgets on the grid, and (not in kiosk mode) the
/// connection it reads and its editor.
#[component]
pub fn DashboardView(props: &ViewProps) -> Html {
    let doc = use_state(|| Load::<Doc>::Loading);
    let reload = use_state(|| 0u32);
    let editing = use_state(|| None::<Json>);
    // A widget being checked by the gateway: Add waits for it (a second one added meanwhile
    // would be laid out on the document without the first).
    let adding = use_state(|| false);
    let error = use_state(|| None::<String>);
    let vars = use_state(Vec::<(String, String)>::new);
    let conn = use_state(|| crate::storage::get(CONN_KEY).ok().flatten());
    let asked: Asked = use_mut_ref(Vec::new).clone();
    // The connection this view opened, and when.
    let opened = use_mut_ref(|| (None::<String>, 0.0_f64));
    let sent = use_state(|| None::<(String, Option<u16>)>);
    let armed = use_state(|| None::<String>);
    let sort = use_state(|| (String::new(), 0usize, false));
    let grid = use_node_ref();
    {
        let (doc, auth, id) = (doc.clone(), props.auth.clone(), props.id.clone());
        use_effect_with((*reload, props.id.clone()), move |_| {
            wasm_bindgen_futures::spawn_local(async move {
                let answer = api::ask(&format!("/api/v1/dashboards/{id}"), auth.as_deref()).await;
                doc.set(Load::from(answer, parse_doc));
            });
        });
    }
    let loaded = match doc.ready(
        "Dashboard",
        "There is no such dashboard (or this gateway keeps none): see Dashboards.",
    ) {
        Ok(d) => d,
        Err(card) => return card,
    };
    let json = editing.as_ref().unwrap_or(&loaded.json);
    // The connection: the one chosen here, else the first that dials this gateway.
    let profiles: Vec<(String, String)> = props.handle.read(|w| {
        w.profiles
            .iter()
            .map(|p| (p.id.clone(), p.name.clone()))
            .collect()
    });
    let conn_id = conn
        .as_ref()
        .filter(|c| profiles.iter().any(|(id, _)| id == *c))
        .cloned()
        .or_else(|| profiles.first().map(|(id, _)| id.clone()));
    let store = conn_id.as_deref().and_then(|id| {
        // Opened when the dashboard is shown (or its connection chosen); the connection then
        // redials by itself. One that stopped for good (a refused login, a session taken
        // over) is not hammered on every frame: a wall screen tries it again each minute.
        let closed = props.handle.conn(id).is_none_or(|c| c.is_closed());
        let now = js_sys::Date::now();
        let mut last = opened.borrow_mut();
        let due = last.0.as_deref() != Some(id) || (props.kiosk && now - last.1 > 60_000.0);
        if closed && due {
            *last = (Some(id.to_owned()), now);
            drop(last);
            let _ = props.handle.connect(id);
        }
        props.handle.store(id)
    });
    // The variables, each with the values its filter's level takes.
    let declared = variables(json);
    let topics_of = |filter: &str| -> Vec<String> {
        store
            .as_ref()
            .map(|s| s.0.borrow().topics_matching(filter))
            .unwrap_or_default()
    };
    let chosen: Vec<(String, String)> = declared
        .iter()
        .map(|(name, filter, level, default, _)| {
            let values = variable_values(&topics_of(filter), *level);
            let value = vars
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
                .or_else(|| Some(default.clone()).filter(|d| !d.is_empty()))
                .or_else(|| values.first().cloned())
                .unwrap_or_default();
            (name.clone(), value)
        })
        .collect();
    let widgets: Vec<Widget> = json
        .get("widgets")
        .map(Json::items)
        .unwrap_or_default()
        .iter()
        .map(|w| Widget::read(w, &chosen))
        .collect();
    if let Some(id) = &conn_id {
        let mut filters: Vec<String> = widgets.iter().flat_map(Widget::filters).collect();
        filters.extend(declared.iter().map(|v| v.1.clone()));
        props.handle.watch(id, &filters);
    }
    // The device and alarm widgets: the gateway asked every 5 s.
    {
        let (auth, asked, handle) = (props.auth.clone(), asked.clone(), props.handle.clone());
        let wanted: Vec<(String, String)> = widgets
            .iter()
            .filter_map(|w| match w.kind.as_str() {
                "device" => Some((
                    w.id.clone(),
                    format!(
                        "/api/v1/devices/{}",
                        js_sys::encode_uri_component(&w.device)
                    ),
                )),
                "alarms" => Some((
                    w.id.clone(),
                    format!(
                        "/api/v1/alarms?state={}&limit={}",
                        if w.state == "open" {
                            "active,acknowledged"
                        } else {
                            &w.state
                        },
                        w.limit
                    ),
                )),
                _ => None,
            })
            .collect();
        let key = wanted.clone();
        use_effect_with(key, move |_| {
            let tick = wasm_bindgen::closure::Closure::<dyn FnMut()>::new(move || {
                for (id, path) in wanted.clone() {
                    let (auth, asked, handle) = (auth.clone(), asked.clone(), handle.clone());
                    wasm_bindgen_futures::spawn_local(async move {
                        let answer = match api::get_json(&path, auth.as_deref()).await {
                            Ok((_, json)) => json,
                            Err(e) => wasm_bindgen::JsValue::from_str(&e),
                        };
                        let mut a = asked.borrow_mut();
                        a.retain(|(w, _)| *w != id);
                        a.push((id, answer));
                        drop(a);
                        handle.request_frame();
                    });
                }
            });
            let window = web_sys::window();
            let _ = tick
                .as_ref()
                .unchecked_ref::<js_sys::Function>()
                .call0(&wasm_bindgen::JsValue::NULL);
            let timer = window.as_ref().and_then(|w| {
                w.set_interval_with_callback_and_timeout_and_arguments_0(
                    tick.as_ref().unchecked_ref(),
                    5_000,
                )
                .ok()
            });
            move || {
                if let (Some(w), Some(t)) = (window, timer) {
                    w.clear_interval_with_handle(t);
                }
                drop(tick);
            }
        });
    }
    let title = json
        .get("title")
        .and_then(Json::as_str)
        .unwrap_or_default()
        .to_owned();
    let columns = json
        .get("columns")
        .and_then(Json::as_f64)
        .unwrap_or(12.0)
        .max(1.0) as u32;
    let now = js_sys::Date::now();
    let ctx = Ctx {
        store: store.clone(),
        handle: props.handle.clone(),
        conn: conn_id.clone(),
        asked: asked.clone(),
        sent: sent.clone(),
        armed: armed.clone(),
        sort: sort.clone(),
        auth: props.auth.clone(),
        frame: props.frame,
        recorded: props.recorded,
        now,
    };
    let edit_mode = editing.is_some();
    let tiles: Vec<Html> = widgets.iter().enumerate().map(|(i, w)| {
        let style = match w.layout {
            Some((x, y, cw, ch)) => format!("grid-column:{} / span {};grid-row:{} / span {};--h:{ch}", x + 1, cw.min(columns), y + 1, ch),
            None => String::from("grid-column:span 3;grid-row:span 2"),
        };
        let at_fault = error.as_deref().is_some_and(|e| e.starts_with(&format!("widgets[{i}]")));
        html! {
            <div key={format!("{i}-{}", w.id)} class={classes!("tile", at_fault.then_some("at-fault"))} style={style} data-widget={w.id.clone()} data-kind={w.kind.clone()}>
                if edit_mode { { tile_tools(i, w, &editing, &grid, columns) } }
                { tile_title(w) }
                <div class="tile-body">{ body(w, &ctx) }</div>
            </div>
        }
    }).collect();
    let var_bar = declared.iter().map(|(name, filter, level, _, label)| {
        let values = variable_values(&topics_of(filter), *level);
        let current = chosen.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).unwrap_or_default();
        let onchange = {
            let (vars, name) = (vars.clone(), name.clone());
            Callback::from(move |e: Event| {
                let mut v: Vec<(String, String)> = (*vars).clone();
                v.retain(|(n, _)| *n != name);
                v.push((name.clone(), value_of(&e)));
                vars.set(v);
            })
        };
        html! {
            <label class="variable">{ format!("{label} ") }
                <select data-variable={name.clone()} onchange={onchange}>
                    { for values.iter().map(|v| html! { <option value={v.clone()} selected={*v == current}>{ v.clone() }</option> }) }
                    if values.is_empty() { <option value="">{ "(none seen yet)" }</option> }
                </select>
            </label>
        }
    });
    let head = (!props.kiosk).then(|| {
        head(
            props,
            &loaded,
            &editing,
            &adding,
            &error,
            &reload,
            &conn,
            &profiles,
            conn_id.as_deref(),
        )
    });
    html! {
        <section class={classes!("dashboard", props.kiosk.then_some("kiosk"), edit_mode.then_some("editing"))} aria-label={title.clone()}>
            <header class="dashboard-head">
                <h2 class="dashboard-name">{ title }</h2>
                { for var_bar }
                { head.unwrap_or_default() }
            </header>
            if let Some(e) = &*error { <p class="error" role="alert">{ e.clone() }</p> }
            if store.is_none() && !props.kiosk {
                <p class="muted">{ "Make a connection to this gateway to feed the dashboard: " }{ link(Route::New, "button", html! { "New connection" }) }</p>
            }
            if widgets.is_empty() {
                <p class="muted empty-dashboard">{ if edit_mode { "No widgets yet: pick a kind and a topic above, then Add widget." } else if props.kiosk { "This dashboard has no widgets yet." } else { "This dashboard has no widgets yet: Edit adds them." } }</p>
            }
            <div class="grid" ref={grid} style={format!("grid-template-columns:repeat({columns}, minmax(0, 1fr));grid-auto-rows:{ROW}px")}>
                { for tiles }
            </div>
        </section>
    }
}

/// A tile's title: its own, else what it shows (its topic, device or filter).
fn tile_title(w: &Widget) -> Html {
    let title = match w.kind.as_str() {
        _ if !w.title.is_empty() => w.title.as_str(),
        "text" | "alarms" | "button" => return html! {},
        "device" => w.device.as_str(),
        "chart" | "timeline" if w.series.len() > 1 => return html! {},
        _ => w.topic.as_str(),
    };
    html! { <h3 class="tile-title" title={title.to_owned()}>{ title.to_owned() }</h3> }
}

/// What the widgets read from.
struct Ctx {
    store: Option<StoreHandle>,
    handle: Handle,
    conn: Option<String>,
    asked: Asked,
    sent: UseStateHandle<Option<(String, Option<u16>)>>,
    armed: UseStateHandle<Option<String>>,
    sort: UseStateHandle<(String, usize, bool)>,
    auth: Option<String>,
    frame: u64,
    recorded: bool,
    now: f64,
}

impl Ctx {
    /// The value at `field` of the last message on `topic`, and when it came.
    fn value(&self, topic: &str, field: &str) -> Option<(Json, f64)> {
        let store = self.store.as_ref()?.0.borrow();
        let (bytes, at, _) = store.last(topic)?;
        Some((read_field(bytes, field)?, at))
    }

    /// What became of widget `id`'s last publish.
    fn outcome(&self, id: &str) -> Option<String> {
        let (widget, _) = self.sent.as_ref()?;
        if widget != id {
            return None;
        }
        let conn = self.conn.as_deref()?;
        self.handle.read(|w| {
            w.links
                .get(conn)
                .and_then(|l| l.last_publish.as_ref())
                .map(|(_, s)| s.clone())
        })
    }
}

/// The editing tools of a tile: move (drag), resize (drag the corner), edit as JSON, remove.
fn tile_tools(
    i: usize,
    w: &Widget,
    editing: &UseStateHandle<Option<Json>>,
    grid: &NodeRef,
    columns: u32,
) -> Html {
    let change = {
        let editing = editing.clone();
        move |f: &dyn Fn(&mut Json)| {
            if let Some(mut doc) = (*editing).clone() {
                if let Some(Json::Arr(items)) = widgets_mut(&mut doc)
                    && let Some(item) = items.get_mut(i)
                {
                    f(item);
                }
                editing.set(Some(doc));
            }
        }
    };
    let remove = {
        let editing = editing.clone();
        Callback::from(move |_: MouseEvent| {
            if let Some(mut doc) = (*editing).clone() {
                if let Some(Json::Arr(items)) = widgets_mut(&mut doc)
                    && i < items.len()
                {
                    items.remove(i);
                }
                editing.set(Some(doc));
            }
        })
    };
    // Dragging the handle moves (or resizes) by whole cells; the layout is set on release.
    let drag = |resize: bool| {
        let (change, grid, layout) = (
            change.clone(),
            grid.clone(),
            w.layout.unwrap_or((0, 0, 3, 2)),
        );
        Callback::from(move |e: PointerEvent| {
            let Some(el) = grid.cast::<web_sys::HtmlElement>() else {
                return;
            };
            let cell_w = f64::from(el.client_width()) / f64::from(columns);
            let (x0, y0) = (f64::from(e.client_x()), f64::from(e.client_y()));
            let change = change.clone();
            let up =
                wasm_bindgen::closure::Closure::once_into_js(move |u: web_sys::PointerEvent| {
                    let dx = ((f64::from(u.client_x()) - x0) / cell_w).round() as i64;
                    let dy = ((f64::from(u.client_y()) - y0) / f64::from(ROW)).round() as i64;
                    let (x, y, cw, ch) = layout;
                    let clamp = |v: i64, lo: i64, hi: i64| v.clamp(lo, hi.max(lo)) as u32;
                    let cols = i64::from(columns);
                    let (x, y, cw, ch) = if resize {
                        (
                            x,
                            y,
                            clamp(i64::from(cw) + dx, 1, cols - i64::from(x)),
                            clamp(i64::from(ch) + dy, 1, 50),
                        )
                    } else {
                        (
                            clamp(i64::from(x) + dx, 0, cols - i64::from(cw)),
                            clamp(i64::from(y) + dy, 0, 10_000),
                            cw,
                            ch,
                        )
                    };
                    change(&|item: &mut Json| {
                        let n = |v: u32| Json::Num(v.to_string());
                        item.set(
                            "layout",
                            Some(Json::Obj(vec![
                                ("x".into(), n(x)),
                                ("y".into(), n(y)),
                                ("w".into(), n(cw)),
                                ("h".into(), n(ch)),
                            ])),
                        );
                    });
                });
            if let Some(window) = web_sys::window() {
                let opts = web_sys::AddEventListenerOptions::new();
                opts.set_once(true);
                let _ = window.add_event_listener_with_callback_and_add_event_listener_options(
                    "pointerup",
                    up.unchecked_ref(),
                    &opts,
                );
            }
            e.prevent_default();
        })
    };
    let json_text = {
        let mut out = String::new();
        if let Some(doc) = editing.as_ref()
            && let Some(item) = doc.get("widgets").map(Json::items).and_then(|w| w.get(i))
        {
            payload::pretty(item, 0, &mut out);
        }
        out
    };
    let on_json = {
        let change = change.clone();
        Callback::from(move |e: Event| {
            if let Some(v) = payload::parse(&value_of(&e)) {
                change(&|item: &mut Json| *item = v.clone());
            }
        })
    };
    html! {
        <div class="tile-tools">
            <span class="move" title="drag to move" onpointerdown={drag(false)}>{ "✥" }</span>
            <details class="tile-json">
                <summary title="edit this widget as JSON">{ "✎" }</summary>
                <textarea class="widget-json" rows="8" spellcheck="false" value={json_text} onchange={on_json} />
            </details>
            <button class="secondary remove-widget" title="remove" onclick={remove}>{ "✕" }</button>
            <span class="resize" title="drag to resize" onpointerdown={drag(true)}>{ "◢" }</span>
            <span class="muted small">{ w.kind.clone() }</span>
        </div>
    }
}

fn widgets_mut(doc: &mut Json) -> Option<&mut Json> {
    match doc {
        Json::Obj(fields) => fields
            .iter_mut()
            .find(|(k, _)| k == "widgets")
            .map(|(_, v)| v),
        _ => None,
    }
}

/// The head of a dashboard (not in kiosk mode): the connection it reads, and the editor's
/// buttons.
#[allow(clippy::too_many_arguments)]
fn head(
    props: &ViewProps,
    loaded: &Rc<Doc>,
    editing: &UseStateHandle<Option<Json>>,
    adding: &UseStateHandle<bool>,
    error: &UseStateHandle<Option<String>>,
    reload: &UseStateHandle<u32>,
    conn: &UseStateHandle<Option<String>>,
    profiles: &[(String, String)],
    conn_id: Option<&str>,
) -> Html {
    let choose = {
        let conn = conn.clone();
        Callback::from(move |e: Event| {
            let v = value_of(&e);
            let _ = crate::storage::set(CONN_KEY, &v);
            conn.set(Some(v));
        })
    };
    let start = {
        let (editing, doc) = (editing.clone(), loaded.json.clone());
        Callback::from(move |_: MouseEvent| editing.set(Some(doc.clone())))
    };
    let cancel = {
        let (editing, error) = (editing.clone(), error.clone());
        Callback::from(move |_: MouseEvent| {
            editing.set(None);
            error.set(None);
        })
    };
    let save = {
        let (editing, error, reload, auth, id, version) = (
            editing.clone(),
            error.clone(),
            reload.clone(),
            props.auth.clone(),
            props.id.clone(),
            loaded.version,
        );
        Callback::from(move |_: MouseEvent| {
            let Some(mut doc) = (*editing).clone() else {
                return;
            };
            doc.set("version", Some(Json::Num(version.to_string())));
            let mut body = String::new();
            payload::compact(&doc, &mut body);
            let (editing, error, reload, auth, id) = (
                editing.clone(),
                error.clone(),
                reload.clone(),
                auth.clone(),
                id.clone(),
            );
            wasm_bindgen_futures::spawn_local(async move {
                match api::send_json(
                    "PUT",
                    &format!("/api/v1/dashboards/{id}"),
                    Some(&body),
                    auth.as_deref(),
                )
                .await
                {
                    Ok((200, _)) => {
                        editing.set(None);
                        error.set(None);
                        reload.set(*reload + 1);
                    }
                    Ok((_, json)) => error.set(Some(api_error(&json))),
                    Err(e) => error.set(Some(e)),
                }
            });
        })
    };
    let add = {
        let (editing, adding, error, auth) = (
            editing.clone(),
            adding.clone(),
            error.clone(),
            props.auth.clone(),
        );
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let (kind, topic) = (form_value(&e, "kind"), form_value(&e, "topic"));
            let Some(mut doc) = (*editing).clone() else {
                return;
            };
            if *adding {
                return;
            }
            adding.set(true);
            let mut w = vec![("kind".to_owned(), Json::Str(kind.clone()))];
            match kind.as_str() {
                "text" => w.push(("text".into(), Json::Str(topic))),
                "device" => w.push(("device".into(), Json::Str(topic))),
                "alarms" => {}
                _ => w.push(("topic".into(), Json::Str(topic))),
            }
            match widgets_mut(&mut doc) {
                Some(Json::Arr(items)) => items.push(Json::Obj(w)),
                _ => doc.set("widgets", Some(Json::Arr(vec![Json::Obj(w)]))),
            }
            // The gateway checks it as a save would and answers it as it will be kept: the
            // new widget shows where and how big it will be, and a bad one is refused now,
            // by its key, not at Save.
            let mut body = String::new();
            payload::compact(&doc, &mut body);
            let (editing, adding, error, auth) =
                (editing.clone(), adding.clone(), error.clone(), auth.clone());
            wasm_bindgen_futures::spawn_local(async move {
                let checked = api::send_json(
                    "POST",
                    "/api/v1/dashboards?check=true",
                    Some(&body),
                    auth.as_deref(),
                )
                .await;
                match checked {
                    Ok((200, json)) => {
                        let laid_out = js_sys::JSON::stringify(&json)
                            .ok()
                            .and_then(|t| payload::parse(&String::from(t)));
                        editing.set(Some(laid_out.unwrap_or(doc)));
                        error.set(None);
                    }
                    Ok((_, json)) => error.set(Some(api_error(&json))),
                    Err(e) => error.set(Some(e)),
                }
                adding.set(false);
            });
        })
    };
    let rename = {
        let editing = editing.clone();
        Callback::from(move |e: Event| {
            if let Some(mut doc) = (*editing).clone() {
                doc.set("title", Some(Json::Str(value_of(&e))));
                editing.set(Some(doc));
            }
        })
    };
    let kiosk_url = format!("/dashboards/{}?kiosk", props.id);
    let mut export = String::new();
    payload::pretty(&loaded.json, 0, &mut export);
    html! {
        <div class="dashboard-tools">
            <label>{ "Connection " }
                <select id="dashboard-connection" onchange={choose}>
                    { for profiles.iter().map(|(id, name)| html! { <option value={id.clone()} selected={Some(id.as_str()) == conn_id}>{ name.clone() }</option> }) }
                </select>
            </label>
            <a class="button secondary" href={kiosk_url} target="_blank">{ "Wall screen" }</a>
            <details class="export">
                <summary>{ "Export" }</summary>
                <textarea readonly=true rows="8" class="export-json" value={export} />
            </details>
            if let Some(doc) = editing.as_ref() {
                <input class="rename" aria-label="title" value={doc.get("title").and_then(Json::as_str).unwrap_or_default().to_owned()} onchange={rename} />
                <form class="add-widget row" onsubmit={add}>
                    <select name="kind" aria-label="kind">{ for KINDS.iter().map(|k| html! { <option value={*k}>{ *k }</option> }) }</select>
                    <input name="topic" aria-label="topic" placeholder="topic (device id, or text)" />
                    <button type="submit" class="secondary" id="add-widget" disabled={**adding}>{ "Add widget" }</button>
                </form>
                <button id="save-dashboard" onclick={save}>{ "Save" }</button>
                <button class="secondary" onclick={cancel}>{ "Cancel" }</button>
            } else {
                <button id="edit-dashboard" class="secondary" onclick={start}>{ "Edit" }</button>
            }
        </div>
    }
}

/// A widget's body.
fn body(w: &Widget, ctx: &Ctx) -> Html {
    match w.kind.as_str() {
        "value" => value_tile(w, ctx),
        "gauge" => gauge(w, ctx),
        "chart" | "timeline" => html! {
            <Chart series={w.series.clone()} window_ms={w.window_ms} timeline={w.kind == "timeline"} area={w.area} band={w.band}
                   on_words={w.on_words.clone()} store={ctx.store.clone()} frame={ctx.frame} auth={ctx.auth.clone()} recorded={ctx.recorded} />
        },
        "bar" => bars(w, ctx),
        "table" => table(w, ctx),
        "text" => markdown(&w.text),
        "switch" | "button" | "slider" | "input" => control(w, ctx),
        "device" => device(w, ctx),
        "alarms" => alarm_list(ctx, &w.id),
        _ => {
            html! { <p class="muted">{ format!("A {} widget is not known to this version of the app.", w.kind) }</p> }
        }
    }
}

/// Nothing received yet on `topic`.
fn waiting(topic: &str) -> Html {
    html! { <p class="muted waiting">{ format!("waiting for {topic}") }</p> }
}

/// Characters a value tile shows in its big type; longer ones get a smaller type.
const LONG_VALUE: usize = 12;

fn value_tile(w: &Widget, ctx: &Ctx) -> Html {
    let Some((v, at)) = ctx.value(&w.topic, &w.field) else {
        return waiting(&w.topic);
    };
    let (text, colour) = match v.as_f64() {
        Some(n) if !matches!(v, Json::Str(_)) || w.decimals.is_some() => {
            (fixed(n, w.decimals), threshold_tone(&w.thresholds, n))
        }
        _ => (v.text(), None),
    };
    // A long value (a whole JSON document, before a field is chosen) in a smaller type, so
    // that it fits its tile.
    let long = text.chars().count() > LONG_VALUE;
    html! {
        <div class={classes!("value", long.then_some("long"))} title={format!("{} · {}", w.topic, crate::tick::ago(at, ctx.now))}>
            <span class="big" style={colour.map(|c| format!("color:{c}"))}>{ text }</span>
            if !w.unit.is_empty() { <span class="unit">{ w.unit.clone() }</span> }
        </div>
    }
}

fn gauge(w: &Widget, ctx: &Ctx) -> Html {
    let Some(n) = ctx.value(&w.topic, &w.field).and_then(|(v, _)| v.as_f64()) else {
        return waiting(&w.topic);
    };
    let (lo, hi) = (w.min.unwrap_or(0.0), w.max.unwrap_or(100.0));
    let share = ((n - lo) / (hi - lo)).clamp(0.0, 1.0);
    let colour = threshold_tone(&w.thresholds, n).unwrap_or("#2563eb");
    // A half disc filled to `share` by a conic gradient: no trigonometry in the app.
    let style = format!(
        "background:conic-gradient(from -90deg, {colour} 0 {}deg, var(--track) 0 180deg, transparent 0)",
        (share * 180.0) as u32
    );
    html! {
        <div class="gauge" role="meter" aria-valuenow={fixed(n, w.decimals)} aria-valuemin={fixed(lo, None)} aria-valuemax={fixed(hi, None)}>
            <div class="arc" style={style}><div class="hole" /></div>
            <span class="big">{ fixed(n, w.decimals) }<span class="unit">{ w.unit.clone() }</span></span>
            <span class="range muted">{ format!("{} – {}", fixed(lo, None), fixed(hi, None)) }</span>
        </div>
    }
}

fn bars(w: &Widget, ctx: &Ctx) -> Html {
    let Some(store) = &ctx.store else {
        return waiting(&w.topic);
    };
    let rows: Vec<(String, f64)> = {
        let s = store.0.borrow();
        s.topics_matching(&w.topic)
            .into_iter()
            .filter_map(|t| {
                let (bytes, _, _) = s.last(&t)?;
                Some((t, read_field(bytes, &w.field)?.as_f64()?))
            })
            .collect()
    };
    if rows.is_empty() {
        return waiting(&w.topic);
    }
    let lo = w
        .min
        .unwrap_or(0.0)
        .min(rows.iter().map(|r| r.1).fold(f64::INFINITY, f64::min));
    let hi = w
        .max
        .unwrap_or_else(|| rows.iter().map(|r| r.1).fold(f64::NEG_INFINITY, f64::max));
    html! {
        <ul class="bars">
            { for rows.into_iter().map(|(t, v)| {
                let share = if hi > lo { ((v - lo) / (hi - lo) * 100.0).clamp(0.0, 100.0) } else { 100.0 };
                let colour = threshold_tone(&w.thresholds, v).unwrap_or("#2563eb");
                html! {
                    <li class="bar-row" data-topic={t.clone()}>
                        <span class="bar-name" title={t.clone()}>{ t.rsplit('/').nth(usize::from(t.ends_with(&w.topic.rsplit('/').next().unwrap_or_default()) && w.topic.contains('+'))).unwrap_or(&t).to_owned() }</span>
                        <span class="bar-track"><span class="bar-fill" style={format!("width:{}%;background:{colour}", share as u32)} /></span>
                        <span class="bar-value">{ format!("{}{}", fixed(v, w.decimals), w.unit) }</span>
                    </li>
                }
            }) }
        </ul>
    }
}

fn table(w: &Widget, ctx: &Ctx) -> Html {
    let Some(store) = &ctx.store else {
        return waiting(&w.topic);
    };
    let columns: Vec<(String, String)> = if w.columns.is_empty() {
        vec![(String::new(), "value".into())]
    } else {
        w.columns.clone()
    };
    let mut rows: Vec<(String, Vec<Json>)> = {
        let s = store.0.borrow();
        s.topics_matching(&w.topic)
            .into_iter()
            .filter_map(|t| {
                let (bytes, _, _) = s.last(&t)?;
                let whole = payload_json(bytes);
                let cells = columns
                    .iter()
                    .map(|(f, _)| whole.pointer(f).cloned().unwrap_or(Json::Null))
                    .collect();
                Some((t, cells))
            })
            .collect()
    };
    let (sorted_widget, by, desc) = &*ctx.sort;
    // (A column chosen before the widget was edited to have fewer: no sort, no panic.)
    if *sorted_widget == w.id && *by > 0 && *by <= columns.len() {
        crate::sort::sort_by(&mut rows, |a, b| {
            let (x, y) = (&a.1[by - 1], &b.1[by - 1]);
            let o = match (x.as_f64(), y.as_f64()) {
                (Some(p), Some(q)) => p.total_cmp(&q),
                _ => kite_mqtt::topic::natural_cmp(&x.text(), &y.text()),
            };
            if *desc { o.reverse() } else { o }
        });
    }
    let header = |i: usize, label: String| {
        let (sort, id) = (ctx.sort.clone(), w.id.clone());
        let onclick = Callback::from(move |_: MouseEvent| {
            let desc = sort.0 == id && sort.1 == i && !sort.2;
            sort.set((id.clone(), i, desc));
        });
        html! { <th onclick={onclick} class="sortable">{ label }</th> }
    };
    html! {
        <table class="tile-table">
            <thead><tr>
                { header(0, "topic".into()) }
                { for columns.iter().enumerate().map(|(i, (_, label))| header(i + 1, label.clone())) }
            </tr></thead>
            <tbody>
                { for rows.into_iter().map(|(t, cells)| html! {
                    <tr data-topic={t.clone()}>
                        <td>{ t }</td>
                        { for cells.iter().map(|c| html! { <td>{ if *c == Json::Null { String::new() } else { c.text() } }</td> }) }
                    </tr>
                }) }
            </tbody>
        </table>
    }
}

/// Where a switch stands for `state`: on, off, or neither (`None`: no state yet, or a payload
/// that is not one of its two).
fn switch_position(state: Option<&str>, on: &str, off: &str) -> Option<bool> {
    match state {
        Some(s) if s == on => Some(true),
        Some(s) if s == off => Some(false),
        _ => None,
    }
}

/// A control: it shows the topic's real state (not its own), publishes, and shows what the
/// broker said.
fn control(w: &Widget, ctx: &Ctx) -> Html {
    let state = ctx.value(&w.topic, &w.field).map(|(v, _)| v.text());
    let outcome = ctx.outcome(&w.id);
    let publish = {
        let (id, topic, qos, retain) = (w.id.clone(), w.command_topic.clone(), w.qos, w.retain);
        let (handle, conn, sent) = (ctx.handle.clone(), ctx.conn.clone(), ctx.sent.clone());
        move |payload: String| {
            let Some(conn) = &conn else { return };
            let packet = handle
                .publish_to(conn, &topic, &payload, qos, retain)
                .ok()
                .flatten();
            sent.set(Some((id.clone(), packet)));
        }
    };
    let input = match w.kind.as_str() {
        "switch" => {
            let position = switch_position(state.as_deref(), &w.on, &w.off);
            let on = position == Some(true);
            let next = if on { w.off.clone() } else { w.on.clone() };
            let onclick = Callback::from(move |_: MouseEvent| publish(next.clone()));
            // A state that is neither payload is shown as it is, the knob in the middle, and
            // says how to fix it; a press sends the "on" payload.
            let title = match (&state, position) {
                (Some(s), None) => format!(
                    "the state \"{s}\" is neither on (\"{}\") nor off (\"{}\"): set this widget's on and off payloads",
                    w.on, w.off
                ),
                _ => String::new(),
            };
            html! {
                <button class={classes!("switch", on.then_some("on"), position.is_none().then_some("unknown"))} role="switch" aria-checked={on.to_string()} title={title} onclick={onclick}>
                    <span class="knob" />{ state.clone().unwrap_or_else(|| "unknown".into()) }
                </button>
            }
        }
        "button" => {
            let is_armed = ctx.armed.as_deref() == Some(w.id.as_str());
            let (armed, id, confirm, payload) = (
                ctx.armed.clone(),
                w.id.clone(),
                w.confirm,
                w.payload.clone(),
            );
            let onclick = Callback::from(move |_: MouseEvent| {
                if confirm && armed.as_deref() != Some(id.as_str()) {
                    armed.set(Some(id.clone()));
                    return;
                }
                armed.set(None);
                publish(payload.clone());
            });
            html! { <button class="press" onclick={onclick}>{ if is_armed { "Press again to send" } else if w.title.is_empty() { "Send" } else { w.title.as_str() } }</button> }
        }
        "slider" => {
            let onchange = Callback::from(move |e: Event| publish(value_of(&e)));
            html! {
                <div class="slider">
                    <input type="range" min={fixed(w.min.unwrap_or(0.0), None)} max={fixed(w.max.unwrap_or(100.0), None)} step={fixed(w.step, None)}
                           value={state.clone().unwrap_or_default()} onchange={onchange} aria-label={w.topic.clone()} />
                    <span class="big">{ state.clone().unwrap_or_else(|| "–".into()) }<span class="unit">{ w.unit.clone() }</span></span>
                </div>
            }
        }
        _ => {
            let onsubmit = Callback::from(move |e: SubmitEvent| {
                e.prevent_default();
                publish(form_value(&e, "value"));
            });
            html! {
                <form class="row" onsubmit={onsubmit}>
                    <input name="value" type={if w.number_input { "number" } else { "text" }} step="any" placeholder={state.clone().unwrap_or_default()} aria-label={w.topic.clone()} />
                    if !w.unit.is_empty() { <span class="unit">{ w.unit.clone() }</span> }
                    <button type="submit">{ "Send" }</button>
                </form>
            }
        }
    };
    html! {
        <div class="control">
            { input }
            if let Some(o) = outcome { <p class="muted small outcome">{ o }</p> }
        </div>
    }
}

fn asked(ctx: &Ctx, id: &str) -> Option<wasm_bindgen::JsValue> {
    ctx.asked
        .borrow()
        .iter()
        .find(|(w, _)| w == id)
        .map(|(_, v)| v.clone())
}

fn device(w: &Widget, ctx: &Ctx) -> Html {
    let Some(d) = asked(ctx, &w.id) else {
        return waiting(&w.device);
    };
    let state = api::field(&d, "state").as_string();
    let Some(state) = state else {
        let why = api::field(&d, "error")
            .as_string()
            .unwrap_or_else(|| "the gateway does not answer".into());
        return html! { <p class="muted">{ why }</p> };
    };
    let seen = api::field(&d, "last_seen").as_f64();
    html! {
        <div class="device-tile">
            <span class={classes!("dot", format!("state-{state}"))} />
            <span class="big">{ w.device.clone() }</span>
            <span class={classes!("state", format!("state-{state}"))}>{ state }</span>
            if let Some(t) = seen { <span class="muted small">{ format!("last seen {}", crate::tick::ago(t, ctx.now)) }</span> }
        </div>
    }
}

fn alarm_list(ctx: &Ctx, id: &str) -> Html {
    let Some(a) = asked(ctx, id) else {
        return waiting("the gateway's alarms");
    };
    let alarms = crate::alarms::parse_alarms(&a);
    if api::field(&a, "alarms").is_undefined() {
        let why = api::field(&a, "error")
            .as_string()
            .unwrap_or_else(|| "the gateway keeps no alarms".into());
        return html! { <p class="muted">{ why }</p> };
    }
    if alarms.is_empty() {
        return html! { <p class="muted">{ "No alarm." }</p> };
    }
    html! {
        <ul class="tile-alarms">
            { for alarms.iter().map(|a| html! {
                <li>
                    <span class={classes!("severity", a.severity.clone())}>{ a.severity.clone() }</span>
                    <strong>{ format!(" {}", a.rule) }</strong>{ format!(" {} · {}", a.source, a.state) }
                </li>
            }) }
        </ul>
    }
}

/// A small, safe subset of Markdown: `#` headings, `-` lists, paragraphs, `**bold**`,
/// `` `code` `` — built as elements, never as HTML text.
pub fn markdown(text: &str) -> Html {
    let mut blocks: Vec<Html> = Vec::new();
    let mut list: Vec<Html> = Vec::new();
    let flush = |list: &mut Vec<Html>, blocks: &mut Vec<Html>| {
        if !list.is_empty() {
            let items = std::mem::take(list);
            blocks.push(html! { <ul>{ for items }</ul> });
        }
    };
    for line in text.lines() {
        let line = line.trim_end();
        if let Some(item) = line.strip_prefix("- ").or_else(|| line.strip_prefix("* ")) {
            list.push(html! { <li>{ inline(item) }</li> });
            continue;
        }
        flush(&mut list, &mut blocks);
        if line.is_empty() {
            continue;
        }
        let level = line.bytes().take_while(|b| *b == b'#').count();
        if (1..=3).contains(&level) && line.as_bytes().get(level) == Some(&b' ') {
            blocks.push(
                html! { <h4 class={format!("md-h{level}")}>{ inline(&line[level + 1..]) }</h4> },
            );
        } else {
            blocks.push(html! { <p>{ inline(line) }</p> });
        }
    }
    flush(&mut list, &mut blocks);
    html! { <div class="markdown">{ for blocks }</div> }
}

/// `**bold**` and `` `code` `` in a line.
fn inline(text: &str) -> Html {
    let mut parts: Vec<Html> = Vec::new();
    let mut rest = text;
    loop {
        let next = [("**", 0u8), ("`", 1)]
            .into_iter()
            .filter_map(|(m, k)| rest.find(m).map(|i| (i, m, k)))
            .min_by_key(|(i, _, _)| *i);
        let Some((i, mark, k)) = next else { break };
        let after = &rest[i + mark.len()..];
        let Some(end) = after.find(mark) else { break };
        parts.push(html! { { rest[..i].to_owned() } });
        let inner = after[..end].to_owned();
        parts.push(if k == 0 {
            html! { <strong>{ inner }</strong> }
        } else {
            html! { <code>{ inner }</code> }
        });
        rest = &after[end + mark.len()..];
    }
    parts.push(html! { { rest.to_owned() } });
    html! { <>{ for parts }</> }
}

// ---- charts --------------------------------------------------------------------------------

/// Properties of [`Chart`].
#[derive(Properties, PartialEq)]
pub struct ChartProps {
    pub series: Vec<SeriesSpec>,
    pub window_ms: f64,
    pub timeline: bool,
    pub area: bool,
    pub band: bool,
    pub on_words: Vec<String>,
    pub store: Option<StoreHandle>,
    pub frame: u64,
    pub auth: Option<String>,
    pub recorded: bool,
}

/// What a chart keeps of one series: the recorded buckets (from the gateway, older than the
/// live points) and the live points (time, value), oldest first, and the last message read.
#[derive(Default)]
struct Kept {
    recorded: Vec<Bucket>,
    recorded_width: f64,
    live: std::collections::VecDeque<(f64, f64)>,
    seen: u64,
}

/// A chart (lines over time, optionally with the min–max band and the area filled) or a
/// timeline (on/off over time) of its series: recorded history first, then the live
/// points, drawn on a canvas at most once per frame, downsampled to one bucket per pixel
/// column (min and max kept), points older than the window dropped.
#[component]
pub fn Chart(props: &ChartProps) -> Html {
    let canvas = use_node_ref();
    let kept = use_mut_ref(Vec::<Kept>::new);
    // The recorded history, once per series list (and once the gateway is known to record):
    // a chart's from the series API, a timeline's from the messages (its states are words).
    {
        let (kept, auth, series, window, recorded, timeline, words) = (
            kept.clone(),
            props.auth.clone(),
            props.series.clone(),
            props.window_ms,
            props.recorded,
            props.timeline,
            props.on_words.clone(),
        );
        use_effect_with((props.series.clone(), props.recorded), move |_| {
            *kept.borrow_mut() = series.iter().map(|_| Kept::default()).collect();
            for (i, s) in series.into_iter().enumerate().filter(|_| recorded) {
                let (kept, auth, words) = (kept.clone(), auth.clone(), words.clone());
                wasm_bindgen_futures::spawn_local(async move {
                    let now = js_sys::Date::now();
                    if timeline {
                        let path = format!(
                            "/api/v1/history?topic={}&from={}&to={}&limit=1000",
                            js_sys::encode_uri_component(&s.topic),
                            (now - window) as u64,
                            now as u64
                        );
                        let Ok((200, json)) = api::get_json(&path, auth.as_deref()).await else {
                            return;
                        };
                        let mut k = kept.borrow_mut();
                        let Some(k) = k.get_mut(i) else { return };
                        // Newest first: each goes in front of the live points.
                        for m in api::list(&json, "messages") {
                            let t = api::field(&m, "t").as_f64().unwrap_or(0.0);
                            let text = api::field(&m, "payload").as_string().unwrap_or_default();
                            let value = read_field(text.as_bytes(), &s.field).map(|v| v.text());
                            let on = value
                                .is_some_and(|v| words.iter().any(|w| w.eq_ignore_ascii_case(&v)));
                            k.live.push_front((t, f64::from(u8::from(on))));
                        }
                        return;
                    }
                    let path = format!(
                        "/api/v1/history/series?topic={}&field={}&from={}&to={}&points=600",
                        js_sys::encode_uri_component(&s.topic),
                        js_sys::encode_uri_component(&s.field),
                        (now - window) as u64,
                        now as u64
                    );
                    let Ok((200, json)) = api::get_json(&path, auth.as_deref()).await else {
                        return;
                    };
                    let Some(first) = api::list(&json, "series").into_iter().next() else {
                        return;
                    };
                    let n = |v: &wasm_bindgen::JsValue, k: &str| {
                        api::field(v, k).as_f64().unwrap_or(f64::NAN)
                    };
                    let buckets: Vec<Bucket> = api::list(&first, "buckets")
                        .iter()
                        .map(|b| Bucket {
                            t: n(b, "t"),
                            first: n(b, "first"),
                            last: n(b, "last"),
                            min: n(b, "min"),
                            max: n(b, "max"),
                            count: n(b, "count"),
                        })
                        .collect();
                    if let Some(k) = kept.borrow_mut().get_mut(i) {
                        k.recorded_width = buckets
                            .get(1)
                            .zip(buckets.first())
                            .map_or(1_000.0, |(b, a)| b.t - a.t);
                        k.recorded = buckets;
                    }
                });
            }
        });
    }
    // New messages since the last frame, from the store.
    let now = js_sys::Date::now();
    if let Some(store) = &props.store {
        let s = store.0.borrow();
        let mut kept = kept.borrow_mut();
        for (spec, k) in props.series.iter().zip(kept.iter_mut()) {
            if let Some(node) = s.find(&spec.topic) {
                let seen = k.seen;
                for e in s.history(node).filter(|e| e.seq >= seen) {
                    k.seen = e.seq + 1;
                    let v = read_field(&e.payload, &spec.field).and_then(|v| {
                        if props.timeline {
                            let t = v.text();
                            Some(f64::from(u8::from(
                                props.on_words.iter().any(|w| w.eq_ignore_ascii_case(&t)),
                            )))
                        } else {
                            v.as_f64()
                        }
                    });
                    if let Some(v) = v {
                        k.live.push_back((e.at_ms, v));
                    }
                }
            }
            while k
                .live
                .front()
                .is_some_and(|(t, _)| *t < now - props.window_ms)
            {
                k.live.pop_front();
            }
        }
    }
    {
        let (canvas, kept, props_key) = (
            canvas.clone(),
            kept.clone(),
            (props.frame, props.timeline, props.area, props.band),
        );
        let (series, window) = (props.series.clone(), props.window_ms);
        use_effect_with(props.frame, move |_| {
            if let Some(c) = canvas.cast::<web_sys::HtmlCanvasElement>() {
                paint(
                    &c,
                    &kept.borrow(),
                    &series,
                    window,
                    props_key.1,
                    props_key.2,
                    props_key.3,
                );
            }
        });
    }
    let legend = props.series.iter().map(|s| html! {
        <span class="legend"><span class="swatch" style={format!("background:{}", tone(&s.colour))} />{ s.label.clone() }</span>
    });
    html! {
        <div class="chart">
            <canvas ref={canvas} class="chart-canvas" />
            <div class="legends">{ for legend }</div>
        </div>
    }
}

/// Draws the kept series over the last `window` ms.
fn paint(
    canvas: &web_sys::HtmlCanvasElement,
    kept: &[Kept],
    series: &[SeriesSpec],
    window: f64,
    timeline: bool,
    area: bool,
    band: bool,
) {
    let now = js_sys::Date::now();
    let span = Span {
        from: now - window,
        to: now,
    };
    let height = f64::from(canvas.client_height()).max(60.0);
    let columns = f64::from(canvas.client_width()).max(50.0);
    let width = window / columns;
    let built: Vec<Vec<Bucket>> = kept
        .iter()
        .map(|k| {
            let live_from = k.live.front().map_or(f64::INFINITY, |p| p.0);
            let mut out: Vec<Bucket> = k
                .recorded
                .iter()
                .filter(|b| b.t + k.recorded_width <= live_from)
                .copied()
                .collect();
            out.extend(downsample(k.live.iter().copied(), span.from, width));
            out
        })
        .collect();
    if timeline {
        crate::history::draw_states(
            canvas,
            height,
            span,
            &built
                .iter()
                .zip(series)
                .map(|(b, s)| (tone(&s.colour), &b[..]))
                .collect::<Vec<_>>(),
        );
        return;
    }
    let lines: Vec<Line> = built
        .iter()
        .zip(series)
        .map(|(b, s)| Line {
            colour: tone(&s.colour),
            width,
            buckets: b,
        })
        .collect();
    crate::history::draw(canvas, height, span, &lines, band, area);
}

/// Points (time, value) in buckets `width` ms wide from `from`: first, last, min, max and
/// count per bucket (M4) — one per pixel column, so that the line drawn is the same as the
/// one of every point.
pub fn downsample(points: impl Iterator<Item = (f64, f64)>, from: f64, width: f64) -> Vec<Bucket> {
    let mut out: Vec<Bucket> = Vec::new();
    for (t, v) in points {
        let start = from + ((t - from) / width).floor() * width;
        match out.last_mut() {
            Some(b) if b.t == start => {
                b.last = v;
                b.min = b.min.min(v);
                b.max = b.max.max(v);
                b.count += 1.0;
            }
            _ => out.push(Bucket {
                t: start,
                first: v,
                last: v,
                min: v,
                max: v,
                count: 1.0,
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switch_stands_where_its_state_says_and_nowhere_for_another_payload() {
        assert_eq!(switch_position(Some("on"), "on", "off"), Some(true));
        assert_eq!(switch_position(Some("off"), "on", "off"), Some(false));
        // A device that says 1 to a switch whose payloads are on/off: neither, not "off".
        assert_eq!(switch_position(Some("1"), "on", "off"), None);
        assert_eq!(switch_position(None, "on", "off"), None);
        assert_eq!(switch_position(Some(""), "on", ""), Some(false));
    }

    #[test]
    fn variables_are_substituted_and_listed() {
        let vars = vec![("device".to_owned(), "a".to_owned())];
        assert_eq!(substitute("plant/${device}/temp", &vars), "plant/a/temp");
        assert_eq!(substitute("plant/${other}/x", &vars), "plant//x");
        assert_eq!(substitute("plant/${device", &vars), "plant/${device");
        let topics: Vec<String> = ["plant/dev-10/t", "plant/dev-2/t", "plant/dev-2/h"]
            .map(String::from)
            .to_vec();
        assert_eq!(variable_values(&topics, 1), ["dev-2", "dev-10"]);
    }

    #[test]
    fn widgets_read_with_defaults() {
        let j = payload::parse(r#"{"id":"w1","kind":"switch","topic":"p/${d}/valve","commandTopic":"p/${d}/set","qos":0,"layout":{"x":1,"y":2,"w":3,"h":4}}"#).unwrap();
        let w = Widget::read(&j, &[("d".into(), "a".into())]);
        assert_eq!(
            (w.topic.as_str(), w.command_topic.as_str()),
            ("p/a/valve", "p/a/set")
        );
        assert_eq!((w.on.as_str(), w.off.as_str(), w.qos), ("on", "off", 0));
        assert_eq!(w.layout, Some((1, 2, 3, 4)));
        assert_eq!(w.filters(), ["p/a/valve"]);
        let c = Widget::read(&payload::parse(r#"{"kind":"chart","series":[{"topic":"a"},{"topic":"b","color":"red","label":"B"}]}"#).unwrap(), &[]);
        assert_eq!(c.series.len(), 2);
        assert_eq!(
            (c.series[0].colour.as_str(), c.series[1].label.as_str()),
            ("blue", "B")
        );
        assert_eq!(c.window_ms, 3_600_000.0);
        assert_eq!(c.filters(), ["a", "b"]);
    }

    #[test]
    fn fields_thresholds_and_downsampling() {
        assert_eq!(
            read_field(br#"{"a":{"t":21.5}}"#, "/a/t").and_then(|v| v.as_f64()),
            Some(21.5)
        );
        assert_eq!(read_field(b"ON", ""), Some(Json::Str("ON".into())));
        let t = vec![(25.0, "orange".to_owned()), (30.0, "red".to_owned())];
        assert_eq!(threshold_tone(&t, 20.0), None);
        assert_eq!(threshold_tone(&t, 27.0), Some("#ea580c"));
        assert_eq!(threshold_tone(&t, 31.0), Some("#dc2626"));
        let b = downsample(
            [(0.0, 1.0), (5.0, 3.0), (9.0, 2.0), (10.0, 7.0)].into_iter(),
            0.0,
            10.0,
        );
        assert_eq!(b.len(), 2);
        assert_eq!(
            (b[0].first, b[0].last, b[0].min, b[0].max, b[0].count),
            (1.0, 2.0, 1.0, 3.0, 3.0)
        );
        assert_eq!((b[1].t, b[1].first), (10.0, 7.0));
    }
}
