//! Small helpers for the app's forms.

use yew::prelude::*;

use crate::profile::FieldError;

/// The `value` of the element an event came from (input, textarea or select).
pub fn value_of(e: &web_sys::Event) -> String {
    e.target()
        .and_then(|t| js_sys::Reflect::get(&t, &"value".into()).ok())
        .and_then(|v| v.as_string())
        .unwrap_or_default()
}

/// The `checked` state of the checkbox an event came from.
pub fn checked_of(e: &web_sys::Event) -> bool {
    e.target()
        .and_then(|t| js_sys::Reflect::get(&t, &"checked".into()).ok())
        .and_then(|v| v.as_bool())
        .unwrap_or(false)
}

/// A callback that edits a copy of the form's state with what was typed.
pub fn on_text<T: Clone + 'static>(
    state: &UseStateHandle<T>,
    f: fn(&mut T, String),
) -> Callback<InputEvent> {
    let state = state.clone();
    Callback::from(move |e: InputEvent| {
        let mut next = (*state).clone();
        f(&mut next, value_of(&e));
        state.set(next);
    })
}

/// A callback that edits a copy of the form's state with a select's value.
pub fn on_select<T: Clone + 'static>(
    state: &UseStateHandle<T>,
    f: fn(&mut T, String),
) -> Callback<Event> {
    let state = state.clone();
    Callback::from(move |e: Event| {
        let mut next = (*state).clone();
        f(&mut next, value_of(&e));
        state.set(next);
    })
}

/// A callback that edits a copy of the form's state with a checkbox's state.
pub fn on_check<T: Clone + 'static>(
    state: &UseStateHandle<T>,
    f: fn(&mut T, bool),
) -> Callback<Event> {
    let state = state.clone();
    Callback::from(move |e: Event| {
        let mut next = (*state).clone();
        f(&mut next, checked_of(&e));
        state.set(next);
    })
}

/// The messages for `field`, as an alert under it (nothing when it is fine).
pub fn field_errors(errors: &[FieldError], field: &str) -> Html {
    let mine: Vec<&FieldError> = errors.iter().filter(|e| e.field == field).collect();
    if mine.is_empty() {
        return html! {};
    }
    html! {
        { for mine.into_iter().map(|e| html! {
            <p class="error field-error" data-field={field.to_owned()} role="alert">{ e.message.clone() }</p>
        }) }
    }
}

/// `n thing` / `n things`.
pub fn plural(n: impl Into<u64>, thing: &str) -> String {
    let n = n.into();
    format!("{n} {thing}{}", if n == 1 { "" } else { "s" })
}
