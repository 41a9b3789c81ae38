//! The traffic simulator: a sans-IO state machine that plays the peripherals of one or all PGs.
//!
//! Time reaches it only through `poll(until_ms)` and `on_output(now_ms)`. Pending work is a
//! BTreeMap of events keyed by (due time, sequence number); every call and every agent owns at
//! most one pending event, which is removed from the map when its owner's plans change, so the
//! map never holds more than agents + calls in flight + peripherals + 1 entries.

use crate::client::{Client, KeyOrigin};
use crate::dist::Dice;
use crate::load::*;
use crate::stats::SimStats;
use std::collections::{BTreeMap, BTreeSet};
use tandem_model::config::ContactCenter;
use tandem_model::input::{
    AgentCallReport, AgentReport, PeripheralReport, ReportPart, ReportedCallPhase,
    WaitingCallReport, REPORT_AGENTS_MAX, REPORT_CALLS_MAX,
};
use tandem_model::{
    AfterCall, AgentId, AgentState, AnswerKind, CallTypeId, Input, OrderedInput, Output,
    PeripheralCallKey, PeripheralId, PgId, RouteAnswer, RouteEndReason, RouteRequest,
    RouteRequestKey, RouterCallKey, RoutingClientId, SkillGroupId,
};

/// An event's place in the queue: due time in ms, then the order it was scheduled in.
type EventKey = (u64, u64);
/// The simulator's number for a call (also the call id of its post-routed first leg).
type CallNo = u64;
/// An agent's index in `TrafficSim::agents`.
type AgentIx = usize;

/// What happens when an event comes due. Agent and call events name their owner, whose
/// `pending` field holds the event's key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Event {
    PeripheralOnline(PeripheralId),
    Login(AgentIx),
    /// The next call arrives (one arrival event is pending at a time).
    Arrival,
    /// The routing client's answer timeout runs out.
    ClientTimeout(CallNo),
    /// The queued caller's patience runs out.
    Patience(CallNo),
    /// The routed call reaches its peripheral: it is offered to the reserved agent, if any.
    Arrive(CallNo),
    Answer(CallNo),
    RingAbandon(CallNo),
    Hold(CallNo),
    Retrieve(CallNo),
    End(CallNo),
    WrapUpEnd(AgentIx),
    BreakEnd(AgentIx),
    OutboundEnd(AgentIx),
    /// A post-routed call's first leg leaves its peripheral without an agent there.
    Clear(PeripheralCallKey),
    /// The peripheral re-reports its agents and calls (the PG connected again).
    Report(PeripheralId),
}

/// Where an agent is, as the simulator (the peripheral) sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum AgentPhase {
    LoggedOff,
    NotReady,
    /// Available: only the router takes an agent out of Ready (by reserving it).
    Ready,
    /// The router holds the agent for a call. `call` is None when the call is already gone
    /// (the caller hung up as the router reserved): the agent waits for the router's release.
    Reserved {
        call: Option<CallNo>,
        router_call_key: RouterCallKey,
    },
    /// A routed call rings at, or is answered by, the agent.
    OnCall(CallNo),
    WorkReady,
    /// After-call work, then a break.
    WorkNotReady,
    TalkingOut,
}

struct AgentSim {
    id: AgentId,
    peripheral: PeripheralId,
    phase: AgentPhase,
    pending: Option<EventKey>,
    /// The reason code of the current NotReady period.
    not_ready_reason: u16,
    /// The call whose after-call work the agent is doing.
    wrap_up: Option<WrapUpLeg>,
}

/// A call that ended at an agent who is still in its after-call work: the router keeps it until
/// the work ends, so a re-report names it.
#[derive(Clone, Copy, Debug)]
struct WrapUpLeg {
    leg: PeripheralCallKey,
    skill_group: SkillGroupId,
    call_type: CallTypeId,
    router_call_key: Option<RouterCallKey>,
    leg_started_ms: u64,
    answered_ms: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CallPhase {
    /// The route request is out; no answer yet.
    AwaitingAnswer,
    /// The router answered Queued; the caller waits for a DeliverQueuedCall.
    Queued,
    /// The router answered with a final destination; the call is on its way there.
    Routed,
    Ringing,
    Talking,
    Held,
}

/// The router's hold on an agent for a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reservation {
    agent: AgentIx,
    skill_group: SkillGroupId,
    router_call_key: RouterCallKey,
}

struct Call {
    key: RouteRequestKey,
    call_type: CallTypeId,
    /// The call's leg at a peripheral, once it has arrived at one.
    leg: Option<PeripheralCallKey>,
    reservation: Option<Reservation>,
    phase: CallPhase,
    pending: Option<EventKey>,
    /// Talk time still to come after a hold ends.
    talk_left_ms: u64,
    /// When the leg arrived at its peripheral, and the router call key it arrived with.
    leg_started_ms: u64,
    leg_router_call_key: Option<RouterCallKey>,
    answered_ms: u64,
}

/// A number a caller can dial: one per call type that has a dialed number on a simulated
/// routing client.
struct Dialable {
    call_type: CallTypeId,
    digits: String,
    client: usize,
}

/// What the simulator knows about a route request key.
enum KeyStatus {
    InFlight(CallNo),
    /// Issued by the simulator, but the call has finished.
    Finished,
    Unknown,
}

/// The seeded, deterministic traffic simulator: plays the peripherals (ACDs) of the simulated
/// PGs, emits their inputs in time order and reacts to the router's outputs.
///
/// Drive it in a closed loop: `poll(now)` for the inputs due, apply each to the router, and
/// feed every output back with `on_output` before applying the next input. The same contact
/// center, parameters and fed-back outputs give the same inputs, byte for byte.
pub struct TrafficSim {
    params: LoadParams,
    dice: Dice,
    /// The simulator's current time: the latest of the last poll's bound, the last event
    /// handled and the last output's time. Nothing is ever scheduled before it, so the inputs
    /// it emits never go back in time.
    now_ms: u64,
    /// When arrivals start (the end of the login window).
    arrivals_start_ms: u64,
    /// Offset of the last scheduled arrival from `arrivals_start_ms`, in microseconds, kept
    /// fractional so that high rates are not distorted by rounding gaps to milliseconds.
    arrival_offset_us: f64,
    events: BTreeMap<EventKey, Event>,
    next_event_seq: u64,
    /// The bound on `events`: one per agent, call in flight and peripheral, plus the arrival.
    events_max: usize,
    pgs: BTreeSet<PgId>,
    agents: Vec<AgentSim>,
    agent_index: BTreeMap<AgentId, AgentIx>,
    clients: Vec<Client>,
    client_index: BTreeMap<RoutingClientId, usize>,
    dialables: Vec<Dialable>,
    calls: BTreeMap<CallNo, Call>,
    calls_by_key: BTreeMap<RouteRequestKey, CallNo>,
    /// The simulator's own number for the next call.
    next_call_no: CallNo,
    /// Each peripheral numbers its calls from one, as an ACD does.
    next_call_id: BTreeMap<PeripheralId, u64>,
    /// No more calls arrive (a PG draining before it stops); calls in flight go on.
    arrivals_stopped: bool,
    peripherals: Vec<PeripheralId>,
    /// Peripherals with a re-report scheduled and not yet sent.
    reports_pending: BTreeSet<PeripheralId>,
    stats: SimStats,
}

impl TrafficSim {
    /// Builds the simulator for the PGs `params.pg` selects in `cc` and schedules the start:
    /// every simulated peripheral comes online at `start_ms`, the logged-on share of agents log
    /// in within [`LOGIN_SPREAD_MS`], and calls arrive from then on.
    ///
    /// Panics when `params` fail [`LoadParams::check`]; check them first where they come from
    /// a user.
    pub fn new(cc: &ContactCenter, params: LoadParams, start_ms: u64) -> TrafficSim {
        if let Err(problem) = params.check() {
            panic!("invalid load parameters: {problem}");
        }
        let pgs: BTreeSet<PgId> = match params.pg {
            Some(pg) => [pg].into(),
            None => cc.pgs.iter().map(|pg| pg.id).collect(),
        };
        let peripherals: Vec<PeripheralId> = cc
            .peripherals
            .iter()
            .filter(|p| pgs.contains(&p.pg))
            .map(|p| p.id)
            .collect();
        let agents: Vec<AgentSim> = cc
            .agents
            .iter()
            .filter(|a| peripherals.contains(&a.peripheral))
            .map(|a| AgentSim {
                id: a.id,
                peripheral: a.peripheral,
                phase: AgentPhase::LoggedOff,
                pending: None,
                not_ready_reason: 0,
                wrap_up: None,
            })
            .collect();
        let agent_index = agents
            .iter()
            .enumerate()
            .map(|(ix, a)| (a.id, ix))
            .collect();
        // A routing client can be simulated only if its PG has a peripheral for its calls.
        let clients: Vec<Client> = cc
            .routing_clients
            .iter()
            .filter(|rc| pgs.contains(&rc.pg))
            .filter_map(|rc| {
                let peripheral = cc.peripherals.iter().find(|p| p.pg == rc.pg)?;
                Some(Client::new(
                    rc.id,
                    peripheral.id,
                    u64::from(rc.timeout_ms),
                    params.pg_incarnation,
                ))
            })
            .collect();
        // Call types are drawn uniformly; each is dialed on its first dialed number (in
        // configuration order) that belongs to a simulated routing client.
        let dialables: Vec<Dialable> = cc
            .call_types
            .iter()
            .filter_map(|ct| {
                cc.dialed_numbers
                    .iter()
                    .filter(|dn| dn.call_type == ct.id)
                    .find_map(|dn| {
                        let client = clients.iter().position(|c| c.id == dn.routing_client)?;
                        Some(Dialable {
                            call_type: ct.id,
                            digits: dn.digits.clone(),
                            client,
                        })
                    })
            })
            .collect();
        let client_index = clients
            .iter()
            .enumerate()
            .map(|(ix, c)| (c.id, ix))
            .collect();
        // Each peripheral may have its coming online and a re-report pending at once.
        let events_max = agents.len() + params.calls_in_flight_max + 2 * peripherals.len() + 1;
        let mut sim = TrafficSim {
            dice: Dice::new(params.seed),
            params,
            now_ms: start_ms,
            arrivals_start_ms: start_ms.saturating_add(LOGIN_SPREAD_MS),
            arrival_offset_us: 0.0,
            events: BTreeMap::new(),
            next_event_seq: 0,
            events_max,
            pgs,
            agents,
            agent_index,
            clients,
            client_index,
            dialables,
            calls: BTreeMap::new(),
            calls_by_key: BTreeMap::new(),
            next_call_no: 1,
            next_call_id: BTreeMap::new(),
            arrivals_stopped: false,
            peripherals: peripherals.clone(),
            reports_pending: BTreeSet::new(),
            stats: SimStats::default(),
        };
        for peripheral in peripherals {
            sim.schedule(start_ms, Event::PeripheralOnline(peripheral));
        }
        for ix in 0..sim.agents.len() {
            if sim.dice.chance(sim.params.logged_on_share) {
                let due = start_ms + sim.dice.up_to(LOGIN_SPREAD_MS - 1);
                let key = sim.schedule(due, Event::Login(ix));
                sim.agents[ix].pending = Some(key);
            }
        }
        sim.schedule_next_arrival();
        sim
    }

    /// Appends every input due at or before `until_ms` to `out`, in time order, and moves the
    /// simulator's time on to `until_ms`.
    pub fn poll(&mut self, until_ms: u64, out: &mut Vec<OrderedInput>) {
        while let Some(entry) = self.events.first_entry() {
            if entry.key().0 > until_ms {
                break;
            }
            let (key, event) = entry.remove_entry();
            self.now_ms = self.now_ms.max(key.0);
            self.handle(key, event, out);
        }
        self.now_ms = self.now_ms.max(until_ms);
    }

    /// The time of the next input, if any is planned, so a driver can jump time to it. Inputs
    /// that outputs will cause later are not known yet.
    pub fn next_due_ms(&self) -> Option<u64> {
        self.events.first_key_value().map(|(key, _)| key.0)
    }

    /// Reacts to one router output. `now_ms` is the ordered time of the input that produced it.
    /// Outputs addressed to PGs the simulator does not play are skipped; outputs it cannot
    /// match are counted in [`SimStats`], never a panic.
    pub fn on_output(&mut self, now_ms: u64, output: &Output) {
        self.now_ms = self.now_ms.max(now_ms);
        match output {
            Output::RouteResponse {
                pg,
                key,
                answer,
                repeat,
                ..
            } if self.pgs.contains(pg) => self.on_route_response(key, answer, *repeat),
            Output::DeliverQueuedCall {
                pg, key, answer, ..
            } if self.pgs.contains(pg) => self.on_deliver_queued_call(key, answer),
            Output::ReserveAgent {
                pg,
                agent,
                skill_group,
                router_call_key,
                key,
                ..
            } if self.pgs.contains(pg) => {
                self.on_reserve_agent(*agent, *skill_group, *router_call_key, key)
            }
            Output::ReleaseAgent {
                pg,
                agent,
                router_call_key,
                ..
            } if self.pgs.contains(pg) => self.on_release_agent(*agent, *router_call_key),
            // Outputs for other PGs, and everything meant for loggers and distributors.
            _ => {}
        }
    }

    /// The simulator's counts so far.
    pub fn stats(&self) -> &SimStats {
        &self.stats
    }

    /// Calls whose route request was sent and that have not finished.
    pub fn calls_in_flight(&self) -> usize {
        self.calls.len()
    }

    /// No new calls from now on; the calls in flight, the agents and the answers go on, so that
    /// a stopping PG can wait until every route request it sent was answered.
    pub fn stop_arrivals(&mut self) {
        self.arrivals_stopped = true;
    }

    /// Route requests sent that have had no answer yet.
    pub fn route_requests_unanswered(&self) -> usize {
        self.calls
            .values()
            .filter(|call| call.phase == CallPhase::AwaitingAnswer)
            .count()
    }

    /// The agents logged on, counted by the state the peripheral shows them in.
    pub fn agents_by_state(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for agent in &self.agents {
            match self.agent_state(agent.id) {
                Some(AgentState::LoggedOff) | None => {}
                Some(state) => *counts.entry(state.name().to_string()).or_insert(0) += 1,
            }
        }
        counts
    }

    /// Schedules a re-report of every simulated peripheral's agents and calls, after the inputs
    /// already due: the PG calls it when it (re)connects, so that the router's view agrees with
    /// the peripherals' whatever the router lost.
    pub fn report_peripherals(&mut self) {
        for i in 0..self.peripherals.len() {
            let peripheral = self.peripherals[i];
            if self.reports_pending.insert(peripheral) {
                self.schedule(self.now_ms, Event::Report(peripheral));
            }
        }
    }

    /// The state the simulator (as the peripheral) believes `agent` is in; None for an agent it
    /// does not simulate. A ringing call shows as Reserved, as ICM reports it.
    pub fn agent_state(&self, agent: AgentId) -> Option<AgentState> {
        let ix = *self.agent_index.get(&agent)?;
        Some(match self.agents[ix].phase {
            AgentPhase::LoggedOff => AgentState::LoggedOff,
            AgentPhase::NotReady => AgentState::NotReady,
            AgentPhase::Ready => AgentState::Ready,
            AgentPhase::Reserved { .. } => AgentState::Reserved,
            AgentPhase::OnCall(call_no) => match self.calls.get(&call_no).map(|c| c.phase) {
                Some(CallPhase::Talking) => AgentState::TalkingIn,
                Some(CallPhase::Held) => AgentState::Hold,
                _ => AgentState::Reserved,
            },
            AgentPhase::WorkReady => AgentState::WorkReady,
            AgentPhase::WorkNotReady => AgentState::WorkNotReady,
            AgentPhase::TalkingOut => AgentState::TalkingOut,
        })
    }

    // ---- scheduling ----

    fn schedule(&mut self, due_ms: u64, event: Event) -> EventKey {
        assert!(
            due_ms >= self.now_ms,
            "{event:?} scheduled at {due_ms}, before now {}",
            self.now_ms
        );
        let key = (due_ms, self.next_event_seq);
        self.next_event_seq += 1;
        self.events.insert(key, event);
        assert!(
            self.events.len() <= self.events_max,
            "{} pending events exceed the bound of {}",
            self.events.len(),
            self.events_max
        );
        key
    }

    fn schedule_call(&mut self, call_no: CallNo, delay_ms: u64, event: Event) {
        let key = self.schedule(self.now_ms + delay_ms, event);
        let call = self.call_mut(call_no);
        assert!(
            call.pending.is_none(),
            "call {call_no} already has an event"
        );
        call.pending = Some(key);
    }

    fn schedule_agent(&mut self, ix: AgentIx, delay_ms: u64, event: Event) {
        let key = self.schedule(self.now_ms + delay_ms, event);
        let agent = &mut self.agents[ix];
        assert!(
            agent.pending.is_none(),
            "agent {} already has an event",
            agent.id
        );
        agent.pending = Some(key);
    }

    fn cancel_call_event(&mut self, call_no: CallNo) {
        if let Some(key) = self.call_mut(call_no).pending.take() {
            let removed = self.events.remove(&key);
            assert!(
                removed.is_some(),
                "call {call_no}'s event {key:?} was not queued"
            );
        }
    }

    fn schedule_next_arrival(&mut self) {
        if self.params.calls_per_second <= 0.0 || self.dialables.is_empty() {
            return;
        }
        let gap_us = self.dice.exponential(1e6 / self.params.calls_per_second);
        self.arrival_offset_us += gap_us;
        let due = self.arrivals_start_ms + (self.arrival_offset_us / 1000.0) as u64;
        // A driver that fed an output stamped later than the arrival process has got to moves
        // `now_ms` past it; the arrival then comes at once rather than in the past.
        self.schedule(due.max(self.now_ms), Event::Arrival);
    }

    // ---- events ----

    fn handle(&mut self, key: EventKey, event: Event, out: &mut Vec<OrderedInput>) {
        // The owner's pending key is this event's; clear it so the handler may plan anew.
        match event {
            Event::PeripheralOnline(_) | Event::Arrival | Event::Clear(_) | Event::Report(_) => {}
            Event::Login(ix)
            | Event::WrapUpEnd(ix)
            | Event::BreakEnd(ix)
            | Event::OutboundEnd(ix) => {
                let pending = self.agents[ix].pending.take();
                assert_eq!(pending, Some(key), "{event:?} is not agent {ix}'s event");
            }
            Event::ClientTimeout(c)
            | Event::Patience(c)
            | Event::Arrive(c)
            | Event::Answer(c)
            | Event::RingAbandon(c)
            | Event::Hold(c)
            | Event::Retrieve(c)
            | Event::End(c) => {
                let pending = self.call_mut(c).pending.take();
                assert_eq!(pending, Some(key), "{event:?} is not call {c}'s event");
            }
        }
        match event {
            Event::PeripheralOnline(peripheral) => {
                self.emit(out, Input::PeripheralOnline { peripheral })
            }
            Event::Login(ix) => self.login(ix, out),
            Event::Arrival => self.arrival(out),
            Event::ClientTimeout(c) => self.client_timeout(c, out),
            Event::Patience(c) => self.patience_runs_out(c, out),
            Event::Arrive(c) => self.arrive(c, out),
            Event::Answer(c) => self.answer(c, out),
            Event::RingAbandon(c) => self.ring_abandon(c, out),
            Event::Hold(c) => self.hold(c, out),
            Event::Retrieve(c) => self.retrieve(c, out),
            Event::End(c) => self.end(c, out),
            Event::WrapUpEnd(ix) => self.wrap_up_end(ix, out),
            Event::BreakEnd(ix) => self.become_ready(ix, out),
            Event::OutboundEnd(ix) => self.set_agent_state(ix, AgentState::Ready, 0, out),
            Event::Clear(leg) => self.emit(out, Input::CallCleared { call: leg }),
            Event::Report(peripheral) => self.report(peripheral, out),
        }
    }

    fn emit(&mut self, out: &mut Vec<OrderedInput>, input: Input) {
        self.stats.inputs_sent += 1;
        if matches!(input, Input::RouteRequest(_)) {
            self.stats.route_requests_sent += 1;
        }
        out.push(OrderedInput {
            time_ms: self.now_ms,
            input,
        });
    }

    fn login(&mut self, ix: AgentIx, out: &mut Vec<OrderedInput>) {
        assert_eq!(self.agents[ix].phase, AgentPhase::LoggedOff);
        let agent = self.agents[ix].id;
        if self.dice.chance(self.params.not_ready_probability) {
            let reason_code = self.not_ready_reason();
            self.emit(
                out,
                Input::AgentLogin {
                    agent,
                    state: AgentState::NotReady,
                    reason_code,
                },
            );
            self.agents[ix].not_ready_reason = reason_code;
            self.start_break(ix);
        } else {
            self.emit(
                out,
                Input::AgentLogin {
                    agent,
                    state: AgentState::Ready,
                    reason_code: 0,
                },
            );
            self.agents[ix].phase = AgentPhase::Ready;
        }
    }

    /// The next call id of `peripheral`.
    fn new_call_id(&mut self, peripheral: PeripheralId) -> u64 {
        let next = self.next_call_id.entry(peripheral).or_insert(1);
        let call_id = *next;
        *next += 1;
        call_id
    }

    fn arrival(&mut self, out: &mut Vec<OrderedInput>) {
        if self.arrivals_stopped {
            return;
        }
        self.schedule_next_arrival();
        if self.calls.len() >= self.params.calls_in_flight_max {
            self.stats.arrivals_dropped += 1;
            return;
        }
        let dialable = self.dice.index(self.dialables.len());
        let (call_type, client_ix) = (
            self.dialables[dialable].call_type,
            self.dialables[dialable].client,
        );
        let client = &mut self.clients[client_ix];
        let key = client.next_key();
        let (peripheral, timeout_ms) = (client.peripheral, client.timeout_ms);
        let call_no = self.next_call_no;
        self.next_call_no += 1;
        let pre_route = self.dice.chance(self.params.pre_route_share);
        let leg = (!pre_route).then_some(PeripheralCallKey {
            peripheral,
            call_id: self.new_call_id(peripheral),
        });
        if let Some(leg) = leg {
            self.emit(
                out,
                Input::CallArrived {
                    call: leg,
                    skill_group: None,
                    call_type: Some(call_type),
                    service: None,
                    router_call_key: None,
                },
            );
        }
        let leg_started_ms = self.now_ms;
        let ani = format!("0207946{:04}", self.dice.up_to(9_999));
        let call_variables = if self.dice.chance(VIP_SHARE) {
            vec!["vip".to_string()]
        } else {
            Vec::new()
        };
        let request = RouteRequest {
            key,
            dialed_number: self.dialables[dialable].digits.clone(),
            ani,
            caller_entered_digits: String::new(),
            call_variables,
        };
        self.emit(out, Input::RouteRequest(request));
        self.calls.insert(
            call_no,
            Call {
                key,
                call_type,
                leg,
                reservation: None,
                phase: CallPhase::AwaitingAnswer,
                pending: None,
                talk_left_ms: 0,
                leg_started_ms,
                leg_router_call_key: None,
                answered_ms: 0,
            },
        );
        self.calls_by_key.insert(key, call_no);
        self.stats.calls_in_flight_peak =
            self.stats.calls_in_flight_peak.max(self.calls.len() as u64);
        self.schedule_call(call_no, timeout_ms, Event::ClientTimeout(call_no));
    }

    fn client_timeout(&mut self, call_no: CallNo, out: &mut Vec<OrderedInput>) {
        // The client gives up and uses its own default: the call leaves, nothing more is sent.
        let key = self.call(call_no).key;
        self.emit(
            out,
            Input::RouteRequestEnded {
                key,
                reason: RouteEndReason::ClientTimeout,
            },
        );
        self.stats.route_requests_timed_out += 1;
        self.forget_call(call_no);
    }

    fn patience_runs_out(&mut self, call_no: CallNo, out: &mut Vec<OrderedInput>) {
        let call = self.call(call_no);
        let (key, leg) = (call.key, call.leg);
        self.emit(
            out,
            Input::RouteRequestEnded {
                key,
                reason: RouteEndReason::CallerAbandoned,
            },
        );
        if let Some(leg) = leg {
            self.emit(out, Input::CallAbandoned { call: leg });
        }
        self.stats.calls_abandoned_in_queue += 1;
        self.call_mut(call_no).leg = None;
        self.forget_call(call_no);
    }

    fn arrive(&mut self, call_no: CallNo, out: &mut Vec<OrderedInput>) {
        let call = self.call(call_no);
        let Some(reservation) = call.reservation else {
            // No simulated agent holds the call: it went to a network target, a skill group
            // label or another PG's agent, and leaves the simulation.
            self.stats.calls_routed_away += 1;
            self.forget_call(call_no);
            return;
        };
        let (call_type, leg) = (call.call_type, call.leg);
        let ix = reservation.agent;
        let (agent, peripheral) = (self.agents[ix].id, self.agents[ix].peripheral);
        assert_eq!(
            self.agents[ix].phase,
            AgentPhase::Reserved {
                call: Some(call_no),
                router_call_key: reservation.router_call_key
            }
        );
        let leg = match leg {
            Some(leg) if leg.peripheral == peripheral => leg,
            // A pre-routed call arrives now; a post-routed call sent to another peripheral
            // leaves its first one (cleared there) and arrives anew.
            other => {
                if let Some(first) = other {
                    self.emit(out, Input::CallCleared { call: first });
                }
                let leg = PeripheralCallKey {
                    peripheral,
                    call_id: self.new_call_id(peripheral),
                };
                self.emit(
                    out,
                    Input::CallArrived {
                        call: leg,
                        skill_group: Some(reservation.skill_group),
                        call_type: Some(call_type),
                        service: None,
                        router_call_key: Some(reservation.router_call_key),
                    },
                );
                let now_ms = self.now_ms;
                let call = self.call_mut(call_no);
                call.leg = Some(leg);
                call.leg_started_ms = now_ms;
                call.leg_router_call_key = Some(reservation.router_call_key);
                leg
            }
        };
        self.emit(
            out,
            Input::CallOffered {
                call: leg,
                agent,
                skill_group: Some(reservation.skill_group),
            },
        );
        self.stats.calls_offered += 1;
        self.agents[ix].phase = AgentPhase::OnCall(call_no);
        self.call_mut(call_no).phase = CallPhase::Ringing;
        let ring_ms = self.dice.exponential_ms(self.params.ring_time_mean_ms);
        if self.dice.chance(RING_ABANDON_PROBABILITY) {
            self.schedule_call(call_no, ring_ms, Event::RingAbandon(call_no));
        } else {
            self.schedule_call(call_no, ring_ms, Event::Answer(call_no));
        }
    }

    fn answer(&mut self, call_no: CallNo, out: &mut Vec<OrderedInput>) {
        let leg = self.offered_leg(call_no);
        self.emit(out, Input::CallAnswered { call: leg });
        let now_ms = self.now_ms;
        let call = self.call_mut(call_no);
        call.phase = CallPhase::Talking;
        call.answered_ms = now_ms;
        let talk_ms = self.dice.exponential_ms(self.params.talk_time_mean_ms);
        if self.dice.chance(self.params.hold_probability) {
            let before_hold_ms = (talk_ms as f64 * self.dice.fraction()) as u64;
            self.call_mut(call_no).talk_left_ms = talk_ms - before_hold_ms;
            self.schedule_call(call_no, before_hold_ms, Event::Hold(call_no));
        } else {
            self.schedule_call(call_no, talk_ms, Event::End(call_no));
        }
    }

    fn ring_abandon(&mut self, call_no: CallNo, out: &mut Vec<OrderedInput>) {
        let leg = self.offered_leg(call_no);
        self.emit(out, Input::CallAbandoned { call: leg });
        self.stats.calls_abandoned_ringing += 1;
        // The router puts the agent back to Ready when the ringing call is abandoned.
        let ix = self.agent_of(call_no);
        self.agents[ix].phase = AgentPhase::Ready;
        self.call_mut(call_no).leg = None;
        self.forget_call(call_no);
    }

    fn hold(&mut self, call_no: CallNo, out: &mut Vec<OrderedInput>) {
        let leg = self.offered_leg(call_no);
        self.emit(out, Input::CallHeld { call: leg });
        self.call_mut(call_no).phase = CallPhase::Held;
        let hold_ms = self.dice.exponential_ms(self.params.hold_time_mean_ms);
        self.schedule_call(call_no, hold_ms, Event::Retrieve(call_no));
    }

    fn retrieve(&mut self, call_no: CallNo, out: &mut Vec<OrderedInput>) {
        let leg = self.offered_leg(call_no);
        self.emit(out, Input::CallRetrieved { call: leg });
        let call = self.call_mut(call_no);
        call.phase = CallPhase::Talking;
        let talk_left_ms = call.talk_left_ms;
        self.schedule_call(call_no, talk_left_ms, Event::End(call_no));
    }

    fn end(&mut self, call_no: CallNo, out: &mut Vec<OrderedInput>) {
        let leg = self.offered_leg(call_no);
        let ix = self.agent_of(call_no);
        let take_break = self.dice.chance(self.params.not_ready_probability);
        let after_call = match (self.params.wrap_up_mean_ms > 0, take_break) {
            (true, false) => AfterCall::WorkReady,
            (true, true) => AfterCall::WorkNotReady,
            (false, false) => AfterCall::Ready,
            (false, true) => AfterCall::NotReady,
        };
        self.emit(
            out,
            Input::CallEnded {
                call: leg,
                after_call,
            },
        );
        self.stats.calls_handled += 1;
        let call = self.call(call_no);
        let reservation = call.reservation.expect("an offered call has its agent");
        let wrap_up = WrapUpLeg {
            leg,
            skill_group: reservation.skill_group,
            call_type: call.call_type,
            router_call_key: call.leg_router_call_key,
            leg_started_ms: call.leg_started_ms,
            answered_ms: call.answered_ms,
        };
        self.call_mut(call_no).leg = None;
        self.forget_call(call_no);
        // The router ends the call with reason code 0 whatever comes next.
        self.agents[ix].not_ready_reason = 0;
        match after_call {
            AfterCall::WorkReady | AfterCall::WorkNotReady => {
                self.agents[ix].wrap_up = Some(wrap_up);
                self.agents[ix].phase = if take_break {
                    AgentPhase::WorkNotReady
                } else {
                    AgentPhase::WorkReady
                };
                let wrap_up_ms = self.dice.exponential_ms(self.params.wrap_up_mean_ms);
                self.schedule_agent(ix, wrap_up_ms, Event::WrapUpEnd(ix));
            }
            AfterCall::NotReady => self.start_break(ix),
            AfterCall::Ready => self.agents[ix].phase = AgentPhase::Ready,
        }
    }

    fn wrap_up_end(&mut self, ix: AgentIx, out: &mut Vec<OrderedInput>) {
        match self.agents[ix].phase {
            AgentPhase::WorkNotReady => {
                let reason_code = self.not_ready_reason();
                self.set_agent_state(ix, AgentState::NotReady, reason_code, out);
                self.start_break(ix);
            }
            AgentPhase::WorkReady => self.become_ready(ix, out),
            phase => unreachable!("wrap-up ends for agent {ix} in {phase:?}"),
        }
    }

    /// The agent leaves after-call work or a break. It may first make an outbound call: from
    /// a state the router cannot reserve, so that no reservation can cross it (see the crate
    /// documentation).
    fn become_ready(&mut self, ix: AgentIx, out: &mut Vec<OrderedInput>) {
        if self.dice.chance(self.params.outbound_probability) {
            self.set_agent_state(ix, AgentState::TalkingOut, 0, out);
            self.stats.outbound_calls += 1;
            let mean_ms = self.params.talk_time_mean_ms as f64 * OUTBOUND_TALK_TIME_SHARE;
            let talk_ms = self.dice.exponential(mean_ms).round() as u64;
            self.schedule_agent(ix, talk_ms, Event::OutboundEnd(ix));
        } else {
            self.set_agent_state(ix, AgentState::Ready, 0, out);
        }
    }

    fn start_break(&mut self, ix: AgentIx) {
        self.agents[ix].phase = AgentPhase::NotReady;
        self.stats.not_ready_periods += 1;
        let break_ms = self.dice.exponential_ms(self.params.not_ready_mean_ms);
        self.schedule_agent(ix, break_ms, Event::BreakEnd(ix));
    }

    /// Emits an agent state change the simulator itself decided on. It only ever moves an agent
    /// out of NotReady, after-call work or TalkingOut: states the router does not change.
    fn set_agent_state(
        &mut self,
        ix: AgentIx,
        state: AgentState,
        reason_code: u16,
        out: &mut Vec<OrderedInput>,
    ) {
        let agent = &mut self.agents[ix];
        assert!(
            matches!(
                agent.phase,
                AgentPhase::NotReady
                    | AgentPhase::WorkReady
                    | AgentPhase::WorkNotReady
                    | AgentPhase::TalkingOut
            ),
            "agent {} changes to {state:?} from {:?}",
            agent.id,
            agent.phase
        );
        agent.not_ready_reason = reason_code;
        agent.wrap_up = None;
        agent.phase = match state {
            AgentState::Ready => AgentPhase::Ready,
            AgentState::NotReady => AgentPhase::NotReady,
            AgentState::TalkingOut => AgentPhase::TalkingOut,
            other => unreachable!("the simulator never changes an agent to {other:?}"),
        };
        let agent = agent.id;
        self.emit(
            out,
            Input::AgentStateChange {
                agent,
                state,
                reason_code,
            },
        );
    }

    /// Emits the re-report of `peripheral`: its logged-on agents with their calls, then its
    /// waiting calls, each in parts that together cover every key.
    fn report(&mut self, peripheral: PeripheralId, out: &mut Vec<OrderedInput>) {
        self.reports_pending.remove(&peripheral);
        // Legs already forgotten but not yet cleared go first, so the report and the stream agree.
        let clears: Vec<(EventKey, PeripheralCallKey)> = self
            .events
            .iter()
            .filter_map(|(key, event)| match event {
                Event::Clear(leg) if leg.peripheral == peripheral => Some((*key, *leg)),
                _ => None,
            })
            .collect();
        for (key, leg) in clears {
            self.events.remove(&key);
            self.emit(out, Input::CallCleared { call: leg });
        }
        let now_ms = self.now_ms;
        let age = |since_ms: u64| now_ms.saturating_sub(since_ms).min(u32::MAX as u64) as u32;
        let mut agents: Vec<AgentReport> = Vec::new();
        for (&agent, &ix) in &self.agent_index {
            let sim = &self.agents[ix];
            if sim.peripheral != peripheral {
                continue;
            }
            let (state, reason_code, call) = match sim.phase {
                AgentPhase::LoggedOff => continue,
                AgentPhase::NotReady => (AgentState::NotReady, sim.not_ready_reason, None),
                // The router's reservation is the router's: the peripheral shows the agent Ready.
                AgentPhase::Ready | AgentPhase::Reserved { .. } => (AgentState::Ready, 0, None),
                AgentPhase::TalkingOut => (AgentState::TalkingOut, 0, None),
                AgentPhase::WorkReady | AgentPhase::WorkNotReady => {
                    let state = if sim.phase == AgentPhase::WorkReady {
                        AgentState::WorkReady
                    } else {
                        AgentState::WorkNotReady
                    };
                    let call = sim.wrap_up.map(|w| AgentCallReport {
                        call_id: w.leg.call_id,
                        phase: ReportedCallPhase::WrapUp,
                        skill_group: w.skill_group,
                        call_type: Some(w.call_type),
                        service: None,
                        router_call_key: w.router_call_key,
                        leg_age_ms: age(w.leg_started_ms),
                        answered_age_ms: age(w.answered_ms),
                    });
                    (state, 0, call)
                }
                AgentPhase::OnCall(call_no) => {
                    let call = self.call(call_no);
                    let (state, phase) = match call.phase {
                        CallPhase::Talking => (AgentState::TalkingIn, ReportedCallPhase::Talking),
                        CallPhase::Held => (AgentState::Hold, ReportedCallPhase::Held),
                        _ => (AgentState::Reserved, ReportedCallPhase::Ringing),
                    };
                    let reservation = call.reservation.expect("an offered call has its agent");
                    let leg = call.leg.expect("an offered call has its leg");
                    let report = AgentCallReport {
                        call_id: leg.call_id,
                        phase,
                        skill_group: reservation.skill_group,
                        call_type: Some(call.call_type),
                        service: None,
                        router_call_key: call.leg_router_call_key,
                        leg_age_ms: age(call.leg_started_ms),
                        answered_age_ms: if phase == ReportedCallPhase::Ringing {
                            0
                        } else {
                            age(call.answered_ms)
                        },
                    };
                    (state, 0, Some(report))
                }
            };
            agents.push(AgentReport {
                agent,
                state,
                reason_code,
                call,
            });
        }
        let mut waiting: Vec<WaitingCallReport> = self
            .calls
            .values()
            .filter(|call| {
                matches!(
                    call.phase,
                    CallPhase::AwaitingAnswer | CallPhase::Queued | CallPhase::Routed
                )
            })
            .filter_map(|call| {
                let leg = call.leg.filter(|leg| leg.peripheral == peripheral)?;
                Some(WaitingCallReport {
                    call_id: leg.call_id,
                    skill_group: None,
                    call_type: Some(call.call_type),
                    service: None,
                    router_call_key: call.leg_router_call_key,
                    leg_age_ms: age(call.leg_started_ms),
                })
            })
            .collect();
        waiting.sort_by_key(|call| call.call_id);

        let agent_parts = report_ranges(
            &agents,
            REPORT_AGENTS_MAX,
            |a| u64::from(a.agent.0),
            u64::from(u32::MAX),
        );
        for (from, through, part) in agent_parts {
            let part = ReportPart::Agents {
                from: AgentId(from as u32),
                through: AgentId(through as u32),
                agents: part.to_vec(),
            };
            self.emit(
                out,
                Input::PeripheralReport(PeripheralReport { peripheral, part }),
            );
        }
        let call_parts = report_ranges(&waiting, REPORT_CALLS_MAX, |c| c.call_id, u64::MAX);
        for (from, through, part) in call_parts {
            let part = ReportPart::Waiting {
                from,
                through,
                calls: part.to_vec(),
            };
            self.emit(
                out,
                Input::PeripheralReport(PeripheralReport { peripheral, part }),
            );
        }
        self.stats.reports_sent += 1;
    }

    fn not_ready_reason(&mut self) -> u16 {
        1 + self.dice.up_to(u64::from(NOT_READY_REASON_CODE_MAX - 1)) as u16
    }

    // ---- outputs ----

    fn key_status(&self, key: &RouteRequestKey) -> KeyStatus {
        if let Some(&call_no) = self.calls_by_key.get(key) {
            return KeyStatus::InFlight(call_no);
        }
        match self.client_of(key) {
            Some(ix) if self.clients[ix].origin(key) == KeyOrigin::Issued => KeyStatus::Finished,
            _ => KeyStatus::Unknown,
        }
    }

    fn client_of(&self, key: &RouteRequestKey) -> Option<usize> {
        self.client_index.get(&key.routing_client).copied()
    }

    fn on_route_response(&mut self, key: &RouteRequestKey, answer: &RouteAnswer, repeat: bool) {
        let status = self.key_status(key);
        if matches!(status, KeyStatus::Unknown) {
            self.stats.ignored_outputs += 1;
            return;
        }
        let Some(client_ix) = self.client_of(key) else {
            unreachable!("a known key has a client")
        };
        if !self.clients[client_ix].mark_answered(key) {
            if repeat {
                self.stats.route_responses_repeated += 1;
            } else {
                self.stats.route_requests_answered_more_than_once += 1;
            }
            return;
        }
        self.stats.route_requests_answered += 1;
        let KeyStatus::InFlight(call_no) = status else {
            // The client had already timed out: the answer comes too late to matter.
            self.stats.late_outputs += 1;
            return;
        };
        assert_eq!(self.call(call_no).phase, CallPhase::AwaitingAnswer);
        self.cancel_call_event(call_no);
        match answer.kind {
            AnswerKind::Queued => {
                self.stats.route_requests_queued += 1;
                self.call_mut(call_no).phase = CallPhase::Queued;
                let patience_ms = self.dice.exponential_ms(self.params.patience_mean_ms);
                self.schedule_call(call_no, patience_ms, Event::Patience(call_no));
            }
            AnswerKind::Default => {
                self.stats.calls_default_routed += 1;
                self.forget_call(call_no);
            }
            _ => self.route(call_no),
        }
    }

    fn on_deliver_queued_call(&mut self, key: &RouteRequestKey, answer: &RouteAnswer) {
        let call_no = match self.key_status(key) {
            KeyStatus::InFlight(call_no) => call_no,
            KeyStatus::Finished => {
                // The caller hung up just as the router delivered the call.
                self.stats.late_outputs += 1;
                return;
            }
            KeyStatus::Unknown => {
                self.stats.ignored_outputs += 1;
                return;
            }
        };
        if self.call(call_no).phase != CallPhase::Queued || answer.kind == AnswerKind::Queued {
            // A second delivery, or a delivery of a call that was never queued.
            self.stats.ignored_outputs += 1;
            return;
        }
        self.stats.deliveries += 1;
        self.cancel_call_event(call_no);
        if answer.kind == AnswerKind::Default {
            // The queue timed out to the default label.
            self.stats.calls_default_routed += 1;
            self.forget_call(call_no);
        } else {
            self.route(call_no);
        }
    }

    /// The router gave the call a final destination. Whether a simulated agent takes it is
    /// decided when it arrives, by whether the router reserved one (the ReserveAgent output may
    /// come before or after the answer).
    fn route(&mut self, call_no: CallNo) {
        self.call_mut(call_no).phase = CallPhase::Routed;
        let delay_ms = self.dice.up_to(OFFER_DELAY_MS_MAX);
        self.schedule_call(call_no, delay_ms, Event::Arrive(call_no));
    }

    fn on_reserve_agent(
        &mut self,
        agent: AgentId,
        skill_group: SkillGroupId,
        router_call_key: RouterCallKey,
        key: &RouteRequestKey,
    ) {
        let Some(&ix) = self.agent_index.get(&agent) else {
            self.stats.ignored_outputs += 1;
            return;
        };
        if self.agents[ix].phase != AgentPhase::Ready {
            // The router holds an agent the peripheral has busy: the views disagree.
            self.stats.ignored_outputs += 1;
            return;
        }
        self.stats.reservations += 1;
        let call = match self.key_status(key) {
            KeyStatus::InFlight(call_no) => {
                let call = self.call(call_no);
                let open = matches!(
                    call.phase,
                    CallPhase::AwaitingAnswer | CallPhase::Queued | CallPhase::Routed
                );
                if open && call.reservation.is_none() {
                    Some(call_no)
                } else {
                    self.stats.ignored_outputs += 1;
                    None
                }
            }
            KeyStatus::Finished => {
                self.stats.late_outputs += 1;
                None
            }
            KeyStatus::Unknown => {
                self.stats.ignored_outputs += 1;
                None
            }
        };
        // Even without a call the router now holds the agent, until it releases it.
        self.agents[ix].phase = AgentPhase::Reserved {
            call,
            router_call_key,
        };
        if let Some(call_no) = call {
            self.call_mut(call_no).reservation = Some(Reservation {
                agent: ix,
                skill_group,
                router_call_key,
            });
        }
    }

    fn on_release_agent(&mut self, agent: AgentId, router_call_key: RouterCallKey) {
        let Some(&ix) = self.agent_index.get(&agent) else {
            self.stats.ignored_outputs += 1;
            return;
        };
        match self.agents[ix].phase {
            AgentPhase::Reserved {
                call,
                router_call_key: held,
            } if held == router_call_key => {
                self.stats.releases += 1;
                self.agents[ix].phase = AgentPhase::Ready;
                if let Some(call_no) = call {
                    self.call_mut(call_no).reservation = None;
                    if self.call(call_no).phase == CallPhase::Routed {
                        self.stats.calls_released_before_offer += 1;
                        self.forget_call(call_no);
                    }
                }
            }
            AgentPhase::OnCall(call_no)
                if self.call(call_no).reservation.map(|r| r.router_call_key)
                    == Some(router_call_key) =>
            {
                // The call was offered before the release came: the offer consumed the
                // reservation.
                self.stats.late_outputs += 1;
            }
            _ => self.stats.ignored_outputs += 1,
        }
    }

    // ---- calls ----

    fn call(&self, call_no: CallNo) -> &Call {
        self.calls
            .get(&call_no)
            .unwrap_or_else(|| panic!("call {call_no} is not in flight"))
    }

    fn call_mut(&mut self, call_no: CallNo) -> &mut Call {
        self.calls
            .get_mut(&call_no)
            .unwrap_or_else(|| panic!("call {call_no} is not in flight"))
    }

    /// The leg of a call that was offered to an agent.
    fn offered_leg(&self, call_no: CallNo) -> PeripheralCallKey {
        self.call(call_no)
            .leg
            .unwrap_or_else(|| panic!("offered call {call_no} has no leg"))
    }

    fn agent_of(&self, call_no: CallNo) -> AgentIx {
        let call = self.call(call_no);
        let ix = call
            .reservation
            .unwrap_or_else(|| panic!("offered call {call_no} has no agent"))
            .agent;
        assert_eq!(self.agents[ix].phase, AgentPhase::OnCall(call_no));
        ix
    }

    /// Removes a finished call. An agent still reserved for it stays reserved, without a call,
    /// until the router releases it: the router does not know yet that the call is gone. A leg
    /// still waiting at its peripheral (the call went elsewhere) is cleared there.
    fn forget_call(&mut self, call_no: CallNo) {
        self.cancel_call_event(call_no);
        let Some(call) = self.calls.remove(&call_no) else {
            unreachable!("call {call_no} was just looked up")
        };
        if let Some(leg) = call.leg {
            self.schedule(self.now_ms, Event::Clear(leg));
        }
        self.calls_by_key.remove(&call.key);
        if let Some(reservation) = call.reservation {
            let agent = &mut self.agents[reservation.agent];
            if agent.phase
                == (AgentPhase::Reserved {
                    call: Some(call_no),
                    router_call_key: reservation.router_call_key,
                })
            {
                agent.phase = AgentPhase::Reserved {
                    call: None,
                    router_call_key: reservation.router_call_key,
                };
            }
        }
    }
}

/// Splits `rows` (in key order) into parts of at most `per_part`, each with the key range it
/// speaks for; together the ranges cover `0..=key_max`, so that even no rows make one part.
fn report_ranges<T>(
    rows: &[T],
    per_part: usize,
    key: impl Fn(&T) -> u64,
    key_max: u64,
) -> Vec<(u64, u64, &[T])> {
    let mut parts = Vec::new();
    let mut from = 0;
    let mut chunks = rows.chunks(per_part).peekable();
    if chunks.peek().is_none() {
        return vec![(0, key_max, rows)];
    }
    while let Some(chunk) = chunks.next() {
        let through = match chunks.peek() {
            Some(_) => key(chunk.last().expect("chunks are not empty")),
            None => key_max,
        };
        parts.push((from, through, chunk));
        from = through.saturating_add(1);
    }
    parts
}
