//! Writing JSON text straight into a buffer, for the stream converters' events: strings escaped
//! exactly as `serde_json` escapes them, numbers, no `Value` tree and no allocation of its own.

use std::fmt::Write as _;

/// Appends `s` as a JSON string (quotes, `"` `\` and control characters escaped; everything
/// else as it is, as `serde_json` writes it).
pub fn push_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let mut start = 0;
    for (i, b) in s.bytes().enumerate() {
        let esc = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0..=0x1f => "",
            _ => continue,
        };
        // `i` is an ASCII byte, so both slices end on character boundaries.
        out.push_str(&s[start..i]);
        if esc.is_empty() {
            let _ = write!(out, "\\u{:04x}", b);
        } else {
            out.push_str(esc);
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Appends an unsigned integer.
pub fn push_u64(out: &mut String, n: u64) {
    let _ = write!(out, "{n}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same text as `serde_json` for every kind of character.
    #[test]
    fn escapes_like_serde_json() {
        let cases = [
            "",
            "plain",
            "quote \" and \\ backslash",
            "lines\nand\rtabs\t",
            "\u{0}\u{1}\u{8}\u{c}\u{1f} controls",
            "unicode é ✓ 🚢 and \u{7f} DEL / slash",
        ];
        for c in cases {
            let mut s = String::new();
            push_str(&mut s, c);
            assert_eq!(s, serde_json::to_string(c).unwrap(), "{c:?}");
        }
        let mut s = String::new();
        push_u64(&mut s, 18_446_744_073_709_551_615);
        assert_eq!(s, "18446744073709551615");
    }
}
