//! The app's root component.

use yew::prelude::*;

use crate::api::{self, Upstreams};

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
