//! APISIX's `ai-proxy-multi` plugin (priority 1041): one route, several LLM instances. The
//! access phase reads and checks the body as `ai-proxy` does, then picks an instance (priority
//! groups, weighted round robin or consistent hashing, skipping unhealthy, ejected and, with
//! the `rate_limiting` strategy, budget-exhausted ones). before_proxy runs `ai-proxy`'s
//! exchange with the picked instance and falls back to the next one on the failures the
//! route names (`fallback_strategy`, `fallback_http_statuses`, within `max_retries` and
//! `retry_on_failure_within_ms`). A stream is committed at its first event: a failure before
//! it falls back unseen by the client; after it, the stream ends with an error event in the
//! client's protocol and a cut transfer, never with a second instance's answer.

mod conf;
mod health;
mod metrics;

use crate::ai_proxy::conf::Compiled;
use crate::ai_proxy::stream::{FailHook, StreamError};
use crate::ai_proxy::{
    AiState, Refusal, intake, json_map, provider_schema, proxy, record_intake, route_for,
    shared_schema, stream,
};
use crate::limit::tokens::InstanceBudgets;
use crate::log::entry::LlmLogging;
use crate::transport::{ClientKey, Transport};
use bytes::Bytes;
use conf::{Algorithm, Conf, HashOn, Strategy};
use ferry_core::body::Response;
use ferry_core::ctx::{Ctx, RouteInfo};
use ferry_core::error::{Culprit, GatewayError};
use ferry_core::hash_key::KeySource;
use ferry_core::pick::{self, Member, Picker};
use ferry_core::plugin::{Flow, Phase, Plugin, PluginFactory, ProxyFuture, parse_conf};
use health::{Health, Outcome, Probe};
use http::StatusCode;
use http_body_util::BodyExt;
use metrics::InstanceMetrics;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// At most this many instances per route (a request's tried set is one bit each).
const MAX_INSTANCES: usize = 128;

/// Builds `ai-proxy-multi` instances; holds the shared upstream clients.
pub struct Factory {
    pub transport: Arc<Transport>,
    /// Active health checks run (`apisix.disable_upstream_healthcheck: false`).
    pub healthchecks: bool,
}

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "ai-proxy-multi"
    }

    fn priority(&self) -> i32 {
        1041
    }

    fn schema(&self) -> Value {
        let mut instance = provider_schema();
        instance.extend(json_map(json!({
            "name": {"type": "string", "minLength": 1, "maxLength": 100},
            "priority": {"type": "integer", "default": 0},
            "weight": {"type": "integer", "minimum": 0},
            "checks": {"type": "object", "properties": {"active": {"type": "object"}, "passive": {"type": "object"}}}
        })));
        let mut props = shared_schema();
        props.extend(json_map(json!({
            "instances": {"type": "array", "minItems": 1, "maxItems": MAX_INSTANCES, "items": {"type": "object",
                "required": ["name", "provider", "auth", "weight"], "properties": instance}},
            "balancer": {"type": "object", "properties": {
                "algorithm": {"type": "string", "enum": ["roundrobin", "chash"]},
                "hash_on": {"type": "string", "enum": ["vars", "header", "cookie", "consumer", "vars_combinations"], "default": "vars"},
                "key": {"type": "string"}}},
            "fallback_strategy": {"anyOf": [
                {"type": "string", "enum": ["instance_health_and_rate_limiting", "http_429", "http_5xx"]},
                {"type": "array", "items": {"type": "string", "enum": ["rate_limiting", "http_429", "http_5xx"]}}]},
            "fallback_http_statuses": {"type": "array", "minItems": 1, "uniqueItems": true, "items": {"type": "integer", "minimum": 400, "maximum": 599}},
            "max_retries": {"type": "integer", "minimum": 0},
            "retry_on_failure_within_ms": {"type": "integer", "minimum": 1}
        })));
        json!({"type": "object", "required": ["instances"], "properties": props})
    }

    fn check(&self, conf: &Value) -> Result<Value, String> {
        let c: Conf = parse_conf(conf)?;
        c.validate()?;
        if c.instances.len() > MAX_INSTANCES {
            return Err(format!(
                "property \"instances\" validation failed: expect array to have at most {MAX_INSTANCES} items"
            ));
        }
        serde_json::to_value(&c).map_err(|e| e.to_string())
    }

    fn build(&self, conf: &Value, route: &Arc<RouteInfo>) -> Result<Arc<dyn Plugin>, String> {
        let c: Conf = parse_conf(conf)?;
        let checked = c.validate()?;
        if c.instances.len() > MAX_INSTANCES {
            return Err(format!("more than {MAX_INSTANCES} instances"));
        }
        let mut instances = Vec::with_capacity(c.instances.len());
        let mut members = Vec::with_capacity(c.instances.len());
        for (inst, proxy_conf) in c.instances.iter().zip(checked.proxies) {
            let auth_query = proxy_conf.auth.query_pairs();
            let proxy = Compiled::build_for(proxy_conf, &self.transport, Some(&inst.name))
                .map_err(|e| format!("instance '{}': {e}", inst.name))?;
            let checks = inst.checks.clone().unwrap_or_default();
            let health = Arc::new(Health::new(&inst.name, checks.passive));
            if let Some(active) = checks.active.filter(|_| self.healthchecks)
                && let Some(t) = proxy.targets.values().next()
            {
                let client = self.transport.client(ClientKey {
                    ssl_verify: active.https_verify_certificate,
                    keepalive: true,
                    keepalive_timeout_ms: 60_000,
                    keepalive_pool: 2,
                    timeout_ms: (active.timeout * 1000.0).max(1.0) as u64,
                    connect_timeout_ms: None,
                    sni: None,
                })?;
                let probe = Probe::new(
                    active,
                    client,
                    &t.host,
                    t.port,
                    &proxy.auth_headers,
                    &auth_query,
                )?;
                health::spawn(probe, Arc::downgrade(&health));
            }
            members.push(Member {
                id: inst.name.clone(),
                weight: u32::try_from(inst.weight).unwrap_or(u32::MAX),
                priority: inst.priority,
            });
            instances.push(Instance {
                name: Arc::from(inst.name.as_str()),
                metrics: Arc::new(InstanceMetrics::new(
                    &route.id,
                    &inst.name,
                    proxy.provider.name,
                )),
                proxy,
                health,
                checked: inst.checks.is_some(),
            });
        }
        let (algorithm, key) = match &checked.algorithm {
            Algorithm::RoundRobin => (pick::Algorithm::RoundRobin, None),
            Algorithm::Chash { hash_on, key } => {
                let on = match hash_on {
                    HashOn::Vars => ferry_config::upstream::HashOn::Vars(key.clone()),
                    HashOn::Header => ferry_config::upstream::HashOn::Header(key.clone()),
                    HashOn::Cookie => ferry_config::upstream::HashOn::Cookie(key.clone()),
                    HashOn::Consumer => ferry_config::upstream::HashOn::Consumer,
                    HashOn::VarsCombinations => {
                        ferry_config::upstream::HashOn::VarsCombinations(key.clone())
                    }
                };
                (pick::Algorithm::Chash, Some(KeySource::compile(&on)?))
            }
        };
        Ok(Arc::new(Multi {
            picker: Picker::new(&members, algorithm, true),
            key,
            strategy: checked.strategy,
            fallback_statuses: c.fallback_http_statuses.unwrap_or_default(),
            max_retries: c.max_retries,
            within: c.retry_on_failure_within_ms.map(Duration::from_millis),
            max_req_body_size: instances
                .first()
                .map_or(64 * 1024 * 1024, |i| i.proxy.max_req_body_size),
            model_fixed: instances.iter().all(|i| i.proxy.options_model.is_some()),
            has_checks: instances.iter().any(|i| i.checked),
            instances,
        }))
    }
}

struct Instance {
    name: Arc<str>,
    /// The instance as an `ai-proxy` configuration.
    proxy: Compiled,
    health: Arc<Health>,
    /// It has `checks` (else it is always available).
    checked: bool,
    metrics: Arc<InstanceMetrics>,
}

struct Multi {
    instances: Vec<Instance>,
    picker: Picker,
    /// The chash key's source (`None`: round robin).
    key: Option<KeySource>,
    strategy: Strategy,
    fallback_statuses: Vec<u16>,
    max_retries: Option<u64>,
    within: Option<Duration>,
    max_req_body_size: u64,
    /// Every instance sets `options.model`.
    model_fixed: bool,
    has_checks: bool,
}

/// One request's progress through the instances.
struct MultiState {
    /// The instance of the current (last) attempt.
    current: usize,
    tried: u128,
    /// Left out for an exhausted budget (not a retry).
    skipped: u128,
    retries: u64,
    key: Option<Vec<u8>>,
    budgets: Option<InstanceBudgets>,
}

fn bit(i: usize) -> u128 {
    1u128 << i
}

/// The answer when no instance can take the request.
fn all_tried() -> GatewayError {
    GatewayError::gateway(
        StatusCode::SERVICE_UNAVAILABLE,
        "all servers tried: no ai-proxy-multi instance is available",
    )
}

impl Multi {
    /// The next instance to try: not tried, not skipped, available (unless none is: then
    /// health is ignored), and with budget left when the strategy says so.
    async fn next(&self, st: &mut MultiState) -> Option<usize> {
        if self.instances.len() == 1 {
            return (st.tried & 1 == 0).then_some(0);
        }
        for _ in 0..self.instances.len() {
            let health_counts =
                self.has_checks && self.instances.iter().any(|i| i.health.available());
            let blocked = st.tried | st.skipped;
            let i = self.picker.pick(
                |j| {
                    blocked & bit(j) != 0
                        || (health_counts && !self.instances[j].health.available())
                },
                st.key.as_deref(),
            )?;
            if let Some(b) = &st.budgets
                && b.exhausted(&self.instances[i].name).await
            {
                tracing::debug!(
                    "ai-proxy-multi: instance {} has no token budget left, skipped",
                    self.instances[i].name
                );
                st.skipped |= bit(i);
                continue;
            }
            return Some(i);
        }
        None
    }

    /// Makes instance `i` the current one in the context.
    fn enter(&self, ctx: &mut Ctx, i: usize) {
        let inst = &self.instances[i];
        ctx.llm.instance = Some(inst.name.clone());
        ctx.llm.provider = Some(inst.proxy.provider.name);
        match &inst.proxy.logging {
            Some(l) => ctx.ext.insert(l.clone()),
            None => {
                ctx.ext.remove::<Arc<LlmLogging>>();
            }
        }
        if let Some(st) = ctx.ext.get_mut::<MultiState>() {
            st.current = i;
        }
        tracing::debug!("picked instance: {}", inst.name);
    }

    async fn admit(&self, ctx: &mut Ctx) -> Result<(), Refusal> {
        let intake = intake(ctx, self.max_req_body_size, self.model_fixed).await?;
        let client = intake.client;
        let mut st = MultiState {
            current: 0,
            tried: 0,
            skipped: 0,
            retries: 0,
            key: self.key.as_ref().map(|k| k.key(ctx)),
            budgets: if self.strategy.rate_limiting {
                ctx.ext.get::<InstanceBudgets>().cloned()
            } else {
                None
            },
        };
        let i = self
            .next(&mut st)
            .await
            .ok_or(Refusal(client, all_tried()))?;
        let provider = self.instances[i].proxy.provider;
        let (target, pair) = route_for(provider, client).map_err(|e| Refusal(client, e))?;
        record_intake(ctx, &intake, provider.name);
        ctx.ext.insert(AiState::new(intake, target, pair));
        ctx.ext.insert(st);
        self.enter(ctx, i);
        Ok(())
    }

    /// True when a failed attempt with `status` may move on to another instance.
    fn retryable(&self, status: u16) -> bool {
        (status == 429 && self.strategy.http_429)
            || (status >= 500 && self.strategy.http_5xx)
            || self.fallback_statuses.contains(&status)
    }

    /// The attempt loop.
    async fn run(&self, ctx: &mut Ctx) -> Response {
        let client = ctx.ext.get::<AiState>().map(|s| s.client);
        // (address, status) of the attempts that failed over, for `$upstream_addr/status`.
        let mut prior: Vec<(String, u16)> = Vec::new();
        let result = loop {
            let Some(i) = ctx.ext.get::<MultiState>().map(|s| s.current) else {
                break Err(all_tried());
            };
            let inst = &self.instances[i];
            if let Some(st) = ctx.ext.get_mut::<AiState>() {
                st.on_stream_fail = Some(stream_hook(inst));
            }
            let started = Instant::now();
            let r = proxy::attempt(&inst.proxy, ctx).await;
            let outcome = match &r {
                Ok(resp) => Some(Outcome::Status(resp.status().as_u16())),
                Err(e) if e.culprit != Culprit::Upstream => None,
                Err(e) if e.status == StatusCode::GATEWAY_TIMEOUT => Some(Outcome::Timeout),
                Err(e) if e.status == StatusCode::BAD_GATEWAY => Some(Outcome::Transport),
                Err(e) => Some(Outcome::Status(e.status.as_u16())),
            };
            let Some(outcome) = outcome else { break r };
            inst.health.report(outcome);
            inst.metrics
                .attempt(outcome, started.elapsed().as_secs_f64() * 1000.0);
            let status = match &r {
                Ok(resp) => resp.status().as_u16(),
                Err(e) => e.status.as_u16(),
            };
            if self.instances.len() == 1 || !self.retryable(status) {
                break r;
            }
            if let Some(w) = self.within
                && started.elapsed() > w
            {
                tracing::warn!(
                    "ai instance {} returned status {status}, not falling back: exceeding retry_on_failure_within_ms {}",
                    inst.name,
                    w.as_millis()
                );
                break r;
            }
            let Some(st) = ctx.ext.get_mut::<MultiState>() else {
                break r;
            };
            st.tried |= bit(i);
            st.retries += 1;
            if let Some(max) = self.max_retries
                && st.retries > max
            {
                tracing::warn!(
                    "ai instance {} returned status {status}, not falling back: reached max_retries {max}",
                    inst.name
                );
                break r;
            }
            let next = self.next(st).await;
            let body = failed_body(r).await;
            prior.push((ctx.upstream.addr.take().unwrap_or_default(), status));
            let Some(next) = next else {
                tracing::warn!(
                    "ai instance {} returned status {status} and no instance is left to fall back to. upstream error body: {body}",
                    inst.name
                );
                break Err(GatewayError::upstream(
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "all ai-proxy-multi instances failed (last: {} answered {status})",
                        inst.name
                    ),
                ));
            };
            tracing::warn!(
                "ai instance {} returned status {status}, falling back to {}. upstream error body: {body}",
                inst.name,
                self.instances[next].name
            );
            let Some(client) = client else {
                break Err(all_tried());
            };
            let retarget = route_for(self.instances[next].proxy.provider, client);
            match (retarget, ctx.ext.get_mut::<AiState>()) {
                (Ok((target, pair)), Some(st)) => st.retarget(target, pair),
                (Err(e), _) => break Err(e),
                (Ok(_), None) => break Err(all_tried()),
            }
            self.enter(ctx, next);
        };
        if !prior.is_empty() {
            let status = match &result {
                Ok(r) => r.status().as_u16(),
                Err(e) => ctx.upstream.status.unwrap_or(e.status.as_u16()),
            };
            let mut addrs: Vec<String> = prior.iter().map(|(a, _)| a.clone()).collect();
            addrs.extend(ctx.upstream.addr.take());
            let mut statuses: Vec<String> = prior.iter().map(|(_, s)| s.to_string()).collect();
            statuses.push(status.to_string());
            ctx.upstream.addr = Some(addrs.join(", "));
            ctx.upstream.status_list = Some(statuses.join(", "));
        }
        result.unwrap_or_else(|e| e.render(client))
    }
}

/// What reports a stream broken after its first byte to the instance's health and metrics.
fn stream_hook(inst: &Instance) -> FailHook {
    let (health, m) = (inst.health.clone(), inst.metrics.clone());
    Box::new(move |e: &StreamError| {
        if let StreamError::Upstream(u) = e {
            health.report(if u.is_timeout() {
                Outcome::Timeout
            } else {
                Outcome::Transport
            });
        }
        m.stream_broken();
    })
}

/// A failed attempt's body for the log (at most 1 KiB of it); a streamed one is not read.
async fn failed_body(r: Result<Response, GatewayError>) -> String {
    const MAX: usize = 1024;
    let bytes = match r {
        Ok(resp) if http_body::Body::size_hint(resp.body()).exact().is_some() => resp
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default(),
        Ok(_) => Bytes::from_static(b"(an event stream)"),
        Err(e) => Bytes::from(e.message),
    };
    let cut = bytes.len().min(MAX);
    String::from_utf8_lossy(&bytes[..cut]).into_owned()
}

impl Plugin for Multi {
    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Phase<'a> {
        Phase::Wait(Box::pin(async move {
            match self.admit(ctx).await {
                Ok(()) => Flow::Continue,
                Err(Refusal(proto, e)) => Flow::Respond(e.render(Some(proto))),
            }
        }))
    }

    fn before_proxy<'a>(&'a self, ctx: &'a mut Ctx) -> Option<ProxyFuture<'a>> {
        ctx.ext.get::<MultiState>()?;
        Some(Box::pin(self.run(ctx)))
    }

    fn has_body_filter(&self) -> bool {
        true
    }

    fn body_filter(&self, ctx: &mut Ctx, chunk: &mut Bytes, end: bool) {
        stream::body_filter(ctx, chunk, end);
    }

    fn log(&self, ctx: &Ctx) {
        if let Some(st) = ctx.ext.get::<MultiState>()
            && let Some(inst) = self.instances.get(st.current)
            && ctx.llm.usage.is_some()
        {
            inst.metrics
                .tokens(ctx.llm.prompt_tokens(), ctx.llm.completion_tokens());
        }
    }
}
