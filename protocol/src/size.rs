//! Byte counts as people read them: one system of units (decimal, `8.2 MB`, never MiB) for
//! everything niso shows, the CLI's tables and bars and the web UI's pages alike.

/// Decimal units with one decimal place, as `8.2 MB`; below 1 kB, whole bytes.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    #[allow(clippy::cast_precision_loss, reason = "a rounded display value")]
    let mut value = bytes as f64 / 1000.0;
    let mut unit = 0;
    // 999.95 and up would print as `1000.0`: that is the next unit's `1.0`.
    while value >= 999.95 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// Every byte, digits grouped: `8,200,000 bytes`.
pub fn exact(bytes: u64) -> String {
    let digits = bytes.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 6);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out.push_str(" bytes");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_sizes_are_decimal_and_round_into_the_next_unit() {
        assert_eq!(human(0), "0 B");
        assert_eq!(human(999), "999 B");
        assert_eq!(human(8_200_000), "8.2 MB");
        assert_eq!(human(1_073_741_824), "1.1 GB");
        assert_eq!(human(999_960), "1.0 MB");
        assert_eq!(human(u64::MAX), "18446.7 PB");
    }

    #[test]
    fn exact_sizes_group_digits() {
        assert_eq!(exact(8_200_000), "8,200,000 bytes");
        assert_eq!(exact(12), "12 bytes");
        assert_eq!(exact(1000), "1,000 bytes");
    }
}
