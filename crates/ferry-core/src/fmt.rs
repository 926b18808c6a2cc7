//! Formats the log phase prints: nginx's times (`$time_local`, `$time_iso8601`, seconds with
//! three decimals), the host name and request ids. Integer formatting only on the hot path.

use std::sync::OnceLock;
use std::time::SystemTime;
use time::OffsetDateTime;

/// This machine's host name, for `$hostname`.
pub fn hostname() -> &'static str {
    static NAME: OnceLock<String> = OnceLock::new();
    NAME.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_string())
            .or_else(|_| std::env::var("HOSTNAME"))
            .unwrap_or_else(|_| "localhost".into())
    })
}

/// Seconds with three decimals (`0.012`), as nginx prints times.
pub fn millis3(secs: f64) -> String {
    let ms = (secs.max(0.0) * 1000.0).round() as u64;
    let mut out = String::with_capacity(8);
    out.push_str(itoa::Buffer::new().format(ms / 1000));
    out.push('.');
    let frac = ms % 1000;
    if frac < 100 {
        out.push('0');
    }
    if frac < 10 {
        out.push('0');
    }
    out.push_str(itoa::Buffer::new().format(frac));
    out
}

/// `$time_local`: `25/Nov/2026:15:38:05 +0000` (UTC); formatted once per second per thread.
pub fn time_local(t: SystemTime) -> String {
    thread_local! {
        static LAST: std::cell::RefCell<(u64, String)> = const { std::cell::RefCell::new((u64::MAX, String::new())) };
    }
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    LAST.with(|l| {
        let mut l = l.borrow_mut();
        if l.0 != secs {
            *l = (secs, format_time_local(t));
        }
        l.1.clone()
    })
}

fn format_time_local(t: SystemTime) -> String {
    let d = OffsetDateTime::from(t);
    const MON: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02} +0000",
        d.day(),
        MON[d.month() as usize - 1],
        d.year(),
        d.hour(),
        d.minute(),
        d.second()
    )
}

/// `$time_iso8601`: `2026-11-25T15:38:05+00:00` (UTC).
pub fn time_iso8601(t: SystemTime) -> String {
    let d = OffsetDateTime::from(t);
    format!(
        "{}-{:02}-{:02}T{:02}:{:02}:{:02}+00:00",
        d.year(),
        d.month() as u8,
        d.day(),
        d.hour(),
        d.minute(),
        d.second()
    )
}

/// 32 lower-case hex characters, like nginx's `$request_id`.
pub fn random_id() -> String {
    format!("{:032x}", uuid::Uuid::new_v4().as_u128())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats() {
        assert_eq!(random_id().len(), 32);
        assert_eq!(millis3(0.0), "0.000");
        assert_eq!(millis3(0.0125), "0.013");
        assert_eq!(millis3(1.5), "1.500");
        assert_eq!(millis3(12.3456), "12.346");
        assert_eq!(millis3(-1.0), "0.000");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_707_485);
        assert_eq!(time_local(t), "26/Nov/2026:15:38:05 +0000");
        assert_eq!(time_iso8601(t), "2026-11-26T15:38:05+00:00");
    }
}
