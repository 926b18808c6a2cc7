//! Request-body shaping for the provider, in order: `options` overwrite the client's fields,
//! `stream_options.include_usage` is merged in for streamed chat, `override.llm_options`
//! `max_tokens` lands in the provider's field, `override.request_body` is deep-merged, and
//! `model` is removed for providers that take it from the URL.

use serde_json::{Map, Value};

/// Where a provider wants the token limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxTokensField {
    MaxTokens,
    /// `max_completion_tokens`; `delete_max_tokens` also removes a client `max_tokens`.
    MaxCompletionTokens {
        delete_max_tokens: bool,
    },
    MaxOutputTokens,
}

/// What to apply, already resolved for the target protocol.
#[derive(Debug, Default)]
pub struct Shaping<'a> {
    pub options: Option<&'a Map<String, Value>>,
    pub max_tokens: Option<(u64, MaxTokensField)>,
    pub request_body: Option<&'a Map<String, Value>>,
    pub force: bool,
    pub remove_model: bool,
    /// The target protocol is OpenAI chat, so a stream asks for usage.
    pub inject_usage: bool,
}

/// The result of shaping.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shaped {
    /// The body differs from the client's.
    pub changed: bool,
    /// The final body asks for a stream.
    pub stream: bool,
    /// The client itself asked for `stream_options.include_usage`.
    pub client_wants_usage: bool,
}

/// Shapes `body` in place.
pub fn shape(body: &mut Map<String, Value>, s: &Shaping<'_>) -> Shaped {
    let mut out = Shaped::default();
    if let Some(opts) = s.options {
        for (k, v) in opts {
            if body.get(k) != Some(v) {
                body.insert(k.clone(), v.clone());
                out.changed = true;
            }
        }
    }
    out.stream = body.get("stream") == Some(&Value::Bool(true));
    if s.inject_usage && out.stream {
        match body.get_mut("stream_options") {
            Some(Value::Object(so)) => {
                if so.get("include_usage") == Some(&Value::Bool(true)) {
                    out.client_wants_usage = true;
                } else {
                    so.insert("include_usage".into(), Value::Bool(true));
                    out.changed = true;
                }
            }
            _ => {
                let mut so = Map::new();
                so.insert("include_usage".into(), Value::Bool(true));
                body.insert("stream_options".into(), Value::Object(so));
                out.changed = true;
            }
        }
    }
    if let Some((n, field)) = s.max_tokens {
        let key = match field {
            MaxTokensField::MaxTokens => "max_tokens",
            MaxTokensField::MaxCompletionTokens { delete_max_tokens } => {
                if delete_max_tokens && body.remove("max_tokens").is_some() {
                    out.changed = true;
                }
                "max_completion_tokens"
            }
            MaxTokensField::MaxOutputTokens => "max_output_tokens",
        };
        let v = Value::from(n);
        if body.get(key) != Some(&v) {
            body.insert(key.into(), v);
            out.changed = true;
        }
    }
    if let Some(patch) = s.request_body {
        out.changed |= merge(body, patch, s.force);
    }
    if s.remove_model && body.remove("model").is_some() {
        out.changed = true;
    }
    out
}

/// APISIX's deep merge: objects recurse; other values replace only an absent key, or any key
/// when `force`. Returns whether anything changed.
pub fn merge(target: &mut Map<String, Value>, patch: &Map<String, Value>, force: bool) -> bool {
    let mut changed = false;
    for (k, pv) in patch {
        match (target.get_mut(k), pv) {
            (Some(Value::Object(t)), Value::Object(p)) => changed |= merge(t, p, force),
            (Some(tv), _) => {
                if force && tv != pv {
                    *tv = pv.clone();
                    changed = true;
                }
            }
            (None, _) => {
                target.insert(k.clone(), pv.clone());
                changed = true;
            }
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn nothing_to_do_is_unchanged() {
        let mut b = obj(json!({"model": "gpt-4", "messages": []}));
        let opts = obj(json!({"model": "gpt-4"}));
        let r = shape(
            &mut b,
            &Shaping {
                options: Some(&opts),
                inject_usage: true,
                ..Shaping::default()
            },
        );
        assert!(!r.changed);
    }

    #[test]
    fn options_then_stream_options_merged() {
        let mut b = obj(json!({"model": "x", "stream_options": {"foo": 1}}));
        let opts = obj(json!({"model": "gpt-4", "stream": true, "temperature": 0.2}));
        let r = shape(
            &mut b,
            &Shaping {
                options: Some(&opts),
                inject_usage: true,
                ..Shaping::default()
            },
        );
        assert!(r.changed && r.stream && !r.client_wants_usage);
        assert_eq!(
            Value::Object(b),
            json!({"model": "gpt-4", "stream": true, "temperature": 0.2,
            "stream_options": {"foo": 1, "include_usage": true}})
        );
        let mut b = obj(json!({"stream": true, "stream_options": {"include_usage": true}}));
        let r = shape(
            &mut b,
            &Shaping {
                inject_usage: true,
                ..Shaping::default()
            },
        );
        assert!(!r.changed && r.client_wants_usage);
        let mut b = obj(json!({"stream": true}));
        let r = shape(
            &mut b,
            &Shaping {
                inject_usage: false,
                ..Shaping::default()
            },
        );
        assert!(!r.changed && r.stream);
    }

    #[test]
    fn max_tokens_fields() {
        let mut b = obj(json!({"max_tokens": 999}));
        shape(
            &mut b,
            &Shaping {
                max_tokens: Some((
                    555,
                    MaxTokensField::MaxCompletionTokens {
                        delete_max_tokens: true,
                    },
                )),
                ..Shaping::default()
            },
        );
        assert_eq!(Value::Object(b), json!({"max_completion_tokens": 555}));
        let mut b = obj(json!({"max_tokens": 999}));
        shape(
            &mut b,
            &Shaping {
                max_tokens: Some((
                    1,
                    MaxTokensField::MaxCompletionTokens {
                        delete_max_tokens: false,
                    },
                )),
                ..Shaping::default()
            },
        );
        assert_eq!(
            Value::Object(b),
            json!({"max_tokens": 999, "max_completion_tokens": 1})
        );
        let mut b = obj(json!({"max_tokens": 999}));
        shape(
            &mut b,
            &Shaping {
                max_tokens: Some((444, MaxTokensField::MaxTokens)),
                ..Shaping::default()
            },
        );
        assert_eq!(b["max_tokens"], 444);
        let mut b = obj(json!({}));
        shape(
            &mut b,
            &Shaping {
                max_tokens: Some((333, MaxTokensField::MaxOutputTokens)),
                ..Shaping::default()
            },
        );
        assert_eq!(b["max_output_tokens"], 333);
    }

    #[test]
    fn request_body_merge() {
        // default: client values win, objects merge, missing keys added
        let mut b = obj(
            json!({"max_tokens": 999, "stream": true, "stream_options": {"include_usage": true}}),
        );
        let patch =
            obj(json!({"max_tokens": 555, "stream_options": {"extra": 1}, "stop": ["a", "b"]}));
        let r = shape(
            &mut b,
            &Shaping {
                request_body: Some(&patch),
                ..Shaping::default()
            },
        );
        assert!(r.changed);
        assert_eq!(
            Value::Object(b),
            json!({"max_tokens": 999, "stream": true,
            "stream_options": {"include_usage": true, "extra": 1}, "stop": ["a", "b"]})
        );
        // force: patch wins; arrays replace wholesale
        let mut b = obj(json!({"max_tokens": 999, "stop": ["x"]}));
        let patch = obj(json!({"max_tokens": 555, "stop": ["a", "b"]}));
        shape(
            &mut b,
            &Shaping {
                request_body: Some(&patch),
                force: true,
                ..Shaping::default()
            },
        );
        assert_eq!(
            Value::Object(b),
            json!({"max_tokens": 555, "stop": ["a", "b"]})
        );
        // request_body comes after llm_options
        let mut b = obj(json!({}));
        let patch = obj(json!({"max_completion_tokens": 200}));
        shape(
            &mut b,
            &Shaping {
                max_tokens: Some((
                    100,
                    MaxTokensField::MaxCompletionTokens {
                        delete_max_tokens: true,
                    },
                )),
                request_body: Some(&patch),
                force: true,
                ..Shaping::default()
            },
        );
        assert_eq!(b["max_completion_tokens"], 200);
    }

    #[test]
    fn remove_model() {
        let mut b = obj(json!({"model": "gpt-4", "messages": []}));
        let r = shape(
            &mut b,
            &Shaping {
                remove_model: true,
                ..Shaping::default()
            },
        );
        assert!(r.changed);
        assert!(!b.contains_key("model"));
    }
}
