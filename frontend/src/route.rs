//! The app's URLs, so a link can open a connection or one of its topics.
//!
//! A router of its own (about a hundred lines over the History API) rather than yew-router:
//! yew-router 0.20 (with gloo-history, serde, route-recognizer and a generic `Link` per use)
//! made the app 30.5 KB gzip larger, 258.5 KB against 228.0 KB by `cargo xtask dist` on the
//! same code, in a 200 KB budget.

use std::fmt::Write as _;

use wasm_bindgen::JsValue;
use yew::prelude::*;

/// A place in the app.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The connection list and the gateway: `/`.
    Home,
    /// A new connection: `/connections/new`.
    New,
    /// A connection's page: `/connections/<id>`.
    Connection {
        /// The profile id.
        id: String,
    },
    /// A connection's settings: `/connections/<id>/edit`.
    Edit {
        /// The profile id.
        id: String,
    },
    /// A connection's page with a topic selected: `/connections/<id>/topic/<topic>`, each
    /// level percent-encoded.
    Topic {
        /// The profile id.
        id: String,
        /// The topic name.
        topic: String,
    },
    /// The gateway's devices: `/devices`.
    Devices,
    /// The gateway's alarms and alarm rules: `/alarms`.
    Alarms,
    /// The gateway's dashboards: `/dashboards`.
    Dashboards,
    /// One dashboard: `/dashboards/<id>` (`?kiosk` for a wall screen: [`kiosk`]).
    Dashboard {
        /// The dashboard's id.
        id: String,
    },
    /// Anything else.
    NotFound,
}

impl Route {
    /// The route of a path (`location.pathname`).
    pub fn parse(path: &str) -> Self {
        let rest = match path.strip_prefix("/connections/") {
            Some(rest) => rest,
            None if path == "/" || path.is_empty() => return Self::Home,
            None if path == "/devices" => return Self::Devices,
            None if path == "/alarms" => return Self::Alarms,
            None if path == "/dashboards" => return Self::Dashboards,
            None => match path.strip_prefix("/dashboards/") {
                Some(id)
                    if !id.is_empty()
                        && id.len() <= 64
                        && id
                            .bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
                {
                    return Self::Dashboard { id: id.to_owned() };
                }
                _ => return Self::NotFound,
            },
        };
        let (id, tail) = rest.split_once('/').unwrap_or((rest, ""));
        if id == "new" && tail.is_empty() {
            return Self::New;
        }
        if !crate::profile::is_id(id) {
            return Self::NotFound;
        }
        let id = id.to_owned();
        match tail {
            "" => Self::Connection { id },
            "edit" => Self::Edit { id },
            t => match t.strip_prefix("topic/").map(decode_levels) {
                Some(Some(topic)) => Self::Topic { id, topic },
                _ => Self::NotFound,
            },
        }
    }

    /// The path of this route.
    pub fn path(&self) -> String {
        match self {
            Self::Home | Self::NotFound => "/".into(),
            Self::New => "/connections/new".into(),
            Self::Devices => "/devices".into(),
            Self::Alarms => "/alarms".into(),
            Self::Dashboards => "/dashboards".into(),
            Self::Dashboard { id } => format!("/dashboards/{id}"),
            Self::Connection { id } => format!("/connections/{id}"),
            Self::Edit { id } => format!("/connections/{id}/edit"),
            Self::Topic { id, topic } => {
                let mut path = format!("/connections/{id}/topic/");
                for (i, level) in topic.split('/').enumerate() {
                    if i > 0 {
                        path.push('/');
                    }
                    let _ = write!(path, "{}", js_sys::encode_uri_component(level));
                }
                path
            }
        }
    }

    /// The profile this route is about, if any.
    pub fn profile(&self) -> Option<&str> {
        match self {
            Self::Connection { id } | Self::Edit { id } | Self::Topic { id, .. } => Some(id),
            _ => None,
        }
    }
}

/// Percent-decodes each level; `None` if one is not valid percent-encoded UTF-8.
fn decode_levels(encoded: &str) -> Option<String> {
    let levels: Option<Vec<String>> = encoded
        .split('/')
        .map(|l| js_sys::decode_uri_component(l).ok().map(String::from))
        .collect();
    levels.map(|l| l.join("/"))
}

/// Whether the page was opened as a wall screen (`?kiosk`): no chrome around a dashboard.
pub fn kiosk() -> bool {
    web_sys::window()
        .and_then(|w| w.location().search().ok())
        .is_some_and(|q| {
            q.trim_start_matches('?')
                .split('&')
                .any(|p| p == "kiosk" || p.starts_with("kiosk="))
        })
}

/// Where the browser is.
pub fn current() -> Route {
    web_sys::window()
        .and_then(|w| w.location().pathname().ok())
        .map_or(Route::Home, |p| Route::parse(&p))
}

/// Goes to `route` (a new history entry, or replacing the current one) and tells the app
/// (a `popstate` event, which [`use_route`] listens to).
pub fn go(route: &Route, replace: bool) {
    let Some(window) = web_sys::window() else {
        return;
    };
    if let Ok(history) = window.history() {
        let path = route.path();
        let _ = if replace {
            history.replace_state_with_url(&JsValue::NULL, "", Some(&path))
        } else {
            history.push_state_with_url(&JsValue::NULL, "", Some(&path))
        };
    }
    if let Ok(event) = web_sys::Event::new("popstate") {
        let _ = window.dispatch_event(&event);
    }
}

/// The current route, following the back and forward buttons and [`go`].
#[hook]
pub fn use_route() -> Route {
    let route = use_state(current);
    {
        let route = route.clone();
        use_effect_with((), move |()| {
            let listener = wasm_bindgen::closure::Closure::<dyn FnMut()>::new(move || {
                route.set(current());
            });
            let window = web_sys::window();
            if let Some(w) = &window {
                let _ = w.add_event_listener_with_callback(
                    "popstate",
                    wasm_bindgen::JsCast::unchecked_ref(listener.as_ref()),
                );
            }
            move || {
                if let Some(w) = &window {
                    let _ = w.remove_event_listener_with_callback(
                        "popstate",
                        wasm_bindgen::JsCast::unchecked_ref(listener.as_ref()),
                    );
                }
            }
        });
    }
    (*route).clone()
}

/// A link to `route`: a real `<a href>` (open in a new tab works), followed in the app on a
/// plain click.
pub fn link(route: Route, class: &'static str, children: Html) -> Html {
    let href = route.path();
    let onclick = Callback::from(move |e: MouseEvent| {
        if e.button() == 0 && !(e.ctrl_key() || e.meta_key() || e.shift_key() || e.alt_key()) {
            e.prevent_default();
            go(&route, false);
        }
    });
    html! { <a class={class} href={href} onclick={onclick}>{ children }</a> }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_routes_parse_and_print_back() {
        assert_eq!(Route::parse("/dashboards"), Route::Dashboards);
        let one = Route::Dashboard {
            id: "line-1-2".into(),
        };
        assert_eq!(Route::parse("/dashboards/line-1-2"), one);
        assert_eq!(Route::parse(&one.path()), one);
        for bad in [
            "/dashboards/",
            "/dashboards/Line 1",
            "/dashboards/a/b",
            "/dashboardsx",
        ] {
            assert_eq!(Route::parse(bad), Route::NotFound, "{bad}");
        }
    }
}
