//! A scanner for the one stream chunk that dominates every OpenAI chat stream: a single choice
//! whose delta is text only (no tool call, no reasoning, no finish, no usage). It accepts only
//! that narrow shape, validates every byte it accepts, and hands out the text still escaped as
//! JSON (a converter copies it into its own JSON unchanged), so a converter writes such a chunk
//! out without parsing it into a tree or decoding its string. Anything else answers `None` and
//! goes to the typed parse.

/// What a text-only chunk carries. `id` and `model` contain no escapes (they are their own
/// decoded text); `text` is the content string's raw JSON text between its quotes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TextChunk<'a> {
    pub id: Option<&'a str>,
    pub model: Option<&'a str>,
    pub index: Option<u64>,
    pub text: Option<&'a str>,
    /// A `delta` object was there.
    pub delta: bool,
    /// Where `text` lies in the chunk.
    span: Option<(usize, usize)>,
}

/// The bytes around the text of the last text-only chunk a stream sent. A stream's text chunks
/// differ only in their text, so a chunk with the same bytes before and after its text has the
/// same shape: only the text between them is checked (a valid JSON string body, which cannot
/// end the string early). Such a chunk reports its text and index; its id and model are the
/// ones of the chunk the shape was learnt from, which the caller has read already (`None`).
#[derive(Debug, Default)]
pub struct ChunkShape {
    prefix: String,
    suffix: String,
    index: Option<u64>,
}

impl ChunkShape {
    /// Reads `data` as a text-only chunk, through the learnt shape when it fits.
    pub fn text_chunk<'a>(&mut self, data: &'a str) -> Option<TextChunk<'a>> {
        let (p, q) = (self.prefix.len(), self.suffix.len());
        if p > 0
            && data.len() >= p + q
            && data.starts_with(self.prefix.as_str())
            && data.ends_with(self.suffix.as_str())
            && let Some(text) = data.get(p..data.len() - q)
            && string_body(text.as_bytes())
        {
            return Some(TextChunk {
                index: self.index,
                text: Some(text),
                delta: true,
                span: Some((p, data.len() - q)),
                ..TextChunk::default()
            });
        }
        let c = text_chunk(data)?;
        if let Some((a, b)) = c.span {
            self.prefix.clear();
            self.prefix.push_str(&data[..a]);
            self.suffix.clear();
            self.suffix.push_str(&data[b..]);
            self.index = c.index;
        }
        Some(c)
    }
}

/// Whether `b` is the inside of a JSON string: valid escapes, no quote, no control character.
fn string_body(b: &[u8]) -> bool {
    let mut s = Scan { b, i: 0 };
    loop {
        let Some(n) = b[s.i..].iter().position(|&c| SPECIAL[usize::from(c)]) else {
            return true;
        };
        s.i += n;
        if b[s.i] != b'\\' {
            return false;
        }
        s.i += 1;
        if s.escape().is_none() {
            return false;
        }
    }
}

/// Reads `data` as a text-only chat chunk; `None` for any other shape (or invalid JSON).
pub fn text_chunk(data: &str) -> Option<TextChunk<'_>> {
    let mut s = Scan {
        b: data.as_bytes(),
        i: 0,
    };
    let mut out = TextChunk::default();
    let mut choices = false;
    s.object(|s, key| {
        match key {
            b"id" if out.id.is_none() => out.id = Some(s.plain_string(data)?),
            b"model" if out.model.is_none() => out.model = Some(s.plain_string(data)?),
            b"object" | b"system_fingerprint" | b"service_tier" => s.string_or_null()?,
            b"created" => s.number()?,
            b"usage" => s.null()?,
            b"choices" if !choices => {
                choices = true;
                s.expect(b'[')?;
                s.object(|s, key| choice(s, key, data, &mut out))?;
                s.expect(b']')?;
            }
            _ => return None,
        }
        Some(())
    })?;
    s.ws();
    (choices && s.i == s.b.len()).then_some(out)
}

fn choice<'a>(s: &mut Scan<'_>, key: &[u8], data: &'a str, out: &mut TextChunk<'a>) -> Option<()> {
    match key {
        b"index" if out.index.is_none() => out.index = Some(s.unsigned()?),
        b"finish_reason" | b"logprobs" => s.null()?,
        b"delta" if !out.delta => {
            out.delta = true;
            let mut role = false;
            s.object(|s, key| {
                match key {
                    b"role" if !role => {
                        role = true;
                        s.string_or_null()?;
                    }
                    b"content" if out.text.is_none() => {
                        s.ws();
                        if s.peek() == Some(b'n') {
                            s.null()?;
                        } else {
                            let (a, b) = s.string()?;
                            out.text = Some(data.get(a..b)?);
                            out.span = Some((a, b));
                        }
                    }
                    b"refusal" => s.null()?,
                    _ => return None,
                }
                Some(())
            })?;
        }
        _ => return None,
    }
    Some(())
}

struct Scan<'b> {
    b: &'b [u8],
    i: usize,
}

impl Scan<'_> {
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        self.ws();
        (self.peek()? == c).then(|| self.i += 1)
    }

    /// `{ "key": value, ... }`, each value read by `value` (which is handed the key).
    fn object(&mut self, mut value: impl FnMut(&mut Self, &[u8]) -> Option<()>) -> Option<()> {
        self.expect(b'{')?;
        self.ws();
        if self.peek()? == b'}' {
            self.i += 1;
            return Some(());
        }
        loop {
            self.ws();
            let (a, b) = self.string()?;
            let key = &self.b[a..b];
            self.expect(b':')?;
            value(self, key)?;
            self.ws();
            match self.peek()? {
                b',' => self.i += 1,
                b'}' => {
                    self.i += 1;
                    return Some(());
                }
                _ => return None,
            }
        }
    }

    /// A string with valid escapes and no raw control characters: the range between its
    /// quotes.
    fn string(&mut self) -> Option<(usize, usize)> {
        self.string_escaped().map(|(a, b, _)| (a, b))
    }

    /// A string as `string`, and whether it had escapes.
    fn string_escaped(&mut self) -> Option<(usize, usize, bool)> {
        self.expect(b'"')?;
        let start = self.i;
        let mut escaped = false;
        loop {
            // Plain bytes in one tight loop; then a quote, a backslash or a control character.
            let rest = self.b.get(self.i..)?;
            self.i += rest.iter().position(|&c| SPECIAL[usize::from(c)])?;
            match self.b[self.i] {
                b'"' => {
                    self.i += 1;
                    return Some((start, self.i - 1, escaped));
                }
                b'\\' => {
                    escaped = true;
                    self.i += 1;
                    self.escape()?;
                }
                _ => return None,
            }
        }
    }

    /// The rest of an escape after its backslash.
    fn escape(&mut self) -> Option<()> {
        match *self.b.get(self.i)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 1,
            b'u' => {
                let unit = self.hex4(self.i + 1)?;
                self.i += 5;
                // Surrogates only in pairs (serde_json refuses a lone one).
                if (0xDC00..0xE000).contains(&unit) {
                    return None;
                }
                if (0xD800..0xDC00).contains(&unit) {
                    if self.b.get(self.i..self.i + 2)? != b"\\u" {
                        return None;
                    }
                    let low = self.hex4(self.i + 2)?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return None;
                    }
                    self.i += 6;
                }
            }
            _ => return None,
        }
        Some(())
    }

    /// The four hex digits at `at`.
    fn hex4(&self, at: usize) -> Option<u32> {
        let hex = std::str::from_utf8(self.b.get(at..at + 4)?).ok()?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(hex, 16).ok()
    }

    /// A string without escapes: its text.
    fn plain_string<'a>(&mut self, data: &'a str) -> Option<&'a str> {
        let (a, b, escaped) = self.string_escaped()?;
        if escaped {
            return None;
        }
        data.get(a..b)
    }

    fn string_or_null(&mut self) -> Option<()> {
        self.ws();
        if self.peek()? == b'n' {
            self.null()
        } else {
            self.string().map(|_| ())
        }
    }

    fn null(&mut self) -> Option<()> {
        self.ws();
        let end = self.i + 4;
        (self.b.get(self.i..end)? == b"null").then(|| self.i = end)
    }

    fn unsigned(&mut self) -> Option<u64> {
        self.ws();
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.peek() {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.i += 1;
        }
        let digits = self.i - start;
        // JSON has no leading zeros; a fraction or exponent is not an index.
        let ok = digits > 0 && (digits == 1 || self.b[start] != b'0');
        (ok && !matches!(self.peek(), Some(b'.' | b'e' | b'E'))).then_some(n)
    }

    /// Any JSON number serde_json reads: `-? (0 | [1-9][0-9]*) (. [0-9]+)? ([eE] [+-]? [0-9]+)?`
    /// and in range (serde_json refuses one whose value overflows a float, as `1e999`).
    fn number(&mut self) -> Option<()> {
        self.ws();
        let start = self.i;
        self.number_grammar()?;
        let text = std::str::from_utf8(&self.b[start..self.i]).ok()?;
        serde_json::from_str::<serde_json::Number>(text)
            .ok()
            .map(|_| ())
    }

    fn number_grammar(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => self.i += 1,
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            self.some_digits()?;
        }
        if let Some(b'e' | b'E') = self.peek() {
            self.i += 1;
            if let Some(b'+' | b'-') = self.peek() {
                self.i += 1;
            }
            self.some_digits()?;
        }
        Some(())
    }

    fn digits(&mut self) {
        while let Some(b'0'..=b'9') = self.peek() {
            self.i += 1;
        }
    }

    fn some_digits(&mut self) -> Option<()> {
        let start = self.i;
        self.digits();
        (self.i > start).then_some(())
    }
}

/// Bytes that end a run of plain string bytes: a quote, a backslash, a control character.
use crate::json_out::ESCAPE as SPECIAL;

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1700000000,"model":"gpt-4o","system_fingerprint":null,"choices":[{"index":0,"delta":{"content":"Hi \"you\"\n"},"logprobs":null,"finish_reason":null}]}"#;

    #[test]
    fn reads_a_text_chunk() {
        let c = text_chunk(TEXT).unwrap();
        assert_eq!(c.id, Some("chatcmpl-1"));
        assert_eq!(c.model, Some("gpt-4o"));
        assert_eq!(c.index, Some(0));
        assert_eq!(c.text, Some(r#"Hi \"you\"\n"#));
        let spaced = " { \"choices\" : [ { \"delta\" : { \"role\" : \"assistant\" , \"content\" : null } } ] } ";
        let c = text_chunk(spaced).unwrap();
        assert_eq!((c.text, c.index, c.id), (None, None, None));
    }

    /// Every other shape, and anything invalid, goes to the typed parse.
    #[test]
    fn refuses_everything_else() {
        let no = [
            r#"{"choices":[{"delta":{"content":"a"},"finish_reason":"stop"}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[]}}]}"#,
            r#"{"choices":[{"delta":{"reasoning_content":"x"}}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":1}}"#,
            r#"{"choices":[{"delta":{"content":"a"}},{"delta":{"content":"b"}}]}"#,
            r#"{"choices":[{"delta":{"content":"a"}}],"usage":{}}"#,
            r#"{"error":{"message":"x"}}"#,
            r#"{"id":"a\"b","choices":[{"delta":{"content":"a"}}]}"#,
            r#"{"choices":[{"delta":{"content":"bad \x escape"}}]}"#,
            r#"{"choices":[{"delta":{"content":"bad \u12G4"}}]}"#,
            r#"{"choices":[{"delta":{"content":"lone \uD83D"}}]}"#,
            r#"{"choices":[{"delta":{"content":"lone \uDEA2"}}]}"#,
            r#"{"choices":[{"delta":{"content":"pair \uD83D\u0041"}}]}"#,
            "{\"choices\":[{\"delta\":{\"content\":\"raw\ncontrol\"}}]}",
            r#"{"choices":[{"delta":{"content":"a"}}]} trailing"#,
            r#"{"choices":[{"delta":{"content":"a"}}]"#,
            r#"{"choices":[{"delta":{"content":"a","content":"b"}}]}"#,
            r#"{"choices":[{"delta":{"content":"a"},"delta":{}}]}"#,
            r#"{"choices":[{"index":01,"delta":{}}]}"#,
            r#"{"choices":[{"index":1.5,"delta":{}}]}"#,
            r#"{"created":1-2,"choices":[{"delta":{}}]}"#,
            r#"{"created":-,"choices":[{"delta":{}}]}"#,
            r#"{"created":1.,"choices":[{"delta":{}}]}"#,
            r#"{"created":1e,"choices":[{"delta":{}}]}"#,
            r#"{"created":01,"choices":[{"delta":{}}]}"#,
            r#"{"created":2555555555E5555555555555,"choices":[{"delta":{}}]}"#,
            r#"{"id":"x"}"#,
            r#"[]"#,
            "",
        ];
        for d in no {
            assert_eq!(text_chunk(d), None, "{d}");
        }
    }

    /// What the scanner accepts, serde_json accepts, and the text it hands out decodes to the
    /// same string serde_json reads.
    #[test]
    fn agrees_with_serde_json() {
        let texts = [
            "",
            "plain",
            "é ✓ 🚢",
            r#"q\"b\\s\/\b\f\n\r\t\u00e9\uD83D\uDEA2"#,
        ];
        for t in texts {
            let d = format!(
                r#"{{"id":"c","created":-1.5e+3,"model":"m","choices":[{{"index":3,"delta":{{"role":"assistant","content":"{t}"}}}}]}}"#
            );
            let c = text_chunk(&d).unwrap();
            let v: serde_json::Value = serde_json::from_str(&d).unwrap();
            let decoded: String =
                serde_json::from_str(&format!("\"{}\"", c.text.unwrap())).unwrap();
            assert_eq!(v["choices"][0]["delta"]["content"], decoded.as_str());
            assert_eq!(c.index, Some(3));
        }
    }

    /// A chunk with the learnt bytes around its text takes the short path and reads as the
    /// scanner reads it; a text that would end the string early, or anything else, does not.
    #[test]
    fn learnt_shape() {
        let chunk = |t: &str| {
            format!(
                r#"{{"choices":[{{"delta":{{"content":"{t}"}},"finish_reason":null,"index":2}}],"id":"c","model":"m"}}"#
            )
        };
        let mut shape = ChunkShape::default();
        let first = chunk("Hello");
        assert_eq!(shape.text_chunk(&first).unwrap().id, Some("c"));
        for t in ["", "plain", r#"esc \" \\ \n \u00e9 \uD83D\uDEA2"#, "é ✓"] {
            let d = chunk(t);
            let c = shape.text_chunk(&d).unwrap();
            let scanned = text_chunk(&d).unwrap();
            assert_eq!(
                (c.text, c.index, c.id),
                (scanned.text, scanned.index, None),
                "{t}"
            );
        }
        for bad in [
            r#"a","x":"b"#,
            r#"trailing \"#,
            "ctl \u{1}",
            r#"lone \uD83D"#,
        ] {
            let d = chunk(bad);
            assert_eq!(shape.text_chunk(&d), text_chunk(&d), "{bad}");
            assert_eq!(text_chunk(&d), None, "{bad}");
        }
        let other = r#"{"choices":[{"delta":{"content":"x"},"finish_reason":"stop","index":2}],"id":"c","model":"m"}"#;
        assert_eq!(shape.text_chunk(other), None);
    }
}
