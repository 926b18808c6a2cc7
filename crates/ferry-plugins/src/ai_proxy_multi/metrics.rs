//! Per-instance Prometheus metrics of `ai-proxy-multi`, resolved when the route is built:
//! every attempt (first tries and fallbacks) by outcome, its latency, streams broken after
//! their first byte, and the tokens of the attempts that served.

use super::health::Outcome;
use metrics::{Counter, Histogram};

/// The handles of one instance on one route.
pub struct InstanceMetrics {
    ok: Counter,
    http_4xx: Counter,
    http_429: Counter,
    http_5xx: Counter,
    transport: Counter,
    timeout: Counter,
    stream_broken: Counter,
    latency: Histogram,
    prompt: Counter,
    completion: Counter,
}

impl InstanceMetrics {
    pub fn new(route: &str, instance: &str, provider: &'static str) -> InstanceMetrics {
        let attempts = |outcome: &'static str| metrics::counter!("ferry_ai_instance_attempts_total", "route" => route.to_string(), "instance" => instance.to_string(), "provider" => provider, "outcome" => outcome);
        let tokens = |kind: &'static str| metrics::counter!("ferry_ai_instance_tokens_total", "route" => route.to_string(), "instance" => instance.to_string(), "provider" => provider, "type" => kind);
        InstanceMetrics {
            ok: attempts("ok"),
            http_4xx: attempts("http_4xx"),
            http_429: attempts("http_429"),
            http_5xx: attempts("http_5xx"),
            transport: attempts("transport_error"),
            timeout: attempts("timeout"),
            stream_broken: attempts("stream_broken"),
            latency: metrics::histogram!("ferry_ai_instance_latency_ms", "route" => route.to_string(), "instance" => instance.to_string(), "provider" => provider),
            prompt: tokens("prompt"),
            completion: tokens("completion"),
        }
    }

    /// One attempt and how long it took to its answer (head of a stream, whole JSON body).
    pub fn attempt(&self, o: Outcome, ms: f64) {
        let c = match o {
            Outcome::Status(429) => &self.http_429,
            Outcome::Status(s) if s >= 500 => &self.http_5xx,
            Outcome::Status(s) if s >= 400 => &self.http_4xx,
            Outcome::Status(_) => &self.ok,
            Outcome::Transport => &self.transport,
            Outcome::Timeout => &self.timeout,
        };
        c.increment(1);
        self.latency.record(ms);
    }

    pub fn stream_broken(&self) {
        self.stream_broken.increment(1);
    }

    pub fn tokens(&self, prompt: u64, completion: u64) {
        self.prompt.increment(prompt);
        self.completion.increment(completion);
    }
}
