//! The limits on durations that every contract and every backend enforces, the same
//! everywhere, before any I/O.
//!
//! | what | smallest | largest |
//! |---|---|---|
//! | a TTL (cache entry, job record) | [`MIN_DURATION`] (1 ms) | [`MAX_TTL`] (10 years) |
//! | a throttle lease, an extension | [`MIN_DURATION`] | [`MAX_LEASE`] (1 day) |
//! | a throttle penalty | [`MIN_DURATION`] | [`MAX_PENALTY`] (1 year) |
//! | a connect or command deadline, a probe's deadline or period (configuration) | more than 0 | [`MAX_DEADLINE`] (1 hour) |
//!
//! The smallest is the resolution of Redis's expiries (milliseconds): a shorter TTL
//! would be rounded up on Redis and kept exact in memory, so it is refused instead. The
//! largest keeps every deadline far from any integer's limit (`PEXPIRE` refuses
//! expiries that overflow; an `Instant` panics when a duration added to it overflows),
//! so no arithmetic on a duration can overflow anywhere.

use std::time::Duration;

use crate::Error;

/// The shortest duration palisade accepts where a duration must be positive: 1 ms.
pub const MIN_DURATION: Duration = Duration::from_millis(1);

/// The longest TTL: 10 years (3,650 days).
pub const MAX_TTL: Duration = Duration::from_secs(3_650 * 86_400);

/// The longest throttle lease (and lease extension): one day.
pub const MAX_LEASE: Duration = Duration::from_secs(86_400);

/// The longest throttle penalty: one year.
pub const MAX_PENALTY: Duration = Duration::from_secs(365 * 86_400);

/// The longest connect deadline, command deadline, probe deadline and probe period a
/// component's configuration accepts: one hour.
pub const MAX_DEADLINE: Duration = Duration::from_secs(3600);

/// Checks that `d` is within `[min, max]`; `what` names it in the error.
pub fn check_duration(what: &str, d: Duration, min: Duration, max: Duration) -> Result<(), Error> {
    if d < min || d > max {
        return Err(Error::invalid_input(format!(
            "{what} must be between {} and {}, got {d:?}",
            human(min),
            human(max)
        )));
    }
    Ok(())
}

/// Checks a TTL: within [`MIN_DURATION`] and [`MAX_TTL`].
pub fn check_ttl(d: Duration) -> Result<(), Error> {
    check_duration("a TTL", d, MIN_DURATION, MAX_TTL)
}

/// `d` as a person reads a limit: `1 ms`, `1 day`, `3650 days`.
fn human(d: Duration) -> String {
    let secs = d.as_secs();
    if secs >= 86_400 && secs % 86_400 == 0 {
        let days = secs / 86_400;
        format!("{days} day{}", if days == 1 { "" } else { "s" })
    } else if secs > 0 && d.subsec_nanos() == 0 {
        format!("{secs} s")
    } else {
        format!("{} ms", d.as_millis().max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_outside_the_limits_are_invalid_input() {
        for bad in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_micros(999),
            MAX_TTL + Duration::from_nanos(1),
            Duration::MAX,
        ] {
            let e = check_ttl(bad).unwrap_err();
            assert_eq!(e.kind(), crate::ErrorKind::InvalidInput, "{bad:?}");
            assert!(e.to_string().contains("1 ms and 3650 days"), "{e}");
        }
        for ok in [MIN_DURATION, Duration::from_secs(30), MAX_TTL] {
            assert!(check_ttl(ok).is_ok(), "{ok:?}");
        }
    }
}
