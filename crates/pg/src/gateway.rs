//! The peripheral gateway as a process (`tandem pg`): the traffic simulator's peripherals behind
//! two paths, one to each side of the central controller.
//!
//! The protocol itself (the active path, input numbers and resends, outputs in number order,
//! the epoch leases) is the sans-IO `GatewayCore`; this module is its shell: it connects the
//! paths, reads and writes their frames, runs the clock, and times route requests' round trips.

use crate::gateway_core::{CoreSettings, GatewayCore, PgEffect};
use crate::{LoadParams, TrafficSim};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tandem_mds::tls::{Role, Security};
use tandem_mds::transport::{self, FrameReader, Outbound};
use tandem_mds::{PgToSide, PublicHello, Side, SideToPg};
use tandem_model::config::ContactCenter;
use tandem_model::ids::{PgId, RouteRequestKey};
use tandem_model::input::Input;
use tandem_model::topology::Topology;
use tokio::sync::mpsc;

/// The PG's loop: inputs are taken from the simulator this often. A real peripheral's events
/// arrive one by one; a longer tick would send them in bursts that wait for each other at the
/// sides (at 10,000 calls/s a 5 ms tick measured a p99 round trip about 40% longer).
const PG_TICK_MS: u64 = 1;
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
    /// Outputs refused because they came from an epoch lower than the last taken.
    #[serde(default)]
    pub outputs_stale: u64,
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
}

struct Gateway {
    pg: PgId,
    core: GatewayCore,
    addresses: [SocketAddr; 2],
    security: Security,
    paths: [Option<Path>; 2],
    connecting: [bool; 2],
    generation: u64,
    /// Route requests sent and not yet answered, with when they were sent.
    route_sent: BTreeMap<RouteRequestKey, Instant>,
    /// Requests sent from then on have their round trips recorded.
    route_rtt_from: Instant,
    route_rtt_us: Histogram<u64>,
    name: String,
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
        // A new incarnation per process start: its start time in ms, kept to 32 bits (it wraps
        // every 49.7 days; no request of one process is pending when another starts that late).
        pg_incarnation: start_ms as u32,
        ..options.load
    };
    let timers = &options.topology.mds;
    let (tx, mut rx) = mpsc::channel(65_536);
    let settings = CoreSettings {
        pg: options.pg,
        heartbeat_ms: timers.pg_heartbeat_interval_ms,
        silence_ms_max: timers.pg_heartbeat_interval_ms * timers.pg_heartbeat_misses_max,
        lease_ms: timers.lease_ms,
        flood_inputs_per_s: options.flood_inputs_per_s,
        flood_peripheral: options
            .cc
            .peripherals
            .iter()
            .find(|p| p.pg == options.pg)
            .map(|p| p.id),
        inject_input: options.inject_input,
    };
    let sim = TrafficSim::new(&options.cc, load, start_ms);
    let mut gateway = Gateway {
        pg: options.pg,
        // A new incarnation per process start: the sides number its inputs afresh.
        core: GatewayCore::new(settings, sim, start_ms, start_ms),
        addresses: [
            options.topology.side_a.public,
            options.topology.side_b.public,
        ],
        security: options.security.clone(),
        paths: [None, None],
        connecting: [false; 2],
        generation: 0,
        route_sent: BTreeMap::new(),
        route_rtt_from: Instant::now() + Duration::from_millis(options.rtt_warmup_ms),
        route_rtt_us: Histogram::new_with_bounds(1, ROUTE_RTT_US_MAX, 3)
            .expect("valid histogram bounds"),
        name: options.name,
        clock_ms: start_ms,
        tx,
    };
    let mut timer = tokio::time::interval(Duration::from_millis(PG_TICK_MS));
    timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut reconnect = tokio::time::interval(Duration::from_millis(RECONNECT_MS));
    tokio::pin!(stop);
    let mut drain_until: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = &mut stop, if drain_until.is_none() => {
                gateway.core.drain();
                drain_until = Some(Instant::now() + Duration::from_millis(DRAIN_MS_MAX));
            }
            Some(event) = rx.recv() => {
                gateway.on_event(event);
                continue;
            }
            _ = timer.tick() => {
                let now = gateway.now();
                gateway.core.tick(now);
                gateway.carry_out();
            }
            _ = reconnect.tick() => gateway.connect_missing(),
        }
        // Checked on ticks only: it counts the calls in flight, which every answer arriving
        // while the PG drains would otherwise wait for.
        if drain_until.is_some_and(|until| gateway.core.drained() || Instant::now() >= until) {
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
                incarnation: self.core.incarnation(),
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
        let now = self.now();
        match event {
            PathEvent::Up {
                side,
                generation,
                out,
                reader,
            } => {
                let i = side_index(side);
                self.connecting[i] = false;
                self.paths[i] = Some(Path {
                    generation,
                    out,
                    reader,
                });
                self.core.on_path_up(now, side);
            }
            PathEvent::Down { side, generation } => {
                let i = side_index(side);
                if self.paths[i]
                    .as_ref()
                    .is_some_and(|p| p.generation == generation)
                {
                    self.close_path(side);
                    self.core.on_path_down(now, side);
                } else if self.paths[i].is_none() {
                    self.connecting[i] = false;
                }
            }
            PathEvent::Message {
                side,
                generation,
                message,
            } => {
                if self.paths[side_index(side)]
                    .as_ref()
                    .is_some_and(|p| p.generation == generation)
                {
                    self.core.on_message(now, side, message);
                }
            }
        }
        self.carry_out();
    }

    fn close_path(&mut self, side: Side) {
        let i = side_index(side);
        if let Some(path) = self.paths[i].take() {
            path.reader.abort();
        }
        self.connecting[i] = false;
    }

    /// Carries out the core's effects, in order.
    fn carry_out(&mut self) {
        while let Some(effect) = self.core.poll() {
            match effect {
                PgEffect::Send { side, message } => {
                    if let Some(path) = &self.paths[side_index(side)] {
                        let _ = path.out.send(&message);
                    }
                }
                PgEffect::Close(side) => self.close_path(side),
                PgEffect::RouteRequestSent(key) => {
                    if self.route_sent.len() < ROUTE_RTT_PENDING_MAX {
                        self.route_sent.insert(key, Instant::now());
                    }
                }
                PgEffect::RouteRequestAnswered(key) => {
                    let sent = self.route_sent.remove(&key);
                    if let Some(sent) = sent.filter(|&sent| sent >= self.route_rtt_from) {
                        let us = (sent.elapsed().as_micros() as u64).clamp(1, ROUTE_RTT_US_MAX);
                        let _ = self.route_rtt_us.record(us);
                    }
                }
                PgEffect::RouteRequestEnded(key) => {
                    self.route_sent.remove(&key);
                }
            }
        }
    }

    fn finish(self) -> GatewayCounts {
        let sim = self.core.sim();
        let stats = sim.stats();
        let core = self.core.counts();
        let rtt = &self.route_rtt_us;
        GatewayCounts {
            pg: self.name,
            inputs_sent: core.inputs_sent,
            inputs_acknowledged: self.core.inputs_acknowledged(),
            inputs_durable: self.core.acknowledged().1,
            inputs_resent: core.inputs_resent,
            route_requests_sent: stats.route_requests_sent,
            route_requests_answered: stats.route_requests_answered,
            route_requests_answered_more_than_once: stats.route_requests_answered_more_than_once,
            route_requests_timed_out: stats.route_requests_timed_out,
            outputs_received: core.outputs_received,
            outputs_repeated: core.outputs_repeated,
            outputs_stale: core.outputs_stale,
            path_switches: core.path_switches,
            incarnations_started: core.incarnations_started,
            route_rtt_us_p50: rtt.value_at_quantile(0.50),
            route_rtt_us_p99: rtt.value_at_quantile(0.99),
            route_rtt_us_max: rtt.max(),
            reports_sent: stats.reports_sent,
            agents_by_state: sim.agents_by_state(),
        }
    }
}
