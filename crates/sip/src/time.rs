//! Wall-clock time as text (RFC 3339, UTC) for traces and events, and on the local
//! clock (the machine's time zone) for people, without a date crate.

use std::time::{SystemTime, UNIX_EPOCH};

/// `2026-11-23T16:17:00.123456Z`: UTC, microsecond precision (for SIP traces, where
/// the time between two messages is often well under a millisecond).
pub(crate) fn timestamp_micros() -> String {
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
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
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

/// A moment on the local clock: the machine's time zone (`TZ`, `/etc/localtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LocalTime {
    /// The year (e.g. 2026).
    pub year: i64,
    /// The month, 1–12.
    pub month: u32,
    /// The day of the month, 1–31.
    pub day: u32,
    /// The hour, 0–23.
    pub hour: u32,
    /// The minute, 0–59.
    pub minute: u32,
    /// The second, 0–59.
    pub second: u32,
    /// How far the local clock is ahead of UTC, seconds.
    pub offset: i64,
}

impl LocalTime {
    /// `2026-12-07 14:03`: the date and time a person reads.
    pub fn minutes(&self) -> String {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}",
            self.year, self.month, self.day, self.hour, self.minute
        )
    }

    /// `2026-12-07T14:03:12+01:00`: ISO 8601 with the offset from UTC.
    pub fn iso8601(&self) -> String {
        let sign = if self.offset < 0 { '-' } else { '+' };
        let off = self.offset.unsigned_abs();
        format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}{sign}{:02}:{:02}",
            self.year,
            self.month,
            self.day,
            self.hour,
            self.minute,
            self.second,
            off / 3600,
            (off / 60) % 60
        )
    }
}

/// `secs` since the Unix epoch on the local clock (UTC when the time zone cannot
/// be read).
#[allow(unsafe_code)] // localtime_r: a libc call, see the SAFETY note
pub fn local_time(secs: i64) -> LocalTime {
    let converted = libc::time_t::try_from(secs).ok().and_then(|time| {
        // SAFETY: `localtime_r` only reads `time` and writes the `tm` we own; a zeroed
        // `tm` is a valid value of that plain C struct.
        let mut tm: libc::tm = unsafe { std::mem::zeroed() };
        let ok = unsafe { !libc::localtime_r(&time, &mut tm).is_null() };
        ok.then_some(tm)
    });
    match converted {
        // `c_long` is `i32` on 32-bit targets.
        #[allow(clippy::useless_conversion)]
        Some(tm) => LocalTime {
            year: i64::from(tm.tm_year) + 1900,
            month: u32::try_from(tm.tm_mon + 1).unwrap_or(1),
            day: u32::try_from(tm.tm_mday).unwrap_or(1),
            hour: u32::try_from(tm.tm_hour).unwrap_or(0),
            minute: u32::try_from(tm.tm_min).unwrap_or(0),
            second: u32::try_from(tm.tm_sec).unwrap_or(0),
            offset: i64::from(tm.tm_gmtoff),
        },
        None => utc_time(secs),
    }
}

/// `secs` since the Unix epoch in UTC, as a [`LocalTime`] with offset 0.
fn utc_time(secs: i64) -> LocalTime {
    let (year, month, day) = civil_from_days(secs.div_euclid(86_400));
    let rem = secs.rem_euclid(86_400) as u32;
    LocalTime {
        year,
        month,
        day,
        hour: rem / 3600,
        minute: (rem / 60) % 60,
        second: rem % 60,
        offset: 0,
    }
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

    #[test]
    fn local_clock() {
        for secs in [0_i64, 1_796_650_815, 1_763_914_620, 951_782_400] {
            let local = local_time(secs);
            // Whatever the machine's zone: the local fields less the offset are UTC.
            assert_eq!(
                utc_time(secs + local.offset),
                LocalTime { offset: 0, ..local }
            );
        }
        let t = utc_time(1_796_650_815);
        assert_eq!(t.minutes(), "2026-12-07 13:40");
        assert_eq!(t.iso8601(), "2026-12-07T13:40:15+00:00");
        let ahead = LocalTime {
            offset: 19_800,
            ..t
        };
        assert_eq!(ahead.iso8601(), "2026-12-07T13:40:15+05:30");
        let behind = LocalTime {
            offset: -3_600,
            ..t
        };
        assert_eq!(behind.iso8601(), "2026-12-07T13:40:15-01:00");
        assert_eq!(utc_time(-1).iso8601(), "1969-12-31T23:59:59+00:00");
    }
}
