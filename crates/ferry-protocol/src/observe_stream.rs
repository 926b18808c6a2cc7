//! Watching an SSE answer go by: each chunk is decoded to record usage, text and tool calls,
//! and the usage-only chunk the gateway asked for on the client's behalf can be cut out
//! (events are held back until complete, so a removed event never goes out in part). Pure: the
//! caller moves the bytes.

use crate::sse::Decoder;
use crate::{Observed, Protocol};
use bytes::Bytes;

/// The observation state of one streamed answer.
pub struct StreamObserver {
    proto: Protocol,
    hide_usage: bool,
    /// The answer is one JSON array of events written incrementally (a Gemini stream without
    /// `alt=sse`), each chunk whole events: `[e`, `,e,e`, `]`.
    json_array: bool,
    decoder: Decoder,
    pub observed: Observed,
    /// Bytes seen so far.
    pub bytes: u64,
}

impl StreamObserver {
    /// `hide_usage`: remove the usage-only chunk; `keep_text`: the response text is needed
    /// (payload logging).
    pub fn new(proto: Protocol, hide_usage: bool, keep_text: bool) -> StreamObserver {
        StreamObserver {
            proto,
            hide_usage,
            json_array: false,
            decoder: if hide_usage {
                Decoder::keeping_raw()
            } else {
                Decoder::new()
            },
            observed: Observed {
                skip_text: !keep_text,
                ..Observed::default()
            },
            bytes: 0,
        }
    }

    /// An observer of a JSON-array stream (chunks of whole events).
    pub fn json_array(proto: Protocol, keep_text: bool) -> StreamObserver {
        StreamObserver {
            json_array: true,
            ..StreamObserver::new(proto, false, keep_text)
        }
    }

    /// Observes a chunk; returns the bytes to send instead when events were removed (or held
    /// back until complete, so that a removed event never goes out in part).
    pub fn feed(&mut self, chunk: &Bytes, end: bool) -> Option<Bytes> {
        self.bytes += chunk.len() as u64;
        let (proto, observed) = (self.proto, &mut self.observed);
        if self.json_array {
            let text = std::str::from_utf8(chunk).unwrap_or_default().trim();
            let inner = text
                .strip_prefix(['[', ','])
                .unwrap_or(text)
                .trim_end_matches(']');
            if let Ok(events) =
                serde_json::from_str::<Vec<&serde_json::value::RawValue>>(&format!("[{inner}]"))
            {
                for e in events {
                    observed.event(proto, "message", e.get());
                }
            }
            return None;
        }
        if !self.hide_usage {
            self.decoder
                .feed_each(chunk, |e| _ = observed.event(proto, e.kind, e.data));
            if end {
                self.decoder
                    .finish_each(|e| _ = observed.event(proto, e.kind, e.data));
            }
            return None;
        }
        // Events made only of this chunk's bytes are slices of it: note the removed ranges
        // and cut them out at the end (usually nothing, or the one usage chunk).
        let carried = self.decoder.pending_raw() > 0;
        let mut kept = Vec::new();
        let mut cut: Vec<(usize, usize)> = Vec::new();
        let mut pos = 0usize;
        let mut on_event = |e: crate::sse::EventRef<'_>| {
            let usage_only = observed.event(proto, e.kind, e.data);
            if carried {
                if !usage_only {
                    kept.extend_from_slice(e.raw);
                }
            } else if usage_only {
                cut.push((pos, pos + e.raw.len()));
            }
            pos += e.raw.len();
        };
        self.decoder.feed_each(chunk, &mut on_event);
        let rest = if end {
            let rest = self.decoder.finish_each(&mut on_event);
            Some(rest)
        } else {
            None
        };
        if carried {
            if let Some(r) = rest {
                kept.extend_from_slice(&r);
            }
            return Some(Bytes::from(kept));
        }
        // Bytes of an event still incomplete wait for it; at the end they go out as they are.
        let complete = if end { chunk.len() } else { pos };
        if cut.is_empty() {
            return (complete < chunk.len()).then(|| chunk.slice(..complete));
        }
        let mut out = Vec::with_capacity(complete);
        let mut from = 0;
        for (a, b) in cut {
            out.extend_from_slice(&chunk[from..a]);
            from = b;
        }
        out.extend_from_slice(&chunk[from..complete]);
        Some(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: &str = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
    const USAGE: &str = "data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1,\"total_tokens\":4}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    /// Whatever the chunk boundaries, the client gets the stream without the usage-only
    /// chunk, and the usage is still observed.
    #[test]
    fn usage_chunk_removed_at_every_split() {
        let input = format!("{CHUNK}{CHUNK}{USAGE}{DONE}");
        let expected = format!("{CHUNK}{CHUNK}{DONE}");
        let b = Bytes::from(input.clone());
        for i in 0..=b.len() {
            for j in i..=b.len() {
                let mut st = StreamObserver::new(Protocol::OpenAiChat, true, true);
                let mut out = Vec::new();
                let parts = [b.slice(..i), b.slice(i..j), b.slice(j..)];
                for (n, p) in parts.iter().enumerate() {
                    let sent = st.feed(p, n == 2).unwrap_or_else(|| p.clone());
                    out.extend_from_slice(&sent);
                }
                assert_eq!(String::from_utf8(out).unwrap(), expected, "split {i},{j}");
                assert_eq!(st.observed.usage.map(|u| u.total), Some(4));
                assert_eq!(st.observed.text, "hihi");
            }
        }
    }

    /// A JSON-array stream: whole events per chunk, observed.
    #[test]
    fn json_array_events() {
        let mut st = StreamObserver::json_array(Protocol::Gemini, true);
        let e1 = r#"{"candidates":[{"content":{"parts":[{"text":"Hello "}]}}]}"#;
        let e2 = r#"{"candidates":[{"content":{"parts":[{"text":"world"}]},"finishReason":"STOP"}],"usageMetadata":{"promptTokenCount":3,"candidatesTokenCount":2,"totalTokenCount":5}}"#;
        for c in [format!("[{e1}"), format!(",{e2}"), "]".to_string()] {
            assert!(st.feed(&Bytes::from(c), false).is_none());
        }
        assert_eq!(st.observed.text, "Hello world");
        assert_eq!(st.observed.usage.map(|u| u.total), Some(5));
    }

    /// Without hiding, chunks pass through untouched (no copy) and are still observed.
    #[test]
    fn observed_without_rewriting() {
        let mut st = StreamObserver::new(Protocol::OpenAiChat, false, true);
        let input = Bytes::from(format!("{CHUNK}{USAGE}{DONE}"));
        assert!(st.feed(&input.slice(..10), false).is_none());
        assert!(st.feed(&input.slice(10..), true).is_none());
        assert_eq!(st.observed.usage.map(|u| u.total), Some(4));
        assert!(st.observed.done);
    }
}
