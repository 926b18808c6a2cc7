//! Request variables by name (`uri`, `arg_x`, `http_x`, `cookie_x`, `post_arg.a.b`, …), parsed
//! once at config load into [`Var`] so the data plane never looks at a variable name again.
//! Used by route `vars` expressions and by access-log templates alike.

use serde_json::Value;
use serde_json_path::JsonPath;
use std::borrow::Cow;

/// Variables with a fixed name that the gateway knows how to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    Uri,
    RequestUri,
    Host,
    RemoteAddr,
    RemotePort,
    RemoteUser,
    ServerAddr,
    ServerPort,
    ServerProtocol,
    RequestMethod,
    Scheme,
    QueryString,
    Request,
    RequestLength,
    ContentType,
    ContentLength,
    Hostname,
    RouteId,
    RouteName,
    ServiceId,
    ServiceName,
    RequestId,
    Status,
    BodyBytesSent,
    BytesSent,
    RequestTime,
    TimeLocal,
    TimeIso8601,
    Msec,
    UpstreamAddr,
    /// The `ai-proxy-multi` instance picked (APISIX's `ctx.balancer_ip`).
    BalancerIp,
    UpstreamStatus,
    UpstreamConnectTime,
    UpstreamHeaderTime,
    UpstreamResponseTime,
    UpstreamResponseLength,
    UpstreamUri,
    UpstreamHost,
    UpstreamScheme,
    ConsumerName,
    ConsumerGroupId,
}

const BUILTINS: &[(&str, Builtin)] = &[
    ("consumer_name", Builtin::ConsumerName),
    ("consumer_group_id", Builtin::ConsumerGroupId),
    ("uri", Builtin::Uri),
    ("document_uri", Builtin::Uri),
    ("request_uri", Builtin::RequestUri),
    ("host", Builtin::Host),
    ("remote_addr", Builtin::RemoteAddr),
    ("remote_port", Builtin::RemotePort),
    ("remote_user", Builtin::RemoteUser),
    ("server_addr", Builtin::ServerAddr),
    ("server_port", Builtin::ServerPort),
    ("server_protocol", Builtin::ServerProtocol),
    ("request_method", Builtin::RequestMethod),
    ("scheme", Builtin::Scheme),
    ("query_string", Builtin::QueryString),
    ("args", Builtin::QueryString),
    ("request", Builtin::Request),
    ("request_line", Builtin::Request),
    ("request_length", Builtin::RequestLength),
    ("content_type", Builtin::ContentType),
    ("content_length", Builtin::ContentLength),
    ("hostname", Builtin::Hostname),
    ("route_id", Builtin::RouteId),
    ("route_name", Builtin::RouteName),
    ("service_id", Builtin::ServiceId),
    ("service_name", Builtin::ServiceName),
    ("apisix_request_id", Builtin::RequestId),
    ("request_id", Builtin::RequestId),
    ("status", Builtin::Status),
    ("body_bytes_sent", Builtin::BodyBytesSent),
    ("bytes_sent", Builtin::BytesSent),
    ("request_time", Builtin::RequestTime),
    ("time_local", Builtin::TimeLocal),
    ("time_iso8601", Builtin::TimeIso8601),
    ("msec", Builtin::Msec),
    ("upstream_addr", Builtin::UpstreamAddr),
    ("balancer_ip", Builtin::BalancerIp),
    ("upstream_status", Builtin::UpstreamStatus),
    ("upstream_connect_time", Builtin::UpstreamConnectTime),
    ("upstream_header_time", Builtin::UpstreamHeaderTime),
    ("upstream_response_time", Builtin::UpstreamResponseTime),
    ("upstream_response_length", Builtin::UpstreamResponseLength),
    ("upstream_uri", Builtin::UpstreamUri),
    ("upstream_host", Builtin::UpstreamHost),
    ("upstream_scheme", Builtin::UpstreamScheme),
];

/// The variables `ai-proxy` records, read from the context's typed LLM stats. Unset ones print
/// APISIX's declared defaults (`0` tokens, `false`, `traditional_http`), so an access log on a
/// route without `ai-proxy` shows `0` rather than `-`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LlmVar {
    RequestType,
    Provider,
    RequestModel,
    Model,
    Stream,
    PromptTokens,
    CompletionTokens,
    TotalTokens,
    CacheReadInputTokens,
    CacheCreationInputTokens,
    ReasoningTokens,
    TimeToFirstToken,
    UpstreamResponseTime,
    ToolCount,
    HasToolCalls,
    EndUserId,
    ResponseText,
    ContentRiskLevel,
}

const LLM_VARS: &[(&str, LlmVar)] = &[
    ("request_type", LlmVar::RequestType),
    ("llm_provider", LlmVar::Provider),
    ("request_llm_model", LlmVar::RequestModel),
    ("llm_model", LlmVar::Model),
    ("llm_stream", LlmVar::Stream),
    ("llm_prompt_tokens", LlmVar::PromptTokens),
    ("llm_completion_tokens", LlmVar::CompletionTokens),
    ("llm_total_tokens", LlmVar::TotalTokens),
    ("llm_cache_read_input_tokens", LlmVar::CacheReadInputTokens),
    (
        "llm_cache_creation_input_tokens",
        LlmVar::CacheCreationInputTokens,
    ),
    ("llm_reasoning_tokens", LlmVar::ReasoningTokens),
    ("llm_time_to_first_token", LlmVar::TimeToFirstToken),
    (
        "apisix_upstream_response_time",
        LlmVar::UpstreamResponseTime,
    ),
    ("llm_tool_count", LlmVar::ToolCount),
    ("llm_has_tool_calls", LlmVar::HasToolCalls),
    ("llm_end_user_id", LlmVar::EndUserId),
    ("llm_response_text", LlmVar::ResponseText),
    ("llm_content_risk_level", LlmVar::ContentRiskLevel),
];

/// A `post_arg.*` path into a parsed request body.
#[derive(Debug, Clone)]
pub enum BodyPath {
    /// `post_arg.a.b`: walk object keys; yields the raw JSON value.
    Keys(Vec<String>),
    /// `post_arg.a[*].b`: a JSONPath query; yields the array of all matches, or nil.
    Json(JsonPath),
}

/// A compiled variable reference.
#[derive(Debug, Clone)]
pub enum Var {
    Builtin(Builtin),
    /// `arg_<name>`: a query-string argument.
    Arg(String),
    /// `http_<name>`: a request header; stored lower-case with `_` turned into `-`.
    Header(String),
    /// `cookie_<name>`.
    Cookie(String),
    /// `post_arg.<path>`: JSON or form body.
    PostArg(BodyPath),
    /// `post_arg_<name>`: only `application/x-www-form-urlencoded` bodies.
    PostArgForm(String),
    /// What `ai-proxy` recorded (`llm_model`, `llm_prompt_tokens`, …).
    Llm(LlmVar),
    /// Any other name: nil (nginx's unknown variables print `-`).
    Custom(String),
}

impl Var {
    /// Parses a variable name. Fails only on a malformed `post_arg.` JSONPath.
    pub fn parse(name: &str) -> Result<Var, String> {
        if let Some((_, b)) = BUILTINS.iter().find(|(n, _)| *n == name) {
            return Ok(Var::Builtin(*b));
        }
        if let Some((_, l)) = LLM_VARS.iter().find(|(n, _)| *n == name) {
            return Ok(Var::Llm(*l));
        }
        if let Some(path) = name.strip_prefix("post_arg.") {
            return parse_body_path(path).map(Var::PostArg);
        }
        if let Some(n) = name.strip_prefix("post_arg_") {
            return Ok(Var::PostArgForm(n.to_string()));
        }
        if let Some(n) = name.strip_prefix("arg_") {
            return Ok(Var::Arg(n.to_string()));
        }
        if let Some(n) = name.strip_prefix("http_") {
            return Ok(Var::Header(n.to_ascii_lowercase().replace('_', "-")));
        }
        if let Some(n) = name.strip_prefix("cookie_") {
            return Ok(Var::Cookie(n.to_string()));
        }
        Ok(Var::Custom(name.to_string()))
    }

    /// True when resolving this variable needs the request body.
    pub fn needs_body(&self) -> bool {
        matches!(self, Var::PostArg(_) | Var::PostArgForm(_))
    }
}

fn parse_body_path(path: &str) -> Result<BodyPath, String> {
    if path.is_empty() {
        return Err("empty post_arg path".into());
    }
    if path.contains('[') || path.contains('*') || path.contains("..") || path.starts_with('.') {
        let q = format!("$.{path}");
        return JsonPath::parse(&q)
            .map(BodyPath::Json)
            .map_err(|e| format!("invalid JSONPath in post_arg.{path}: {e}"));
    }
    let keys: Vec<String> = path
        .split(['.', '(', ')'])
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    if keys.is_empty() {
        return Err(format!("invalid post_arg path: {path}"));
    }
    Ok(BodyPath::Keys(keys))
}

impl BodyPath {
    /// Resolves the path against a parsed JSON body.
    pub fn resolve<'a>(&self, body: &'a Value) -> Val<'a> {
        match self {
            BodyPath::Keys(keys) => {
                let mut cur = body;
                for k in keys {
                    match cur {
                        Value::Object(m) => match m.get(k) {
                            Some(v) => cur = v,
                            None => return Val::Nil,
                        },
                        _ => return Val::Nil,
                    }
                }
                Val::from_json(cur)
            }
            BodyPath::Json(p) => {
                let nodes = p.query(body).all();
                if nodes.is_empty() {
                    Val::Nil
                } else {
                    Val::List(nodes.into_iter().map(Val::from_json).collect())
                }
            }
        }
    }
}

/// A variable's value, shaped like the Lua value APISIX would see.
#[derive(Debug, Clone, PartialEq)]
pub enum Val<'a> {
    Nil,
    Str(Cow<'a, str>),
    Num(f64),
    Bool(bool),
    /// A JSON array (or the matches of a JSONPath query).
    List(Vec<Val<'a>>),
    /// A JSON object: never equal to anything, as Lua tables compare by reference.
    Object,
}

impl<'a> Val<'a> {
    pub fn from_json(v: &'a Value) -> Val<'a> {
        match v {
            Value::Null => Val::Nil,
            Value::Bool(b) => Val::Bool(*b),
            Value::Number(n) => n.as_f64().map_or(Val::Nil, Val::Num),
            Value::String(s) => Val::Str(Cow::Borrowed(s)),
            Value::Array(a) => Val::List(a.iter().map(Val::from_json).collect()),
            Value::Object(_) => Val::Object,
        }
    }

    pub fn str(s: &'a str) -> Val<'a> {
        Val::Str(Cow::Borrowed(s))
    }

    /// Lua's `tonumber` on this value.
    pub fn to_number(&self) -> Option<f64> {
        match self {
            Val::Num(n) => Some(*n),
            Val::Str(s) => lua_tonumber(s),
            _ => None,
        }
    }

    /// The value as text, the way it would be printed into a log line.
    pub fn to_text(&self) -> Option<Cow<'_, str>> {
        match self {
            Val::Str(s) => Some(Cow::Borrowed(s)),
            Val::Num(n) => Some(Cow::Owned(format_number(*n))),
            Val::Bool(b) => Some(Cow::Borrowed(if *b { "true" } else { "false" })),
            _ => None,
        }
    }
}

/// Formats a number as Lua does for integral values (`3`, not `3.0`).
pub fn format_number(n: f64) -> String {
    if n.fract() == 0.0 && n.abs() < 1e15 {
        format!("{}", n as i64)
    } else {
        format!("{n}")
    }
}

/// Lua 5.1's `tonumber(string)`: surrounding whitespace allowed, decimal or `0x` hex,
/// no `inf`/`nan` words.
pub fn lua_tonumber(s: &str) -> Option<f64> {
    let t = s.trim_matches(|c: char| c.is_ascii_whitespace());
    if t.is_empty() {
        return None;
    }
    let (neg, body) = match t.as_bytes()[0] {
        b'-' => (true, &t[1..]),
        b'+' => (false, &t[1..]),
        _ => (false, t),
    };
    if let Some(hex) = body.strip_prefix("0x").or_else(|| body.strip_prefix("0X")) {
        if hex.is_empty() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        let v = u64::from_str_radix(hex, 16).ok()? as f64;
        return Some(if neg { -v } else { v });
    }
    if !body
        .bytes()
        .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        || !body
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit() || b == b'.')
    {
        return None;
    }
    let v: f64 = body.parse().ok()?;
    Some(if neg { -v } else { v })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn tonumber_follows_lua() {
        assert_eq!(lua_tonumber(" 42 "), Some(42.0));
        assert_eq!(lua_tonumber("-1.5e2"), Some(-150.0));
        assert_eq!(lua_tonumber("0x10"), Some(16.0));
        assert_eq!(lua_tonumber(".5"), Some(0.5));
        assert_eq!(lua_tonumber("inf"), None);
        assert_eq!(lua_tonumber("nan"), None);
        assert_eq!(lua_tonumber("12abc"), None);
        assert_eq!(lua_tonumber(""), None);
        assert_eq!(lua_tonumber("e5"), None);
    }

    #[test]
    fn parses_names() {
        assert!(matches!(Var::parse("uri"), Ok(Var::Builtin(Builtin::Uri))));
        assert!(matches!(Var::parse("http_X_Api_Key"), Ok(Var::Header(h)) if h == "x-api-key"));
        assert!(matches!(Var::parse("arg_name"), Ok(Var::Arg(a)) if a == "name"));
        assert!(matches!(Var::parse("cookie_sid"), Ok(Var::Cookie(a)) if a == "sid"));
        assert!(matches!(Var::parse("post_arg_x"), Ok(Var::PostArgForm(a)) if a == "x"));
        assert!(matches!(
            Var::parse("llm_model"),
            Ok(Var::Llm(LlmVar::Model))
        ));
        assert!(matches!(Var::parse("no_such_var"), Ok(Var::Custom(_))));
        assert!(Var::parse("post_arg.").is_err());
        assert!(Var::parse("post_arg.a[").is_err());
    }

    #[test]
    fn body_paths() {
        let body = json!({"model": {"name": "openai"}, "n": 3, "messages": [
            {"content": [{"type": "text"}, {"type": "image_url"}]},
            {"content": [{"type": "text"}]}
        ], "list": [1, 2]});
        let Ok(Var::PostArg(p)) = Var::parse("post_arg.model.name") else {
            panic!()
        };
        assert_eq!(p.resolve(&body), Val::str("openai"));
        let Ok(Var::PostArg(p)) = Var::parse("post_arg.n") else {
            panic!()
        };
        assert_eq!(p.resolve(&body), Val::Num(3.0));
        let Ok(Var::PostArg(p)) = Var::parse("post_arg.model") else {
            panic!()
        };
        assert_eq!(p.resolve(&body), Val::Object);
        // numeric segments do not index arrays
        let Ok(Var::PostArg(p)) = Var::parse("post_arg.list.0") else {
            panic!()
        };
        assert_eq!(p.resolve(&body), Val::Nil);
        let Ok(Var::PostArg(p)) = Var::parse("post_arg.messages[*].content[*].type") else {
            panic!()
        };
        assert_eq!(
            p.resolve(&body),
            Val::List(vec![
                Val::str("text"),
                Val::str("image_url"),
                Val::str("text")
            ])
        );
        let Ok(Var::PostArg(p)) = Var::parse("post_arg.missing[*].x") else {
            panic!()
        };
        assert_eq!(p.resolve(&body), Val::Nil);
    }
}
