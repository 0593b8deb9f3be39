//! The app's root: routes, the connection list, and the gateway's brokers.

use std::rc::Rc;

use yew::prelude::*;

use crate::api::{self, Bridges, Upstreams};
use crate::connview::{ConnectionView, status_class, status_text};
use crate::editor::ProfileEditor;
use crate::explorer::Frames;
use crate::mqtt::Status;
use crate::workspace::Handle;

pub use crate::route::Route;
use crate::route::{link, use_route};

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
    // The embedded broker's bridges, now and every 5 s.
    let bridges = use_state(|| None::<Result<Bridges, String>>);
    {
        let bridges = bridges.clone();
        crate::tick::use_interval(5_000, move || {
            let bridges = bridges.clone();
            wasm_bindgen_futures::spawn_local(async move {
                bridges.set(Some(api::bridges().await));
            });
        });
    }
    // Driver notices and messages change the workspace; the view follows at most once per
    // animation frame.
    let force = use_force_update();
    let frames: Rc<Frames> = (*use_state(|| Frames::new(move || force.force_update()))).clone();
    let frame = frames.frame();
    let handle = (*use_state(|| {
        Handle::load(
            mqtt_endpoint().unwrap_or_else(|| "/mqtt".to_owned()),
            frames.clone(),
        )
    }))
    .clone();
    // A reconnect delay counts down in the status: a render each second while one waits.
    {
        let handle = handle.clone();
        crate::tick::use_interval(1_000, move || {
            let waiting = handle.read(|w| {
                w.links
                    .values()
                    .any(|l| matches!(l.status, Status::Reconnecting { .. }))
            });
            if waiting {
                handle.request_frame();
            }
        });
    }
    {
        // The panes fill the window: a resize renders again (the tree measures its height).
        let handle = handle.clone();
        use_effect_with((), move |()| {
            let on_resize = wasm_bindgen::closure::Closure::<dyn FnMut()>::new(move || {
                handle.request_frame();
            });
            if let Some(w) = web_sys::window() {
                w.set_onresize(Some(wasm_bindgen::JsCast::unchecked_ref(
                    on_resize.as_ref(),
                )));
            }
            // The app's life: the page's.
            on_resize.forget();
        });
    }
    let route = use_route();
    let kiosk = matches!(route, Route::Dashboard { .. }) && crate::route::kiosk();
    let known = match &*upstreams {
        Load::Ready(u) => Some(u.clone()),
        _ => None,
    };
    if let Some(u) = &known {
        handle.set_recorded_broker(u.history.then(|| u.default.clone().unwrap_or_default()));
    }
    let (auth, profile) = gateway_login(&handle, known.as_ref());
    let open_alarms =
        crate::alarms::use_alarm_watch(known.as_ref().is_some_and(|u| u.alarms), auth.clone());
    let main = match &route {
        Route::Home | Route::NotFound => home(&handle, &upstreams, &bridges),
        Route::Devices => {
            html! { <crate::devices::DevicesView auth={auth.clone()} profile={profile.clone()} /> }
        }
        Route::Alarms => html! { <crate::alarms::AlarmsView auth={auth.clone()} /> },
        Route::Dashboards => html! { <crate::dashboard::DashboardList auth={auth.clone()} /> },
        Route::Dashboard { id } => html! {
            <crate::dashboard::DashboardView key={id.clone()} handle={handle.clone()} id={id.clone()} kiosk={kiosk} auth={auth.clone()} frame={frame} recorded={known.as_ref().is_some_and(|u| u.history)} />
        },
        Route::New => html! {
            <ProfileEditor key="new" handle={handle.clone()} profile={handle.new_profile()} is_new=true upstreams={known.clone()} />
        },
        Route::Edit { id } => match handle.profile(id) {
            Some(p) => {
                html! { <ProfileEditor key={format!("edit-{id}")} handle={handle.clone()} profile={p} is_new=false upstreams={known.clone()} /> }
            }
            None => html! { <p class="error" role="alert">{ "There is no such connection." }</p> },
        },
        Route::Connection { id } => html! {
            <ConnectionView key={id.clone()} handle={handle.clone()} id={id.clone()} topic={None::<String>} frame={frame} />
        },
        Route::Topic { id, topic } => html! {
            <ConnectionView key={id.clone()} handle={handle.clone()} id={id.clone()} topic={Some(topic.clone())} frame={frame} />
        },
    };
    let current = route.profile().map(str::to_owned);
    let problem = handle.read(|w| w.problem.clone());
    let dismiss = {
        let handle = handle.clone();
        Callback::from(move |_: MouseEvent| handle.dismiss_problem())
    };
    if kiosk {
        return html! { <div id="kite-app" class="kite kiosk">{ main }</div> };
    }
    html! {
        <div id="kite-app" class="kite">
            <header class="bar">
                <span class="logo" aria-hidden="true">{ "◆" }</span>
                <h1>{ link(Route::Home, "home", html! { "Kite" }) }</h1>
                <span class="tagline">{ "MQTT in the browser" }</span>
            </header>
            if let Some(p) = problem {
                <p class="error banner" role="alert">{ p }<button class="secondary" onclick={dismiss}>{ "Dismiss" }</button></p>
            }
            <div class="layout">
                <nav class="sidebar" aria-label="connections">
                    { views(known.as_ref(), &route, open_alarms) }
                    { sidebar(&handle, current.as_deref()) }
                </nav>
                <main>{ main }</main>
            </div>
        </div>
    }
}

/// The gateway's own views — Devices, Alarms (with the count of open alarms) — when it has
/// them.
fn views(upstreams: Option<&Upstreams>, route: &Route, open_alarms: Option<usize>) -> Html {
    let Some(u) = upstreams.filter(|u| u.devices || u.alarms || u.dashboards) else {
        return html! {};
    };
    let item = |to: Route, label: &'static str, badge: Option<usize>| {
        let on =
            *route == to || (to == Route::Dashboards && matches!(route, Route::Dashboard { .. }));
        html! {
            <li class={classes!("view", on.then_some("on"))}>
                { link(to, "", html! { <>
                    <span class="view-name">{ label }</span>
                    if let Some(n) = badge.filter(|n| *n > 0) {
                        <span class="badge alarm-badge" title="open alarms">{ n }</span>
                    }
                </> }) }
            </li>
        }
    };
    html! {
        <>
            <h2 class="side-title">{ "Gateway" }</h2>
            <ul class="views">
                if u.dashboards { { item(Route::Dashboards, "Dashboards", None) } }
                if u.devices { { item(Route::Devices, "Devices", None) } }
                if u.alarms { { item(Route::Alarms, "Alarms", open_alarms) } }
            </ul>
        </>
    }
}

/// The login and the connection for the gateway's own API: the first saved connection that
/// dials the gateway's default broker (its user name and password as HTTP Basic, if it has
/// them).
fn gateway_login(
    handle: &Handle,
    upstreams: Option<&Upstreams>,
) -> (Option<String>, Option<String>) {
    let default = upstreams
        .and_then(|u| u.default.clone())
        .unwrap_or_default();
    handle.read(|w| {
        let dials = |p: &&crate::profile::Profile| {
            p.url.is_empty() && (p.upstream.is_empty() || p.upstream == default)
        };
        let with_login = w
            .profiles
            .iter()
            .filter(dials)
            .find(|p| !p.username.is_empty());
        let auth = with_login.map(|p| {
            let login = format!("{}:{}", p.username, p.password);
            format!("Basic {}", crate::payload::base64(login.as_bytes()))
        });
        let profile = w.profiles.iter().find(dials).map(|p| p.id.clone());
        (auth, profile)
    })
}

/// Every saved connection with its colour and status, and "new connection".
fn sidebar(handle: &Handle, current: Option<&str>) -> Html {
    let items: Vec<(String, String, String, Status, usize)> = handle.read(|w| {
        w.profiles
            .iter()
            .map(|p| {
                let (status, waiting) = w.links.get(&p.id).map_or((Status::Closed, 0), |l| {
                    (l.status.clone(), l.conn.outbox_len())
                });
                (
                    p.id.clone(),
                    p.name.clone(),
                    p.colour.clone(),
                    status,
                    waiting,
                )
            })
            .collect()
    });
    html! {
        <>
            <h2 class="side-title">{ "Connections" }</h2>
            <ul class="profiles">
                { for items.into_iter().map(|(id, name, colour, status, waiting)| {
                    let on = current == Some(id.as_str());
                    html! {
                        <li class={classes!("profile", on.then_some("on"))} data-profile={id.clone()} style={format!("--conn:{colour}")}>
                            { link(Route::Connection { id: id.clone() }, "", html! { <>
                                <span class={classes!("dot", status_class(&status))} />
                                <span class="profile-name">{ name }</span>
                                <span class="profile-status muted">{ status_text(&status) }</span>
                                if waiting > 0 { <span class="badge" title="messages waiting to be sent">{ waiting }</span> }
                            </> }) }
                        </li>
                    }
                }) }
            </ul>
            { link(Route::New, "button new-connection", html! { "+ New connection" }) }
        </>
    }
}

/// The start page: what Kite is connected to, and where to begin.
fn home(handle: &Handle, upstreams: &Load, bridges: &Option<Result<Bridges, String>>) -> Html {
    let (count, endpoint) = handle.read(|w| (w.profiles.len(), w.same_origin.clone()));
    html! {
        <>
            <section class="card" aria-labelledby="welcome-title">
                <h2 id="welcome-title">{ if count == 0 { "Welcome" } else { "Connections" } }</h2>
                if count == 0 {
                    <p>{ "Make a connection to a broker through this gateway: name it, pick the broker, connect, subscribe." }</p>
                } else {
                    <p>{ format!("{count} saved in this browser: pick one on the left, or make another.") }</p>
                }
                <p>{ link(Route::New, "button", html! { "New connection" }) }</p>
            </section>
            <section class="card" aria-labelledby="gateway-title">
                <h2 id="gateway-title">{ "Gateway" }</h2>
                <p>{ "MQTT over WebSocket: " }<code class="endpoint">{ endpoint }</code></p>
                { upstream_list(upstreams) }
            </section>
            { bridge_card(bridges) }
        </>
    }
}

/// The embedded broker's bridges to other brokers: each with its state, what waits for its
/// remote, and why it is down. Nothing when there are none.
fn bridge_card(bridges: &Option<Result<Bridges, String>>) -> Html {
    let body = match bridges {
        None => return html! {},
        Some(Ok(Bridges::List(list))) if list.is_empty() => return html! {},
        Some(Ok(Bridges::LoginNeeded)) => html! {
            <p class="muted">{ "The gateway shows its bridges to logged-in users: GET /api/v1/bridges with a user's name and password." }</p>
        },
        Some(Err(reason)) => html! {
            <p class="error" role="alert">{ format!("Could not read the gateway's bridges: {reason}") }</p>
        },
        Some(Ok(Bridges::List(list))) => html! {
            <ul class="bridges">
                { for list.iter().map(|b| {
                    let (class, state) = if b.up { ("connected", "connected") } else { ("failed", "down") };
                    html! {
                        <li class="bridge" data-name={b.name.clone()} data-state={state}>
                            <span class={classes!("dot", class)} />
                            <span class="bridge-name">{ b.name.clone() }</span>
                            <span class="bridge-state muted">{ state }</span>
                            if b.queued > 0 {
                                <span class="badge" title="messages waiting for the remote broker">{ format!("{} waiting", b.queued) }</span>
                            }
                            if !b.up && let Some(e) = &b.last_error {
                                <p class="bridge-error muted">{ e.clone() }</p>
                            }
                        </li>
                    }
                }) }
            </ul>
        },
    };
    html! {
        <section class="card" aria-labelledby="bridges-title">
            <h2 id="bridges-title">{ "Bridges" }</h2>
            { body }
        </section>
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
