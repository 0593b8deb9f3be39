//! The app's root component.

use std::rc::Rc;

use kite_mqtt::QoS;
use kite_mqtt::session::Event;
use web_sys::HtmlInputElement;
use yew::prelude::*;

use crate::api::{self, Upstreams};
use crate::explorer::{Frames, StoreHandle, TopicDetail, TopicTree};
use crate::mqtt::{Connection, Notice, Status};
use crate::store::NodeId;

/// The live side of the app: connection status and subscriptions (messages go to the
/// [`Store`], not through here).
#[derive(Debug, Default, Clone, PartialEq)]
struct Live {
    status: Option<Status>,
    subscriptions: Vec<(u16, String, String)>,
    /// The last publish: its packet id (QoS 1/2) and what became of it.
    published: Option<(Option<u16>, String)>,
}

enum Action {
    Notice(Notice),
    Subscribing(u16, String),
    Published(Option<u16>, String),
}

impl Reducible for Live {
    type Action = Action;

    fn reduce(self: Rc<Self>, action: Action) -> Rc<Self> {
        let mut next = (*self).clone();
        match action {
            Action::Published(id, state) => next.published = Some((id, state)),
            Action::Notice(Notice::Mqtt(Event::Published { packet_id, reason })) => {
                match &mut next.published {
                    Some((Some(id), state)) if *id == packet_id => {
                        *state = if reason.is_error() {
                            format!("refused by the broker: {reason}")
                        } else {
                            "acknowledged by the broker".into()
                        };
                    }
                    _ => return self,
                }
            }
            Action::Subscribing(id, filter) => {
                next.subscriptions.push((id, filter, "pending".into()))
            }
            Action::Notice(Notice::Status(s)) => next.status = Some(s),
            Action::Notice(Notice::Mqtt(Event::Subscribed { packet_id, reasons })) => {
                for (id, _, state) in &mut next.subscriptions {
                    if *id == packet_id {
                        *state = match reasons.first() {
                            Some(r) if r.is_error() => format!("refused: {r}"),
                            Some(r) => format!("granted QoS {}", r.value()),
                            None => "no answer".into(),
                        };
                    }
                }
            }
            Action::Notice(Notice::Mqtt(_)) => return self,
        }
        Rc::new(next)
    }
}

fn status_text(status: &Option<Status>) -> String {
    match status {
        None => "not connected".into(),
        Some(Status::Connecting) => "connecting…".into(),
        Some(Status::Connected) => "connected".into(),
        Some(Status::Reconnecting { in_ms, reason }) => {
            format!(
                "reconnecting in {:.1} s ({reason})",
                f64::from(*in_ms) / 1000.0
            )
        }
        Some(Status::Closed) => "disconnected".into(),
    }
}

fn random_client_id() -> String {
    format!(
        "kite-{:06x}",
        (js_sys::Math::random() * f64::from(0xff_ffff)) as u32
    )
}

#[derive(Debug, Clone, PartialEq)]
enum Load {
    Pending,
    Ready(Upstreams),
    Failed(String),
}

/// The WebSocket endpoint of the gateway that served this page.
fn mqtt_endpoint() -> Option<String> {
    let location = web_sys::window()?.location();
    let scheme = if location.protocol().ok()? == "https:" {
        "wss"
    } else {
        "ws"
    };
    Some(format!("{scheme}://{}/mqtt", location.host().ok()?))
}

/// The root of the app.
#[component]
pub fn App() -> Html {
    let upstreams = use_state(|| Load::Pending);
    {
        let upstreams = upstreams.clone();
        use_effect_with((), move |()| {
            wasm_bindgen_futures::spawn_local(async move {
                upstreams.set(match api::upstreams().await {
                    Ok(u) => Load::Ready(u),
                    Err(e) => Load::Failed(e),
                });
            });
        });
    }
    let endpoint = mqtt_endpoint().unwrap_or_else(|| "/mqtt".to_owned());
    let live = use_reducer(Live::default);
    let conn = use_state(|| None::<Connection>);
    // Messages go into the store; the view follows at most once per animation frame.
    let store = use_state(StoreHandle::default);
    let force = use_force_update();
    let frames = use_state(|| Frames::new(move || force.force_update()));
    let frame = frames.frame();
    let selected = use_state(|| None::<NodeId>);
    let tree_filter = use_state(String::new);
    let filter = use_state(|| "#".to_owned());
    let filter_error = kite_mqtt::topic::validate_filter(&filter)
        .err()
        .map(|e| e.to_string());

    let toggle = {
        let (conn, live, endpoint) = (conn.clone(), live.clone(), endpoint.clone());
        let (store, frames) = ((*store).clone(), (*frames).clone());
        Callback::from(move |_: MouseEvent| match &*conn {
            Some(c) => {
                c.close();
                conn.set(None);
            }
            None => {
                let dispatch = live.dispatcher();
                let (store, frames) = (store.clone(), frames.clone());
                let c = Connection::open(&endpoint, &random_client_id(), move |n| match n {
                    Notice::Mqtt(Event::Message(p)) => {
                        store.0.borrow_mut().ingest(
                            &p.topic,
                            &p.payload,
                            p.qos as u8,
                            p.retain,
                            p.properties,
                            js_sys::Date::now(),
                        );
                        frames.request();
                    }
                    other => dispatch.dispatch(Action::Notice(other)),
                });
                conn.set(Some(c));
            }
        })
    };
    let on_filter = {
        let filter = filter.clone();
        Callback::from(move |e: InputEvent| {
            let input: HtmlInputElement = e.target_unchecked_into();
            filter.set(input.value());
        })
    };
    let subscribe = {
        let (conn, live, filter) = (conn.clone(), live.clone(), filter.clone());
        Callback::from(move |_: MouseEvent| {
            if let Some(c) = &*conn
                && let Ok(id) = c.subscribe(&filter, QoS::AtLeastOnce)
            {
                live.dispatch(Action::Subscribing(id, (*filter).clone()));
            }
        })
    };
    let pub_topic = use_state(|| "kite/hello".to_owned());
    let pub_payload = use_state(String::new);
    let pub_qos = use_state(|| 1u8);
    let pub_retain = use_state(|| false);
    let topic_error = kite_mqtt::topic::validate_name(&pub_topic)
        .err()
        .map(|e| e.to_string());
    let text_input = |state: &UseStateHandle<String>| {
        let state = state.clone();
        Callback::from(move |e: InputEvent| {
            let input: HtmlInputElement = e.target_unchecked_into();
            state.set(input.value());
        })
    };
    let on_pub_topic = text_input(&pub_topic);
    let on_pub_payload = {
        let state = pub_payload.clone();
        Callback::from(move |e: InputEvent| {
            let input: web_sys::HtmlTextAreaElement = e.target_unchecked_into();
            state.set(input.value());
        })
    };
    let on_pub_qos = {
        let state = pub_qos.clone();
        Callback::from(move |e: web_sys::Event| {
            let select: web_sys::HtmlSelectElement = e.target_unchecked_into();
            state.set(select.value().parse().unwrap_or(0));
        })
    };
    let on_pub_retain = {
        let state = pub_retain.clone();
        Callback::from(move |e: web_sys::Event| {
            let input: HtmlInputElement = e.target_unchecked_into();
            state.set(input.checked());
        })
    };
    let publish = {
        let (conn, live) = (conn.clone(), live.clone());
        let (topic, payload, qos, retain) = (
            pub_topic.clone(),
            pub_payload.clone(),
            pub_qos.clone(),
            pub_retain.clone(),
        );
        Callback::from(move |_: MouseEvent| {
            let Some(c) = &*conn else { return };
            let message = kite_mqtt::codec::Publish {
                qos: QoS::from_u8(*qos).unwrap_or_default(),
                retain: *retain,
                topic: topic.as_str().into(),
                payload: bytes::Bytes::from((*payload).clone()),
                ..Default::default()
            };
            let outcome = match c.publish(message) {
                Ok(None) => (None, "sent (QoS 0: no acknowledgement)".to_owned()),
                Ok(Some(id)) => (Some(id), "waiting for the broker…".to_owned()),
                Err(e) => (None, format!("not sent: {e}")),
            };
            live.dispatch(Action::Published(outcome.0, outcome.1));
        })
    };
    let connected = conn.is_some();
    let on_tree_filter = {
        let (store, frames, tree_filter) =
            ((*store).clone(), (*frames).clone(), tree_filter.clone());
        Callback::from(move |e: InputEvent| {
            let input: HtmlInputElement = e.target_unchecked_into();
            store.0.borrow_mut().set_filter(&input.value());
            tree_filter.set(input.value());
            frames.request();
        })
    };
    let on_select = {
        let selected = selected.clone();
        Callback::from(move |id: NodeId| selected.set(Some(id)))
    };
    let on_change = {
        let frames = (*frames).clone();
        Callback::from(move |()| frames.request())
    };
    let clear = {
        let (store, frames, selected) = ((*store).clone(), (*frames).clone(), selected.clone());
        Callback::from(move |_: MouseEvent| {
            store.0.borrow_mut().clear();
            selected.set(None);
            frames.request();
        })
    };
    let (received, topics, (kept_bytes, kept), evicted, caps) = {
        let s = store.0.borrow();
        (s.received(), s.topics(), s.memory(), s.evicted(), s.caps())
    };
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    html! {
        <div id="kite-app" class="kite">
            <header class="bar">
                <span class="logo" aria-hidden="true">{ "◆" }</span>
                <h1>{ "Kite" }</h1>
                <span class="tagline">{ "MQTT in the browser" }</span>
            </header>
            <main>
                <section class="card" aria-labelledby="gateway-title">
                    <h2 id="gateway-title">{ "Gateway" }</h2>
                    <p>{ "MQTT over WebSocket: " }<code class="endpoint">{ endpoint }</code></p>
                    { upstream_list(&upstreams) }
                </section>
                <section class="card" aria-labelledby="live-title">
                    <h2 id="live-title">{ "Live" }</h2>
                    <p class="row">
                        <button id="connect" onclick={toggle}>{ if connected { "Disconnect" } else { "Connect" } }</button>
                        <span class="status" role="status">{ status_text(&live.status) }</span>
                    </p>
                    <p class="row">
                        <label for="filter">{ "Topic filter" }</label>
                        <input id="filter" value={(*filter).clone()} oninput={on_filter} spellcheck="false" autocomplete="off" />
                        <button id="subscribe" onclick={subscribe} disabled={!connected || filter_error.is_some()}>{ "Subscribe" }</button>
                    </p>
                    if let Some(err) = filter_error {
                        <p class="error filter-error" role="alert">{ err }</p>
                    }
                    <ul class="subscriptions">
                        { for live.subscriptions.iter().map(|(_, f, state)| html! {
                            <li class="subscription"><code>{ f.clone() }</code>{ " — " }{ state.clone() }</li>
                        }) }
                    </ul>

                    <h3>{ "Publish" }</h3>
                    <p class="row">
                        <label for="pub-topic">{ "Topic" }</label>
                        <input id="pub-topic" value={(*pub_topic).clone()} oninput={on_pub_topic} spellcheck="false" autocomplete="off" />
                        <label for="pub-qos">{ "QoS" }</label>
                        <select id="pub-qos" onchange={on_pub_qos}>
                            { for (0..=2u8).map(|q| html! { <option value={q.to_string()} selected={*pub_qos == q}>{ q }</option> }) }
                        </select>
                        <label><input id="pub-retain" type="checkbox" checked={*pub_retain} onchange={on_pub_retain} />{ " retain" }</label>
                    </p>
                    if let Some(err) = topic_error.clone() {
                        <p class="error topic-error" role="alert">{ err }</p>
                    }
                    <p class="row">
                        <textarea id="pub-payload" rows="2" placeholder="payload" value={(*pub_payload).clone()} oninput={on_pub_payload} />
                        <button id="publish" onclick={publish} disabled={!connected || topic_error.is_some()}>{ "Publish" }</button>
                    </p>
                    if let Some((_, state)) = &live.published {
                        <p class="muted publish-result" role="status">{ state.clone() }</p>
                    }
                </section>
                <section class="card" aria-labelledby="topics-title">
                    <h2 id="topics-title">{ "Topics" }</h2>
                    <p class="muted count">{ format!("{received} message{} received on {topics} topic{}", if received == 1 { "" } else { "s" }, if topics == 1 { "" } else { "s" }) }</p>
                    <p class="muted memory">{ format!("{kept} kept, {:.1} MiB of {:.0} MiB (last {} per topic)", mib(kept_bytes), mib(caps.memory_bytes), caps.history_per_topic) }
                        if evicted > 0 { { format!(" · {evicted} oldest dropped for memory") } }
                    </p>
                    <p class="row">
                        <label for="tree-filter">{ "Find" }</label>
                        <input id="tree-filter" value={(*tree_filter).clone()} oninput={on_tree_filter} placeholder="text, or a filter like plant/+/temp" spellcheck="false" autocomplete="off" />
                        <button id="clear" class="secondary" onclick={clear}>{ "Clear" }</button>
                    </p>
                    <div class="explorer">
                        <TopicTree store={(*store).clone()} frame={frame} selected={*selected} on_select={on_select} on_change={on_change} />
                        if let Some(node) = *selected {
                            <TopicDetail store={(*store).clone()} node={node} frame={frame} />
                        }
                    </div>
                </section>
            </main>
        </div>
    }
}

fn upstream_list(load: &Load) -> Html {
    match load {
        Load::Pending => html! { <p class="muted">{ "Asking the gateway for its brokers…" }</p> },
        Load::Failed(reason) => html! {
            <p class="error" role="alert">{ format!("Could not read the gateway's brokers: {reason}") }</p>
        },
        Load::Ready(u) if u.names.is_empty() => html! {
            <p class="muted">{ "The gateway has no broker configured." }</p>
        },
        Load::Ready(u) => html! {
            <ul class="upstreams">
                { for u.names.iter().map(|name| {
                    let is_default = u.default.as_deref() == Some(name.as_str());
                    html! {
                        <li class="upstream" data-name={name.clone()}>
                            { name.clone() }
                            if is_default { <span class="badge">{ "default" }</span> }
                        </li>
                    }
                }) }
            </ul>
        },
    }
}
