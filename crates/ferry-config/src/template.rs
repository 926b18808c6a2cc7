//! Text with `$name` / `${name}` variable references (`access_log_format`, chash
//! `vars_combinations` keys), compiled once into literal and variable segments and rendered
//! against any [`VarSource`] with the access log's escaping.

use crate::app::LogEscape;
use crate::expr::VarSource;
use crate::var::Var;

#[derive(Debug)]
enum Seg {
    Lit(String),
    Var(Var),
}

/// A compiled `access_log_format`.
#[derive(Debug)]
pub struct Template {
    segs: Vec<Seg>,
    escape: LogEscape,
}

impl Template {
    /// Compiles `$name` and `${name}` references; `$` not followed by a name stays literal.
    pub fn compile(format: &str, escape: LogEscape) -> Result<Template, String> {
        let mut segs = Vec::new();
        let mut lit = String::new();
        let b = format.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'$' {
                let (name, next) = if b.get(i + 1) == Some(&b'{') {
                    let end = format[i + 2..]
                        .find('}')
                        .ok_or_else(|| format!("unterminated ${{ at byte {i}"))?;
                    (&format[i + 2..i + 2 + end], i + 3 + end)
                } else {
                    let end = b[i + 1..]
                        .iter()
                        .position(|c| !(c.is_ascii_alphanumeric() || *c == b'_'))
                        .map_or(b.len(), |p| i + 1 + p);
                    (&format[i + 1..end], end)
                };
                if !name.is_empty() {
                    if !lit.is_empty() {
                        segs.push(Seg::Lit(std::mem::take(&mut lit)));
                    }
                    segs.push(Seg::Var(Var::parse(name)?));
                    i = next;
                    continue;
                }
            }
            let ch = format[i..].chars().next().unwrap_or('$');
            lit.push(ch);
            i += ch.len_utf8();
        }
        if !lit.is_empty() {
            segs.push(Seg::Lit(lit));
        }
        Ok(Template { segs, escape })
    }

    /// Renders one line (without the newline). Unset variables print as `-`, as nginx does.
    pub fn render(&self, src: &dyn VarSource, out: &mut String) {
        for s in &self.segs {
            match s {
                Seg::Lit(l) => out.push_str(l),
                Seg::Var(v) => match src.get(v).to_text() {
                    Some(t) if !t.is_empty() => escape_into(&t, self.escape, out),
                    _ => out.push('-'),
                },
            }
        }
    }
}

fn needs_escape(b: u8) -> bool {
    b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b)
}

fn escape_into(s: &str, mode: LogEscape, out: &mut String) {
    match mode {
        LogEscape::None => out.push_str(s),
        LogEscape::Default if !s.bytes().any(needs_escape) => out.push_str(s),
        LogEscape::Default => {
            for &b in s.as_bytes() {
                if b == b'"' || b == b'\\' || !(0x20..0x7f).contains(&b) {
                    out.push_str(&format!("\\x{b:02X}"));
                } else {
                    out.push(b as char);
                }
            }
        }
        LogEscape::Json => {
            let quoted = serde_json::Value::String(s.to_string()).to_string();
            out.push_str(&quoted[1..quoted.len() - 1]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::var::{Builtin, LlmVar, Val};

    struct Src;
    impl VarSource for Src {
        fn get(&self, v: &Var) -> Val<'_> {
            match v {
                Var::Builtin(Builtin::Status) => Val::str("200"),
                Var::Builtin(Builtin::Request) => Val::str("GET /a\"b HTTP/1.1"),
                Var::Llm(LlmVar::Model) => Val::str("gpt-4"),
                _ => Val::Nil,
            }
        }
    }

    fn render(fmt: &str, esc: LogEscape) -> String {
        let t = Template::compile(fmt, esc).unwrap();
        let mut s = String::new();
        t.render(&Src, &mut s);
        s
    }

    #[test]
    fn templates() {
        assert_eq!(
            render("$status $llm_model $upstream_addr", LogEscape::Default),
            "200 gpt-4 -"
        );
        assert_eq!(render("${status}x $ $", LogEscape::Default), "200x $ $");
        assert_eq!(
            render("\"$request\"", LogEscape::Default),
            "\"GET /a\\x22b HTTP/1.1\""
        );
        assert_eq!(render("$request", LogEscape::Json), "GET /a\\\"b HTTP/1.1");
        assert_eq!(render("é$status", LogEscape::None), "é200");
        assert!(Template::compile("${status", LogEscape::Default).is_err());
    }
}
