//! Local-time calendar arithmetic for period resets: Today (local midnight), Half (the clock half
//! hour), the historical interval (5/15/30 minutes), and the To5 ten-second step.
//!
//! All of it is a pure function of ordered time and the configured IANA time zone, so both sides
//! reset at the same ordered message.

use chrono::{Datelike, NaiveTime, Offset, TimeZone, Timelike};
use chrono_tz::Tz;

pub const SECOND_MS: u64 = 1_000;
pub const MINUTE_MS: u64 = 60 * SECOND_MS;
pub const HALF_HOUR_MS: u64 = 30 * MINUTE_MS;
/// One To5 step.
pub const TO5_STEP_MS: u64 = 10 * SECOND_MS;
/// The number of To5 steps in the rolling five-minute window.
pub const TO5_STEPS: usize = 30;

/// The periods that contain one instant, with the instant at which the earliest of them ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Periods {
    /// Start of the local day (ordered ms).
    pub day_start_ms: u64,
    pub half_start_ms: u64,
    pub interval_start_ms: u64,
    /// The first instant at which any of the periods above changes.
    pub next_change_ms: u64,
    /// Minutes since local midnight.
    pub local_minute: u16,
    /// 0 = Monday .. 6 = Sunday.
    pub local_weekday: u8,
}
crate::encode_struct!(fixed Periods {
    day_start_ms: u64,
    half_start_ms: u64,
    interval_start_ms: u64,
    next_change_ms: u64,
    local_minute: u16,
    local_weekday: u8,
});

/// The latest ordered time tandem accepts: 9999-12-31T23:59:59.999Z. Later times are corrupt
/// input; bounding them keeps every `time + duration` far from overflow.
pub const TIME_MS_MAX: u64 = 253_402_300_799_999;

/// The To5 step that contains `time_ms`.
pub fn to5_step(time_ms: u64) -> u64 {
    time_ms / TO5_STEP_MS
}

/// Computes the periods containing `time_ms` in `tz` with `interval_minutes`-long intervals.
///
/// Half hours and intervals follow the local clock (they differ from UTC's in zones with a
/// half-hour or 45-minute offset). `next_change_ms` also includes the next local minute, so
/// time-of-day conditions see the current minute.
pub fn periods(tz: Tz, interval_minutes: u32, time_ms: u64) -> Periods {
    debug_assert!([5, 15, 30].contains(&interval_minutes));
    let interval_minutes = interval_minutes.clamp(1, 24 * 60);
    let time_ms_i = time_ms.min(TIME_MS_MAX) as i64;
    let local = tz
        .timestamp_millis_opt(time_ms_i)
        .single()
        .unwrap_or_else(|| {
            // Every UTC instant maps to exactly one local time; this is unreachable in practice.
            tz.timestamp_millis_opt(0)
                .single()
                .expect("epoch is representable")
        });
    let offset_ms = local.offset().fix().local_minus_utc() as i64 * 1000;
    let local_ms = time_ms_i + offset_ms;
    let floor = |period_ms: u64| -> u64 {
        let period = period_ms as i64;
        (local_ms.div_euclid(period) * period - offset_ms).max(0) as u64
    };
    let half_start_ms = floor(HALF_HOUR_MS);
    let interval_ms = interval_minutes as u64 * MINUTE_MS;
    let interval_start_ms = floor(interval_ms);
    let minute_start_ms = floor(MINUTE_MS);

    let date = local.date_naive();
    let day_start_ms = local_midnight_ms(tz, date).unwrap_or_else(|| floor(24 * 60 * MINUTE_MS));
    let next_day_ms = date
        .succ_opt()
        .and_then(|d| local_midnight_ms(tz, d))
        .unwrap_or(day_start_ms + 24 * 60 * MINUTE_MS);

    let next_change_ms = [
        next_day_ms,
        half_start_ms + HALF_HOUR_MS,
        interval_start_ms + interval_ms,
        minute_start_ms + MINUTE_MS,
    ]
    .into_iter()
    .min()
    .expect("non-empty");
    debug_assert!(next_change_ms > time_ms);
    Periods {
        day_start_ms,
        half_start_ms,
        interval_start_ms,
        next_change_ms,
        local_minute: (local.hour() * 60 + local.minute()) as u16,
        local_weekday: local.weekday().num_days_from_monday() as u8,
    }
}

/// The ordered time of local midnight starting `date`; in the rare zones where midnight does not
/// exist on a DST day, the first instant of that day.
fn local_midnight_ms(tz: Tz, date: chrono::NaiveDate) -> Option<u64> {
    for hour in 0..3 {
        let naive = date.and_time(NaiveTime::from_hms_opt(hour, 0, 0)?);
        if let Some(dt) = tz.from_local_datetime(&naive).earliest() {
            return Some(dt.timestamp_millis().max(0) as u64);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2026-11-21T10:17:42.500Z
    const T: u64 = 1_795_256_262_500;

    #[test]
    fn utc_periods() {
        let p = periods(Tz::UTC, 30, T);
        assert_eq!(p.day_start_ms, 1_795_219_200_000); // 2026-11-21T00:00Z
        assert_eq!(p.half_start_ms, 1_795_255_200_000); // 10:00
        assert_eq!(p.interval_start_ms, p.half_start_ms);
        assert_eq!(p.local_minute, 10 * 60 + 17);
        assert_eq!(p.local_weekday, 5); // Saturday
        assert_eq!(p.next_change_ms, 1_795_256_280_000); // 10:18
    }

    #[test]
    fn fifteen_minute_intervals() {
        let p = periods(Tz::UTC, 15, T);
        assert_eq!(p.interval_start_ms, 1_795_256_100_000); // 10:15
    }

    #[test]
    fn half_hours_follow_local_clock_in_offset_zones() {
        // Asia/Kolkata is UTC+5:30: 10:17:42Z is 15:47:42 local, so the half hour began at
        // 15:30 local = 10:00Z, and midnight local was 18:30Z the day before.
        let p = periods(chrono_tz::Asia::Kolkata, 30, T);
        assert_eq!(p.half_start_ms, 1_795_255_200_000);
        assert_eq!(
            p.day_start_ms,
            1_795_219_200_000 - 5 * 3_600_000 - 1_800_000
        );
        // Asia/Kathmandu is UTC+5:45: 16:02:42 local; half began 16:00 local = 10:15Z.
        let p = periods(chrono_tz::Asia::Kathmandu, 30, T);
        assert_eq!(p.half_start_ms, 1_795_256_100_000);
    }

    #[test]
    fn dst_day_has_23_hours() {
        // Europe/Paris springs forward on 2026-03-29: that local day is 23 hours long.
        let tz = chrono_tz::Europe::Paris;
        let noon = 1_774_785_600_000; // 2026-03-29T12:00Z
        let p = periods(tz, 30, noon);
        let next = periods(tz, 30, noon + 24 * 3_600_000);
        assert_eq!(next.day_start_ms - p.day_start_ms, 23 * 3_600_000);
    }

    #[test]
    fn boundaries_are_exact() {
        let p = periods(Tz::UTC, 30, 1_795_255_200_000 - 1);
        assert_eq!(p.next_change_ms, 1_795_255_200_000);
        let q = periods(Tz::UTC, 30, 1_795_255_200_000);
        assert_eq!(q.half_start_ms, 1_795_255_200_000);
    }
}
