//! Lenient typed views of the few response fields Ferry reads (usage, text, tool calls), so
//! that observing a response or a stream event skips everything else without building a
//! `serde_json::Value` tree. A field of an unexpected type reads as absent, never as an error,
//! which matches what the `Value`-based readers did.

use serde::de::{Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, de};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// Visitor methods answering `$v` for every scalar (numbers, booleans, strings, null).
macro_rules! scalars_as {
    ($t:ty, $v:expr) => {
        fn visit_u64<E>(self, _: u64) -> Result<$t, E> {
            Ok($v)
        }
        fn visit_i64<E>(self, _: i64) -> Result<$t, E> {
            Ok($v)
        }
        fn visit_f64<E>(self, _: f64) -> Result<$t, E> {
            Ok($v)
        }
        fn visit_bool<E>(self, _: bool) -> Result<$t, E> {
            Ok($v)
        }
        fn visit_str<E>(self, _: &str) -> Result<$t, E> {
            Ok($v)
        }
        fn visit_unit<E>(self) -> Result<$t, E> {
            Ok($v)
        }
    };
}

/// Visitor methods that skip an object or an array and answer `$v`.
macro_rules! skip_map_as {
    ($t:ty, $v:expr) => {
        fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<$t, A::Error> {
            while m.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
            Ok($v)
        }
    };
}
macro_rules! skip_seq_as {
    ($t:ty, $v:expr) => {
        fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<$t, A::Error> {
            while s.next_element::<IgnoredAny>()?.is_some() {}
            Ok($v)
        }
    };
}

/// A token count: a non-negative integer, a float (truncated, negatives as 0), else 0.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Num(pub u64);

impl<'de> Deserialize<'de> for Num {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Num, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Num;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Num, E> {
                Ok(Num(v))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Num, E> {
                Ok(Num(v.max(0) as u64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Num, E> {
                Ok(Num(v.max(0.0) as u64))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Num, E> {
                Ok(Num(0))
            }
            fn visit_str<E>(self, _: &str) -> Result<Num, E> {
                Ok(Num(0))
            }
            fn visit_unit<E>(self) -> Result<Num, E> {
                Ok(Num(0))
            }
            skip_map_as!(Num, Num(0));
            skip_seq_as!(Num, Num(0));
        }
        d.deserialize_any(V)
    }
}

/// A non-negative integer, else absent (what `Value::as_u64` reads; unlike [`Num`], absent and
/// `0` differ).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Index(pub Option<u64>);

impl<'de> Deserialize<'de> for Index {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Index, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Index;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_u64<E>(self, v: u64) -> Result<Index, E> {
                Ok(Index(Some(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Index, E> {
                Ok(Index(u64::try_from(v).ok()))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Index, E> {
                Ok(Index(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Index, E> {
                Ok(Index(None))
            }
            fn visit_str<E>(self, _: &str) -> Result<Index, E> {
                Ok(Index(None))
            }
            fn visit_unit<E>(self) -> Result<Index, E> {
                Ok(Index(None))
            }
            skip_map_as!(Index, Index(None));
            skip_seq_as!(Index, Index(None));
        }
        d.deserialize_any(V)
    }
}

/// A string (borrowed from the input when it has no escapes), else absent.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Text<'a>(pub Option<Cow<'a, str>>);

impl<'a> Text<'a> {
    pub fn as_str(&self) -> Option<&str> {
        self.0.as_deref()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Text<'a>, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Borrowed(v))))
            }
            fn visit_str<E>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Owned(v.to_owned()))))
            }
            fn visit_string<E>(self, v: String) -> Result<Text<'a>, E> {
                Ok(Text(Some(Cow::Owned(v))))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            fn visit_unit<E>(self) -> Result<Text<'a>, E> {
                Ok(Text(None))
            }
            skip_map_as!(Text<'a>, Text(None));
            skip_seq_as!(Text<'a>, Text(None));
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// An object read as `T`, else absent (`null`, other types).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Obj<T>(pub Option<T>);

impl<T> Default for Obj<T> {
    fn default() -> Self {
        Obj(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Obj<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Obj<T>, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = Obj<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_map<A: MapAccess<'de>>(self, m: A) -> Result<Obj<T>, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(m)).map(|t| Obj(Some(t)))
            }
            skip_seq_as!(Obj<T>, Obj(None));
            scalars_as!(Obj<T>, Obj(None));
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// An array read element by element as `T` (absent when not an array; `present` tells).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List<T> {
    pub items: Vec<T>,
    pub present: bool,
}

impl<T> Default for List<T> {
    fn default() -> Self {
        List {
            items: Vec::new(),
            present: false,
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<List<T>, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = List<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut s: A) -> Result<List<T>, A::Error> {
                let mut items = Vec::new();
                while let Some(t) = s.next_element::<T>()? {
                    items.push(t);
                }
                Ok(List {
                    items,
                    present: true,
                })
            }
            skip_map_as!(List<T>, List::default());
            scalars_as!(List<T>, List::default());
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// The element count of an array (0 when not an array), without reading the elements.
pub type Count = List<IgnoredAny>;

/// OpenAI chat / embeddings `usage`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct OpenAiUsage {
    pub prompt_tokens: Num,
    pub completion_tokens: Num,
    pub total_tokens: Num,
    pub prompt_tokens_details: Obj<PromptDetails>,
    pub prompt_cache_hit_tokens: Num,
    pub completion_tokens_details: Obj<CompletionDetails>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PromptDetails {
    pub cached_tokens: Num,
    pub cache_creation_input_tokens: Num,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct CompletionDetails {
    pub reasoning_tokens: Num,
}

impl OpenAiUsage {
    pub fn usage(&self) -> crate::Usage {
        let details = self.prompt_tokens_details.0.as_ref();
        let cache_read = match details.map_or(0, |d| d.cached_tokens.0) {
            0 => self.prompt_cache_hit_tokens.0,
            x => x,
        };
        let prompt = self.prompt_tokens.0;
        let completion = self.completion_tokens.0;
        crate::Usage {
            prompt,
            completion,
            total: self.total_tokens.0.max(prompt.saturating_add(completion)),
            cache_read,
            cache_creation: details.map_or(0, |d| d.cache_creation_input_tokens.0),
            reasoning: self
                .completion_tokens_details
                .0
                .as_ref()
                .map_or(0, |d| d.reasoning_tokens.0),
        }
    }
}

/// The part of a chat message or stream delta Ferry reads.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ChatMessage<'a> {
    #[serde(borrow)]
    pub content: Text<'a>,
    pub tool_calls: Count,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ChatChoice<'a> {
    #[serde(borrow)]
    pub message: Obj<ChatMessage<'a>>,
    #[serde(borrow)]
    pub delta: Obj<ChatMessage<'a>>,
}

/// A chat completion or a chat completion chunk.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct ChatBody<'a> {
    #[serde(borrow)]
    pub choices: List<Obj<ChatChoice<'a>>>,
    pub usage: Obj<OpenAiUsage>,
}

/// The JSON type of a field, read without keeping its content (strings are kept).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub enum Shape<'a> {
    #[default]
    Absent,
    Null,
    Bool(bool),
    Number,
    Str(Cow<'a, str>),
    Array,
    Object,
}

impl<'de: 'a, 'a> Deserialize<'de> for Shape<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Shape<'a>, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Shape<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Shape<'a>, E> {
                Ok(Shape::Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Shape<'a>, E> {
                Ok(Shape::Str(Cow::Owned(v.to_owned())))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Shape<'a>, E> {
                Ok(Shape::Number)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Shape<'a>, E> {
                Ok(Shape::Number)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Shape<'a>, E> {
                Ok(Shape::Number)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Shape<'a>, E> {
                Ok(Shape::Bool(v))
            }
            fn visit_unit<E>(self) -> Result<Shape<'a>, E> {
                Ok(Shape::Null)
            }
            skip_map_as!(Shape<'a>, Shape::Object);
            skip_seq_as!(Shape<'a>, Shape::Array);
        }
        d.deserialize_any(V(PhantomData))
    }
}

impl Shape<'_> {
    pub fn is_present(&self) -> bool {
        !matches!(self, Shape::Absent | Shape::Null)
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Shape::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// `stream_options`: whether the client asked for `include_usage` itself.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum StreamOptions {
    #[default]
    Absent,
    /// An object with `include_usage: true`.
    WantsUsage,
    /// Anything else (an object without it, `null`, another type).
    Other,
}

#[derive(Deserialize)]
struct StreamOptionsFields<'a> {
    #[serde(default, borrow)]
    include_usage: Shape<'a>,
}

impl<'de> Deserialize<'de> for StreamOptions {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StreamOptions, D::Error> {
        let o = Obj::<StreamOptionsFields<'de>>::deserialize(d)?;
        Ok(match o.0 {
            Some(f) if f.include_usage == Shape::Bool(true) => StreamOptions::WantsUsage,
            _ => StreamOptions::Other,
        })
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct MetadataPeek<'a> {
    #[serde(borrow)]
    pub user_id: Text<'a>,
}

/// What Ferry reads of a request body that is a JSON object, without building a `Value`:
/// enough to check it, detect its protocol, record its variables, and decide whether it must
/// change on the way upstream. A duplicated field makes the read fail (callers then fall
/// back to a full parse, which keeps the last value as JSON parsers do).
#[derive(Debug, Default)]
pub struct RequestPeek<'a> {
    pub model: Shape<'a>,
    pub stream: Shape<'a>,
    pub messages: Shape<'a>,
    pub input: Shape<'a>,
    pub tools: Count,
    pub user: Text<'a>,
    pub safety_identifier: Text<'a>,
    pub metadata: Obj<MetadataPeek<'a>>,
    pub stream_options: StreamOptions,
    pub has_max_tokens: bool,
    /// Number of fields.
    pub fields: usize,
}

impl<'de: 'a, 'a> Deserialize<'de> for RequestPeek<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RequestPeek<'a>, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = RequestPeek<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<RequestPeek<'a>, A::Error> {
                let mut p = RequestPeek::default();
                let mut seen = 0u16;
                while let Some(k) = m.next_key::<Cow<'de, str>>()? {
                    p.fields += 1;
                    let bit = match k.as_ref() {
                        "model" => 1,
                        "stream" => 2,
                        "messages" => 4,
                        "input" => 8,
                        "tools" => 16,
                        "user" => 32,
                        "safety_identifier" => 64,
                        "metadata" => 128,
                        "stream_options" => 256,
                        "max_tokens" => 512,
                        _ => 0,
                    };
                    if seen & bit != 0 {
                        return Err(de::Error::custom("duplicate field"));
                    }
                    seen |= bit;
                    match bit {
                        1 => p.model = m.next_value()?,
                        2 => p.stream = m.next_value()?,
                        4 => p.messages = m.next_value()?,
                        8 => p.input = m.next_value()?,
                        16 => p.tools = m.next_value()?,
                        32 => p.user = m.next_value()?,
                        64 => p.safety_identifier = m.next_value()?,
                        128 => p.metadata = m.next_value()?,
                        256 => p.stream_options = m.next_value()?,
                        512 => {
                            p.has_max_tokens = true;
                            m.next_value::<IgnoredAny>()?;
                        }
                        _ => {
                            m.next_value::<IgnoredAny>()?;
                        }
                    }
                }
                Ok(p)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}
