//! Text that came from outside (the API's messages, bodies and headers, or an
//! old checkpoint holding them) made safe to show.
//!
//! Such text reaches terminals, the journal and monitoring. Raw, an ESC could
//! drive a terminal, a CR/LF could forge a log line (a line starting `<0>`
//! would be filed by journald as an emergency), and a megabyte of it would bury
//! everything else. [`shown`] is the one function every such text goes
//! through: control characters (C0, DEL, C1), line and paragraph separators
//! and bidirectional overrides become `\u{..}` escapes, and the result is
//! capped at [`MAX_CHARS`] characters.

/// How many characters of outside text a message shows.
pub const MAX_CHARS: usize = 200;

/// The text with every control character escaped, at most [`MAX_CHARS`]
/// characters of it, then `...` and the full length in bytes.
pub fn shown(text: &str) -> String {
    capped(text, text.len(), MAX_CHARS)
}

/// [`shown`] with a longer cap, for our own messages that quote outside
/// text (already capped) and may be longer than one quote.
pub fn shown_up_to(text: &str, max_chars: usize) -> String {
    capped(text, text.len(), max_chars)
}

/// [`shown`] for bytes that may not be UTF-8 (invalid sequences become U+FFFD).
pub fn shown_bytes(bytes: &[u8]) -> String {
    // Decoding more than the cap would show nothing more.
    let head = &bytes[..bytes.len().min(MAX_CHARS * 4)];
    capped(&String::from_utf8_lossy(head), bytes.len(), MAX_CHARS)
}

/// Escapes the first `max_chars` characters of `text`, the start of
/// something `total_bytes` long.
fn capped(text: &str, total_bytes: usize, max_chars: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max_chars * 2));
    let mut chars = text.chars();
    for c in chars.by_ref().take(max_chars) {
        if needs_escape(c) {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    if chars.next().is_some() || total_bytes > text.len() {
        out.push_str(&format!("... ({total_bytes} bytes)"));
    }
    out
}

/// Characters a terminal acts on or that reorder what it shows: controls
/// (C0, DEL, C1), line separators, bidirectional overrides and isolates.
pub fn needs_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_visibly() {
        assert_eq!(
            shown("a\u{1b}[31mb\u{7}\r\n<0>c\td\u{7f}\u{85}\u{2028}"),
            "a\\u{1b}[31mb\\u{7}\\u{d}\\u{a}<0>c\\u{9}d\\u{7f}\\u{85}\\u{2028}"
        );
        assert_eq!(shown("plain text, é"), "plain text, é");
    }

    #[test]
    fn long_text_is_cut_with_its_length() {
        let long = "x".repeat(1000);
        assert_eq!(shown(&long), format!("{}... (1000 bytes)", "x".repeat(200)));
        let bytes = vec![b'y'; 5000];
        assert_eq!(
            shown_bytes(&bytes),
            format!("{}... (5000 bytes)", "y".repeat(200))
        );
        assert_eq!(shown_bytes(b"ok\xff"), "ok\u{fffd}");
    }
}
