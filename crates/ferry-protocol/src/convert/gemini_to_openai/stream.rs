//! The Gemini stream state machine: OpenAI Chat chunks in, `GenerateContentResponse` events
//! out — text as it arrives (text-only chunks written straight out), tool calls assembled and
//! sent whole with the one final event that carries the finish reason and usage.

use super::{args, finish_reason, usage_metadata};
use crate::convert::{OutEvent, StreamConverter};
use crate::json_out;
use crate::text_chunk::ChunkShape;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use std::borrow::Cow;
use std::collections::BTreeMap;

/// A tool call being assembled from stream deltas.
#[derive(Default)]
struct PendingCall {
    id: Option<String>,
    name: String,
    arguments: String,
}

/// The stream converter: OpenAI Chat chunks in, `GenerateContentResponse` events out.
pub struct Stream {
    include_thoughts: bool,
    model_version: Option<String>,
    response_id: Option<String>,
    /// By (choice index, tool index).
    calls: BTreeMap<(u64, u64), PendingCall>,
    /// The finish reasons seen, by choice index.
    finish: BTreeMap<u64, &'static str>,
    usage: Option<Value>,
    produced: bool,
    done: bool,
    /// The shape of the upstream's text chunks.
    shape: ChunkShape,
    /// The end of a text event (model version, response id), written once they are known.
    tail: Option<String>,
}

impl Stream {
    pub fn new(include_thoughts: bool) -> Stream {
        Stream {
            include_thoughts,
            model_version: None,
            response_id: None,
            calls: BTreeMap::new(),
            finish: BTreeMap::new(),
            usage: None,
            produced: false,
            done: false,
            shape: ChunkShape::default(),
            tail: None,
        }
    }

    fn emit(&mut self, candidates: Vec<Value>, usage: Option<Value>, out: &mut Vec<OutEvent>) {
        let mut e = json!({"candidates": candidates});
        if let Some(u) = usage {
            e["usageMetadata"] = u;
        }
        if let Some(m) = &self.model_version {
            e["modelVersion"] = Value::String(m.clone());
        }
        if let Some(id) = &self.response_id {
            e["responseId"] = Value::String(id.clone());
        }
        self.produced = true;
        out.push(OutEvent::new("message", e.to_string()));
    }

    /// The one final event: pending calls, the finish reasons, the usage.
    fn close(&mut self, out: &mut Vec<OutEvent>) {
        if self.done {
            return;
        }
        self.done = true;
        if self.finish.is_empty() {
            let reason = if self.produced || !self.calls.is_empty() {
                "STOP"
            } else {
                "OTHER"
            };
            self.finish.insert(0, reason);
        }
        let calls = std::mem::take(&mut self.calls);
        let mut candidates = Vec::new();
        for (index, reason) in std::mem::take(&mut self.finish) {
            let mut parts: Vec<Value> = calls
                .iter()
                .filter(|((c, _), _)| *c == index)
                .map(|(_, p)| {
                    let mut fc = json!({"name": p.name, "args": args(Some(&p.arguments))});
                    if let Some(id) = &p.id {
                        fc["id"] = Value::String(id.clone());
                    }
                    json!({"functionCall": fc})
                })
                .collect();
            if parts.is_empty() {
                parts.push(json!({"text": ""}));
            }
            candidates.push(json!({"content": {"role": "model", "parts": parts}, "finishReason": reason, "index": index}));
        }
        let usage = self.usage.take();
        self.emit(candidates, usage, out);
    }
}

/// An upstream chunk read without building a tree (the common case: text deltas only).
#[derive(Deserialize)]
struct ChunkView<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    model: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    choices: Option<Vec<ChoiceView<'a>>>,
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct ChoiceView<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(borrow, default)]
    delta: Option<DeltaView<'a>>,
    #[serde(borrow, default)]
    finish_reason: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct DeltaView<'a> {
    #[serde(borrow, default)]
    content: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<&'a RawValue>,
    #[serde(borrow, default)]
    reasoning: Option<&'a RawValue>,
    #[serde(borrow, default)]
    tool_calls: Option<&'a RawValue>,
}

/// A JSON value that is absent or `null`.
fn none(v: Option<&RawValue>) -> bool {
    v.is_none_or(|r| r.get() == "null")
}

/// A text event's opening, up to its text; and what follows the text, up to the index.
const CANDIDATES: &str = "{\"candidates\":[";
const CANDIDATE_TEXT: &str = "{\"candidates\":[{\"content\":{\"parts\":[{\"text\":";
const CANDIDATE_END: &str = "}],\"role\":\"model\"},\"index\":";

impl Stream {
    /// A chunk of text deltas only, written straight out as one event (the same bytes the
    /// general path writes); false when the chunk carries anything else.
    fn text_only(&mut self, data: &str, out: &mut Vec<OutEvent>) -> bool {
        // The usual chunk (one choice, text only) is scanned, its text copied as escaped.
        if let Some(c) = self.shape.text_chunk(data) {
            self.learn(c.model, c.id);
            if let Some(t) = c.text.filter(|t| !t.is_empty()) {
                let mut s = String::with_capacity(t.len() + 128);
                s.push_str(CANDIDATE_TEXT);
                s.push('"');
                s.push_str(t);
                s.push('"');
                self.end_candidates(c.index.unwrap_or(0), s, out);
            }
            return true;
        }
        let Ok(c) = serde_json::from_str::<ChunkView<'_>>(data) else {
            return false;
        };
        let choices = c.choices.as_deref().unwrap_or_default();
        let plain = none(c.usage)
            && !choices.is_empty()
            && choices.iter().all(|ch| {
                none(ch.finish_reason)
                    && ch.delta.as_ref().is_some_and(|d| {
                        none(d.tool_calls)
                            && (!self.include_thoughts
                                || (none(d.reasoning_content) && none(d.reasoning)))
                    })
            });
        if !plain {
            return false;
        }
        self.learn(c.model.as_deref(), c.id.as_deref());
        let mut s = String::with_capacity(data.len() + 64);
        s.push_str(CANDIDATES);
        let mut any = false;
        for (k, ch) in choices.iter().enumerate() {
            let Some(t) = ch
                .delta
                .as_ref()
                .and_then(|d| d.content.as_deref())
                .filter(|t| !t.is_empty())
            else {
                continue;
            };
            if any {
                s.push(',');
            }
            any = true;
            s.push_str(&CANDIDATE_TEXT[CANDIDATES.len()..]);
            json_out::push_str(&mut s, t);
            s.push_str(CANDIDATE_END);
            json_out::push_u64(&mut s, ch.index.unwrap_or(k as u64));
            s.push('}');
        }
        if !any {
            return true;
        }
        s.push(']');
        self.end_event(s, out);
        true
    }

    /// Ends an event of one text candidate (its text written) with its index.
    fn end_candidates(&mut self, index: u64, mut s: String, out: &mut Vec<OutEvent>) {
        s.push_str(CANDIDATE_END);
        json_out::push_u64(&mut s, index);
        s.push_str("}]");
        self.end_event(s, out);
    }

    /// Keeps the first model version and response id the upstream reports.
    fn learn(&mut self, model: Option<&str>, id: Option<&str>) {
        if self.model_version.is_none() && model.is_some() {
            self.model_version = model.map(String::from);
            self.tail = None;
        }
        if self.response_id.is_none() && id.is_some() {
            self.response_id = id.map(String::from);
            self.tail = None;
        }
    }

    /// Ends an event (after its candidates) with the model version and response id.
    fn end_event(&mut self, mut s: String, out: &mut Vec<OutEvent>) {
        let (model, id) = (&self.model_version, &self.response_id);
        let tail = self.tail.get_or_insert_with(|| {
            let mut t = String::new();
            if let Some(m) = model {
                t.push_str(",\"modelVersion\":");
                json_out::push_str(&mut t, m);
            }
            if let Some(id) = id {
                t.push_str(",\"responseId\":");
                json_out::push_str(&mut t, id);
            }
            t.push('}');
            t
        });
        s.push_str(tail);
        self.produced = true;
        out.push(OutEvent::new("message", s));
    }
}

impl StreamConverter for Stream {
    fn event(&mut self, _kind: &str, data: &str, out: &mut Vec<OutEvent>) {
        if self.done {
            return;
        }
        if data.trim() == "[DONE]" {
            self.close(out);
            return;
        }
        if self.text_only(data, out) {
            return;
        }
        let Ok(chunk) = serde_json::from_str::<Value>(data) else {
            return;
        };
        self.learn(chunk["model"].as_str(), chunk["id"].as_str());
        if let Some(u) = usage_metadata(&chunk["usage"]) {
            self.usage = Some(u);
        }
        let mut candidates = Vec::new();
        for (k, c) in chunk["choices"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let index = c["index"].as_u64().unwrap_or(k as u64);
            let d = &c["delta"];
            let mut parts = Vec::new();
            if self.include_thoughts
                && let Some(r) = d["reasoning_content"].as_str().or(d["reasoning"].as_str())
                && !r.is_empty()
            {
                parts.push(json!({"text": r, "thought": true}));
            }
            if let Some(t) = d["content"].as_str().filter(|t| !t.is_empty()) {
                parts.push(json!({"text": t}));
            }
            for tc in d["tool_calls"].as_array().into_iter().flatten() {
                let ti = tc["index"].as_u64().unwrap_or(0);
                let p = self.calls.entry((index, ti)).or_default();
                if let Some(id) = tc["id"].as_str() {
                    p.id = Some(id.into());
                }
                if let Some(n) = tc["function"]["name"].as_str() {
                    p.name.push_str(n);
                }
                if let Some(a) = tc["function"]["arguments"].as_str() {
                    p.arguments.push_str(a);
                }
            }
            if !parts.is_empty() {
                candidates
                    .push(json!({"content": {"role": "model", "parts": parts}, "index": index}));
            }
            if let Some(r) = c["finish_reason"].as_str() {
                self.finish.insert(index, finish_reason(Some(r)));
            }
        }
        if !candidates.is_empty() {
            self.emit(candidates, None, out);
        }
        // The usage chunk after the finish closes the stream.
        if !self.finish.is_empty() && self.usage.is_some() {
            self.close(out);
        }
    }

    fn finish(&mut self, out: &mut Vec<OutEvent>) {
        self.close(out);
    }
}
