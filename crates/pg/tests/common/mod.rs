//! Shared pieces of the simulator's scenario tests: a small contact center, the closed-loop
//! driver, and a minimal fake router that also acts as a strict checker of the inputs.
//!
//! Each test file uses a different subset of these, hence the allowance below.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use tandem_model::config::{ContactCenter, LabelTarget};
use tandem_model::generate::{generate, GenerateParams};
use tandem_model::{
    AfterCall, AgentId, AgentState, AnswerKind, Input, OrderedInput, Output, PeripheralCallKey,
    PgId, RouteAnswer, RouteEndReason, RouteRequestKey, RouterCallKey, RoutingClientId,
    SkillGroupId,
};
use tandem_pg::{LoadParams, TrafficSim, NOT_READY_REASON_CODE_MAX};

/// Mid-November 2023, in ordered time: any fixed epoch will do.
pub const START_MS: u64 = 1_700_000_000_000;
/// The driver's step, as the real driver's TimeTick period.
pub const STEP_MS: u64 = 100;

/// A generated contact center with `agents` agents on `peripherals` peripherals (one PG each).
pub fn small_cc(agents: u32, peripherals: u32) -> ContactCenter {
    generate(&GenerateParams {
        agents,
        skill_groups: 2 * peripherals,
        call_types: 2 * peripherals,
        peripherals,
        skill_groups_per_agent_max: 2,
        ..GenerateParams::default()
    })
}

/// A fast mix: everything takes seconds, so a few simulated minutes see many whole calls.
pub fn fast_params(seed: u64) -> LoadParams {
    LoadParams {
        calls_per_second: 1.0,
        talk_time_mean_ms: 5_000,
        hold_probability: 0.3,
        hold_time_mean_ms: 1_000,
        wrap_up_mean_ms: 2_000,
        not_ready_probability: 0.2,
        not_ready_mean_ms: 3_000,
        patience_mean_ms: 4_000,
        ring_time_mean_ms: 500,
        outbound_probability: 0.2,
        pre_route_share: 0.3,
        logged_on_share: 0.9,
        seed,
        ..LoadParams::default()
    }
}

/// Runs the closed loop from `START_MS` to `until_ms` in `STEP_MS` steps, the way the real
/// driver does: poll the inputs due, add a TimeTick, apply each input with `respond` and feed
/// every output back before the next input. Returns every input applied, TimeTicks included.
pub fn drive(
    sim: &mut TrafficSim,
    until_ms: u64,
    mut respond: impl FnMut(&OrderedInput) -> Vec<Output>,
) -> Vec<OrderedInput> {
    let mut all = Vec::new();
    let mut inputs = Vec::new();
    let mut now = START_MS;
    while now <= until_ms {
        sim.poll(now, &mut inputs);
        inputs.push(OrderedInput {
            time_ms: now,
            input: Input::TimeTick,
        });
        for input in inputs.drain(..) {
            for output in respond(&input) {
                sim.on_output(input.time_ms, &output);
            }
            all.push(input);
        }
        now += STEP_MS;
    }
    all
}

/// The inputs the simulator sent, without the driver's TimeTicks.
pub fn sim_inputs(all: &[OrderedInput]) -> Vec<&OrderedInput> {
    all.iter()
        .filter(|i| !matches!(i.input, Input::TimeTick))
        .collect()
}

/// Where an agent is, as the fake router sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FakeAgent {
    LoggedOff,
    NotReady,
    Ready,
    Reserved(RouterCallKey),
    Ringing(PeripheralCallKey),
    Talking(PeripheralCallKey),
    Held(PeripheralCallKey),
    WorkReady,
    WorkNotReady,
    TalkingOut,
}

struct Reservation {
    agent: AgentId,
    key: RouteRequestKey,
}

/// A minimal router: it answers each route request with the lowest-numbered Ready agent (and
/// reserves it), or, when none is Ready, queues the request (if `queueing`) or answers Default.
/// It delivers queued requests first-come first-served as agents become Ready. And it panics on
/// any input a strict router would reject, which is what the tests are after.
pub struct FakeRouter {
    pub queueing: bool,
    agent_pg: BTreeMap<AgentId, (PgId, SkillGroupId)>,
    client_pg: BTreeMap<RoutingClientId, PgId>,
    pub agents: BTreeMap<AgentId, FakeAgent>,
    ready: BTreeSet<AgentId>,
    queue: VecDeque<RouteRequestKey>,
    /// Reservations whose call has not been offered yet.
    reservations: BTreeMap<RouterCallKey, Reservation>,
    /// Every request key seen, with whether it was finished (ended or delivered elsewhere).
    requests: BTreeMap<RouteRequestKey, ()>,
    last_request_id: BTreeMap<RoutingClientId, u64>,
    /// Legs at peripherals, with the reservation (router call key) they arrived for.
    legs: BTreeMap<PeripheralCallKey, Option<RouterCallKey>>,
    next_router_call_key: u64,
    last_time_ms: u64,
    /// Every agent input in order: (time, agent, what).
    pub agent_log: Vec<(u64, AgentId, String)>,
}

impl FakeRouter {
    pub fn new(cc: &ContactCenter, queueing: bool) -> FakeRouter {
        let pg_of_peripheral: BTreeMap<_, _> =
            cc.peripherals.iter().map(|p| (p.id, p.pg)).collect();
        let mut agent_pg = BTreeMap::new();
        for agent in &cc.agents {
            let group = cc
                .skill_group_members
                .iter()
                .find(|m| m.agent == agent.id)
                .map(|m| m.skill_group)
                .expect("every generated agent has a skill group");
            agent_pg.insert(agent.id, (pg_of_peripheral[&agent.peripheral], group));
        }
        FakeRouter {
            queueing,
            agent_pg,
            client_pg: cc.routing_clients.iter().map(|rc| (rc.id, rc.pg)).collect(),
            agents: cc
                .agents
                .iter()
                .map(|a| (a.id, FakeAgent::LoggedOff))
                .collect(),
            ready: BTreeSet::new(),
            queue: VecDeque::new(),
            reservations: BTreeMap::new(),
            requests: BTreeMap::new(),
            last_request_id: BTreeMap::new(),
            legs: BTreeMap::new(),
            next_router_call_key: 1,
            last_time_ms: 0,
            agent_log: Vec::new(),
        }
    }

    fn state(&self, agent: AgentId) -> FakeAgent {
        *self
            .agents
            .get(&agent)
            .unwrap_or_else(|| panic!("unknown agent {agent}"))
    }

    fn set(&mut self, agent: AgentId, state: FakeAgent) {
        self.agents.insert(agent, state);
    }

    fn log(&mut self, time_ms: u64, agent: AgentId, what: impl Into<String>) {
        self.agent_log.push((time_ms, agent, what.into()));
    }

    fn agent_on_leg(&self, leg: PeripheralCallKey) -> Option<AgentId> {
        self.agents.iter().find_map(|(id, s)| match s {
            FakeAgent::Ringing(l) | FakeAgent::Talking(l) | FakeAgent::Held(l) if *l == leg => {
                Some(*id)
            }
            _ => None,
        })
    }

    /// Reserves `agent` for `key`; returns the ReserveAgent output and the answer.
    fn reserve(&mut self, agent: AgentId, key: RouteRequestKey) -> (Output, RouterCallKey) {
        assert_eq!(self.state(agent), FakeAgent::Ready);
        self.ready.remove(&agent);
        let rck = RouterCallKey(self.next_router_call_key);
        self.next_router_call_key += 1;
        self.set(agent, FakeAgent::Reserved(rck));
        self.reservations.insert(rck, Reservation { agent, key });
        let (pg, skill_group) = self.agent_pg[&agent];
        let reserve = Output::ReserveAgent {
            pg,
            peripheral: Default::default(),
            agent,
            skill_group,
            router_call_key: rck,
            key,
        };
        (reserve, rck)
    }

    fn agent_answer(agent: AgentId) -> RouteAnswer {
        RouteAnswer {
            kind: AnswerKind::Label,
            label: format!("agent-{agent}"),
            label_id: None,
            target: Some(LabelTarget::Agent(agent)),
        }
    }

    /// The agent is Ready: deliver the oldest queued request to it, or keep it available.
    fn became_ready(&mut self, agent: AgentId, out: &mut Vec<Output>) {
        self.set(agent, FakeAgent::Ready);
        match self.queue.pop_front() {
            Some(key) => {
                let (reserve, rck) = self.reserve(agent, key);
                out.push(Output::DeliverQueuedCall {
                    pg: self.client_pg[&key.routing_client],
                    key,
                    router_call_key: rck,
                    answer: Self::agent_answer(agent),
                });
                out.push(reserve);
            }
            None => {
                self.ready.insert(agent);
            }
        }
    }

    fn release(&mut self, rck: RouterCallKey, out: &mut Vec<Output>) {
        let reservation = self.reservations.remove(&rck).expect("reservation exists");
        let (pg, _) = self.agent_pg[&reservation.agent];
        out.push(Output::ReleaseAgent {
            pg,
            peripheral: Default::default(),
            agent: reservation.agent,
            router_call_key: rck,
        });
        self.became_ready(reservation.agent, out);
    }

    /// Applies one input; panics on anything a strict router would reject.
    pub fn apply(&mut self, input: &OrderedInput) -> Vec<Output> {
        let t = input.time_ms;
        assert!(
            t >= self.last_time_ms,
            "time went back from {} to {t} at {:?}",
            self.last_time_ms,
            input.input
        );
        self.last_time_ms = t;
        let mut out = Vec::new();
        match &input.input {
            Input::TimeTick | Input::PeripheralOnline { .. } => {}
            Input::AgentLogin {
                agent,
                state,
                reason_code,
            } => {
                assert_eq!(self.state(*agent), FakeAgent::LoggedOff, "login of {agent}");
                self.log(t, *agent, format!("Login {state:?}"));
                match state {
                    AgentState::Ready => {
                        assert_eq!(*reason_code, 0);
                        self.became_ready(*agent, &mut out);
                    }
                    AgentState::NotReady => {
                        assert!((1..=NOT_READY_REASON_CODE_MAX).contains(reason_code));
                        self.set(*agent, FakeAgent::NotReady);
                    }
                    other => panic!("login of {agent} in {other:?}"),
                }
            }
            Input::AgentStateChange {
                agent,
                state,
                reason_code,
            } => {
                let from = self.state(*agent);
                // Stricter than a real router: the simulator must never move an agent out of
                // Ready (or out of any call state) on its own.
                assert!(
                    matches!(
                        from,
                        FakeAgent::NotReady
                            | FakeAgent::WorkReady
                            | FakeAgent::WorkNotReady
                            | FakeAgent::TalkingOut
                    ),
                    "agent {agent} changes to {state:?} from {from:?} at {t}"
                );
                self.log(t, *agent, format!("{state:?}"));
                match state {
                    AgentState::Ready => self.became_ready(*agent, &mut out),
                    AgentState::NotReady => {
                        assert!((1..=NOT_READY_REASON_CODE_MAX).contains(reason_code));
                        self.set(*agent, FakeAgent::NotReady);
                    }
                    AgentState::TalkingOut => {
                        assert_ne!(from, FakeAgent::TalkingOut);
                        self.set(*agent, FakeAgent::TalkingOut);
                    }
                    other => panic!("agent {agent} changes to {other:?}"),
                }
            }
            Input::CallArrived {
                call,
                skill_group,
                call_type,
                router_call_key,
                ..
            } => {
                assert!(!self.legs.contains_key(call), "{call:?} arrived twice");
                assert!(call_type.is_some());
                if let Some(rck) = router_call_key {
                    assert!(
                        self.reservations.contains_key(rck),
                        "{call:?} arrived for {rck:?}, which holds no agent"
                    );
                    assert!(skill_group.is_some());
                }
                self.legs.insert(*call, *router_call_key);
            }
            Input::CallOffered {
                call,
                agent,
                skill_group,
            } => {
                assert!(
                    self.legs.contains_key(call),
                    "{call:?} offered before arriving"
                );
                assert!(skill_group.is_some());
                let FakeAgent::Reserved(rck) = self.state(*agent) else {
                    panic!("{call:?} offered to {agent} in {:?}", self.state(*agent))
                };
                if let Some(leg_rck) = self.legs[call] {
                    assert_eq!(leg_rck, rck, "{call:?} offered to another call's agent");
                }
                self.reservations.remove(&rck);
                self.log(t, *agent, "CallOffered");
                self.set(*agent, FakeAgent::Ringing(*call));
            }
            Input::CallAnswered { call } => {
                let agent = self.agent_on_leg(*call).expect("answered call rings");
                assert_eq!(self.state(agent), FakeAgent::Ringing(*call));
                self.log(t, agent, "CallAnswered");
                self.set(agent, FakeAgent::Talking(*call));
            }
            Input::CallHeld { call } => {
                let agent = self.agent_on_leg(*call).expect("held call is at an agent");
                assert_eq!(self.state(agent), FakeAgent::Talking(*call));
                self.set(agent, FakeAgent::Held(*call));
            }
            Input::CallRetrieved { call } => {
                let agent = self
                    .agent_on_leg(*call)
                    .expect("retrieved call is at an agent");
                assert_eq!(self.state(agent), FakeAgent::Held(*call));
                self.set(agent, FakeAgent::Talking(*call));
            }
            Input::CallEnded { call, after_call } => {
                let agent = self.agent_on_leg(*call).expect("ended call is at an agent");
                assert_eq!(self.state(agent), FakeAgent::Talking(*call));
                self.legs.remove(call);
                self.log(t, agent, format!("CallEnded {after_call:?}"));
                match after_call {
                    AfterCall::Ready => self.became_ready(agent, &mut out),
                    AfterCall::NotReady => self.set(agent, FakeAgent::NotReady),
                    AfterCall::WorkReady => self.set(agent, FakeAgent::WorkReady),
                    AfterCall::WorkNotReady => self.set(agent, FakeAgent::WorkNotReady),
                }
            }
            Input::CallAbandoned { call } => {
                assert!(
                    self.legs.remove(call).is_some(),
                    "{call:?} abandoned unknown"
                );
                if let Some(agent) = self.agent_on_leg(*call) {
                    assert_eq!(self.state(agent), FakeAgent::Ringing(*call));
                    self.log(t, agent, "CallAbandoned");
                    self.became_ready(agent, &mut out);
                }
            }
            Input::CallCleared { call } => {
                assert!(self.legs.remove(call).is_some(), "{call:?} cleared unknown");
                assert!(
                    self.agent_on_leg(*call).is_none(),
                    "{call:?} cleared while offered to an agent"
                );
            }
            Input::RouteRequest(request) => {
                request.check().expect("request within limits");
                let key = request.key;
                assert_eq!(key.pg_incarnation, tandem_pg::PG_INCARNATION);
                let last = self.last_request_id.entry(key.routing_client).or_insert(0);
                assert_eq!(key.request_id, *last + 1, "request ids count up by one");
                *last = key.request_id;
                self.requests.insert(key, ());
                let pg = self.client_pg[&key.routing_client];
                let ready = self.ready.first().copied();
                match ready {
                    Some(agent) => {
                        let (reserve, rck) = self.reserve(agent, key);
                        let response = Output::RouteResponse {
                            pg,
                            key,
                            router_call_key: rck,
                            answer: Self::agent_answer(agent),
                            repeat: false,
                        };
                        // Both orders occur in a real router's batch; exercise both.
                        if key.request_id % 2 == 0 {
                            out.extend([reserve, response]);
                        } else {
                            out.extend([response, reserve]);
                        }
                    }
                    None => {
                        let kind = if self.queueing {
                            self.queue.push_back(key);
                            AnswerKind::Queued
                        } else {
                            AnswerKind::Default
                        };
                        out.push(Output::RouteResponse {
                            pg,
                            key,
                            router_call_key: RouterCallKey(0),
                            answer: RouteAnswer {
                                kind,
                                label: String::new(),
                                label_id: None,
                                target: None,
                            },
                            repeat: false,
                        });
                    }
                }
            }
            Input::RouteRequestEnded { key, reason } => {
                assert!(self.requests.contains_key(key), "{key:?} ended unknown");
                assert_eq!(
                    *reason,
                    RouteEndReason::CallerAbandoned,
                    "the fake answers at once, so no client should time out"
                );
                if let Some(pos) = self.queue.iter().position(|k| k == key) {
                    self.queue.remove(pos);
                } else if let Some(rck) = self
                    .reservations
                    .iter()
                    .find(|(_, r)| r.key == *key)
                    .map(|(rck, _)| *rck)
                {
                    // The caller hung up as the call was delivered: release the agent.
                    self.release(rck, &mut out);
                }
            }
            other => panic!("the simulator sent an unexpected {}", other.name()),
        }
        out
    }

    /// Checks, after a run, that every agent that was offered a call went CallOffered ->
    /// CallAnswered -> CallEnded -> (Ready, possibly by way of breaks and outbound calls) in
    /// time order, or CallOffered -> CallAbandoned; returns how many whole cycles it saw.
    pub fn check_cycles(&self) -> usize {
        let mut cycles = 0;
        let mut by_agent: BTreeMap<AgentId, Vec<(u64, &str)>> = BTreeMap::new();
        for (t, agent, what) in &self.agent_log {
            by_agent
                .entry(*agent)
                .or_default()
                .push((*t, what.as_str()));
        }
        for (agent, log) in by_agent {
            for pair in log.windows(2) {
                assert!(pair[0].0 <= pair[1].0, "agent {agent}: time went back");
            }
            for (i, (_, what)) in log.iter().enumerate() {
                if *what != "CallOffered" {
                    continue;
                }
                let rest: Vec<&str> = log[i + 1..].iter().map(|(_, w)| *w).collect();
                match rest.first() {
                    None => continue, // the run ended while it rang
                    Some(&"CallAbandoned") => continue,
                    Some(&"CallAnswered") => {}
                    Some(other) => panic!("agent {agent}: CallOffered then {other}"),
                }
                match rest.get(1) {
                    None => continue,
                    Some(w) if w.starts_with("CallEnded") => {}
                    Some(other) => panic!("agent {agent}: CallAnswered then {other}"),
                }
                // From the end to the next offer the agent must have passed through Ready.
                let next_offer = rest[2..]
                    .iter()
                    .position(|w| *w == "CallOffered")
                    .map(|p| p + 2);
                let between = &rest[2..next_offer.unwrap_or(rest.len())];
                let ended_ready = rest[1] == "CallEnded Ready";
                if ended_ready || between.contains(&"Ready") {
                    cycles += 1;
                } else {
                    assert!(
                        next_offer.is_none(),
                        "agent {agent}: offered again without becoming Ready: {rest:?}"
                    );
                }
            }
        }
        cycles
    }
}
