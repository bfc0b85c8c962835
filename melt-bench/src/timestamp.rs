//! Run ids and date stamps from the system clock, with no calendar crate.

/// UTC timestamp `YYYY-MM-DDTHH-MM-SSZ` (file-name safe), from the system clock.
pub fn timestamp_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    timestamp_id_at(secs)
}

/// [`timestamp_id`] of `secs` since the Unix epoch.
pub fn timestamp_id_at(secs: u64) -> String {
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}-{:02}-{:02}Z",
        rem / 3600,
        (rem / 60) % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::timestamp_id_at;

    #[test]
    fn utc_stamps_of_known_instants() {
        assert_eq!(timestamp_id_at(0), "1970-01-01T00-00-00Z");
        assert_eq!(timestamp_id_at(1_795_700_000), "2026-11-26T13-33-20Z");
        assert_eq!(timestamp_id_at(951_782_400), "2000-02-29T00-00-00Z");
    }
}
