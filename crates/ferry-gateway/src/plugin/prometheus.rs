//! APISIX's `prometheus` plugin (priority 500): per-route HTTP and LLM metrics recorded in the
//! log phase. The metrics are served on the export listener (see `crate::metrics`).

use super::{Plugin, PluginFactory, parse_conf};
use crate::ctx::Ctx;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;

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

    fn build(&self, conf: &Value) -> Result<Arc<dyn Plugin>, String> {
        let c: Conf = parse_conf(conf)?;
        Ok(Arc::new(Prometheus {
            prefer_name: c.prefer_name,
        }))
    }
}

struct Prometheus {
    prefer_name: bool,
}

fn num(ctx: &Ctx, var: &str) -> u64 {
    ctx.var(var).and_then(|v| v.parse().ok()).unwrap_or(0)
}

impl Plugin for Prometheus {
    fn log(&self, ctx: &Ctx) {
        let (route, service) = match &ctx.route {
            Some(r) => (
                if self.prefer_name {
                    r.name.clone().unwrap_or_else(|| r.id.clone())
                } else {
                    r.id.clone()
                },
                r.service_id.clone().unwrap_or_default(),
            ),
            None => (String::new(), String::new()),
        };
        let total_ms = ctx.elapsed_secs() * 1000.0;
        let upstream_ms = ctx.upstream.response_time.unwrap_or(0.0) * 1000.0;
        metrics::counter!("apisix_http_status", "code" => ctx.status.to_string(), "route" => route.clone(), "service" => service.clone())
            .increment(1);
        metrics::histogram!("apisix_http_latency", "type" => "request", "route" => route.clone(), "service" => service.clone()).record(total_ms);
        if ctx.upstream.status.is_some() {
            metrics::histogram!("apisix_http_latency", "type" => "upstream", "route" => route.clone(), "service" => service.clone())
                .record(upstream_ms);
        }
        let overhead = (total_ms - upstream_ms).max(0.0);
        metrics::histogram!("apisix_http_latency", "type" => "apisix", "route" => route.clone(), "service" => service.clone()).record(overhead);
        metrics::histogram!("ferry_gateway_overhead_ms", "route" => route.clone()).record(overhead);
        metrics::counter!("apisix_bandwidth", "type" => "egress", "route" => route.clone(), "service" => service.clone())
            .increment(ctx.body_bytes_sent);
        metrics::counter!("apisix_bandwidth", "type" => "ingress", "route" => route.clone(), "service" => service)
            .increment(ctx.body().map_or(0, |b| b.len() as u64));
        let Some(kind) = ctx.var("request_type").filter(|t| t.starts_with("ai_")) else {
            return;
        };
        let provider = ctx.var("llm_provider").unwrap_or("").to_string();
        let model = ctx.var("llm_model").unwrap_or("").to_string();
        let labels = [("route", route), ("provider", provider), ("model", model)];
        metrics::counter!("apisix_llm_requests_total", &labels).increment(1);
        metrics::counter!("apisix_llm_prompt_tokens", &labels)
            .increment(num(ctx, "llm_prompt_tokens"));
        metrics::counter!("apisix_llm_completion_tokens", &labels)
            .increment(num(ctx, "llm_completion_tokens"));
        metrics::histogram!("apisix_llm_latency", &labels)
            .record(num(ctx, "apisix_upstream_response_time") as f64);
        if kind == "ai_stream" || ctx.var("llm_time_to_first_token").is_some() {
            metrics::histogram!("apisix_llm_time_to_first_token", &labels).record(num(
                ctx,
                "llm_time_to_first_token",
            )
                as f64);
        }
    }
}
