//! What a 200 answer holds: a list page in its envelope, or one object.
//!
//! A body is checked as UTF-8 once, whole, and parsed once; items are byte
//! ranges of it, so nothing is copied until it is written. Invalid UTF-8 (one
//! bad byte in one item) must not cost the answer: it is replaced by U+FFFD,
//! copying the body only then, and the caller is told so. Likewise a raw
//! control character inside a string (a tab or NUL that the server's encoder
//! did not escape, which JSON forbids) must not cost the page: when the page
//! does not parse, such characters are written as `\u00XX` escapes (the very
//! characters, now valid JSON) and the page parsed again.
//!
//! The envelope's `page_number` is kept, so that a page can be checked to be
//! the one asked for (a proxy that drops the `page` parameter answers page 1
//! every time). Only an integer counts: anything else is taken as absent,
//! which is no reason to refuse a page.

use serde::Deserialize;
use serde_json::value::RawValue;
use std::ops::Range;

/// The envelope of a list page, borrowed from the response body.
#[derive(Debug, Deserialize)]
struct Envelope<'a> {
    /// Borrowed as it came, read as an integer or not at all.
    #[serde(borrow)]
    page_number: Option<&'a RawValue>,
    total_pages: Option<u64>,
    total_number_of_items: Option<u64>,
    #[serde(borrow)]
    page_items: Vec<&'a RawValue>,
}

/// One list page, owning its body.
#[derive(Debug)]
pub struct Page {
    /// Checked UTF-8 once, so items are sliced out without checking again.
    body: String,
    items: Vec<Range<usize>>,
    /// The page the answer says it is, when it says so (as an integer).
    pub page_number: Option<u64>,
    pub total_pages: Option<u64>,
    pub total_number_of_items: Option<u64>,
    /// The answer held invalid UTF-8, replaced by U+FFFD: the caller says so.
    pub replaced_invalid_utf8: bool,
    /// How many raw control characters inside strings were escaped.
    pub escaped_controls: usize,
}

impl Page {
    /// Each item's JSON text, in the order the API sent them.
    pub fn items(&self) -> impl Iterator<Item = &str> {
        self.items.iter().map(|range| &self.body[range.clone()])
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The body's buffer, for the next answer to be read into.
    pub(super) fn into_buffer(self) -> Vec<u8> {
        self.body.into_bytes()
    }
}

/// The one JSON object a lookup answers, owning its body.
#[derive(Debug)]
pub struct Object {
    body: String,
    /// The object's text within `body`, without surrounding whitespace.
    range: Range<usize>,
    /// The answer held invalid UTF-8, replaced by U+FFFD: the caller says so.
    pub replaced_invalid_utf8: bool,
}

impl Object {
    /// The object's JSON text, as the API sent it.
    pub fn json(&self) -> &str {
        &self.body[self.range.clone()]
    }
}

/// The body as text, and whether invalid UTF-8 had to be replaced.
fn text(body: Vec<u8>) -> (String, bool) {
    match String::from_utf8(body) {
        Ok(text) => (text, false),
        Err(err) => (String::from_utf8_lossy(err.as_bytes()).into_owned(), true),
    }
}

/// Where `part`, borrowed from `whole`, lies in it.
fn range_in(whole: &str, part: &str) -> Range<usize> {
    let start = part.as_ptr() as usize - whole.as_ptr() as usize;
    start..start + part.len()
}

/// Parses a list answer. On failure, gives back why and the body, for the
/// message.
pub(super) fn parse_page(body: Vec<u8>) -> Result<Page, (String, Vec<u8>)> {
    let (text, replaced_invalid_utf8) = text(body);
    let page = |body: String, parts: EnvelopeParts, escaped_controls| Page {
        body,
        items: parts.items,
        page_number: parts.page_number,
        total_pages: parts.total_pages,
        total_number_of_items: parts.total_number_of_items,
        replaced_invalid_utf8,
        escaped_controls,
    };
    match read_envelope(&text) {
        Ok(parts) => Ok(page(text, parts, 0)),
        // Copied only when the page does not parse as it came; the error
        // and the body shown are the answer's own.
        Err(err) => {
            let (escaped, count) = escape_raw_controls(&text);
            match (count > 0).then(|| read_envelope(&escaped)) {
                Some(Ok(parts)) => Ok(page(escaped, parts, count)),
                _ => Err((err.to_string(), text.into_bytes())),
            }
        }
    }
}

/// Where a page's items lie in `text`, and what its envelope says.
struct EnvelopeParts {
    items: Vec<Range<usize>>,
    page_number: Option<u64>,
    total_pages: Option<u64>,
    total_number_of_items: Option<u64>,
}

fn read_envelope(text: &str) -> Result<EnvelopeParts, serde_json::Error> {
    let envelope = serde_json::from_str::<Envelope>(text)?;
    let items = envelope
        .page_items
        .iter()
        .map(|item| range_in(text, item.get()))
        .collect();
    Ok(EnvelopeParts {
        items,
        // `null`, `"2"` or `2.0` are not worth refusing the page for.
        page_number: envelope.page_number.and_then(|n| n.get().parse().ok()),
        total_pages: envelope.total_pages,
        total_number_of_items: envelope.total_number_of_items,
    })
}

/// `text` with every control character inside a JSON string (U+0000 to
/// U+001F, which JSON allows only escaped) written as its `\u00XX` escape,
/// and how many there were. Outside strings they are left: there they are
/// whitespace or a real syntax error.
fn escape_raw_controls(text: &str) -> (String, usize) {
    let mut out = String::with_capacity(text.len() + 64);
    let (mut in_string, mut after_backslash, mut count) = (false, false, 0);
    for c in text.chars() {
        if in_string && !after_backslash && c < '\u{20}' {
            out.push_str(&format!("\\u{:04x}", c as u32));
            count += 1;
            continue;
        }
        if in_string {
            if after_backslash {
                after_backslash = false;
            } else if c == '\\' {
                after_backslash = true;
            } else if c == '"' {
                in_string = false;
            }
        } else if c == '"' {
            in_string = true;
        }
        out.push(c);
    }
    (out, count)
}

/// Parses a lookup's answer, which must be one JSON object. On failure, gives
/// back why and the body, for the message.
pub(super) fn parse_object(body: Vec<u8>) -> Result<Object, (String, Vec<u8>)> {
    let (text, replaced_invalid_utf8) = text(body);
    let range = match serde_json::from_str::<&RawValue>(&text) {
        Ok(value) if value.get().starts_with('{') => range_in(&text, value.get()),
        Ok(_) => return Err(("not a JSON object".to_string(), text.into_bytes())),
        Err(err) => return Err((err.to_string(), text.into_bytes())),
    };
    Ok(Object {
        body: text,
        range,
        replaced_invalid_utf8,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_keeps_each_item_byte_for_byte() {
        let body = br#"{"total_pages":2,"page_items":[ {"a" : 1},{"b":[2]} ]}"#;
        let page = parse_page(body.to_vec()).unwrap();
        assert_eq!(
            page.items().collect::<Vec<_>>(),
            [r#"{"a" : 1}"#, r#"{"b":[2]}"#]
        );
        assert_eq!(page.total_pages, Some(2));
        assert_eq!(page.total_number_of_items, None);
        assert!(!page.replaced_invalid_utf8);
    }

    #[test]
    fn a_page_says_its_number_only_as_an_integer() {
        let number = |envelope: &str| {
            parse_page(envelope.as_bytes().to_vec())
                .unwrap()
                .page_number
        };
        assert_eq!(number(r#"{"page_number":2,"page_items":[]}"#), Some(2));
        assert_eq!(number(r#"{"page_items":[]}"#), None);
        // Not worth refusing the page for: taken as absent.
        for odd in ["null", r#""2""#, "2.0", "-1", "{}"] {
            let envelope = format!(r#"{{"page_number":{odd},"page_items":[{{"a":1}}]}}"#);
            let page = parse_page(envelope.into_bytes()).unwrap();
            assert_eq!((page.page_number, page.len()), (None, 1), "{odd}");
        }
    }

    #[test]
    fn raw_control_characters_in_strings_cost_nothing_of_the_page() {
        let body = b"{\"page_items\":[{\"a\":\"x\ty\\\"\x00\"},\n{\"b\":1}]}".to_vec();
        let page = parse_page(body).unwrap();
        assert_eq!(
            page.items().collect::<Vec<_>>(),
            [r#"{"a":"x\u0009y\"\u0000"}"#, r#"{"b":1}"#]
        );
        assert_eq!(page.escaped_controls, 2);
        // Broken for another reason too: the answer's own error and bytes.
        let cut = b"{\"page_items\":[{\"a\":\"x\ty\"}".to_vec();
        let (why, body) = parse_page(cut.clone()).unwrap_err();
        assert!(why.contains("control character"), "{why}");
        assert_eq!(body, cut);
    }

    #[test]
    fn invalid_utf8_costs_one_character_not_the_page() {
        let body = b"{\"page_items\":[{\"name\":\"a\xffb\"}]}".to_vec();
        let page = parse_page(body).unwrap();
        assert_eq!(page.items().next(), Some("{\"name\":\"a\u{fffd}b\"}"));
        assert!(page.replaced_invalid_utf8);
    }

    #[test]
    fn a_page_without_items_is_not_a_page() {
        let (why, body) = parse_page(br#"{"total_pages":1}"#.to_vec()).unwrap_err();
        assert!(why.contains("page_items"), "{why}");
        assert_eq!(body, br#"{"total_pages":1}"#);
    }

    #[test]
    fn an_object_is_its_text_without_surrounding_whitespace() {
        let object = parse_object(b" {\"Id\" : \"x\"}\n".to_vec()).unwrap();
        assert_eq!(object.json(), "{\"Id\" : \"x\"}");
    }

    #[test]
    fn a_lookup_answer_that_is_no_object_is_refused() {
        for body in [&b"[1]"[..], b"\"text\"", b"{\"a\":", b""] {
            assert!(parse_object(body.to_vec()).is_err(), "{body:?}");
        }
    }
}
