//! librdkafka's log lines and errors, routed through Ferry's logging without flooding it: an
//! unreachable broker makes librdkafka repeat the same few lines several times a second, so a
//! line is written when it is new (its text with numbers ignored, per logger), again at most
//! once a minute while it repeats, with the count of the repeats it stood for.

use rdkafka::client::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a repeated line stays quiet.
const QUIET: Duration = Duration::from_secs(60);
/// Distinct lines remembered per producer.
const KEYS: usize = 64;

/// The producer context of `kafka-logger`.
pub struct QuietContext {
    logger: String,
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl QuietContext {
    pub fn new(logger: &str) -> QuietContext {
        QuietContext {
            logger: logger.to_string(),
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// The number of repeats to report with `text` now, or `None` to stay quiet.
    fn admit(&self, text: &str, now: Instant) -> Option<u64> {
        let key: String = text.chars().filter(|c| !c.is_ascii_digit()).collect();
        let mut seen = self.seen.lock().ok()?;
        if let Some((at, repeats)) = seen.get_mut(&key) {
            if now.duration_since(*at) < QUIET {
                *repeats += 1;
                return None;
            }
            let n = std::mem::take(repeats);
            *at = now;
            return Some(n);
        }
        if seen.len() >= KEYS {
            seen.retain(|_, (at, _)| now.duration_since(*at) < QUIET);
        }
        seen.insert(key, (now, 0));
        Some(0)
    }

    fn note(&self, error: bool, text: &str) {
        let Some(repeats) = self.admit(text, Instant::now()) else {
            return;
        };
        let logger = self.logger.as_str();
        if error {
            tracing::error!(logger, repeats_since_last = repeats, "kafka: {text}");
        } else {
            tracing::warn!(logger, repeats_since_last = repeats, "kafka: {text}");
        }
    }
}

impl ClientContext for QuietContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, msg: &str) {
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => self.note(true, &format!("{fac} {msg}")),
            RDKafkaLogLevel::Warning => self.note(false, &format!("{fac} {msg}")),
            _ => tracing::debug!(logger = %self.logger, "kafka: {fac} {msg}"),
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.note(true, &format!("{error}: {reason}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_counted_not_written() {
        let c = QuietContext::new("t");
        let t0 = Instant::now();
        let refused = "FAIL 127.0.0.1:9/bootstrap: Connect failed (after 0ms in state CONNECT)";
        assert_eq!(c.admit(refused, t0), Some(0), "new: written");
        let again = "FAIL 127.0.0.1:9/bootstrap: Connect failed (after 12ms in state CONNECT)";
        for i in 1..=30 {
            assert_eq!(c.admit(again, t0 + Duration::from_millis(i * 150)), None);
        }
        assert_eq!(
            c.admit("1/1 brokers are down", t0),
            Some(0),
            "another line: written"
        );
        assert_eq!(
            c.admit(refused, t0 + QUIET + Duration::from_secs(1)),
            Some(30),
            "after a quiet minute: written with its repeats"
        );
    }
}
