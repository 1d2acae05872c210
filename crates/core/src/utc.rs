//! UTC calendar formatting of epoch milliseconds. The core reads no clock, so it
//! converts the timestamps it is given with the civil-from-days algorithm
//! (proleptic Gregorian calendar, valid for every i64 day count we can meet).

/// (year, month 1-12, day 1-31, hour, minute, second, millisecond) of `ms` since the epoch.
pub fn civil(ms: i64) -> (i64, u32, u32, u32, u32, u32, u32) {
    let days = ms.div_euclid(86_400_000);
    let in_day = ms.rem_euclid(86_400_000);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    let secs = in_day / 1000;
    (
        year,
        month,
        day,
        (secs / 3600) as u32,
        ((secs / 60) % 60) as u32,
        (secs % 60) as u32,
        (in_day % 1000) as u32,
    )
}

/// `YYYY-MM-DD HH:MM:SS`, the communication file's timestamp layout.
pub fn format_seconds(ms: i64) -> String {
    let (y, mo, d, h, mi, s, _) = civil(ms);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{mi:02}:{s:02}")
}

/// RFC 3339 with milliseconds, e.g. `2026-11-24T05:30:12.345Z`.
pub fn format_rfc3339(ms: i64) -> String {
    let (y, mo, d, h, mi, s, milli) = civil(ms);
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{milli:03}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn epoch_and_known_dates() {
        assert_eq!(format_seconds(0), "1970-01-01 00:00:00");
        // 2026-11-24 05:30:12.345 UTC
        assert_eq!(
            format_rfc3339(1_795_498_212_345),
            "2026-11-24T05:30:12.345Z"
        );
        assert_eq!(format_seconds(1_795_498_212_345), "2026-11-24 05:30:12");
        // A leap day, and the last millisecond of a year.
        assert_eq!(format_seconds(951_782_400_000), "2000-02-29 00:00:00");
        assert_eq!(
            format_rfc3339(1_704_067_199_999),
            "2023-12-31T23:59:59.999Z"
        );
        assert_eq!(format_seconds(-1_000), "1969-12-31 23:59:59");
    }
}
