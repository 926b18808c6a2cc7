//! Server-sent events: an incremental decoder that gives the same events whatever the chunk
//! boundaries (`\n` or `\r\n` line ends, multi-line `data`, comments), optionally keeping each
//! event's raw bytes so a stream can be re-emitted with events removed; and an encoder. One
//! event is bounded ([`max_event`]): past it the decoder stops and says so ([`Decoder::overflowed`]).

use bytes::Bytes;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The default bound of one event (its lines, blank line included): 4 MiB.
pub const DEFAULT_MAX_EVENT: usize = 4 << 20;

static MAX_EVENT: AtomicUsize = AtomicUsize::new(DEFAULT_MAX_EVENT);

/// The bound of one event that decoders made from now on use.
pub fn max_event() -> usize {
    MAX_EVENT.load(Ordering::Relaxed)
}

/// Sets the bound of one event (`ferry.max_sse_event_size`, at start-up).
pub fn set_max_event(n: usize) {
    MAX_EVENT.store(n.max(1), Ordering::Relaxed);
}

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

/// One decoded event, borrowed from the decoder (valid during the callback).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventRef<'a> {
    pub kind: &'a str,
    pub data: &'a str,
    /// The bytes that made this event, when kept (else empty).
    pub raw: &'a [u8],
}

impl EventRef<'_> {
    pub fn to_owned(&self) -> Event {
        Event {
            kind: self.kind.to_string(),
            data: self.data.to_string(),
            raw: Bytes::copy_from_slice(self.raw),
        }
    }
}

/// Incremental SSE decoder. Its buffers are reused from event to event.
#[derive(Debug)]
pub struct Decoder {
    line: Vec<u8>,
    kind: String,
    data: String,
    has_data: bool,
    has_field: bool,
    keep_raw: bool,
    raw: Vec<u8>,
    /// Bytes of the event being read (its lines so far, the partial one included).
    size: usize,
    limit: usize,
    overflowed: bool,
}

impl Default for Decoder {
    fn default() -> Decoder {
        Decoder {
            line: Vec::new(),
            kind: String::new(),
            data: String::new(),
            has_data: false,
            has_field: false,
            keep_raw: false,
            raw: Vec::new(),
            size: 0,
            limit: max_event(),
            overflowed: false,
        }
    }
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// A decoder that also returns each event's raw bytes.
    pub fn keeping_raw() -> Decoder {
        Decoder {
            keep_raw: true,
            ..Decoder::default()
        }
    }

    /// A decoder with its own bound of one event.
    pub fn with_limit(mut self, limit: usize) -> Decoder {
        self.limit = limit.max(1);
        self
    }

    /// An event grew past the bound: what it held was dropped and the decoder takes nothing
    /// more (the stream is broken; the caller ends it with an error).
    pub fn overflowed(&self) -> bool {
        self.overflowed
    }

    /// Counts `n` more bytes of the current event; false (and the decoder stopped) past the bound.
    fn grow(&mut self, n: usize) -> bool {
        self.size += n;
        if self.size <= self.limit {
            return true;
        }
        self.stop();
        false
    }

    fn stop(&mut self) {
        self.overflowed = true;
        self.line = Vec::new();
        self.data = String::new();
        self.raw = Vec::new();
    }

    /// Bytes fed but not yet part of a returned event (kept only with [`Decoder::keeping_raw`]).
    pub fn pending_raw(&self) -> usize {
        self.raw.len()
    }

    /// Feeds a chunk; complete events are appended to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Event>) {
        self.feed_each(chunk, |e| out.push(e.to_owned()));
    }

    /// Feeds a chunk; `f` sees each complete event, borrowed.
    pub fn feed_each(&mut self, chunk: &[u8], mut f: impl FnMut(EventRef<'_>)) {
        if self.overflowed {
            return;
        }
        let mut pos = 0;
        while let Some(off) = memchr::memchr(b'\n', &chunk[pos..]) {
            let end = pos + off;
            if !self.grow(self.line.len() + end + 1 - pos) {
                return;
            }
            if self.keep_raw {
                self.raw.extend_from_slice(&chunk[pos..=end]);
            }
            if self.line.is_empty() {
                self.process_line(&chunk[pos..end], &mut f);
            } else {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&chunk[pos..end]);
                self.process_line(&line, &mut f);
                line.clear();
                self.line = line;
            }
            pos = end + 1;
        }
        let tail = &chunk[pos..];
        if !tail.is_empty() {
            // Counted with its line once the line completes.
            if self.size + self.line.len() + tail.len() > self.limit {
                self.stop();
                return;
            }
            if self.keep_raw {
                self.raw.extend_from_slice(tail);
            }
            self.line.extend_from_slice(tail);
        }
    }

    /// Ends the stream: a last event without its blank line is still returned. Returns the
    /// raw bytes that belonged to no event (when kept).
    pub fn finish(&mut self, out: &mut Vec<Event>) -> Bytes {
        self.finish_each(|e| out.push(e.to_owned()))
    }

    /// [`Decoder::finish`] with a callback.
    pub fn finish_each(&mut self, mut f: impl FnMut(EventRef<'_>)) -> Bytes {
        if self.overflowed {
            return Bytes::new();
        }
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.process_line(&line, &mut f);
        }
        if self.has_data {
            self.dispatch(&mut f);
        }
        Bytes::from(std::mem::take(&mut self.raw))
    }

    fn process_line(&mut self, line: &[u8], f: &mut impl FnMut(EventRef<'_>)) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            if self.has_field {
                self.dispatch(f);
            } else if !self.keep_raw {
                // Nothing is held for lines that made no event (comments), unless their raw
                // bytes are kept for the next event: then they count toward its bound.
                self.size = 0;
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
        let text = |into: &mut String| match std::str::from_utf8(value) {
            Ok(v) => into.push_str(v),
            Err(_) => into.push_str(&String::from_utf8_lossy(value)),
        };
        if field.eq_ignore_ascii_case(b"data") {
            if self.has_data {
                self.data.push('\n');
            }
            text(&mut self.data);
            self.has_data = true;
            self.has_field = true;
        } else if field.eq_ignore_ascii_case(b"event") {
            self.kind.clear();
            text(&mut self.kind);
            self.has_field = true;
        } else if field.eq_ignore_ascii_case(b"id") || field.eq_ignore_ascii_case(b"retry") {
            self.has_field = true;
        }
    }

    fn dispatch(&mut self, f: &mut impl FnMut(EventRef<'_>)) {
        f(EventRef {
            kind: if self.kind.is_empty() {
                "message"
            } else {
                &self.kind
            },
            data: &self.data,
            raw: &self.raw,
        });
        self.kind.clear();
        self.data.clear();
        self.raw.clear();
        self.size = 0;
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
    fn an_event_past_the_bound_stops_the_decoder() {
        // One long line, fed in pieces: held up to the bound, then dropped.
        let mut d = Decoder::keeping_raw().with_limit(1000);
        let mut out = Vec::new();
        d.feed(b"data: ok\n\ndata: ", &mut out);
        for _ in 0..100 {
            d.feed(&[b'x'; 50], &mut out);
        }
        assert!(d.overflowed());
        assert!(d.line.capacity() == 0 && d.raw.capacity() == 0);
        d.feed(b"\n\ndata: later\n\n", &mut out);
        assert!(d.finish(&mut out).is_empty());
        assert_eq!(out.len(), 1, "only the event before the long one");
        // Many short data lines of one event count together.
        let mut d = Decoder::new().with_limit(1000);
        for _ in 0..200 {
            d.feed(b"data: 0123456789\n", &mut out);
        }
        assert!(d.overflowed());
        // Events each under the bound, however many, are fine; so is a line at the bound.
        let mut d = Decoder::new().with_limit(1000);
        for _ in 0..200 {
            d.feed(b"data: 0123456789\n\n", &mut out);
        }
        let line = format!("data: {}\n\n", "y".repeat(992));
        d.feed(line.as_bytes(), &mut out);
        assert!(!d.overflowed());
        assert_eq!(out.last().map(|e| e.data.len()), Some(992));
        // Comment lines are held when raw bytes are kept (they go out with the next event), so
        // they count toward its bound; without raw bytes nothing is held for them.
        let mut d = Decoder::keeping_raw().with_limit(1000);
        for _ in 0..200 {
            d.feed(b": ping\n\n", &mut out);
        }
        assert!(d.overflowed());
        let mut d = Decoder::new().with_limit(1000);
        for _ in 0..200 {
            d.feed(b": ping\n\n", &mut out);
        }
        assert!(!d.overflowed());
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
