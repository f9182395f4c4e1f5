//! Sizes and times as people read them, for the templates (exact values go in `title`).

use crate::clock::now_ms;

/// `8.2 MB`: the CLI's units.
pub fn bytes(n: u64) -> String {
    niso_protocol::size::human(n)
}

/// `8,200,000 bytes`.
pub fn exact_bytes(n: u64) -> String {
    niso_protocol::size::exact(n)
}

/// `3 min ago`, from milliseconds since the epoch.
pub fn ago(ms: u64) -> String {
    let secs = now_ms().saturating_sub(ms) / 1000;
    match secs {
        0..60 => "just now".to_owned(),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86_400 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    }
}

/// `2026-11-30 06:48:31 UTC`.
pub fn utc(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map_or_else(
            || ms.to_string(),
            |t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        )
}

/// The first 12 characters of a digest or id, for tables (the whole value goes in `title`).
pub fn short(s: String) -> String {
    s.chars().take(12).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_utc() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(ago(now_ms()), "just now");
    }
}
