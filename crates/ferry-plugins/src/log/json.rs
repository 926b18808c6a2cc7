//! A minimal JSON object writer for log entries: strings are copied whole when they need no
//! escaping (one vectorisable scan), else escaped by serde_json. Keys are trusted literals.

/// Writes one JSON object into a `String`; nested objects through [`Obj::obj`].
pub struct Obj<'a> {
    out: &'a mut String,
    first: bool,
}

fn plain(s: &str) -> bool {
    s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\')
}

/// Appends `s` as a JSON string.
pub fn push_str(out: &mut String, s: &str) {
    if plain(s) {
        out.reserve(s.len() + 2);
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else if let Ok(quoted) = serde_json::to_string(s) {
        out.push_str(&quoted);
    }
}

impl<'a> Obj<'a> {
    /// Opens an object; [`Obj::end`] closes it.
    pub fn start(out: &'a mut String) -> Obj<'a> {
        out.push('{');
        Obj { out, first: true }
    }

    fn key(&mut self, k: &str) {
        if !self.first {
            self.out.push(',');
        }
        self.first = false;
        self.out.push('"');
        self.out.push_str(k);
        self.out.push_str("\":");
    }

    pub fn str(&mut self, k: &str, v: &str) -> &mut Self {
        self.key(k);
        push_str(self.out, v);
        self
    }

    pub fn u64(&mut self, k: &str, v: u64) -> &mut Self {
        self.key(k);
        self.out.push_str(itoa::Buffer::new().format(v));
        self
    }

    /// Milliseconds from seconds, with microsecond precision (`2.514`), integer formatting only.
    pub fn ms(&mut self, k: &str, secs: f64) -> &mut Self {
        self.key(k);
        let us = (secs.max(0.0) * 1_000_000.0).round() as u64;
        self.out.push_str(itoa::Buffer::new().format(us / 1000));
        let frac = us % 1000;
        if frac != 0 {
            self.out.push('.');
            let mut buf = itoa::Buffer::new();
            let digits = &buf.format(1000 + frac)[1..];
            self.out.push_str(digits.trim_end_matches('0'));
        }
        self
    }

    pub fn bool(&mut self, k: &str, v: bool) -> &mut Self {
        self.key(k);
        self.out.push_str(if v { "true" } else { "false" });
        self
    }

    /// A value that is already JSON text.
    pub fn raw(&mut self, k: &str, json: &str) -> &mut Self {
        self.key(k);
        self.out.push_str(json);
        self
    }

    /// A nested object filled by `f`.
    pub fn obj(&mut self, k: &str, f: impl FnOnce(&mut Obj<'_>)) -> &mut Self {
        self.key(k);
        let mut inner = Obj::start(self.out);
        f(&mut inner);
        inner.end();
        self
    }

    pub fn end(self) {
        self.out.push('}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_valid_json() {
        let mut s = String::new();
        let mut o = Obj::start(&mut s);
        o.str("a", "plain")
            .str("b", "q\"uote\\ \n\u{1} é")
            .u64("n", 42)
            .bool("t", true)
            .raw("r", r#"[1,{"x":null}]"#)
            .ms("m1", 0.002514)
            .ms("m2", 1.5)
            .ms("m3", 0.0000004)
            .obj("o", |o| {
                o.str("k", "v");
            })
            .obj("empty", |_| {});
        o.end();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"a": "plain", "b": "q\"uote\\ \n\u{1} é", "n": 42, "t": true, "r": [1, {"x": null}], "m1": 2.514, "m2": 1500, "m3": 0, "o": {"k": "v"}, "empty": {}})
        );
    }
}
