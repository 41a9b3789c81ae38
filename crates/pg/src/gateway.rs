//! The peripheral gateway as a process (`tandem pg`): the traffic simulator's peripherals behind
//! two paths, one to each side of the central controller.
//!
//! One path is active: inputs go there, numbered per PG incarnation, and are kept until both
//! sides hold them (a durable acknowledgement), so that after a path switch everything not
//! durably acknowledged is sent again and the side that takes over orders what it missed;
//! a side that already holds an input acknowledges the repeat without ordering it twice.
//! Outputs are numbered by the sides in the ordered stream; the PG takes output `last + 1`
//! only, and when a path becomes active it asks that side to replay after its last one. Both
//! paths carry heartbeats, and the PG grants the sides' epoch leases and answers Test Other
//! Side (`tandem_mds::lease`).

use crate::{LoadParams, TrafficSim};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tandem_mds::lease::LeaseGranter;
use tandem_mds::tls::{Role, Security};
use tandem_mds::transport::{self, FrameReader, Outbound};
use tandem_mds::{PgToSide, PublicHello, Side, SideToPg};
use tandem_model::config::ContactCenter;
use tandem_model::ids::{PeripheralId, PgId, RouteRequestKey};
use tandem_model::input::{Input, OrderedInput};
use tandem_model::output::Output;
use tandem_model::topology::Topology;
use tokio::sync::mpsc;

/// Inputs kept for resending before the simulator is held back.
pub const PG_INPUTS_UNACKED_MAX: usize = 200_000;
/// The PG's loop: inputs are taken from the simulator this often. A real peripheral's events
/// arrive one by one; a longer tick would send them in bursts that wait for each other at the
/// sides (at 10,000 calls/s a 5 ms tick measured a p99 round trip about 40% longer).
const PG_TICK_MS: u64 = 1;
/// The active path is given up when inputs go unacknowledged this long.
const PATH_ACK_SILENCE_MS_MAX: u64 = 1_000;
/// After a path switch, refusals from the new path are not taken as a reason to switch back
/// for this long: while neither side orders (a start, a takeover under way) the PG would
/// otherwise swing between the paths once per refused input.
const REFUSED_SWITCH_INTERVAL_MS_MIN: u64 = 250;
/// A path that is down is tried again this often.
const RECONNECT_MS: u64 = 200;
/// Route requests awaiting their first answer whose send time is kept for the round-trip
/// figures; past this (a stalled central controller) new ones go unmeasured.
const ROUTE_RTT_PENDING_MAX: usize = 1_000_000;
/// The round-trip histogram's range: 1 us to 10 minutes, 3 significant digits.
const ROUTE_RTT_US_MAX: u64 = 600_000_000;
/// A stopping PG waits at most this long for answers to the route requests it sent and for
/// acknowledgements of its inputs: longer than a routing client's timeout, so that every
/// request ends answered or timed out.
pub const DRAIN_MS_MAX: u64 = 8_000;

/// What a PG counted, printed as one JSON line when it stops.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GatewayCounts {
    /// The PG's name in the topology.
    pub pg: String,
    /// Inputs numbered and sent, each counted once however often it was resent.
    pub inputs_sent: u64,
    /// The highest input number acknowledged as delivered.
    pub inputs_acknowledged: u64,
    /// The highest input number acknowledged as held by both sides.
    pub inputs_durable: u64,
    /// Inputs sent again (after a path switch or a resend request).
    pub inputs_resent: u64,
    /// Route requests the simulated routing clients sent.
    pub route_requests_sent: u64,
    /// Route requests answered.
    pub route_requests_answered: u64,
    /// Route requests answered more than once.
    pub route_requests_answered_more_than_once: u64,
    /// Route requests that timed out at their routing client.
    pub route_requests_timed_out: u64,
    /// Outputs taken, in number order.
    pub outputs_received: u64,
    /// Outputs received again (a replay overlapping what was taken) and dropped.
    pub outputs_repeated: u64,
    /// Times the active path changed.
    pub path_switches: u64,
    /// New incarnations begun because both sides had lost what they acknowledged.
    #[serde(default)]
    pub incarnations_started: u64,
    /// Route request round trips (request sent to first answer taken), in microseconds: the
    /// median.
    pub route_rtt_us_p50: u64,
    /// The 99th percentile.
    pub route_rtt_us_p99: u64,
    /// The longest; after a failover, about the time to the first answer from the other side.
    pub route_rtt_us_max: u64,
    /// Re-reports of the peripherals' agents and calls (at start, and on every reconnect).
    #[serde(default)]
    pub reports_sent: u64,
    /// The agents logged on as the peripherals see them when the PG stops, by state name.
    #[serde(default)]
    pub agents_by_state: BTreeMap<String, u64>,
}

/// How to run a PG.
pub struct GatewayOptions {
    /// The installation: the sides' public addresses and the PG heartbeat timers.
    pub topology: Topology,
    /// The contact center whose peripherals of this PG are simulated.
    pub cc: ContactCenter,
    /// This PG.
    pub pg: PgId,
    /// Its name in the topology.
    pub name: String,
    /// The simulated load.
    pub load: LoadParams,
    /// Besides the simulated load, this many inputs per second re-reporting a peripheral
    /// online (a real input, cheap for the router), to measure the central controller's
    /// ordering throughput (`tandem bench duplex --what throughput`). 0: none.
    pub flood_inputs_per_s: u64,
    /// An input sent once, after the simulated load's first inputs (fault injection).
    pub inject_input: Option<Input>,
    /// Round trips of route requests sent in this first stretch are not recorded: the login
    /// storm of a starting peripheral is not the steady state a benchmark measures.
    pub rtt_warmup_ms: u64,
    /// TLS with this PG's certificate, or plaintext with `--insecure-plaintext`.
    pub security: Security,
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn side_index(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

/// Messages dominate; a path comes up rarely.
#[allow(clippy::large_enum_variant)]
enum PathEvent {
    Up {
        side: Side,
        generation: u64,
        out: Outbound<PgToSide>,
        reader: tokio::task::AbortHandle,
    },
    Message {
        side: Side,
        generation: u64,
        message: SideToPg,
    },
    Down {
        side: Side,
        generation: u64,
    },
}

struct Path {
    generation: u64,
    out: Outbound<PgToSide>,
    reader: tokio::task::AbortHandle,
    last_heard: Instant,
    last_sent: Instant,
}

struct Gateway {
    pg: PgId,
    incarnation: u64,
    heartbeat: Duration,
    silence_max: Duration,
    lease_ms: u64,
    addresses: [SocketAddr; 2],
    security: Security,
    paths: [Option<Path>; 2],
    connecting: [bool; 2],
    generation: u64,
    active: Side,
    granter: LeaseGranter,
    sim: TrafficSim,
    next_input_no: u64,
    /// Inputs from `durable_through + 1` on, oldest first.
    unacked: VecDeque<(u64, Input)>,
    acked_through: u64,
    durable_through: u64,
    last_progress: Instant,
    last_output_no: u64,
    last_replay_ask: Option<Instant>,
    last_switch: Option<Instant>,
    /// Stopping: no new calls, and no inputs at all once every route request is answered.
    draining: bool,
    /// Inputs acknowledged under earlier incarnations of this process.
    acknowledged_before: u64,
    /// The output log generation the last output taken came from.
    output_generation: Option<u64>,
    flood_inputs_per_s: u64,
    /// The flood's peripheral, and how many of its inputs were sent since `flood_started`.
    flood_peripheral: Option<PeripheralId>,
    flood_sent: u64,
    flood_started: Instant,
    inject_input: Option<Input>,
    /// Route requests sent and not yet answered, with when they were sent.
    route_sent: BTreeMap<RouteRequestKey, Instant>,
    /// Requests sent from then on have their round trips recorded.
    route_rtt_from: Instant,
    route_rtt_us: Histogram<u64>,
    counts: GatewayCounts,
    clock_ms: u64,
    tx: mpsc::Sender<PathEvent>,
}

/// Runs the PG until `stop` resolves, then drains (no new calls; it waits up to
/// [`DRAIN_MS_MAX`] until every route request is answered and every input acknowledged), and
/// returns its counts.
pub async fn run(
    options: GatewayOptions,
    stop: impl std::future::Future<Output = ()>,
) -> GatewayCounts {
    let start_ms = wall_ms();
    let load = LoadParams {
        pg: Some(options.pg),
        ..options.load
    };
    let timers = &options.topology.mds;
    let (tx, mut rx) = mpsc::channel(65_536);
    let mut gateway = Gateway {
        pg: options.pg,
        // A new incarnation per process start: the sides number its inputs afresh.
        incarnation: start_ms,
        heartbeat: Duration::from_millis(timers.pg_heartbeat_interval_ms),
        silence_max: Duration::from_millis(
            timers.pg_heartbeat_interval_ms * timers.pg_heartbeat_misses_max,
        ),
        lease_ms: timers.lease_ms,
        addresses: [
            options.topology.side_a.public,
            options.topology.side_b.public,
        ],
        security: options.security.clone(),
        paths: [None, None],
        connecting: [false; 2],
        generation: 0,
        active: Side::A,
        granter: LeaseGranter::new(),
        sim: TrafficSim::new(&options.cc, load, start_ms),
        next_input_no: 1,
        unacked: VecDeque::new(),
        acked_through: 0,
        durable_through: 0,
        last_progress: Instant::now(),
        last_output_no: 0,
        last_replay_ask: None,
        last_switch: None,
        draining: false,
        acknowledged_before: 0,
        output_generation: None,
        flood_inputs_per_s: options.flood_inputs_per_s,
        flood_peripheral: options
            .cc
            .peripherals
            .iter()
            .find(|p| p.pg == options.pg)
            .map(|p| p.id),
        flood_sent: 0,
        flood_started: Instant::now(),
        inject_input: options.inject_input,
        route_sent: BTreeMap::new(),
        route_rtt_from: Instant::now() + Duration::from_millis(options.rtt_warmup_ms),
        route_rtt_us: Histogram::new_with_bounds(1, ROUTE_RTT_US_MAX, 3)
            .expect("valid histogram bounds"),
        counts: GatewayCounts {
            pg: options.name,
            ..GatewayCounts::default()
        },
        clock_ms: start_ms,
        tx,
    };
    // Whatever an earlier process of this PG left in the router is replaced by what the
    // peripherals hold now.
    gateway.sim.report_peripherals();
    let mut timer = tokio::time::interval(Duration::from_millis(PG_TICK_MS));
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reconnect = tokio::time::interval(Duration::from_millis(RECONNECT_MS));
    tokio::pin!(stop);
    let mut drain_until: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = &mut stop, if drain_until.is_none() => {
                gateway.sim.stop_arrivals();
                gateway.draining = true;
                drain_until = Some(Instant::now() + Duration::from_millis(DRAIN_MS_MAX));
            }
            Some(event) = rx.recv() => {
                gateway.on_event(event);
                continue;
            }
            _ = timer.tick() => gateway.on_tick(),
            _ = reconnect.tick() => gateway.connect_missing(),
        }
        // Checked on ticks only: it counts the calls in flight, which every answer arriving
        // while the PG drains would otherwise wait for.
        if drain_until.is_some_and(|until| gateway.drained() || Instant::now() >= until) {
            break;
        }
    }
    gateway.finish()
}

impl Gateway {
    fn now(&mut self) -> u64 {
        self.clock_ms = self.clock_ms.max(wall_ms());
        self.clock_ms
    }

    fn connect_missing(&mut self) {
        for side in [Side::A, Side::B] {
            let i = side_index(side);
            if self.paths[i].is_some() || self.connecting[i] {
                continue;
            }
            self.connecting[i] = true;
            self.generation += 1;
            let generation = self.generation;
            let addr = self.addresses[i];
            let security = self.security.clone();
            let tx = self.tx.clone();
            let hello = PublicHello::Pg {
                pg: self.pg,
                incarnation: self.incarnation,
            };
            tokio::spawn(async move {
                let Ok(stream) = transport::connect(addr, 1_000, &security, Role::Central).await
                else {
                    let _ = tx.send(PathEvent::Down { side, generation }).await;
                    return;
                };
                let (read, mut write) = stream.into_split();
                if transport::write_message(&mut write, &hello).await.is_err() {
                    let _ = tx.send(PathEvent::Down { side, generation }).await;
                    return;
                }
                let out = Outbound::<PgToSide>::spawn(write);
                let reader_tx = tx.clone();
                // The reader starts once `Up` is queued: the PG learns of the path before its
                // first message, which it would otherwise drop.
                let (go, gate) = tokio::sync::oneshot::channel::<()>();
                let reader = tokio::spawn(async move {
                    if gate.await.is_err() {
                        return;
                    }
                    let mut reader = FrameReader::<_, SideToPg>::new(read);
                    while let Ok(Some(message)) = reader.next().await {
                        let event = PathEvent::Message {
                            side,
                            generation,
                            message,
                        };
                        if reader_tx.send(event).await.is_err() {
                            return;
                        }
                    }
                    let _ = reader_tx.send(PathEvent::Down { side, generation }).await;
                });
                let up = PathEvent::Up {
                    side,
                    generation,
                    out,
                    reader: reader.abort_handle(),
                };
                if tx.send(up).await.is_ok() {
                    let _ = go.send(());
                }
            });
        }
    }

    fn on_event(&mut self, event: PathEvent) {
        match event {
            PathEvent::Up {
                side,
                generation,
                out,
                reader,
            } => {
                let i = side_index(side);
                self.connecting[i] = false;
                if self.paths.iter().all(Option::is_none) {
                    // Connected again after losing both sides: what the router lost meanwhile,
                    // the peripherals re-report.
                    self.sim.report_peripherals();
                }
                self.paths[i] = Some(Path {
                    generation,
                    out,
                    reader,
                    last_heard: Instant::now(),
                    last_sent: Instant::now(),
                });
            }
            PathEvent::Down { side, generation } => {
                let i = side_index(side);
                if self.paths[i]
                    .as_ref()
                    .is_some_and(|p| p.generation == generation)
                {
                    self.drop_path(side);
                } else if self.paths[i].is_none() {
                    self.connecting[i] = false;
                }
            }
            PathEvent::Message {
                side,
                generation,
                message,
            } => {
                let i = side_index(side);
                match &mut self.paths[i] {
                    Some(path) if path.generation == generation => {
                        path.last_heard = Instant::now();
                    }
                    _ => return,
                }
                self.on_message(side, message);
            }
        }
    }

    fn drop_path(&mut self, side: Side) {
        let i = side_index(side);
        if let Some(path) = self.paths[i].take() {
            path.reader.abort();
        }
        self.connecting[i] = false;
        if side == self.active {
            self.switch_path();
        }
    }

    fn send(&self, side: Side, message: &PgToSide) {
        if let Some(path) = &self.paths[side_index(side)] {
            let _ = path.out.send(message);
        }
    }

    fn on_message(&mut self, side: Side, message: SideToPg) {
        let now = self.now();
        match message {
            SideToPg::Welcome { .. } => {
                // A side that starts ordering says Welcome again on every path: the inputs it
                // refused while it took over go to it at once.
                if side == self.active {
                    self.activate();
                } else if self.paths[side_index(self.active)].is_none() {
                    self.switch_path();
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
                    self.last_progress = Instant::now();
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
                        self.start_new_incarnation();
                    } else {
                        self.resend_from(input_no);
                    }
                }
            }
            SideToPg::Refuse { .. } => {
                if side == self.active
                    && self.last_switch.is_none_or(|at| {
                        at.elapsed() >= Duration::from_millis(REFUSED_SWITCH_INTERVAL_MS_MIN)
                    })
                {
                    self.switch_path();
                }
            }
            SideToPg::LeaseRequest {
                epoch,
                requested_ms,
            } => {
                let answer = self.granter.request(now, epoch, self.lease_ms);
                self.send(
                    side,
                    &PgToSide::LeaseAnswer {
                        epoch,
                        requested_ms,
                        answer,
                    },
                );
            }
            SideToPg::TestOtherSide => {
                // The other side counts as enabled only while it renews its lease here and this
                // PG still reaches it: a killed side's connection closes at once.
                let other_enabled = self.granter.other_side_enabled(now, side)
                    && self.paths[side_index(side.peer())].is_some();
                self.send(side, &PgToSide::TestAnswer { other_enabled });
            }
            SideToPg::Output {
                generation,
                output_no,
                time_ms: _,
                output,
            } => {
                if side != self.active {
                    return;
                }
                if self.output_generation != Some(generation) {
                    // Both sides started from configuration: their outputs are numbered anew.
                    if self.output_generation.is_some() {
                        self.last_output_no = 0;
                    }
                    self.output_generation = Some(generation);
                }
                if output_no <= self.last_output_no {
                    self.counts.outputs_repeated += 1;
                } else if output_no == self.last_output_no + 1 {
                    self.last_output_no = output_no;
                    self.counts.outputs_received += 1;
                    if let Output::RouteResponse { key, .. } = &output {
                        let sent = self.route_sent.remove(key);
                        if let Some(sent) = sent.filter(|&sent| sent >= self.route_rtt_from) {
                            let us = (sent.elapsed().as_micros() as u64).clamp(1, ROUTE_RTT_US_MAX);
                            let _ = self.route_rtt_us.record(us);
                        }
                    }
                    self.sim.on_output(now, &output);
                } else if self
                    .last_replay_ask
                    .is_none_or(|at| at.elapsed() >= self.heartbeat)
                {
                    // A gap: ask the active side to replay after the last one taken.
                    self.last_replay_ask = Some(Instant::now());
                    self.send(
                        side,
                        &PgToSide::Active {
                            last_output_no: self.last_output_no,
                        },
                    );
                }
            }
            SideToPg::Heartbeat => {}
        }
    }

    /// The active path: ask for outputs after the last taken, and send again everything not
    /// durably acknowledged.
    fn activate(&mut self) {
        self.last_progress = Instant::now();
        self.send(
            self.active,
            &PgToSide::Active {
                last_output_no: self.last_output_no,
            },
        );
        self.resend_from(self.durable_through + 1);
    }

    fn switch_path(&mut self) {
        self.last_switch = Some(Instant::now());
        let old = self.active;
        if self.paths[side_index(old.peer())].is_none() && self.paths[side_index(old)].is_some() {
            // Nowhere better to go: stay, and send again what is not yet acknowledged (a side
            // that refused it while taking over may order it now).
            self.activate();
            return;
        }
        self.active = old.peer();
        self.counts.path_switches += 1;
        self.send(old, &PgToSide::Idle);
        if self.paths[side_index(self.active)].is_some() {
            self.activate();
        }
    }

    fn start_new_incarnation(&mut self) {
        self.incarnation = wall_ms().max(self.incarnation + 1);
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
        self.activate();
    }

    fn resend_from(&mut self, input_no: u64) {
        let side = self.active;
        let Some(path) = &self.paths[side_index(side)] else {
            return;
        };
        let start = self.unacked.partition_point(|(no, _)| *no < input_no);
        for (no, input) in self.unacked.range(start..) {
            let _ = path.out.send(&PgToSide::Input {
                incarnation: self.incarnation,
                input_no: *no,
                input: input.clone(),
            });
            self.counts.inputs_resent += 1;
        }
    }

    fn on_tick(&mut self) {
        let now = self.now();
        // Draining: once every route request is answered the peripherals fall silent, so that
        // what was sent can all be acknowledged.
        let silent = self.draining && self.sim.route_requests_unanswered() == 0;
        if self.unacked.len() < PG_INPUTS_UNACKED_MAX && !silent {
            let mut inputs: Vec<OrderedInput> = Vec::new();
            self.sim.poll(now, &mut inputs);
            if let (Some(peripheral), false) = (self.flood_peripheral, self.draining) {
                let due = self.flood_started.elapsed().as_micros() as u64 * self.flood_inputs_per_s
                    / 1_000_000;
                let room = (PG_INPUTS_UNACKED_MAX - self.unacked.len()) as u64;
                let count = due.saturating_sub(self.flood_sent).min(room);
                self.flood_sent += count;
                for _ in 0..count {
                    inputs.push(OrderedInput {
                        time_ms: now,
                        input: Input::PeripheralOnline { peripheral },
                    });
                }
            }
            if !inputs.is_empty() {
                if let Some(input) = self.inject_input.take() {
                    inputs.push(OrderedInput {
                        time_ms: now,
                        input,
                    });
                }
            }
            for input in inputs {
                match &input.input {
                    Input::RouteRequest(request)
                        if self.route_sent.len() < ROUTE_RTT_PENDING_MAX =>
                    {
                        self.route_sent.insert(request.key, Instant::now());
                    }
                    Input::RouteRequestEnded { key, .. } => {
                        self.route_sent.remove(key);
                    }
                    _ => {}
                }
                let input_no = self.next_input_no;
                self.next_input_no += 1;
                self.counts.inputs_sent += 1;
                self.send(
                    self.active,
                    &PgToSide::Input {
                        incarnation: self.incarnation,
                        input_no,
                        input: input.input.clone(),
                    },
                );
                self.unacked.push_back((input_no, input.input));
            }
        }
        for side in [Side::A, Side::B] {
            let i = side_index(side);
            let Some(path) = &mut self.paths[i] else {
                continue;
            };
            if path.last_heard.elapsed() > self.silence_max {
                self.drop_path(side);
                continue;
            }
            if path.last_sent.elapsed() >= self.heartbeat {
                path.last_sent = Instant::now();
                let _ = path.out.send(&PgToSide::Heartbeat);
            }
        }
        let waiting = self.acked_through + 1 < self.next_input_no;
        if waiting && self.last_progress.elapsed() > Duration::from_millis(PATH_ACK_SILENCE_MS_MAX)
        {
            self.switch_path();
        }
    }

    /// Nothing awaits an answer or an acknowledgement.
    fn drained(&self) -> bool {
        self.sim.route_requests_unanswered() == 0 && self.acked_through + 1 == self.next_input_no
    }

    fn finish(self) -> GatewayCounts {
        let stats = self.sim.stats();
        let rtt = &self.route_rtt_us;
        GatewayCounts {
            route_rtt_us_p50: rtt.value_at_quantile(0.50),
            route_rtt_us_p99: rtt.value_at_quantile(0.99),
            route_rtt_us_max: rtt.max(),
            inputs_acknowledged: self.acknowledged_before + self.acked_through,
            inputs_durable: self.durable_through,
            route_requests_sent: stats.route_requests_sent,
            route_requests_answered: stats.route_requests_answered,
            route_requests_answered_more_than_once: stats.route_requests_answered_more_than_once,
            route_requests_timed_out: stats.route_requests_timed_out,
            reports_sent: stats.reports_sent,
            agents_by_state: self.sim.agents_by_state(),
            ..self.counts
        }
    }
}
