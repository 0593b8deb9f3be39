//! One connection's page: status and controls, the outbox, subscriptions, the publish form,
//! and the topic explorer.

use kite_mqtt::Version;
use wasm_bindgen::JsCast;
use yew::prelude::*;

use crate::compose::Draft;
use crate::explorer::{TopicDetail, TopicTree};
use crate::forms::{field_errors, on_check, on_select, on_text, plural, value_of};
use crate::mqtt::Status;
use crate::payload::Format;
use crate::profile::{FieldError, SubSpec};
use crate::route::{Route, go, link};
use crate::store::NodeId;
use crate::workspace::{Handle, SubState};

/// Properties of [`ConnectionView`].
#[derive(Properties, PartialEq)]
pub struct ViewProps {
    /// The workspace.
    pub handle: Handle,
    /// The profile shown.
    pub id: String,
    /// The topic the URL selects, if any.
    pub topic: Option<String>,
    /// Changes whenever the workspace may have.
    pub frame: u64,
}

/// "connecting…", "connected", "reconnecting in 1.5 s (why)", ...
pub fn status_text(status: &Status) -> String {
    match status {
        Status::Connecting => "connecting…".into(),
        Status::Connected => "connected".into(),
        // Counts down (the app renders every second while one is reconnecting).
        Status::Reconnecting { at_ms, reason, .. } => format!(
            "reconnecting in {} s ({reason})",
            ((*at_ms as f64 - js_sys::Date::now()) / 1000.0)
                .ceil()
                .max(0.0) as u32
        ),
        Status::Closed => "disconnected".into(),
        Status::Failed { reason } => format!("error: {reason}"),
    }
}

/// A short word for the status, used as a CSS class.
pub fn status_class(status: &Status) -> &'static str {
    match status {
        Status::Connecting => "connecting",
        Status::Connected => "connected",
        Status::Reconnecting { .. } => "reconnecting",
        Status::Closed => "closed",
        Status::Failed { .. } => "failed",
    }
}

/// The page.
#[component]
pub fn ConnectionView(props: &ViewProps) -> Html {
    let connect_errors = use_state(Vec::<FieldError>::new);
    let confirm_delete = use_state(|| false);
    // Subscribe and publish are panels opened on demand; a connection without a subscription
    // opens with its subscribe panel (nothing arrives before one).
    let subs_open = use_state(|| {
        props
            .handle
            .profile(&props.id)
            .is_none_or(|p| p.subscriptions.is_empty())
    });
    let publish_open = use_state(|| false);
    {
        // A pause is this page's: leaving it (or going to another connection) resumes.
        let handle = props.handle.clone();
        use_effect_with(props.id.clone(), move |id| {
            let id = id.clone();
            move || {
                if let Some(store) = handle.read(|w| w.links.get(&id).map(|l| l.store.clone())) {
                    store.0.borrow_mut().resume();
                }
            }
        });
    }
    // The selected topic, put in the publish form when the panel opens (numbered: the same
    // topic again still fills it).
    let prefill = use_state(|| None::<(u32, String)>);
    let Some(profile) = props.handle.profile(&props.id) else {
        return html! {
            <section class="card"><p class="error" role="alert">{ "There is no such connection. " }
                { link(Route::Home, "", html! { "All connections" }) }</p></section>
        };
    };
    let id = props.id.clone();
    let handle = props.handle.clone();
    let (status, session, last_publish, log, store) = handle.read(|w| match w.links.get(&id) {
        Some(l) => (
            l.status.clone(),
            l.session.clone(),
            l.last_publish.clone(),
            l.log.iter().cloned().collect::<Vec<_>>(),
            Some(l.store.clone()),
        ),
        None => (Status::Closed, None, None, Vec::new(), None),
    });
    let conn = handle.conn(&id);
    let version = conn.as_ref().map_or(profile.version, |c| c.version());
    let closed = conn.as_ref().is_none_or(|c| c.is_closed());

    let toggle = {
        let (handle, id, errors) = (handle.clone(), id.clone(), connect_errors.clone());
        Callback::from(move |_: MouseEvent| {
            if closed {
                match handle.connect(&id) {
                    Ok(()) => errors.set(Vec::new()),
                    Err(e) => errors.set(e),
                }
            } else {
                handle.disconnect(&id);
            }
        })
    };
    let delete = {
        let (handle, id, confirm) = (handle.clone(), id.clone(), confirm_delete.clone());
        Callback::from(move |_: MouseEvent| {
            if *confirm {
                handle.delete_profile(&id);
                go(&Route::Home, false);
            } else {
                confirm.set(true);
            }
        })
    };
    let keep = {
        let confirm = confirm_delete.clone();
        Callback::from(move |_: MouseEvent| confirm.set(false))
    };
    let toggle_subs = {
        let open = subs_open.clone();
        Callback::from(move |_: MouseEvent| open.set(!*open))
    };
    let toggle_publish = {
        let (open, prefill, topic) = (publish_open.clone(), prefill.clone(), props.topic.clone());
        Callback::from(move |_: MouseEvent| {
            if !*open && let Some(t) = &topic {
                prefill.set(Some((prefill.as_ref().map_or(0, |p| p.0 + 1), t.clone())));
            }
            open.set(!*open);
        })
    };
    let subscriptions = profile.subscriptions.len();
    html! {
        <div class="connection" style={format!("--conn:{}", profile.colour)} data-profile={id.clone()}>
            <section class="card conn-head" aria-labelledby="conn-title">
                <h2 id="conn-title"><span class="dot" />{ profile.name.clone() }</h2>
                <p class="row">
                    <button id="connect" onclick={toggle}>{ if closed { "Connect" } else { "Disconnect" } }</button>
                    <span class={classes!("status", status_class(&status))} role="status">{ status_text(&status) }</span>
                    { link(Route::Edit { id: id.clone() }, "button secondary edit", html! { "Edit" }) }
                    <button id="delete-profile" class="secondary danger" onclick={delete}>
                        { if *confirm_delete { "Really delete?" } else { "Delete" } }
                    </button>
                    if *confirm_delete { <button class="secondary" onclick={keep}>{ "Keep it" }</button> }
                    <span class="panels">
                    <button id="show-subs" class={classes!("secondary", "panel-toggle", subs_open.then_some("on"))}
                            aria-expanded={subs_open.to_string()} aria-controls="subs-panel" onclick={toggle_subs}>
                        { format!("Subscriptions ({subscriptions})") }</button>
                    <button id="show-publish" class={classes!("secondary", "panel-toggle", publish_open.then_some("on"))}
                            aria-expanded={publish_open.to_string()} aria-controls="publish-panel" onclick={toggle_publish}>
                        { "Publish" }</button>
                    </span>
                </p>
                <p class="muted endpoint-line">
                    { format!("MQTT {} · ", if version.is_v5() { "5.0" } else { "3.1.1" }) }
                    <code class="conn-endpoint">{ handle.read(|w| profile.endpoint(&w.same_origin)) }</code>
                    if let Some((client_id, resumed)) = session {
                        { format!(" · client id {client_id}{}", if resumed { " · session resumed" } else { "" }) }
                    }
                </p>
                { for connect_errors.iter().map(|e| html! { <p class="error" role="alert">{ e.message.clone() }</p> }) }
                if !log.is_empty() {
                    <ul class="log">{ for log.iter().rev().take(5).map(|l| html! { <li>{ l.clone() }</li> }) }</ul>
                }
            </section>
            { outbox(&handle, &id) }
            <section id="subs-panel" class="card" aria-labelledby="subs-title" hidden={!*subs_open}>
                <h2 id="subs-title">{ "Subscriptions" }</h2>
                <Subscriptions handle={handle.clone()} id={id.clone()} v5={version.is_v5()} frame={props.frame} />
            </section>
            <section id="publish-panel" class="card" aria-labelledby="publish-title" hidden={!*publish_open}>
                <h2 id="publish-title">{ "Publish" }</h2>
                <PublishEditor handle={handle.clone()} id={id.clone()} version={version} frame={props.frame} prefill={(*prefill).clone()} />
                if let Some((_, state)) = last_publish {
                    <p class="muted publish-result" role="status">{ state }</p>
                }
                { sent_history(&handle, &id) }
            </section>
            if let Some(store) = store {
                { topics(&handle, &id, &store, props.topic.as_deref(), props.frame) }
            } else {
                <section class="card topics-card"><h2>{ "Topics" }</h2>
                    <p class="muted">{ "Connect, then every message on your subscriptions appears here as a tree." }</p></section>
            }
        </div>
    }
}

/// What waits to be sent: counted, listed, each cancellable; kept across a page reload.
fn outbox(handle: &Handle, id: &str) -> Html {
    let Some(conn) = handle.conn(id) else {
        return html! {};
    };
    let waiting = conn.outbox();
    let inflight = conn.inflight();
    if waiting.is_empty() && inflight == 0 {
        return html! {};
    }
    html! {
        <section class="card outbox" aria-labelledby="outbox-title">
            <h2 id="outbox-title">{ "Outbox" }</h2>
            <p class="outbox-count">{ format!("{} waiting to be sent · {} sent, not yet acknowledged", waiting.len(), inflight) }</p>
            <p class="muted">{ "Kept in this browser: they go when the connection is up, even after a reload." }</p>
            <ul class="waiting-list">
                { for waiting.iter().take(50).map(|w| {
                    let (handle, id, key) = (handle.clone(), id.to_owned(), w.key);
                    html! {
                        <li class="waiting" data-topic={w.topic.clone()}>
                            <code>{ w.topic.clone() }</code>
                            { format!(" · QoS {} · {} B{}", w.qos as u8, w.bytes, if w.retain { " · retained" } else { "" }) }
                            <button class="secondary cancel" onclick={Callback::from(move |_: MouseEvent| handle.cancel(&id, key))}>{ "Cancel" }</button>
                        </li>
                    }
                }) }
                if waiting.len() > 50 { <li class="muted">{ format!("… and {} more", waiting.len() - 50) }</li> }
            </ul>
        </section>
    }
}

/// Properties of [`Subscriptions`].
#[derive(Properties, PartialEq)]
pub struct SubsProps {
    /// The workspace.
    pub handle: Handle,
    /// The profile.
    pub id: String,
    /// Whether the connection speaks 5.0 (subscription options).
    pub v5: bool,
    /// Changes whenever the workspace may have.
    pub frame: u64,
}

/// The profile's subscriptions with what the broker said, and the form to add one.
#[component]
fn Subscriptions(props: &SubsProps) -> Html {
    let spec = use_state(|| SubSpec::new("#", 1));
    let problem = use_state(|| None::<String>);
    let filter_error = kite_mqtt::topic::validate_filter(&spec.filter)
        .err()
        .map(|e| e.to_string());
    let (saved, states) = props.handle.read(|w| {
        (
            w.profiles
                .iter()
                .find(|p| p.id == props.id)
                .map(|p| p.subscriptions.clone())
                .unwrap_or_default(),
            w.links.get(&props.id).map(|l| l.subs.clone()),
        )
    });
    let closed = props.handle.conn(&props.id).is_none_or(|c| c.is_closed());
    let add = {
        let (handle, id, spec, problem) = (
            props.handle.clone(),
            props.id.clone(),
            spec.clone(),
            problem.clone(),
        );
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            problem.set(handle.subscribe(&id, (*spec).clone()).err());
        })
    };
    html! {
        <>
            <form class="row" onsubmit={add}>
                <label for="filter">{ "Topic filter" }</label>
                <input id="filter" value={spec.filter.clone()} oninput={on_text(&spec, |s, v| s.filter = v)} spellcheck="false" autocomplete="off" />
                <label for="sub-qos">{ "QoS" }</label>
                <select id="sub-qos" onchange={on_select(&spec, |s, v| s.qos = v.parse().unwrap_or(0))}>
                    { for (0..=2u8).map(|q| html! { <option value={q.to_string()} selected={spec.qos == q}>{ q }</option> }) }
                </select>
                if props.v5 {
                    <label title="the broker does not send me my own messages"><input id="sub-no-local" type="checkbox" checked={spec.no_local}
                        onchange={on_check(&spec, |s, v| s.no_local = v)} />{ " no local" }</label>
                    <label title="keep the RETAIN flag as published"><input id="sub-rap" type="checkbox" checked={spec.retain_as_published}
                        onchange={on_check(&spec, |s, v| s.retain_as_published = v)} />{ " retain as published" }</label>
                    // (The select inside its label: a narrow row wraps them together.)
                    <label class="nowrap">{ "retained " }
                        <select id="sub-rh" onchange={on_select(&spec, |s, v| s.retain_handling = v.parse().unwrap_or(0))}>
                            <option value="0" selected={spec.retain_handling == 0}>{ "send at subscribe" }</option>
                            <option value="1" selected={spec.retain_handling == 1}>{ "send if new" }</option>
                            <option value="2" selected={spec.retain_handling == 2}>{ "do not send" }</option>
                        </select>
                    </label>
                }
                <button id="subscribe" type="submit" disabled={filter_error.is_some()}>{ "Subscribe" }</button>
            </form>
            if let Some(err) = filter_error {
                <p class="error filter-error" role="alert">{ err }</p>
            }
            if let Some(p) = &*problem { <p class="error" role="alert">{ p.clone() }</p> }
            <ul class="subscriptions">
                { for saved.iter().map(|s| {
                    let state = match states.as_ref().and_then(|m| m.get(&s.filter)) {
                        _ if closed => "made when connected".to_owned(),
                        None => "not made yet".to_owned(),
                        Some(SubState::Pending(_)) => "pending".to_owned(),
                        Some(SubState::Granted(q)) => format!("granted QoS {q}"),
                        Some(SubState::Refused(r)) => format!("refused: {r}"),
                    };
                    let refused = state.starts_with("refused");
                    let mut options = Vec::new();
                    if s.no_local { options.push("no local"); }
                    if s.retain_as_published { options.push("retain as published"); }
                    match s.retain_handling { 1 => options.push("retained if new"), 2 => options.push("no retained"), _ => {} }
                    let (handle, id, filter) = (props.handle.clone(), props.id.clone(), s.filter.clone());
                    html! {
                        <li class={classes!("subscription", refused.then_some("error"))} data-filter={s.filter.clone()}>
                            <code>{ s.filter.clone() }</code>
                            { format!(" · QoS {}{} — ", s.qos, options.iter().map(|o| format!(" · {o}")).collect::<String>()) }
                            <span class="sub-state">{ state }</span>
                            <button class="secondary unsubscribe" onclick={Callback::from(move |_: MouseEvent| handle.unsubscribe(&id, &filter))}>{ "Remove" }</button>
                        </li>
                    }
                }) }
            </ul>
        </>
    }
}

/// Properties of [`PublishEditor`].
#[derive(Properties, PartialEq)]
pub struct PublishProps {
    /// The workspace.
    pub handle: Handle,
    /// The profile.
    pub id: String,
    /// The connection's version (MQTT 5 shows properties).
    pub version: Version,
    /// Changes whenever the workspace may have (a resend may load a draft).
    pub frame: u64,
    /// A topic to put in the form (numbered, so that the same one again is put again).
    #[prop_or_default]
    pub prefill: Option<(u32, String)>,
}

/// The publish form.
#[component]
fn PublishEditor(props: &PublishProps) -> Html {
    let draft = use_state(Draft::default);
    let errors = use_state(Vec::<FieldError>::new);
    // A draft chosen in the sent history replaces the form's.
    let reuse = props.handle.read(|w| w.reuse.get(&props.id).cloned());
    {
        let (draft, handle, id) = (draft.clone(), props.handle.clone(), props.id.clone());
        use_effect_with(reuse, move |reuse| {
            if let Some(d) = reuse {
                draft.set(d.clone());
                handle.take_reuse(&id);
            }
        });
    }
    {
        let draft = draft.clone();
        use_effect_with(props.prefill.clone(), move |prefill| {
            if let Some((_, topic)) = prefill {
                draft.set(Draft {
                    topic: topic.clone(),
                    ..(*draft).clone()
                });
            }
        });
    }
    let v5 = props.version.is_v5();
    // Checked as you type: the topic and payload; everything on Publish.
    let live = match draft.build(props.version) {
        Ok(_) => Vec::new(),
        Err(e) => e,
    };
    let topic_error = live
        .iter()
        .find(|e| e.field == "topic")
        .map(|e| e.message.clone());
    let publish = {
        let (handle, id, draft, errors) = (
            props.handle.clone(),
            props.id.clone(),
            draft.clone(),
            errors.clone(),
        );
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            match handle.publish(&id, &draft) {
                Ok(()) => errors.set(Vec::new()),
                Err(e) => errors.set(e),
            }
        })
    };
    let shown: Vec<FieldError> = live
        .iter()
        .filter(|e| e.field != "topic")
        .chain(errors.iter().filter(|e| !live.contains(e)))
        .cloned()
        .collect();
    html! {
        <form class="publish" onsubmit={publish}>
            <p class="row">
                <label for="pub-topic">{ "Topic" }</label>
                <input id="pub-topic" value={draft.topic.clone()} oninput={on_text(&draft, |d, v| d.topic = v)} spellcheck="false" autocomplete="off" />
                <label for="pub-qos">{ "QoS" }</label>
                <select id="pub-qos" key={format!("qos{}", draft.qos)} onchange={on_select(&draft, |d, v| d.qos = v.parse().unwrap_or(0))}>
                    { for (0..=2u8).map(|q| html! { <option value={q.to_string()} selected={draft.qos == q}>{ q }</option> }) }
                </select>
                <label><input id="pub-retain" type="checkbox" checked={draft.retain} onchange={on_check(&draft, |d, v| d.retain = v)} />{ " retain" }</label>
                <label for="pub-format">{ "as" }</label>
                <select id="pub-format" key={draft.format.label()} onchange={on_select(&draft, |d, v| {
                    d.format = Format::ALL.into_iter().find(|f| f.label() == v).unwrap_or(Format::Text);
                })}>
                    { for Format::ALL.iter().map(|f| html! { <option value={f.label()} selected={draft.format == *f}>{ f.label() }</option> }) }
                </select>
            </p>
            if let Some(err) = topic_error {
                <p class="error topic-error" role="alert">{ err }</p>
            }
            <p class="row">
                <textarea id="pub-payload" rows="3" placeholder={match draft.format {
                    Format::Json => "{\"on\": true}", Format::Hex => "de ad be ef", Format::Base64 => "S2l0ZQ==", Format::Text => "payload" }}
                    value={draft.payload.clone()} oninput={on_text(&draft, |d, v| d.payload = v)} spellcheck="false" />
            </p>
            { field_errors(&shown, "payload") }
            if v5 {
                <details class="props-form" open={draft.has_v5_properties()}>
                    <summary>{ "MQTT 5 properties" }</summary>
                    <div class="form">
                        <label for="pub-content-type">{ "Content type" }</label>
                        <input id="pub-content-type" value={draft.content_type.clone()} placeholder="application/json"
                               oninput={on_text(&draft, |d, v| d.content_type = v)} />
                        <span class="label">{ "Payload format" }</span>
                        <label><input id="pub-utf8" type="checkbox" checked={draft.utf8} onchange={on_check(&draft, |d, v| d.utf8 = v)} />{ " UTF-8 text" }</label>
                        <label for="pub-expiry">{ "Message expiry (s)" }</label>
                        <input id="pub-expiry" class="short" value={draft.expiry.clone()} inputmode="numeric"
                               oninput={on_text(&draft, |d, v| d.expiry = v)} />
                        <label for="pub-response-topic">{ "Response topic" }</label>
                        <input id="pub-response-topic" value={draft.response_topic.clone()} spellcheck="false"
                               oninput={on_text(&draft, |d, v| d.response_topic = v)} />
                        <label for="pub-correlation">{ "Correlation data" }</label>
                        <input id="pub-correlation" value={draft.correlation.clone()} oninput={on_text(&draft, |d, v| d.correlation = v)} />
                        <label for="pub-user-properties">{ "User properties" }</label>
                        <textarea id="pub-user-properties" rows="2" placeholder="name: value, one per line" value={draft.user_properties.clone()}
                                  oninput={on_text(&draft, |d, v| d.user_properties = v)} />
                    </div>
                </details>
            }
            { for ["utf8", "content_type", "expiry", "response_topic", "user_properties", "properties"].iter().map(|f| field_errors(&shown, f)) }
            <p class="row">
                <button id="publish" type="submit" disabled={!live.is_empty()}>{ "Publish" }</button>
            </p>
        </form>
    }
}

/// The last messages sent from this profile: send again, or load into the form.
fn sent_history(handle: &Handle, id: &str) -> Html {
    let sent = handle.read(|w| w.sent.get(id).cloned().unwrap_or_default());
    if sent.is_empty() {
        return html! {};
    }
    html! {
        <details class="sent">
            <summary>{ format!("Sent ({})", sent.len()) }</summary>
            <ul>
                { for sent.into_iter().map(|d| {
                    let summary = format!("{} · QoS {}{} · {}", d.topic, d.qos, if d.retain { " · retained" } else { "" },
                        crate::payload::preview(d.payload.as_bytes(), d.payload.len(), 40));
                    let resend = {
                        let (handle, id, d) = (handle.clone(), id.to_owned(), d.clone());
                        Callback::from(move |_: MouseEvent| { let _ = handle.publish(&id, &d); })
                    };
                    let edit = {
                        let (handle, id) = (handle.clone(), id.to_owned());
                        Callback::from(move |_: MouseEvent| handle.reuse(&id, d.clone()))
                    };
                    html! {
                        <li class="sent-entry">
                            <span>{ summary }</span>
                            <button class="secondary resend" onclick={resend}>{ "Send again" }</button>
                            <button class="secondary reuse" onclick={edit}>{ "Edit" }</button>
                        </li>
                    }
                }) }
            </ul>
        </details>
    }
}

/// The topic explorer of one connection.
fn topics(
    handle: &Handle,
    id: &str,
    store: &crate::explorer::StoreHandle,
    topic: Option<&str>,
    frame: u64,
) -> Html {
    let store = store.clone();
    let (received, topics, (kept_bytes, kept), evicted, caps, paused) = {
        let s = store.0.borrow();
        (
            s.received(),
            s.topics(),
            s.memory(),
            s.evicted(),
            s.caps(),
            s.paused(),
        )
    };
    let pause = {
        let (store, handle) = (store.clone(), handle.clone());
        Callback::from(move |_: MouseEvent| {
            let mut s = store.0.borrow_mut();
            if s.paused().is_some() {
                s.resume();
            } else {
                s.pause();
            }
            handle.request_frame();
        })
    };
    let selected: Option<NodeId> = topic.and_then(|t| store.0.borrow().find(t));
    // The gateway records its default broker: shown for profiles that dial it.
    let recorded_broker = handle.read(|w| w.recorded_broker.clone());
    let recorded = handle
        .profile(id)
        .zip(recorded_broker)
        .and_then(|(p, broker)| {
            let default_broker =
                p.url.is_empty() && (p.upstream.is_empty() || p.upstream == broker);
            default_broker.then(|| {
                (!p.username.is_empty()).then(|| {
                    let login = format!("{}:{}", p.username, p.password);
                    format!("Basic {}", crate::payload::base64(login.as_bytes()))
                })
            })
        });
    let on_tree_filter = {
        let (store, handle) = (store.clone(), handle.clone());
        Callback::from(move |e: InputEvent| {
            store.0.borrow_mut().set_filter(&value_of(&e));
            handle.request_frame();
        })
    };
    let on_select = {
        let (store, id) = (store.clone(), id.to_owned());
        Callback::from(move |node: NodeId| {
            let topic = store.0.borrow().topic(node);
            go(
                &Route::Topic {
                    id: id.clone(),
                    topic,
                },
                true,
            );
        })
    };
    let on_change = {
        let handle = handle.clone();
        Callback::from(move |()| handle.request_frame())
    };
    // Clears the search only; forgetting what was collected is `forget`, a step further.
    let clear_search = {
        let (store, handle) = (store.clone(), handle.clone());
        move || {
            if let Some(input) = web_sys::window()
                .and_then(|w| w.document())
                .and_then(|d| d.get_element_by_id("tree-filter"))
                .and_then(|e| e.dyn_into::<web_sys::HtmlInputElement>().ok())
            {
                input.set_value("");
            }
            store.0.borrow_mut().set_filter("");
            handle.request_frame();
        }
    };
    let clear = {
        let clear_search = clear_search.clone();
        Callback::from(move |_: MouseEvent| clear_search())
    };
    let on_find_key = Callback::from(move |e: KeyboardEvent| {
        if e.key() == "Escape" {
            clear_search();
        }
    });
    let forget = {
        let (store, handle) = (store.clone(), handle.clone());
        Callback::from(move |_: MouseEvent| {
            store.0.borrow_mut().clear();
            handle.request_frame();
        })
    };
    let on_delete = {
        let (handle, id) = (handle.clone(), id.to_owned());
        Callback::from(move |topics: Vec<String>| handle.delete_retained(&id, &topics))
    };
    let set_cap = |history: bool| {
        let handle = handle.clone();
        Callback::from(move |e: Event| {
            let Ok(n) = value_of(&e).trim().parse::<usize>() else {
                return;
            };
            let mut caps = handle.read(|w| w.caps);
            if history {
                caps.history_per_topic = n.min(10_000);
            } else {
                caps.memory_bytes = crate::store::memory_cap(n as u64);
            }
            handle.set_caps(caps);
        })
    };
    let mib = |b: usize| b as f64 / (1024.0 * 1024.0);
    html! {
        <section class="card topics-card" aria-labelledby="topics-title">
            <div class="topics-head">
                <h2 id="topics-title">{ "Topics" }</h2>
                <span class="muted count">{ format!("{} received on {}", plural(received, "message"), plural(topics as u64, "topic")) }</span>
                <span class="muted memory">{ format!("{kept} kept, {} MiB of {} MiB", crate::explorer::tenths(mib(kept_bytes)), caps.memory_bytes / (1024 * 1024)) }
                    if evicted > 0 { { format!(" · {evicted} oldest dropped for memory") } }
                </span>
                if let Some((held, dropped)) = paused {
                    <span class="paused" role="status">{ format!("Paused: {} held{}", plural(held as u64, "new message"),
                        if dropped > 0 { format!(", {dropped} oldest dropped for memory") } else { String::new() }) }</span>
                }
            </div>
            <div class="row find-row">
                <label for="tree-filter">{ "Find" }</label>
                <input id="tree-filter" oninput={on_tree_filter} onkeydown={on_find_key} placeholder="text, a value, or a filter like plant/+/temp" spellcheck="false" autocomplete="off" title="Esc clears it" />
                <button id="clear" class="secondary" onclick={clear} title="Clear the search">{ "Clear" }</button>
                <button id="pause" class={classes!("secondary", paused.is_some().then_some("on"))} aria-pressed={paused.is_some().to_string()} onclick={pause}
                        title="Hold new messages (not shown) until resumed">{ if paused.is_some() { "Resume" } else { "Pause" } }</button>
            <details class="caps">
                <summary>{ "Limits" }</summary>
                <p class="row">
                    <label for="cap-history">{ "messages kept per topic" }</label>
                    <input id="cap-history" class="short" type="number" min="0" max="10000" value={caps.history_per_topic.to_string()} onchange={set_cap(true)} />
                    <label for="cap-memory">{ "MiB kept in all" }</label>
                    <input id="cap-memory" class="short" type="number" min="1" max="2048" value={(caps.memory_bytes / (1024 * 1024)).to_string()} onchange={set_cap(false)} />
                </p>
            </details>
            <details class="caps forget">
                <summary>{ "Forget collected messages…" }</summary>
                <p class="row">
                    <span class="muted">{ format!("The {} and {} this tab collected are dropped (the broker keeps its retained messages).", plural(received, "message"), plural(topics as u64, "topic")) }</span>
                    <button id="forget" class="danger" onclick={forget}>{ "Forget them" }</button>
                </p>
            </details>
            </div>
            <div class={classes!("explorer", selected.is_some().then_some("chosen"))}>
                <div class="tree-pane">
                    <TopicTree store={store.clone()} frame={frame} selected={selected} on_select={on_select} on_change={on_change} />
                </div>
                if let Some(node) = selected {
                    <div class="detail-pane">
                        // On a phone one pane shows at a time: back to the tree.
                        { link(Route::Connection { id: id.to_owned() }, "back", html! { "← Topics" }) }
                        <TopicDetail store={store.clone()} node={node} frame={frame} on_delete={on_delete} recorded={recorded} />
                    </div>
                }
            </div>
        </section>
    }
}
