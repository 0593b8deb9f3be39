//! The numbers of a payload, found once when it is recorded: a payload that is a number (or
//! `true`/`false`), and each number or boolean of a JSON object or array, by its JSON Pointer
//! (RFC 6901): `{"env": {"temp": 21.5}}` gives `/env/temp` = 21.5. The payload itself is the
//! empty pointer `""`.

/// Fields indexed per message at most; the rest of a wide document is kept (the message is
/// recorded whole) but not charted.
pub const MAX_FIELDS: usize = 32;

/// A JSON Pointer longer than this is not indexed.
pub const MAX_POINTER: usize = 256;

/// The numbers of `payload`, appended to `out` as (pointer, value), at most [`MAX_FIELDS`].
pub fn numbers(payload: &[u8], out: &mut Vec<(String, f64)>) {
    let text = payload.trim_ascii();
    match text.first() {
        Some(b'{' | b'[') => json_numbers(text, out),
        Some(_) => {
            if let Some(v) = plain_number(text) {
                out.push((String::new(), v));
            }
        }
        None => {}
    }
}

/// A payload that is one number in JSON's syntax (`21.5`, `-3`, `1e3`), or `true`/`false`
/// (1 and 0).
fn plain_number(text: &[u8]) -> Option<f64> {
    match text {
        b"true" => return Some(1.0),
        b"false" => return Some(0.0),
        _ => {}
    }
    if !json_number_syntax(text) {
        return None;
    }
    let v: f64 = std::str::from_utf8(text).ok()?.parse().ok()?;
    v.is_finite().then_some(v)
}

/// RFC 8259's number: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`.
fn json_number_syntax(t: &[u8]) -> bool {
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < t.len() && t[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    if t.get(i) == Some(&b'-') {
        i += 1;
    }
    match t.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => {
            digits(&mut i);
        }
        _ => return false,
    }
    if t.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(t.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(t.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == t.len()
}

fn json_numbers(text: &[u8], out: &mut Vec<(String, f64)>) {
    // serde_json stops at 128 levels of nesting: a deeper document is not indexed.
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(text) else {
        return;
    };
    // Depth-first without recursion: (pointer, value).
    let mut stack: Vec<(String, &serde_json::Value)> = vec![(String::new(), &doc)];
    while let Some((pointer, value)) = stack.pop() {
        if out.len() >= MAX_FIELDS {
            return;
        }
        match value {
            serde_json::Value::Number(n) => {
                if let Some(v) = n.as_f64().filter(|v| v.is_finite()) {
                    out.push((pointer, v));
                }
            }
            serde_json::Value::Bool(b) => out.push((pointer, f64::from(u8::from(*b)))),
            serde_json::Value::Object(map) => {
                // Reversed, so that fields come out in the map's order.
                for (key, v) in map.iter().rev() {
                    let p = child(&pointer, key);
                    if p.len() <= MAX_POINTER {
                        stack.push((p, v));
                    }
                }
            }
            serde_json::Value::Array(items) => {
                for (i, v) in items.iter().enumerate().rev() {
                    let p = format!("{pointer}/{i}");
                    if p.len() <= MAX_POINTER {
                        stack.push((p, v));
                    }
                }
            }
            serde_json::Value::String(_) | serde_json::Value::Null => {}
        }
    }
}

/// `pointer` + `/` + `key` escaped (`~` → `~0`, `/` → `~1`).
fn child(pointer: &str, key: &str) -> String {
    let mut p = String::with_capacity(pointer.len() + key.len() + 1);
    p.push_str(pointer);
    p.push('/');
    for c in key.chars() {
        match c {
            '~' => p.push_str("~0"),
            '/' => p.push_str("~1"),
            c => p.push(c),
        }
    }
    p
}

/// Whether `field` is a JSON Pointer: empty, or `/`-separated tokens with `~` only in `~0`/`~1`.
pub fn check_pointer(field: &str) -> Result<(), String> {
    if field.is_empty() {
        return Ok(());
    }
    if !field.starts_with('/') {
        return Err(format!(
            "{field:?} is not a JSON Pointer: it starts with \"/\" (e.g. \"/temp\", \"/env/temp\")"
        ));
    }
    if field.len() > MAX_POINTER {
        return Err(format!(
            "a JSON Pointer of {} bytes: at most {MAX_POINTER}",
            field.len()
        ));
    }
    let b = field.as_bytes();
    for (i, &c) in b.iter().enumerate() {
        if c == b'~' && !matches!(b.get(i + 1), Some(b'0' | b'1')) {
            return Err(format!(
                "{field:?} is not a JSON Pointer: \"~\" is written \"~0\" and \"/\" inside a key \"~1\""
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn of(payload: &str) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        numbers(payload.as_bytes(), &mut out);
        out
    }

    #[test]
    fn plain_payloads() {
        assert_eq!(of("21.5"), vec![(String::new(), 21.5)]);
        assert_eq!(of(" -3e2\n"), vec![(String::new(), -300.0)]);
        assert_eq!(of("true"), vec![(String::new(), 1.0)]);
        assert_eq!(of("0"), vec![(String::new(), 0.0)]);
        for not in [
            "", "abc", "1.", ".5", "01", "+1", "NaN", "inf", "1e", "0x10", "12 13",
        ] {
            assert_eq!(of(not), vec![], "{not:?}");
        }
    }

    #[test]
    fn json_fields_by_pointer() {
        // An object's fields come in serde_json's map order: by key, or as written when
        // another crate of the build turns on its `preserve_order`. Compared sorted.
        let mut got = of(
            r#"{"temp": 21.5, "ok": true, "name": "x", "env": {"a/b": 1, "m~n": 2}, "v": [3, {"w": 4}]}"#,
        );
        got.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(
            got,
            vec![
                ("/env/a~1b".into(), 1.0),
                ("/env/m~0n".into(), 2.0),
                ("/ok".into(), 1.0),
                ("/temp".into(), 21.5),
                ("/v/0".into(), 3.0),
                ("/v/1/w".into(), 4.0),
            ]
        );
        assert_eq!(of("[1, 2]"), vec![("/0".into(), 1.0), ("/1".into(), 2.0)]);
        assert_eq!(of("{broken"), vec![]);
    }

    #[test]
    fn bounded() {
        let wide: String = format!(
            "{{{}}}",
            (0..100)
                .map(|i| format!("\"f{i}\": {i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(of(&wide).len(), MAX_FIELDS);
        // Deeper than serde_json's limit: not indexed, and no stack overflow.
        let deep = format!("{}1{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(of(&deep), vec![]);
    }

    #[test]
    fn pointers_checked() {
        assert!(check_pointer("").is_ok());
        assert!(check_pointer("/a~0b/c~1d/0").is_ok());
        assert!(check_pointer("temp").is_err());
        assert!(check_pointer("/a~2").is_err());
        assert!(check_pointer("/a~").is_err());
    }
}
