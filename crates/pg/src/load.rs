//! The load mix: how many calls arrive, how long each phase of a call lasts, how agents behave
//! between calls. Every duration is a mean in milliseconds of an exponential distribution.

use tandem_model::PgId;

/// The hard upper bound on calls the simulator keeps in flight at once (routed but not yet
/// finished). It caps the simulator's memory: at 10,000 calls/s with a 90 s patience, a router
/// that queues everything holds about 900,000 calls.
pub const CALLS_IN_FLIGHT_MAX: usize = 1_000_000;
/// The highest arrival rate accepted. Arrival times are kept in microseconds, so gaps must stay
/// well above one microsecond to keep the Poisson process honest.
pub const CALLS_PER_SECOND_MAX: f64 = 100_000.0;
/// The longest mean duration accepted for any phase (one day); keeps sums of durations far from
/// overflow and catches seconds passed where milliseconds were meant.
pub const MEAN_MS_MAX: u64 = 86_400_000;
/// Agents log in at a uniformly drawn time within this window after the start, and calls start
/// arriving when it ends, so the first calls find agents logged in (as in a morning start-up).
pub const LOGIN_SPREAD_MS: u64 = 2_000;
/// A routed call reaches its peripheral and is offered to the reserved agent a uniformly drawn
/// 0..=this many milliseconds after the router's answer (network transit and ACD processing).
pub const OFFER_DELAY_MS_MAX: u64 = 50;
/// The chance that the caller hangs up while the call rings at the agent.
pub const RING_ABANDON_PROBABILITY: f64 = 0.01;
/// The share of route requests that carry the call variable `"vip"` in position 1 (the
/// generated scripts branch on it).
pub const VIP_SHARE: f64 = 0.05;
/// NotReady reason codes are drawn uniformly from 1..=this (0 means "no reason").
pub const NOT_READY_REASON_CODE_MAX: u16 = 5;
/// An outbound (TalkingOut) call lasts on average this share of the inbound talk time.
pub const OUTBOUND_TALK_TIME_SHARE: f64 = 0.5;

/// What load the simulator offers. Durations are exponential means in milliseconds; shares and
/// probabilities lie in `0.0..=1.0`.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadParams {
    /// Poisson arrival rate of new calls over all simulated routing clients, in calls per second.
    pub calls_per_second: f64,
    /// Mean talk time of an inbound call, from answer to end, holds excluded.
    pub talk_time_mean_ms: u64,
    /// The chance that an answered call is put on hold once during the talk.
    pub hold_probability: f64,
    /// Mean time a held call stays on hold.
    pub hold_time_mean_ms: u64,
    /// Mean after-call work time. Zero means no after-call work: the agent goes straight to
    /// Ready (or NotReady for a break) when the call ends.
    pub wrap_up_mean_ms: u64,
    /// The chance that an agent takes a break (NotReady) after a call; also the share of agents
    /// that log in NotReady.
    pub not_ready_probability: f64,
    /// Mean length of a break (a NotReady period).
    pub not_ready_mean_ms: u64,
    /// Mean patience of a caller waiting in the router queue; when it runs out before the call
    /// is delivered, the caller hangs up.
    pub patience_mean_ms: u64,
    /// Mean time a call rings at the agent before it is answered.
    pub ring_time_mean_ms: u64,
    /// The chance that an agent, each time it is about to become Ready after after-call work or
    /// a break, first makes a short outbound (TalkingOut) call. The simulator never takes a
    /// Ready agent out of Ready on its own: see the crate documentation for why.
    pub outbound_probability: f64,
    /// The share of calls routed before they reach the ACD (pre-route); the rest are post-routed
    /// from the peripheral where they arrived.
    pub pre_route_share: f64,
    /// The share of agents (of the simulated peripherals) that log in at the start; the others
    /// stay logged off.
    pub logged_on_share: f64,
    /// Seeds the one random generator; same seed, configuration and fed-back outputs give the
    /// same inputs.
    pub seed: u64,
    /// Simulate only the peripherals and routing clients of this PG; `None` simulates all.
    pub pg: Option<PgId>,
    /// Arrivals while this many calls are in flight are dropped and counted, never sent.
    /// At most [`CALLS_IN_FLIGHT_MAX`].
    pub calls_in_flight_max: usize,
    /// The `pg_incarnation` of the route request keys: a PG process numbers its requests from
    /// 1, so each start of one takes a new incarnation, and an answer to a request of the
    /// process before is never taken for one of its own.
    pub pg_incarnation: u32,
}

impl Default for LoadParams {
    /// A realistic inbound mix for the 200-agent example configuration: three-minute calls,
    /// one in five put on hold for half a minute, 20 s wrap-up, one break of five minutes per ten
    /// calls, callers who wait a minute and a half. At 0.5 calls/s that offers about 105
    /// Erlangs (0.5 x 209 s of ring, talk, hold and wrap-up) to the 180 of 200 agents logged on;
    /// how busy each agent gets depends on which skill groups the scripts route to.
    fn default() -> Self {
        LoadParams {
            calls_per_second: 0.5,
            talk_time_mean_ms: 180_000,
            hold_probability: 0.2,
            hold_time_mean_ms: 30_000,
            wrap_up_mean_ms: 20_000,
            not_ready_probability: 0.1,
            not_ready_mean_ms: 300_000,
            patience_mean_ms: 90_000,
            ring_time_mean_ms: 3_000,
            outbound_probability: 0.05,
            pre_route_share: 0.2,
            logged_on_share: 0.9,
            seed: 1,
            pg: None,
            calls_in_flight_max: CALLS_IN_FLIGHT_MAX,
            pg_incarnation: crate::client::PG_INCARNATION,
        }
    }
}

impl LoadParams {
    /// A stress mix that keeps about `occupancy` of `agents` busy at `calls_per_second`.
    ///
    /// Every agent logs in Ready and nobody takes breaks or makes outbound calls, since those
    /// take agents out of service in a way occupancy does not count. The busy time per call
    /// (ring + talk + expected hold + wrap-up) is `occupancy * agents / calls_per_second`,
    /// split in the proportions of the default mix: 100,000 agents at 10,000 calls/s and 85%
    /// give 8.5 s. The caller's patience and everything else stay as in the default.
    ///
    /// Panics when `agents` is zero, `calls_per_second` is not positive, or `occupancy` is not
    /// within `0.0..=1.0`: those are programming errors, not load.
    pub fn for_occupancy(agents: u32, calls_per_second: f64, occupancy: f64) -> LoadParams {
        assert!(agents > 0, "for_occupancy needs at least one agent");
        assert!(
            calls_per_second > 0.0 && calls_per_second.is_finite(),
            "for_occupancy needs a positive rate, not {calls_per_second}"
        );
        assert!(
            (0.0..=1.0).contains(&occupancy),
            "occupancy {occupancy} is not within 0..=1"
        );
        let base = LoadParams::default();
        let busy_ms = occupancy * f64::from(agents) / calls_per_second * 1000.0;
        let factor = busy_ms / base.busy_time_mean_ms();
        let scale = |ms: u64| (ms as f64 * factor).round() as u64;
        LoadParams {
            calls_per_second,
            ring_time_mean_ms: scale(base.ring_time_mean_ms),
            talk_time_mean_ms: scale(base.talk_time_mean_ms),
            hold_time_mean_ms: scale(base.hold_time_mean_ms),
            wrap_up_mean_ms: scale(base.wrap_up_mean_ms),
            not_ready_probability: 0.0,
            outbound_probability: 0.0,
            logged_on_share: 1.0,
            ..base
        }
    }

    /// The expected time an agent is busy with one inbound call: ring, talk, hold (weighted by
    /// its probability) and wrap-up, in milliseconds.
    pub fn busy_time_mean_ms(&self) -> f64 {
        self.ring_time_mean_ms as f64
            + self.talk_time_mean_ms as f64
            + self.hold_probability * self.hold_time_mean_ms as f64
            + self.wrap_up_mean_ms as f64
    }

    /// Checks every knob against its bound; [`crate::TrafficSim::new`] refuses parameters that
    /// fail it.
    pub fn check(&self) -> Result<(), String> {
        if !(self.calls_per_second.is_finite()
            && (0.0..=CALLS_PER_SECOND_MAX).contains(&self.calls_per_second))
        {
            return Err(format!(
                "calls_per_second is {}; it must lie within 0..={CALLS_PER_SECOND_MAX}",
                self.calls_per_second
            ));
        }
        for (name, value) in [
            ("hold_probability", self.hold_probability),
            ("not_ready_probability", self.not_ready_probability),
            ("outbound_probability", self.outbound_probability),
            ("pre_route_share", self.pre_route_share),
            ("logged_on_share", self.logged_on_share),
        ] {
            // `contains` is false for NaN, so NaN is refused too.
            if !(0.0..=1.0).contains(&value) {
                return Err(format!("{name} is {value}; it must lie within 0..=1"));
            }
        }
        for (name, value) in [
            ("talk_time_mean_ms", self.talk_time_mean_ms),
            ("hold_time_mean_ms", self.hold_time_mean_ms),
            ("wrap_up_mean_ms", self.wrap_up_mean_ms),
            ("not_ready_mean_ms", self.not_ready_mean_ms),
            ("patience_mean_ms", self.patience_mean_ms),
            ("ring_time_mean_ms", self.ring_time_mean_ms),
        ] {
            if value > MEAN_MS_MAX {
                return Err(format!(
                    "{name} is {value}; it must be at most {MEAN_MS_MAX}"
                ));
            }
        }
        if !(1..=CALLS_IN_FLIGHT_MAX).contains(&self.calls_in_flight_max) {
            return Err(format!(
                "calls_in_flight_max is {}; it must lie within 1..={CALLS_IN_FLIGHT_MAX}",
                self.calls_in_flight_max
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_mix_passes_its_own_check() {
        assert_eq!(LoadParams::default().check(), Ok(()));
    }

    #[test]
    fn occupancy_helper_gives_the_specified_stress_mix() {
        let params = LoadParams::for_occupancy(100_000, 10_000.0, 0.85);
        assert_eq!(params.check(), Ok(()));
        let busy_ms = params.busy_time_mean_ms();
        assert!((busy_ms - 8_500.0).abs() < 10.0, "busy time {busy_ms} ms");
        assert_eq!(params.not_ready_probability, 0.0);
        assert_eq!(params.outbound_probability, 0.0);
        assert_eq!(params.logged_on_share, 1.0);
        // Occupancy = rate * busy time / agents.
        let occupancy = params.calls_per_second * busy_ms / 1000.0 / 100_000.0;
        assert!((occupancy - 0.85).abs() < 0.001, "occupancy {occupancy}");
    }

    #[test]
    fn check_refuses_out_of_range_knobs() {
        let bad = [
            LoadParams {
                calls_per_second: -1.0,
                ..LoadParams::default()
            },
            LoadParams {
                calls_per_second: f64::NAN,
                ..LoadParams::default()
            },
            LoadParams {
                hold_probability: 1.5,
                ..LoadParams::default()
            },
            LoadParams {
                pre_route_share: f64::NAN,
                ..LoadParams::default()
            },
            LoadParams {
                talk_time_mean_ms: MEAN_MS_MAX + 1,
                ..LoadParams::default()
            },
            LoadParams {
                calls_in_flight_max: 0,
                ..LoadParams::default()
            },
            LoadParams {
                calls_in_flight_max: CALLS_IN_FLIGHT_MAX + 1,
                ..LoadParams::default()
            },
        ];
        for params in bad {
            assert!(params.check().is_err(), "{params:?} passed the check");
        }
    }
}
