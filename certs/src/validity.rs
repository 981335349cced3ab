//! Validity periods: turning "N days from now" into certificate dates.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use time::OffsetDateTime;

use crate::error::{Error, Result};

/// Longest validity accepted for any certificate, in days (about 100 years).
pub const MAX_VALIDITY_DAYS: u32 = 36_500;

/// How far `not_before` is back-dated, so that clients with a slightly slow clock
/// accept a certificate issued a moment ago.
pub const BACKDATE: Duration = Duration::from_secs(5 * 60);

const SECONDS_PER_DAY: u64 = 24 * 60 * 60;

/// The `(not_before, not_after)` pair for a certificate issued at `now` that is valid
/// for `days` days.
pub(crate) fn window(now: SystemTime, days: u32) -> Result<(OffsetDateTime, OffsetDateTime)> {
    check_days(days)?;
    let not_before = now.checked_sub(BACKDATE).unwrap_or(UNIX_EPOCH);
    let not_after = now + days_to_duration(days);
    Ok((truncate(not_before), truncate(not_after)))
}

/// Rejects a validity of zero days or of more than [`MAX_VALIDITY_DAYS`].
pub(crate) fn check_days(days: u32) -> Result<()> {
    if days == 0 {
        return Err(Error::InvalidValidity {
            days,
            reason: "must be at least one day",
        });
    }
    if days > MAX_VALIDITY_DAYS {
        return Err(Error::InvalidValidity {
            days,
            reason: "must be at most 36500 days",
        });
    }
    Ok(())
}

/// `days` as a [`Duration`].
pub(crate) fn days_to_duration(days: u32) -> Duration {
    Duration::from_secs(u64::from(days) * SECONDS_PER_DAY)
}

/// Converts a Unix timestamp (seconds, as X.509 parsers report) to [`SystemTime`].
pub(crate) fn from_unix_seconds(seconds: i64) -> SystemTime {
    match u64::try_from(seconds) {
        Ok(after) => UNIX_EPOCH + Duration::from_secs(after),
        Err(_) => UNIX_EPOCH - Duration::from_secs(seconds.unsigned_abs()),
    }
}

/// Converts a [`SystemTime`] to the whole-second UTC date rcgen wants
/// (X.509 dates carry no fractions of a second).
pub(crate) fn truncate(at: SystemTime) -> OffsetDateTime {
    let at = OffsetDateTime::from(at);
    at.replace_nanosecond(0).unwrap_or(at)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_is_backdated_and_spans_the_requested_days() {
        let now = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let (not_before, not_after) = window(now, 10).unwrap();
        assert_eq!(not_before.unix_timestamp(), 1_700_000_000 - 300);
        assert_eq!(not_after.unix_timestamp(), 1_700_000_000 + 10 * 86_400);
        assert_eq!(not_after.nanosecond(), 0);
    }

    #[test]
    fn out_of_range_days_are_rejected() {
        assert!(matches!(
            window(SystemTime::now(), 0),
            Err(Error::InvalidValidity { days: 0, .. })
        ));
        assert!(matches!(
            window(SystemTime::now(), MAX_VALIDITY_DAYS + 1),
            Err(Error::InvalidValidity { .. })
        ));
        assert!(window(SystemTime::now(), MAX_VALIDITY_DAYS).is_ok());
    }

    #[test]
    fn unix_seconds_convert_both_ways() {
        assert_eq!(from_unix_seconds(0), UNIX_EPOCH);
        assert_eq!(from_unix_seconds(60), UNIX_EPOCH + Duration::from_secs(60));
        assert_eq!(from_unix_seconds(-60), UNIX_EPOCH - Duration::from_secs(60));
        let t = UNIX_EPOCH + Duration::from_secs(1_234_567);
        assert_eq!(SystemTime::from(truncate(t)), t);
    }
}
