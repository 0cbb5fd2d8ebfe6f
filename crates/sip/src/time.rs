//! Wall-clock time as text (RFC 3339, UTC) for traces and events, without a date crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// `2026-11-23T16:17:00.123456Z`: UTC, microsecond precision (for SIP traces, where
/// the time between two messages is often well under a millisecond).
pub fn timestamp_micros() -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    format!("{}.{:06}Z", date_time(now.as_secs()), now.subsec_micros())
}

/// `t` as RFC 3339 UTC text with milliseconds.
pub fn rfc3339(t: SystemTime) -> String {
    let now = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:03}Z", date_time(now.as_secs()), now.subsec_millis())
}

/// `2026-11-23T16:17:00` for `secs` since the Unix epoch (UTC).
fn date_time(secs: u64) -> String {
    let (y, mo, d) = civil_from_days((secs / 86_400) as i64);
    let rem = secs % 86_400;
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + if m <= 2 { 1 } else { 0 };
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_415), (2025, 11, 23));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }

    #[test]
    fn texts() {
        let t = UNIX_EPOCH + std::time::Duration::from_micros(1_763_914_620_123_456);
        assert_eq!(rfc3339(t), "2025-11-23T16:17:00.123Z");
        let micros = timestamp_micros();
        assert_eq!(
            micros.len(),
            "2025-11-23T16:17:00.123456Z".len(),
            "{micros}"
        );
    }
}
