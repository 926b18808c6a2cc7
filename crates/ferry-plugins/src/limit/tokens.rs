//! APISIX's `ai-rate-limiting`: token budgets per LLM instance (`ai-proxy-<provider>`, or an
//! `ai-proxy-multi` instance by name) over a time window. A request is admitted while at least one token is
//! left (a peek that consumes nothing); its usage (`total_tokens`, `prompt_tokens` or
//! `completion_tokens`, as Ferry records them, streams included) is added when the response
//! ends, to the instance that served. `X-AI-RateLimit-{Limit,Remaining,Reset}-<instance>`
//! headers; local or Redis counters. `ai-proxy-multi` reads the budgets through
//! [`InstanceBudgets`] to skip exhausted instances.

use super::count::{RedisFields, policy, positive, rejected, rejection};
use super::{Limits, Store, Window, digest, owner_key, reset_secs};
use ferry_core::ctx::{Ctx, RouteInfo};
use ferry_core::plugin::{Flow, Phase, Plugin, PluginFactory, parse_conf};
use http::{HeaderName, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct Conf {
    #[serde(skip_serializing_if = "Option::is_none")]
    limit: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    time_window: Option<Value>,
    #[serde(default = "total")]
    limit_strategy: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    cost_expr: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    instances: Option<Vec<Value>>,
    #[serde(default = "c503")]
    rejected_code: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    rejected_msg: Option<String>,
    #[serde(default = "yes")]
    show_limit_quota_header: bool,
    #[serde(default = "local")]
    policy: String,
    #[serde(default)]
    allow_degradation: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    rules: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sync_interval: Option<f64>,
    #[serde(flatten)]
    redis: RedisFields,
}

fn total() -> String {
    "total_tokens".into()
}
fn c503() -> u16 {
    503
}
fn yes() -> bool {
    true
}
fn local() -> String {
    "local".into()
}

#[derive(Clone, Copy)]
enum Strategy {
    Total,
    Prompt,
    Completion,
}

/// A budget: tokens per window.
#[derive(Clone, Copy)]
struct Budget {
    limit: u64,
    window: Duration,
}

struct Checked {
    default: Option<Budget>,
    instances: Vec<(String, Budget)>,
    strategy: Strategy,
    rejected: StatusCode,
    redis: Option<super::RedisConf>,
}

impl Conf {
    fn validate(&self) -> Result<Checked, String> {
        if self.rules.is_some() {
            return Err("property \"rules\" validation failed: rules are not supported by Ferry yet; use limit and time_window".into());
        }
        let strategy = match self.limit_strategy.as_str() {
            "total_tokens" => Strategy::Total,
            "prompt_tokens" => Strategy::Prompt,
            "completion_tokens" => Strategy::Completion,
            "expression" => {
                return Err("property \"limit_strategy\" validation failed: \"expression\" is not supported by Ferry yet".into());
            }
            _ => return Err(
                "property \"limit_strategy\" validation failed: matches none of the enum values"
                    .into(),
            ),
        };
        if self.cost_expr.is_some() {
            return Err("property \"cost_expr\" validation failed: cost expressions are not supported by Ferry yet".into());
        }
        let default = match (&self.limit, &self.time_window) {
            (Some(l), Some(w)) => Some(Budget {
                limit: positive(Some(l), "limit")?,
                window: Duration::from_secs(positive(Some(w), "time_window")?),
            }),
            (Some(_), None) => {
                return Err("property \"time_window\" is required when \"limit\" is set".into());
            }
            (None, Some(_)) => {
                return Err("property \"limit\" is required when \"time_window\" is set".into());
            }
            (None, None) => None,
        };
        let mut instances = Vec::new();
        for (i, item) in self.instances.iter().flatten().enumerate() {
            let at = |m: &str| {
                format!(
                    "property \"instances\" validation failed: failed to validate item {}: {m}",
                    i + 1
                )
            };
            let name = item
                .get("name")
                .and_then(Value::as_str)
                .ok_or_else(|| at("property \"name\" is required"))?;
            let num = |f: &str| {
                item.get(f)
                    .and_then(Value::as_u64)
                    .filter(|n| *n >= 1)
                    .ok_or_else(|| {
                        at(&format!(
                            "property \"{f}\" is required (an integer of at least 1)"
                        ))
                    })
            };
            instances.push((
                name.to_string(),
                Budget {
                    limit: num("limit")?,
                    window: Duration::from_secs(num("time_window")?),
                },
            ));
        }
        if self.instances.as_ref().is_some_and(|v| v.is_empty()) {
            return Err(
                "property \"instances\" validation failed: expect array to have at least 1 items"
                    .into(),
            );
        }
        if default.is_none() && instances.is_empty() {
            return Err("value should match only one schema, but matches none".into());
        }
        if self.sync_interval.is_some_and(|s| s != -1.0) {
            return Err("property \"sync_interval\" validation failed: delayed sync is not supported by Ferry yet".into());
        }
        let rejected = rejection(self.rejected_code, self.rejected_msg.as_deref())?;
        let redis = policy(&self.policy, &self.redis)?;
        Ok(Checked {
            default,
            instances,
            strategy,
            rejected,
            redis,
        })
    }
}

/// Builds `ai-rate-limiting` instances; counters and Redis connections are shared.
#[derive(Default)]
pub struct Factory {
    pub limits: Arc<Limits>,
}

impl PluginFactory for Factory {
    fn name(&self) -> &'static str {
        "ai-rate-limiting"
    }

    fn priority(&self) -> i32 {
        1030
    }

    fn schema(&self) -> Value {
        json!({
            "type": "object",
            "properties": {
                "limit": {"type": "integer", "exclusiveMinimum": 0},
                "time_window": {"type": "integer", "exclusiveMinimum": 0},
                "limit_strategy": {"type": "string", "enum": ["total_tokens", "prompt_tokens", "completion_tokens"], "default": "total_tokens"},
                "instances": {"type": "array", "minItems": 1, "items": {"type": "object", "properties": {
                    "name": {"type": "string"}, "limit": {"type": "integer", "minimum": 1}, "time_window": {"type": "integer", "minimum": 1}},
                    "required": ["name", "limit", "time_window"]}},
                "rejected_code": {"type": "integer", "minimum": 200, "maximum": 599, "default": 503},
                "rejected_msg": {"type": "string", "minLength": 1},
                "show_limit_quota_header": {"type": "boolean", "default": true},
                "policy": {"type": "string", "enum": ["local", "redis"], "default": "local"},
                "allow_degradation": {"type": "boolean", "default": false}
            }
        })
    }

    fn check(&self, conf: &Value) -> Result<Value, String> {
        let c: Conf = parse_conf(conf)?;
        c.validate()?;
        serde_json::to_value(&c).map_err(|e| e.to_string())
    }

    fn build(&self, conf: &Value, route: &Arc<RouteInfo>) -> Result<Arc<dyn Plugin>, String> {
        self.build_owned(conf, route, None)
    }

    fn build_owned(
        &self,
        conf: &Value,
        route: &Arc<RouteInfo>,
        owner: Option<&str>,
    ) -> Result<Arc<dyn Plugin>, String> {
        let c: Conf = parse_conf(conf)?;
        let checked = c.validate()?;
        let normalized = serde_json::to_value(&c).map_err(|e| e.to_string())?;
        let owner = owner_key(owner, route);
        let store = self.limits.store(checked.redis.as_ref())?;
        Ok(Arc::new(AiRateLimiting {
            budgets: InstanceBudgets(Arc::new(Budgets {
                prefix: format!("ai-rate-limiting:{owner}:{}", digest(&normalized)),
                default: checked.default,
                instances: checked.instances,
                store,
            })),
            strategy: checked.strategy,
            rejected: checked.rejected,
            rejected_msg: c.rejected_msg,
            show_headers: c.show_limit_quota_header,
            allow_degradation: c.allow_degradation,
        }))
    }
}

/// The budgets of one configuration and where their counters live.
struct Budgets {
    prefix: String,
    default: Option<Budget>,
    instances: Vec<(String, Budget)>,
    store: Store,
}

impl Budgets {
    /// The budget of `instance` (its own, else the top-level one) and its counter's id.
    fn of(&self, instance: &str) -> Option<(String, Budget)> {
        let budget = self
            .instances
            .iter()
            .find(|(n, _)| n == instance)
            .map(|(_, b)| *b)
            .or(self.default)?;
        Some((format!("{}:{instance}", self.prefix), budget))
    }
}

/// The route's `ai-rate-limiting` budgets as `ai-proxy-multi` consults them (put in the
/// context in the rewrite phase, before either plugin's access phase runs).
#[derive(Clone)]
pub struct InstanceBudgets(Arc<Budgets>);

impl InstanceBudgets {
    /// True when `instance` has a budget and no token of it is left (a read; nothing is
    /// consumed). A counter that cannot be read counts as not exhausted.
    pub async fn exhausted(&self, instance: &str) -> bool {
        let Some((id, b)) = self.0.of(instance) else {
            return false;
        };
        match self.0.store.add(&id, 0, b.window).await {
            Ok(w) => w.used >= b.limit,
            Err(e) => {
                tracing::warn!("ai-rate-limiting: cannot read the budget of {instance}: {e}");
                false
            }
        }
    }
}

struct AiRateLimiting {
    budgets: InstanceBudgets,
    strategy: Strategy,
    rejected: StatusCode,
    rejected_msg: Option<String>,
    show_headers: bool,
    allow_degradation: bool,
}

/// What this request was admitted against, for the headers and the commit.
struct Admitted {
    instance: String,
    id: String,
    window: Duration,
    headers: Vec<(HeaderName, HeaderValue)>,
}

impl AiRateLimiting {
    /// The instance this request goes to: the one `ai-proxy-multi` picked, else
    /// `ai-proxy-<provider>`.
    fn instance(ctx: &Ctx) -> Option<String> {
        match &ctx.llm.instance {
            Some(i) => Some(i.to_string()),
            None => Some(format!("ai-proxy-{}", ctx.llm.provider?)),
        }
    }

    fn headers(
        &self,
        instance: &str,
        limit: u64,
        remaining: u64,
        reset: u64,
    ) -> Vec<(HeaderName, HeaderValue)> {
        if !self.show_headers {
            return Vec::new();
        }
        let name = |k: &str| HeaderName::try_from(format!("x-ai-ratelimit-{k}-{instance}")).ok();
        [("limit", limit), ("remaining", remaining), ("reset", reset)]
            .into_iter()
            .filter_map(|(k, v)| Some((name(k)?, HeaderValue::from(v))))
            .collect()
    }

    fn decide(
        &self,
        ctx: &mut Ctx,
        instance: String,
        id: String,
        budget: Budget,
        r: Result<Window, String>,
    ) -> Flow {
        let w = match r {
            Ok(w) => w,
            Err(e) => {
                tracing::error!(
                    route = ctx.route.as_ref().map(|r| r.id.as_str()),
                    "failed to limit ai tokens: {e}"
                );
                if self.allow_degradation {
                    return Flow::Continue;
                }
                return Flow::Respond(rejected(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Some("failed to limit count"),
                ));
            }
        };
        let remaining = budget.limit.saturating_sub(w.used);
        let reset = reset_secs(w.reset);
        if remaining < 1 {
            let mut resp = rejected(self.rejected, self.rejected_msg.as_deref());
            for (k, v) in self.headers(&instance, budget.limit, 0, reset) {
                resp.headers_mut().insert(k, v);
            }
            return Flow::Respond(resp);
        }
        let headers = self.headers(&instance, budget.limit, remaining, reset);
        ctx.ext.insert(Admitted {
            instance,
            id,
            window: budget.window,
            headers,
        });
        Flow::Continue
    }
}

impl Plugin for AiRateLimiting {
    fn rewrite(&self, ctx: &mut Ctx) -> Flow {
        ctx.ext.insert(self.budgets.clone());
        Flow::Continue
    }

    fn access<'a>(&'a self, ctx: &'a mut Ctx) -> Phase<'a> {
        let Some(instance) = Self::instance(ctx) else {
            return Phase::CONTINUE;
        };
        let b = &self.budgets.0;
        let Some((id, budget)) = b.of(&instance) else {
            return Phase::CONTINUE;
        };
        match &b.store {
            Store::Local(c) => {
                let w = c.add(&id, 0, budget.window);
                Phase::Done(self.decide(ctx, instance, id, budget, Ok(w)))
            }
            Store::Redis(..) => Phase::Wait(Box::pin(async move {
                let r = b.store.add(&id, 0, budget.window).await;
                self.decide(ctx, instance, id, budget, r)
            })),
        }
    }

    fn header_filter(&self, ctx: &mut Ctx, head: &mut http::response::Parts) {
        if let Some(a) = ctx.ext.get::<Admitted>() {
            for (k, v) in &a.headers {
                head.headers.insert(k.clone(), v.clone());
            }
        }
    }

    fn log(&self, ctx: &Ctx) {
        let Some(a) = ctx.ext.get::<Admitted>() else {
            return;
        };
        let cost = match self.strategy {
            Strategy::Total => ctx.llm.total_tokens(),
            Strategy::Prompt => ctx.llm.prompt_tokens(),
            Strategy::Completion => ctx.llm.completion_tokens(),
        };
        if ctx.llm.total_tokens() == 0 {
            tracing::debug!("ai-rate-limiting: no token usage for this request");
            return;
        }
        // Charged to the instance that served (ai-proxy-multi may have fallen back).
        let (id, window) = match Self::instance(ctx).filter(|i| *i != a.instance) {
            Some(served) => match self.budgets.0.of(&served) {
                Some((id, b)) => (id, b.window),
                None => return,
            },
            None => (a.id.clone(), a.window),
        };
        match &self.budgets.0.store {
            Store::Local(c) => {
                c.add(&id, cost, window);
            }
            Store::Redis(..) => {
                let store = self.budgets.0.store.clone();
                tokio::spawn(async move {
                    if let Err(e) = store.add(&id, cost, window).await {
                        tracing::error!("ai-rate-limiting: failed to commit {cost} tokens: {e}");
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(v: Value) -> Result<Value, String> {
        Factory::default().check(&v)
    }

    #[test]
    fn apisix_messages() {
        assert_eq!(
            check(json!({"limit": 10})).unwrap_err(),
            "property \"time_window\" is required when \"limit\" is set"
        );
        assert_eq!(
            check(json!({"time_window": 10})).unwrap_err(),
            "property \"limit\" is required when \"time_window\" is set"
        );
        assert!(
            check(json!({"limit": 1, "time_window": 1, "rejected_code": 199}))
                .unwrap_err()
                .contains("expected 199 to be at least 200")
        );
        assert!(
            check(json!({"limit": 1, "time_window": 1, "limit_strategy": "x"}))
                .unwrap_err()
                .contains("matches none of the enum values")
        );
        assert!(
            check(json!({"instances": [{"name": "a", "limit": 1, "time_window": 1}, {"limit": 1, "time_window": 1}]}))
                .unwrap_err()
                .contains("failed to validate item 2: property \"name\" is required")
        );
        assert!(check(json!({"instances": [{"name": "a", "limit": 1, "time_window": 1}]})).is_ok());
        assert!(
            check(json!({"limit": 1, "time_window": 1, "limit_strategy": "expression"})).is_err()
        );
    }
}
