//! Writing JSON text straight into a buffer, for the stream converters' events: strings escaped
//! exactly as `serde_json` escapes them, numbers, no `Value` tree and no allocation of its own.

use std::fmt::Write as _;

/// Appends `s` as a JSON string (quotes, `"` `\` and control characters escaped; everything
/// else as it is, as `serde_json` writes it).
pub fn push_str(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let b = s.as_bytes();
    let mut start = 0;
    // Runs of bytes that need no escape go out whole.
    while let Some(n) = b[start..].iter().position(|&c| ESCAPE[usize::from(c)]) {
        let i = start + n;
        // `i` is an ASCII byte, so both slices end on character boundaries.
        out.push_str(&s[start..i]);
        match b[i] {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            c => {
                let _ = write!(out, "\\u{c:04x}");
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Bytes a JSON string escapes: `"`, `\` and the control characters.
pub(crate) const ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

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
