//! Client-side limits and timeouts of the data plane: `nginx_config.http.client_header_timeout`,
//! `client_body_timeout`, `send_timeout`, `keepalive_timeout` (nginx time syntax) and Ferry's
//! `ferry.max_connections` and `ferry.max_sse_event_size`, with their defaults.

use serde::Deserialize;
use std::time::Duration;

/// What a client connection may take, in time and in number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientLimits {
    /// The whole request head must arrive within this (from accept, or from the first byte of
    /// the next request on a kept-alive connection).
    pub header_timeout: Duration,
    /// Longest gap between two reads of a request body.
    pub body_timeout: Duration,
    /// Longest time a write to the client may stay blocked.
    pub send_timeout: Duration,
    /// An idle kept-alive connection is closed after this (zero: no keep-alive).
    pub keepalive_timeout: Duration,
    /// Concurrent client connections; more are closed at once, with a log line.
    pub max_connections: usize,
    /// The bound of one server-sent event read from an upstream, bytes.
    pub max_sse_event: usize,
}

impl Default for ClientLimits {
    fn default() -> Self {
        ClientLimits {
            header_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            send_timeout: Duration::from_secs(10),
            keepalive_timeout: Duration::from_secs(60),
            max_connections: 10240,
            max_sse_event: 4 << 20,
        }
    }
}

/// A time as config.yaml gives it: a number of seconds or nginx text.
#[derive(Deserialize, Debug, Clone)]
#[serde(untagged)]
pub(crate) enum TimeValue {
    Secs(u64),
    Text(String),
}

impl TimeValue {
    pub(crate) fn resolve(&self, key: &str) -> Result<Duration, String> {
        match self {
            TimeValue::Secs(s) => Ok(Duration::from_secs(*s)),
            TimeValue::Text(t) => parse_time(t).ok_or_else(|| {
                format!("{key}: invalid time \"{t}\" (e.g. 60, 60s, 500ms, 2m, 1h)")
            }),
        }
    }
}

/// nginx times: `500ms`, `60s`, `2m`, `1h`, `1d`, a bare number of seconds, or several
/// (`1m30s`).
pub fn parse_time(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let n: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest.bytes().take_while(u8::is_ascii_alphabetic).count();
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let ms = match unit {
            "ms" => 1,
            "" | "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return None,
        };
        total = total.checked_add(Duration::from_millis(n.checked_mul(ms)?))?;
    }
    Some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nginx_times() {
        assert_eq!(parse_time("60s"), Some(Duration::from_secs(60)));
        assert_eq!(parse_time("60"), Some(Duration::from_secs(60)));
        assert_eq!(parse_time("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_time("2m"), Some(Duration::from_secs(120)));
        assert_eq!(parse_time("1m30s"), Some(Duration::from_secs(90)));
        assert_eq!(parse_time("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_time("0"), Some(Duration::ZERO));
        for bad in ["", "s", "10x", "-1s", "1.5s", "ms10"] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }
}
