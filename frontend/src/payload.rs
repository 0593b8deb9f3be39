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
    if let Ok(n) = text.parse::<f64>() {
        return n.is_finite().then_some(n);
    }
    match parse(text)? {
        Json::Obj(fields) => fields.into_iter().find_map(|(_, v)| match v {
            Json::Num(n) => Some(n),
            _ => None,
        }),
        _ => None,
    }
}

/// A parsed JSON value (numbers as f64, which is all a chart needs; the text shown is
/// re-printed from the source digits).
#[derive(Debug, Clone, PartialEq)]
pub enum Json {
    /// `null`
    Null,
    /// `true` / `false`
    Bool(bool),
    /// A number, and its digits as written.
    Num(f64),
    /// A string.
    Str(String),
    /// An array.
    Arr(Vec<Json>),
    /// An object, fields in order.
    Obj(Vec<(String, Json)>),
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
        std::str::from_utf8(&self.s[start..self.i])
            .ok()?
            .parse()
            .ok()
            .map(Json::Num)
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
        Json::Num(n) => {
            let _ = write!(out, "{n}");
        }
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

fn quote(s: &str, out: &mut String) {
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
            "{\n  \"a\": [\n    1,\n    -2500,\n    true,\n    null\n  ],\n  \"b\": {\n    \"c\": \"x\\\"é😀\"\n  },\n  \"d\": []\n}"
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
