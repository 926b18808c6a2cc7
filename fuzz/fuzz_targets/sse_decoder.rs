//! The SSE decoder: any bytes, cut anywhere, give the same events as when fed whole, never an
//! event past the bound, and the raw bytes of the events reassemble the input.
#![no_main]

use ferry_protocol::sse::Decoder;
use libfuzzer_sys::fuzz_target;

fn decode(input: &[u8], cuts: &[usize], limit: usize) -> (Vec<(String, String)>, bool, Vec<u8>) {
    let mut d = Decoder::keeping_raw().with_limit(limit);
    let mut events = Vec::new();
    let mut raw = Vec::new();
    let mut last = 0;
    for &c in cuts.iter().chain(std::iter::once(&input.len())) {
        d.feed_each(&input[last..c], |e| {
            // Bytes that are not UTF-8 become U+FFFD (three bytes each) in `data`.
            assert!(e.raw.len() <= limit, "an event past the bound");
            assert!(e.data.len() <= 3 * limit, "an event's data past the bound");
            raw.extend_from_slice(e.raw);
            events.push((e.kind.to_string(), e.data.to_string()));
        });
        last = c;
    }
    let rest = d.finish_each(|e| {
        raw.extend_from_slice(e.raw);
        events.push((e.kind.to_string(), e.data.to_string()));
    });
    raw.extend_from_slice(&rest);
    (events, d.overflowed(), raw)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    // The first two bytes choose the cuts and the bound; the rest is the stream.
    let (head, input) = data.split_at(2);
    let limit = 64 + usize::from(head[1]) * 16;
    let mut cuts: Vec<usize> = (0..usize::from(head[0] % 8))
        .map(|i| (i * 7919 + usize::from(head[0])) % (input.len() + 1))
        .collect();
    cuts.sort_unstable();
    let whole = decode(input, &[], limit);
    let pieces = decode(input, &cuts, limit);
    if !whole.1 && !pieces.1 {
        assert_eq!(whole.0, pieces.0, "events depend on the cuts");
        assert_eq!(pieces.2, input, "raw bytes do not reassemble the input");
    }
});
