//! Text logs that a client cannot forge: every control character in a log line — a newline in
//! a client id, a carriage return in a topic, a terminal escape in a user name — is written
//! escaped (`\n`, `\r`, `\x1b`), so one event is always one line and nothing a client sends
//! moves a terminal's cursor. Only the event's own final newline, and (when colours are on)
//! the colour codes of the formatter's own style, `ESC [ digits ; m`, pass through.
//!
//! It escapes the whole line, not chosen fields, so a new log call that prints a client's
//! string raw is covered too. JSON logs escape strings themselves.

use std::io::{self, Write};

/// Writes each log event (one `write` call: the formatter writes an event at once) escaped.
#[derive(Debug)]
pub struct Escaping<W> {
    inner: W,
    /// Whether the formatter's SGR colour codes are kept.
    ansi: bool,
}

impl<W> Escaping<W> {
    /// `ansi`: whether the formatter writes colours (then SGR codes are kept, nothing else).
    pub fn new(inner: W, ansi: bool) -> Self {
        Self { inner, ansi }
    }
}

/// The length of an SGR sequence (`ESC [ 0-9; ... m`) at the start of `b`, if one is there.
fn sgr_len(b: &[u8]) -> Option<usize> {
    if b.get(1) != Some(&b'[') {
        return None;
    }
    let params = b[2..]
        .iter()
        .take_while(|c| c.is_ascii_digit() || **c == b';')
        .count();
    (b.get(2 + params) == Some(&b'm')).then_some(3 + params)
}

/// `line` with its control characters escaped; a final `\n` is kept as it is.
pub fn escape(line: &[u8], ansi: bool) -> Vec<u8> {
    let (body, end) = match line.split_last() {
        Some((b'\n', body)) => (body, &b"\n"[..]),
        _ => (line, &b""[..]),
    };
    let mut out = Vec::with_capacity(line.len() + 8);
    let mut i = 0;
    while i < body.len() {
        let c = body[i];
        if c == 0x1b
            && ansi
            && let Some(n) = sgr_len(&body[i..])
        {
            out.extend_from_slice(&body[i..i + n]);
            i += n;
            continue;
        }
        match c {
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.push(b'\t'),
            0..=0x1f | 0x7f => {
                let _ = write!(out, "\\x{c:02x}");
            }
            _ => out.push(c),
        }
        i += 1;
    }
    out.extend_from_slice(end);
    out
}

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write_all(&escape(buf, self.ansi))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str, ansi: bool) -> String {
        String::from_utf8(escape(s.as_bytes(), ansi)).unwrap()
    }

    #[test]
    fn a_client_cannot_start_a_line_or_move_the_cursor() {
        assert_eq!(
            esc("client_id=a\n2026-01-01 INFO forged\n", false),
            "client_id=a\\n2026-01-01 INFO forged\n"
        );
        assert_eq!(esc("x\r\x1b[2Ky\x00\x7f", false), "x\\r\\x1b[2Ky\\x00\\x7f");
        // With colours: the formatter's SGR codes stay; a cursor movement does not.
        assert_eq!(
            esc("\x1b[32mINFO\x1b[0m a\x1b[1Ab\n", true),
            "\x1b[32mINFO\x1b[0m a\\x1b[1Ab\n"
        );
        assert_eq!(esc("tab\tand é", false), "tab\tand é");
        assert_eq!(esc("\x1b", true), "\\x1b");
    }
}
