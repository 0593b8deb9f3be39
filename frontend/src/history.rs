//! A topic's history recorded by the gateway (`[history]`): a chart of its numbers drawn on a
//! canvas from the series API (M4 buckets, one per pixel column: first, last, min, max), with
//! zoom (wheel, buttons) and pan (drag, touch) that redraw at once from what is loaded and ask
//! the gateway for that span at full resolution a moment later; the recorded messages older
//! than the tab; export links.
//!
//! The span arithmetic and the axis ticks are plain Rust (tested natively); the view talks to
//! the gateway with `fetch` and draws with the canvas API.

/// A time span in ms since the epoch, `from < to`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Span {
    /// Its start.
    pub from: f64,
    /// Its end.
    pub to: f64,
}

/// The narrowest span zooming in reaches: one second.
pub const MIN_SPAN_MS: f64 = 1_000.0;

impl Span {
    /// Its length in ms.
    pub fn len(&self) -> f64 {
        self.to - self.from
    }

    /// Zoomed by `factor` (< 1: in) around the point `at` (0 = left edge, 1 = right edge),
    /// which stays where it is; never narrower than [`MIN_SPAN_MS`].
    pub fn zoom(&self, at: f64, factor: f64) -> Self {
        let at = at.clamp(0.0, 1.0);
        let pivot = self.from + self.len() * at;
        let len = (self.len() * factor).max(MIN_SPAN_MS);
        Self {
            from: pivot - len * at,
            to: pivot + len * (1.0 - at),
        }
    }

    /// Moved by `fraction` of its length (positive: later).
    pub fn pan(&self, fraction: f64) -> Self {
        let d = self.len() * fraction;
        Self {
            from: self.from + d,
            to: self.to + d,
        }
    }

    /// The x of time `t` on a width of `w` pixels.
    pub fn x(&self, t: f64, w: f64) -> f64 {
        (t - self.from) / self.len() * w
    }
}

/// About `n` round values between `lo` and `hi` (steps of 1, 2 or 5 × 10^k).
pub fn ticks(lo: f64, hi: f64, n: usize) -> Vec<f64> {
    if hi <= lo || !lo.is_finite() || !hi.is_finite() || n == 0 {
        return vec![lo];
    }
    let raw = (hi - lo) / n as f64;
    // The power of ten at or below `raw`, by steps (no logarithms: libm's cost the app's
    // size budget more than these loops cost time).
    let mut mag = 1.0;
    while mag > raw {
        mag /= 10.0;
    }
    while mag * 10.0 <= raw {
        mag *= 10.0;
    }
    // The round step nearest to the raw one on a log scale: the smallest ratio either way.
    let ratio = |s: f64| if s > raw { s / raw } else { raw / s };
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * mag)
        .min_by(|a, b| ratio(*a).total_cmp(&ratio(*b)))
        .unwrap_or(mag);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 && out.len() <= n * 2 {
        // -0 and 0.30000000000000004 as their round selves.
        out.push(((t / step).round() * step * 1e12).round() / 1e12 + 0.0);
        t += step;
    }
    out
}

/// Steps for time ticks, in ms: 1 s to 1 year.
const TIME_STEPS: [f64; 16] = [
    1e3, 2e3, 5e3, 1e4, 3e4, 6e4, 1.2e5, 3e5, 6e5, 1.8e6, 3.6e6, 1.08e7, 2.16e7, 8.64e7, 6.048e8,
    3.1536e10,
];

/// About `n` time ticks across `span` on round steps (in UTC steps; labels are local time).
pub fn time_ticks(span: Span, n: usize) -> (Vec<f64>, f64) {
    let raw = span.len() / n.max(1) as f64;
    let step = TIME_STEPS
        .into_iter()
        .find(|s| *s >= raw)
        .unwrap_or(TIME_STEPS[TIME_STEPS.len() - 1]);
    let mut t = (span.from / step).ceil() * step;
    let mut out = Vec::new();
    while t <= span.to && out.len() <= n * 2 {
        out.push(t);
        t += step;
    }
    (out, step)
}

/// One bucket of a series (as the API sends it).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bucket {
    /// Its start.
    pub t: f64,
    /// First, last, smallest, largest value.
    pub first: f64,
    /// Last.
    pub last: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// How many points.
    pub count: f64,
}

/// A line breaks where its data has a hole: between two buckets more than this many times
/// the series' median spacing apart (and at least [`GAP_MIN_BUCKETS`] bucket widths) —
/// nothing was recorded there, the device or the gateway was silent, and a straight line
/// across would draw values that never were. Scale-free: zooming in on regular data does not
/// break it, a device every minute is joined, a silence of five minutes is not.
pub const GAP_FACTOR: f64 = 5.0;

/// The narrowest hole that breaks a line, in bucket widths (dense data has buckets one width
/// apart, so a median of one would otherwise break at the first late message).
pub const GAP_MIN_BUCKETS: f64 = 4.0;

/// `buckets` (oldest first, each `width` ms wide) cut into the runs a line joins: where two
/// neighbours are further apart than [`GAP_FACTOR`] times the median spacing, and than
/// [`GAP_MIN_BUCKETS`] widths, a new run starts.
pub fn runs(buckets: &[Bucket], width: f64) -> Vec<&[Bucket]> {
    let steps: Vec<f64> = buckets.windows(2).map(|w| w[1].t - w[0].t).collect();
    let median = match steps.len() {
        0 => 0.0,
        n => steps[crate::sort::order(n, &|a, b| steps[a].total_cmp(&steps[b]))[n / 2]],
    };
    let gap = (median * GAP_FACTOR).max(width * GAP_MIN_BUCKETS);
    let mut out = Vec::new();
    let mut start = 0;
    for (k, step) in steps.iter().enumerate() {
        if *step > gap {
            out.push(&buckets[start..=k]);
            start = k + 1;
        }
    }
    if start < buckets.len() {
        out.push(&buckets[start..]);
    }
    out
}

/// The value range of `series` within `span` (padded by 5 %; a flat line gets ±1).
pub fn value_range<'a>(series: impl Iterator<Item = &'a [Bucket]>, span: Span) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for buckets in series {
        for b in buckets
            .iter()
            .filter(|b| b.t >= span.from - span.len() && b.t <= span.to)
        {
            lo = lo.min(b.min);
            hi = hi.max(b.max);
        }
    }
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    if hi - lo < 1e-12 {
        return (lo - 1.0, hi + 1.0);
    }
    let pad = (hi - lo) * 0.05;
    (lo - pad, hi + pad)
}

// ---- the view ------------------------------------------------------------------------------

use std::rc::Rc;

use wasm_bindgen::{JsCast, JsValue};
use yew::prelude::*;

use crate::api;

/// Colours of the series, in order.
const COLOURS: [&str; 6] = [
    "#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2",
];

/// The chart's height in CSS pixels; its width is the element's.
const HEIGHT: f64 = 220.0;

/// Margins of the plot inside the canvas: left (value labels), bottom (time labels).
const LEFT: f64 = 52.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 8.0;
const RIGHT: f64 = 8.0;

/// Recorded messages listed below the chart.
const RECENT: usize = 10;

/// Properties of [`RecordedHistory`].
#[derive(Properties, PartialEq)]
pub struct HistoryProps {
    /// The topic.
    pub topic: String,
    /// `Authorization` for the gateway's API (the profile's login as HTTP Basic), if any.
    pub auth: Option<String>,
}

/// What the gateway says of the topic.
#[derive(Debug, Clone, PartialEq)]
enum Info {
    Loading,
    /// The gateway records no history (404): nothing is shown.
    Off,
    /// The API wants a login this profile does not give (401).
    Login,
    /// Recorded, but not this topic.
    NotRecorded,
    Failed(String),
    Topic {
        count: f64,
        first: f64,
        last: f64,
        fields: Vec<String>,
    },
}

/// A loaded series: its field, bucket width (ms) and buckets.
#[derive(Debug, Clone, PartialEq)]
struct Loaded {
    field: String,
    width: f64,
    buckets: Vec<Bucket>,
}

/// One recorded message, as listed.
#[derive(Debug, Clone, PartialEq)]
struct Recent {
    t: f64,
    text: String,
    retain: bool,
}

fn num(v: &JsValue, name: &str) -> f64 {
    api::field(v, name).as_f64().unwrap_or(f64::NAN)
}

fn info_of(status: u16, json: &JsValue) -> Info {
    match status {
        404 => Info::Off,
        401 => Info::Login,
        200 => match api::list(json, "topics").first() {
            None => Info::NotRecorded,
            Some(t) => Info::Topic {
                count: num(t, "count"),
                first: num(t, "first"),
                last: num(t, "last"),
                fields: api::list(t, "fields")
                    .iter()
                    .filter_map(JsValue::as_string)
                    .collect(),
            },
        },
        other => Info::Failed(
            api::field(json, "error")
                .as_string()
                .unwrap_or_else(|| format!("HTTP {other}")),
        ),
    }
}

fn enc(s: &str) -> String {
    String::from(js_sys::encode_uri_component(s))
}

/// The span a topic opens with: the last day, or its whole record when that is older.
fn initial_span(first: f64, last: f64, now: f64) -> Span {
    let day = 86_400_000.0;
    if last >= now - day {
        Span {
            from: (now - day).max(first - 1_000.0),
            to: now,
        }
    } else {
        Span {
            from: first - 1_000.0,
            to: last + 1_000.0,
        }
    }
}

/// The topic's recorded history: chart, recent messages, export links.
#[component]
pub fn RecordedHistory(props: &HistoryProps) -> Html {
    let info = use_state(|| Info::Loading);
    let recent = use_state(Vec::<Recent>::new);
    let span = use_state(|| None::<Span>);
    let shown = use_state(Vec::<String>::new);
    let series = use_state(Vec::<Loaded>::new);
    let problem = use_state(|| None::<String>);
    let canvas = use_node_ref();
    // The last series request: an answer to an older one is dropped.
    let generation = use_mut_ref(|| 0u32);
    // A drag in progress: its start x and span.
    let drag = use_mut_ref(|| None::<(f64, Span)>);
    // The topic shown: an answer for another (a quick switch) is dropped.
    let current = use_mut_ref(String::new);

    {
        let (info, recent, span, shown, series) = (
            info.clone(),
            recent.clone(),
            span.clone(),
            shown.clone(),
            series.clone(),
        );
        let auth = props.auth.clone();
        let (current, generation) = (current.clone(), generation.clone());
        use_effect_with(props.topic.clone(), move |topic| {
            current.borrow_mut().clone_from(topic);
            // A series still on its way is of the topic before.
            {
                let mut g = generation.borrow_mut();
                *g = g.wrapping_add(1);
            }
            info.set(Info::Loading);
            series.set(Vec::new());
            recent.set(Vec::new());
            let topic = topic.clone();
            wasm_bindgen_futures::spawn_local(async move {
                let path = format!("/api/v1/history/topics?filter={}", enc(&topic));
                let got = match api::get_json(&path, auth.as_deref()).await {
                    Ok((status, json)) => info_of(status, &json),
                    Err(e) => Info::Failed(e),
                };
                if *current.borrow() != topic {
                    return;
                }
                if let Info::Topic {
                    first,
                    last,
                    fields,
                    ..
                } = &got
                {
                    span.set(Some(initial_span(*first, *last, js_sys::Date::now())));
                    shown.set(fields.first().cloned().into_iter().collect());
                    let path = format!("/api/v1/history?topic={}&limit={RECENT}", enc(&topic));
                    if let Ok((200, json)) = api::get_json(&path, auth.as_deref()).await
                        && *current.borrow() == topic
                    {
                        recent.set(
                            api::list(&json, "messages")
                                .iter()
                                .map(|m| Recent {
                                    t: num(m, "t"),
                                    text: api::field(m, "payload").as_string().unwrap_or_default(),
                                    retain: api::field(m, "retain").as_bool().unwrap_or(false),
                                })
                                .collect(),
                        );
                    }
                }
                info.set(got);
            });
        });
    }

    // The series for the span and fields shown: asked 120 ms after the last change (so that a
    // wheel or a drag asks once), one request per field, at one bucket per pixel column.
    {
        let (series, problem, generation, canvas) = (
            series.clone(),
            problem.clone(),
            generation.clone(),
            canvas.clone(),
        );
        let (topic, auth) = (props.topic.clone(), props.auth.clone());
        use_effect_with(((*span), (*shown).clone()), move |(span, shown)| {
            let mine = {
                let mut g = generation.borrow_mut();
                *g = g.wrapping_add(1);
                *g
            };
            if let Some(span) = *span {
                let shown = shown.clone();
                wasm_bindgen_futures::spawn_local(async move {
                    sleep_ms(120).await;
                    if *generation.borrow() != mine {
                        return;
                    }
                    let width = canvas
                        .cast::<web_sys::HtmlCanvasElement>()
                        .map_or(800.0, |c| f64::from(c.client_width()));
                    let points = ((width - LEFT - RIGHT).max(10.0) as u32).min(10_000);
                    let (from, to) = (span.from.max(0.0) as u64, span.to.max(0.0) as u64);
                    let mut loaded = Vec::new();
                    for field in &shown {
                        let path = format!(
                            "/api/v1/history/series?topic={}&field={}&from={from}&to={to}&points={points}",
                            enc(&topic),
                            enc(field)
                        );
                        match api::get_json(&path, auth.as_deref()).await {
                            Ok((200, json)) => {
                                let buckets = api::list(&json, "series")
                                    .first()
                                    .map(|s| {
                                        api::list(s, "buckets")
                                            .iter()
                                            .map(|b| Bucket {
                                                t: num(b, "t"),
                                                first: num(b, "first"),
                                                last: num(b, "last"),
                                                min: num(b, "min"),
                                                max: num(b, "max"),
                                                count: num(b, "count"),
                                            })
                                            .collect()
                                    })
                                    .unwrap_or_default();
                                loaded.push(Loaded {
                                    field: field.clone(),
                                    width: ((to - from + 1) as f64 / f64::from(points)).ceil(),
                                    buckets,
                                });
                            }
                            Ok((status, json)) => {
                                problem.set(Some(
                                    api::field(&json, "error")
                                        .as_string()
                                        .unwrap_or_else(|| format!("HTTP {status}")),
                                ));
                                return;
                            }
                            Err(e) => {
                                problem.set(Some(e));
                                return;
                            }
                        }
                    }
                    if *generation.borrow() == mine {
                        problem.set(None);
                        series.set(loaded);
                    }
                });
            }
        });
    }

    // Drawn after every render: the loaded buckets at the current span (a zoom or pan shows
    // at once, sharper when its own buckets arrive).
    {
        let (canvas, series, span) = (canvas.clone(), series.clone(), *span);
        use_effect(move || {
            if let (Some(c), Some(span)) = (canvas.cast::<web_sys::HtmlCanvasElement>(), span) {
                let lines: Vec<Line> = series
                    .iter()
                    .enumerate()
                    .map(|(i, s)| Line {
                        colour: COLOURS[i % COLOURS.len()],
                        width: s.width,
                        buckets: &s.buckets,
                    })
                    .collect();
                draw(&c, HEIGHT, span, &lines, true, false);
            }
        });
    }

    let (count, fields) = match &*info {
        Info::Loading | Info::Off => return html! {},
        Info::Login => {
            return html! { <p class="muted recorded">{ "Recorded history: the gateway wants a login — give this connection a user name and password." }</p> };
        }
        Info::NotRecorded => {
            return html! { <p class="muted recorded">{ "Not recorded by the gateway ([history] record)." }</p> };
        }
        Info::Failed(e) => {
            return html! { <p class="error recorded">{ format!("Recorded history: {e}") }</p> };
        }
        Info::Topic { count, fields, .. } => (*count, fields.clone()),
    };
    let set_span = |f: Rc<dyn Fn(Span) -> Span>| {
        let span = span.clone();
        Callback::from(move |_: MouseEvent| {
            if let Some(s) = *span {
                span.set(Some(f(s)));
            }
        })
    };
    let last = |ms: f64| {
        let span = span.clone();
        Callback::from(move |_: MouseEvent| {
            let now = js_sys::Date::now();
            span.set(Some(Span {
                from: now - ms,
                to: now,
            }));
        })
    };
    let onwheel = {
        let span = span.clone();
        Callback::from(move |e: WheelEvent| {
            e.prevent_default();
            if let (Some(s), Some(at)) = (*span, plot_fraction(&e)) {
                let factor = if e.delta_y() < 0.0 { 0.8 } else { 1.25 };
                span.set(Some(s.zoom(at, factor)));
            }
        })
    };
    let onpointerdown = {
        let (span, drag) = (span.clone(), drag.clone());
        Callback::from(move |e: PointerEvent| {
            if let Some(s) = *span {
                *drag.borrow_mut() = Some((f64::from(e.client_x()), s));
                if let Some(el) = e
                    .target()
                    .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
                {
                    let _ = el.set_pointer_capture(e.pointer_id());
                }
            }
        })
    };
    let onpointermove = {
        let (span, drag) = (span.clone(), drag.clone());
        Callback::from(move |e: PointerEvent| {
            let Some((x0, s0)) = *drag.borrow() else {
                return;
            };
            let width = e
                .target()
                .and_then(|t| t.dyn_into::<web_sys::Element>().ok())
                .map_or(800.0, |el| f64::from(el.client_width()) - LEFT - RIGHT);
            span.set(Some(
                s0.pan(-(f64::from(e.client_x()) - x0) / width.max(1.0)),
            ));
        })
    };
    let onpointerup = {
        let drag = drag.clone();
        Callback::from(move |_: PointerEvent| *drag.borrow_mut() = None)
    };
    let toggles = fields.iter().map(|f| {
        let on = shown.contains(f);
        let label = if f.is_empty() { "value".to_owned() } else { f.clone() };
        let colour = shown
            .iter()
            .position(|x| x == f)
            .map(|p| COLOURS[p % COLOURS.len()]);
        let (shown, f) = (shown.clone(), f.clone());
        let toggle = Callback::from(move |_: MouseEvent| {
            let mut list = (*shown).clone();
            match list.iter().position(|x| *x == f) {
                Some(p) => {
                    list.remove(p);
                }
                None => list.push(f.clone()),
            }
            shown.set(list);
        });
        html! {
            <button class={classes!("field", on.then_some("on"))} aria-pressed={on.to_string()} onclick={toggle}
                    style={colour.map(|c| format!("border-color:{c}"))}>{ label }</button>
        }
    });
    let topic = &props.topic;
    let export = |filter: &str, format: &str| {
        format!(
            "/api/v1/history/export?filter={}&format={format}",
            enc(filter)
        )
    };
    let span_text = span
        .map(|s| format!("{} – {}", when(s.from), when(s.to)))
        .unwrap_or_default();
    html! {
        <div class="recorded" aria-label="recorded history">
            <h4>{ format!("Recorded on the gateway: {} message{}", count as u64, if count == 1.0 { "" } else { "s" }) }</h4>
            if !fields.is_empty() {
                <p class="row chart-controls">
                    { for toggles }
                    <span class="spacer" />
                    <button class="secondary" title="zoom in" onclick={set_span(Rc::new(|s: Span| s.zoom(0.5, 0.5)))}>{ "+" }</button>
                    <button class="secondary" title="zoom out" onclick={set_span(Rc::new(|s: Span| s.zoom(0.5, 2.0)))}>{ "−" }</button>
                    <button class="secondary" onclick={last(3_600_000.0)}>{ "1 h" }</button>
                    <button class="secondary" onclick={last(86_400_000.0)}>{ "24 h" }</button>
                    <button class="secondary" onclick={last(604_800_000.0)}>{ "7 d" }</button>
                </p>
                <canvas ref={canvas} class="chart" height="220" role="img"
                        data-span={span.map(|s| format!("{}-{}", s.from as u64, s.to as u64))}
                        aria-label={format!("chart of {} from {span_text}", topic)}
                        {onwheel} {onpointerdown} {onpointermove} onpointerup={onpointerup.clone()} onpointercancel={onpointerup} />
                <p class="muted chart-span">{ span_text }
                    if let Some(p) = &*problem { <span class="error">{ format!(" · {p}") }</span> }
                    { " · wheel or +/− to zoom, drag to pan; the band is each pixel's min–max" }
                </p>
            }
            <ol class="recorded-list">
                { for recent.iter().map(|r| html! {
                    <li><span class="time">{ when(r.t) }</span>
                        if r.retain { <span class="retained">{ " retained" }</span> }
                        <code>{ r.text.chars().take(200).collect::<String>() }</code></li>
                }) }
            </ol>
            <p class="row export">
                { "Export: " }
                <a href={export(topic, "csv")} download="">{ "CSV" }</a>
                <a href={export(topic, "ndjson")} download="">{ "NDJSON" }</a>
                <a href={export(&format!("{topic}/#"), "csv")} download="">{ "subtree CSV" }</a>
            </p>
        </div>
    }
}

/// Where the pointer is across the plot (0 left .. 1 right).
fn plot_fraction(e: &WheelEvent) -> Option<f64> {
    let el = e.target()?.dyn_into::<web_sys::Element>().ok()?;
    let w = f64::from(el.client_width()) - LEFT - RIGHT;
    Some(((f64::from(e.offset_x()) - LEFT) / w.max(1.0)).clamp(0.0, 1.0))
}

/// A JavaScript timer as a future.
async fn sleep_ms(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = wasm_bindgen_futures::JsFuture::from(promise).await;
}

/// "2026-12-05 10:04:05" in local time.
fn when(ms: f64) -> String {
    let d = js_sys::Date::new(&JsValue::from_f64(ms));
    format!(
        "{}-{:02}-{:02} {:02}:{:02}:{:02}",
        d.get_full_year(),
        d.get_month() + 1,
        d.get_date(),
        d.get_hours(),
        d.get_minutes(),
        d.get_seconds()
    )
}

/// A time tick's label: the time of day, or the date for steps of a day or more.
fn tick_label(ms: f64, step: f64) -> String {
    let d = js_sys::Date::new(&JsValue::from_f64(ms));
    if step >= 86_400_000.0 {
        format!("{:02}-{:02}", d.get_month() + 1, d.get_date())
    } else if step >= 60_000.0 {
        format!("{:02}:{:02}", d.get_hours(), d.get_minutes())
    } else {
        format!(
            "{:02}:{:02}:{:02}",
            d.get_hours(),
            d.get_minutes(),
            d.get_seconds()
        )
    }
}

fn number_label(v: f64) -> String {
    js_sys::Number::from(v)
        .to_precision(6)
        .map(String::from)
        .map(|s| {
            if s.contains('.') && !s.contains('e') {
                s.trim_end_matches('0').trim_end_matches('.').to_owned()
            } else {
                s
            }
        })
        .unwrap_or_default()
}

/// Draws on/off states over `span`, one row per series (colour, buckets of 0/1 values): a
/// bucket's state holds until the next bucket (the last one's until the end of the span),
/// and a bucket that was on at all (max 1) shows at least a sliver.
pub fn draw_states(
    canvas: &web_sys::HtmlCanvasElement,
    height: f64,
    span: Span,
    rows: &[(&str, &[Bucket])],
) {
    let Some(ctx) = context(canvas, height) else {
        return;
    };
    let css_w = f64::from(canvas.client_width()).max(100.0);
    let w = css_w - LEFT - RIGHT;
    let row_h = ((height - TOP - BOTTOM) / rows.len().max(1) as f64).min(40.0);
    let x = |t: f64| LEFT + span.x(t, w);
    for (i, (colour, buckets)) in rows.iter().enumerate() {
        let top = TOP + i as f64 * row_h;
        ctx.set_fill_style_str("rgba(107,114,128,0.15)");
        ctx.fill_rect(LEFT, top + 2.0, w, row_h - 4.0);
        ctx.set_fill_style_str(colour);
        for (k, b) in buckets.iter().enumerate() {
            let end = buckets.get(k + 1).map_or(span.to, |n| n.t);
            let (x0, x1) = (x(b.t.max(span.from)), x(end.min(span.to)));
            if b.last >= 1.0 {
                ctx.fill_rect(x0, top + 2.0, (x1 - x0).max(1.0), row_h - 4.0);
            } else if b.max >= 1.0 {
                ctx.fill_rect(x0, top + 2.0, 1.0, row_h - 4.0);
            }
        }
    }
    time_axis(&ctx, span, w, height, TOP + rows.len() as f64 * row_h);
}

/// The canvas's 2D context, the canvas sized to its CSS width and `height` for the screen's
/// pixels, and cleared.
fn context(
    canvas: &web_sys::HtmlCanvasElement,
    height: f64,
) -> Option<web_sys::CanvasRenderingContext2d> {
    let ctx = canvas
        .get_context("2d")
        .ok()
        .flatten()
        .and_then(|c| c.dyn_into::<web_sys::CanvasRenderingContext2d>().ok())?;
    let ratio = web_sys::window().map_or(1.0, |w| w.device_pixel_ratio());
    let css_w = f64::from(canvas.client_width()).max(100.0);
    let (px_w, px_h) = ((css_w * ratio) as u32, (height * ratio) as u32);
    if canvas.width() != px_w || canvas.height() != px_h {
        canvas.set_width(px_w);
        canvas.set_height(px_h);
    }
    let _ = ctx.set_transform(ratio, 0.0, 0.0, ratio, 0.0, 0.0);
    ctx.clear_rect(0.0, 0.0, css_w, height);
    ctx.set_font("11px system-ui, sans-serif");
    ctx.set_line_width(1.0);
    Some(ctx)
}

/// How many value labels a plot `h` CSS pixels tall asks for: four, fewer where they would
/// crowd (a label is 11 px; `ticks` may give up to twice as many as asked).
fn value_tick_count(h: f64) -> usize {
    ((h / 40.0) as usize).clamp(1, 4)
}

/// Time labels under a plot `w` wide whose bottom is at `bottom`, with their grid lines.
fn time_axis(
    ctx: &web_sys::CanvasRenderingContext2d,
    span: Span,
    w: f64,
    height: f64,
    bottom: f64,
) {
    ctx.set_fill_style_str("#6b7280");
    ctx.set_stroke_style_str("rgba(107,114,128,0.25)");
    ctx.begin_path();
    let (times, step) = time_ticks(span, ((w / 110.0) as usize).max(2));
    for t in times {
        let xx = (LEFT + span.x(t, w)).round() + 0.5;
        ctx.move_to(xx, TOP);
        ctx.line_to(xx, bottom);
        let label = tick_label(t, step);
        let _ = ctx.fill_text(
            &label,
            label_x(xx, label.len(), LEFT + w + RIGHT),
            height - 5.0,
        );
    }
    ctx.stroke();
}

/// Where a time label of `chars` characters starts: centred under its tick at `x`, but
/// inside the canvas (`width` wide) — a tick near the right edge had its label cut off.
fn label_x(x: f64, chars: usize, width: f64) -> f64 {
    // 11 px system-ui digits are about 6.5 px wide.
    let w = chars as f64 * 6.5;
    (x - w / 2.0).min(width - w).max(0.0)
}

/// One line of a chart: its colour, bucket width (ms) and buckets.
pub struct Line<'a> {
    /// A CSS colour.
    pub colour: &'a str,
    /// Each bucket's width (ms).
    pub width: f64,
    /// Oldest first.
    pub buckets: &'a [Bucket],
}

/// Draws `series` over `span` on the canvas, `height` CSS pixels tall (sized to its CSS
/// width, for the screen's pixels): each bucket's min–max as a band (`band`), the line
/// through first, min, max and last (M4), the area under it filled (`area`).
pub fn draw(
    canvas: &web_sys::HtmlCanvasElement,
    height: f64,
    span: Span,
    series: &[Line],
    band: bool,
    area: bool,
) {
    let Some(ctx) = context(canvas, height) else {
        return;
    };
    let css_w = f64::from(canvas.client_width()).max(100.0);
    let (w, h) = (css_w - LEFT - RIGHT, height - TOP - BOTTOM);
    let (lo, hi) = value_range(series.iter().map(|s| s.buckets), span);
    let y = |v: f64| TOP + h - (v - lo) / (hi - lo) * h;
    let x = |t: f64| LEFT + span.x(t, w);
    ctx.set_fill_style_str("#6b7280");
    ctx.set_stroke_style_str("rgba(107,114,128,0.25)");
    ctx.begin_path();
    for v in ticks(lo, hi, value_tick_count(h)) {
        let yy = y(v).round() + 0.5;
        ctx.move_to(LEFT, yy);
        ctx.line_to(LEFT + w, yy);
        let _ = ctx.fill_text(&number_label(v), 4.0, yy + 4.0);
    }
    ctx.stroke();
    time_axis(&ctx, span, w, height, TOP + h);
    ctx.save();
    ctx.begin_path();
    ctx.rect(LEFT, TOP, w, h);
    ctx.clip();
    for s in series {
        let colour = s.colour;
        // The band: each bucket's min–max.
        ctx.set_global_alpha(0.2);
        ctx.set_fill_style_str(colour);
        for b in s.buckets.iter().filter(|_| band) {
            let (x0, x1) = (x(b.t), x(b.t + s.width));
            let (top, bottom) = (y(b.max), y(b.min));
            ctx.fill_rect(x0, top, (x1 - x0).max(1.0), (bottom - top).max(1.0));
        }
        // Each run of data apart: no line (or area) across a hole.
        let runs = runs(s.buckets, s.width);
        // The area under the line.
        if area {
            ctx.begin_path();
            for run in &runs {
                let (Some(first), Some(last)) = (run.first(), run.last()) else {
                    continue;
                };
                ctx.move_to(x(first.t + s.width / 2.0), TOP + h);
                for b in *run {
                    ctx.line_to(x(b.t + s.width / 2.0), y(b.last));
                }
                ctx.line_to(x(last.t + s.width / 2.0), TOP + h);
                ctx.close_path();
            }
            ctx.fill();
        }
        // The line through each bucket's first, min, max and last (M4).
        ctx.set_global_alpha(1.0);
        ctx.set_stroke_style_str(colour);
        ctx.set_fill_style_str(colour);
        ctx.set_line_width(1.5);
        ctx.begin_path();
        for run in &runs {
            // A lone point: a dot, where a line has nothing to join.
            if let [b] = run {
                ctx.fill_rect(x(b.t + s.width / 2.0) - 2.0, y(b.last) - 2.0, 4.0, 4.0);
            }
            for (k, b) in run.iter().enumerate() {
                let xc = x(b.t + s.width / 2.0);
                if k == 0 {
                    ctx.move_to(xc, y(b.first));
                } else {
                    ctx.line_to(xc, y(b.first));
                }
                ctx.line_to(xc, y(b.min));
                ctx.line_to(xc, y(b.max));
                ctx.line_to(xc, y(b.last));
            }
        }
        ctx.stroke();
    }
    ctx.restore();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zoom_keeps_the_pointed_time_in_place() {
        let s = Span {
            from: 0.0,
            to: 100_000.0,
        };
        let z = s.zoom(0.25, 0.5);
        assert_eq!(z.len(), 50_000.0);
        // The time under the pointer (25,000) is still a quarter in.
        assert_eq!(z.from + z.len() * 0.25, 25_000.0);
        assert_eq!(s.zoom(0.5, 1e-9).len(), MIN_SPAN_MS);
        let back = z.zoom(0.25, 2.0);
        assert_eq!(back, s);
        assert_eq!(
            s.pan(-0.1),
            Span {
                from: -10_000.0,
                to: 90_000.0
            }
        );
        assert_eq!(s.x(50_000.0, 800.0), 400.0);
    }

    #[test]
    fn value_ticks_are_round() {
        assert_eq!(ticks(0.0, 10.0, 5), [0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(ticks(-0.35, 0.35, 4), [-0.2, 0.0, 0.2]);
        assert_eq!(ticks(0.1, 0.35, 5), [0.1, 0.15, 0.2, 0.25, 0.3, 0.35]);
        assert_eq!(ticks(1013.2, 1013.9, 3), [1013.2, 1013.4, 1013.6, 1013.8]);
        assert_eq!(ticks(5.0, 5.0, 4), [5.0]);
        assert_eq!(ticks(f64::NAN, 1.0, 4).len(), 1);
    }

    /// Buckets one `width` (1) wide at these starts, each of value `t`.
    fn at(starts: &[f64]) -> Vec<Bucket> {
        starts
            .iter()
            .map(|&t| Bucket {
                t,
                first: t,
                last: t,
                min: t,
                max: t,
                count: 1.0,
            })
            .collect()
    }

    fn run_lengths(buckets: &[Bucket]) -> Vec<usize> {
        runs(buckets, 1.0).iter().map(|r| r.len()).collect()
    }

    #[test]
    fn a_line_breaks_at_a_hole_in_the_data_and_nowhere_else() {
        // Dense data, silent for 30 widths, then again: two runs.
        let mut t: Vec<f64> = (0..20).map(f64::from).collect();
        t.extend((50..60).map(f64::from));
        assert_eq!(run_lengths(&at(&t)), [20, 10]);
        // A late message or two in dense data is no hole (under four widths).
        assert_eq!(run_lengths(&at(&[0.0, 1.0, 2.0, 5.0, 6.0, 9.0, 10.0])), [7]);
        // Sparse but regular (every 10 widths, as zoomed in on a device every minute), with
        // jitter: one run. Five times its spacing apart: broken.
        assert_eq!(run_lengths(&at(&[0.0, 9.0, 21.0, 30.0, 41.0, 50.0])), [6]);
        assert_eq!(
            run_lengths(&at(&[0.0, 10.0, 20.0, 30.0, 90.0, 100.0, 110.0])),
            [4, 3]
        );
        // A lone point between two holes is a run of its own (drawn as a dot).
        assert_eq!(
            run_lengths(&at(&[0.0, 1.0, 2.0, 3.0, 40.0, 80.0, 81.0, 82.0])),
            [4, 1, 3]
        );
        assert_eq!(run_lengths(&at(&[])), Vec::<usize>::new());
        assert_eq!(run_lengths(&at(&[5.0])), [1]);
        // Two points say nothing of a spacing: joined.
        assert_eq!(run_lengths(&at(&[5.0, 500.0])), [2]);
    }

    #[test]
    fn time_labels_stay_inside_the_canvas() {
        // Centred under the tick where there is room.
        assert_eq!(label_x(200.0, 5, 400.0), 200.0 - 16.25);
        // A tick 5 px from the right edge: the label ends at the edge.
        assert_eq!(label_x(395.0, 5, 400.0), 400.0 - 32.5);
        // And never starts before the left one.
        assert_eq!(label_x(3.0, 8, 400.0), 0.0);
    }

    #[test]
    fn a_short_plot_asks_for_fewer_value_labels() {
        assert_eq!(value_tick_count(300.0), 4);
        assert_eq!(value_tick_count(100.0), 2);
        assert_eq!(value_tick_count(30.0), 1);
        assert_eq!(value_tick_count(0.0), 1);
        // However many `ticks` gives for that, they are at least 11 px apart (a label's height).
        for h in [30.0, 45.0, 60.0, 100.0, 160.0, 300.0] {
            for (lo, hi) in [(0.0, 1.0), (20.0, 31.5), (-3.0, 7.0), (1013.2, 1013.9)] {
                let t = ticks(lo, hi, value_tick_count(h));
                let gap = h / (hi - lo) * (t.get(1).unwrap_or(&hi) - t[0]);
                assert!(t.len() < 2 || gap >= 11.0, "{h} px, {lo}..{hi}: {t:?}");
            }
        }
    }

    #[test]
    fn time_ticks_follow_the_span() {
        let hour = Span {
            from: 0.0,
            to: 3.6e6,
        };
        let (t, step) = time_ticks(hour, 6);
        assert_eq!(step, 6e5);
        assert_eq!(t.len(), 7);
        let (t, step) = time_ticks(
            Span {
                from: 500.0,
                to: 9_500.0,
            },
            4,
        );
        assert_eq!((step, t[0]), (5e3, 5e3));
    }

    #[test]
    fn the_value_range_holds_every_bucket_in_view() {
        let b = |t: f64, min: f64, max: f64| Bucket {
            t,
            first: min,
            last: max,
            min,
            max,
            count: 1.0,
        };
        let a = [b(10.0, 1.0, 3.0), b(20.0, -1.0, 2.0)];
        let c = [b(15.0, 5.0, 9.0)];
        let span = Span {
            from: 0.0,
            to: 30.0,
        };
        let (lo, hi) = value_range([&a[..], &c[..]].into_iter(), span);
        assert!(
            (lo - -1.5).abs() < 1e-9 && (hi - 9.5).abs() < 1e-9,
            "{lo} {hi}"
        );
        assert_eq!(value_range(std::iter::empty(), span), (0.0, 1.0));
        let flat = [b(1.0, 4.0, 4.0)];
        assert_eq!(value_range([&flat[..]].into_iter(), span), (3.0, 5.0));
    }
}
