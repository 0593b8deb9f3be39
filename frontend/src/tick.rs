//! Repeating work: [`use_interval`] runs a function now and every so often while the
//! component is shown (polling the gateway, clocks that tick), and [`ago`] says how long ago.

use wasm_bindgen::JsCast;
use yew::prelude::*;

/// Runs `f` once now and then every `ms` milliseconds until the component goes away.
#[hook]
pub fn use_interval(ms: i32, f: impl Fn() + 'static) {
    use_effect_with((), move |()| {
        f();
        let tick = wasm_bindgen::closure::Closure::<dyn FnMut()>::new(f);
        let window = web_sys::window();
        let id = window.as_ref().and_then(|w| {
            w.set_interval_with_callback_and_timeout_and_arguments_0(
                tick.as_ref().unchecked_ref(),
                ms,
            )
            .ok()
        });
        move || {
            if let (Some(w), Some(id)) = (window, id) {
                w.clear_interval_with_handle(id);
            }
            drop(tick);
        }
    });
}

/// `then` (ms since the epoch) as people say it from `now`: "just now", "12 s ago",
/// "3 min ago", "2 h ago", "5 d ago".
pub fn ago(then: f64, now: f64) -> String {
    let s = ((now - then) / 1000.0).max(0.0).floor() as u64;
    match s {
        0..=1 => "just now".into(),
        2..=59 => format!("{s} s ago"),
        60..=3_599 => format!("{} min ago", s / 60),
        3_600..=86_399 => format!("{} h ago", s / 3_600),
        _ => format!("{} d ago", s / 86_400),
    }
}

/// `t` (ms since the epoch) as a local date and time, for a tooltip.
pub fn local_time(t: f64) -> String {
    String::from(
        js_sys::Date::new(&wasm_bindgen::JsValue::from_f64(t))
            .to_locale_string("default", &wasm_bindgen::JsValue::UNDEFINED),
    )
}
