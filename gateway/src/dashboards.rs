//! Dashboards, sans IO: a dashboard document (the API's body, and an export) checked key by
//! key and completed — what it omits (widget ids, layout, sizes, grid columns) gets
//! defaults, so that every client draws the same thing — plus the examples shipped for the
//! embedded broker's `$SYS` topics.
//!
//! A document (keys in camelCase, as exported):
//!
//! ```json
//! {"schemaVersion": 1, "title": "Line 1", "description": "", "columns": 12,
//!  "variables": [{"name": "device", "filter": "plant/+/temp", "level": 1, "default": "a"}],
//!  "widgets": [{"kind": "value", "topic": "plant/${device}/temp", "field": "/temp",
//!               "unit": "°C", "layout": {"x": 0, "y": 0, "w": 3, "h": 2}}]}
//! ```
//!
//! A variable's values are the topic levels its filter's `level` (0-based; by default its
//! first `+`) takes; widgets name it as `${name}` in `topic`, `commandTopic`, `series[].topic`
//! and `device`. Each widget kind takes the keys of [`KINDS`]; an unknown key is an error (a
//! typo would otherwise be silently ignored).

use serde_json::{Map, Value};

/// The document version this gateway reads and writes.
pub const SCHEMA_VERSION: u64 = 1;

/// Widgets per dashboard at most.
pub const MAX_WIDGETS: usize = 200;

/// Dashboards per gateway at most.
pub const MAX_DASHBOARDS: usize = 1_000;

/// Grid columns by default, and at most.
pub const DEFAULT_COLUMNS: u64 = 12;
const MAX_COLUMNS: u64 = 48;

/// Rows a widget may start at, and be tall, at most.
const MAX_Y: u64 = 10_000;
const MAX_H: u64 = 50;

/// Keys of the document kept by the gateway, accepted (and ignored) in a body so that an
/// export (`GET`) can be given back as it is.
pub const KEPT_KEYS: [&str; 5] = ["id", "version", "created", "updated", "updatedBy"];

/// A bad document: where (`widgets[2].series[0].topic`) and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocError {
    /// The key at fault, as a path into the document.
    pub field: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

fn err<T>(field: &str, message: impl Into<String>) -> Result<T, DocError> {
    Err(DocError {
        field: field.to_owned(),
        message: message.into(),
    })
}

/// What a topic key of a widget may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Topic {
    /// A topic name: what a control publishes to, or the one topic a widget shows.
    Name,
    /// A topic or a filter (`plant/+/temp`): the bar chart and the table show every match.
    Filter,
}

/// A widget kind: its default size (w × h), its topic (if it reads one) and the keys it takes
/// beyond `id`, `kind`, `title` and `layout`.
pub struct Kind {
    /// As written in `kind`.
    pub name: &'static str,
    /// Default width and height in grid cells.
    pub size: (u64, u64),
    topic: Option<Topic>,
    keys: &'static [&'static str],
}

/// Every widget kind.
pub const KINDS: [Kind; 13] = [
    Kind {
        name: "value",
        size: (3, 2),
        topic: Some(Topic::Name),
        keys: &["field", "unit", "decimals", "thresholds"],
    },
    Kind {
        name: "gauge",
        size: (3, 3),
        topic: Some(Topic::Name),
        keys: &["field", "unit", "decimals", "thresholds", "min", "max"],
    },
    Kind {
        name: "chart",
        size: (6, 4),
        topic: Some(Topic::Name),
        keys: &[
            "field",
            "series",
            "windowSecs",
            "style",
            "band",
            "unit",
            "min",
            "max",
        ],
    },
    Kind {
        name: "bar",
        size: (6, 4),
        topic: Some(Topic::Filter),
        keys: &["field", "unit", "decimals", "min", "max", "thresholds"],
    },
    Kind {
        name: "timeline",
        size: (6, 3),
        topic: Some(Topic::Name),
        keys: &["field", "series", "windowSecs", "on"],
    },
    Kind {
        name: "table",
        size: (6, 4),
        topic: Some(Topic::Filter),
        keys: &["columns"],
    },
    Kind {
        name: "text",
        size: (4, 2),
        topic: None,
        keys: &["text"],
    },
    Kind {
        name: "switch",
        size: (2, 2),
        topic: Some(Topic::Name),
        keys: &["field", "commandTopic", "on", "off", "qos", "retain"],
    },
    Kind {
        name: "button",
        size: (2, 2),
        topic: Some(Topic::Name),
        keys: &["payload", "qos", "retain", "confirm"],
    },
    Kind {
        name: "slider",
        size: (4, 2),
        topic: Some(Topic::Name),
        keys: &[
            "field",
            "commandTopic",
            "min",
            "max",
            "step",
            "unit",
            "qos",
            "retain",
        ],
    },
    Kind {
        name: "input",
        size: (4, 2),
        topic: Some(Topic::Name),
        keys: &["field", "commandTopic", "input", "unit", "qos", "retain"],
    },
    Kind {
        name: "device",
        size: (3, 2),
        topic: None,
        keys: &["device"],
    },
    Kind {
        name: "alarms",
        size: (6, 4),
        topic: None,
        keys: &["state", "limit"],
    },
];

/// The kind named `name`.
pub fn kind(name: &str) -> Option<&'static Kind> {
    KINDS.iter().find(|k| k.name == name)
}

fn kind_names() -> String {
    KINDS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// The colours a threshold or a series may take by name (else `#rrggbb`).
const COLOURS: [&str; 8] = [
    "green", "yellow", "orange", "red", "blue", "purple", "grey", "teal",
];

/// `doc` checked and completed: the document to keep (without the keys the gateway keeps,
/// [`KEPT_KEYS`]).
pub fn check(doc: &Value) -> Result<Value, DocError> {
    let Some(o) = doc.as_object() else {
        return err(
            "body",
            "a dashboard is a JSON object, e.g. {\"schemaVersion\": 1, \"title\": \"Line 1\", \"widgets\": [{\"kind\": \"value\", \"topic\": \"plant/a/temp\"}]}",
        );
    };
    known_keys(
        o,
        "",
        &[
            "schemaVersion",
            "title",
            "description",
            "columns",
            "variables",
            "widgets",
        ],
        &KEPT_KEYS,
    )?;
    match o.get("schemaVersion") {
        Some(v) if v.as_u64() == Some(SCHEMA_VERSION) => {}
        Some(v) => {
            return err(
                "schemaVersion",
                format!(
                    "schemaVersion {v}: this gateway reads version {SCHEMA_VERSION} (a newer Kite wrote this dashboard: upgrade the gateway)"
                ),
            );
        }
        None => {
            return err(
                "schemaVersion",
                format!("schemaVersion is required: {SCHEMA_VERSION}"),
            );
        }
    }
    let mut out = Map::new();
    out.insert("schemaVersion".into(), SCHEMA_VERSION.into());
    let title = text(o, "title", "title", 1, 200)?
        .ok_or(())
        .or_else(|()| err("title", "title is required: 1 to 200 characters"))?;
    out.insert("title".into(), title.into());
    if let Some(d) = text(o, "description", "description", 0, 2_000)? {
        out.insert("description".into(), d.into());
    }
    let columns = int(o, "columns", "columns", 1, MAX_COLUMNS)?.unwrap_or(DEFAULT_COLUMNS);
    out.insert("columns".into(), columns.into());
    let variables = variables(o.get("variables"))?;
    let names: Vec<String> = variables
        .iter()
        .filter_map(|v| v["name"].as_str().map(str::to_owned))
        .collect();
    out.insert("variables".into(), Value::Array(variables));
    let widgets = match o.get("widgets") {
        None => Vec::new(),
        Some(Value::Array(a)) if a.len() <= MAX_WIDGETS => a.clone(),
        Some(Value::Array(a)) => {
            return err(
                "widgets",
                format!(
                    "{} widgets: {MAX_WIDGETS} at most per dashboard (split it in two)",
                    a.len()
                ),
            );
        }
        Some(_) => return err("widgets", "widgets is a list of widgets: [{\"kind\": ...}]"),
    };
    let mut checked = Vec::with_capacity(widgets.len());
    for (i, w) in widgets.iter().enumerate() {
        checked.push(widget(w, &format!("widgets[{i}]"), &names)?);
    }
    unique_ids(&mut checked)?;
    place(&mut checked, columns)?;
    out.insert("widgets".into(), Value::Array(checked));
    Ok(Value::Object(out))
}

/// Every key of `o` is one of `known` or `ignored`.
fn known_keys(
    o: &Map<String, Value>,
    at: &str,
    known: &[&str],
    ignored: &[&str],
) -> Result<(), DocError> {
    for k in o.keys() {
        if !known.contains(&k.as_str()) && !ignored.contains(&k.as_str()) {
            return err(
                &join(at, k),
                format!(
                    "unknown key {k:?}{}: the keys here are {}",
                    if at.is_empty() {
                        String::new()
                    } else {
                        format!(" in {at}")
                    },
                    known.join(", ")
                ),
            );
        }
    }
    Ok(())
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

/// `o[key]`, a string of `min..=max` characters (trimmed of nothing), if given.
fn text(
    o: &Map<String, Value>,
    key: &str,
    field: &str,
    min: usize,
    max: usize,
) -> Result<Option<String>, DocError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            let n = s.chars().count();
            if n < min || n > max || (min > 0 && s.trim().is_empty()) {
                return err(
                    field,
                    format!("{field}: {min} to {max} characters (it has {n})"),
                );
            }
            Ok(Some(s.clone()))
        }
        Some(v) => err(field, format!("{field} is text, not {v}")),
    }
}

/// `o[key]`, a whole number in `min..=max`, if given.
fn int(
    o: &Map<String, Value>,
    key: &str,
    field: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, DocError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => err(
                field,
                format!("{field} = {v}: a whole number from {min} to {max}"),
            ),
        },
    }
}

/// `o[key]`, a finite number, if given.
fn number(o: &Map<String, Value>, key: &str, field: &str) -> Result<Option<f64>, DocError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(n) if n.is_finite() => Ok(Some(n)),
            _ => err(field, format!("{field} = {v}: a number, e.g. 30")),
        },
    }
}

/// `o[key]`, a boolean, if given.
fn boolean(o: &Map<String, Value>, key: &str, field: &str) -> Result<Option<bool>, DocError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => err(field, format!("{field} = {v}: true or false")),
    }
}

/// `o[key]`, one of `choices`, if given.
fn choice(
    o: &Map<String, Value>,
    key: &str,
    field: &str,
    choices: &[&str],
) -> Result<Option<String>, DocError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if choices.contains(&s.as_str()) => Ok(Some(s.clone())),
        Some(v) => err(
            field,
            format!("{field} = {v}: one of {}", choices.join(", ")),
        ),
    }
}

/// The variables, checked: a name (`[A-Za-z_][A-Za-z0-9_]*`, at most 32), a filter with a
/// `+`, the level of it that gives the values, an optional default.
fn variables(v: Option<&Value>) -> Result<Vec<Value>, DocError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(a)) if a.len() <= 10 => a,
        Some(_) => {
            return err(
                "variables",
                "variables is a list of at most 10, e.g. [{\"name\": \"device\", \"filter\": \"plant/+/temp\"}]",
            );
        }
    };
    let mut out = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (i, v) in list.iter().enumerate() {
        let at = format!("variables[{i}]");
        let Some(o) = v.as_object() else {
            return err(
                &at,
                "a variable is an object: {\"name\": \"device\", \"filter\": \"plant/+/temp\"}",
            );
        };
        known_keys(
            o,
            &at,
            &["name", "filter", "level", "default", "label"],
            &[],
        )?;
        let name_field = format!("{at}.name");
        let name = text(o, "name", &name_field, 1, 32)?
            .ok_or(())
            .or_else(|()| err(&name_field, "name is required, e.g. \"device\""))?;
        let mut chars = name.chars();
        let good = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !good {
            return err(
                &name_field,
                format!(
                    "name {name:?}: letters, digits and _, not starting with a digit (widgets write it ${{{name}}})"
                ),
            );
        }
        if names.contains(&name) {
            return err(&name_field, format!("a variable {name:?} comes earlier"));
        }
        let filter_field = format!("{at}.filter");
        let filter = text(o, "filter", &filter_field, 1, 65_535)?
            .ok_or(())
            .or_else(|()| {
                err(
                    &filter_field,
                    "filter is required: the topics whose + level gives the values, e.g. \"plant/+/temp\"",
                )
            })?;
        kite_mqtt::topic::validate_filter(&filter).map_err(|e| DocError {
            field: filter_field.clone(),
            message: format!("filter {filter:?}: {e}"),
        })?;
        let levels: Vec<&str> = filter.split('/').collect();
        let level_field = format!("{at}.level");
        let level = match int(o, "level", &level_field, 0, 1_000)? {
            Some(l) => {
                let Some(l) = usize::try_from(l).ok().filter(|l| *l < levels.len()) else {
                    return err(
                        &level_field,
                        format!(
                            "level {l}: {filter:?} has {} levels (0 is the first)",
                            levels.len()
                        ),
                    );
                };
                if levels[l] == "#" {
                    return err(&level_field, "level: a # level holds no single value");
                }
                l
            }
            None => match levels.iter().position(|l| *l == "+") {
                Some(l) => l,
                None => {
                    return err(
                        &filter_field,
                        format!(
                            "filter {filter:?} has no +: put + where the values are, e.g. \"plant/+/temp\", or give level"
                        ),
                    );
                }
            },
        };
        let mut var = Map::new();
        var.insert("name".into(), name.clone().into());
        var.insert("filter".into(), filter.into());
        var.insert("level".into(), level.into());
        if let Some(d) = text(o, "default", &format!("{at}.default"), 1, 256)? {
            var.insert("default".into(), d.into());
        }
        if let Some(l) = text(o, "label", &format!("{at}.label"), 1, 64)? {
            var.insert("label".into(), l.into());
        }
        names.push(name);
        out.push(Value::Object(var));
    }
    Ok(out)
}

/// A topic (name or filter) written with `${var}`s: each variable declared, and valid with
/// every variable replaced by one level.
fn topic(
    o: &Map<String, Value>,
    key: &str,
    at: &str,
    what: Topic,
    names: &[String],
) -> Result<Option<String>, DocError> {
    let field = join(at, key);
    let Some(t) = text(o, key, &field, 1, 65_535)? else {
        return Ok(None);
    };
    let concrete = with_variables(&t, &field, names)?;
    let checked = match what {
        Topic::Name => kite_mqtt::topic::validate_name(&concrete),
        Topic::Filter => kite_mqtt::topic::validate_filter(&concrete),
    };
    if let Err(e) = checked {
        let hint = if what == Topic::Name && concrete.contains(['+', '#']) {
            " (this widget shows or publishes one topic: no + or #; use a variable, ${device}, to serve several)"
        } else {
            ""
        };
        return err(&field, format!("{key} {t:?}: {e}{hint}"));
    }
    Ok(Some(t))
}

/// `t` with each `${name}` replaced by `x`; a name not declared is an error.
fn with_variables(t: &str, field: &str, names: &[String]) -> Result<String, DocError> {
    let mut out = String::with_capacity(t.len());
    let mut rest = t;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return err(field, format!("{t:?}: ${{ without its }}"));
        };
        let name = &after[..end];
        if !names.iter().any(|n| n == name) {
            return err(
                field,
                format!(
                    "{t:?} uses ${{{name}}}, which is not a variable of this dashboard: add it to variables"
                ),
            );
        }
        out.push('x');
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A JSON Pointer (RFC 6901): empty (the whole value) or starting with `/`.
fn pointer(o: &Map<String, Value>, key: &str, at: &str) -> Result<Option<String>, DocError> {
    let field = join(at, key);
    let Some(p) = text(o, key, &field, 0, 1_024)? else {
        return Ok(None);
    };
    if !p.is_empty() && !p.starts_with('/') {
        return err(
            &field,
            format!("{key} {p:?} is a JSON Pointer: it starts with /, e.g. \"/temp\""),
        );
    }
    let mut escapes = p.split('~').skip(1);
    if escapes.any(|s| !s.starts_with(['0', '1'])) {
        return err(
            &field,
            format!("{key} {p:?}: ~ is written ~0, and / inside a key ~1"),
        );
    }
    Ok(Some(p))
}

/// A colour: a name of [`COLOURS`] or `#rrggbb`.
fn colour(v: &Value, field: &str) -> Result<String, DocError> {
    let good = |s: &str| {
        COLOURS.contains(&s)
            || (s.len() == 7 && s.starts_with('#') && s[1..].chars().all(|c| c.is_ascii_hexdigit()))
    };
    match v.as_str() {
        Some(s) if good(s) => Ok(s.to_owned()),
        _ => err(
            field,
            format!("colour {v}: one of {} or #rrggbb", COLOURS.join(", ")),
        ),
    }
}

/// One widget, checked; the keys it takes copied as given.
fn widget(v: &Value, at: &str, names: &[String]) -> Result<Value, DocError> {
    let Some(o) = v.as_object() else {
        return err(
            at,
            "a widget is an object, e.g. {\"kind\": \"value\", \"topic\": \"plant/a/temp\"}",
        );
    };
    let kind_field = join(at, "kind");
    let k = match o.get("kind").and_then(Value::as_str) {
        Some(name) => kind(name).ok_or(()).or_else(|()| {
            err(
                &kind_field,
                format!("kind {name:?}: one of {}", kind_names()),
            )
        })?,
        None => {
            return err(
                &kind_field,
                format!("kind is required: one of {}", kind_names()),
            );
        }
    };
    let mut known = vec!["id", "kind", "title", "layout"];
    if k.topic.is_some() {
        known.push("topic");
    }
    known.extend_from_slice(k.keys);
    known_keys(o, at, &known, &[])?;
    let mut out = Map::new();
    if let Some(id) = text(o, "id", &join(at, "id"), 1, 64)? {
        out.insert("id".into(), id.into());
    }
    out.insert("kind".into(), k.name.into());
    if let Some(t) = text(o, "title", &join(at, "title"), 0, 200)? {
        out.insert("title".into(), t.into());
    }
    if let Some(l) = o.get("layout") {
        out.insert("layout".into(), layout(l, &join(at, "layout"))?);
    }
    let has_series = o.get("series").is_some_and(|s| !s.is_null());
    if let Some(what) = k.topic {
        match topic(o, "topic", at, what, names)? {
            Some(t) => {
                if has_series {
                    return err(
                        &join(at, "topic"),
                        "give topic (one series) or series (several), not both",
                    );
                }
                out.insert("topic".into(), t.into());
            }
            None if has_series => {}
            None => {
                return err(
                    &join(at, "topic"),
                    format!(
                        "a {} widget needs a topic{}",
                        k.name,
                        if k.keys.contains(&"series") {
                            " (or series)"
                        } else {
                            ""
                        }
                    ),
                );
            }
        }
    }
    for key in k.keys {
        let field = join(at, key);
        let value = match *key {
            "field" => pointer(o, key, at)?.map(Value::from),
            "commandTopic" => topic(o, key, at, Topic::Name, names)?.map(Value::from),
            "unit" => text(o, key, &field, 0, 32)?.map(Value::from),
            "decimals" => int(o, key, &field, 0, 10)?.map(Value::from),
            "min" | "max" | "step" => number(o, key, &field)?.map(Value::from),
            "windowSecs" => int(o, key, &field, 10, 31 * 86_400)?.map(Value::from),
            "style" => choice(o, key, &field, &["line", "area"])?.map(Value::from),
            "band" | "retain" | "confirm" => boolean(o, key, &field)?.map(Value::from),
            "qos" => int(o, key, &field, 0, 2)?.map(Value::from),
            "input" => choice(o, key, &field, &["text", "number"])?.map(Value::from),
            "text" => text(o, key, &field, 0, 10_000)?.map(Value::from),
            "payload" | "off" => text(o, key, &field, 0, 65_536)?.map(Value::from),
            // A switch's on payload is text; a timeline's, the payloads meaning on.
            "on" if k.name == "timeline" => words(o.get(*key), &field)?,
            "on" => text(o, key, &field, 0, 65_536)?.map(Value::from),
            "state" => choice(
                o,
                key,
                &field,
                &["active", "acknowledged", "cleared", "open"],
            )?
            .map(Value::from),
            "limit" => int(o, key, &field, 1, 100)?.map(Value::from),
            "device" => {
                let id = text(o, key, &field, 1, 65_535)?;
                if let Some(id) = &id {
                    with_variables(id, &field, names)?;
                }
                id.map(Value::from)
            }
            "thresholds" => thresholds(o.get(*key), &field)?,
            "series" => series(o.get(*key), &field, names)?,
            "columns" => table_columns(o.get(*key), &field)?,
            _ => None,
        };
        if let Some(v) = value {
            out.insert((*key).to_owned(), v);
        }
    }
    if let (Some(min), Some(max)) = (
        out.get("min").and_then(Value::as_f64),
        out.get("max").and_then(Value::as_f64),
    ) && min >= max
    {
        return err(
            &join(at, "max"),
            format!("max {max} is not above min {min}"),
        );
    }
    if let Some(step) = out.get("step").and_then(Value::as_f64)
        && step <= 0.0
    {
        return err(&join(at, "step"), format!("step {step}: above 0, e.g. 1"));
    }
    if k.name == "device" && !out.contains_key("device") {
        return err(
            &join(at, "device"),
            "a device widget needs device: the device id (or ${device})",
        );
    }
    Ok(Value::Object(out))
}

/// A list of payload words (a timeline's `on`).
fn words(v: Option<&Value>, field: &str) -> Result<Option<Value>, DocError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(a))
            if !a.is_empty()
                && a.len() <= 20
                && a.iter().all(|w| w.as_str().is_some_and(|s| !s.is_empty())) =>
        {
            Ok(Some(Value::Array(a.clone())))
        }
        Some(v) => err(
            field,
            format!("{field} = {v}: a list of the payloads meaning on, e.g. [\"on\", \"1\"]"),
        ),
    }
}

/// Thresholds: `[{"value": 30, "color": "red"}]`, at most 10, in increasing value.
fn thresholds(v: Option<&Value>, field: &str) -> Result<Option<Value>, DocError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) if a.len() <= 10 => a,
        Some(_) => {
            return err(
                field,
                "thresholds is a list of at most 10, e.g. [{\"value\": 30, \"color\": \"red\"}]",
            );
        }
    };
    let mut out = Vec::new();
    let mut last = f64::NEG_INFINITY;
    for (i, t) in list.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let Some(o) = t.as_object() else {
            return err(&at, "a threshold is {\"value\": 30, \"color\": \"red\"}");
        };
        known_keys(o, &at, &["value", "color"], &[])?;
        let value = number(o, "value", &format!("{at}.value"))?
            .ok_or(())
            .or_else(|()| err(&format!("{at}.value"), "value is required, e.g. 30"))?;
        if value <= last {
            return err(
                &format!("{at}.value"),
                format!("thresholds go up: {value} comes after {last}"),
            );
        }
        last = value;
        let color = colour(
            o.get("color").unwrap_or(&Value::Null),
            &format!("{at}.color"),
        )?;
        out.push(serde_json::json!({ "value": value, "color": color }));
    }
    Ok(Some(Value::Array(out)))
}

/// A chart's or timeline's series: `[{"topic", "field", "label", "color"}]`, 1 to 8.
fn series(v: Option<&Value>, field: &str, names: &[String]) -> Result<Option<Value>, DocError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) if (1..=8).contains(&a.len()) => a,
        Some(_) => {
            return err(
                field,
                "series is a list of 1 to 8, e.g. [{\"topic\": \"plant/a/temp\", \"label\": \"A\"}]",
            );
        }
    };
    let mut out = Vec::new();
    for (i, s) in list.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let Some(o) = s.as_object() else {
            return err(
                &at,
                "a series is {\"topic\": \"plant/a/temp\", \"field\": \"/temp\"}",
            );
        };
        known_keys(o, &at, &["topic", "field", "label", "color"], &[])?;
        let mut one = Map::new();
        let t = topic(o, "topic", &at, Topic::Name, names)?
            .ok_or(())
            .or_else(|()| err(&join(&at, "topic"), "topic is required"))?;
        one.insert("topic".into(), t.into());
        if let Some(f) = pointer(o, "field", &at)? {
            one.insert("field".into(), f.into());
        }
        if let Some(l) = text(o, "label", &join(&at, "label"), 0, 64)? {
            one.insert("label".into(), l.into());
        }
        if let Some(c) = o.get("color") {
            one.insert("color".into(), colour(c, &join(&at, "color"))?.into());
        }
        out.push(Value::Object(one));
    }
    Ok(Some(Value::Array(out)))
}

/// A table's columns: `[{"field": "/temp", "label": "Temp", "unit": "°C"}]`, 1 to 20.
fn table_columns(v: Option<&Value>, field: &str) -> Result<Option<Value>, DocError> {
    let list = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Array(a)) if (1..=20).contains(&a.len()) => a,
        Some(_) => {
            return err(
                field,
                "columns is a list of 1 to 20, e.g. [{\"field\": \"/temp\", \"label\": \"Temp\"}]",
            );
        }
    };
    let mut out = Vec::new();
    for (i, c) in list.iter().enumerate() {
        let at = format!("{field}[{i}]");
        let Some(o) = c.as_object() else {
            return err(
                &at,
                "a column is {\"field\": \"/temp\", \"label\": \"Temp\"}",
            );
        };
        known_keys(o, &at, &["field", "label", "unit"], &[])?;
        let mut one = Map::new();
        let f = pointer(o, "field", &at)?
            .ok_or(())
            .or_else(|()| err(&join(&at, "field"), "field is required, e.g. \"/temp\""))?;
        one.insert("field".into(), f.into());
        if let Some(l) = text(o, "label", &join(&at, "label"), 0, 64)? {
            one.insert("label".into(), l.into());
        }
        if let Some(u) = text(o, "unit", &join(&at, "unit"), 0, 32)? {
            one.insert("unit".into(), u.into());
        }
        out.push(Value::Object(one));
    }
    Ok(Some(Value::Array(out)))
}

/// A layout as given: `{"x", "y", "w", "h"}`, each a whole number (checked against the grid
/// in [`place`]).
fn layout(v: &Value, at: &str) -> Result<Value, DocError> {
    let Some(o) = v.as_object() else {
        return err(
            at,
            "layout is {\"x\": 0, \"y\": 0, \"w\": 3, \"h\": 2} (grid cells)",
        );
    };
    known_keys(o, at, &["x", "y", "w", "h"], &[])?;
    let mut out = Map::new();
    for (key, min, max) in [
        ("x", 0, MAX_COLUMNS - 1),
        ("y", 0, MAX_Y),
        ("w", 1, MAX_COLUMNS),
        ("h", 1, MAX_H),
    ] {
        if let Some(n) = int(o, key, &join(at, key), min, max)? {
            out.insert(key.into(), n.into());
        }
    }
    Ok(Value::Object(out))
}

/// Gives each widget without an id one (`w1`, `w2`, ... not taken); ids are unique.
fn unique_ids(widgets: &mut [Value]) -> Result<(), DocError> {
    let mut taken: Vec<String> = Vec::new();
    for (i, w) in widgets.iter().enumerate() {
        if let Some(id) = w.get("id").and_then(Value::as_str) {
            if taken.iter().any(|t| t == id) {
                return err(
                    &format!("widgets[{i}].id"),
                    format!("id {id:?} is taken by an earlier widget: ids are unique"),
                );
            }
            taken.push(id.to_owned());
        }
    }
    let mut next = 1;
    for w in widgets.iter_mut() {
        if w.get("id").is_some() {
            continue;
        }
        let id = loop {
            let id = format!("w{next}");
            next += 1;
            if !taken.contains(&id) {
                break id;
            }
        };
        taken.push(id.clone());
        if let Some(o) = w.as_object_mut() {
            o.insert("id".into(), id.into());
        }
    }
    Ok(())
}

/// Completes every layout: a widget's size defaults to its kind's (narrowed to the grid);
/// one without a position goes to the first free place, top to bottom and left to right,
/// after those placed before it. Given positions must fit the grid (they may overlap: that is
/// the author's choice).
fn place(widgets: &mut [Value], columns: u64) -> Result<(), DocError> {
    let mut placed: Vec<(u64, u64, u64, u64)> = Vec::new();
    for (i, w) in widgets.iter_mut().enumerate() {
        let Some(o) = w.as_object_mut() else {
            continue;
        };
        let k = o
            .get("kind")
            .and_then(Value::as_str)
            .and_then(kind)
            .map_or((3, 2), |k| k.size);
        let given = o
            .get("layout")
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        let get = |key: &str| given.get(key).and_then(Value::as_u64);
        let width = get("w").unwrap_or(k.0.min(columns));
        let height = get("h").unwrap_or(k.1);
        if width > columns {
            return err(
                &format!("widgets[{i}].layout.w"),
                format!("w {width} is wider than the grid's {columns} columns"),
            );
        }
        let (x, y) = match (get("x"), get("y")) {
            (Some(x), Some(y)) => {
                if x + width > columns {
                    return err(
                        &format!("widgets[{i}].layout.x"),
                        format!("x {x} + w {width} goes past the grid's {columns} columns"),
                    );
                }
                (x, y)
            }
            (None, None) => free_place(&placed, width, height, columns),
            (Some(_), None) | (None, Some(_)) => {
                let missing = if get("x").is_some() { "y" } else { "x" };
                return err(
                    &format!("widgets[{i}].layout.{missing}"),
                    "give x and y together (or neither, to be placed in the first free place)",
                );
            }
        };
        placed.push((x, y, width, height));
        o.insert(
            "layout".into(),
            serde_json::json!({ "x": x, "y": y, "w": width, "h": height }),
        );
    }
    Ok(())
}

/// The first place, by rows then columns, where a `w` × `h` widget overlaps none of
/// `placed`. Only the rows where a placed widget ends (or 0) and the columns where one ends
/// (or 0) can be that place — the place one row up, or one column left, would be free too
/// otherwise — so at most (n + 1)² places are tried, whatever the rows (a document of 200
/// widgets 50 rows tall costs no more than one of small ones).
fn free_place(placed: &[(u64, u64, u64, u64)], w: u64, h: u64, columns: u64) -> (u64, u64) {
    let overlaps = |x: u64, y: u64| {
        placed
            .iter()
            .any(|&(px, py, pw, ph)| x < px + pw && px < x + w && y < py + ph && py < y + h)
    };
    let mut rows: Vec<u64> = placed.iter().map(|p| p.1 + p.3).collect();
    rows.push(0);
    rows.sort_unstable();
    rows.dedup();
    let mut cols: Vec<u64> = placed
        .iter()
        .map(|p| p.0 + p.2)
        .filter(|x| x + w <= columns)
        .collect();
    cols.push(0);
    cols.sort_unstable();
    cols.dedup();
    for &y in &rows {
        for &x in &cols {
            if !overlaps(x, y) {
                return (x, y);
            }
        }
    }
    // Below everything is always free.
    (0, rows.last().copied().unwrap_or(0))
}

/// An id for a dashboard titled `title`: its words in lower case joined by `-` (at most 40
/// characters; `dashboard` if none), then `-2`, `-3`... until one is not `taken`.
pub fn new_id(title: &str, taken: impl Fn(&str) -> bool) -> String {
    let mut slug = String::new();
    for c in title.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c.to_ascii_lowercase());
        } else if !slug.is_empty() && !slug.ends_with('-') {
            slug.push('-');
        }
        if slug.len() >= 40 {
            break;
        }
    }
    let slug = slug.trim_end_matches('-');
    let slug = if slug.is_empty() { "dashboard" } else { slug };
    if !taken(slug) {
        return slug.to_owned();
    }
    (2u32..)
        .map(|n| format!("{slug}-{n}"))
        .find(|id| !taken(id))
        .unwrap_or_else(|| slug.to_owned())
}

/// The examples shipped for the embedded broker's `$SYS` topics (and its device monitor and
/// alarms), as documents: given to a new data directory once.
pub fn examples() -> Vec<(String, Value)> {
    [
        ("broker", include_str!("../dashboards/broker.json")),
        ("traffic", include_str!("../dashboards/traffic.json")),
    ]
    .into_iter()
    .filter_map(|(id, text)| {
        let doc: Value = serde_json::from_str(text).ok()?;
        check(&doc).ok().map(|d| (id.to_owned(), d))
    })
    .collect()
}

/// Gives a new data directory the examples ([`examples`]), once.
pub fn seed(store: &dyn kite_data::Storage) -> Result<bool, kite_data::DataError> {
    let now = kite_data::now_ms();
    let examples: Vec<kite_data::Dashboard> = examples()
        .into_iter()
        .map(|(id, doc)| kite_data::Dashboard {
            id,
            doc,
            created: now,
            updated: now,
            updated_by: "kite".into(),
            version: 1,
        })
        .collect();
    store.seed_dashboards(&examples)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use super::*;
    use serde_json::json;

    fn bad(doc: Value) -> DocError {
        match check(&doc) {
            Err(e) => e,
            Ok(d) => panic!("accepted: {d}"),
        }
    }

    /// The issue's example: what it omits gets defaults.
    #[test]
    fn a_minimal_dashboard_gets_ids_layout_and_columns() {
        let d = check(&json!({"schemaVersion": 1, "title": "Line 1", "widgets": [
            {"kind": "value", "topic": "plant/a/temp"},
            {"kind": "chart", "topic": "plant/a/temp", "field": "/temp"},
            {"kind": "value", "topic": "plant/b/temp", "id": "w1"},
            {"kind": "switch", "topic": "plant/a/valve", "layout": {"w": 12}},
        ]}))
        .unwrap();
        assert_eq!(d["columns"], 12);
        assert_eq!(d["variables"], json!([]));
        let w = d["widgets"].as_array().unwrap();
        let ids: Vec<&str> = w.iter().map(|w| w["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["w2", "w3", "w1", "w4"]);
        let layouts: Vec<&Value> = w.iter().map(|w| &w["layout"]).collect();
        assert_eq!(
            layouts,
            [
                &json!({"x": 0, "y": 0, "w": 3, "h": 2}),
                &json!({"x": 3, "y": 0, "w": 6, "h": 4}),
                &json!({"x": 9, "y": 0, "w": 3, "h": 2}),
                &json!({"x": 0, "y": 4, "w": 12, "h": 2}),
            ]
        );
        // Checked again, a completed document is unchanged.
        assert_eq!(check(&d).unwrap(), d);
    }

    #[test]
    fn every_kind_takes_its_keys() {
        let d = check(&json!({"schemaVersion": 1, "title": "All", "columns": 24,
            "variables": [{"name": "device", "filter": "plant/+/temp", "default": "a", "label": "Device"}],
            "widgets": [
            {"kind": "value", "topic": "plant/${device}/temp", "field": "/temp", "unit": "°C", "decimals": 1,
             "thresholds": [{"value": 25, "color": "orange"}, {"value": 30, "color": "#ff0000"}]},
            {"kind": "gauge", "topic": "plant/${device}/temp", "min": -10, "max": 50},
            {"kind": "chart", "series": [{"topic": "plant/a/temp", "label": "A", "color": "blue"}, {"topic": "plant/b/temp", "field": "/t"}],
             "windowSecs": 3600, "style": "area", "band": true},
            {"kind": "bar", "topic": "plant/+/temp", "field": "/temp"},
            {"kind": "timeline", "topic": "plant/a/pump", "on": ["on", "1"]},
            {"kind": "table", "topic": "plant/#", "columns": [{"field": "/temp", "label": "T", "unit": "°C"}]},
            {"kind": "text", "text": "# Line 1\nSee **this**."},
            {"kind": "switch", "topic": "plant/a/valve/state", "commandTopic": "plant/a/valve/set", "on": "open", "off": "closed", "qos": 1, "retain": true},
            {"kind": "button", "topic": "plant/a/reset", "payload": "1", "confirm": true},
            {"kind": "slider", "topic": "plant/a/speed", "min": 0, "max": 100, "step": 5},
            {"kind": "input", "topic": "plant/a/setpoint", "input": "number", "unit": "°C"},
            {"kind": "device", "device": "${device}"},
            {"kind": "alarms", "state": "open", "limit": 20},
        ]}))
        .unwrap();
        assert_eq!(d["widgets"].as_array().unwrap().len(), KINDS.len());
        assert_eq!(d["variables"][0]["level"], 1);
        assert_eq!(d["widgets"][0]["thresholds"][1]["color"], "#ff0000");
    }

    /// Each mistake is named by its path in the document.
    #[test]
    fn mistakes_are_named_by_their_place() {
        let w = |widget: Value| json!({"schemaVersion": 1, "title": "t", "widgets": [widget]});
        for (doc, field) in [
            (json!([]), "body"),
            (json!({"title": "t"}), "schemaVersion"),
            (json!({"schemaVersion": 2, "title": "t"}), "schemaVersion"),
            (json!({"schemaVersion": 1}), "title"),
            (json!({"schemaVersion": 1, "title": " "}), "title"),
            (
                json!({"schemaVersion": 1, "title": "t", "colour": 1}),
                "colour",
            ),
            (
                json!({"schemaVersion": 1, "title": "t", "columns": 0}),
                "columns",
            ),
            (w(json!({"kind": "dial", "topic": "a"})), "widgets[0].kind"),
            (w(json!({"topic": "a"})), "widgets[0].kind"),
            (w(json!({"kind": "value"})), "widgets[0].topic"),
            (w(json!({"kind": "value", "topc": "a"})), "widgets[0].topc"),
            (
                w(json!({"kind": "value", "topic": "a/+"})),
                "widgets[0].topic",
            ),
            (
                w(json!({"kind": "value", "topic": "a", "field": "temp"})),
                "widgets[0].field",
            ),
            (
                w(json!({"kind": "value", "topic": "a", "field": "/a~2"})),
                "widgets[0].field",
            ),
            (
                w(json!({"kind": "value", "topic": "a/${dev}"})),
                "widgets[0].topic",
            ),
            (
                w(json!({"kind": "value", "topic": "a", "decimals": 11})),
                "widgets[0].decimals",
            ),
            (
                w(
                    json!({"kind": "value", "topic": "a", "thresholds": [{"value": 2, "color": "red"}, {"value": 1, "color": "red"}]}),
                ),
                "widgets[0].thresholds[1].value",
            ),
            (
                w(
                    json!({"kind": "value", "topic": "a", "thresholds": [{"value": 2, "color": "pink"}]}),
                ),
                "widgets[0].thresholds[0].color",
            ),
            (
                w(json!({"kind": "gauge", "topic": "a", "min": 5, "max": 5})),
                "widgets[0].max",
            ),
            (
                w(json!({"kind": "chart", "topic": "a", "series": [{"topic": "b"}]})),
                "widgets[0].topic",
            ),
            (
                w(json!({"kind": "chart", "series": []})),
                "widgets[0].series",
            ),
            (
                w(json!({"kind": "chart", "series": [{"topic": "b", "field": "x"}]})),
                "widgets[0].series[0].field",
            ),
            (
                w(json!({"kind": "chart", "topic": "a", "windowSecs": 5})),
                "widgets[0].windowSecs",
            ),
            (
                w(json!({"kind": "switch", "topic": "a", "commandTopic": "a/#"})),
                "widgets[0].commandTopic",
            ),
            (
                w(json!({"kind": "switch", "topic": "a", "qos": 3})),
                "widgets[0].qos",
            ),
            (
                w(json!({"kind": "slider", "topic": "a", "step": 0})),
                "widgets[0].step",
            ),
            (w(json!({"kind": "text", "topic": "a"})), "widgets[0].topic"),
            (w(json!({"kind": "device"})), "widgets[0].device"),
            (
                w(json!({"kind": "value", "topic": "a", "layout": {"x": 10, "y": 0, "w": 3}})),
                "widgets[0].layout.x",
            ),
            (
                w(json!({"kind": "value", "topic": "a", "layout": {"x": 1}})),
                "widgets[0].layout.y",
            ),
            (
                w(json!({"kind": "value", "topic": "a", "layout": {"w": 13}})),
                "widgets[0].layout.w",
            ),
            (
                w(json!({"kind": "value", "topic": "a", "layout": {"h": 0}})),
                "widgets[0].layout.h",
            ),
            (
                json!({"schemaVersion": 1, "title": "t", "widgets": [{"kind": "text", "id": "a"}, {"kind": "text", "id": "a"}]}),
                "widgets[1].id",
            ),
            (
                json!({"schemaVersion": 1, "title": "t", "variables": [{"name": "1x", "filter": "a/+"}]}),
                "variables[0].name",
            ),
            (
                json!({"schemaVersion": 1, "title": "t", "variables": [{"name": "d", "filter": "a/b"}]}),
                "variables[0].filter",
            ),
            (
                json!({"schemaVersion": 1, "title": "t", "variables": [{"name": "d", "filter": "a/#", "level": 1}]}),
                "variables[0].level",
            ),
            (
                json!({"schemaVersion": 1, "title": "t", "variables": [{"name": "d", "filter": "a/+"}, {"name": "d", "filter": "b/+"}]}),
                "variables[1].name",
            ),
        ] {
            let e = bad(doc.clone());
            assert_eq!(e.field, field, "{doc}: {e:?}");
            assert!(!e.message.is_empty());
        }
        let many = json!({"schemaVersion": 1, "title": "t",
            "widgets": vec![json!({"kind": "text"}); MAX_WIDGETS + 1]});
        assert_eq!(bad(many).field, "widgets");
    }

    /// An export (with the keys the gateway keeps) is taken back as it is.
    #[test]
    fn an_export_is_accepted_back() {
        let d = check(
            &json!({"schemaVersion": 1, "title": "t", "id": "t", "version": 3,
            "created": 1, "updated": 2, "updatedBy": "ann", "widgets": []}),
        )
        .unwrap();
        assert!(d.get("id").is_none() && d.get("version").is_none());
    }

    /// The first free place, by rows then columns, as a scan of every cell would find it —
    /// and fast for a document built to make that scan slow.
    #[test]
    fn free_places_are_the_first_by_rows_then_columns() {
        let scan = |placed: &[(u64, u64, u64, u64)], w: u64, h: u64, columns: u64| {
            let overlaps = |x: u64, y: u64| {
                placed
                    .iter()
                    .any(|&(px, py, pw, ph)| x < px + pw && px < x + w && y < py + ph && py < y + h)
            };
            let bottom = placed.iter().map(|p| p.1 + p.3).max().unwrap_or(0);
            for y in 0..=bottom {
                for x in 0..=columns - w {
                    if !overlaps(x, y) {
                        return (x, y);
                    }
                }
            }
            (0, bottom)
        };
        let mut seed = 11u64;
        let mut next = |m: u64| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) % m
        };
        for _ in 0..300 {
            let columns = 12;
            let placed: Vec<(u64, u64, u64, u64)> = (0..next(8))
                .map(|_| {
                    let w = 1 + next(6);
                    (next(columns - w + 1), next(10), w, 1 + next(4))
                })
                .collect();
            let (w, h) = (1 + next(6), 1 + next(4));
            assert_eq!(
                free_place(&placed, w, h, columns),
                scan(&placed, w, h, columns),
                "{placed:?} {w}x{h}"
            );
        }
        // 199 full-width widgets 50 rows tall, then 1 to place: found at once, at the bottom.
        let tall: Vec<(u64, u64, u64, u64)> = (0..199).map(|i| (0, i * 50, 48, 50)).collect();
        assert_eq!(free_place(&tall, 3, 2, 48), (0, 9_950));
    }

    #[test]
    fn ids_come_from_titles() {
        let taken = ["line-1", "line-1-2", "dashboard"];
        let t = |id: &str| taken.contains(&id);
        assert_eq!(new_id("Line 1", t), "line-1-3");
        assert_eq!(new_id("  Pumps & valves!", t), "pumps-valves");
        assert_eq!(new_id("☃", t), "dashboard-2");
        assert_eq!(new_id(&"a".repeat(100), t).len(), 40);
    }

    #[test]
    fn the_examples_are_good_dashboards() {
        let ex = examples();
        assert_eq!(ex.len(), 2, "an example failed its check");
        for (name, text) in [
            ("broker", include_str!("../dashboards/broker.json")),
            ("traffic", include_str!("../dashboards/traffic.json")),
        ] {
            let doc: Value = serde_json::from_str(text).unwrap();
            if let Err(e) = check(&doc) {
                panic!("{name}: {e:?}");
            }
        }
    }
}
