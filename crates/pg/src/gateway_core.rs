//! The PG's protocol with the two sides, sans-IO: which path is active, how inputs are numbered,
//! kept and sent again, how outputs are taken in number order, and the epoch leases it grants.
//!
//! Time reaches it only as `now_ms` arguments and it touches no socket: the `tandem pg` process
//! (`gateway`) carries its effects out over TCP, and the whole-system simulation over simulated
//! links, so both run this same code.
//!
//! One path is active: inputs go there, numbered per PG incarnation, and are kept until both
//! sides hold them (a durable acknowledgement), so that after a path switch everything not
//! durably acknowledged is sent again and the side that takes over orders what it missed; a
//! side that already holds an input acknowledges the repeat without ordering it twice. Outputs
//! are numbered by the sides in the ordered stream; the PG takes output `last + 1` only, and
//! when a path becomes active it asks that side to replay after its last one.

use crate::peripheral::Peripheral;
use crate::TrafficSim;
use std::collections::VecDeque;
use tandem_mds::lease::LeaseGranter;
use tandem_mds::{OutputId, OutputTake, PgToSide, Side, SideToPg};
use tandem_model::ids::{PeripheralId, PgId, RouteRequestKey};
use tandem_model::input::{Input, OrderedInput};
use tandem_model::output::Output;

/// Inputs kept for resending before the simulator is held back.
pub const PG_INPUTS_UNACKED_MAX: usize = 200_000;
/// The active path is given up when inputs go unacknowledged this long.
pub const PATH_ACK_SILENCE_MS_MAX: u64 = 1_000;
/// After a path switch, refusals from the new path are not taken as a reason to switch back
/// for this long: while neither side orders (a start, a takeover under way) the PG would
/// otherwise swing between the paths once per refused input.
pub const REFUSED_SWITCH_INTERVAL_MS_MIN: u64 = 250;

/// Something for the shell to carry out, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum PgEffect {
    /// Send `message` on the path to `side`.
    Send {
        /// The path's side.
        side: Side,
        /// What to send.
        message: PgToSide,
    },
    /// The path to `side` went silent: close its connection (the core already counts it down).
    Close(Side),
    /// A route request went out (the shell may time its round trip).
    RouteRequestSent(RouteRequestKey),
    /// A route request's first answer was taken.
    RouteRequestAnswered(RouteRequestKey),
    /// A route request ended at its routing client without an answer.
    RouteRequestEnded(RouteRequestKey),
}

/// What the PG counted of its own protocol.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CoreCounts {
    /// Inputs numbered and sent, each counted once however often it was resent.
    pub inputs_sent: u64,
    /// Inputs sent again (after a path switch or a resend request).
    pub inputs_resent: u64,
    /// Outputs taken, in number order.
    pub outputs_received: u64,
    /// Outputs received again (a replay overlapping what was taken) and dropped.
    pub outputs_repeated: u64,
    /// Outputs refused because they came from an epoch lower than the last taken: a side that
    /// has not yet learnt that it was replaced.
    pub outputs_stale: u64,
    /// Times the active path changed.
    pub path_switches: u64,
    /// New incarnations begun because both sides had lost what they acknowledged.
    pub incarnations_started: u64,
}

/// A connected path's timers.
#[derive(Clone, Copy, Debug)]
struct PathTimes {
    last_heard_ms: u64,
    last_sent_ms: u64,
}

/// How a PG's core is set up.
#[derive(Clone, Debug)]
pub struct CoreSettings {
    /// This PG.
    pub pg: PgId,
    /// Heartbeats go on an idle path this often.
    pub heartbeat_ms: u64,
    /// A path heard nothing from this long is closed.
    pub silence_ms_max: u64,
    /// The lease this PG grants a side.
    pub lease_ms: u64,
    /// Besides the simulated load, this many inputs per second re-reporting `flood_peripheral`
    /// online (a cheap real input, for the ordering throughput benchmark). 0: none.
    pub flood_inputs_per_s: u64,
    /// The flood's peripheral.
    pub flood_peripheral: Option<PeripheralId>,
    /// An input sent once, after the simulated load's first inputs (fault injection).
    pub inject_input: Option<Input>,
}

/// The PG's side of the protocol, driving its peripherals (the traffic simulator by default).
pub struct GatewayCore<P: Peripheral = TrafficSim> {
    settings: CoreSettings,
    incarnation: u64,
    paths: [Option<PathTimes>; 2],
    active: Side,
    granter: LeaseGranter,
    sim: P,
    next_input_no: u64,
    /// Inputs from `durable_through + 1` on, oldest first.
    unacked: VecDeque<(u64, Input)>,
    acked_through: u64,
    durable_through: u64,
    last_progress_ms: u64,
    last_output: OutputId,
    last_replay_ask_ms: Option<u64>,
    last_switch_ms: Option<u64>,
    /// Stopping: no new calls, and no inputs at all once every route request is answered.
    draining: bool,
    /// Inputs acknowledged under earlier incarnations of this process.
    acknowledged_before: u64,
    /// The output log generation the last output taken came from.
    output_generation: Option<u64>,
    flood_started_ms: u64,
    flood_sent: u64,
    counts: CoreCounts,
    effects: VecDeque<PgEffect>,
}

fn side_index(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

impl<P: Peripheral> GatewayCore<P> {
    /// A PG starting at `now_ms` in incarnation `incarnation` (a new one per process start: the
    /// sides number its inputs afresh). Whatever an earlier process of this PG left in the
    /// router is replaced by what the peripherals hold now, so they report at once.
    pub fn new(settings: CoreSettings, sim: P, incarnation: u64, now_ms: u64) -> Self {
        let mut core = GatewayCore {
            settings,
            incarnation,
            paths: [None, None],
            active: Side::A,
            granter: LeaseGranter::new(),
            sim,
            next_input_no: 1,
            unacked: VecDeque::new(),
            acked_through: 0,
            durable_through: 0,
            last_progress_ms: now_ms,
            last_output: OutputId::default(),
            last_replay_ask_ms: None,
            last_switch_ms: None,
            draining: false,
            acknowledged_before: 0,
            output_generation: None,
            flood_started_ms: now_ms,
            flood_sent: 0,
            counts: CoreCounts::default(),
            effects: VecDeque::new(),
        };
        core.sim.report_peripherals();
        core
    }

    /// The next effect to carry out.
    pub fn poll(&mut self) -> Option<PgEffect> {
        self.effects.pop_front()
    }

    /// The peripherals.
    pub fn sim(&self) -> &P {
        &self.sim
    }

    /// This PG's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The side inputs go to.
    pub fn active(&self) -> Side {
        self.active
    }

    /// Whether a path to `side` is up.
    pub fn path_up(&self, side: Side) -> bool {
        self.paths[side_index(side)].is_some()
    }

    /// The highest input number acknowledged as delivered, and as held by both sides.
    pub fn acknowledged(&self) -> (u64, u64) {
        (self.acked_through, self.durable_through)
    }

    /// Inputs acknowledged in all incarnations.
    pub fn inputs_acknowledged(&self) -> u64 {
        self.acknowledged_before + self.acked_through
    }

    /// The id of the last output taken.
    pub fn last_output(&self) -> OutputId {
        self.last_output
    }

    /// The next input's number.
    pub fn next_input_no(&self) -> u64 {
        self.next_input_no
    }

    /// What the core counted.
    pub fn counts(&self) -> CoreCounts {
        self.counts
    }

    /// Stop: no new calls, and no inputs at all once every route request is answered.
    pub fn drain(&mut self) {
        self.sim.stop_arrivals();
        self.draining = true;
    }

    /// Nothing awaits an answer or an acknowledgement.
    pub fn drained(&self) -> bool {
        self.sim.route_requests_unanswered() == 0 && self.acked_through + 1 == self.next_input_no
    }

    /// A path to `side` connected.
    pub fn on_path_up(&mut self, now_ms: u64, side: Side) {
        if self.paths.iter().all(Option::is_none) {
            // Connected again after losing both sides: what the router lost meanwhile, the
            // peripherals re-report.
            self.sim.report_peripherals();
        }
        self.paths[side_index(side)] = Some(PathTimes {
            last_heard_ms: now_ms,
            last_sent_ms: now_ms,
        });
    }

    /// The path to `side` closed.
    pub fn on_path_down(&mut self, now_ms: u64, side: Side) {
        if self.paths[side_index(side)].take().is_some() && side == self.active {
            self.switch_path(now_ms);
        }
    }

    /// A message from the side at the other end of the path to `side`.
    pub fn on_message(&mut self, now_ms: u64, side: Side, message: SideToPg) {
        let Some(path) = &mut self.paths[side_index(side)] else {
            return;
        };
        path.last_heard_ms = now_ms;
        match message {
            SideToPg::Welcome { .. } => {
                // A side that starts ordering says Welcome again on every path: the inputs it
                // refused while it took over go to it at once.
                if side == self.active {
                    self.activate(now_ms);
                } else if !self.path_up(self.active) {
                    self.switch_path(now_ms);
                }
            }
            SideToPg::Ack {
                incarnation,
                input_no,
                durable,
            } => {
                if incarnation != self.incarnation {
                    return;
                }
                if input_no > self.acked_through {
                    self.acked_through = input_no;
                    self.last_progress_ms = now_ms;
                }
                if durable && input_no > self.durable_through {
                    self.durable_through = input_no;
                    while self.unacked.front().is_some_and(|(no, _)| *no <= input_no) {
                        self.unacked.pop_front();
                    }
                }
            }
            SideToPg::ResendFrom {
                incarnation,
                input_no,
            } => {
                if incarnation == self.incarnation && side == self.active {
                    if input_no <= self.durable_through {
                        // The sides ask for inputs they had acknowledged as held by both: both
                        // lost their state (a cold start). What was acknowledged cannot be sent
                        // again; the rest starts a new incarnation, numbered from 1.
                        self.start_new_incarnation(now_ms);
                    } else {
                        self.resend_from(input_no);
                    }
                }
            }
            SideToPg::Refuse { .. } => {
                if side == self.active
                    && self
                        .last_switch_ms
                        .is_none_or(|at| now_ms >= at + REFUSED_SWITCH_INTERVAL_MS_MIN)
                {
                    self.switch_path(now_ms);
                }
            }
            SideToPg::LeaseRequest {
                epoch,
                requested_ms,
            } => {
                let answer = self.granter.request(now_ms, epoch, self.settings.lease_ms);
                self.send(
                    side,
                    PgToSide::LeaseAnswer {
                        epoch,
                        requested_ms,
                        answer,
                    },
                );
            }
            SideToPg::TestOtherSide => {
                // The other side counts as enabled only while it renews its lease here and this
                // PG still reaches it: a killed side's connection closes at once.
                let other_enabled =
                    self.granter.other_side_enabled(now_ms, side) && self.path_up(side.peer());
                self.send(side, PgToSide::TestAnswer { other_enabled });
            }
            SideToPg::Output {
                generation,
                id,
                prev,
                time_ms: _,
                output,
            } => self.on_output(now_ms, side, generation, (id, prev), output),
            SideToPg::Heartbeat => {}
        }
    }

    /// An output `id` (after `prev` in the side's log) from the side at the end of `side`.
    fn on_output(
        &mut self,
        now_ms: u64,
        side: Side,
        generation: u64,
        (id, prev): (OutputId, OutputId),
        output: Output,
    ) {
        if side != self.active {
            return;
        }
        if self.output_generation != Some(generation) {
            // Both sides started from configuration: their outputs are numbered anew.
            if self.output_generation.is_some() {
                self.last_output = OutputId::default();
            }
            self.output_generation = Some(generation);
        }
        match self.last_output.take(id, prev) {
            OutputTake::Repeat => self.counts.outputs_repeated += 1,
            OutputTake::Stale => self.counts.outputs_stale += 1,
            OutputTake::Next => {
                self.last_output = id;
                self.counts.outputs_received += 1;
                if let Output::RouteResponse { key, .. } = &output {
                    self.effects.push_back(PgEffect::RouteRequestAnswered(*key));
                }
                self.sim.on_output(now_ms, &output);
            }
            OutputTake::Gap => {
                if self
                    .last_replay_ask_ms
                    .is_none_or(|at| now_ms >= at + self.settings.heartbeat_ms)
                {
                    // Ask the active side to replay after the last one taken.
                    self.last_replay_ask_ms = Some(now_ms);
                    self.send(
                        side,
                        PgToSide::Active {
                            last_output: self.last_output,
                        },
                    );
                }
            }
        }
    }

    /// The PG's clock moved on: new inputs from the peripherals, heartbeats, silent paths and
    /// an active path that acknowledges nothing.
    pub fn tick(&mut self, now_ms: u64) {
        // Draining: once every route request is answered the peripherals fall silent, so that
        // what was sent can all be acknowledged.
        let silent = self.draining && self.sim.route_requests_unanswered() == 0;
        if self.unacked.len() < PG_INPUTS_UNACKED_MAX && !silent {
            self.take_inputs(now_ms);
        }
        for side in [Side::A, Side::B] {
            let Some(path) = &mut self.paths[side_index(side)] else {
                continue;
            };
            if now_ms > path.last_heard_ms + self.settings.silence_ms_max {
                self.effects.push_back(PgEffect::Close(side));
                self.on_path_down(now_ms, side);
                continue;
            }
            if now_ms >= path.last_sent_ms + self.settings.heartbeat_ms {
                path.last_sent_ms = now_ms;
                self.effects.push_back(PgEffect::Send {
                    side,
                    message: PgToSide::Heartbeat,
                });
            }
        }
        let waiting = self.acked_through + 1 < self.next_input_no;
        if waiting && now_ms > self.last_progress_ms + PATH_ACK_SILENCE_MS_MAX {
            self.switch_path(now_ms);
        }
    }

    fn take_inputs(&mut self, now_ms: u64) {
        let mut inputs: Vec<OrderedInput> = Vec::new();
        self.sim.poll(now_ms, &mut inputs);
        if let (Some(peripheral), false) = (self.settings.flood_peripheral, self.draining) {
            let due = now_ms.saturating_sub(self.flood_started_ms)
                * self.settings.flood_inputs_per_s
                / 1_000;
            let room = (PG_INPUTS_UNACKED_MAX - self.unacked.len()) as u64;
            let count = due.saturating_sub(self.flood_sent).min(room);
            self.flood_sent += count;
            for _ in 0..count {
                inputs.push(OrderedInput {
                    time_ms: now_ms,
                    input: Input::PeripheralOnline { peripheral },
                });
            }
        }
        if !inputs.is_empty() {
            if let Some(input) = self.settings.inject_input.take() {
                inputs.push(OrderedInput {
                    time_ms: now_ms,
                    input,
                });
            }
        }
        for input in inputs {
            match &input.input {
                Input::RouteRequest(request) => self
                    .effects
                    .push_back(PgEffect::RouteRequestSent(request.key)),
                Input::RouteRequestEnded { key, .. } => {
                    self.effects.push_back(PgEffect::RouteRequestEnded(*key))
                }
                _ => {}
            }
            let input_no = self.next_input_no;
            self.next_input_no += 1;
            self.counts.inputs_sent += 1;
            self.send(
                self.active,
                PgToSide::Input {
                    incarnation: self.incarnation,
                    input_no,
                    input: input.input.clone(),
                },
            );
            self.unacked.push_back((input_no, input.input));
        }
    }

    /// Sends on the path to `side`, if it is up.
    fn send(&mut self, side: Side, message: PgToSide) {
        if self.path_up(side) {
            self.effects.push_back(PgEffect::Send { side, message });
        }
    }

    /// The active path: ask for outputs after the last taken, and send again everything not
    /// durably acknowledged.
    fn activate(&mut self, now_ms: u64) {
        self.last_progress_ms = now_ms;
        self.send(
            self.active,
            PgToSide::Active {
                last_output: self.last_output,
            },
        );
        self.resend_from(self.durable_through + 1);
    }

    fn switch_path(&mut self, now_ms: u64) {
        self.last_switch_ms = Some(now_ms);
        let old = self.active;
        if !self.path_up(old.peer()) && self.path_up(old) {
            // Nowhere better to go: stay, and send again what is not yet acknowledged (a side
            // that refused it while taking over may order it now).
            self.activate(now_ms);
            return;
        }
        self.active = old.peer();
        self.counts.path_switches += 1;
        self.send(old, PgToSide::Idle);
        if self.path_up(self.active) {
            self.activate(now_ms);
        }
    }

    fn start_new_incarnation(&mut self, now_ms: u64) {
        self.incarnation = now_ms.max(self.incarnation + 1);
        // Inputs acknowledged but not yet as held by both are still kept: they go again.
        self.acknowledged_before += self.durable_through;
        let pending: Vec<Input> = self.unacked.drain(..).map(|(_, input)| input).collect();
        self.next_input_no = 1;
        self.acked_through = 0;
        self.durable_through = 0;
        for input in pending {
            self.unacked.push_back((self.next_input_no, input));
            self.next_input_no += 1;
        }
        self.counts.incarnations_started += 1;
        // Both sides started from configuration: the peripherals tell them what they hold.
        self.sim.report_peripherals();
        self.activate(now_ms);
    }

    fn resend_from(&mut self, input_no: u64) {
        let side = self.active;
        if !self.path_up(side) {
            return;
        }
        let start = self.unacked.partition_point(|(no, _)| *no < input_no);
        let incarnation = self.incarnation;
        for (no, input) in self.unacked.range(start..) {
            self.effects.push_back(PgEffect::Send {
                side,
                message: PgToSide::Input {
                    incarnation,
                    input_no: *no,
                    input: input.clone(),
                },
            });
            self.counts.inputs_resent += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::LoadParams;
    use tandem_model::generate::{generate, GenerateParams};
    use tandem_model::ids::{PeripheralId, RouterCallKey};
    use tandem_model::AgentId;

    const NOW_MS: u64 = 1_000;

    fn core() -> GatewayCore {
        let cc = generate(&GenerateParams::default());
        let pg = cc.pgs[0].id;
        let load = LoadParams {
            pg: Some(pg),
            ..LoadParams::default()
        };
        let settings = CoreSettings {
            pg,
            heartbeat_ms: 400,
            silence_ms_max: 1_200,
            lease_ms: 500,
            flood_inputs_per_s: 0,
            flood_peripheral: None,
            inject_input: None,
        };
        GatewayCore::new(settings, TrafficSim::new(&cc, load, NOW_MS), NOW_MS, NOW_MS)
    }

    fn output(id: OutputId, prev: OutputId) -> SideToPg {
        SideToPg::Output {
            generation: 7,
            id,
            prev,
            time_ms: NOW_MS,
            output: Output::ReleaseAgent {
                pg: tandem_model::ids::PgId(1),
                peripheral: PeripheralId(1),
                agent: AgentId(1),
                router_call_key: RouterCallKey(1),
            },
        }
    }

    fn sent(core: &mut GatewayCore) -> Vec<(Side, PgToSide)> {
        std::iter::from_fn(|| core.poll())
            .filter_map(|effect| match effect {
                PgEffect::Send { side, message } => Some((side, message)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn outputs_are_taken_in_order_from_the_active_path_and_a_gap_asks_for_a_replay() {
        let mut core = core();
        let id = |epoch, no| OutputId { epoch, no };
        core.on_path_up(NOW_MS, Side::A);
        core.on_path_up(NOW_MS, Side::B);
        core.on_message(NOW_MS, Side::A, SideToPg::Welcome { side: Side::A });
        assert!(sent(&mut core).contains(&(
            Side::A,
            PgToSide::Active {
                last_output: OutputId::default()
            }
        )));
        core.on_message(NOW_MS, Side::A, output(id(2, 1), OutputId::default()));
        core.on_message(NOW_MS, Side::A, output(id(2, 2), id(2, 1)));
        // The idle path's outputs are not taken.
        core.on_message(NOW_MS, Side::B, output(id(2, 3), id(2, 2)));
        assert_eq!(core.last_output(), id(2, 2));
        // A gap: the PG asks the active side to replay after its last output.
        core.on_message(NOW_MS + 1, Side::A, output(id(2, 4), id(2, 3)));
        assert_eq!(core.last_output(), id(2, 2));
        assert_eq!(
            sent(&mut core),
            [(
                Side::A,
                PgToSide::Active {
                    last_output: id(2, 2)
                }
            )]
        );
        core.on_message(NOW_MS + 2, Side::A, output(id(2, 3), id(2, 2)));
        core.on_message(NOW_MS + 2, Side::A, output(id(2, 4), id(2, 3)));
        core.on_message(NOW_MS + 2, Side::A, output(id(2, 4), id(2, 3)));
        // A later epoch's first output that follows a point the PG passed.
        core.on_message(NOW_MS + 3, Side::A, output(id(5, 1), id(2, 3)));
        // An output of a replaced side's lower epoch.
        core.on_message(NOW_MS + 3, Side::A, output(id(3, 9), id(3, 8)));
        assert_eq!(core.last_output(), id(5, 1));
        let counts = core.counts();
        assert_eq!(
            (
                counts.outputs_received,
                counts.outputs_repeated,
                counts.outputs_stale
            ),
            (5, 1, 1)
        );
    }

    #[test]
    fn a_silent_active_path_is_closed_and_the_other_becomes_active() {
        let mut core = core();
        core.on_path_up(NOW_MS, Side::A);
        core.on_path_up(NOW_MS, Side::B);
        core.on_message(NOW_MS, Side::B, SideToPg::Heartbeat);
        assert_eq!(core.active(), Side::A);
        // B keeps talking, A falls silent for longer than the PG allows: its inputs go
        // unacknowledged, so the PG turns to B, and then closes A's silent path.
        for t in (NOW_MS..=NOW_MS + 1_300).step_by(100) {
            core.on_message(t, Side::B, SideToPg::Heartbeat);
            core.tick(t);
        }
        let effects: Vec<PgEffect> = std::iter::from_fn(|| core.poll()).collect();
        assert!(effects.contains(&PgEffect::Close(Side::A)), "{effects:?}");
        assert!(!core.path_up(Side::A));
        assert_eq!(core.active(), Side::B);
        assert!(effects.contains(&PgEffect::Send {
            side: Side::B,
            message: PgToSide::Active {
                last_output: OutputId::default()
            }
        }));
    }
}
