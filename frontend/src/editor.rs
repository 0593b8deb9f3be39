//! The connection profile form: new or edited, checked as you type, saved in the browser.

use kite_mqtt::Version;
use yew::prelude::*;

use crate::api::Upstreams;
use crate::forms::{field_errors, on_check, on_select, on_text};
use crate::profile::{PALETTE, Profile};
use crate::route::{Route, go};
use crate::workspace::Handle;

/// Properties of [`ProfileEditor`].
#[derive(Properties, PartialEq)]
pub struct EditorProps {
    /// The workspace.
    pub handle: Handle,
    /// The profile as it starts (a fresh one for "new").
    pub profile: Profile,
    /// Whether it is not saved yet.
    pub is_new: bool,
    /// The gateway's brokers, when known.
    pub upstreams: Option<Upstreams>,
}

/// The form.
#[component]
pub fn ProfileEditor(props: &EditorProps) -> Html {
    let draft = use_state(|| props.profile.clone());
    let errors = match draft.check_here() {
        Ok(_) => Vec::new(),
        Err(e) => e,
    };
    // Checked as you type (a new profile starts valid, so every error is the person's own).
    let shown = errors.clone();
    let v5 = draft.version.is_v5();

    let save = {
        let (handle, draft) = (props.handle.clone(), draft.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            let profile = (*draft).clone();
            let id = profile.id.clone();
            if handle.save_profile(profile).is_ok() {
                go(&Route::Connection { id }, false);
            }
        })
    };
    let upstream_options = match &props.upstreams {
        Some(u) if !u.names.is_empty() => html! {
            <>
                <label for="profile-upstream">{ "Broker behind the gateway" }</label>
                <select id="profile-upstream" onchange={on_select(&draft, |p, v| p.upstream = v)}>
                    <option value="" selected={draft.upstream.is_empty()}>
                        { format!("default{}", u.default.as_ref().map(|d| format!(" ({d})")).unwrap_or_default()) }
                    </option>
                    { for u.names.iter().map(|n| html! {
                        <option value={n.clone()} selected={draft.upstream == *n}>{ n.clone() }</option>
                    }) }
                </select>
            </>
        },
        _ => html! {},
    };
    html! {
        <section class="card editor" aria-labelledby="editor-title">
            <h2 id="editor-title">{ if props.is_new { "New connection" } else { "Edit connection" } }</h2>
            <form class="form" onsubmit={save} novalidate=true>
                <label for="profile-name">{ "Name" }</label>
                <input id="profile-name" value={draft.name.clone()} oninput={on_text(&draft, |p, v| p.name = v)} />
                { field_errors(&shown, "name") }

                <span class="label">{ "Colour" }</span>
                <div class="colours" role="radiogroup" aria-label="colour">
                    { for PALETTE.iter().map(|c| {
                        let draft = draft.clone();
                        let colour = (*c).to_owned();
                        let on = draft.colour == colour;
                        html! {
                            <button type="button" class={classes!("swatch", on.then_some("on"))} role="radio" aria-checked={on.to_string()}
                                    style={format!("background:{c}")} title={colour.clone()}
                                    onclick={Callback::from(move |_: MouseEvent| {
                                        let mut p = (*draft).clone();
                                        p.colour = colour.clone();
                                        draft.set(p);
                                    })} />
                        }
                    }) }
                </div>

                <label for="profile-url">{ "Gateway URL" }</label>
                <input id="profile-url" value={draft.url.clone()} placeholder={props.handle.read(|w| w.same_origin.clone())}
                       oninput={on_text(&draft, |p, v| p.url = v)} spellcheck="false" />
                { field_errors(&shown, "url") }
                { upstream_options }

                <label for="profile-version">{ "MQTT version" }</label>
                <select id="profile-version" onchange={on_select(&draft, |p, v| {
                    p.version = if v == "3.1.1" { Version::V3_1_1 } else { Version::V5 };
                })}>
                    <option value="5" selected={v5}>{ "5.0" }</option>
                    <option value="3.1.1" selected={!v5}>{ "3.1.1" }</option>
                </select>

                <label for="profile-client-id">{ "Client id" }</label>
                <input id="profile-client-id" value={draft.client_id.clone()} spellcheck="false"
                       placeholder={if v5 { "empty: the broker assigns one" } else { "" }}
                       oninput={on_text(&draft, |p, v| p.client_id = v)} />
                { field_errors(&shown, "client_id") }

                <label for="profile-username">{ "User name" }</label>
                <input id="profile-username" value={draft.username.clone()} autocomplete="username"
                       oninput={on_text(&draft, |p, v| p.username = v)} />
                { field_errors(&shown, "username") }
                <label for="profile-password">{ "Password" }</label>
                <span class="row">
                    <input id="profile-password" type="password" value={draft.password.clone()} autocomplete="current-password"
                           oninput={on_text(&draft, |p, v| p.password = v)} />
                    <label><input id="profile-save-password" type="checkbox" checked={draft.save_password}
                                  onchange={on_check(&draft, |p, v| p.save_password = v)} />{ " remember in this browser" }</label>
                </span>
                { field_errors(&shown, "password") }

                <span class="label">{ "Session" }</span>
                <span class="row">
                    <label><input id="profile-clean-start" type="checkbox" checked={draft.clean_start}
                                  onchange={on_check(&draft, |p, v| p.clean_start = v)} />{ " clean start" }</label>
                    if v5 {
                        <label for="profile-session-expiry">{ "session expiry (s)" }</label>
                        <input id="profile-session-expiry" class="short" value={draft.session_expiry.clone()} inputmode="numeric"
                               oninput={on_text(&draft, |p, v| p.session_expiry = v)} />
                    }
                    <label for="profile-keep-alive">{ "keep-alive (s)" }</label>
                    <input id="profile-keep-alive" class="short" value={draft.keep_alive.clone()} inputmode="numeric"
                           oninput={on_text(&draft, |p, v| p.keep_alive = v)} />
                </span>
                { field_errors(&shown, "session_expiry") }
                { field_errors(&shown, "keep_alive") }

                <span class="label">{ "Last Will" }</span>
                <span class="row">
                    <input id="profile-will-topic" value={draft.will_topic.clone()} placeholder="topic (empty: no Will)" spellcheck="false"
                           oninput={on_text(&draft, |p, v| p.will_topic = v)} />
                    <input id="profile-will-payload" value={draft.will_payload.clone()} placeholder="payload"
                           oninput={on_text(&draft, |p, v| p.will_payload = v)} />
                    <label for="profile-will-qos">{ "QoS" }</label>
                    <select id="profile-will-qos" onchange={on_select(&draft, |p, v| p.will_qos = v.parse().unwrap_or(0))}>
                        { for (0..=2u8).map(|q| html! { <option value={q.to_string()} selected={draft.will_qos == q}>{ q }</option> }) }
                    </select>
                    <label><input id="profile-will-retain" type="checkbox" checked={draft.will_retain}
                                  onchange={on_check(&draft, |p, v| p.will_retain = v)} />{ " retain" }</label>
                </span>
                { field_errors(&shown, "will_topic") }

                if v5 {
                    <label for="profile-user-properties">{ "User properties" }</label>
                    <textarea id="profile-user-properties" rows="2" placeholder="name: value, one per line" value={draft.user_properties.clone()}
                              oninput={on_text(&draft, |p, v| p.user_properties = v)} />
                }
                { field_errors(&shown, "user_properties") }

                <span />
                <span class="row">
                    <button id="save-profile" type="submit" disabled={!errors.is_empty()}>{ "Save" }</button>
                    if !errors.is_empty() {
                        <span class="muted">{ format!("{} to fix", crate::forms::plural(errors.len() as u64, "field")) }</span>
                    }
                </span>
            </form>
        </section>
    }
}
