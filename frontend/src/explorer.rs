//! The topic explorer: the tree of every topic seen (virtualized: only the rows in view are
//! in the DOM), and the selected topic's history with its payloads.
//!
//! Both read the [`Store`] directly; the app re-renders them at most once per animation frame
//! ([`Frames`]), however many messages arrived in between.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use kite_mqtt::codec::Props;
use wasm_bindgen::JsCast;
use wasm_bindgen::closure::Closure;
use web_sys::HtmlElement;
use yew::prelude::*;

use crate::payload::{self, Format};
use crate::store::{NodeId, Store};

/// Height of one tree row, in CSS pixels (fixed, so the visible rows follow from the scroll
/// position alone).
pub const ROW_HEIGHT: f64 = 24.0;

/// Height of the tree's viewport, in CSS pixels, until it is measured (the tree fills its
/// pane's height, so the rows in view follow from the height measured after each render).
const VIEWPORT: f64 = 432.0;

/// Rows rendered beyond the viewport on each side, so fast scrolling shows no gaps.
const OVERSCAN: usize = 10;

/// Payload bytes rendered per history entry (the newest gets more).
const RENDER_BYTES: usize = 16 * 1024;
const RENDER_BYTES_NEWEST: usize = 256 * 1024;

/// The store, shared by the driver (which fills it) and the views (which read it).
#[derive(Clone, Default)]
pub struct StoreHandle(pub Rc<RefCell<Store>>);

impl PartialEq for StoreHandle {
    fn eq(&self, other: &Self) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }
}

/// At most one render per animation frame: [`Frames::request`] as often as you like.
pub struct Frames {
    scheduled: Cell<bool>,
    frame: Cell<u64>,
    callback: RefCell<Option<Closure<dyn FnMut()>>>,
}

impl Frames {
    /// Frames that call `render` (e.g. a force-update handle).
    pub fn new(render: impl Fn() + 'static) -> Rc<Self> {
        let frames = Rc::new(Self {
            scheduled: Cell::new(false),
            frame: Cell::new(0),
            callback: RefCell::new(None),
        });
        let weak = Rc::downgrade(&frames);
        let callback = Closure::<dyn FnMut()>::new(move || {
            if let Some(f) = weak.upgrade() {
                f.scheduled.set(false);
                f.frame.set(f.frame.get() + 1);
                render();
            }
        });
        *frames.callback.borrow_mut() = Some(callback);
        frames
    }

    /// Asks for a render at the next animation frame (once, however often asked).
    pub fn request(&self) {
        if self.scheduled.replace(true) {
            return;
        }
        let callback = self.callback.borrow();
        let requested = web_sys::window().zip(callback.as_ref()).map(|(w, c)| {
            w.request_animation_frame(c.as_ref().unchecked_ref())
                .is_ok()
        });
        if requested != Some(true) {
            self.scheduled.set(false);
        }
    }

    /// How many frames were rendered: changes whenever the store may have.
    pub fn frame(&self) -> u64 {
        self.frame.get()
    }
}

/// `HH:MM:SS.mmm`, local time.
pub fn clock(ms: f64) -> String {
    let d = js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(ms));
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        d.get_hours(),
        d.get_minutes(),
        d.get_seconds(),
        d.get_milliseconds()
    )
}

/// "3 s", "4 min", "2 h" since `ms`.
fn age(now: f64, ms: f64) -> String {
    let s = ((now - ms) / 1000.0).max(0.0).round() as u64;
    if s < 60 {
        format!("{s} s")
    } else if s < 3600 {
        format!("{} min", (s + 30) / 60)
    } else {
        format!("{} h", (s + 1800) / 3600)
    }
}

/// `x` (not negative) with one decimal, without Rust's float formatting (which would cost
/// the app 10 KB).
pub fn tenths(x: f64) -> String {
    let t = (x.max(0.0) * 10.0).round() as u64;
    format!("{}.{}", t / 10, t % 10)
}

/// A number as JavaScript writes it (shortest form that reads back the same).
fn js_number(x: f64) -> String {
    js_sys::Number::from(x)
        .to_string_with_radix(10)
        .map(String::from)
        .unwrap_or_default()
}

/// Properties of [`TopicTree`].
#[derive(Properties, PartialEq)]
pub struct TreeProps {
    /// The store.
    pub store: StoreHandle,
    /// Changes when the store may have.
    pub frame: u64,
    /// The selected node.
    pub selected: Option<NodeId>,
    /// A node was chosen (click or keyboard).
    pub on_select: Callback<NodeId>,
    /// The tree's shape changed (a node opened or closed): render again.
    pub on_change: Callback<()>,
}

/// The topic tree: one row per shown node, only the rows in view rendered.
#[component]
pub fn TopicTree(props: &TreeProps) -> Html {
    let scroll = use_state(|| 0.0_f64);
    let height = use_state(|| VIEWPORT);
    let viewport = use_node_ref();
    {
        // The pane's height follows the window and the panels above it.
        let (height, viewport) = (height.clone(), viewport.clone());
        use_effect(move || {
            if let Some(el) = viewport.cast::<HtmlElement>() {
                let h = f64::from(el.client_height());
                if h > 0.0 && h != *height {
                    height.set(h);
                }
            }
        });
    }
    let view_height = *height;
    let now = js_sys::Date::now();
    let first = ((*scroll / ROW_HEIGHT) as usize).saturating_sub(OVERSCAN);
    let shown = (view_height / ROW_HEIGHT) as usize + 2 * OVERSCAN;
    let (total, visible, selected_index) = {
        let mut store = props.store.0.borrow_mut();
        let rows = store.rows();
        let end = (first + shown).min(rows.len());
        let selected_index = props
            .selected
            .and_then(|s| rows.iter().position(|&r| r == s));
        (
            rows.len(),
            rows.get(first..end).unwrap_or_default().to_vec(),
            selected_index,
        )
    };
    // A newly selected topic (opened by its URL, or chosen): its levels opened and its row
    // scrolled into view.
    {
        let (store, on_change, viewport, scroll) = (
            props.store.clone(),
            props.on_change.clone(),
            viewport.clone(),
            scroll.clone(),
        );
        use_effect_with(props.selected, move |selected| {
            if let Some(id) = *selected {
                let position = {
                    let mut s = store.0.borrow_mut();
                    s.reveal(id);
                    s.rows().iter().position(|&r| r == id)
                };
                if let (Some(pos), Some(el)) = (position, viewport.cast::<HtmlElement>()) {
                    let top = pos as f64 * ROW_HEIGHT;
                    let now = f64::from(el.scroll_top());
                    if top < now || top + ROW_HEIGHT > now + view_height {
                        let to = (top - view_height / 2.0).max(0.0);
                        el.set_scroll_top(to as i32);
                        scroll.set(to);
                    }
                }
                on_change.emit(());
            }
        });
    }
    let store = props.store.0.borrow();

    let on_scroll = {
        let scroll = scroll.clone();
        Callback::from(move |e: Event| {
            let el: HtmlElement = e.target_unchecked_into();
            scroll.set(f64::from(el.scroll_top()));
        })
    };
    let on_key = {
        let (store, on_select, on_change) = (
            props.store.clone(),
            props.on_select.clone(),
            props.on_change.clone(),
        );
        let (selected, viewport) = (props.selected, viewport.clone());
        Callback::from(move |e: KeyboardEvent| {
            let chosen = {
                let mut s = store.0.borrow_mut();
                let rows = s.rows().to_vec();
                let index = selected.and_then(|sel| rows.iter().position(|&r| r == sel));
                let target = match (e.key().as_str(), index) {
                    ("ArrowDown", None) | ("Home", _) => rows.first().copied(),
                    ("ArrowDown", Some(i)) => rows.get(i + 1).copied(),
                    ("ArrowUp", Some(i)) => i.checked_sub(1).and_then(|i| rows.get(i)).copied(),
                    ("End", _) => rows.last().copied(),
                    ("ArrowRight", Some(i)) => {
                        s.set_expanded(rows[i], true);
                        on_change.emit(());
                        None
                    }
                    ("ArrowLeft", Some(i)) => {
                        let node = rows[i];
                        match s.view(node, 0.0) {
                            Some(v) if v.expanded && v.has_children => {
                                s.set_expanded(node, false);
                                on_change.emit(());
                                None
                            }
                            _ => s.parent(node),
                        }
                    }
                    _ => return,
                };
                e.prevent_default();
                if let Some(t) = target {
                    // Keep the chosen row in view.
                    let rows = s.rows();
                    if let (Some(pos), Some(el)) = (
                        rows.iter().position(|&r| r == t),
                        viewport.cast::<HtmlElement>(),
                    ) {
                        let top = pos as f64 * ROW_HEIGHT;
                        let scroll_top = f64::from(el.scroll_top());
                        if top < scroll_top {
                            el.set_scroll_top(top as i32);
                        } else if top + ROW_HEIGHT > scroll_top + view_height {
                            el.set_scroll_top((top + ROW_HEIGHT - view_height) as i32);
                        }
                    }
                }
                target
            };
            // The store is no longer borrowed: selecting may render at once.
            if let Some(t) = chosen {
                on_select.emit(t);
            }
        })
    };

    let rows = visible.iter().enumerate().filter_map(|(i, &id)| {
        let v = store.view(id, now)?;
        let index = first + i;
        let is_selected = props.selected == Some(id);
        let select = {
            let on_select = props.on_select.clone();
            Callback::from(move |_: MouseEvent| on_select.emit(id))
        };
        let toggle = {
            let (store, on_change) = (props.store.clone(), props.on_change.clone());
            let expanded = v.expanded;
            Callback::from(move |e: MouseEvent| {
                e.stop_propagation();
                store.0.borrow_mut().set_expanded(id, !expanded);
                on_change.emit(());
            })
        };
        let twisty = match (v.has_children, v.expanded) {
            (false, _) => "",
            (true, true) => "▾",
            (true, false) => "▸",
        };
        let style = format!(
            "top:{}px;padding-left:{}px",
            (index as f64 * ROW_HEIGHT) as u64,
            6 + 14 * u32::from(v.depth)
        );
        let name = if v.name.is_empty() {
            "(empty)".to_owned()
        } else {
            v.name.clone()
        };
        Some(html! {
            <div key={id} id={format!("row-{index}")} class={classes!("topic-row", is_selected.then_some("selected"))}
                 role="treeitem" aria-level={(v.depth + 1).to_string()} aria-selected={is_selected.to_string()}
                 data-topic={store.topic(id)} style={style} onclick={select}>
                <span class="twisty" onclick={toggle}>{ twisty }</span>
                <span class="name">{ name }</span>
                if v.retained { <span class="retained" title="retained">{ "R" }</span> }
                if v.messages > 0 {
                    <span class="value">{ payload::preview(&v.preview.0, v.preview.1, 60) }</span>
                }
                <span class="row-total" title="messages here and below">{ v.total }</span>
                <span class="rate">{ if v.rate >= 0.05 { format!("{}/s", tenths(v.rate)) } else { String::new() } }</span>
                <span class="age">{ if v.messages > 0 { age(now, v.last_ms) } else { String::new() } }</span>
            </div>
        })
    });
    let active = selected_index.map(|i| format!("row-{i}"));
    html! {
        <div class="tree" role="tree" tabindex="0" ref={viewport} onscroll={on_scroll}
             onkeydown={on_key} aria-activedescendant={active}
             data-rows={total.to_string()}>
            <div class="tree-space" style={format!("height:{}px", (total as f64 * ROW_HEIGHT) as u64)}>
                { for rows }
            </div>
            if total == 0 {
                <p class="muted tree-empty">{ if store.filtering() { "No topic or value matches the search (Esc clears it)." } else { "No topics yet: subscribe, then messages appear here as they arrive." } }</p>
            }
        </div>
    }
}

/// Properties of [`TopicDetail`].
#[derive(Properties, PartialEq)]
pub struct DetailProps {
    /// The store.
    pub store: StoreHandle,
    /// The topic's node.
    pub node: NodeId,
    /// Changes when the store may have.
    pub frame: u64,
    /// Delete the retained messages of these topics.
    pub on_delete: Callback<Vec<String>>,
    /// Whether the gateway's recorded history is this connection's broker's (the profile
    /// dials the gateway that served the page, to its default broker), and the login for its
    /// API (`Authorization`), if the profile has one.
    #[prop_or_default]
    pub recorded: Option<Option<String>>,
}

/// One topic: its counters, a sparkline of numeric payloads, and its kept messages, newest
/// first, each payload in the detected (or chosen) format.
#[component]
pub fn TopicDetail(props: &DetailProps) -> Html {
    let chosen = use_state(|| None::<Format>);
    let confirm = use_state(|| None::<Vec<String>>);
    {
        // A confirmation belongs to the topic it was asked on.
        let confirm = confirm.clone();
        use_effect_with(props.node, move |_| confirm.set(None));
    }
    let store = props.store.0.borrow();
    let now = js_sys::Date::now();
    let Some(v) = store.view(props.node, now) else {
        return html! {};
    };
    let topic = store.topic(props.node);
    let entries: Vec<_> = store.history(props.node).rev().collect();
    let numbers: Vec<f64> = store
        .history(props.node)
        .filter_map(|e| payload::number(&e.payload))
        .collect();
    let formats = std::iter::once(None)
        .chain(Format::ALL.into_iter().map(Some))
        .map(|f| {
            let chosen = chosen.clone();
            let label = f.map_or("auto", Format::label);
            let pressed = *chosen == f;
            html! {
                <button class={classes!("format", pressed.then_some("on"))} aria-pressed={pressed.to_string()}
                        onclick={Callback::from(move |_: MouseEvent| chosen.set(f))}>{ label }</button>
            }
        });
    let caps = store.caps();
    let below = store.retained_below(props.node);
    let ask = |topics: Vec<String>| {
        let confirm = confirm.clone();
        Callback::from(move |_: MouseEvent| confirm.set(Some(topics.clone())))
    };
    let delete_here = v.retained && v.preview.1 > 0;
    let confirmation = (*confirm).clone().map(|topics| {
        let (on_delete, confirm_yes, confirm_no) =
            (props.on_delete.clone(), confirm.clone(), confirm.clone());
        let n = topics.len();
        let yes = Callback::from(move |_: MouseEvent| {
            on_delete.emit(topics.clone());
            confirm_yes.set(None);
        });
        html! {
            <p class="confirm row" role="alertdialog">
                <span>{ format!("Delete {n} retained message{} from the broker? Devices that subscribe later will not get {}.",
                    if n == 1 { "" } else { "s" }, if n == 1 { "it" } else { "them" }) }</span>
                <button id="confirm-delete" class="danger" onclick={yes}>{ "Delete" }</button>
                <button id="cancel-delete" class="secondary" onclick={Callback::from(move |_: MouseEvent| confirm_no.set(None))}>{ "Cancel" }</button>
            </p>
        }
    });
    html! {
        <section class="detail" aria-label="topic detail">
            <h3 class="detail-topic"><code>{ topic.clone() }</code>
                <button id="copy-topic" class="secondary copy" title="copy the topic" onclick={{
                    let topic = topic.clone();
                    Callback::from(move |_: MouseEvent| copy_text(&topic))
                }}>{ "Copy" }</button></h3>
            <p class="muted detail-meta">
                if v.messages == 0 {
                    { format!("a level: {} message{} on the topics below it", v.total, if v.total == 1 { "" } else { "s" }) }
                } else {
                    { format!("{} message{} here, {} kept (last {})", v.messages, if v.messages == 1 { "" } else { "s" }, entries.len(), caps.history_per_topic) }
                }
                if v.rate >= 0.05 { { format!(" · {}/s", tenths(v.rate)) } }
                if v.retained { { " · retained" } }
            </p>
            <p class="row actions">
                if delete_here {
                    <button id="delete-retained" class="secondary" onclick={ask(vec![topic.clone()])}>{ "Delete retained" }</button>
                }
                if below.len() > usize::from(delete_here) {
                    <button id="delete-subtree" class="secondary" onclick={ask(below.clone())}>
                        { format!("Delete {} retained below", below.len()) }
                    </button>
                }
            </p>
            { confirmation.unwrap_or_default() }
            if let (Some(auth), true) = (props.recorded.clone(), v.messages > 0) {
                <crate::history::RecordedHistory topic={topic.clone()} {auth} />
            }
            { sparkline(&numbers) }
            if !entries.is_empty() {
                <p class="row formats">{ for formats }</p>
            }
            <ol class="history">
                { for entries.iter().enumerate().map(|(i, e)| {
                    let format = (*chosen).unwrap_or_else(|| payload::detect(&e.payload));
                    let limit = if i == 0 { RENDER_BYTES_NEWEST } else { RENDER_BYTES };
                    let shown = &e.payload[..e.payload.len().min(limit)];
                    let mut text = payload::render(shown, format);
                    if shown.len() < e.payload.len() {
                        text.push_str(&format!("\n… {} more bytes", e.payload.len() - shown.len()));
                    }
                    let change = entries.get(i + 1).map(|older| diff_line(&older.payload, &e.payload));
                    let copy = {
                        let text = text.clone();
                        Callback::from(move |_: MouseEvent| copy_text(&text))
                    };
                    // JSON as a tree whose objects and arrays fold (the whole of it, when
                    // it was not cut); anything else as text.
                    let body = match (format, shown.len() == e.payload.len()) {
                        (Format::Json, true) => std::str::from_utf8(shown).ok().and_then(payload::parse),
                        _ => None,
                    };
                    html! {
                        <li class="entry" key={e.seq.to_string()}>
                            <div class="meta">
                                <span class="time">{ clock(e.at_ms) }</span>
                                { format!(" QoS {}", e.qos) }
                                if e.retain { <span class="retained">{ " retained" }</span> }
                                { format!(" · {} B · {}", e.payload.len(), format.label()) }
                                <button class="secondary copy" title="copy the payload as shown" onclick={copy}>{ "Copy" }</button>
                            </div>
                            { properties(&e.properties) }
                            if let Some(v) = body {
                                <div class="payload json">{ json_html(None, &v, 0) }</div>
                            } else {
                                <pre class="payload">{ text }</pre>
                            }
                            { change.unwrap_or_default() }
                        </li>
                    }
                }) }
            </ol>
        </section>
    }
}

/// Levels of a JSON payload shown open at first (deeper ones start folded).
const JSON_OPEN_LEVELS: usize = 3;

/// A JSON value as a tree: objects and arrays in `<details>` that fold, with their size.
fn json_html(key: Option<&str>, v: &payload::Json, depth: usize) -> Html {
    use payload::Json;
    let name = key.map(|k| {
        let mut s = String::new();
        payload::quote(k, &mut s);
        s.push_str(": ");
        s
    });
    let (open, close, items): (&str, &str, Vec<(Option<&str>, &Json)>) = match v {
        Json::Obj(fields) if !fields.is_empty() => (
            "{",
            "}",
            fields.iter().map(|(k, v)| (Some(k.as_str()), v)).collect(),
        ),
        Json::Arr(values) if !values.is_empty() => {
            ("[", "]", values.iter().map(|v| (None, v)).collect())
        }
        leaf => {
            let mut text = name.unwrap_or_default();
            payload::compact(leaf, &mut text);
            return html! { <div class="j">{ text }</div> };
        }
    };
    let n = items.len();
    html! {
        <details class="j" open={depth < JSON_OPEN_LEVELS}>
            <summary>{ name.unwrap_or_default() }{ open }<span class="muted j-size">{ format!(" {n} {}", if close == "}" { "keys" } else { "items" }) }</span></summary>
            { for items.into_iter().map(|(k, v)| json_html(k, v, depth + 1)) }
            <div class="j-close">{ close }</div>
        </details>
    }
}

/// What changed since the message before it.
fn diff_line(older: &[u8], newer: &[u8]) -> Html {
    let body = match payload::diff(older, newer) {
        payload::Diff::Same => {
            html! { <span class="muted">{ "same as the message before" }</span> }
        }
        payload::Diff::Fields(changes) => html! {
            <>
                <span class="muted">{ "changed: " }</span>
                { for changes.into_iter().map(|(path, old, new)| html! {
                    <span class="change">
                        <code>{ path }</code>{ " " }
                        if let Some(o) = old { <del>{ o }</del> }
                        if let Some(n) = new { { " → " }<ins>{ n }</ins> }
                    </span>
                }) }
            </>
        },
        payload::Diff::Text {
            before,
            removed,
            added,
            after,
        } => html! {
            <>
                <span class="muted">{ "changed: " }</span>
                <code>{ before }<del>{ removed }</del><ins>{ added }</ins>{ after }</code>
            </>
        },
        payload::Diff::Bytes(a, b) => {
            html! { <span class="muted">{ format!("changed: {a} B → {b} B") }</span> }
        }
    };
    html! { <p class="diff">{ body }</p> }
}

/// Puts `text` on the clipboard (the browser may refuse outside a secure context; nothing
/// breaks then).
fn copy_text(text: &str) {
    if let Some(w) = web_sys::window() {
        let _ = w.navigator().clipboard().write_text(text);
    }
}

/// MQTT 5 properties of a message, one per line (nothing when there are none).
fn properties(p: &Props) -> Html {
    let mut lines: Vec<(String, String)> = Vec::new();
    if let Some(t) = &p.content_type {
        lines.push(("content type".into(), t.to_string()));
    }
    if let Some(utf8) = p.payload_format_indicator {
        lines.push((
            "payload format".into(),
            if utf8 { "UTF-8" } else { "bytes" }.into(),
        ));
    }
    if let Some(s) = p.message_expiry_interval {
        lines.push(("expires in".into(), format!("{s} s")));
    }
    if let Some(t) = &p.response_topic {
        lines.push(("response topic".into(), t.to_string()));
    }
    if let Some(c) = &p.correlation_data {
        lines.push(("correlation data".into(), payload::preview(c, c.len(), 60)));
    }
    if !p.subscription_identifiers.is_empty() {
        let ids: Vec<String> = p
            .subscription_identifiers
            .iter()
            .map(u32::to_string)
            .collect();
        lines.push(("subscription ids".into(), ids.join(", ")));
    }
    for (k, v) in &p.user_properties {
        lines.push((k.to_string(), v.to_string()));
    }
    if lines.is_empty() {
        return html! {};
    }
    html! {
        <dl class="props">
            { for lines.into_iter().map(|(k, v)| html! { <><dt>{ k }</dt><dd>{ v }</dd></> }) }
        </dl>
    }
}

/// A small line chart of the numbers (oldest to newest), with the last value.
fn sparkline(numbers: &[f64]) -> Html {
    if numbers.len() < 2 {
        return html! {};
    }
    // In tenths of a pixel (viewBox 2400 × 400), so the points are whole numbers.
    let (w, h) = (2400.0, 400.0);
    let min = numbers.iter().copied().fold(f64::INFINITY, f64::min);
    let max = numbers.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let span = if max > min { max - min } else { 1.0 };
    let step = w / (numbers.len() - 1) as f64;
    let points: Vec<String> = numbers
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "{},{}",
                (i as f64 * step).round() as i64,
                (h - 20.0 - (n - min) / span * (h - 40.0)).round() as i64
            )
        })
        .collect();
    let [last, min, max] = [numbers.last().copied().unwrap_or_default(), min, max].map(js_number);
    html! {
        <p class="spark row">
            <svg class="sparkline" width="240" height="40" viewBox="0 0 2400 400" role="img"
                 aria-label={format!("{} values from {min} to {max}", numbers.len())}>
                <polyline points={points.join(" ")} fill="none" stroke="currentColor" stroke-width="15" />
            </svg>
            <span class="muted">{ format!("last {last} · min {min} · max {max}") }</span>
        </p>
    }
}
