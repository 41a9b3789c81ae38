//! Real-time and historical counters, and the metric definitions computed from them.
//!
//! One [`CallCounts`] shape serves skill groups, call types and services, in every family: Now
//! counts live in the rows themselves; To5 (rolling five minutes in ten-second steps), Half (the
//! current clock half hour), Today (since local midnight) and the historical interval each hold a
//! `CallCounts`.
//!
//! Definitions (ICM's, and tested in `tests` below against hand-computed cases):
//! - A call *arrives* for a skill group or call type when it is queued or offered there.
//! - A *short call* is one abandoned in less than `abandon_short_call_threshold_s` after arriving
//!   (`wait < threshold`, so a threshold of 0 means no short calls): it counts as neither offered
//!   nor abandoned.
//! - A call counts as *offered* once its outcome there is known: when it is answered or abandoned
//!   (short calls never count). Calls still waiting show in the Now counts (CallsQNow).
//! - A call enters the service-level calculation when it is answered or abandoned (short calls
//!   never do): `service_level_calls_offered` counts those; `service_level_calls` those answered
//!   within the threshold (`wait <= threshold`); `service_level_abandoned` those abandoned within
//!   it.
//! - For a call type, a caller who hangs up while the router holds the call (in the router queue
//!   or at a Wait node) is an abandon too, timed from the route request. A transferred call
//!   counts for its call type and service on its first leg only; each leg counts for its own
//!   skill group.
//! - Service level, by type ([`ServiceLevelType`]):
//!   type 1 (abandons ignored): `sl_calls / (sl_offered - sl_abandoned)`;
//!   type 2 (abandons count against): `sl_calls / sl_offered`;
//!   type 3 (abandons count for): `(sl_calls + sl_abandoned) / sl_offered`.
//! - ASA (average speed of answer) = `answer_wait_time_ms / calls_answered`.
//! - AHT (average handle time) = `handle_time_ms / calls_handled`, where a call's handle time is
//!   its talk + hold + after-call work time, counted when the work ends.
//! - Abandon rate = `calls_abandoned / calls_offered`.

use crate::domain::ServiceLevelType;
use serde::{Deserialize, Serialize};

/// Call counters of one skill group, call type or service over one period.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CallCounts {
    pub calls_offered: u64,
    pub calls_answered: u64,
    /// Abandoned after the short-call threshold.
    pub calls_abandoned: u64,
    /// Abandoned within the short-call threshold.
    pub short_calls: u64,
    pub calls_handled: u64,
    /// Talk + hold + after-call work of the handled calls.
    pub handle_time_ms: u64,
    pub talk_time_ms: u64,
    pub hold_time_ms: u64,
    pub work_time_ms: u64,
    /// Summed wait (arrival to answer) of the answered calls.
    pub answer_wait_time_ms: u64,
    /// Summed wait of the abandoned (not short) calls.
    pub abandon_wait_time_ms: u64,
    pub service_level_calls_offered: u64,
    pub service_level_calls: u64,
    pub service_level_abandoned: u64,
    /// Route requests the router answered with a target here (call type: with any non-default
    /// answer).
    pub calls_routed: u64,
    /// Calls that entered the router queue.
    pub router_calls_queued: u64,
    /// Calls that left the router queue because the caller or client gave up.
    pub router_calls_abandoned_q: u64,
    /// Summed time calls spent in the router queue.
    pub router_queue_wait_time_ms: u64,
    /// Call type: requests answered with a default label (script error, no target, timeout).
    pub calls_default_routed: u64,
    /// Call type: script errors (an unknown label, a script removed under a call, ...).
    pub route_errors: u64,
}

crate::encode_struct!(fixed CallCounts {
    calls_offered: u64,
    calls_answered: u64,
    calls_abandoned: u64,
    short_calls: u64,
    calls_handled: u64,
    handle_time_ms: u64,
    talk_time_ms: u64,
    hold_time_ms: u64,
    work_time_ms: u64,
    answer_wait_time_ms: u64,
    abandon_wait_time_ms: u64,
    service_level_calls_offered: u64,
    service_level_calls: u64,
    service_level_abandoned: u64,
    calls_routed: u64,
    router_calls_queued: u64,
    router_calls_abandoned_q: u64,
    router_queue_wait_time_ms: u64,
    calls_default_routed: u64,
    route_errors: u64,
});

macro_rules! for_each_call_count {
    ($m:ident) => {
        $m!(
            calls_offered,
            calls_answered,
            calls_abandoned,
            short_calls,
            calls_handled,
            handle_time_ms,
            talk_time_ms,
            hold_time_ms,
            work_time_ms,
            answer_wait_time_ms,
            abandon_wait_time_ms,
            service_level_calls_offered,
            service_level_calls,
            service_level_abandoned,
            calls_routed,
            router_calls_queued,
            router_calls_abandoned_q,
            router_queue_wait_time_ms,
            calls_default_routed,
            route_errors
        )
    };
}

impl CallCounts {
    #[inline]
    pub fn add(&mut self, other: &CallCounts) {
        macro_rules! add_fields { ($($f:ident),*) => { $( self.$f += other.$f; )* } }
        for_each_call_count!(add_fields);
    }

    /// Removes counts added earlier (a To5 bucket sliding out of the window).
    #[inline]
    pub fn sub(&mut self, other: &CallCounts) {
        macro_rules! sub_fields { ($($f:ident),*) => { $( self.$f -= other.$f; )* } }
        for_each_call_count!(sub_fields);
    }

    pub fn is_zero(&self) -> bool {
        *self == CallCounts::default()
    }

    /// Service level as a fraction in `[0, 1]`, or `None` when no call entered the calculation.
    pub fn service_level(&self, kind: ServiceLevelType) -> Option<f64> {
        let (numerator, denominator) = match kind {
            ServiceLevelType::IgnoreAbandoned => (
                self.service_level_calls,
                self.service_level_calls_offered
                    .saturating_sub(self.service_level_abandoned),
            ),
            ServiceLevelType::AbandonedCountAgainst => {
                (self.service_level_calls, self.service_level_calls_offered)
            }
            ServiceLevelType::AbandonedCountFor => (
                self.service_level_calls + self.service_level_abandoned,
                self.service_level_calls_offered,
            ),
        };
        ratio(numerator, denominator)
    }

    /// Average speed of answer in ms.
    pub fn asa_ms(&self) -> Option<f64> {
        ratio(self.answer_wait_time_ms, self.calls_answered)
    }

    /// Average handle time in ms.
    pub fn aht_ms(&self) -> Option<f64> {
        ratio(self.handle_time_ms, self.calls_handled)
    }

    /// Abandoned calls as a fraction of offered calls.
    pub fn abandon_rate(&self) -> Option<f64> {
        ratio(self.calls_abandoned, self.calls_offered)
    }
}

/// One To5 bucket: the counters of one ten-second step, in `u32` because thirty of them are kept
/// for every skill group, call type and service. A bucket adds saturating and reports what it
/// absorbed, so the running To5 sum subtracts exactly what was added when the bucket expires.
/// Saturation needs more than 4.29e9 ms (49 days) of one counter within ten seconds in one row.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallCountsBucket {
    pub counts: [u32; CALL_COUNT_FIELDS],
}

/// The number of counters in [`CallCounts`].
pub const CALL_COUNT_FIELDS: usize = 20;
const _: () = assert!(std::mem::size_of::<CallCounts>() == CALL_COUNT_FIELDS * 8);

impl CallCountsBucket {
    /// Adds `add` to counter `field`, saturating; returns what was actually added.
    #[inline]
    pub fn absorb_counter(&mut self, field: usize, add: u64) -> u64 {
        let slot = &mut self.counts[field];
        let taken = add.min((u32::MAX - *slot) as u64);
        *slot += taken as u32;
        taken
    }

    /// Adds `delta`, saturating per counter; returns what was actually added.
    pub fn absorb(&mut self, delta: &CallCounts) -> CallCounts {
        let mut absorbed = [0u64; CALL_COUNT_FIELDS];
        for (field, add) in delta.to_array().into_iter().enumerate() {
            absorbed[field] = self.absorb_counter(field, add);
        }
        CallCounts::from_array(absorbed)
    }

    pub fn to_counts(&self) -> CallCounts {
        CallCounts::from_array(self.counts.map(u64::from))
    }
}

impl crate::codec::Encode for CallCountsBucket {
    #[inline]
    fn encode(&self, out: &mut Vec<u8>) {
        self.counts.encode(out)
    }
    #[inline]
    fn encoded_len(&self) -> usize {
        CALL_COUNT_FIELDS * 4
    }
    #[inline]
    fn decode(reader: &mut crate::codec::Reader<'_>) -> Result<Self, crate::codec::DecodeError> {
        Ok(CallCountsBucket {
            counts: crate::codec::Encode::decode(reader)?,
        })
    }
}
impl crate::codec::FixedLen for CallCountsBucket {
    const LEN: usize = CALL_COUNT_FIELDS * 4;
}

/// The counters' names in declaration order (the historical tables' column names).
pub const CALL_COUNT_NAMES: [&str; CALL_COUNT_FIELDS] = {
    macro_rules! names { ($($f:ident),*) => { [$( stringify!($f) ),*] } }
    for_each_call_count!(names)
};

impl CallCounts {
    /// The counters in declaration order.
    #[inline]
    pub fn to_array(&self) -> [u64; CALL_COUNT_FIELDS] {
        macro_rules! fields { ($($f:ident),*) => { [$( self.$f ),*] } }
        for_each_call_count!(fields)
    }

    #[inline]
    pub fn from_array(values: [u64; CALL_COUNT_FIELDS]) -> CallCounts {
        macro_rules! fields {
            ($($f:ident),*) => {{
                let mut iter = values.into_iter();
                CallCounts { $( $f: iter.next().unwrap_or(0) ),* }
            }};
        }
        for_each_call_count!(fields)
    }
}

fn ratio(numerator: u64, denominator: u64) -> Option<f64> {
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

/// Counters of one agent in one skill group over one period (Agent_Skill_Group_Real_Time and
/// Agent_Skill_Group_Interval). Kept in `u32` because one agent's day fits (86,400,000 ms), and
/// there are many of these rows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCounts {
    pub calls_offered: u32,
    pub calls_answered: u32,
    pub calls_handled: u32,
    pub handle_time_ms: u32,
    pub talk_time_ms: u32,
    pub hold_time_ms: u32,
    pub work_time_ms: u32,
    pub transfers_out: u32,
}

crate::encode_struct!(fixed AgentCounts {
    calls_offered: u32,
    calls_answered: u32,
    calls_handled: u32,
    handle_time_ms: u32,
    talk_time_ms: u32,
    hold_time_ms: u32,
    work_time_ms: u32,
    transfers_out: u32,
});

impl AgentCounts {
    #[inline]
    pub fn add(&mut self, other: &AgentCounts) {
        self.calls_offered = self.calls_offered.saturating_add(other.calls_offered);
        self.calls_answered = self.calls_answered.saturating_add(other.calls_answered);
        self.calls_handled = self.calls_handled.saturating_add(other.calls_handled);
        self.handle_time_ms = self.handle_time_ms.saturating_add(other.handle_time_ms);
        self.talk_time_ms = self.talk_time_ms.saturating_add(other.talk_time_ms);
        self.hold_time_ms = self.hold_time_ms.saturating_add(other.hold_time_ms);
        self.work_time_ms = self.work_time_ms.saturating_add(other.work_time_ms);
        self.transfers_out = self.transfers_out.saturating_add(other.transfers_out);
    }

    pub fn is_zero(&self) -> bool {
        *self == AgentCounts::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 10 calls entered the SL calculation: 6 answered within the threshold, 2 answered later,
    /// 2 abandoned within the threshold.
    fn sample() -> CallCounts {
        CallCounts {
            service_level_calls_offered: 10,
            service_level_calls: 6,
            service_level_abandoned: 2,
            ..Default::default()
        }
    }

    #[test]
    fn service_level_type_1_ignores_abandons() {
        // 6 / (10 - 2)
        assert_eq!(
            sample().service_level(ServiceLevelType::IgnoreAbandoned),
            Some(0.75)
        );
    }

    #[test]
    fn service_level_type_2_counts_abandons_against() {
        // 6 / 10
        assert_eq!(
            sample().service_level(ServiceLevelType::AbandonedCountAgainst),
            Some(0.6)
        );
    }

    #[test]
    fn service_level_type_3_counts_abandons_for() {
        // (6 + 2) / 10
        assert_eq!(
            sample().service_level(ServiceLevelType::AbandonedCountFor),
            Some(0.8)
        );
    }

    #[test]
    fn service_level_without_calls_is_undefined() {
        let empty = CallCounts::default();
        for kind in [
            ServiceLevelType::IgnoreAbandoned,
            ServiceLevelType::AbandonedCountAgainst,
            ServiceLevelType::AbandonedCountFor,
        ] {
            assert_eq!(empty.service_level(kind), None);
        }
        // Only abandons: type 1 has nothing left to divide by.
        let only_abandons = CallCounts {
            service_level_calls_offered: 3,
            service_level_abandoned: 3,
            ..Default::default()
        };
        assert_eq!(
            only_abandons.service_level(ServiceLevelType::IgnoreAbandoned),
            None
        );
    }

    #[test]
    fn asa_aht_and_abandon_rate() {
        let c = CallCounts {
            calls_offered: 8,
            calls_answered: 4,
            answer_wait_time_ms: 4 * 1500 + 2,
            calls_abandoned: 2,
            calls_handled: 3,
            handle_time_ms: 3 * 200_000,
            ..Default::default()
        };
        assert_eq!(c.asa_ms(), Some(1500.5));
        assert_eq!(c.aht_ms(), Some(200_000.0));
        assert_eq!(c.abandon_rate(), Some(0.25));
    }

    #[test]
    fn a_bucket_absorbs_what_fits_and_says_so() {
        let mut bucket = CallCountsBucket::default();
        let big = CallCounts {
            handle_time_ms: u32::MAX as u64 - 5,
            calls_handled: 1,
            ..Default::default()
        };
        assert_eq!(bucket.absorb(&big), big);
        let more = CallCounts {
            handle_time_ms: 10,
            calls_handled: 1,
            ..Default::default()
        };
        let absorbed = bucket.absorb(&more);
        assert_eq!((absorbed.handle_time_ms, absorbed.calls_handled), (5, 1));
        assert_eq!(bucket.to_counts().handle_time_ms, u32::MAX as u64);
        assert_eq!(CallCounts::from_array(big.to_array()), big);
    }

    #[test]
    fn add_then_sub_is_identity() {
        let mut a = sample();
        let b = CallCounts {
            calls_offered: 5,
            route_errors: 1,
            ..Default::default()
        };
        a.add(&b);
        assert_eq!(a.calls_offered, 5);
        a.sub(&b);
        assert_eq!(a, sample());
    }
}
