//! The four counter families of a skill group, call type or service row, and their lazy resets.
//!
//! - **To5**: a ring of thirty ten-second buckets plus their running sum; the window is the
//!   current step and the 29 before it.
//! - **Half**: the current clock half hour (local time); reset at :00 and :30.
//! - **Today**: since local midnight.
//! - **Interval**: the current historical interval (5/15/30 min); when it ends, the row becomes a
//!   `*_Interval` record.
//!
//! Resets are lazy: a row is rolled forward when it is next touched (or read, on a copy), so a
//! midnight or half-hour boundary costs nothing at the moment it passes. Interval rows of rows
//! nobody touched are emitted by the interval cursor in bounded chunks (see `intervals.rs`).

use tandem_model::calendar::{to5_step, Periods, TO5_STEPS};
use tandem_model::realtime::{AgentCounts, CallCounts, CallCountsBucket, CALL_COUNT_FIELDS};

/// Which running total of a counter: the To5 window's sum, the half hour, today, the interval.
const TO5: usize = 0;
const HALF: usize = 1;
const TODAY: usize = 2;
const INTERVAL: usize = 3;
const FAMILIES: usize = 4;

/// Call counters in all four families.
///
/// Laid out counter-major: each counter's four running totals sit side by side in `totals`, so
/// an event that touches two or three counters writes two or three cache lines (plus the current
/// To5 bucket) instead of a line in each of four 160-byte blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallFamilies {
    /// The To5 step of the newest bucket.
    pub to5_step: u64,
    pub to5_buckets: [CallCountsBucket; TO5_STEPS],
    pub half_start_ms: u64,
    pub day_start_ms: u64,
    pub interval_start_ms: u64,
    /// Per counter (in `CallCounts` order): To5 sum, Half, Today, Interval.
    pub totals: [[u64; FAMILIES]; CALL_COUNT_FIELDS],
}

tandem_model::encode_struct!(fixed CallFamilies {
    to5_step: u64,
    to5_buckets: [CallCountsBucket; TO5_STEPS],
    half_start_ms: u64,
    day_start_ms: u64,
    interval_start_ms: u64,
    totals: [[u64; FAMILIES]; CALL_COUNT_FIELDS],
});

/// A finished interval: its start and its counts, ready to become a historical row.
pub type FinishedInterval<C> = (u64, C);

impl CallFamilies {
    pub fn new(periods: &Periods, now_ms: u64) -> Self {
        CallFamilies {
            to5_step: to5_step(now_ms),
            to5_buckets: [CallCountsBucket::default(); TO5_STEPS],
            half_start_ms: periods.half_start_ms,
            day_start_ms: periods.day_start_ms,
            interval_start_ms: periods.interval_start_ms,
            totals: [[0; FAMILIES]; CALL_COUNT_FIELDS],
        }
    }

    fn family(&self, family: usize) -> CallCounts {
        CallCounts::from_array(self.totals.map(|t| t[family]))
    }

    fn clear(&mut self, family: usize) {
        for t in self.totals.iter_mut() {
            t[family] = 0;
        }
    }

    /// The rolling five minutes (as of the last roll).
    pub fn to5_sum(&self) -> CallCounts {
        self.family(TO5)
    }

    pub fn half(&self) -> CallCounts {
        self.family(HALF)
    }

    pub fn today(&self) -> CallCounts {
        self.family(TODAY)
    }

    pub fn interval(&self) -> CallCounts {
        self.family(INTERVAL)
    }

    /// Brings every family forward to `now_ms`. Returns the interval that ended, if one did.
    pub fn roll(&mut self, periods: &Periods, now_ms: u64) -> Option<FinishedInterval<CallCounts>> {
        let step = to5_step(now_ms);
        if step > self.to5_step {
            let expired = (step - self.to5_step).min(TO5_STEPS as u64);
            for i in 1..=expired {
                let index = ((self.to5_step + i) % TO5_STEPS as u64) as usize;
                let bucket = std::mem::take(&mut self.to5_buckets[index]);
                for (t, value) in self.totals.iter_mut().zip(bucket.counts) {
                    t[TO5] -= value as u64;
                }
            }
            self.to5_step = step;
        }
        if self.half_start_ms != periods.half_start_ms {
            self.half_start_ms = periods.half_start_ms;
            self.clear(HALF);
        }
        if self.day_start_ms != periods.day_start_ms {
            self.day_start_ms = periods.day_start_ms;
            self.clear(TODAY);
        }
        if self.interval_start_ms != periods.interval_start_ms {
            let finished = (self.interval_start_ms, self.interval());
            self.interval_start_ms = periods.interval_start_ms;
            self.clear(INTERVAL);
            return Some(finished);
        }
        None
    }

    /// Adds `delta` to every family. The row must have been rolled to the current time. The To5
    /// bucket takes what fits in it (see `CallCountsBucket`), and the To5 sum exactly that.
    #[inline]
    pub fn add(&mut self, delta: &CallCounts) {
        let bucket = &mut self.to5_buckets[(self.to5_step % TO5_STEPS as u64) as usize];
        for (field, add) in delta.to_array().into_iter().enumerate() {
            // Most deltas touch two or three counters; the rest are skipped.
            if add != 0 {
                let t = &mut self.totals[field];
                t[TO5] += bucket.absorb_counter(field, add);
                t[HALF] += add;
                t[TODAY] += add;
                t[INTERVAL] += add;
            }
        }
    }

    /// Rolls to `now_ms` and adds `delta`, if any: what every event does to a row. Returns the
    /// interval that ended, if one did.
    #[inline]
    pub fn touch(
        &mut self,
        periods: &Periods,
        now_ms: u64,
        delta: Option<&CallCounts>,
    ) -> Option<FinishedInterval<CallCounts>> {
        let finished = self.roll(periods, now_ms);
        if let Some(delta) = delta {
            self.add(delta);
        }
        finished
    }

    /// A copy rolled to `now_ms`, for reading without changing state.
    pub fn rolled(&self, periods: &Periods, now_ms: u64) -> CallFamilies {
        let mut copy = self.clone();
        copy.roll(periods, now_ms);
        copy
    }
}

/// Agent counters in the Half, Today and Interval families (Agent_Skill_Group_Real_Time keeps
/// no To5 fields).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AgentFamilies {
    pub half_start_ms: u64,
    pub half: AgentCounts,
    pub day_start_ms: u64,
    pub today: AgentCounts,
    pub interval_start_ms: u64,
    pub interval: AgentCounts,
}

tandem_model::encode_struct!(fixed AgentFamilies {
    half_start_ms: u64,
    half: AgentCounts,
    day_start_ms: u64,
    today: AgentCounts,
    interval_start_ms: u64,
    interval: AgentCounts,
});

impl AgentFamilies {
    pub fn new(periods: &Periods) -> Self {
        AgentFamilies {
            half_start_ms: periods.half_start_ms,
            day_start_ms: periods.day_start_ms,
            interval_start_ms: periods.interval_start_ms,
            ..Default::default()
        }
    }

    pub fn roll(&mut self, periods: &Periods) -> Option<FinishedInterval<AgentCounts>> {
        if self.half_start_ms != periods.half_start_ms {
            self.half_start_ms = periods.half_start_ms;
            self.half = AgentCounts::default();
        }
        if self.day_start_ms != periods.day_start_ms {
            self.day_start_ms = periods.day_start_ms;
            self.today = AgentCounts::default();
        }
        if self.interval_start_ms != periods.interval_start_ms {
            let finished = (self.interval_start_ms, self.interval);
            self.interval_start_ms = periods.interval_start_ms;
            self.interval = AgentCounts::default();
            return Some(finished);
        }
        None
    }

    pub fn add(&mut self, delta: &AgentCounts) {
        self.half.add(delta);
        self.today.add(delta);
        self.interval.add(delta);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_model::calendar::{periods, HALF_HOUR_MS, TO5_STEP_MS};

    const T0: u64 = 1_795_255_200_000; // 2026-11-21T10:00Z, a half-hour boundary

    fn p(t: u64) -> Periods {
        periods(chrono_tz::Tz::UTC, 30, t)
    }

    fn one_offered() -> CallCounts {
        CallCounts {
            calls_offered: 1,
            ..Default::default()
        }
    }

    #[test]
    fn to5_window_slides_in_ten_second_steps() {
        let mut f = CallFamilies::new(&p(T0), T0);
        f.add(&one_offered()); // at 10:00:00
        let t1 = T0 + 150_000; // 10:02:30
        f.roll(&p(t1), t1);
        f.add(&one_offered());
        assert_eq!(f.to5_sum().calls_offered, 2);
        // At 10:04:59.999 the first call's step (10:00:00-10:00:09.999) is still in the window.
        let t2 = T0 + 5 * 60_000 - 1;
        assert_eq!(f.rolled(&p(t2), t2).to5_sum().calls_offered, 2);
        // At 10:05:00 that step slid out.
        let t3 = T0 + 5 * 60_000;
        assert_eq!(f.rolled(&p(t3), t3).to5_sum().calls_offered, 1);
        // Five minutes after the second call, nothing remains.
        let t4 = t1 + 30 * TO5_STEP_MS;
        assert_eq!(f.rolled(&p(t4), t4).to5_sum().calls_offered, 0);
        // A long idle gap clears everything, however long.
        let t5 = T0 + 10 * HALF_HOUR_MS;
        assert!(f.rolled(&p(t5), t5).to5_sum().is_zero());
    }

    #[test]
    fn half_resets_at_the_half_hour_and_reports_the_interval() {
        let mut f = CallFamilies::new(&p(T0), T0);
        f.add(&one_offered());
        let t1 = T0 + HALF_HOUR_MS - 1;
        assert_eq!(f.roll(&p(t1), t1), None);
        f.add(&one_offered());
        assert_eq!(f.half().calls_offered, 2);
        let t2 = T0 + HALF_HOUR_MS;
        let finished = f.roll(&p(t2), t2).expect("the interval ended");
        assert_eq!(finished.0, T0);
        assert_eq!(finished.1.calls_offered, 2);
        assert_eq!(f.half().calls_offered, 0);
        assert_eq!(f.today().calls_offered, 2);
    }

    #[test]
    fn today_resets_at_local_midnight() {
        let tz = chrono_tz::America::New_York;
        let periods_at = |t| periods(tz, 30, t);
        // 2026-11-21 23:59:59 in New York is 2026-11-22T04:59:59Z.
        let before = 1_795_323_599_000;
        let mut f = CallFamilies::new(&periods_at(before), before);
        f.add(&one_offered());
        let after = before + 1_000;
        let rolled = f.rolled(&periods_at(after), after);
        assert_eq!(f.today().calls_offered, 1);
        assert_eq!(rolled.today().calls_offered, 0);
    }
}
