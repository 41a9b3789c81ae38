//! The sides in the simulation. Each side's process is the product's own machine
//! (`tandem_central::machine::SideMachine`): its synchronizer, router, output numbering, logger
//! stream, feed ticks, transfer requests and retries. What this file adds is the shell: the
//! simulated links its effects go out on, the state-transfer session's wire (the router's real
//! records, exported and imported), the digest thread, the epoch file, and what the checkers
//! see of each delivery.

use super::{side_of, EffectTrap, Event, World, LINK_PEER, LINK_SIDE_TO_PG};
use rand::Rng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use tandem_central::machine::{
    Observation, SideEffect, SideMachine, SideSettings, TRANSFER_RETRY_MS_MAX,
};
use tandem_central::status::SyncRecord;
use tandem_central::transfer::{SideData, NONCE_POLL_MS, NONCE_WAIT_MS_MAX};
use tandem_mds::sync::{SyncEvent, SyncSettings, Synchronizer};
use tandem_mds::{Epoch, LogicVersion, Ordered, SyncCut};
use tandem_model::ids::PgId;
use tandem_router::{records, Router};
use xxhash_rust::xxh3::xxh3_64;

/// A receiver gives up on a session that has not delivered the state in this long.
const TRANSFER_TIMEOUT_MS: u64 = 4_000;
/// The longest a simulated state transfer takes on the wire.
const TRANSFER_WIRE_MS_MAX: u64 = 1_200;
/// Outputs whose numbering is remembered for the equality check, per PG; older ones are
/// forgotten (the replay log keeps 65,536, far more than a run produces).
const NUMBERED_OUTPUTS_KEPT_MAX: usize = 100_000;

// A session that takes longer than the receiver waits could never finish.
const _: () = assert!(TRANSFER_WIRE_MS_MAX < TRANSFER_TIMEOUT_MS);
const _: () = assert!(TRANSFER_RETRY_MS_MAX < 2 * TRANSFER_TIMEOUT_MS);

/// Where a trap struck among a side's effects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sprung {
    Before,
    After,
}

/// One side: its process (the product's machine) while it runs, and what survives a crash
/// (whether it ran, its epoch file).
pub(super) struct SimSide {
    pub(super) machine: Option<SideMachine>,
    /// Counts the side's processes: what a crashed process started (a digest, a session)
    /// never reaches the next.
    pub(super) process: u64,
    pub(super) logic: LogicVersion,
    pub(super) started: bool,
    pub(super) paused: bool,
    pub(super) persisted_epoch: Epoch,
    /// Per PG, the connection of its path at this side's end.
    pub(super) paths: BTreeMap<usize, u64>,
    /// Checker state: the last sequence number delivered, and per PG the (incarnation, input)
    /// last delivered.
    pub(super) last_delivered_seq: u64,
    pub(super) pg_delivered: BTreeMap<PgId, (u64, u64)>,
    /// The ordered history the side's state holds: per epoch range, the last sequence number
    /// delivered in it (a state transfer hands the source's over).
    pub(super) history: Vec<(u64, u64)>,
    pub(super) delivered_count: u64,
    pub(super) transfers_received: u64,
    pub(super) inbox: VecDeque<Event>,
}

impl SimSide {
    pub(super) fn new() -> SimSide {
        SimSide {
            machine: None,
            process: 0,
            logic: super::logic_version(true),
            started: false,
            paused: false,
            persisted_epoch: Epoch::default(),
            paths: BTreeMap::new(),
            last_delivered_seq: 0,
            pg_delivered: BTreeMap::new(),
            history: Vec::new(),
            delivered_count: 0,
            transfers_received: 0,
            inbox: VecDeque::new(),
        }
    }

    /// The PG whose path is on `conn`.
    fn pg_of(&self, conn: u64) -> Option<usize> {
        self.paths
            .iter()
            .find(|(_, &c)| c == conn)
            .map(|(&pg, _)| pg)
    }
}

impl World {
    pub(super) fn machine(&self, side: usize) -> &SideMachine {
        self.sides[side].machine.as_ref().expect("a running side")
    }

    pub(super) fn machine_mut(&mut self, side: usize) -> &mut SideMachine {
        self.sides[side].machine.as_mut().expect("a running side")
    }

    /// Starts (or restarts) a side. A side that ran before lost its state with its process and
    /// takes its peer's; one starting for the first time builds its state from configuration.
    pub(super) fn start_side(&mut self, side: usize, logic_ok: bool) {
        let now = self.now_ms;
        let needs_state = self.sides[side].started;
        let logic = super::logic_version(logic_ok);
        let pg_ids: BTreeSet<PgId> = self.pgs.iter().map(|pg| pg.id).collect();
        let mut settings = SyncSettings::new(side_of(side), logic.clone(), pg_ids);
        settings.heartbeat_interval_ms = self.timers.heartbeat_interval_ms;
        settings.heartbeat_misses_max = self.timers.heartbeat_misses_max;
        settings.tick_interval_ms = self.timers.tick_interval_ms;
        settings.lease_ms = self.timers.lease_ms;
        settings.digest_check_interval_ms = super::DIGEST_CHECK_INTERVAL_MS;
        #[cfg(feature = "planted-bugs")]
        {
            use tandem_mds::sync::PlantedBug as SyncBug;
            settings.planted_bug = match self.options.planted_bug {
                Some(crate::PlantedBug::DeliverBeforeBothHold) => {
                    Some(SyncBug::DeliverBeforeBothHold)
                }
                Some(crate::PlantedBug::IgnoreLeaseExpiry) => Some(SyncBug::IgnoreLeaseExpiry),
                _ => None,
            };
        }
        let epoch = self.sides[side].persisted_epoch;
        let mut sync = Synchronizer::new(settings, epoch, 0, now, needs_state, now)
            .expect("the simulation's settings are valid");
        let router = if needs_state {
            Router::new(self.cc.settings.clone(), now)
        } else {
            Router::from_contact_center(&self.cc, now)
        }
        .expect("the generated contact center loads");
        if !needs_state {
            sync.set_built_from_configuration(router.config_version());
        }
        let pgs = self
            .pgs
            .iter()
            .map(|pg| (pg.id, format!("pg{}", pg.id)))
            .collect();
        let mut side_settings = SideSettings::new(side_of(side), logic.clone(), pgs);
        side_settings.pg_heartbeat_interval_ms = self.timers.pg_heartbeat_interval_ms;
        side_settings.pg_heartbeat_misses_max = self.timers.pg_heartbeat_misses_max;
        side_settings.logger_buffer_rows = self.logger_rows_max;
        side_settings.transfer_timeout_ms = TRANSFER_TIMEOUT_MS;
        side_settings.observe = true;
        self.side_feed_ends(side);
        let slot = &mut self.sides[side];
        slot.machine = Some(SideMachine::new(side_settings, sync, router, now, now));
        slot.process += 1;
        slot.logic = logic;
        slot.started = true;
        slot.paused = false;
        slot.last_delivered_seq = 0;
        slot.pg_delivered.clear();
        slot.history.clear();
        // A started process marks itself as having run: a restart takes its peer's state.
        slot.persisted_epoch = epoch;
        self.trace_line(format!(
            "start side {} (needs state: {needs_state}, logic {})",
            side_of(side),
            self.sides[side].logic
        ));
    }

    /// The side's process dies: its connections reset, its state is gone.
    pub(super) fn crash(&mut self, side: usize) {
        let Some(machine) = self.sides[side].machine.take() else {
            return;
        };
        self.trace_line(format!("side {} down", side_of(side)));
        let slot = &mut self.sides[side];
        slot.paused = false;
        // A connection whose hello the paused process never read resets with it too.
        let unread: Vec<Event> = slot.inbox.drain(..).collect();
        let paths: Vec<(usize, u64)> = std::mem::take(&mut slot.paths).into_iter().collect();
        for event in unread {
            match event {
                Event::LoggerHello { generation, .. } => {
                    self.reset_logger_link(side, generation, true);
                }
                Event::DistributorHello {
                    distributor,
                    generation,
                    ..
                } => self.reset_distributor_link(side, distributor, generation, true),
                _ => {}
            }
        }
        if let Some(conn) = machine.logger_conn() {
            self.reset_logger_link(side, conn, true);
        }
        self.side_feed_ends(side);
        for (pg, generation) in paths {
            self.send(
                (LINK_SIDE_TO_PG, side, pg),
                Event::PgPathReset {
                    pg,
                    side,
                    generation,
                },
            );
        }
        self.disconnect(Some(1 - side));
    }

    /// The side's process goes on: its timers first, then what its sockets buffered.
    pub(super) fn resume(&mut self, side: usize) {
        self.sides[side].paused = false;
        self.trace_line(format!("resume side {}", side_of(side)));
        let now = self.now_ms;
        if self.runs(side) {
            self.machine_mut(side).tick(now);
        }
        while let Some(event) = self.sides[side].inbox.pop_front() {
            self.handle(event);
            if !self.runs(side) {
                break;
            }
        }
    }

    /// Carries out what the sides' machines decided, until neither has more.
    pub(super) fn drain_sides(&mut self) {
        for side in 0..2 {
            while self.runs(side) {
                let effect = self.machine_mut(side).poll();
                // The checkers see each delivery before what it caused goes out.
                self.check_observations(side);
                let Some(effect) = effect else {
                    break;
                };
                if self.violation.is_some() {
                    return;
                }
                match self.sprung(side, &effect) {
                    Some(Sprung::Before) => continue,
                    Some(Sprung::After) => {
                        self.carry_out(side, effect);
                        self.crash_at_trap(side);
                    }
                    None => self.carry_out(side, effect),
                }
            }
        }
    }

    /// Whether the side's trap strikes at `effect`: the process then dies before carrying it
    /// out, or just after (an epoch barrier made durable, with nothing after it gone out).
    fn sprung(&mut self, side: usize, effect: &SideEffect) -> Option<Sprung> {
        let (trap, _) = self.effect_traps[side].as_mut()?;
        let sprung = match trap {
            EffectTrap::After(0) => Sprung::Before,
            EffectTrap::After(n) => {
                *n -= 1;
                return None;
            }
            EffectTrap::Barrier { durable } => {
                if !matches!(effect, SideEffect::PersistEpoch(_)) {
                    return None;
                }
                if *durable {
                    Sprung::After
                } else {
                    Sprung::Before
                }
            }
        };
        let at_barrier = matches!(trap, EffectTrap::Barrier { .. });
        if !self.may_crash(side) {
            // The other side holds no state: the simulation leaves that double failure out. A
            // barrier trap waits for the next barrier.
            if !at_barrier {
                self.effect_traps[side] = None;
            }
            return None;
        }
        if sprung == Sprung::Before {
            self.crash_at_trap(side);
        }
        Some(sprung)
    }

    fn crash_at_trap(&mut self, side: usize) {
        let Some((trap, restart_after_ms)) = self.effect_traps[side].take() else {
            return;
        };
        self.trace_line(format!(
            "side {} dies between two effects ({trap:?})",
            side_of(side)
        ));
        self.crash_and_restart(side, restart_after_ms);
    }

    fn carry_out(&mut self, side: usize, effect: SideEffect) {
        let now = self.now_ms;
        match effect {
            SideEffect::SendPeer { conn, message } => {
                if self.connected && conn == self.link_generation {
                    self.send(
                        (LINK_PEER, side, 1 - side),
                        Event::Peer {
                            to: 1 - side,
                            generation: conn,
                            message,
                        },
                    );
                }
            }
            SideEffect::ClosePeer { conn } => {
                if self.connected && conn == self.link_generation {
                    self.disconnect(Some(1 - side));
                }
            }
            SideEffect::SendPg { conn, message } => {
                if let Some(pg) = self.sides[side].pg_of(conn) {
                    self.send(
                        (LINK_SIDE_TO_PG, side, pg),
                        Event::ToPg {
                            pg,
                            side,
                            generation: conn,
                            message,
                        },
                    );
                }
            }
            SideEffect::ClosePg { conn } => {
                if let Some(pg) = self.sides[side].pg_of(conn) {
                    self.sides[side].paths.remove(&pg);
                    self.trace_line(format!("side {} closes its PG {pg} path", side_of(side)));
                    self.send(
                        (LINK_SIDE_TO_PG, side, pg),
                        Event::PgPathReset {
                            pg,
                            side,
                            generation: conn,
                        },
                    );
                }
            }
            SideEffect::SendLogger { conn, message, .. } => {
                self.send_logger_link(
                    side,
                    true,
                    Event::ToLogger {
                        side,
                        generation: conn,
                        message,
                    },
                );
            }
            SideEffect::CloseLogger { conn } => self.reset_logger_link(side, conn, true),
            SideEffect::PersistEpoch(epoch) => self.sides[side].persisted_epoch = epoch,
            SideEffect::RecordSuspect {
                suspect, message, ..
            } => {
                self.violate(
                    "no input panics the router",
                    format!("side {}: {suspect}: {message}", side_of(side)),
                );
            }
            SideEffect::OpenTransferSession { nonce, a_receives } => {
                // A's MDS opens the session on B's transfer address.
                let source = if a_receives { 1 } else { 0 };
                let at = now + self.rng.random_range(1..20);
                self.schedule(
                    at,
                    Event::TransferSession {
                        source,
                        nonce,
                        opened_ms: at,
                    },
                );
            }
            SideEffect::ComputeDigest { seq, state } => {
                let digest = records::digest(&state);
                let first = *self.digest_by_seq.entry(seq).or_insert(digest);
                if first != digest {
                    return self.violate(
                        "two sides' states differ at a DigestCheck",
                        format!("side {} at {seq}", side_of(side)),
                    );
                }
                let state_bytes = records::state_size(&state);
                let process = self.sides[side].process;
                // The digest thread answers a moment later.
                let at = now + self.rng.random_range(0..3);
                self.schedule(
                    at,
                    Event::DigestComputed {
                        side,
                        process,
                        seq,
                        digest,
                        state_bytes,
                    },
                );
            }
            SideEffect::PublishFeedTick(tick) => self.feed_tick(side, *tick),
            SideEffect::AdminReply { reply, .. } => {
                let text = format!("{reply:?}");
                self.trace_line(format!(
                    "side {} answers the administrator: {}",
                    side_of(side),
                    super::short(&text)
                ));
            }
            SideEffect::Log { text, .. } => {
                self.trace_line(format!("{} {}", side_of(side), super::short(&text)));
            }
        }
    }

    /// What the checkers see of the side's last effect: its deliveries and numbered outputs.
    fn check_observations(&mut self, side: usize) {
        let Some(machine) = self.sides[side].machine.as_mut() else {
            return;
        };
        for observation in machine.take_observations() {
            match observation {
                Observation::Delivered(ordered) => self.check_delivered(side, &ordered),
                Observation::Numbered {
                    generation,
                    seq,
                    output,
                } => {
                    let hash = xxh3_64(&super::output_bytes(&output.output));
                    let key = (generation, output.pg, output.id);
                    match self.numbered.get(&key).map(|&(first, _)| first) {
                        Some(first) if first != hash => self.violate(
                            "two sides numbered different outputs alike",
                            format!(
                                "side {} output {} for PG {} at {seq}",
                                side_of(side),
                                output.id,
                                output.pg,
                            ),
                        ),
                        Some(_) => {}
                        None => {
                            if self.numbered.len() < NUMBERED_OUTPUTS_KEPT_MAX {
                                self.numbered.insert(key, (hash, seq));
                            }
                        }
                    }
                }
                Observation::AdminOrdered { seq } => {
                    self.config_change_seqs.push(seq);
                    self.trace_line(format!(
                        "configuration change ordered by side {} at {seq}",
                        side_of(side)
                    ));
                }
                Observation::DropOrdered => self.drop_decisions += 1,
                Observation::Sync(SyncEvent::DigestMismatch { seq, .. }) => self.violate(
                    "a DigestCheck found different states",
                    format!("side {} at {seq}", side_of(side)),
                ),
                Observation::Sync(_) => {}
            }
            if self.violation.is_some() {
                return;
            }
        }
    }

    /// Checks a delivery against the side's stream and every side's.
    fn check_delivered(&mut self, side: usize, message: &Ordered) {
        let hash = xxh3_64(&postcard::to_stdvec(message).expect("an ordered message serializes"));
        let slot = &mut self.sides[side];
        let last = slot.last_delivered_seq;
        if last != 0 && Some(message.seq) != tandem_mds::next_seq(last, message.epoch) {
            let detail = format!(
                "side {} delivered {} after {last}",
                side_of(side),
                message.seq
            );
            return self.violate("a delivered stream with a gap or a repeat", detail);
        }
        slot.last_delivered_seq = message.seq;
        slot.delivered_count += 1;
        let range = tandem_mds::seq_epoch_range(message.seq);
        match slot.history.last_mut() {
            Some((last_range, last)) if *last_range == range => *last = message.seq,
            _ => slot.history.push((range, message.seq)),
        }
        if let Some(input) = message.pg_input() {
            let previous = slot
                .pg_delivered
                .insert(input.pg, (input.incarnation, input.input_no));
            // A side's first input from a PG, or from a new incarnation, may be any.
            if let Some((incarnation, input_no)) = previous {
                if incarnation == input.incarnation && input.input_no != input_no + 1 {
                    let detail = format!(
                        "side {} delivered PG {} input {} after {input_no}",
                        side_of(side),
                        input.pg,
                        input.input_no
                    );
                    return self.violate("a PG input applied twice or out of order", detail);
                }
            }
        }
        let first = *self.delivered_by_seq.entry(message.seq).or_insert(hash);
        if first != hash {
            self.violate(
                "a sequence number delivered with two different messages",
                format!("side {} delivered {message:?}", side_of(side)),
            );
        }
    }

    // ----- state transfer -----

    /// A's MDS opened the session for `nonce` at the source, which cuts its state; the session
    /// carries its records to the receiver. The request the nonce names travels on the
    /// private link and may come after the session: the source waits for it, as side B's
    /// listener does, for at most `NONCE_WAIT_MS_MAX`, and then refuses the session.
    pub(super) fn transfer_session(&mut self, source: usize, nonce: u64, opened_ms: u64) {
        if !self.runs(source) {
            return;
        }
        let now = self.now_ms;
        if self.machine(source).transfer_role(nonce) != Some(false) {
            if now < opened_ms + NONCE_WAIT_MS_MAX {
                let event = Event::TransferSession {
                    source,
                    nonce,
                    opened_ms,
                };
                self.schedule(now + NONCE_POLL_MS, event);
            } else {
                self.trace_line(format!(
                    "side {} refuses a session of an unknown nonce",
                    side_of(source)
                ));
                self.session_fails(1 - source, nonce);
            }
            return;
        }
        // What the source decided before goes out first: the cut's messages follow it.
        self.drain_sides();
        if !self.runs(source) {
            return;
        }
        let receiver = 1 - source;
        let taken = match self.machine_mut(source).serve_cut(now, nonce) {
            Ok(taken) => taken,
            Err(error) => {
                self.trace_line(format!("transfer not begun: {error}"));
                self.machine_mut(source).transfer_failed(now, nonce, &error);
                self.session_fails(receiver, nonce);
                return;
            }
        };
        let records = records::export(&taken.state);
        let history = self.sides[source].history.clone();
        self.trace_line(format!(
            "transfer from {} cut at {} ({} bytes)",
            side_of(source),
            taken.cut.seq,
            records.len()
        ));
        self.drain_sides();
        let process = self.sides[receiver].process;
        let header_at = now + self.rng.random_range(1..5);
        self.schedule(
            header_at,
            Event::TransferHeader {
                receiver,
                process,
                nonce,
                state_bytes: records.len() as u64,
            },
        );
        let at = now + self.rng.random_range(20..TRANSFER_WIRE_MS_MAX);
        self.schedule(
            at,
            Event::TransferArrived {
                receiver,
                nonce,
                cut: taken.cut,
                records,
                side_data: taken.side_data,
                history,
                started_ms: now,
                direction: taken.direction,
            },
        );
    }

    /// The session under `nonce` ends without the state, as `receiver` sees a moment later.
    fn session_fails(&mut self, receiver: usize, nonce: u64) {
        let at = self.now_ms + self.rng.random_range(1..5);
        let process = self.sides[receiver].process;
        self.schedule(
            at,
            Event::TransferFailed {
                side: receiver,
                process,
                nonce,
            },
        );
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn transfer_arrived(
        &mut self,
        receiver: usize,
        nonce: u64,
        cut: SyncCut,
        records: Vec<u8>,
        side_data: Vec<u8>,
        history: Vec<(u64, u64)>,
        started_ms: u64,
        direction: String,
    ) {
        let now = self.now_ms;
        let record = SyncRecord {
            at_ms: now,
            direction,
            bytes: records.len() as u64,
            duration_ms: now - started_ms,
            stall_us: 0,
            sent: true,
        };
        let source = 1 - receiver;
        if self.runs(source) && self.machine(source).transfer_role(nonce) == Some(false) {
            self.machine_mut(source)
                .transfer_sent(now, nonce, record.clone());
        }
        if !self.runs(receiver) || self.machine(receiver).transfer_role(nonce) != Some(true) {
            return;
        }
        let (state, _digest) =
            records::import_with_digest(&records).expect("exported records import");
        let side_data: SideData =
            rmp_serde::from_slice(&side_data).expect("the side data deserializes");
        let cut_seq = cut.seq;
        let pg_cursors: BTreeMap<PgId, (u64, u64)> = cut
            .pg_cursors
            .iter()
            .map(|c| (c.pg, (c.incarnation, c.input_no)))
            .collect();
        let taken = self.machine_mut(receiver).transfer_received(
            now,
            nonce,
            cut,
            state,
            side_data,
            SyncRecord {
                sent: false,
                ..record
            },
        );
        if !taken {
            self.trace_line(format!("transfer to {} discarded", side_of(receiver)));
            return;
        }
        let slot = &mut self.sides[receiver];
        slot.transfers_received += 1;
        slot.last_delivered_seq = cut_seq;
        slot.history = history;
        slot.pg_delivered = pg_cursors;
        self.trace_line(format!(
            "transfer to {} taken at {cut_seq}",
            side_of(receiver)
        ));
    }
}
