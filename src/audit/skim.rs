//! One JSON Lines line read for the few fields the audit needs, in one pass that also
//! checks the whole line is JSON. serde_json's derive costs twice as much here, as it
//! hands every key of a 20-field document through its visitor machinery; this is what
//! lets `audit --file` read a million appointments a second on one core. It answers
//! only when sure: anything unusual (a key with escapes, a field twice, a number in a
//! read field that is not a plain integer, deep nesting, any invalid JSON) is left to
//! serde_json, which then reads the line or says what is wrong with it.

use std::borrow::Cow;

use crate::watch::kloqo::{Json, SlotFields};

/// Deeper than this is left to serde_json (whose own limit is 128).
const MAX_DEPTH: u32 = 64;

/// Fills `fields` from `line` if it is one valid JSON object, in UTF-8, this reader is
/// sure about; `None` leaves `fields` partly filled, for serde_json to overwrite. (Filled
/// in place: a `SlotFields` is 288 bytes, and copying it around cost 2 % of a line.)
pub fn skim<'a>(line: &'a [u8], fields: &mut SlotFields<'a>) -> Option<()> {
    // A CRLF file's lines end in `\r`. Other control characters are rare: whitespace
    // tabs, or errors inside strings. Refusing them here leaves strings only `"` and
    // `\` to look for.
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    if has_control_character(line) {
        return None;
    }
    let text = std::str::from_utf8(line).ok()?;
    let mut skim = Skim {
        text,
        bytes: line,
        at: 0,
    };
    // The fields read met so far (even as `null`), a bit each: each may come once.
    let mut met = 0u16;
    skim.whitespace();
    skim.expect(b'{')?;
    skim.whitespace();
    if skim.bytes.get(skim.at) == Some(&b'}') {
        skim.at += 1;
    } else {
        loop {
            let (name, escaped) = skim.string()?;
            if escaped {
                return None;
            }
            skim.whitespace();
            skim.expect(b':')?;
            skim.whitespace();
            match field_index(name.as_bytes()) {
                Some(index) => {
                    if met & (1 << index) != 0 {
                        return None;
                    }
                    met |= 1 << index;
                    *fields.field_at(index)? = skim.field_value()?;
                }
                None => skim.value(0)?,
            }
            skim.whitespace();
            match skim.next()? {
                b',' => skim.whitespace(),
                b'}' => break,
                _ => return None,
            }
        }
    }
    skim.whitespace();
    (skim.at == skim.bytes.len()).then_some(())
}

/// Which of [`SlotFields::NAMES`] `name` is. By length first: every comparison left is
/// then of a known size, which compiles to a load or two rather than a call.
fn field_index(name: &[u8]) -> Option<usize> {
    let index = match name {
        b"id" => 0,
        b"clinicId" => 1,
        b"doctorId" => 2,
        b"date" => 3,
        b"slotIndex" => 4,
        b"status" => 5,
        b"tokenNumber" => 6,
        b"bookedVia" => 7,
        b"cancelledByBreak" => 8,
        b"doctor" => 9,
        _ => return None,
    };
    Some(index)
}

/// A line being read, as text and as bytes; `at` is the next byte.
struct Skim<'a> {
    text: &'a str,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Skim<'a> {
    fn next(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.at)?;
        self.at += 1;
        Some(byte)
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        (self.next()? == byte).then_some(())
    }

    fn whitespace(&mut self) {
        while matches!(self.bytes.get(self.at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// A read field's value; `null` is absent, as serde reads an `Option`.
    fn field_value(&mut self) -> Option<Option<Json<'a>>> {
        let start = self.at;
        let json = match *self.bytes.get(start)? {
            b'"' => {
                let (text, escaped) = self.string()?;
                if escaped {
                    // Rare: let serde_json undo the escapes.
                    let quoted = &self.bytes[start..self.at];
                    Json::Str(Cow::Owned(serde_json::from_slice(quoted).ok()?))
                } else {
                    Json::Str(Cow::Borrowed(text))
                }
            }
            b'-' | b'0'..=b'9' => {
                if !self.number()? {
                    return None;
                }
                Json::Int(self.text.get(start..self.at)?.parse().ok()?)
            }
            b'{' | b'[' => {
                self.value(0)?;
                if self.bytes[start] == b'{' {
                    Json::Object
                } else {
                    Json::Array
                }
            }
            _ => match self.literal()? {
                Literal::True => Json::Bool(true),
                Literal::False => Json::Bool(false),
                Literal::Null => return Some(None),
            },
        };
        Some(Some(json))
    }

    /// Checks one value of any kind and steps over it.
    fn value(&mut self, depth: u32) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match *self.bytes.get(self.at)? {
            b'"' => self.string().map(drop),
            b'-' | b'0'..=b'9' => self.number().map(drop),
            b'{' => self.container(b'}', depth, true),
            b'[' => self.container(b']', depth, false),
            _ => self.literal().map(drop),
        }
    }

    /// An object (`keyed`) or an array, from its opening bracket.
    fn container(&mut self, close: u8, depth: u32, keyed: bool) -> Option<()> {
        self.at += 1;
        self.whitespace();
        if self.bytes.get(self.at) == Some(&close) {
            self.at += 1;
            return Some(());
        }
        loop {
            if keyed {
                self.string()?;
                self.whitespace();
                self.expect(b':')?;
                self.whitespace();
            }
            self.value(depth + 1)?;
            self.whitespace();
            match self.next()? {
                b',' => self.whitespace(),
                byte if byte == close => return Some(()),
                _ => return None,
            }
        }
    }

    /// A string from its opening quote: its text (escapes as written) and whether it
    /// has escapes. The line is known to be UTF-8 with no control characters.
    /// Inlined: it runs some forty times a line, mostly on short strings.
    #[inline(always)]
    fn string(&mut self) -> Option<(&'a str, bool)> {
        if self.next()? != b'"' {
            return None;
        }
        let start = self.at;
        let mut escaped = false;
        loop {
            self.at += quote_or_backslash(&self.bytes[self.at..])?;
            if self.bytes[self.at] == b'"' {
                self.at += 1;
                // Quotes are ASCII, so both ends are character boundaries.
                return Some((self.text.get(start..self.at - 1)?, escaped));
            }
            escaped = true;
            self.escape()?;
        }
    }

    /// An escape, from its backslash: `\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`
    /// or `\u` and four hex digits.
    fn escape(&mut self) -> Option<()> {
        self.at += 1;
        match self.next()? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(()),
            b'u' => {
                let hex = self.bytes.get(self.at..self.at + 4)?;
                self.at += 4;
                hex.iter().all(u8::is_ascii_hexdigit).then_some(())
            }
            _ => None,
        }
    }

    /// A number as JSON writes it; whether it is a plain integer (no fraction or
    /// exponent).
    fn number(&mut self) -> Option<bool> {
        if self.bytes.get(self.at) == Some(&b'-') {
            self.at += 1;
        }
        match self.next()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        let mut integer = true;
        if self.bytes.get(self.at) == Some(&b'.') {
            self.at += 1;
            self.digit()?;
            integer = false;
        }
        if matches!(self.bytes.get(self.at), Some(b'e' | b'E')) {
            self.at += 1;
            if matches!(self.bytes.get(self.at), Some(b'+' | b'-')) {
                self.at += 1;
            }
            self.digit()?;
            integer = false;
        }
        Some(integer)
    }

    /// One digit or more.
    fn digit(&mut self) -> Option<()> {
        self.next()?.is_ascii_digit().then_some(())?;
        self.digits();
        Some(())
    }

    fn digits(&mut self) {
        while self.bytes.get(self.at).is_some_and(u8::is_ascii_digit) {
            self.at += 1;
        }
    }

    fn literal(&mut self) -> Option<Literal> {
        let rest = &self.bytes[self.at..];
        let (literal, len) = if rest.starts_with(b"true") {
            (Literal::True, 4)
        } else if rest.starts_with(b"false") {
            (Literal::False, 5)
        } else if rest.starts_with(b"null") {
            (Literal::Null, 4)
        } else {
            return None;
        };
        self.at += len;
        Some(literal)
    }
}

enum Literal {
    True,
    False,
    Null,
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// The high bit of each byte of `word` below `n` (n ≤ 0x80), and maybe of bytes after
/// such a byte (a borrow), never of a byte before the first one: the lowest flagged
/// byte is exact. Bytes of 0x80 and up are never flagged.
fn bytes_below(word: u64, n: u64) -> u64 {
    word.wrapping_sub(ONES * n) & !word & HIGH
}

/// Whether any byte is below 0x20. Eight at a time, and without stopping early, which
/// lets the compiler do two words at once: lines are hundreds of bytes, and a control
/// character is rare.
fn has_control_character(bytes: &[u8]) -> bool {
    let (words, tail) = bytes.as_chunks::<8>();
    let flagged = words.iter().fold(0, |flagged, word| {
        flagged | bytes_below(u64::from_le_bytes(*word), 0x20)
    });
    flagged != 0 || tail.iter().any(|b| *b < 0x20)
}

/// Where the first `"` or `\` is. Eight bytes at a time: strings are most of a line,
/// and too short for a SIMD search to pay for its call.
#[inline(always)]
fn quote_or_backslash(bytes: &[u8]) -> Option<usize> {
    let (words, tail) = bytes.as_chunks::<8>();
    for (i, word) in words.iter().enumerate() {
        let word = u64::from_le_bytes(*word);
        let found = bytes_below(word ^ (ONES * u64::from(b'"')), 1)
            | bytes_below(word ^ (ONES * u64::from(b'\\')), 1);
        if found != 0 {
            return Some(i * 8 + (found.trailing_zeros() / 8) as usize);
        }
    }
    let in_tail = tail.iter().position(|b| matches!(b, b'"' | b'\\'))?;
    Some(words.len() * 8 + in_tail)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const LINE: &str = r#"{"id":"f3QL6RYpIoQZ1EN3la37","clinicId":"tBZnhtfVYtifpfAJpdRc","doctorId":"doc-1-gfnso13dh","date":"2026-01-12","sessionIndex":0,"slotIndex":25,"time":"13:10","numericToken":26,"tokenNumber":"A1-026","status":"No-show","patientName":"Anu \"A.\" Menon","bookedVia":"Walk-in","createdAt":{"_seconds":1779489323,"_nanoseconds":0},"age":44.5e0,"walkInPatientsAhead":{"count":1,"list":[true,false,null,-0.5,"x\u00e9"]},"cancelledByBreak":false,"bufferedAt":null}"#;

    fn skimmed(line: &[u8]) -> Option<SlotFields<'_>> {
        let mut fields = SlotFields::default();
        skim(line, &mut fields).map(|()| fields)
    }

    /// What serde_json's derive reads from the line, if it reads it.
    fn serde(line: &str) -> Option<SlotFields<'_>> {
        serde_json::from_str(line).ok()
    }

    #[test]
    fn a_full_document_reads_as_serde_json_reads_it() {
        let fields = skimmed(LINE.as_bytes()).expect("a plain line");
        assert_eq!(Some(&fields), serde(LINE).as_ref());
        assert_eq!(fields.slot_index, Some(Json::Int(25)));
        assert_eq!(fields.cancelled_by_break, Some(Json::Bool(false)));
        assert_eq!(fields.booked_via, Some(Json::Str("Walk-in".into())));
        for line in [
            "{}",
            " { } ",
            r#"{"slotIndex": null, "x": {}}"#,
            r#"{"id": "\u00e9t\u00e9"}"#,
            "{\"id\": \"ünïcode ✓\"}",
        ] {
            assert_eq!(skimmed(line.as_bytes()), serde(line), "{line}");
        }
    }

    #[test]
    fn the_names_matched_are_those_of_slot_fields() {
        for (index, name) in SlotFields::NAMES.iter().enumerate() {
            assert_eq!(field_index(name.as_bytes()), Some(index), "{name}");
        }
        assert_eq!(field_index(b"slotindex"), None);
    }

    #[test]
    fn invalid_or_unusual_lines_are_left_to_serde_json() {
        for line in [
            "",
            "[]",
            "42",
            r#"{"id": "a",}"#,
            r#"{"id": "a"} x"#,
            r#"{"id": "a" "x": 1}"#,
            r#"{"age": 01}"#,
            r#"{"age": 1.}"#,
            r#"{"age": -}"#,
            r#"{"age": 1e}"#,
            r#"{"age": tru}"#,
            r#"{"x": [1, 2,]}"#,
            r#"{"x": "a\qb"}"#,
            r#"{"x": "\u12g4"}"#,
            "{\"x\": \"tab\there\"}",
            r#"{"slotIndex": 5, "slotIndex": 6}"#,
            r#"{"slotIndex": 5.0}"#,
            r#"{"slotIndex": 99999999999999999999}"#,
            r#"{"sl\u006ftIndex": 5}"#,
            &format!("{{\"x\": {}{}}}", "[".repeat(100), "]".repeat(100)),
        ] {
            assert_eq!(skimmed(line.as_bytes()), None, "{line}");
        }
        assert_eq!(skimmed(b"{\"id\": \"caf\xe9\"}"), None, "not UTF-8");
    }

    fn mutated_line() -> impl Strategy<Value = String> {
        let interesting = prop::sample::select(vec![
            "\"",
            "\\",
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            " ",
            "0",
            "1",
            "-",
            "+",
            ".",
            "e",
            "t",
            "n",
            "u",
            "\u{1}",
            "\t",
            "é",
            "null",
            "\\u00",
            "slotIndex",
            "\"id\":",
        ]);
        let edit = (0..LINE.len(), 0..4usize, interesting);
        prop::collection::vec(edit, 1..4).prop_map(|edits| {
            let mut line = LINE.to_owned();
            for (at, how, text) in edits {
                let at = (0..=at.min(line.len()))
                    .rev()
                    .find(|i| line.is_char_boundary(*i))
                    .unwrap_or(0);
                let end = (at + 1..=line.len())
                    .find(|i| line.is_char_boundary(*i))
                    .unwrap_or(line.len());
                match how {
                    0 => line.insert_str(at, text),
                    1 => line.replace_range(at..end, text),
                    2 => line.replace_range(at..end, ""),
                    _ => line.truncate(at),
                }
            }
            line
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn control_characters_are_found_wherever_they_are(
            bytes in prop::collection::vec(prop::sample::select(vec![b'a', b'"', 0, 0x1f, 0x20, 0x7f, 0x80, 0x9f, 0xe9, 0xff]), 0..40)
        ) {
            prop_assert_eq!(has_control_character(&bytes), bytes.iter().any(|b| *b < 0x20));
        }

        #[test]
        fn the_first_quote_or_backslash_is_found_wherever_it_is(
            bytes in prop::collection::vec(prop::sample::select(vec![b'a', b'"', b'\\', 0x21, 0x5b, 0x5d, 0x5c ^ 0x80, 0xa2, 0xff]), 0..40)
        ) {
            prop_assert_eq!(quote_or_backslash(&bytes), bytes.iter().position(|b| matches!(b, b'"' | b'\\')));
        }

        /// The fast path never decides a line's fate otherwise than serde_json would:
        /// what it reads, serde_json reads the same; what serde_json refuses, it
        /// leaves alone.
        #[test]
        fn a_damaged_line_is_read_as_serde_json_reads_it_or_left_to_it(line in mutated_line()) {
            if let Some(fields) = skimmed(line.as_bytes()) {
                prop_assert_eq!(Some(fields), serde(&line), "{}", line);
            }
        }
    }
}
