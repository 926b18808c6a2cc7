//! Server-sent events: an incremental decoder that gives the same events whatever the chunk
//! boundaries (`\n` or `\r\n` line ends, multi-line `data`, comments), optionally keeping each
//! event's raw bytes so a stream can be re-emitted with events removed; and an encoder.

use bytes::Bytes;

/// Longest partial line kept between chunks; longer ones are discarded (as APISIX does).
pub const MAX_LINE: usize = 1 << 20;

/// One decoded event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The `event:` field, `message` when absent.
    pub kind: String,
    /// `data:` lines joined with `\n`.
    pub data: String,
    /// The bytes that made this event (from the end of the previous one), when kept.
    pub raw: Bytes,
}

/// Incremental SSE decoder.
#[derive(Debug, Default)]
pub struct Decoder {
    line: Vec<u8>,
    kind: Option<String>,
    data: String,
    has_data: bool,
    has_field: bool,
    keep_raw: bool,
    raw: Vec<u8>,
    /// Lines discarded for being longer than [`MAX_LINE`].
    pub discarded: u64,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// A decoder that keeps each event's raw bytes in [`Event::raw`].
    pub fn keeping_raw() -> Decoder {
        Decoder {
            keep_raw: true,
            ..Decoder::default()
        }
    }

    /// Feeds a chunk; complete events are appended to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) {
        let mut pos = 0;
        while let Some(off) = memchr::memchr(b'\n', &chunk[pos..]) {
            let end = pos + off;
            if self.keep_raw {
                self.raw.extend_from_slice(&chunk[pos..=end]);
            }
            if self.line.is_empty() {
                self.process_line(&chunk[pos..end], out);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&chunk[pos..end]);
                self.process_line(&line, out);
                line.clear();
                self.line = line;
            }
            pos = end + 1;
        }
        let tail = &chunk[pos..];
        if !tail.is_empty() {
            if self.keep_raw {
                self.raw.extend_from_slice(tail);
            }
            if self.line.len() + tail.len() > MAX_LINE {
                self.line.clear();
                self.discarded += 1;
            } else {
                self.line.extend_from_slice(tail);
            }
        }
    }

    /// Ends the stream: an event left without its blank line is returned if it has data, and
    /// any other bytes left over are returned raw.
    pub fn finish(&mut self, out: &mut Vec<Event>) -> Bytes {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, out);
        }
        if self.has_data {
            self.dispatch(out);
        }
        Bytes::from(std::mem::take(&mut self.raw))
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<Event>) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.has_field {
                self.dispatch(out);
            }
            return;
        }
        if line[0] == b':' {
            return;
        }
        let Some(colon) = memchr::memchr(b':', line) else {
            return;
        };
        let field = &line[..colon];
        let mut value = &line[colon + 1..];
        if value.first() == Some(&b' ') {
            value = &value[1..];
        }
        let value = String::from_utf8_lossy(value);
        if field.eq_ignore_ascii_case(b"data") {
            if self.has_data {
                self.data.push('\n');
            }
            self.data.push_str(&value);
            self.has_data = true;
            self.has_field = true;
        } else if field.eq_ignore_ascii_case(b"event") {
            self.kind = Some(value.into_owned());
            self.has_field = true;
        } else if field.eq_ignore_ascii_case(b"id") || field.eq_ignore_ascii_case(b"retry") {
            self.has_field = true;
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Event>) {
        out.push(Event {
            kind: self.kind.take().unwrap_or_else(|| "message".to_string()),
            data: std::mem::take(&mut self.data),
            raw: Bytes::from(std::mem::take(&mut self.raw)),
        });
        self.has_data = false;
        self.has_field = false;
    }
}

/// Encodes one event: `event:` (omitted for `message`), one `data:` line per line, `\n\n`.
pub fn encode(kind: &str, data: &str, out: &mut String) {
    if kind != "message" {
        out.push_str("event: ");
        out.push_str(kind);
        out.push('\n');
    }
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_split(input: &[u8], splits: &[usize]) -> Vec<(String, String)> {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        let mut last = 0;
        for &s in splits {
            d.feed(&input[last..s], &mut out);
            last = s;
        }
        d.feed(&input[last..], &mut out);
        d.finish(&mut out);
        out.into_iter().map(|e| (e.kind, e.data)).collect()
    }

    const STREAM: &[u8] = b": comment\n\nevent: message_start\ndata: {\"a\":1}\n\ndata: line1\r\ndata: line2\r\n\r\nid: 7\nretry: 10\n\ndata:nospace\n\ndata: [DONE]\n\n";

    fn expected() -> Vec<(String, String)> {
        vec![
            ("message_start".into(), "{\"a\":1}".into()),
            ("message".into(), "line1\nline2".into()),
            ("message".into(), "".into()),
            ("message".into(), "nospace".into()),
            ("message".into(), "[DONE]".into()),
        ]
    }

    #[test]
    fn same_events_at_every_split() {
        for i in 0..=STREAM.len() {
            assert_eq!(decode_split(STREAM, &[i]), expected(), "split at {i}");
            for j in i..=STREAM.len() {
                assert_eq!(
                    decode_split(STREAM, &[i, j]),
                    expected(),
                    "split at {i},{j}"
                );
            }
        }
    }

    #[test]
    fn raw_bytes_reassemble_the_input() {
        for i in 0..=STREAM.len() {
            let mut d = Decoder::keeping_raw();
            let mut out = Vec::new();
            d.feed(&STREAM[..i], &mut out);
            d.feed(&STREAM[i..], &mut out);
            let rest = d.finish(&mut out);
            let mut all: Vec<u8> = out.iter().flat_map(|e| e.raw.to_vec()).collect();
            all.extend_from_slice(&rest);
            assert_eq!(all, STREAM, "split at {i}");
        }
    }

    #[test]
    fn unterminated_last_event_is_returned_at_finish() {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        d.feed(b"data: {\"x\":1}", &mut out);
        assert!(out.is_empty());
        d.finish(&mut out);
        assert_eq!(out[0].data, "{\"x\":1}");
    }

    #[test]
    fn overlong_lines_are_dropped() {
        let mut d = Decoder::new();
        let mut out = Vec::new();
        d.feed(b"data: ", &mut out);
        d.feed(&vec![b'x'; MAX_LINE + 1], &mut out);
        d.feed(b"\n\ndata: ok\n\n", &mut out);
        assert_eq!(d.discarded, 1);
        assert_eq!(out.last().map(|e| e.data.as_str()), Some("ok"));
    }

    #[test]
    fn encoder() {
        let mut s = String::new();
        encode("message", "a\nb", &mut s);
        encode("ping", "{}", &mut s);
        assert_eq!(s, "data: a\ndata: b\n\nevent: ping\ndata: {}\n\n");
        assert_eq!(
            decode_split(s.as_bytes(), &[]),
            vec![
                ("message".into(), "a\nb".into()),
                ("ping".into(), "{}".into())
            ]
        );
    }
}
