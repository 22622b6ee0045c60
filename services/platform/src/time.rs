//! Instants are stored as microseconds since the Unix epoch (UTC) in a BIGINT, which both
//! PostgreSQL and SQLite hold exactly.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Microseconds since the Unix epoch.
pub type Micros = i64;

pub const MICROS_PER_SECOND: i64 = 1_000_000;
pub const MICROS_PER_DAY: i64 = 86_400 * MICROS_PER_SECOND;

pub fn now_micros() -> Micros {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    i64::try_from(since.as_micros()).unwrap_or(i64::MAX)
}

pub fn to_timestamp(micros: Micros) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: micros.div_euclid(MICROS_PER_SECOND),
        nanos: i32::try_from(micros.rem_euclid(MICROS_PER_SECOND) * 1000).unwrap_or(0),
    }
}

/// `None` for an absent or zero timestamp.
pub fn to_optional_timestamp(micros: Option<Micros>) -> Option<prost_types::Timestamp> {
    micros.map(to_timestamp)
}

/// A timestamp as microseconds, or `None` when it is out of range or malformed.
pub fn from_timestamp(ts: &prost_types::Timestamp) -> Option<Micros> {
    if !(0..1_000_000_000).contains(&ts.nanos) {
        return None;
    }
    ts.seconds.checked_mul(MICROS_PER_SECOND)?.checked_add(i64::from(ts.nanos / 1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_round_trip_including_before_the_epoch() {
        for micros in [0, 1, 1_700_000_000_123_456, -1, -1_500_000] {
            assert_eq!(from_timestamp(&to_timestamp(micros)), Some(micros));
        }
    }

    #[test]
    fn malformed_timestamps_are_refused() {
        let bad = prost_types::Timestamp { seconds: 1, nanos: -5 };
        assert_eq!(from_timestamp(&bad), None);
        let huge = prost_types::Timestamp { seconds: i64::MAX, nanos: 0 };
        assert_eq!(from_timestamp(&huge), None);
    }
}
