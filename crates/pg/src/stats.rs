//! The simulator's own counts: what a PG's log would show, independent of the router's
//! statistics, so that tests can cross-check one against the other.

/// Counters kept by the simulator.
///
/// Every call whose route request was sent ends in exactly one of `calls_handled`,
/// `calls_abandoned_in_queue`, `calls_abandoned_ringing`, `calls_default_routed`,
/// `calls_routed_away`, `route_requests_timed_out` and `calls_released_before_offer`, or is
/// still in flight: so `route_requests_sent` equals their sum plus
/// [`crate::TrafficSim::calls_in_flight`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimStats {
    /// Inputs emitted by `poll`, of every kind.
    pub inputs_sent: u64,
    /// Peripheral re-reports emitted (each in one or more PeripheralReport parts).
    pub reports_sent: u64,
    /// Route requests emitted (one per call that was not dropped).
    pub route_requests_sent: u64,
    /// Route requests that got at least one answer (the first RouteResponse for the key, repeat
    /// flag or not).
    pub route_requests_answered: u64,
    /// Non-repeat RouteResponses for a key that was already answered: each one is a duplicate
    /// answer and should never happen.
    pub route_requests_answered_more_than_once: u64,
    /// RouteResponses flagged `repeat` for a key that was already answered (a cached answer sent
    /// again; harmless, but the simulator never repeats a request, so worth seeing).
    pub route_responses_repeated: u64,
    /// Route requests whose first answer was Queued.
    pub route_requests_queued: u64,
    /// Route requests the simulator gave up on because no answer came within the routing
    /// client's timeout (RouteRequestEnded with ClientTimeout). Should stay zero: the router
    /// answers with a default before the client's timeout.
    pub route_requests_timed_out: u64,
    /// DeliverQueuedCall outputs accepted for a queued call.
    pub deliveries: u64,
    /// Arrivals not sent because `calls_in_flight_max` calls were in flight.
    pub arrivals_dropped: u64,
    /// CallOffered inputs emitted (calls that reached a reserved agent).
    pub calls_offered: u64,
    /// Callers who hung up while waiting in the router queue.
    pub calls_abandoned_in_queue: u64,
    /// Callers who hung up while the call rang at the agent.
    pub calls_abandoned_ringing: u64,
    /// Calls that ended with CallEnded after an agent answered.
    pub calls_handled: u64,
    /// Calls answered with the default label (AnswerKind::Default), directly or on delivery.
    pub calls_default_routed: u64,
    /// Calls routed to a destination without a reservation of a simulated agent (a network
    /// label, busy, ring, divert, a skill group label): they leave the simulation.
    pub calls_routed_away: u64,
    /// Calls whose agent reservation the router cancelled before the call was offered.
    pub calls_released_before_offer: u64,
    /// ReserveAgent outputs that reserved a simulated agent.
    pub reservations: u64,
    /// ReleaseAgent outputs that freed a reserved agent.
    pub releases: u64,
    /// Outbound (TalkingOut) calls made by agents.
    pub outbound_calls: u64,
    /// NotReady periods begun (breaks after calls and NotReady logins).
    pub not_ready_periods: u64,
    /// Outputs about calls the simulator had already finished (the caller hung up or the client
    /// timed out just as the router acted): an expected race, not an error.
    pub late_outputs: u64,
    /// Outputs for unknown keys or agents, or that contradict the simulator's view (reserving
    /// an agent that is not Ready, delivering a call that is not queued).
    pub ignored_outputs: u64,
    /// The most calls in flight at once so far.
    pub calls_in_flight_peak: u64,
}

impl SimStats {
    /// The calls that have finished, by any outcome.
    pub fn calls_finished(&self) -> u64 {
        self.calls_handled
            + self.calls_abandoned_in_queue
            + self.calls_abandoned_ringing
            + self.calls_default_routed
            + self.calls_routed_away
            + self.route_requests_timed_out
            + self.calls_released_before_offer
    }
}
