//! Human units: sizes like `8.2 MB`, dates like `2026-04-12`, spans like `12m`, and expiry
//! specs like `30d`.

use anyhow::{Context as _, bail};

/// Decimal units, one decimal place, as `8.2 MB`: the web UI's units too.
pub fn size(bytes: u64) -> String {
    niso_protocol::size::human(bytes)
}

/// `""` or `"s"`, for counts in messages.
pub fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// `YYYY-MM-DD` in UTC.
pub fn date(ms: u64) -> String {
    i64::try_from(ms)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|t| t.strftime("%Y-%m-%d").to_string())
        .unwrap_or_else(|| "?".to_owned())
}

/// A span in its largest whole unit: `45s`, `12m`, `3h`, `2d`.
pub fn span(ms: u64) -> String {
    let secs = ms / 1000;
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// `30d`, `12h`, `2w`, `45m` from now, or a date `2027-01-31` (midnight UTC), as epoch ms.
pub fn expiry(spec: &str, now_ms: u64) -> anyhow::Result<u64> {
    let spec = spec.trim();
    let shapes = "a duration such as 30m (minutes), 12h, 30d or 2w, or a date such as 2027-01-31";
    if let Some(unit) = spec.chars().last().filter(char::is_ascii_alphabetic) {
        let number = &spec[..spec.len() - 1];
        if let Ok(n) = number.parse::<u64>() {
            let secs = match unit {
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                'w' => 7 * 86_400,
                'M' | 'y' => bail!(
                    "`{spec}`: months and years are not units here (m is minutes); write days, e.g. {}d",
                    n.saturating_mul(if unit == 'M' { 30 } else { 365 })
                ),
                _ => bail!("unknown unit `{unit}` in `{spec}`; use m (minutes), h, d or w"),
            };
            return Ok(now_ms.saturating_add(n.saturating_mul(secs).saturating_mul(1000)));
        }
    }
    // Only something shaped like a date gets the date parser's own complaint.
    if !spec.starts_with(|c: char| c.is_ascii_digit()) {
        bail!("`{spec}` is not an expiry: use {shapes}");
    }
    let date: jiff::civil::Date = spec
        .parse()
        .with_context(|| format!("`{spec}` is not an expiry: use {shapes}"))?;
    let ts = date
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .context("date out of range")?
        .timestamp();
    let ms = u64::try_from(ts.as_millisecond()).context("date before 1970")?;
    if ms <= now_ms {
        bail!("`{spec}` is in the past: a key that expires then would never work");
    }
    Ok(ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans() {
        assert_eq!(span(999), "0s");
        assert_eq!(span(59_999), "59s");
        assert_eq!(span(60_000), "1m");
        assert_eq!(span(3_600_000 * 5 + 1), "5h");
        assert_eq!(span(86_400_000 * 3), "3d");
    }

    #[test]
    fn dates_and_expiry() {
        assert_eq!(date(1_776_000_000_000), "2026-04-12");
        assert_eq!(expiry("2d", 1000).unwrap(), 1000 + 2 * 86_400_000);
        assert_eq!(expiry("1970-01-02", 0).unwrap(), 86_400_000);
        let message = |spec: &str, now: u64| format!("{:#}", expiry(spec, now).unwrap_err());
        assert_eq!(
            message("yesterday", 0),
            "`yesterday` is not an expiry: use a duration such as 30m (minutes), 12h, 30d or 2w, or a date such as 2027-01-31"
        );
        assert_eq!(
            message("3y", 0),
            "`3y`: months and years are not units here (m is minutes); write days, e.g. 1095d"
        );
        assert_eq!(
            message("1970-01-02", 86_400_000),
            "`1970-01-02` is in the past: a key that expires then would never work"
        );
        assert_eq!(expiry("1m", 0).unwrap(), 60_000, "m is minutes");
    }
}
