//! Health of one `ai-proxy-multi` instance: passive (every attempt's outcome counts; enough
//! consecutive failures eject the instance for a cool-down) and active (a probe task per
//! instance, lua-resty-healthcheck's state machine). Available ⇔ not actively unhealthy and
//! not ejected. The probe task holds only a weak reference: it stops when the route's plugin
//! instance is dropped (route deleted or changed).

use super::conf::{Active, Passive};
use crate::transport::{UpError, Upstream};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use http_body_util::Full;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};
use std::time::{Duration, Instant};

/// What one attempt (or probe) came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Status(u16),
    /// Connect error, reset, premature end (also mid-stream).
    Transport,
    Timeout,
}

/// Milliseconds on a process-wide monotonic clock.
fn now_ms() -> u64 {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    let e = *EPOCH.get_or_init(Instant::now);
    u64::try_from(e.elapsed().as_millis()).unwrap_or(u64::MAX)
}

/// One instance's health.
pub struct Health {
    name: String,
    passive: Option<Passive>,
    http_fails: AtomicU32,
    tcp_fails: AtomicU32,
    timeouts: AtomicU32,
    /// Skipped until then (`now_ms`); 0: not ejected.
    ejected_until: AtomicU64,
    active_down: AtomicBool,
}

impl Health {
    pub fn new(name: &str, passive: Option<Passive>) -> Health {
        Health {
            name: name.to_string(),
            passive,
            http_fails: AtomicU32::new(0),
            tcp_fails: AtomicU32::new(0),
            timeouts: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            active_down: AtomicBool::new(false),
        }
    }

    /// Not actively unhealthy and not ejected.
    pub fn available(&self) -> bool {
        if self.active_down.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || now_ms() >= until
    }

    /// Counts one attempt's outcome (passive checks; nothing without them).
    pub fn report(&self, o: Outcome) {
        let Some(p) = &self.passive else { return };
        let bump = |c: &AtomicU32, limit: u32, what: &str| {
            let n = c.fetch_add(1, Ordering::Relaxed) + 1;
            if limit > 0 && n >= limit {
                self.eject(p.cooldown, &format!("{n} consecutive {what}"));
            }
        };
        match o {
            Outcome::Status(s) if p.healthy.http_statuses.contains(&s) => self.reset(),
            Outcome::Status(s) if p.unhealthy.http_statuses.contains(&s) => {
                bump(&self.http_fails, p.unhealthy.http_failures, "http failures");
            }
            Outcome::Status(_) => {}
            Outcome::Transport => bump(&self.tcp_fails, p.unhealthy.tcp_failures, "tcp failures"),
            Outcome::Timeout => bump(&self.timeouts, p.unhealthy.timeouts, "timeouts"),
        }
    }

    fn reset(&self) {
        for c in [&self.http_fails, &self.tcp_fails, &self.timeouts] {
            c.store(0, Ordering::Relaxed);
        }
    }

    fn eject(&self, cooldown: f64, why: &str) {
        let ms = (cooldown * 1000.0) as u64;
        self.ejected_until
            .store(now_ms().saturating_add(ms).max(1), Ordering::Relaxed);
        self.reset();
        tracing::warn!(
            "ai-proxy-multi: instance {} ejected for {cooldown}s after {why}",
            self.name
        );
    }

    fn set_active(&self, down: bool) {
        if self.active_down.swap(down, Ordering::Relaxed) != down {
            let state = if down { "unhealthy" } else { "healthy" };
            tracing::warn!(
                "ai-proxy-multi: instance {} is {state} (active health check)",
                self.name
            );
        }
    }
}

/// An active checker's request and rules.
pub struct Probe {
    pub rules: Active,
    pub client: Arc<Upstream>,
    /// `scheme://host:port/path?query` of the probe.
    pub uri: http::Uri,
    pub host_header: String,
    /// Address for `tcp` probes.
    pub authority: String,
    pub headers: HeaderMap,
}

impl Probe {
    /// Builds the probe for an instance at `host:port` with its credentials: every
    /// `auth.header` entry joins `req_headers`, `auth.query` is appended to the path.
    pub fn new(
        rules: Active,
        client: Arc<Upstream>,
        host: &str,
        port: u16,
        auth_headers: &[(HeaderName, HeaderValue)],
        auth_query: &[(String, String)],
    ) -> Result<Probe, String> {
        let port = rules.port.unwrap_or(port);
        let scheme = if rules.kind == "https" {
            "https"
        } else {
            "http"
        };
        let mut path = rules.http_path.clone();
        if !auth_query.is_empty() {
            let q: String = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(auth_query)
                .finish();
            path.push(if path.contains('?') { '&' } else { '?' });
            path.push_str(&q);
        }
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        let uri: http::Uri = format!("{scheme}://{authority}{path}")
            .parse()
            .map_err(|e| format!("health check URL: {e}"))?;
        let mut headers = HeaderMap::new();
        for h in rules.req_headers.iter().flatten() {
            if let Some((k, v)) = h.split_once(':')
                && let (Ok(k), Ok(v)) = (
                    HeaderName::from_bytes(k.trim().as_bytes()),
                    HeaderValue::from_str(v.trim()),
                )
            {
                headers.append(k, v);
            }
        }
        for (k, v) in auth_headers {
            if headers.get_all(k).iter().all(|x| x != v) {
                headers.append(k.clone(), v.clone());
            }
        }
        Ok(Probe {
            host_header: rules.host.clone().unwrap_or_else(|| host.to_string()),
            authority,
            uri,
            headers,
            client,
            rules,
        })
    }

    /// One probe.
    async fn run(&self) -> Outcome {
        let timeout = Duration::from_secs_f64(self.rules.timeout);
        if self.rules.kind == "tcp" {
            return match tokio::time::timeout(
                timeout,
                tokio::net::TcpStream::connect(&self.authority),
            )
            .await
            {
                Err(_) => Outcome::Timeout,
                Ok(Err(_)) => Outcome::Transport,
                Ok(Ok(_)) => Outcome::Status(200),
            };
        }
        let body = Bytes::from(self.rules.http_req_body.clone());
        let mut req = http::Request::new(Full::new(body.clone()));
        *req.method_mut() =
            Method::from_bytes(self.rules.http_method.as_bytes()).unwrap_or_default();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        if let Ok(h) = HeaderValue::from_str(&self.host_header) {
            req.headers_mut().insert(http::header::HOST, h);
        }
        if !body.is_empty() {
            req.headers_mut()
                .insert(http::header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        match self.client.send_within(req, timeout).await {
            Ok(r) => Outcome::Status(r.status().as_u16()),
            Err(UpError::Timeout) => Outcome::Timeout,
            Err(_) => Outcome::Transport,
        }
    }
}

/// lua-resty-healthcheck's counters for one target.
#[derive(Default)]
struct Counters {
    successes: u32,
    http: u32,
    tcp: u32,
    timeouts: u32,
}

impl Counters {
    /// Applies one probe result; `Some(down)` when the state changes.
    fn apply(&mut self, o: Outcome, rules: &Active, down: bool) -> Option<bool> {
        let (h, u) = (&rules.healthy, &rules.unhealthy);
        let failed = |n: &mut u32, limit: u32, succ: &mut u32| {
            *n += 1;
            *succ = 0;
            (!down && *n >= limit).then_some(true)
        };
        let change = match o {
            Outcome::Status(s) if h.http_statuses.contains(&s) => {
                self.successes += 1;
                self.http = 0;
                self.tcp = 0;
                self.timeouts = 0;
                (down && self.successes >= h.successes).then_some(false)
            }
            Outcome::Status(s) if u.http_statuses.contains(&s) => {
                failed(&mut self.http, u.http_failures, &mut self.successes)
            }
            Outcome::Status(_) => None,
            Outcome::Transport => failed(&mut self.tcp, u.tcp_failures, &mut self.successes),
            Outcome::Timeout => failed(&mut self.timeouts, u.timeouts, &mut self.successes),
        };
        if change.is_some() {
            *self = Counters::default();
        }
        change
    }
}

/// Starts probing in the background (on the current runtime); stops once `health` is gone.
pub fn spawn(probe: Probe, health: Weak<Health>) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("ai-proxy-multi: no runtime for active health checks");
        return;
    };
    rt.spawn(async move {
        let mut counters = Counters::default();
        loop {
            let outcome = probe.run().await;
            let Some(h) = health.upgrade() else { return };
            let down = h.active_down.load(Ordering::Relaxed);
            if let Some(now_down) = counters.apply(outcome, &probe.rules, down) {
                h.set_active(now_down);
            }
            let interval = if h.active_down.load(Ordering::Relaxed) {
                probe.rules.unhealthy.interval
            } else {
                probe.rules.healthy.interval
            };
            drop(h);
            tokio::time::sleep(Duration::from_secs(interval)).await;
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn passive(v: serde_json::Value) -> Passive {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn consecutive_failures_eject_and_successes_reset() {
        let h = Health::new(
            "a",
            Some(passive(
                serde_json::json!({"unhealthy": {"http_failures": 3}}),
            )),
        );
        for _ in 0..2 {
            h.report(Outcome::Status(500));
        }
        h.report(Outcome::Status(200));
        for _ in 0..2 {
            h.report(Outcome::Status(503));
        }
        h.report(Outcome::Status(404)); // in neither list: no change
        assert!(h.available(), "interleaved failures do not eject");
        h.report(Outcome::Status(429));
        assert!(!h.available(), "the third in a row does");
        let h = Health::new("b", Some(passive(serde_json::json!({"cooldown": 0.05}))));
        h.report(Outcome::Transport);
        h.report(Outcome::Transport);
        assert!(!h.available());
        std::thread::sleep(Duration::from_millis(60));
        assert!(h.available(), "back after the cool-down");
        let h = Health::new("c", None);
        for _ in 0..100 {
            h.report(Outcome::Timeout);
        }
        assert!(h.available(), "no passive checks: never ejected");
    }

    #[test]
    fn active_state_machine() {
        let rules: Active = serde_json::from_value(serde_json::json!({
            "healthy": {"successes": 2}, "unhealthy": {"http_failures": 2, "tcp_failures": 1}
        }))
        .unwrap();
        let mut c = Counters::default();
        assert_eq!(c.apply(Outcome::Status(500), &rules, false), None);
        assert_eq!(c.apply(Outcome::Status(500), &rules, false), Some(true));
        assert_eq!(c.apply(Outcome::Status(200), &rules, true), None);
        assert_eq!(c.apply(Outcome::Status(200), &rules, true), Some(false));
        assert_eq!(c.apply(Outcome::Status(418), &rules, false), None);
        assert_eq!(c.apply(Outcome::Transport, &rules, false), Some(true));
    }
}
