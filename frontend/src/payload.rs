//! Payloads as people read them: text, pretty JSON, hex, base64 — detected automatically,
//! never failing (bytes that are not text show as hex), and numbers for sparklines.
//!
//! A small JSON reader of its own (no serde_json: the whole app must stay under 200 KB),
//! with a nesting limit so a hostile payload cannot exhaust the stack.

use std::fmt::Write as _;

/// How a payload is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// UTF-8 text as it is.
    Text,
    /// JSON, indented.
    Json,
    /// Offset, 16 bytes in hex, and their printable characters per line.
    Hex,
    /// Base64 (standard alphabet, padded).
    Base64,
}

impl Format {
    /// Every format, in the order offered.
    pub const ALL: [Format; 4] = [Format::Text, Format::Json, Format::Hex, Format::Base64];

    /// Its label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Json => "JSON",
            Self::Hex => "hex",
            Self::Base64 => "base64",
        }
    }
}

/// The format that shows `bytes` best: JSON if it is a JSON object or array, text if it is
/// UTF-8 without control characters (other than tab and line breaks), else hex.
pub fn detect(bytes: &[u8]) -> Format {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Format::Hex;
    };
    let t = text.trim_start();
    if (t.starts_with('{') || t.starts_with('[')) && parse(text).is_some() {
        return Format::Json;
    }
    if text
        .chars()
        .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
    {
        return Format::Hex;
    }
    Format::Text
}

/// `bytes` shown in `format`; a format that does not fit (JSON that does not parse, text that
/// is not UTF-8) falls back to hex, with a note.
pub fn render(bytes: &[u8], format: Format) -> String {
    match format {
        Format::Text => match std::str::from_utf8(bytes) {
            Ok(t) => t.to_owned(),
            Err(e) => format!("(not UTF-8: {e})\n{}", hex(bytes)),
        },
        Format::Json => match std::str::from_utf8(bytes).ok().and_then(parse) {
            Some(v) => {
                let mut out = String::new();
                pretty(&v, 0, &mut out);
                out
            }
            None => format!("(not JSON)\n{}", render(bytes, detect_plain(bytes))),
        },
        Format::Hex => hex(bytes),
        Format::Base64 => base64(bytes),
    }
}

fn detect_plain(bytes: &[u8]) -> Format {
    match detect(bytes) {
        Format::Json => Format::Text,
        f => f,
    }
}

/// A one-line preview: text up to `max` characters (line breaks as spaces), or hex.
pub fn preview(bytes: &[u8], whole_len: usize, max: usize) -> String {
    let mut out = match std::str::from_utf8(bytes) {
        Ok(t) => t
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(max)
            .collect(),
        // A preview may cut a character in two: what is valid before the cut.
        Err(e) if e.error_len().is_none() && e.valid_up_to() > 0 => {
            return preview(&bytes[..e.valid_up_to()], whole_len, max);
        }
        Err(_) => bytes.iter().take(max / 3).fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x} ");
            s
        }),
    };
    if whole_len > bytes.len() || out.chars().count() >= max {
        out.push('…');
    }
    out
}

/// The number a payload carries, for charts: the whole text as a number (`21.5`, ` 3 `), or
/// the first number at the top level of a JSON object (`{"temp": 21.5, ...}`).
pub fn number(bytes: &[u8]) -> Option<f64> {
    let text = std::str::from_utf8(bytes).ok()?.trim();
    if let Some(n) = to_f64(text) {
        return Some(n);
    }
    match parse(text)? {
        Json::Obj(fields) => fields.into_iter().find_map(|(_, v)| match v {
            Json::Num(n) => to_f64(&n),
            _ => None,
        }),
        _ => None,
    }
}

/// A decimal number (digits, sign, point, exponent; finite), or `None`. In the browser the
/// conversion is JavaScript's: Rust's float parser would cost the app 8 KB.
pub fn to_f64(text: &str) -> Option<f64> {
    let numeric = |b: u8| b.is_ascii_digit() || matches!(b, b'+' | b'-' | b'.' | b'e' | b'E');
    if !text.bytes().any(|b| b.is_ascii_digit()) || !text.bytes().all(numeric) {
        return None;
    }
    // `Number(text)`, strict (parseFloat would read "1-2" as 1); deprecated in js-sys only
    // because it wraps the value in an object, which `value_of` unwraps.
    #[cfg(target_arch = "wasm32")]
    #[allow(deprecated)]
    let n = js_sys::Number::new(&wasm_bindgen::JsValue::from_str(text)).value_of();
    #[cfg(not(target_arch = "wasm32"))]
    let n: f64 = text.parse().ok()?;
    n.is_finite().then_some(n)
}

/// A parsed JSON value. Numbers keep their digits as written: shown as sent, read as a
/// number only for charts ([`number`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number, as written.
    Num(String),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object, fields in order.
    Obj(Vec<(String, Json)>),
}

impl Json {
    /// The field `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Self::Obj(fields) => fields.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Sets the field `key` of an object (added last if new); `None` removes it.
    pub fn set(&mut self, key: &str, value: Option<Self>) {
        if let Self::Obj(fields) = self {
            match (fields.iter().position(|(k, _)| k == key), value) {
                (Some(i), Some(v)) => fields[i].1 = v,
                (Some(i), None) => {
                    fields.remove(i);
                }
                (None, Some(v)) => fields.push((key.to_owned(), v)),
                (None, None) => {}
            }
        }
    }

    /// The value a JSON Pointer (RFC 6901: `/a/0`, `~0` for `~`, `~1` for `/`) points at;
    /// `""` is the whole value.
    pub fn pointer(&self, pointer: &str) -> Option<&Self> {
        if pointer.is_empty() {
            return Some(self);
        }
        let mut at = self;
        for token in pointer.strip_prefix('/')?.split('/') {
            let token = token.replace("~1", "/").replace("~0", "~");
            at = match at {
                Self::Obj(_) => at.get(&token)?,
                Self::Arr(items) => items.get(token.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(at)
    }

    /// A string's text.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }

    /// A number's value (`true`/`false` as 1/0, a string holding a number as that number).
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Self::Num(n) | Self::Str(n) => to_f64(n.trim()),
            Self::Bool(b) => Some(f64::from(u8::from(*b))),
            _ => None,
        }
    }

    /// The items of an array (none for anything else).
    pub fn items(&self) -> &[Self] {
        match self {
            Self::Arr(items) => items,
            _ => &[],
        }
    }

    /// The value as text for people: a string's own text, anything else as JSON.
    pub fn text(&self) -> String {
        match self {
            Self::Str(s) => s.clone(),
            other => {
                let mut out = String::new();
                compact(other, &mut out);
                out
            }
        }
    }

    /// A whole number from 0 to `max` (a saved setting), or `None`.
    pub fn small(&self, max: u8) -> Option<u8> {
        match self {
            Self::Num(n) => n.parse().ok().filter(|v| *v <= max),
            _ => None,
        }
    }
}

/// Nesting deeper than this is not taken as JSON.
const MAX_DEPTH: usize = 64;

/// Parses a whole JSON text (RFC 8259), or `None`.
pub fn parse(text: &str) -> Option<Json> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let v = p.value(0)?;
    p.ws();
    (p.i == p.s.len()).then_some(v)
}

/// Where a text stops being JSON: `(line, column)`, both from 1 (for a form's message).
pub fn json_error_at(text: &str) -> Option<(usize, usize)> {
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let whole = p.value(0).is_some() && {
        p.ws();
        p.i == p.s.len()
    };
    if whole {
        return None;
    }
    let at = p.i.min(text.len());
    let before = &text.as_bytes()[..at];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let start = before
        .iter()
        .rposition(|&b| b == b'\n')
        .map_or(0, |i| i + 1);
    let column = String::from_utf8_lossy(&before[start..]).chars().count() + 1;
    Some((line, column))
}

/// Bytes written as hex digits (whitespace, `:` and `-` between bytes allowed; `0x` prefixes
/// allowed), or what is wrong and where.
pub fn from_hex(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() / 2);
    let mut high: Option<(u8, usize)> = None;
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if high.is_none() && c == '0' && matches!(chars.get(i + 1), Some('x' | 'X')) {
            i += 2;
            continue;
        }
        if c.is_whitespace() || c == ':' || c == '-' || c == ',' {
            if let Some((_, at)) = high {
                return Err(format!("hex digit at character {} has no pair", at + 1));
            }
            i += 1;
            continue;
        }
        let Some(d) = c.to_digit(16) else {
            return Err(format!(
                "'{c}' at character {} is not a hex digit (0-9, a-f)",
                i + 1
            ));
        };
        match high.take() {
            None => high = Some((d as u8, i)),
            Some((h, _)) => out.push(h << 4 | d as u8),
        }
        i += 1;
    }
    if let Some((_, at)) = high {
        return Err(format!(
            "hex digit at character {} has no pair: bytes are two digits",
            at + 1
        ));
    }
    Ok(out)
}

/// Standard or URL-safe base64 (padding optional, whitespace ignored), or what is wrong and
/// where.
pub fn from_base64(text: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let (mut acc, mut bits, mut padding) = (0u32, 0u32, 0usize);
    for (i, c) in text.chars().enumerate() {
        let v = match c {
            'A'..='Z' => c as u32 - 'A' as u32,
            'a'..='z' => c as u32 - 'a' as u32 + 26,
            '0'..='9' => c as u32 - '0' as u32 + 52,
            '+' | '-' => 62,
            '/' | '_' => 63,
            '=' => {
                padding += 1;
                continue;
            }
            c if c.is_whitespace() => continue,
            c => {
                return Err(format!(
                    "'{c}' at character {} is not base64 (A-Z a-z 0-9 + /)",
                    i + 1
                ));
            }
        };
        if padding > 0 {
            return Err(format!("base64 continues after '=' at character {}", i + 1));
        }
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    if bits >= 6 {
        return Err("base64 ends with a lone character: its length is wrong".into());
    }
    Ok(out)
}

/// What changed from one payload to the next, for the history: JSON objects field by field,
/// other text as the changed middle (the common start and end kept as context).
#[derive(Debug, Clone, PartialEq)]
pub enum Diff {
    /// The same bytes.
    Same,
    /// JSON object fields: (path, before, after); `None` for absent.
    Fields(Vec<(String, Option<String>, Option<String>)>),
    /// Text: common start, removed, added, common end (start and end shortened).
    Text {
        /// Kept before the change.
        before: String,
        /// Removed.
        removed: String,
        /// Added.
        added: String,
        /// Kept after.
        after: String,
    },
    /// Binary or too different: sizes only.
    Bytes(usize, usize),
}

/// Compares `old` with `new` (what [`Diff`] says).
pub fn diff(old: &[u8], new: &[u8]) -> Diff {
    if old == new {
        return Diff::Same;
    }
    let (Ok(a), Ok(b)) = (std::str::from_utf8(old), std::str::from_utf8(new)) else {
        return Diff::Bytes(old.len(), new.len());
    };
    if let (Some(Json::Obj(x)), Some(Json::Obj(y))) = (parse(a), parse(b)) {
        let mut changes = Vec::new();
        json_fields("", &x, &y, &mut changes);
        return Diff::Fields(changes);
    }
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let start = a.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let end = a[start..]
        .iter()
        .rev()
        .zip(b[start..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let keep = |s: &[char], tail: bool| -> String {
        const CONTEXT: usize = 12;
        if s.len() <= CONTEXT {
            s.iter().collect()
        } else if tail {
            s[..CONTEXT].iter().collect::<String>() + "…"
        } else {
            "…".to_owned() + &s[s.len() - CONTEXT..].iter().collect::<String>()
        }
    };
    Diff::Text {
        before: keep(&a[..start], false),
        removed: a[start..a.len() - end].iter().collect(),
        added: b[start..b.len() - end].iter().collect(),
        after: keep(&a[a.len() - end..], true),
    }
}

fn json_fields(
    path: &str,
    x: &[(String, Json)],
    y: &[(String, Json)],
    out: &mut Vec<(String, Option<String>, Option<String>)>,
) {
    let show = |v: &Json| {
        let mut s = String::new();
        compact(v, &mut s);
        s
    };
    let at = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    for (k, old) in x {
        match y.iter().find(|(j, _)| j == k) {
            Some((_, new)) if new == old => {}
            Some((_, Json::Obj(n))) if matches!(old, Json::Obj(_)) => {
                if let Json::Obj(o) = old {
                    json_fields(&at(k), o, n, out);
                }
            }
            Some((_, new)) => out.push((at(k), Some(show(old)), Some(show(new)))),
            None => out.push((at(k), Some(show(old)), None)),
        }
    }
    for (k, new) in y {
        if !x.iter().any(|(j, _)| j == k) {
            out.push((at(k), None, Some(show(new))));
        }
    }
}

/// `v` on one line.
pub fn compact(v: &Json, out: &mut String) {
    let mut s = String::new();
    pretty(v, 0, &mut s);
    // Pretty output's line breaks sit only between tokens (strings escape theirs).
    let mut in_string = false;
    let mut escaped = false;
    let mut skip_space = false;
    for c in s.chars() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => escaped = false,
            }
            continue;
        }
        match c {
            '\n' => skip_space = true,
            ' ' if skip_space => {}
            c => {
                skip_space = false;
                if c == '"' {
                    in_string = true;
                }
                out.push(c);
            }
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while matches!(self.s.get(self.i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn eat(&mut self, lit: &[u8]) -> bool {
        if self.s[self.i..].starts_with(lit) {
            self.i += lit.len();
            true
        } else {
            false
        }
    }

    fn value(&mut self, depth: usize) -> Option<Json> {
        if depth > MAX_DEPTH {
            return None;
        }
        self.ws();
        match *self.s.get(self.i)? {
            b'n' => self.eat(b"null").then_some(Json::Null),
            b't' => self.eat(b"true").then_some(Json::Bool(true)),
            b'f' => self.eat(b"false").then_some(Json::Bool(false)),
            b'"' => self.string().map(Json::Str),
            b'[' => {
                self.i += 1;
                let mut items = Vec::new();
                self.ws();
                if self.eat(b"]") {
                    return Some(Json::Arr(items));
                }
                loop {
                    items.push(self.value(depth + 1)?);
                    self.ws();
                    if self.eat(b"]") {
                        return Some(Json::Arr(items));
                    }
                    if !self.eat(b",") {
                        return None;
                    }
                }
            }
            b'{' => {
                self.i += 1;
                let mut fields = Vec::new();
                self.ws();
                if self.eat(b"}") {
                    return Some(Json::Obj(fields));
                }
                loop {
                    self.ws();
                    if self.s.get(self.i) != Some(&b'"') {
                        return None;
                    }
                    let key = self.string()?;
                    self.ws();
                    if !self.eat(b":") {
                        return None;
                    }
                    fields.push((key, self.value(depth + 1)?));
                    self.ws();
                    if self.eat(b"}") {
                        return Some(Json::Obj(fields));
                    }
                    if !self.eat(b",") {
                        return None;
                    }
                }
            }
            b'-' | b'0'..=b'9' => self.number(),
            _ => None,
        }
    }

    fn number(&mut self) -> Option<Json> {
        let start = self.i;
        self.eat(b"-");
        match self.s.get(self.i)? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.eat(b".") {
            if !self.s.get(self.i)?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        if matches!(self.s.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.s.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if !self.s.get(self.i)?.is_ascii_digit() {
                return None;
            }
            self.digits();
        }
        // Kept as written (the grammar above admits only ASCII digits, '-', '+', '.', 'e').
        std::str::from_utf8(&self.s[start..self.i])
            .ok()
            .map(|digits| Json::Num(digits.to_owned()))
    }

    fn digits(&mut self) {
        while self.s.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
    }

    fn string(&mut self) -> Option<String> {
        self.i += 1; // the opening quote
        let mut out = String::new();
        loop {
            let start = self.i;
            while let Some(&b) = self.s.get(self.i) {
                if b == b'"' || b == b'\\' || b < 0x20 {
                    break;
                }
                self.i += 1;
            }
            out.push_str(std::str::from_utf8(&self.s[start..self.i]).ok()?);
            match *self.s.get(self.i)? {
                b'"' => {
                    self.i += 1;
                    return Some(out);
                }
                b'\\' => {
                    self.i += 1;
                    let c = *self.s.get(self.i)?;
                    self.i += 1;
                    match c {
                        b'"' => out.push('"'),
                        b'\\' => out.push('\\'),
                        b'/' => out.push('/'),
                        b'b' => out.push('\u{8}'),
                        b'f' => out.push('\u{c}'),
                        b'n' => out.push('\n'),
                        b'r' => out.push('\r'),
                        b't' => out.push('\t'),
                        b'u' => {
                            let hi = self.hex4()?;
                            let c = if (0xd800..0xdc00).contains(&hi) {
                                if !self.eat(b"\\u") {
                                    return None;
                                }
                                let lo = self.hex4()?;
                                if !(0xdc00..0xe000).contains(&lo) {
                                    return None;
                                }
                                char::from_u32(0x10000 + ((hi - 0xd800) << 10) + (lo - 0xdc00))?
                            } else {
                                char::from_u32(hi)?
                            };
                            out.push(c);
                        }
                        _ => return None,
                    }
                }
                _ => return None, // a control character
            }
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let h = std::str::from_utf8(self.s.get(self.i..self.i + 4)?).ok()?;
        self.i += 4;
        u32::from_str_radix(h, 16).ok()
    }
}

/// Writes `v` indented by two spaces per level.
pub fn pretty(v: &Json, indent: usize, out: &mut String) {
    let pad = |out: &mut String, n: usize| out.extend(std::iter::repeat_n(' ', n * 2));
    match v {
        Json::Null => out.push_str("null"),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Num(n) => out.push_str(n),
        Json::Str(s) => quote(s, out),
        Json::Arr(items) if items.is_empty() => out.push_str("[]"),
        Json::Obj(fields) if fields.is_empty() => out.push_str("{}"),
        Json::Arr(items) => {
            out.push_str("[\n");
            for (i, item) in items.iter().enumerate() {
                pad(out, indent + 1);
                pretty(item, indent + 1, out);
                out.push_str(if i + 1 < items.len() { ",\n" } else { "\n" });
            }
            pad(out, indent);
            out.push(']');
        }
        Json::Obj(fields) => {
            out.push_str("{\n");
            for (i, (k, item)) in fields.iter().enumerate() {
                pad(out, indent + 1);
                quote(k, out);
                out.push_str(": ");
                pretty(item, indent + 1, out);
                out.push_str(if i + 1 < fields.len() { ",\n" } else { "\n" });
            }
            pad(out, indent);
            out.push('}');
        }
    }
}

/// Writes `s` as a JSON string literal (control characters escaped).
pub fn quote(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Offset, 16 bytes in hex, and their printable ASCII, per line.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 4 + 16);
    for (i, line) in bytes.chunks(16).enumerate() {
        let _ = write!(out, "{:08x}  ", i * 16);
        for j in 0..16 {
            match line.get(j) {
                Some(b) => {
                    let _ = write!(out, "{b:02x} ");
                }
                None => out.push_str("   "),
            }
        }
        out.push(' ');
        out.extend(line.iter().map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                b as char
            } else {
                '.'
            }
        }));
        out.push('\n');
    }
    out
}

/// Standard base64 with padding.
pub fn base64(bytes: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_the_best_format() {
        assert_eq!(detect(br#"{"t": 21.5}"#), Format::Json);
        assert_eq!(detect(b" [1, 2]"), Format::Json);
        assert_eq!(detect(b"21.5"), Format::Text);
        assert_eq!(detect(b"{not json"), Format::Text);
        assert_eq!(detect("line 1\nline 2 ✓".as_bytes()), Format::Text);
        assert_eq!(detect(&[0xff, 0x00, 0x10]), Format::Hex);
        assert_eq!(detect(b"a\x00b"), Format::Hex);
    }

    #[test]
    fn json_is_pretty_printed_and_strict() {
        let v = parse(r#"{"a":[1,-2.5e3,true,null],"b":{"c":"x\"\u00e9\ud83d\ude00"},"d":[]}"#)
            .unwrap();
        let mut out = String::new();
        pretty(&v, 0, &mut out);
        assert_eq!(
            out,
            "{\n  \"a\": [\n    1,\n    -2.5e3,\n    true,\n    null\n  ],\n  \"b\": {\n    \"c\": \"x\\\"é😀\"\n  },\n  \"d\": []\n}"
        );
        for bad in [
            "{",
            "[1,]",
            "{\"a\" 1}",
            "01",
            "1.",
            "-",
            "\"\\x\"",
            "\"a\nb\"",
            "tru",
            "[] x",
            "\"\\ud83d\"",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
        // Nesting beyond the limit is refused, not a stack overflow.
        let deep = "[".repeat(100_000);
        assert_eq!(parse(&deep), None);
        assert_eq!(render(b"{oops", Format::Json), "(not JSON)\n{oops");
    }

    #[test]
    fn hex_base64_and_bad_text_never_fail() {
        // Ten missing bytes' columns pad the ASCII column into place.
        assert_eq!(
            hex(b"MQTT\x00\x01"),
            format!("00000000  4d 51 54 54 00 01 {} MQTT..\n", " ".repeat(30))
        );
        assert_eq!(base64(b"Kite!"), "S2l0ZSE=");
        assert_eq!(base64(b""), "");
        assert!(render(&[0xc3, 0x28], Format::Text).starts_with("(not UTF-8"));
    }

    #[test]
    fn previews_are_one_line_and_cut() {
        assert_eq!(preview(b"a\nb", 3, 10), "a b");
        assert_eq!(preview(b"abcdef", 6, 3), "abc…");
        assert_eq!(preview(b"abc", 500, 10), "abc…");
        // A preview cut in the middle of "é".
        assert_eq!(preview(&"aé".as_bytes()[..2], 3, 10), "a…");
        assert_eq!(preview(&[0xff, 0xfe], 2, 30), "ff fe ");
    }

    #[test]
    fn typed_bytes_are_read_or_the_mistake_is_located() {
        assert_eq!(from_hex("4d 51:54-54 0x00 01").unwrap(), b"MQTT\x00\x01");
        assert_eq!(from_hex("").unwrap(), b"");
        assert!(
            from_hex("4d5")
                .unwrap_err()
                .contains("character 3 has no pair")
        );
        assert!(from_hex("4g").unwrap_err().contains("'g' at character 2"));
        assert_eq!(from_base64("S2l0ZSE=").unwrap(), b"Kite!");
        assert_eq!(from_base64("S2l0 ZSE").unwrap(), b"Kite!");
        assert_eq!(from_base64(&base64(&[0xfb, 0xff])).unwrap(), [0xfb, 0xff]);
        assert!(from_base64("S2l0Z").unwrap_err().contains("lone character"));
        assert!(from_base64("S2=l").unwrap_err().contains("after '='"));
        assert!(
            from_base64("S2*")
                .unwrap_err()
                .contains("'*' at character 3")
        );
        assert_eq!(json_error_at("{\"a\": 1}"), None);
        assert_eq!(json_error_at("{\n  \"a\": tru\n}"), Some((2, 8)));
        assert_eq!(json_error_at("[1] x"), Some((1, 5)));
    }

    #[test]
    fn diffs_show_what_changed() {
        assert_eq!(diff(b"1", b"1"), Diff::Same);
        assert_eq!(
            diff(
                br#"{"t": 20, "s": {"ok": true, "n": 1}, "gone": 1}"#,
                br#"{"t": 21, "s": {"ok": true, "n": [2]}, "new": "x"}"#
            ),
            Diff::Fields(vec![
                ("t".into(), Some("20".into()), Some("21".into())),
                ("s.n".into(), Some("1".into()), Some("[2]".into())),
                ("gone".into(), Some("1".into()), None),
                ("new".into(), None, Some("\"x\"".into())),
            ])
        );
        assert_eq!(
            diff(
                b"pump running at 1200 rpm since boot",
                b"pump running at 1350 rpm since boot"
            ),
            Diff::Text {
                before: "…running at 1".into(),
                removed: "20".into(),
                added: "35".into(),
                after: "0 rpm since …".into(),
            }
        );
        assert_eq!(diff(&[0xff], &[0xfe, 0]), Diff::Bytes(1, 2));
        let mut s = String::new();
        compact(&parse("{\"a\": [1, \"x\\n y\"]}").unwrap(), &mut s);
        assert_eq!(s, "{\"a\": [1,\"x\\n y\"]}");
    }

    #[test]
    fn numbers_for_charts() {
        assert_eq!(number(b" 21.5 "), Some(21.5));
        assert_eq!(
            number(br#"{"unit": "C", "temp": 21.5, "hum": 40}"#),
            Some(21.5)
        );
        assert_eq!(number(b"on"), None);
        assert_eq!(number(b"NaN"), None);
        assert_eq!(number(b"[1]"), None);
    }
}
