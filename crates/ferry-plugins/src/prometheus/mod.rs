//! APISIX's `prometheus` plugin (priority 500): per-route HTTP and LLM metrics recorded in the
//! log phase. Each instance serves one route, so its metric handles are resolved when it is
//! built (and per status code or model once, on first sight), never per request. The `model`
//! label is bounded per route: past [`MODEL_LABELS`] distinct models it reads `other`. The
//! metrics are served on the export listener.

mod labels;

use ferry_core::ctx::{Ctx, RouteInfo};
use ferry_core::plugin::{Plugin, PluginFactory, parse_conf};
use labels::LabelCache;
use metrics::{Counter, Histogram, Label};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;

/// Distinct (status code, consumer) pairs one route reports before new consumers count as
/// `other`.
const STATUS_LABELS: usize = 4096;

/// Distinct `model` label values one route reports before the rest count as `other`.
pub const MODEL_LABELS: usize = 64;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    #[serde(default)]
    prefer_name: bool,
}

/// Builds `prometheus` instances.
pub struct Factory;

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "prometheus"
    }

    fn priority(&self) -> i32 {
        500
    }

    fn schema(&self) -> Value {
        json!({"type": "object", "properties": {"prefer_name": {"type": "boolean", "default": false}}})
    }

    fn check(&self, conf: &Value) -> Result<Value, String> {
        let c: Conf = parse_conf(conf)?;
        serde_json::to_value(&c).map_err(|e| e.to_string())
    }

    fn build(&self, conf: &Value, route: &Arc<RouteInfo>) -> Result<Arc<dyn Plugin>, String> {
        let c: Conf = parse_conf(conf)?;
        let name = if c.prefer_name {
            route.name.clone().unwrap_or_else(|| route.id.clone())
        } else {
            route.id.clone()
        };
        Ok(Arc::new(Prometheus::new(
            name,
            route.service_id.clone().unwrap_or_default(),
        )))
    }
}

/// The LLM metrics of one (provider, model) on one route.
#[derive(Clone)]
struct LlmHandles {
    requests: Counter,
    prompt: Counter,
    completion: Counter,
    latency: Histogram,
    ttft: Histogram,
}

struct Prometheus {
    route: String,
    service: String,
    /// `apisix_http_status` by (code, consumer).
    status: LabelCache<(u16, String), Counter>,
    /// Past the cap, new consumers count as `other`.
    status_other: LabelCache<u16, Counter>,
    latency_request: Histogram,
    latency_upstream: Histogram,
    latency_apisix: Histogram,
    overhead: Histogram,
    egress: Counter,
    ingress: Counter,
    llm: LabelCache<(&'static str, String), LlmHandles>,
    /// The `other` model series, one per provider.
    other: LabelCache<&'static str, LlmHandles>,
}

impl Prometheus {
    fn new(route: String, service: String) -> Prometheus {
        let rs = |kind: &'static str| {
            vec![
                Label::new("type", kind),
                Label::new("route", route.clone()),
                Label::new("service", service.clone()),
            ]
        };
        Prometheus {
            latency_request: metrics::histogram!("apisix_http_latency", rs("request")),
            latency_upstream: metrics::histogram!("apisix_http_latency", rs("upstream")),
            latency_apisix: metrics::histogram!("apisix_http_latency", rs("apisix")),
            overhead: metrics::histogram!("ferry_gateway_overhead_ms", "route" => route.clone()),
            egress: metrics::counter!("apisix_bandwidth", rs("egress")),
            ingress: metrics::counter!("apisix_bandwidth", rs("ingress")),
            status: LabelCache::new(STATUS_LABELS),
            status_other: LabelCache::new(1000),
            llm: LabelCache::new(MODEL_LABELS),
            other: LabelCache::new(64),
            route,
            service,
        }
    }

    fn status_counter(&self, code: u16, consumer: &str) -> Option<Counter> {
        let make = |code: u16, consumer: String| metrics::counter!("apisix_http_status", "code" => code.to_string(), "route" => self.route.clone(), "service" => self.service.clone(), "consumer" => consumer);
        self.status
            .get_or_make(
                |(c, n)| *c == code && n == consumer,
                || (code, consumer.to_string()),
                |(c, n)| make(*c, n.clone()),
            )
            .or_else(|| {
                self.status_other
                    .get_or_make(|c| *c == code, || code, |c| make(*c, "other".into()))
            })
    }

    /// The handles for (provider, model); `other` as the model once the route has
    /// [`MODEL_LABELS`] distinct ones (one slot per provider is kept for `other`).
    fn llm_handles(&self, provider: &'static str, model: &str) -> Option<LlmHandles> {
        let make = |k: &(&'static str, String)| {
            let labels = [
                ("route", self.route.clone()),
                ("provider", k.0.to_string()),
                ("model", k.1.clone()),
            ];
            LlmHandles {
                requests: metrics::counter!("apisix_llm_requests_total", &labels),
                prompt: metrics::counter!("apisix_llm_prompt_tokens", &labels),
                completion: metrics::counter!("apisix_llm_completion_tokens", &labels),
                latency: metrics::histogram!("apisix_llm_latency", &labels),
                ttft: metrics::histogram!("apisix_llm_time_to_first_token", &labels),
            }
        };
        if model != "other"
            && let Some(h) = self.llm.get_or_make(
                |(p, m)| *p == provider && m == model,
                || (provider, model.to_string()),
                make,
            )
        {
            return Some(h);
        }
        // Full: every further model shares one `other` series, created outside the cap.
        self.other.get_or_make(
            |p| *p == provider,
            || provider,
            |p| make(&(p, "other".into())),
        )
    }
}

impl Plugin for Prometheus {
    fn log(&self, ctx: &Ctx) {
        let total_ms = ctx.elapsed_secs() * 1000.0;
        let upstream_ms = ctx.upstream.response_time.unwrap_or(0.0) * 1000.0;
        let consumer = ctx
            .consumer
            .as_ref()
            .map_or("", |c| c.consumer.username.as_str());
        if let Some(c) = self.status_counter(ctx.status, consumer) {
            c.increment(1);
        }
        self.latency_request.record(total_ms);
        if ctx.upstream.status.is_some() {
            self.latency_upstream.record(upstream_ms);
        }
        let overhead = (total_ms - upstream_ms).max(0.0);
        self.latency_apisix.record(overhead);
        self.overhead.record(overhead);
        self.egress.increment(ctx.body_bytes_sent);
        self.ingress
            .increment(ctx.body().map_or(0, |b| b.len() as u64));
        let llm = &ctx.llm;
        if !llm.is_ai() {
            return;
        }
        let Some(h) = self.llm_handles(
            llm.provider.unwrap_or(""),
            llm.model.as_deref().unwrap_or(""),
        ) else {
            return;
        };
        h.requests.increment(1);
        h.prompt.increment(llm.prompt_tokens());
        h.completion.increment(llm.completion_tokens());
        h.latency
            .record(llm.upstream_response_ms.unwrap_or(0) as f64);
        if llm.request_type == ferry_core::stats::RequestType::AiStream || llm.ttft_ms.is_some() {
            h.ttft.record(llm.ttft_ms.unwrap_or(0) as f64);
        }
    }
}
