//! The plugin contract: APISIX's phases (rewrite, access, before_proxy, header_filter,
//! body_filter, log) as a trait with an async access phase, factories that check and build
//! instances, the per-route chain ordered by priority, and the registry of factories by name.
//!
//! An instance is built from (plugin name, checked configuration, the route it serves); a
//! rebuilt chain takes the previous chain's instance whenever all three are unchanged, so its
//! state (counters, positions, health) survives writes to anything else.

use crate::body::Response;
use crate::ctx::{Ctx, RouteInfo};
use bytes::Bytes;
use ferry_config::{Expr, PluginCheckError, PluginChecker};
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// What a phase decided.
pub enum Flow {
    Continue,
    /// Stop the chain and answer with this response.
    Respond(Response),
}

/// The access phase's answer: decided at once, or after waiting (reading the body, a Redis
/// call, a token fetch) without blocking a worker.
pub enum Phase<'a> {
    Done(Flow),
    Wait(Pin<Box<dyn Future<Output = Flow> + Send + 'a>>),
}

impl Phase<'_> {
    pub const CONTINUE: Phase<'static> = Phase::Done(Flow::Continue);
}

/// The future a plugin returns when it produces the response itself (e.g. `ai-proxy`).
pub type ProxyFuture<'a> = Pin<Box<dyn Future<Output = Response> + Send + 'a>>;

/// A plugin instance serving one route. Every phase is optional. The request body is not
/// read for a plugin: one that needs it calls [`Ctx::read_body`] in its access phase, so
/// plugins that run earlier (authentication) can refuse a request before it is read.
pub trait Plugin: Send + Sync {
    fn rewrite(&self, _ctx: &mut Ctx) -> Flow {
        Flow::Continue
    }
    fn access<'a>(&'a self, _ctx: &'a mut Ctx) -> Phase<'a> {
        Phase::CONTINUE
    }
    /// Produce the response (the upstream call). The first plugin that returns one wins.
    fn before_proxy<'a>(&'a self, _ctx: &'a mut Ctx) -> Option<ProxyFuture<'a>> {
        None
    }
    fn header_filter(&self, _ctx: &mut Ctx, _head: &mut http::response::Parts) {}
    /// True when the log phase needs the response headers (logger plugins).
    fn wants_response_record(&self) -> bool {
        false
    }
    /// True when `body_filter` should be called for every response chunk.
    fn has_body_filter(&self) -> bool {
        false
    }
    /// Called for each chunk; `end` is set once, with an empty chunk, after the last one.
    fn body_filter(&self, _ctx: &mut Ctx, _chunk: &mut Bytes, _end: bool) {}
    fn log(&self, _ctx: &Ctx) {}
}

/// Validates and builds one kind of plugin.
pub trait PluginFactory: Send + Sync {
    fn name(&self) -> &'static str;
    /// APISIX's priority: higher runs first.
    fn priority(&self) -> i32;
    /// A JSON schema describing the configuration (for `/apisix/admin/plugins/<name>`).
    fn schema(&self) -> Value;
    /// Checks a configuration and returns it with defaults filled in.
    fn check(&self, conf: &Value) -> Result<Value, String>;
    /// Builds an instance knowing which resource the configuration came from (`owner`, e.g.
    /// `/apisix/consumers/jack`); plugins whose state is scoped by owner override this.
    fn build_owned(
        &self,
        conf: &Value,
        route: &Arc<RouteInfo>,
        _owner: Option<&str>,
    ) -> Result<Arc<dyn Plugin>, String> {
        self.build(conf, route)
    }
    /// True for authentication plugins (the only ones a credential may carry; they run in
    /// rewrite and are not merged from consumers).
    fn is_auth(&self) -> bool {
        false
    }
    /// Checks the configuration a consumer or credential carries for this plugin (an auth
    /// plugin's consumer side, e.g. key-auth's `{"key": ...}`).
    fn check_consumer(&self, conf: &Value) -> Result<Value, String> {
        self.check(conf)
    }
    /// The value that identifies a consumer in a consumer-side configuration (key-auth's
    /// `key`): unique across consumers and credentials.
    fn consumer_key(&self, _conf: &Value) -> Option<String> {
        None
    }
    /// Builds an instance for the route it will serve from a configuration that passed
    /// `check`, as stored (without defaults): building applies them.
    fn build(&self, conf: &Value, route: &Arc<RouteInfo>) -> Result<Arc<dyn Plugin>, String>;
}

/// Deserializes a typed plugin configuration, naming the field path on error (a missing
/// field reads `property "x" is required`, as APISIX says it).
pub fn parse_conf<T: DeserializeOwned>(conf: &Value) -> Result<T, String> {
    serde_path_to_error::deserialize(conf).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.inner().to_string();
        let missing = inner
            .strip_prefix("missing field `")
            .and_then(|r| r.split_once('`'))
            .map(|(name, _)| name);
        match (missing, path.as_str()) {
            (Some(name), ".") => format!("property \"{name}\" is required ({inner})"),
            (Some(name), p) => format!("property \"{p}.{name}\" is required ({inner})"),
            (None, ".") => inner,
            (None, p) => format!("property \"{p}\" validation failed: {inner}"),
        }
    })
}

/// Every plugin Ferry has, by name.
#[derive(Clone, Default)]
pub struct Registry {
    factories: BTreeMap<&'static str, Arc<dyn PluginFactory>>,
}

impl Registry {
    pub fn add(&mut self, f: Arc<dyn PluginFactory>) {
        self.factories.insert(f.name(), f);
    }

    /// Builds the chain of a route from its merged `plugins` object (checked at write time).
    /// Instances of `prev` (the route's chain before this change) are reused where the name,
    /// configuration and route are unchanged.
    pub fn build_chain(
        &self,
        plugins: &Map<String, Value>,
        route: &Arc<RouteInfo>,
        prev: Option<&Chain>,
    ) -> Result<Chain, String> {
        let prev = prev.filter(|p| *p.route == **route);
        let mut entries = Vec::with_capacity(plugins.len());
        for (name, conf) in plugins {
            let f = self
                .factories
                .get(name.as_str())
                .ok_or_else(|| format!("unknown plugin [{name}]"))?;
            let (conf, meta) = split_meta(conf)?;
            if meta.disable {
                continue;
            }
            let reused = prev.and_then(|p| {
                p.entries
                    .iter()
                    .find(|e| e.name == f.name() && e.conf == conf && e.owner == meta.owner)
                    .map(|e| e.plugin.clone())
            });
            let plugin = match reused {
                Some(p) => p,
                // Stored configurations are kept as sent: `build` applies the defaults.
                None => f
                    .build_owned(&conf, route, meta.owner.as_deref())
                    .map_err(|e| format!("plugin {name}: {e}"))?,
            };
            entries.push(Entry {
                name: f.name(),
                priority: meta.priority.unwrap_or(f.priority() as i64),
                filter: meta.filter,
                conf,
                owner: meta.owner,
                plugin,
            });
        }
        entries.sort_by(|a, b| b.priority.cmp(&a.priority).then(a.name.cmp(b.name)));
        Ok(Chain::new(entries, route.clone()))
    }
}
impl PluginChecker for Registry {
    fn check(&self, name: &str, conf: &Value) -> Result<Value, PluginCheckError> {
        let f = self.factories.get(name).ok_or(PluginCheckError::Unknown)?;
        let (body, _) = split_meta(conf).map_err(PluginCheckError::Invalid)?;
        let mut out = f.check(&body).map_err(PluginCheckError::Invalid)?;
        if let (Some(meta), Some(obj)) = (conf.get("_meta"), out.as_object_mut()) {
            obj.insert("_meta".into(), meta.clone());
        }
        Ok(out)
    }

    fn names(&self) -> Vec<String> {
        self.factories.keys().map(|k| k.to_string()).collect()
    }

    fn has(&self, name: &str) -> bool {
        self.factories.contains_key(name)
    }

    fn is_auth(&self, name: &str) -> bool {
        self.factories.get(name).is_some_and(|f| f.is_auth())
    }

    fn check_consumer(&self, name: &str, conf: &Value) -> Result<Value, PluginCheckError> {
        let f = self.factories.get(name).ok_or(PluginCheckError::Unknown)?;
        let (body, _) = split_meta(conf).map_err(PluginCheckError::Invalid)?;
        f.check_consumer(&body).map_err(PluginCheckError::Invalid)
    }

    fn consumer_key(&self, name: &str, conf: &Value) -> Option<String> {
        self.factories.get(name)?.consumer_key(conf)
    }

    fn schema(&self, name: &str) -> Option<Value> {
        self.factories.get(name).map(|f| f.schema())
    }
}

/// APISIX's per-plugin `_meta`: `disable`, `priority`, `filter`; and `parent`, the resource
/// the configuration came from (set by the compiler, as APISIX does).
#[derive(Default)]
struct Meta {
    disable: bool,
    priority: Option<i64>,
    filter: Option<Expr>,
    owner: Option<String>,
}

/// Marks a plugin configuration as coming from resource `owner` (`/apisix/routes/1`,
/// `/apisix/consumers/jack`, ...): counters of limiting plugins are scoped by it.
pub fn with_owner(conf: &Value, owner: &str) -> Value {
    let mut c = conf.clone();
    if let Some(obj) = c.as_object_mut() {
        let meta = obj
            .entry("_meta")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Some(m) = meta.as_object_mut() {
            m.insert("parent".into(), Value::String(owner.to_string()));
        }
    }
    c
}

fn split_meta(conf: &Value) -> Result<(Value, Meta), String> {
    let Some(obj) = conf.as_object() else {
        return Err("wrong type: expected object".into());
    };
    let Some(meta) = obj.get("_meta") else {
        return Ok((conf.clone(), Meta::default()));
    };
    let m = meta
        .as_object()
        .ok_or("property \"_meta\" validation failed: wrong type: expected object")?;
    let mut out = Meta::default();
    for (k, v) in m {
        match k.as_str() {
            "disable" => {
                out.disable = v.as_bool().ok_or(
                    "property \"_meta.disable\" validation failed: wrong type: expected boolean",
                )?;
            }
            "priority" => {
                out.priority = Some(v.as_i64().ok_or(
                    "property \"_meta.priority\" validation failed: wrong type: expected integer",
                )?);
            }
            "filter" => {
                out.filter =
                    Some(Expr::compile(v).map_err(|e| {
                        format!("property \"_meta.filter\" validation failed: {e}")
                    })?);
            }
            "error_response" => {}
            "parent" => out.owner = v.as_str().map(String::from),
            other => {
                return Err(format!(
                    "property \"_meta\" validation failed: additional properties forbidden, found {other}"
                ));
            }
        }
    }
    let mut body = obj.clone();
    body.remove("_meta");
    Ok((Value::Object(body), out))
}

struct Entry {
    name: &'static str,
    priority: i64,
    filter: Option<Expr>,
    /// The checked configuration (without `_meta`) the instance was built from.
    conf: Value,
    /// The resource the configuration came from.
    owner: Option<String>,
    plugin: Arc<dyn Plugin>,
}

/// A route's plugins in execution order.
pub struct Chain {
    entries: Vec<Entry>,
    route: Arc<RouteInfo>,
    /// A `_meta.filter` reads the body (`post_arg.*`): it is read before the filters run.
    filters_need_body: bool,
    body_filters: bool,
    response_record: bool,
}

impl Chain {
    fn new(entries: Vec<Entry>, route: Arc<RouteInfo>) -> Chain {
        let filters_need_body = entries
            .iter()
            .any(|e| e.filter.as_ref().is_some_and(Expr::needs_body));
        let body_filters = entries.iter().any(|e| e.plugin.has_body_filter());
        let response_record = entries.iter().any(|e| e.plugin.wants_response_record());
        Chain {
            entries,
            route,
            filters_need_body,
            body_filters,
            response_record,
        }
    }

    pub fn empty(route: Arc<RouteInfo>) -> Chain {
        Chain::new(Vec::new(), route)
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.entries.iter().map(|e| e.name).collect()
    }

    /// The route this chain serves.
    pub fn route(&self) -> &Arc<RouteInfo> {
        &self.route
    }

    /// The instance of plugin `name` (to check, in tests, that it was kept or rebuilt).
    pub fn instance(&self, name: &str) -> Option<&Arc<dyn Plugin>> {
        self.entries
            .iter()
            .find(|e| e.name == name)
            .map(|e| &e.plugin)
    }

    pub fn has_body_filters(&self) -> bool {
        self.body_filters
    }

    /// A logger needs the response headers kept for the log phase.
    pub fn wants_response_record(&self) -> bool {
        self.response_record
    }

    /// Which entries run for this request (a `_meta.filter` can switch one off), as a bit
    /// mask kept in the context for the later phases.
    fn select(&self, ctx: &Ctx) -> u64 {
        let mut mask = u64::MAX;
        for (i, e) in self.entries.iter().enumerate().take(64) {
            if e.filter.as_ref().is_some_and(|f| !f.eval(ctx)) {
                mask &= !(1 << i);
            }
        }
        mask
    }

    fn on(&self, mask: u64) -> impl Iterator<Item = &Entry> {
        self.entries
            .iter()
            .enumerate()
            .filter(move |(i, _)| *i >= 64 || mask & (1 << i) != 0)
            .map(|(_, e)| e)
    }

    /// Runs rewrite, access and before_proxy. Returns the response a plugin produced, or
    /// `None` when no plugin answers (the route's upstream then does).
    pub async fn run(&self, ctx: &mut Ctx) -> Option<Response> {
        if let Some(r) = self.rewrite(ctx).await {
            return Some(r);
        }
        self.proceed(ctx).await
    }

    /// The rewrite phase (authentication plugins attach the consumer here).
    pub async fn rewrite(&self, ctx: &mut Ctx) -> Option<Response> {
        self.rewrite_skipping(None, ctx).await
    }

    /// Switching to this chain (the route's merged with a consumer's plugins) after `before`
    /// ran its rewrite phase: selects this chain's plugins and runs the rewrite phase of those
    /// `before` did not have.
    pub async fn rewrite_after(&self, before: &Chain, ctx: &mut Ctx) -> Option<Response> {
        self.rewrite_skipping(Some(before), ctx).await
    }

    async fn rewrite_skipping(&self, done: Option<&Chain>, ctx: &mut Ctx) -> Option<Response> {
        if self.filters_need_body
            && ctx.body().is_none()
            && let Err(e) = ctx.read_body().await
        {
            return Some(e.into_response());
        }
        ctx.plugin_mask = self.select(ctx);
        let mask = ctx.plugin_mask;
        for e in self.on(mask) {
            if done.is_some_and(|d| d.entries.iter().any(|b| b.name == e.name)) {
                continue;
            }
            if let Flow::Respond(r) = e.plugin.rewrite(ctx) {
                return Some(r);
            }
        }
        None
    }

    /// The access phase, then before_proxy: the response a plugin produced, or `None`.
    pub async fn proceed(&self, ctx: &mut Ctx) -> Option<Response> {
        let mask = ctx.plugin_mask;
        for e in self.on(mask) {
            let flow = match e.plugin.access(ctx) {
                Phase::Done(f) => f,
                Phase::Wait(fut) => fut.await,
            };
            if let Flow::Respond(r) = flow {
                return Some(r);
            }
        }
        for e in self.on(mask) {
            if let Some(fut) = e.plugin.before_proxy(ctx) {
                return Some(fut.await);
            }
        }
        None
    }

    pub fn header_filter(&self, ctx: &mut Ctx, head: &mut http::response::Parts) {
        for e in self.on(ctx.plugin_mask) {
            e.plugin.header_filter(ctx, head);
        }
    }

    pub fn body_filter(&self, ctx: &mut Ctx, chunk: &mut Bytes, end: bool) {
        for e in self.on(ctx.plugin_mask) {
            if e.plugin.has_body_filter() {
                e.plugin.body_filter(ctx, chunk, end);
            }
        }
    }

    pub fn log(&self, ctx: &Ctx) {
        for e in self.on(ctx.plugin_mask) {
            e.plugin.log(ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct C {
        auth: Inner,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Inner {
        header: String,
    }

    #[test]
    fn missing_fields_say_which_property_is_required() {
        let e = parse_conf::<C>(&serde_json::json!({})).unwrap_err();
        assert_eq!(e, "property \"auth\" is required (missing field `auth`)");
        let e = parse_conf::<C>(&serde_json::json!({"auth": {}})).unwrap_err();
        assert!(e.starts_with("property \"auth.header\" is required"), "{e}");
        let e = parse_conf::<C>(&serde_json::json!({"auth": {"header": 1}})).unwrap_err();
        assert!(
            e.starts_with("property \"auth.header\" validation failed"),
            "{e}"
        );
    }
}
