//! Ferry's provider layer: a declarative table of LLM providers (default host, the path of each
//! protocol they speak, where the token limit goes, whether `model` leaves the body) and the
//! endpoint resolution that turns a provider, `override.endpoint` and `auth.query` into the
//! upstream URL. Adding an OpenAI-compatible provider is one table row.

pub mod headers;

use ferry_protocol::Protocol;
use ferry_protocol::shape::MaxTokensField;
use url::Url;

/// One protocol a provider speaks.
#[derive(Debug, Clone, Copy)]
pub struct Capability {
    pub protocol: Protocol,
    /// Path on the provider's host; `{project}` and `{region}` are filled from
    /// `provider_conf`.
    pub path: &'static str,
    pub max_tokens: Option<MaxTokensField>,
}

/// A provider row.
#[derive(Debug)]
pub struct Provider {
    pub name: &'static str,
    /// Default host (https, port 443); `None` when `override.endpoint` is required, or the
    /// host is built from `provider_conf` (`{region}`).
    pub host: Option<&'static str>,
    pub capabilities: &'static [Capability],
    /// The provider takes the model from the URL, not the body.
    pub remove_model: bool,
    /// Configuration must give `override.endpoint` (no usable default URL).
    pub needs_endpoint: bool,
    /// Not available in this release: the reason, given at config time.
    pub unavailable: Option<&'static str>,
}

const fn cap(
    protocol: Protocol,
    path: &'static str,
    max_tokens: Option<MaxTokensField>,
) -> Capability {
    Capability {
        protocol,
        path,
        max_tokens,
    }
}

use MaxTokensField::*;
use Protocol::*;

const OPENAI_CHAT_MAX: Option<MaxTokensField> = Some(MaxCompletionTokens {
    delete_max_tokens: true,
});
const KEEP_MAX_COMPLETION: Option<MaxTokensField> = Some(MaxCompletionTokens {
    delete_max_tokens: false,
});

/// Every provider Ferry knows, in APISIX's enum order.
pub static PROVIDERS: &[Provider] = &[
    Provider {
        name: "openai",
        host: Some("api.openai.com"),
        capabilities: &[
            cap(OpenAiChat, "/v1/chat/completions", OPENAI_CHAT_MAX),
            cap(OpenAiResponses, "/v1/responses", Some(MaxOutputTokens)),
            cap(OpenAiEmbeddings, "/v1/embeddings", None),
        ],
        remove_model: false,
        needs_endpoint: false,
        unavailable: None,
    },
    Provider {
        name: "deepseek",
        host: Some("api.deepseek.com"),
        capabilities: &[cap(OpenAiChat, "/chat/completions", Some(MaxTokens))],
        remove_model: false,
        needs_endpoint: false,
        unavailable: None,
    },
    Provider {
        name: "aimlapi",
        host: Some("api.aimlapi.com"),
        capabilities: &[cap(OpenAiChat, "/chat/completions", Some(MaxTokens))],
        remove_model: false,
        needs_endpoint: false,
        unavailable: None,
    },
    Provider {
        name: "anthropic",
        host: Some("api.anthropic.com"),
        capabilities: &[cap(AnthropicMessages, "/v1/messages", Some(MaxTokens))],
        remove_model: false,
        needs_endpoint: false,
        unavailable: None,
    },
    Provider {
        name: "openai-compatible",
        host: None,
        capabilities: &[
            cap(OpenAiChat, "/v1/chat/completions", Some(MaxTokens)),
            cap(OpenAiResponses, "/v1/responses", Some(MaxOutputTokens)),
            cap(OpenAiEmbeddings, "/v1/embeddings", None),
        ],
        remove_model: false,
        needs_endpoint: true,
        unavailable: None,
    },
    Provider {
        name: "azure-openai",
        host: None,
        capabilities: &[cap(OpenAiChat, "/completions", Some(MaxTokens))],
        remove_model: true,
        needs_endpoint: true,
        unavailable: None,
    },
    Provider {
        name: "openrouter",
        host: Some("openrouter.ai"),
        capabilities: &[cap(OpenAiChat, "/api/v1/chat/completions", Some(MaxTokens))],
        remove_model: false,
        needs_endpoint: false,
        unavailable: None,
    },
    Provider {
        name: "gemini",
        host: Some("generativelanguage.googleapis.com"),
        capabilities: &[cap(
            OpenAiChat,
            "/v1beta/openai/chat/completions",
            KEEP_MAX_COMPLETION,
        )],
        remove_model: false,
        needs_endpoint: false,
        unavailable: None,
    },
    Provider {
        name: "vertex-ai",
        host: None,
        capabilities: &[
            cap(
                OpenAiChat,
                "/v1beta1/projects/{project}/locations/{region}/endpoints/openapi/chat/completions",
                KEEP_MAX_COMPLETION,
            ),
            // `{model}` is the request's model (`options.model`, else the body's).
            cap(
                VertexPredict,
                "/v1/projects/{project}/locations/{region}/publishers/google/models/{model}:predict",
                None,
            ),
        ],
        remove_model: false,
        needs_endpoint: false,
        unavailable: None,
    },
    Provider {
        name: "bedrock",
        host: None,
        capabilities: &[],
        remove_model: true,
        needs_endpoint: false,
        unavailable: Some(
            "provider bedrock (Converse API with SigV4) is not available in this release",
        ),
    },
];

/// Looks a provider up by name.
pub fn get(name: &str) -> Option<&'static Provider> {
    PROVIDERS.iter().find(|p| p.name == name)
}

/// Names of every provider.
pub fn names() -> Vec<&'static str> {
    PROVIDERS.iter().map(|p| p.name).collect()
}

impl Provider {
    pub fn capability(&self, p: Protocol) -> Option<&Capability> {
        self.capabilities.iter().find(|c| c.protocol == p)
    }

    pub fn protocol_names(&self) -> String {
        self.capabilities
            .iter()
            .map(|c| c.protocol.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `provider_conf`.
#[derive(Debug, Clone, Default)]
pub struct ProviderConf {
    pub project_id: Option<String>,
    pub region: Option<String>,
}

/// Where requests for one (provider, protocol) go, resolved at config load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub scheme: &'static str,
    pub host: String,
    pub port: u16,
    /// `None`: use the client's path (passthrough without an endpoint path).
    pub path: Option<String>,
    /// `auth.query` merged under the endpoint's own query (endpoint wins).
    pub query: Vec<(String, String)>,
}

impl Target {
    /// `scheme://host[:port]` (port omitted when default).
    pub fn origin(&self) -> String {
        let default = (self.scheme == "https" && self.port == 443)
            || (self.scheme == "http" && self.port == 80);
        if default {
            format!("{}://{}", self.scheme, self.host)
        } else {
            format!("{}://{}:{}", self.scheme, self.host, self.port)
        }
    }

    /// The upstream URI for a path and query on this target.
    pub fn uri(&self, path: &str, query: &[(String, String)]) -> Result<http::Uri, String> {
        let mut url = format!("{}{}", self.origin(), path);
        if !query.is_empty() {
            url.push('?');
            url.push_str(
                &url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs(query.iter().map(|(k, v)| (k.as_str(), v.as_str())))
                    .finish(),
            );
        }
        http::Uri::try_from(url.as_str()).map_err(|e| format!("invalid upstream URL {url}: {e}"))
    }
}

/// A parsed `override.endpoint`.
#[derive(Debug, Clone)]
pub struct Endpoint {
    pub scheme: &'static str,
    pub host: String,
    pub port: u16,
    /// The endpoint's path, unless it is empty or a bare `/` (which count as "no path").
    pub path: Option<String>,
    pub query: Vec<(String, String)>,
}

/// Parses and checks `override.endpoint`: an http or https URL with a host.
pub fn parse_endpoint(s: &str) -> Result<Endpoint, String> {
    let u = Url::parse(s).map_err(|e| format!("invalid endpoint \"{s}\": {e}"))?;
    let scheme = match u.scheme() {
        "http" => "http",
        "https" => "https",
        other => {
            return Err(format!(
                "invalid endpoint \"{s}\": scheme must be http or https, not {other}"
            ));
        }
    };
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("invalid endpoint \"{s}\": no host"))?
        .to_string();
    let port = u
        .port_or_known_default()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let path = match u.path() {
        "" | "/" => None,
        p => Some(p.to_string()),
    };
    let query = u
        .query_pairs()
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    Ok(Endpoint {
        scheme,
        host,
        port,
        path,
        query,
    })
}

/// Resolves the target for `protocol` (`Passthrough` uses the client's path unless the
/// endpoint has one).
pub fn resolve(
    provider: &Provider,
    protocol: Protocol,
    endpoint: Option<&Endpoint>,
    conf: &ProviderConf,
    auth_query: &[(String, String)],
) -> Result<Target, String> {
    let fill = |t: &str| -> Result<String, String> {
        if !t.contains('{') {
            return Ok(t.to_string());
        }
        match (&conf.project_id, &conf.region) {
            (Some(p), Some(r)) => Ok(t.replace("{project}", p).replace("{region}", r)),
            _ => Err(format!(
                "{} requires either provider_conf (project_id + region) or override.endpoint",
                provider.name
            )),
        }
    };
    let mut query: Vec<(String, String)> = auth_query.to_vec();
    let (scheme, host, port, ep_path) = match endpoint {
        Some(e) => {
            for (k, v) in &e.query {
                match query.iter_mut().find(|(qk, _)| qk == k) {
                    Some(slot) => slot.1 = v.clone(),
                    None => query.push((k.clone(), v.clone())),
                }
            }
            (e.scheme, e.host.clone(), e.port, e.path.clone())
        }
        None => {
            let host = match (provider.host, &conf.region) {
                (Some(h), _) => h.to_string(),
                (None, Some(r)) if provider.name == "vertex-ai" && r == "global" => {
                    "aiplatform.googleapis.com".to_string()
                }
                (None, Some(r)) if provider.name == "vertex-ai" => {
                    format!("{r}-aiplatform.googleapis.com")
                }
                _ => {
                    return Err(format!(
                        "provider {} has no default endpoint: set override.endpoint",
                        provider.name
                    ));
                }
            };
            ("https", host, 443, None)
        }
    };
    let path = match (ep_path, protocol) {
        (Some(p), _) => Some(p),
        (None, Protocol::Passthrough) => None,
        (None, proto) => {
            let cap = provider.capability(proto).ok_or_else(|| {
                format!(
                    "provider {} does not support {} protocol",
                    provider.name,
                    proto.name()
                )
            })?;
            Some(fill(cap.path)?)
        }
    };
    Ok(Target {
        scheme,
        host,
        port,
        path,
        query,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn defaults() {
        let c = ProviderConf::default();
        let t = resolve(get("openai").unwrap(), OpenAiChat, None, &c, &[]).unwrap();
        assert_eq!(t.origin(), "https://api.openai.com");
        assert_eq!(t.path.as_deref(), Some("/v1/chat/completions"));
        let t = resolve(get("deepseek").unwrap(), OpenAiChat, None, &c, &[]).unwrap();
        assert_eq!(t.path.as_deref(), Some("/chat/completions"));
        let t = resolve(get("openai").unwrap(), OpenAiEmbeddings, None, &c, &[]).unwrap();
        assert_eq!(t.path.as_deref(), Some("/v1/embeddings"));
        assert!(resolve(get("deepseek").unwrap(), OpenAiEmbeddings, None, &c, &[]).is_err());
        assert!(resolve(get("openai-compatible").unwrap(), OpenAiChat, None, &c, &[]).is_err());
        let v = ProviderConf {
            project_id: Some("p".into()),
            region: Some("us-central1".into()),
        };
        let t = resolve(get("vertex-ai").unwrap(), OpenAiChat, None, &v, &[]).unwrap();
        assert_eq!(t.host, "us-central1-aiplatform.googleapis.com");
        assert_eq!(
            t.path.as_deref(),
            Some("/v1beta1/projects/p/locations/us-central1/endpoints/openapi/chat/completions")
        );
    }

    #[test]
    fn endpoints() {
        let e = parse_endpoint("http://127.0.0.1:1980").unwrap();
        assert_eq!((e.scheme, e.port, e.path.clone()), ("http", 1980, None));
        let t = resolve(
            get("openai").unwrap(),
            OpenAiChat,
            Some(&e),
            &ProviderConf::default(),
            &[],
        )
        .unwrap();
        assert_eq!(t.path.as_deref(), Some("/v1/chat/completions"));
        assert_eq!(t.origin(), "http://127.0.0.1:1980");
        // a bare "/" is no path (APISIX would send to "/")
        let e = parse_endpoint("https://example.com/").unwrap();
        assert_eq!(e.path, None);
        let e = parse_endpoint("https://x.openai.azure.com/openai/deployments/gpt-4/chat/completions?api-version=2024-02-15-preview&a=1").unwrap();
        let t = resolve(
            get("azure-openai").unwrap(),
            OpenAiChat,
            Some(&e),
            &ProviderConf::default(),
            &q(&[("a", "0"), ("k", "v")]),
        )
        .unwrap();
        assert_eq!(
            t.path.as_deref(),
            Some("/openai/deployments/gpt-4/chat/completions")
        );
        assert_eq!(
            t.query,
            q(&[
                ("a", "1"),
                ("k", "v"),
                ("api-version", "2024-02-15-preview")
            ])
        );
        assert!(parse_endpoint("ftp://x").is_err());
        assert!(parse_endpoint("not a url").is_err());
        assert!(parse_endpoint("http://").is_err());
    }

    #[test]
    fn passthrough_keeps_client_path() {
        let t = resolve(
            get("openai").unwrap(),
            Passthrough,
            None,
            &ProviderConf::default(),
            &[],
        )
        .unwrap();
        assert_eq!(t.path, None);
    }
}
