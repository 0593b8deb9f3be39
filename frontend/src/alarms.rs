//! The Alarms view: the gateway's alarms (`GET /api/v1/alarms`, asked every 3 s) — open ones
//! first, each acknowledged with one button — their history, and the rules with an editor
//! that checks the condition as it is typed (and shows the gateway's answer when it refuses).
//! [`use_alarm_watch`] is the app-wide part: the count of open alarms for the side bar's
//! badge, and a browser notification for each new alarm whose rule asks for one (when the
//! user allowed them).

use std::cell::RefCell;
use std::collections::HashSet;
use std::rc::Rc;

use wasm_bindgen::JsValue;
use yew::prelude::*;

use crate::api::{self, Load};
use crate::tick::{ago, local_time, use_interval};

/// Properties of [`AlarmsView`].
#[derive(Properties, PartialEq)]
pub struct AlarmsProps {
    /// `Authorization` for the gateway's API, if a connection gives a login.
    pub auth: Option<String>,
}

/// One alarm, as the view shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Alarm {
    pub id: u64,
    pub rule: String,
    pub source: String,
    pub severity: String,
    pub state: String,
    pub raised_at: f64,
    pub text: String,
    pub acknowledged_by: Option<String>,
    pub cleared_at: Option<f64>,
    pub cleared_why: Option<String>,
    pub browser: bool,
}

/// The alarms of an answer of `GET /api/v1/alarms`.
pub fn parse_alarms(json: &JsValue) -> Vec<Alarm> {
    api::list(json, "alarms")
        .iter()
        .filter_map(|a| {
            let text = |name: &str| api::field(a, name).as_string();
            Some(Alarm {
                id: api::field(a, "id").as_f64()? as u64,
                rule: text("rule")?,
                source: text("source")?,
                severity: text("severity")?,
                state: text("state")?,
                raised_at: api::field(a, "raised_at").as_f64()?,
                text: text("text").unwrap_or_default(),
                acknowledged_by: text("acknowledged_by"),
                cleared_at: api::field(a, "cleared_at").as_f64(),
                cleared_why: text("cleared_why"),
                browser: api::field(a, "browser").as_bool().unwrap_or(false),
            })
        })
        .collect()
}

/// The side bar's part: how many alarms are open, asked every 5 s; each new open alarm whose
/// rule says `browser` shown as a browser notification (when permitted). Alarms open when the
/// page loaded are not notified.
#[hook]
pub fn use_alarm_watch(enabled: bool, auth: Option<String>) -> Option<usize> {
    let open = use_state(|| None::<usize>);
    let seen = use_mut_ref(|| None::<HashSet<u64>>);
    // The interval keeps its first closure: it reads these as they are now.
    let current = use_mut_ref(|| (false, None::<String>));
    *current.borrow_mut() = (enabled, auth);
    {
        let open = open.clone();
        use_interval(5_000, move || {
            let (enabled, auth) = current.borrow().clone();
            if !enabled {
                return;
            }
            let (open, seen) = (open.clone(), seen.clone());
            wasm_bindgen_futures::spawn_local(async move {
                let Ok((200, json)) = api::get_json(
                    "/api/v1/alarms?state=active,acknowledged&limit=100",
                    auth.as_deref(),
                )
                .await
                else {
                    return;
                };
                let counts = api::field(&json, "counts");
                let n = api::field(&counts, "active").as_f64().unwrap_or(0.0)
                    + api::field(&counts, "acknowledged").as_f64().unwrap_or(0.0);
                open.set(Some(n as usize));
                notify_new(&parse_alarms(&json), &seen);
            });
        });
    }
    *open
}

/// Shows a browser notification for each active alarm not seen before (none the first time).
fn notify_new(alarms: &[Alarm], seen: &Rc<RefCell<Option<HashSet<u64>>>>) {
    let mut seen = seen.borrow_mut();
    let first = seen.is_none();
    let known = seen.get_or_insert_with(HashSet::new);
    for a in alarms {
        if !known.insert(a.id) || first || !a.browser || a.state != "active" {
            continue;
        }
        if web_sys::Notification::permission() != web_sys::NotificationPermission::Granted {
            continue;
        }
        let options = web_sys::NotificationOptions::new();
        options.set_body(&a.text);
        options.set_tag(&format!("kite-alarm-{}", a.id));
        let _ = web_sys::Notification::new_with_options(
            &format!("{} alarm: {}", a.severity, a.rule),
            &options,
        );
    }
}

/// Which alarms are listed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Show {
    Open,
    History,
}

/// A rule as the gateway lists it.
#[derive(Debug, Clone, PartialEq)]
struct Rule {
    name: String,
    /// `plant/+/temp /temp > 30 for 5 s`.
    summary: String,
    severity: String,
    from_config: bool,
    /// The rule in the editor's fields, to change it.
    form: RuleForm,
}

fn parse_rules(json: &JsValue) -> Vec<Rule> {
    api::list(json, "rules")
        .iter()
        .filter_map(|r| {
            let text = |name: &str| api::field(r, name).as_string();
            let value = api::field(r, "value");
            let value = if value.is_undefined() {
                String::new()
            } else {
                js_sys::JSON::stringify(&value)
                    .map(String::from)
                    .unwrap_or_default()
            };
            let what = text("topic").or_else(|| text("device").map(|d| format!("device {d}")))?;
            let mut summary = format!(
                "{what}{} {} {value}",
                text("field").map(|f| format!(" {f}")).unwrap_or_default(),
                text("op")?
            );
            // Numbers as JavaScript writes them (no float formatting in the app's code).
            let written = |name: &str| {
                let v = api::field(r, name);
                v.as_f64()
                    .map(|_| {
                        js_sys::JSON::stringify(&v)
                            .map(String::from)
                            .unwrap_or_default()
                    })
                    .filter(|s| s != "0")
            };
            if let Some(s) = written("for_secs") {
                summary += &format!(" for {s} s");
            }
            if let Some(c) = written("clear_value") {
                summary += &format!(", clears past {c}");
            }
            let (name, op, severity) = (text("name")?, text("op")?, text("severity")?);
            // As typed in the editor: numbers as JavaScript writes them, text as it is.
            let typed = |v: JsValue| match v.as_string() {
                Some(s) => s,
                None if v.is_undefined() || v.is_null() => String::new(),
                None => js_sys::JSON::stringify(&v)
                    .map(String::from)
                    .unwrap_or_default(),
            };
            let notify = api::field(r, "notify");
            let form = RuleForm {
                name: name.clone(),
                topic: text("topic").unwrap_or_default(),
                field: text("field").unwrap_or_default(),
                device: text("device").unwrap_or_else(|| "*".into()),
                op: op.clone(),
                value: typed(api::field(r, "value")),
                for_secs: written("for_secs").unwrap_or_default(),
                clear_value: typed(api::field(r, "clear_value")),
                severity: severity.clone(),
                renotify_mins: typed(api::field(r, "renotify_mins")),
                webhook: api::field(&notify, "webhook")
                    .as_string()
                    .unwrap_or_default(),
                mqtt: api::field(&notify, "mqtt").as_bool().unwrap_or(false),
                browser: api::field(&notify, "browser").as_bool().unwrap_or(false),
                changing: Some(name.clone()),
            };
            Some(Rule {
                name,
                summary: summary.trim().to_owned(),
                severity,
                from_config: text("from").as_deref() == Some("config"),
                form,
            })
        })
        .collect()
}

/// `s` as a number, as JavaScript's `Number(s)` reads it (finite, and not empty): the
/// app's code has no float parser of its own.
fn number(s: &str) -> Option<f64> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let n = s.parse::<js_sys::Number>().ok()?.value_of();
    n.is_finite().then_some(n)
}

/// The rule editor's fields, as typed.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleForm {
    pub name: String,
    pub topic: String,
    pub field: String,
    pub device: String,
    pub op: String,
    pub value: String,
    pub for_secs: String,
    pub clear_value: String,
    pub severity: String,
    pub renotify_mins: String,
    pub webhook: String,
    pub mqtt: bool,
    pub browser: bool,
    /// The rule being changed (its name, which stays), or `None` for a new rule.
    pub changing: Option<String>,
}

impl Default for RuleForm {
    fn default() -> Self {
        Self {
            name: String::new(),
            topic: String::new(),
            field: String::new(),
            device: "*".into(),
            op: ">".into(),
            value: String::new(),
            for_secs: String::new(),
            clear_value: String::new(),
            severity: "major".into(),
            renotify_mins: String::new(),
            webhook: String::new(),
            mqtt: false,
            browser: true,
            changing: None,
        }
    }
}

impl RuleForm {
    /// What is wrong with it, field by field (the gateway's checks, as far as the app can
    /// make them; the gateway checks again).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            out.push(("name", "1 to 64 letters, digits, - and _".into()));
        }
        let comparison = matches!(self.op.as_str(), ">" | ">=" | "<" | "<=");
        if self.op == "offline" {
            if self.device.trim().is_empty() {
                out.push(("device", "a device id, or * for every device".into()));
            }
        } else {
            match kite_mqtt::topic::validate_filter(self.topic.trim()) {
                Err(e) => out.push(("topic", format!("a topic or filter: {e}"))),
                Ok(()) if self.topic.starts_with("$share/") => {
                    out.push(("topic", "not a shared subscription".into()));
                }
                Ok(()) => {}
            }
            let f = self.field.trim();
            if !f.is_empty() && !f.starts_with('/') {
                out.push(("field", "a JSON Pointer starts with / (e.g. /temp)".into()));
            }
        }
        let v = self.value.trim();
        match self.op.as_str() {
            ">" | ">=" | "<" | "<=" if number(v).is_none() => {
                out.push(("value", "a number, e.g. 30".into()));
            }
            "==" | "!=" if v.is_empty() => out.push(("value", "a number or text".into())),
            "silent_for"
                if !v
                    .parse::<u64>()
                    .is_ok_and(|s| (1..=31_536_000).contains(&s)) =>
            {
                out.push(("value", "seconds of silence, e.g. 300".into()));
            }
            _ => {}
        }
        if !self.for_secs.trim().is_empty()
            && !self
                .for_secs
                .trim()
                .parse::<u64>()
                .is_ok_and(|s| s <= 86_400)
        {
            out.push(("for_secs", "whole seconds, 0 to 86400".into()));
        }
        let c = self.clear_value.trim();
        if !c.is_empty() {
            match (number(c), number(v)) {
                (None, _) => out.push(("clear_value", "a number".into())),
                _ if !comparison => {
                    out.push(("clear_value", "only for >, >=, < and <=".into()));
                }
                (Some(c), Some(v))
                    if (self.op.starts_with('>') && c > v)
                        || (self.op.starts_with('<') && c < v) =>
                {
                    out.push((
                        "clear_value",
                        "on the other side of the value (above 30, clear below 28)".into(),
                    ));
                }
                _ => {}
            }
        }
        let r = self.renotify_mins.trim();
        if !r.is_empty() && !number(r).is_some_and(|m| (0.05..=10_080.0).contains(&m)) {
            out.push(("renotify_mins", "minutes, 0.05 to 10080".into()));
        }
        let w = self.webhook.trim();
        if !(w.is_empty() || w.starts_with("http://") || w.starts_with("https://")) {
            out.push(("webhook", "an http:// or https:// URL".into()));
        }
        out
    }

    /// The rule as the API takes it.
    pub fn to_json(&self) -> String {
        let o = js_sys::Object::new();
        let set = |k: &str, v: JsValue| {
            let _ = js_sys::Reflect::set(&o, &JsValue::from_str(k), &v);
        };
        set("name", self.name.trim().into());
        set("op", self.op.as_str().into());
        set("severity", self.severity.as_str().into());
        if self.op == "offline" {
            set("device", self.device.trim().into());
        } else {
            set("topic", self.topic.trim().into());
            if !self.field.trim().is_empty() {
                set("field", self.field.trim().into());
            }
            let v = self.value.trim();
            let value = match number(v) {
                Some(n) => JsValue::from_f64(n),
                None => JsValue::from_str(v),
            };
            set("value", value);
        }
        for (key, text) in [
            ("for_secs", &self.for_secs),
            ("clear_value", &self.clear_value),
            ("renotify_mins", &self.renotify_mins),
        ] {
            if let Some(n) = number(text) {
                set(key, JsValue::from_f64(n));
            }
        }
        let notify = js_sys::Object::new();
        if !self.webhook.trim().is_empty() {
            let _ = js_sys::Reflect::set(&notify, &"webhook".into(), &self.webhook.trim().into());
        }
        let _ = js_sys::Reflect::set(&notify, &"mqtt".into(), &self.mqtt.into());
        let _ = js_sys::Reflect::set(&notify, &"browser".into(), &self.browser.into());
        set("notify", notify.into());
        js_sys::JSON::stringify(&o)
            .map(String::from)
            .unwrap_or_default()
    }
}

/// The Alarms view.
#[component]
pub fn AlarmsView(props: &AlarmsProps) -> Html {
    let load = use_state(|| Load::<Vec<Alarm>>::Loading);
    let rules = use_state(Vec::<Rule>::new);
    let show = use_state(|| Show::Open);
    let now = use_state(js_sys::Date::now);
    let form = use_state(RuleForm::default);
    let refused = use_state(|| None::<(String, String)>);
    let message = use_state(|| None::<String>);
    let permission = use_state(web_sys::Notification::permission);
    let fetch = {
        let (load, rules, auth) = (load.clone(), rules.clone(), props.auth.clone());
        move || {
            let (load, rules, auth) = (load.clone(), rules.clone(), auth.clone());
            wasm_bindgen_futures::spawn_local(async move {
                let answer = api::ask("/api/v1/alarms?limit=500", auth.as_deref()).await;
                load.set(Load::from(answer, parse_alarms));
                if let Ok((200, json)) =
                    api::get_json("/api/v1/alarms/rules", auth.as_deref()).await
                {
                    rules.set(parse_rules(&json));
                }
            });
        }
    };
    {
        let fetch = fetch.clone();
        use_interval(3_000, fetch);
    }
    {
        let now = now.clone();
        use_interval(1_000, move || now.set(js_sys::Date::now()));
    }
    let alarms = match load.ready(
        "Alarms",
        "This gateway keeps no alarms: they need a data directory ([broker] data_dir).",
    ) {
        Ok(a) => a,
        Err(card) => return card,
    };
    let open_count = alarms.iter().filter(|a| a.state != "cleared").count();
    let listed: Vec<&Alarm> = alarms
        .iter()
        .filter(|a| (*show == Show::Open) == (a.state != "cleared"))
        .collect();
    let now = *now;
    let ack = |id: u64| {
        let (auth, fetch, message) = (props.auth.clone(), fetch.clone(), message.clone());
        Callback::from(move |_: MouseEvent| {
            let (auth, fetch, message) = (auth.clone(), fetch.clone(), message.clone());
            wasm_bindgen_futures::spawn_local(async move {
                match api::send_json(
                    "POST",
                    &format!("/api/v1/alarms/{id}/ack"),
                    None,
                    auth.as_deref(),
                )
                .await
                {
                    Ok((200, _)) => message.set(None),
                    Ok((_, json)) => message.set(api::field(&json, "error").as_string()),
                    Err(e) => message.set(Some(e)),
                }
                fetch();
            });
        })
    };
    let tab = |which: Show, label: String| {
        let show = show.clone();
        let on = *show == which;
        html! {
            <button class={classes!("chip", on.then_some("on"))} aria-pressed={on.to_string()} onclick={Callback::from(move |_: MouseEvent| show.set(which))}>{ label }</button>
        }
    };
    let allow = {
        let permission = permission.clone();
        Callback::from(move |_: MouseEvent| {
            let permission = permission.clone();
            if let Ok(p) = web_sys::Notification::request_permission() {
                wasm_bindgen_futures::spawn_local(async move {
                    let _ = wasm_bindgen_futures::JsFuture::from(p).await;
                    permission.set(web_sys::Notification::permission());
                });
            }
        })
    };
    html! {
        <>
        <section class="card alarms" aria-labelledby="alarms-title">
            <h2 id="alarms-title">{ "Alarms" }</h2>
            <div class="row filters">
                { tab(Show::Open, format!("Open {open_count}")) }
                { tab(Show::History, format!("History {}", alarms.len() - open_count)) }
                if *permission == web_sys::NotificationPermission::Default {
                    <button class="secondary" onclick={allow}>{ "Notify me in this browser" }</button>
                }
            </div>
            if let Some(m) = &*message { <p class="error" role="alert">{ m.clone() }</p> }
            if listed.is_empty() {
                <p class="muted alarm-none">{ if *show == Show::Open { "No open alarm." } else { "No cleared alarm yet." } }</p>
            }
            <ul class="alarm-list">
                { for listed.iter().map(|a| html! {
                    <li class={classes!("alarm", a.state.clone(), a.severity.clone())} data-alarm={a.id.to_string()} data-state={a.state.clone()}>
                        <span class={classes!("severity", a.severity.clone())}>{ a.severity.clone() }</span>
                        <span class="alarm-text">{ a.text.clone() }</span>
                        <span class="muted alarm-meta" title={local_time(a.raised_at)}>
                            { format!("{} · raised {}", a.rule, ago(a.raised_at, now)) }
                            if let Some(by) = &a.acknowledged_by { { format!(" · acknowledged by {by}") } }
                            if let (Some(t), Some(why)) = (a.cleared_at, &a.cleared_why) { { format!(" · cleared {} ({why})", ago(t, now)) } }
                        </span>
                        if a.acknowledged_by.is_none() {
                            <button class="ack" onclick={ack(a.id)}>{ "Acknowledge" }</button>
                        }
                    </li>
                }) }
            </ul>
        </section>
        { rule_card(props.auth.clone(), &rules, &form, &refused, fetch) }
        </>
    }
}

/// The rules, and the editor for a new one.
fn rule_card(
    auth: Option<String>,
    rules: &[Rule],
    form: &UseStateHandle<RuleForm>,
    refused: &UseStateHandle<Option<(String, String)>>,
    fetch: impl Fn() + Clone + 'static,
) -> Html {
    let problems = form.problems();
    // A field's problem shows once something is typed in it (an empty form is not wrong
    // yet; its button stays off until it is right).
    let typed = |key: &str| match key {
        "name" => !form.name.is_empty(),
        "topic" => !form.topic.is_empty(),
        "field" => !form.field.is_empty(),
        "device" => !form.device.is_empty(),
        "value" => !form.value.is_empty(),
        "for_secs" => !form.for_secs.is_empty(),
        "clear_value" => !form.clear_value.is_empty(),
        "renotify_mins" => !form.renotify_mins.is_empty(),
        "webhook" => !form.webhook.is_empty(),
        _ => true,
    };
    let problem = |key: &str| {
        let local = problems
            .iter()
            .find(|(k, _)| *k == key && typed(key))
            .map(|(_, m)| m.clone());
        let remote = refused
            .as_ref()
            .filter(|(k, _)| k == key || k.strip_prefix("notify.") == Some(key))
            .map(|(_, m)| m.clone());
        local.or(remote)
    };
    let text_input = |key: &'static str,
                      label: &'static str,
                      value: String,
                      placeholder: &'static str,
                      set: fn(&mut RuleForm, String)| {
        let (form, refused) = (form.clone(), refused.clone());
        let oninput = Callback::from(move |e: InputEvent| {
            let el: web_sys::HtmlInputElement = e.target_unchecked_into();
            let mut f = (*form).clone();
            set(&mut f, el.value());
            form.set(f);
            refused.set(None);
        });
        let wrong = problem(key);
        html! {
            <label class={classes!("field", wrong.is_some().then_some("invalid"))}>
                <span>{ label }</span>
                <input name={key} value={value} placeholder={placeholder} aria-invalid={wrong.is_some().to_string()} oninput={oninput} />
                if let Some(w) = wrong { <small class="error" data-problem={key}>{ w }</small> }
            </label>
        }
    };
    let select = |key: &'static str,
                  label: &'static str,
                  value: String,
                  options: &[(&'static str, &'static str)],
                  set: fn(&mut RuleForm, String)| {
        let (form, refused) = (form.clone(), refused.clone());
        let onchange = Callback::from(move |e: Event| {
            let el: web_sys::HtmlSelectElement = e.target_unchecked_into();
            let mut f = (*form).clone();
            set(&mut f, el.value());
            form.set(f);
            refused.set(None);
        });
        html! {
            <label class="field"><span>{ label }</span>
                <select name={key} onchange={onchange}>
                    { for options.iter().map(|(v, l)| html! { <option value={*v} selected={value == *v}>{ *l }</option> }) }
                </select>
            </label>
        }
    };
    let check = |key: &'static str,
                 label: &'static str,
                 value: bool,
                 set: fn(&mut RuleForm, bool)| {
        let form = form.clone();
        let onchange = Callback::from(move |e: Event| {
            let el: web_sys::HtmlInputElement = e.target_unchecked_into();
            let mut f = (*form).clone();
            set(&mut f, el.checked());
            form.set(f);
        });
        html! { <label class="field check"><input type="checkbox" name={key} checked={value} onchange={onchange} /><span>{ label }</span></label> }
    };
    let on_submit = {
        let (form, refused, auth, fetch) =
            (form.clone(), refused.clone(), auth.clone(), fetch.clone());
        Callback::from(move |e: SubmitEvent| {
            e.prevent_default();
            if !form.problems().is_empty() {
                return;
            }
            let (form, refused, auth, fetch) =
                (form.clone(), refused.clone(), auth.clone(), fetch.clone());
            wasm_bindgen_futures::spawn_local(async move {
                let body = form.to_json();
                // A new rule is posted (201); a changed one replaces its namesake (200).
                let (method, path, done) = match &form.changing {
                    None => ("POST", "/api/v1/alarms/rules".to_owned(), 201),
                    Some(name) => (
                        "PUT",
                        format!(
                            "/api/v1/alarms/rules/{}",
                            js_sys::encode_uri_component(name)
                        ),
                        200,
                    ),
                };
                match api::send_json(method, &path, Some(&body), auth.as_deref()).await {
                    Ok((status, _)) if status == done => {
                        form.set(RuleForm::default());
                        refused.set(None);
                    }
                    Ok((status, json)) => refused.set(Some((
                        api::field(&json, "field")
                            .as_string()
                            .unwrap_or_else(|| "name".into()),
                        api::field(&json, "error")
                            .as_string()
                            .unwrap_or_else(|| format!("HTTP {status}")),
                    ))),
                    Err(e) => refused.set(Some(("name".into(), e))),
                }
                fetch();
            });
        })
    };
    let delete = |name: String| {
        let (auth, fetch, refused) = (auth.clone(), fetch.clone(), refused.clone());
        Callback::from(move |_: MouseEvent| {
            let (auth, fetch, refused, name) =
                (auth.clone(), fetch.clone(), refused.clone(), name.clone());
            wasm_bindgen_futures::spawn_local(async move {
                let path = format!(
                    "/api/v1/alarms/rules/{}",
                    js_sys::encode_uri_component(&name)
                );
                if let Ok((status, json)) =
                    api::send_json("DELETE", &path, None, auth.as_deref()).await
                    && status != 204
                {
                    refused.set(Some((
                        "name".into(),
                        api::field(&json, "error")
                            .as_string()
                            .unwrap_or_else(|| format!("HTTP {status}")),
                    )));
                }
                fetch();
            });
        })
    };
    let change = |rule: RuleForm| {
        let (form, refused) = (form.clone(), refused.clone());
        Callback::from(move |_: MouseEvent| {
            form.set(rule.clone());
            refused.set(None);
        })
    };
    let cancel = {
        let (form, refused) = (form.clone(), refused.clone());
        Callback::from(move |_: MouseEvent| {
            form.set(RuleForm::default());
            refused.set(None);
        })
    };
    let f = (**form).clone();
    let offline = f.op == "offline";
    html! {
        <section class="card rules" aria-labelledby="rules-title">
            <h2 id="rules-title">{ "Alarm rules" }</h2>
            if rules.is_empty() { <p class="muted">{ "No rule yet." }</p> }
            <ul class="rule-list">
                { for rules.iter().map(|r| html! {
                    <li class="rule" data-rule={r.name.clone()}>
                        <span class={classes!("severity", r.severity.clone())}>{ r.severity.clone() }</span>
                        <strong>{ r.name.clone() }</strong>
                        <code>{ r.summary.clone() }</code>
                        if r.from_config {
                            <span class="muted">{ "(config file)" }</span>
                        } else {
                            <button class="secondary change" onclick={change(r.form.clone())}>{ "Change" }</button>
                            <button class="secondary" onclick={delete(r.name.clone())}>{ "Delete" }</button>
                        }
                    </li>
                }) }
            </ul>
            <h3>{ match &f.changing { Some(n) => format!("Change rule {n}"), None => "New rule".into() } }</h3>
            // (A refusal that names no field is the name's; while changing a rule, its name is
            // not an input, so it shows here.)
            if let (Some(_), Some(why)) = (&f.changing, problem("name")) {
                <p class="error" data-problem="name">{ why }</p>
            }
            <form class="rule-form" onsubmit={on_submit}>
                if f.changing.is_none() {
                    { text_input("name", "Name", f.name.clone(), "hot", |f, v| f.name = v) }
                }
                { select("op", "Condition", f.op.clone(), &[(">", ">"), (">=", "≥"), ("<", "<"), ("<=", "≤"), ("==", "="), ("!=", "≠"), ("silent_for", "no message for (s)"), ("offline", "device offline")], |f, v| f.op = v) }
                if offline {
                    { text_input("device", "Device", f.device.clone(), "* or dev-a", |f, v| f.device = v) }
                } else {
                    { text_input("topic", "Topic or filter", f.topic.clone(), "plant/+/temp", |f, v| f.topic = v) }
                    if f.op != "silent_for" {
                        { text_input("field", "JSON field", f.field.clone(), "/temp (empty: the payload)", |f, v| f.field = v) }
                    }
                    { text_input("value", if f.op == "silent_for" { "Seconds" } else { "Value" }, f.value.clone(), "30", |f, v| f.value = v) }
                }
                { text_input("for_secs", "For (s)", f.for_secs.clone(), "0", |f, v| f.for_secs = v) }
                if matches!(f.op.as_str(), ">" | ">=" | "<" | "<=") {
                    { text_input("clear_value", "Clears past", f.clear_value.clone(), "28 (empty: when it stops holding)", |f, v| f.clear_value = v) }
                }
                { select("severity", "Severity", f.severity.clone(), &[("critical", "critical"), ("major", "major"), ("minor", "minor"), ("warning", "warning")], |f, v| f.severity = v) }
                { text_input("renotify_mins", "Notify again every (min)", f.renotify_mins.clone(), "15", |f, v| f.renotify_mins = v) }
                { text_input("webhook", "Webhook", f.webhook.clone(), "https://ops.example.com/hook", |f, v| f.webhook = v) }
                { check("mqtt", "MQTT notice (kite/alarms/…)", f.mqtt, |f, v| f.mqtt = v) }
                { check("browser", "Browser notification", f.browser, |f, v| f.browser = v) }
                <button type="submit" disabled={!problems.is_empty()}>{ if f.changing.is_some() { "Save rule" } else { "Add rule" } }</button>
                if f.changing.is_some() {
                    <button type="button" class="secondary" onclick={cancel}>{ "Cancel" }</button>
                }
            </form>
        </section>
    }
}
