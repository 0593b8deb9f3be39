//! The Devices view: the gateway's device monitor (`GET /api/v1/devices`) as a table that
//! stays fast with 10,000 devices — only the rows in view are rendered — sorted by id
//! (naturally: `dev-2` before `dev-10`), state or last seen, filtered by state and text,
//! "last seen 3 min ago" ticking each second, asked again every 5 s. A row opens the device's
//! topics in a connection that dials the gateway's default broker.

use std::cmp::Ordering;

use web_sys::HtmlElement;
use yew::prelude::*;

use crate::api::{self, Load};
use crate::route::{Route, link};
use crate::tick::{ago, local_time, use_interval};

/// A row's height (px); the table's viewport shows this many rows.
const ROW_HEIGHT: f64 = 34.0;
const VIEWPORT_ROWS: f64 = 16.0;
/// Rows rendered beyond the viewport on each side.
const OVERSCAN: usize = 8;

/// Properties of [`DevicesView`].
#[derive(Properties, PartialEq)]
pub struct DevicesProps {
    /// `Authorization` for the gateway's API, if a connection gives a login.
    pub auth: Option<String>,
    /// A connection that dials the gateway's default broker (to open a device's topics).
    pub profile: Option<String>,
}

/// One device, as the table shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Device {
    pub id: String,
    pub state: String,
    pub since: f64,
    pub last_seen: Option<f64>,
    pub last_topic: Option<String>,
    /// The latest word on its presence ("offline", "keep-alive timeout").
    pub detail: Option<String>,
    /// Its first topic filter without its wildcard (`plant/dev-a`), to open in the explorer.
    pub branch: Option<String>,
}

/// The devices of an answer of `GET /api/v1/devices`.
pub fn parse_devices(json: &wasm_bindgen::JsValue) -> Vec<Device> {
    api::list(json, "devices")
        .iter()
        .filter_map(|d| {
            let text = |name: &str| api::field(d, name).as_string();
            let said = api::field(d, "said");
            let branch = api::list(d, "topics")
                .first()
                .and_then(wasm_bindgen::JsValue::as_string)
                .map(|t| {
                    t.trim_end_matches("/#")
                        .split('/')
                        .take_while(|l| *l != "+" && *l != "#")
                        .collect::<Vec<_>>()
                        .join("/")
                })
                .filter(|b| !b.is_empty());
            Some(Device {
                id: text("id")?,
                state: text("state")?,
                since: api::field(d, "since").as_f64()?,
                last_seen: api::field(d, "last_seen").as_f64(),
                last_topic: text("last_topic"),
                detail: api::field(&said, "detail").as_string(),
                branch,
            })
        })
        .collect()
}

/// How the table is sorted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sort {
    Id,
    State,
    LastSeen,
}

/// Orders ids as people read them: `dev-2` before `dev-10`.
pub use kite_mqtt::topic::natural_cmp as natural;

/// The devices shown: those in `state` (all: `None`) whose id or last topic contains `text`
/// (ignoring ASCII case), sorted.
pub fn shown<'d>(
    devices: &'d [Device],
    state: Option<&str>,
    text: &str,
    sort: Sort,
) -> Vec<&'d Device> {
    let text = text.trim().to_ascii_lowercase();
    let has = |s: &str| s.to_ascii_lowercase().contains(&text);
    let mut v: Vec<&Device> = devices
        .iter()
        .filter(|d| state.is_none_or(|s| d.state == s))
        .filter(|d| text.is_empty() || has(&d.id) || d.last_topic.as_deref().is_some_and(has))
        .collect();
    let rank = |s: &str| match s {
        "offline" => 0,
        "stale" => 1,
        "unknown" => 2,
        _ => 3,
    };
    // One comparison for every order (one sort in the app's code, not three).
    crate::sort::sort_by(&mut v, |a, b| {
        let first = match sort {
            Sort::Id => Ordering::Equal,
            Sort::State => rank(&a.state).cmp(&rank(&b.state)),
            Sort::LastSeen => b
                .last_seen
                .unwrap_or(0.0)
                .total_cmp(&a.last_seen.unwrap_or(0.0)),
        };
        first.then_with(|| natural(&a.id, &b.id))
    });
    v
}

/// The Devices view.
#[component]
pub fn DevicesView(props: &DevicesProps) -> Html {
    let load = use_state(|| Load::<Vec<Device>>::Loading);
    let now = use_state(js_sys::Date::now);
    let state = use_state(|| None::<String>);
    let text = use_state(String::new);
    let sort = use_state(|| Sort::Id);
    let scroll = use_state(|| 0.0_f64);
    {
        let (load, auth) = (load.clone(), props.auth.clone());
        use_interval(5_000, move || {
            let (load, auth) = (load.clone(), auth.clone());
            wasm_bindgen_futures::spawn_local(async move {
                let answer = api::ask("/api/v1/devices?limit=10000", auth.as_deref()).await;
                load.set(Load::from(answer, parse_devices));
            });
        });
    }
    {
        let now = now.clone();
        use_interval(1_000, move || now.set(js_sys::Date::now()));
    }
    let devices = match load.ready(
        "Devices",
        "This gateway monitors no devices. Add [[devices]] rules to its config (status topics with Wills, activity, client connections, Sparkplug B): see the README's \"Devices\".",
    ) {
        Ok(d) => d,
        Err(card) => return card,
    };
    let count = |s: &str| devices.iter().filter(|d| d.state == s).count();
    let rows = shown(&devices, state.as_deref(), &text, *sort);
    let total = rows.len();
    let first = ((*scroll / ROW_HEIGHT) as usize).saturating_sub(OVERSCAN);
    let end = (first + VIEWPORT_ROWS as usize + 2 * OVERSCAN).min(total);
    let on_scroll = {
        let scroll = scroll.clone();
        Callback::from(move |e: Event| {
            let el: HtmlElement = e.target_unchecked_into();
            scroll.set(f64::from(el.scroll_top()));
        })
    };
    let chip = |value: Option<&'static str>, label: String| {
        let on = state.as_deref() == value;
        let state = state.clone();
        let onclick = Callback::from(move |_: MouseEvent| state.set(value.map(str::to_owned)));
        html! {
            <button class={classes!("chip", value, on.then_some("on"))} aria-pressed={on.to_string()} onclick={onclick}>{ label }</button>
        }
    };
    let on_text = {
        let text = text.clone();
        Callback::from(move |e: InputEvent| {
            let el: web_sys::HtmlInputElement = e.target_unchecked_into();
            text.set(el.value());
        })
    };
    let on_sort = {
        let sort = sort.clone();
        Callback::from(move |e: Event| {
            let el: web_sys::HtmlSelectElement = e.target_unchecked_into();
            sort.set(match el.value().as_str() {
                "state" => Sort::State,
                "seen" => Sort::LastSeen,
                _ => Sort::Id,
            });
        })
    };
    let now = *now;
    html! {
        <section class="card devices" aria-labelledby="devices-title">
            <h2 id="devices-title">{ "Devices" }</h2>
            <div class="row filters">
                { chip(None, format!("All {}", devices.len())) }
                { chip(Some("online"), format!("Online {}", count("online"))) }
                { chip(Some("offline"), format!("Offline {}", count("offline"))) }
                { chip(Some("stale"), format!("Stale {}", count("stale"))) }
                { chip(Some("unknown"), format!("Unknown {}", count("unknown"))) }
                <input type="search" class="device-find" placeholder="Find a device or topic" aria-label="find a device" value={(*text).clone()} oninput={on_text} />
                <label>{ "Sort " }
                    <select class="device-sort" onchange={on_sort}>
                        <option value="id" selected={*sort == Sort::Id}>{ "by id" }</option>
                        <option value="state" selected={*sort == Sort::State}>{ "by state (offline first)" }</option>
                        <option value="seen" selected={*sort == Sort::LastSeen}>{ "by last seen" }</option>
                    </select>
                </label>
            </div>
            <div class="device-head" aria-hidden="true">
                <span>{ "Device" }</span><span>{ "State" }</span><span>{ "Since" }</span><span>{ "Last seen" }</span><span class="wide">{ "Last topic · why" }</span>
            </div>
            if total == 0 {
                <p class="muted device-none">{ if devices.is_empty() { "No device seen yet." } else { "No device matches." } }</p>
            }
            <div class="device-rows" role="table" aria-label="devices" data-count={total.to_string()} style={format!("height:{}px", (ROW_HEIGHT * VIEWPORT_ROWS) as u64)} onscroll={on_scroll}>
                <div class="tree-space" style={format!("height:{}px", (total as f64 * ROW_HEIGHT) as u64)}>
                    { for rows[first..end].iter().enumerate().map(|(k, d)| {
                        let top = ((first + k) as f64 * ROW_HEIGHT) as u64;
                        let id = match (&props.profile, &d.branch) {
                            (Some(p), Some(b)) => link(Route::Topic { id: p.clone(), topic: b.clone() }, "device-id", html! { d.id.clone() }),
                            _ => html! { <span class="device-id">{ d.id.clone() }</span> },
                        };
                        html! {
                            <div class={classes!("device", d.state.clone())} role="row" data-device={d.id.clone()} data-state={d.state.clone()} style={format!("top:{top}px")}>
                                <span role="cell">{ id }</span>
                                <span role="cell" class="device-state"><span class={classes!("dot", d.state.clone())} />{ d.state.clone() }</span>
                                <span role="cell" title={local_time(d.since)}>{ ago(d.since, now) }</span>
                                <span role="cell" class="device-seen" title={d.last_seen.map(local_time).unwrap_or_default()}>{ d.last_seen.map_or_else(|| "—".to_owned(), |t| ago(t, now)) }</span>
                                <span role="cell" class="wide muted">{ [d.last_topic.clone(), d.detail.clone()].into_iter().flatten().collect::<Vec<_>>().join(" · ") }</span>
                            </div>
                        }
                    }) }
                </div>
            </div>
        </section>
    }
}
