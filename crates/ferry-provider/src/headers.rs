//! Header rules between a client and a provider, as pure functions over header maps: which
//! request headers go upstream, the route's auth headers on top, what changes when the
//! protocols differ (an Anthropic `x-api-key` becomes a bearer token toward OpenAI-style
//! providers; `anthropic-version` is ensured toward Anthropic), and which response headers
//! come back to the client.

use ferry_protocol::convert::Pair;
use http::{HeaderMap, HeaderName, HeaderValue, header};

/// Request headers never forwarded upstream: hop-by-hop ones, and what the gateway sets.
pub fn forward_request_header(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "host"
            | "content-length"
            | "accept-encoding"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "expect"
            | "proxy-authorization"
            | "proxy-authenticate"
    )
}

/// Upstream response headers worth passing to the client.
pub fn keep_response_header(name: &HeaderName) -> bool {
    let n = name.as_str();
    matches!(
        n,
        "content-type" | "retry-after" | "x-request-id" | "request-id" | "cache-control"
    ) || n.starts_with("x-ratelimit-")
        || n.starts_with("anthropic-ratelimit-")
        || n.starts_with("openai-")
}

/// The headers of the upstream request: the client's (less those never forwarded), the
/// route's `auth.header` over them, a JSON content type, and the conversion rules of `pair`.
pub fn upstream_request_headers(
    client: &HeaderMap,
    auth: &[(HeaderName, HeaderValue)],
    pair: Option<Pair>,
) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(client.len() + auth.len() + 1);
    for (k, v) in client {
        if forward_request_header(k) {
            h.append(k.clone(), v.clone());
        }
    }
    for (k, v) in auth {
        h.insert(k.clone(), v.clone());
    }
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(p) = pair {
        convert_headers(p, &mut h, auth);
    }
    h
}

fn remove_prefixed(h: &mut HeaderMap, prefix: &str) {
    let names: Vec<HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with(prefix))
        .cloned()
        .collect();
    for k in names {
        h.remove(k);
    }
}

/// Header rules when converting: toward an OpenAI provider an Anthropic `x-api-key` becomes a
/// bearer token (unless one is set) and `anthropic-*` headers go; toward Anthropic the
/// client's bearer token goes (unless the route set it) and `anthropic-version` is ensured.
/// SDK telemetry headers (`x-stainless-*`) never cross protocols.
fn convert_headers(p: Pair, h: &mut HeaderMap, configured: &[(HeaderName, HeaderValue)]) {
    remove_prefixed(h, "x-stainless-");
    match p {
        Pair::AnthropicToOpenAi => {
            if let Some(key) = h.remove("x-api-key")
                && !h.contains_key(header::AUTHORIZATION)
                && !key.is_empty()
                && let Ok(v) = HeaderValue::from_bytes(&[b"Bearer ", key.as_bytes()].concat())
            {
                h.insert(header::AUTHORIZATION, v);
            }
            remove_prefixed(h, "anthropic-");
        }
        Pair::OpenAiToAnthropic => {
            if !configured.iter().any(|(k, _)| k == header::AUTHORIZATION) {
                h.remove(header::AUTHORIZATION);
            }
            remove_prefixed(h, "openai-");
            if !h.contains_key("anthropic-version") {
                h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
            }
        }
        // Same client headers, another endpoint of the same kind of provider.
        Pair::EmbeddingsToVertex => remove_prefixed(h, "openai-"),
        // A Gemini client's key (`x-goog-api-key`, or `?key=` put there by the caller)
        // becomes a bearer token unless one is set; Google's own headers stay behind.
        Pair::GeminiToOpenAi => {
            if let Some(key) = h.remove("x-goog-api-key")
                && !h.contains_key(header::AUTHORIZATION)
                && !key.is_empty()
                && let Ok(v) = HeaderValue::from_bytes(&[b"Bearer ", key.as_bytes()].concat())
            {
                h.insert(header::AUTHORIZATION, v);
            }
            remove_prefixed(h, "x-goog-");
            h.remove("x-server-timeout");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn same_protocol_keeps_client_headers_under_the_route_auth() {
        let client = map(&[
            ("host", "gw"),
            ("authorization", "Bearer client"),
            ("x-team", "ml"),
            ("connection", "keep-alive"),
        ]);
        let auth = [(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer route"),
        )];
        let h = upstream_request_headers(&client, &auth, None);
        assert_eq!(h["authorization"], "Bearer route");
        assert_eq!(h["x-team"], "ml");
        assert_eq!(h["content-type"], "application/json");
        assert!(!h.contains_key("host") && !h.contains_key("connection"));
    }

    #[test]
    fn anthropic_key_becomes_a_bearer_token_toward_openai() {
        let client = map(&[
            ("x-api-key", "sk-ant"),
            ("anthropic-version", "2023-06-01"),
            ("x-stainless-os", "Linux"),
        ]);
        let h = upstream_request_headers(&client, &[], Some(Pair::AnthropicToOpenAi));
        assert_eq!(h["authorization"], "Bearer sk-ant");
        assert!(!h.contains_key("x-api-key"));
        assert!(!h.contains_key("anthropic-version"));
        assert!(!h.contains_key("x-stainless-os"));
    }

    #[test]
    fn toward_anthropic_the_client_bearer_goes_and_a_version_is_ensured() {
        let client = map(&[("authorization", "Bearer sk-openai"), ("openai-beta", "x")]);
        let auth = [(
            HeaderName::from_static("x-api-key"),
            HeaderValue::from_static("sk-ant"),
        )];
        let h = upstream_request_headers(&client, &auth, Some(Pair::OpenAiToAnthropic));
        assert!(!h.contains_key("authorization"));
        assert!(!h.contains_key("openai-beta"));
        assert_eq!(h["x-api-key"], "sk-ant");
        assert_eq!(h["anthropic-version"], "2023-06-01");
    }

    #[test]
    fn response_allowlist() {
        for n in [
            "content-type",
            "retry-after",
            "x-ratelimit-remaining-tokens",
            "openai-processing-ms",
        ] {
            assert!(keep_response_header(&HeaderName::from_static(n)), "{n}");
        }
        for n in [
            "set-cookie",
            "server",
            "content-length",
            "transfer-encoding",
        ] {
            assert!(!keep_response_header(&HeaderName::from_static(n)), "{n}");
        }
    }
}
