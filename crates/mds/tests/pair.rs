//! Two synchronizers and their PGs in one process, with a fake clock: the messages each side's
//! `poll` hands out are carried to their destinations in order, a millisecond at a time.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use tandem_mds::lease::{LeaseAnswer, LeaseGranter};
use tandem_mds::next_seq;
use tandem_mds::{
    input_hash, Action, Body, Epoch, LogicVersion, Ordered, PeerMessage, QuarantinedInput, Side,
    Source, SyncEvent, SyncSettings, SyncState, Synchronizer,
};
use tandem_model::ids::{AgentId, PgId};
use tandem_model::input::Input;
use tandem_model::logged::{DroppedRange, HistoricalDrop};

fn version(build: &str) -> LogicVersion {
    LogicVersion {
        build: build.into(),
        time_zone_data: "2026a".into(),
    }
}

fn side_index(side: Side) -> usize {
    match side {
        Side::A => 0,
        Side::B => 1,
    }
}

fn input(n: u64) -> Input {
    Input::AgentLogout {
        agent: AgentId(n as u32),
        reason_code: 0,
    }
}

enum Wire {
    Peer { to: Side, message: PeerMessage },
}

struct World {
    now_ms: u64,
    sides: [Synchronizer; 2],
    /// A paused side runs nothing: no ticks, no messages handled (SIGSTOP).
    paused: [bool; 2],
    pgs: BTreeMap<PgId, LeaseGranter>,
    /// Whether each side reaches each PG.
    reach: [BTreeSet<PgId>; 2],
    private_link_up: bool,
    wire: VecDeque<Wire>,
    delivered: [Vec<Ordered>; 2],
    acked: BTreeMap<PgId, u64>,
    refused: usize,
    events: Vec<(Side, SyncEvent)>,
    /// What each side heard of its peer's logger.
    peer_logger: Vec<(Side, bool, u64)>,
    lease_ms: u64,
    /// Whether a side that asks for its peer's state gets it at once (otherwise the test
    /// carries the transfer out itself).
    auto_transfer: bool,
    /// Receivers whose source is to cut its state next.
    transfers_wanted: Vec<usize>,
    /// Cuts taken, with the source's delivered messages at the cut, to arrive once the link is
    /// quiet.
    transfers_sent: Vec<(usize, tandem_mds::SyncCut, Vec<Ordered>)>,
}

impl World {
    fn new(pgs: u32, build_b: &str) -> World {
        let pg_ids: BTreeSet<PgId> = (1..=pgs).map(PgId).collect();
        let make = |side, build: &str| {
            Synchronizer::new(
                SyncSettings::new(side, version(build), pg_ids.clone()),
                Epoch::default(),
                0,
                0,
                false,
                0,
            )
            .unwrap()
        };
        let mut world = World {
            now_ms: 0,
            sides: [make(Side::A, "1.0"), make(Side::B, build_b)],
            paused: [false; 2],
            pgs: pg_ids.iter().map(|&pg| (pg, LeaseGranter::new())).collect(),
            reach: [pg_ids.clone(), pg_ids.clone()],
            private_link_up: false,
            wire: VecDeque::new(),
            delivered: [Vec::new(), Vec::new()],
            acked: BTreeMap::new(),
            refused: 0,
            events: Vec::new(),
            peer_logger: Vec::new(),
            lease_ms: SyncSettings::new(Side::A, version("x"), pg_ids).lease_ms,
            auto_transfer: true,
            transfers_wanted: Vec::new(),
            transfers_sent: Vec::new(),
        };
        for i in 0..2 {
            for pg in world.reach[i].clone() {
                world.sides[i].pg_reachable(0, pg, true);
            }
        }
        world
    }

    fn side(&mut self, side: Side) -> &mut Synchronizer {
        &mut self.sides[side_index(side)]
    }

    fn state(&self, side: Side) -> SyncState {
        self.sides[side_index(side)].state()
    }

    fn link_up(&mut self) {
        self.private_link_up = true;
        let now = self.now_ms;
        for i in 0..2 {
            self.sides[i].peer_link_up(now);
        }
        self.settle();
    }

    /// Cuts the private link silently: nothing more crosses it, and neither side is told.
    fn cut_private_link(&mut self) {
        self.private_link_up = false;
    }

    fn set_reach(&mut self, side: Side, pg: PgId, reachable: bool) {
        let i = side_index(side);
        if reachable {
            self.reach[i].insert(pg);
        } else {
            self.reach[i].remove(&pg);
        }
        let now = self.now_ms;
        self.sides[i].pg_reachable(now, pg, reachable);
        self.settle();
    }

    /// A PG sends input number `input_no` to `side`.
    fn pg_input(&mut self, side: Side, pg: PgId, input_no: u64) {
        let now = self.now_ms;
        if !self.paused[side_index(side)] {
            self.side(side)
                .on_pg_input(now, pg, 1, input_no, input(input_no));
        }
        self.settle();
    }

    /// Carries out every pending action and message until the world is quiet at this instant.
    fn settle(&mut self) {
        loop {
            let mut progressed = false;
            for i in 0..2 {
                if self.paused[i] {
                    continue;
                }
                while let Some(action) = self.sides[i].poll() {
                    progressed = true;
                    self.carry_out(i, action);
                }
            }
            while let Some(Wire::Peer { to, message }) = self.wire.pop_front() {
                progressed = true;
                let now = self.now_ms;
                if !self.paused[side_index(to)] {
                    self.side(to).on_peer_message(now, message);
                }
            }
            if progressed {
                continue;
            }
            // The link is quiet: transfers arrive, then sources cut for new requests.
            let now = self.now_ms;
            for (receiver, cut, delivered) in std::mem::take(&mut self.transfers_sent) {
                if self.sides[receiver].on_transfer_received(now, cut).is_ok() {
                    self.delivered[receiver] = delivered;
                    progressed = true;
                }
            }
            for receiver in std::mem::take(&mut self.transfers_wanted) {
                if let Ok(cut) = self.sides[1 - receiver].begin_transfer(now) {
                    let delivered = self.delivered[1 - receiver].clone();
                    self.transfers_sent.push((receiver, cut, delivered));
                    progressed = true;
                }
            }
            if !progressed {
                return;
            }
        }
    }

    fn carry_out(&mut self, i: usize, action: Action) {
        let side = if i == 0 { Side::A } else { Side::B };
        let now = self.now_ms;
        match action {
            Action::SendPeer(message) => {
                if self.private_link_up {
                    self.wire.push_back(Wire::Peer {
                        to: side.peer(),
                        message,
                    });
                }
            }
            Action::ClosePeer { .. } => {}
            Action::Deliver(message) => self.delivered[i].push(message),
            Action::AckPg { pg, input_no, .. } => {
                let acked = self.acked.entry(pg).or_default();
                *acked = (*acked).max(input_no);
            }
            Action::RefuseInput { .. } => self.refused += 1,
            Action::RequestLease {
                epoch,
                requested_ms,
            } => {
                for pg in self.reach[i].clone() {
                    let answer = self
                        .pgs
                        .get_mut(&pg)
                        .unwrap()
                        .request(now, epoch, self.lease_ms);
                    match answer {
                        LeaseAnswer::Granted => {
                            self.sides[i].on_lease_granted(now, pg, epoch, requested_ms)
                        }
                        LeaseAnswer::Refused { granted } => {
                            self.sides[i].on_lease_refused(now, granted)
                        }
                    }
                }
            }
            Action::TestOtherSide => {
                for pg in self.reach[i].clone() {
                    let enabled = self.pgs[&pg].other_side_enabled(now, side);
                    self.sides[i].on_test_other_side(now, pg, enabled);
                }
            }
            Action::StateTransferWanted { .. } => {
                if self.auto_transfer {
                    self.transfers_wanted.push(i);
                }
            }
            Action::PeerLoggerProgress {
                connected,
                committed_through,
            } => self.peer_logger.push((side, connected, committed_through)),
            Action::PersistEpoch(_) | Action::TransferRequested(_) | Action::ResendFrom { .. } => {}
            Action::Event(event) => self.events.push((side, event)),
        }
    }

    /// Runs the clock on by `ms`, ticking every side every millisecond.
    fn advance(&mut self, ms: u64) {
        for _ in 0..ms {
            self.now_ms += 1;
            let now = self.now_ms;
            for i in 0..2 {
                if !self.paused[i] {
                    self.sides[i].tick(now);
                }
            }
            self.settle();
            self.check_safety();
        }
    }

    /// No sequence number is ever delivered with two different messages, and each side delivers
    /// its stream without gaps or repeats (a new epoch starts at its own range).
    fn check_safety(&self) {
        let mut by_seq: BTreeMap<u64, &Ordered> = BTreeMap::new();
        for delivered in &self.delivered {
            for message in delivered {
                let first = by_seq.entry(message.seq).or_insert(message);
                assert_eq!(
                    *first, message,
                    "two different messages delivered at sequence {}",
                    message.seq
                );
            }
            for pair in delivered.windows(2) {
                assert_eq!(
                    Some(pair[1].seq),
                    next_seq(pair[0].seq, pair[1].epoch),
                    "delivery skipped or repeated a sequence number"
                );
            }
        }
    }

    fn pg_inputs_delivered(&self, side: Side) -> Vec<(PgId, u64)> {
        self.delivered[side_index(side)]
            .iter()
            .filter_map(|m| m.pg_input().map(|p| (p.pg, p.input_no)))
            .collect()
    }
}

#[test]
fn a_cold_start_pairs_a_enabled_and_b_disabled_in_epoch_1() {
    let mut world = World::new(2, "1.0");
    world.link_up();
    world.advance(5);
    assert_eq!(world.state(Side::A), SyncState::PairedEnabled);
    assert_eq!(world.state(Side::B), SyncState::PairedDisabled);
    assert_eq!(
        world.sides[0].epoch(),
        Epoch {
            number: 1,
            owner: Some(Side::A)
        }
    );
    assert_eq!(world.sides[1].epoch(), world.sides[0].epoch());
}

#[test]
fn input_is_delivered_on_both_sides_in_one_order_and_acknowledged_once_held_by_both() {
    let mut world = World::new(2, "1.0");
    world.link_up();
    world.advance(5);
    // PG 1 talks to A, PG 2 to B (forwarded to A for ordering).
    for n in 1..=50 {
        world.pg_input(Side::A, PgId(1), n);
        world.pg_input(Side::B, PgId(2), n);
    }
    world.advance(300);
    let on_a = world.pg_inputs_delivered(Side::A);
    assert_eq!(on_a, world.pg_inputs_delivered(Side::B));
    assert_eq!(on_a.len(), 100);
    for pg in [PgId(1), PgId(2)] {
        let numbers: Vec<u64> = on_a
            .iter()
            .filter(|(p, _)| *p == pg)
            .map(|(_, n)| *n)
            .collect();
        assert_eq!(
            numbers,
            (1..=50).collect::<Vec<_>>(),
            "PG {pg}'s inputs in order, once each"
        );
        assert_eq!(world.acked[&pg], 50);
    }
    // TimeTicks every 100 ms, ordered like everything else.
    let ticks = world.delivered[0]
        .iter()
        .filter(|m| {
            matches!(
                m.body,
                Body::Input {
                    input: Input::TimeTick,
                    ..
                }
            )
        })
        .count();
    assert!((3..=4).contains(&ticks), "{ticks} ticks in 305 ms");
}

#[test]
fn a_repeated_or_early_input_number_is_not_ordered() {
    let mut world = World::new(1, "1.0");
    world.link_up();
    world.advance(5);
    world.pg_input(Side::A, PgId(1), 1);
    world.pg_input(Side::A, PgId(1), 1);
    world.pg_input(Side::A, PgId(1), 3);
    world.pg_input(Side::B, PgId(1), 2);
    world.pg_input(Side::B, PgId(1), 2);
    world.advance(200);
    assert_eq!(
        world.pg_inputs_delivered(Side::A),
        vec![(PgId(1), 1), (PgId(1), 2)]
    );
    assert_eq!(
        world.pg_inputs_delivered(Side::B),
        vec![(PgId(1), 1), (PgId(1), 2)]
    );
}

#[test]
fn the_enabled_side_delivers_nothing_the_peer_does_not_hold() {
    let mut world = World::new(2, "1.0");
    world.link_up();
    world.advance(5);
    world.cut_private_link();
    world.pg_input(Side::A, PgId(1), 1);
    world.advance(50);
    assert!(
        world.pg_inputs_delivered(Side::A).is_empty(),
        "delivered before B held it"
    );
    assert_eq!(
        world.acked.get(&PgId(1)),
        None,
        "acknowledged before delivery"
    );
}

#[test]
fn a_silent_enabled_side_is_replaced_and_fenced_when_it_wakes() {
    let mut world = World::new(2, "1.0");
    world.link_up();
    world.advance(5);
    for n in 1..=10 {
        world.pg_input(Side::A, PgId(1), n);
    }
    world.advance(10);
    // SIGSTOP of A.
    world.paused[0] = true;
    let paused_at = world.now_ms;
    let mut enabled_at = None;
    for _ in 0..2_000 {
        world.advance(1);
        if world.state(Side::B) == SyncState::IsolatedEnabled {
            enabled_at = Some(world.now_ms);
            break;
        }
    }
    let enabled_at = enabled_at.expect("B takes over");
    // The PGs let A's lease (500 ms from its last renewal) lapse, then grant B the next epoch.
    assert!(
        enabled_at - paused_at <= 1_000,
        "took {} ms",
        enabled_at - paused_at
    );
    eprintln!("takeover after a pause: {} ms", enabled_at - paused_at);
    assert_eq!(
        world.sides[1].epoch(),
        Epoch {
            number: 2,
            owner: Some(Side::B)
        }
    );
    // B orders new input in epoch 2.
    world.pg_input(Side::B, PgId(1), 11);
    world.advance(10);
    assert_eq!(
        world.pg_inputs_delivered(Side::B).last(),
        Some(&(PgId(1), 11))
    );
    // SIGCONT: A's PG traffic meets epoch 2; A stops ordering and wants B's state.
    world.paused[0] = false;
    world.advance(700);
    assert!(
        !world.state(Side::A).is_enabled(),
        "A is {}",
        world.state(Side::A)
    );
    assert!(world.events.iter().any(|(side, e)| *side == Side::A
        && matches!(
            e,
            SyncEvent::Fenced { .. }
                | SyncEvent::StateChanged {
                    to: SyncState::IsolatedDisabled,
                    ..
                }
        )));
}

#[test]
fn a_cut_private_link_leaves_exactly_one_side_enabled() {
    for pgs in [2u32, 3] {
        // Every PG reaches both sides: A keeps ordering, B tests and stays disabled.
        let mut world = World::new(pgs, "1.0");
        world.link_up();
        world.advance(5);
        world.cut_private_link();
        world.advance(2_000);
        assert_eq!(
            world.state(Side::A),
            SyncState::IsolatedEnabled,
            "{pgs} PGs"
        );
        assert_eq!(
            world.state(Side::B),
            SyncState::IsolatedDisabled,
            "{pgs} PGs"
        );

        // The PGs cannot reach A: B takes over once A's leases lapse, and A stops.
        let mut world = World::new(pgs, "1.0");
        world.link_up();
        world.advance(5);
        world.cut_private_link();
        for pg in 1..=pgs {
            world.set_reach(Side::A, PgId(pg), false);
        }
        world.advance(3_000);
        assert_eq!(
            world.state(Side::B),
            SyncState::IsolatedEnabled,
            "{pgs} PGs"
        );
        assert_eq!(
            world.state(Side::A),
            SyncState::IsolatedDisabled,
            "{pgs} PGs"
        );
    }
}

#[test]
fn an_even_split_of_pgs_favours_side_a() {
    let mut world = World::new(2, "1.0");
    world.link_up();
    world.advance(5);
    world.cut_private_link();
    world.set_reach(Side::A, PgId(2), false);
    world.set_reach(Side::B, PgId(1), false);
    world.advance(3_000);
    assert_eq!(world.state(Side::A), SyncState::IsolatedEnabled);
    assert_eq!(world.state(Side::B), SyncState::IsolatedDisabled);
}

#[test]
fn different_logic_versions_do_not_pair_and_say_both_versions() {
    let mut world = World::new(2, "1.1");
    world.link_up();
    world.advance(5);
    assert!(!world.state(Side::A).is_paired());
    assert!(!world.state(Side::B).is_paired());
    let mismatch = world
        .events
        .iter()
        .find_map(|(_, e)| match e {
            SyncEvent::VersionMismatch { ours, theirs } => Some(format!("{ours} {theirs}")),
            _ => None,
        })
        .expect("a version mismatch event");
    assert!(
        mismatch.contains("1.0") && mismatch.contains("1.1"),
        "{mismatch}"
    );
}

#[test]
fn a_side_that_ordered_alone_and_its_successor_never_share_a_sequence_number() {
    let mut world = World::new(3, "1.0");
    world.link_up();
    world.advance(5);
    for n in 1..=5 {
        world.pg_input(Side::A, PgId(1), n);
    }
    world.advance(10);
    // The private link fails; A keeps ordering alone under its leases.
    world.cut_private_link();
    world.advance(600);
    assert_eq!(world.state(Side::A), SyncState::IsolatedEnabled);
    for n in 6..=8 {
        world.pg_input(Side::A, PgId(1), n);
    }
    world.advance(10);
    let a_alone = world.pg_inputs_delivered(Side::A);
    assert_eq!(
        a_alone.last(),
        Some(&(PgId(1), 8)),
        "A delivers alone while it holds its leases"
    );
    // Then A loses the PGs: its leases lapse and B takes over in the next epoch.
    for pg in 1..=3 {
        world.set_reach(Side::A, PgId(pg), false);
    }
    world.advance(3_000);
    assert_eq!(world.state(Side::A), SyncState::IsolatedDisabled);
    assert_eq!(world.state(Side::B), SyncState::IsolatedEnabled);
    world.pg_input(Side::B, PgId(2), 1);
    world.advance(10);
    // B never saw A's inputs 6..=8; its own stream starts in epoch 2's range, so the checker
    // (run every millisecond) found no sequence number with two messages.
    let b_epoch = world.sides[1].epoch();
    let b_last = world.delivered[1].last().expect("B delivers");
    assert_eq!(b_last.epoch, b_epoch);
    assert!(world.delivered[0].iter().all(|m| m.seq < b_last.seq));
}

#[test]
fn a_quarantined_input_is_skipped_on_both_sides_acknowledged_and_followed_in_order() {
    let mut world = World::new(1, "1.0");
    world.link_up();
    world.advance(5);
    let pg = PgId(1);
    let key = |input_hash: u64| QuarantinedInput { pg, input_hash };
    // Only the enabled side's quarantine counts: B has none. The second record names bytes the
    // PG never sends, so it matches nothing.
    world.side(Side::A).set_quarantine(BTreeSet::from([
        key(input_hash(&input(2))),
        key(input_hash(&input(40))),
    ]));
    world.pg_input(Side::A, pg, 1);
    // Input 2 reaches B, which forwards it for ordering.
    world.pg_input(Side::B, pg, 2);
    world.advance(20);
    assert_eq!(
        world.acked[&pg], 2,
        "the PG is acknowledged through the quarantined input"
    );
    world.pg_input(Side::A, pg, 3);
    world.pg_input(Side::A, pg, 4);
    world.advance(20);
    assert_eq!(world.acked[&pg], 4);
    for side in [Side::A, Side::B] {
        let bodies: Vec<&Body> = world.delivered[side_index(side)]
            .iter()
            .filter(|m| m.pg_input().is_some())
            .map(|m| &m.body)
            .collect();
        let applied = |n: u64| Body::Input {
            source: Source::Pg {
                pg,
                incarnation: 1,
                input_no: n,
            },
            input: input(n),
        };
        assert_eq!(
            bodies,
            vec![
                &applied(1),
                &Body::Quarantined {
                    pg,
                    incarnation: 1,
                    input_no: 2
                },
                &applied(3),
                &applied(4),
            ],
            "side {side}"
        );
    }
    assert_eq!(world.delivered[0], world.delivered[1]);
}

#[test]
fn a_side_that_takes_over_orders_by_its_own_quarantine() {
    let mut world = World::new(2, "1.0");
    world.link_up();
    world.advance(5);
    let pg = PgId(1);
    world
        .side(Side::B)
        .set_quarantine(BTreeSet::from([QuarantinedInput {
            pg,
            input_hash: input_hash(&input(1)),
        }]));
    // A stops (SIGSTOP) before it orders the input B forwards; B takes over and re-submits it.
    world.paused[0] = true;
    world.pg_input(Side::B, pg, 1);
    for _ in 0..2_000 {
        world.advance(1);
        if world.state(Side::B) == SyncState::IsolatedEnabled {
            break;
        }
    }
    assert_eq!(world.state(Side::B), SyncState::IsolatedEnabled);
    world.pg_input(Side::B, pg, 2);
    world.advance(10);
    let bodies: Vec<&Body> = world.delivered[1]
        .iter()
        .filter(|m| m.pg_input().is_some())
        .map(|m| &m.body)
        .collect();
    assert_eq!(
        bodies,
        vec![
            &Body::Quarantined {
                pg,
                incarnation: 1,
                input_no: 1
            },
            &Body::Input {
                source: Source::Pg {
                    pg,
                    incarnation: 1,
                    input_no: 2
                },
                input: input(2),
            },
        ]
    );
    assert_eq!(world.acked[&pg], 2);
}

/// Replaces side B by a fresh process without state, and drops the private link.
fn restart_b(world: &mut World) {
    let pg_ids: BTreeSet<PgId> = world.reach[1].clone();
    let epoch = world.sides[1].epoch();
    world.sides[1] = Synchronizer::new(
        SyncSettings::new(Side::B, version("1.0"), pg_ids.clone()),
        epoch,
        0,
        0,
        true,
        world.now_ms,
    )
    .unwrap();
    world.delivered[1].clear();
    let now = world.now_ms;
    for pg in pg_ids {
        world.sides[1].pg_reachable(now, pg, true);
    }
    world.sides[0].peer_link_down(now);
    world.private_link_up = false;
    // The tests that restart B carry its transfer out themselves.
    world.auto_transfer = false;
    world.wire.clear();
    world.settle();
}

#[test]
fn a_restarted_side_joins_by_state_transfer_while_the_source_keeps_ordering() {
    let mut world = World::new(2, "1.0");
    world.link_up();
    world.advance(5);
    for n in 1..=5 {
        world.pg_input(Side::A, PgId(1), n);
    }
    world.advance(10);
    restart_b(&mut world);
    world.advance(5);
    assert_eq!(world.state(Side::A), SyncState::IsolatedEnabled);
    for n in 6..=8 {
        world.pg_input(Side::A, PgId(1), n);
    }
    world.link_up();
    // B holds no state: A is the source, and B asks for it.
    assert_eq!(world.sides[1].transfer_wanted(), Some(Side::A));
    assert_eq!(world.state(Side::A), SyncState::IsolatedEnabled);
    let now = world.now_ms;
    let cut = world.sides[0].begin_transfer(now).unwrap();
    assert_eq!(cut.seq, world.sides[0].delivered_through());
    // The clients' state at the cut, as the transfer session would carry it.
    let at_cut = world.delivered[0].clone();
    world.settle();
    // A keeps ordering while the state is on its way; B buffers and delivers nothing yet.
    for n in 9..=12 {
        world.pg_input(Side::A, PgId(1), n);
    }
    world.advance(50);
    assert!(world.delivered[1].is_empty());
    assert_eq!(world.acked[&PgId(1)], 12, "A acknowledged alone");
    let now = world.now_ms;
    world.sides[1].on_transfer_received(now, cut).unwrap();
    world.delivered[1] = at_cut;
    world.settle();
    assert_eq!(world.state(Side::A), SyncState::PairedEnabled);
    assert_eq!(world.state(Side::B), SyncState::PairedDisabled);
    // B delivered what was ordered during the transfer, and both continue in one stream.
    world.pg_input(Side::A, PgId(1), 13);
    world.advance(20);
    let expected: Vec<(PgId, u64)> = (1..=13).map(|n| (PgId(1), n)).collect();
    assert_eq!(world.pg_inputs_delivered(Side::A), expected);
    assert_eq!(world.pg_inputs_delivered(Side::B), expected);
    assert_eq!(
        world.delivered[0].last().map(|m| m.seq),
        world.delivered[1].last().map(|m| m.seq)
    );
}

#[test]
fn a_state_from_a_superseded_cut_is_refused_and_changes_nothing() {
    let mut world = World::new(2, "1.0");
    world.link_up();
    world.advance(5);
    world.pg_input(Side::A, PgId(1), 1);
    world.advance(10);
    restart_b(&mut world);
    world.advance(5);
    world.link_up();
    let now = world.now_ms;
    let first = world.sides[0].begin_transfer(now).unwrap();
    world.settle();
    world.pg_input(Side::A, PgId(1), 2);
    world.advance(5);
    // The first attempt is retried: a new cut, announced on the link.
    let now = world.now_ms;
    let second = world.sides[0].begin_transfer(now).unwrap();
    assert!(second.seq > first.seq);
    world.settle();
    let now = world.now_ms;
    assert_eq!(
        world.sides[1].on_transfer_received(now, first.clone()),
        Err(tandem_mds::TransferError::CutNotSeen { seq: first.seq })
    );
    assert!(
        world.sides[1].needs_state(),
        "a refused transfer changes nothing"
    );
    assert!(world.delivered[1].is_empty());
    world.sides[1].on_transfer_received(now, second).unwrap();
    world.settle();
    assert_eq!(world.state(Side::B), SyncState::PairedDisabled);
    // B cannot be its own source: a side without state refuses to send.
    assert_eq!(
        world.sides[1].begin_transfer(now).unwrap_err(),
        tandem_mds::TransferError::NotSource
    );
}

/// The DigestCheck delivered last on both sides, once every check interval of ordered time.
fn digest_check_seq(world: &World) -> u64 {
    let seqs: Vec<u64> = (0..2)
        .map(|i| {
            world.delivered[i]
                .iter()
                .rev()
                .find(|m| m.body == Body::DigestCheck)
                .map(|m| m.seq)
                .expect("a DigestCheck delivered")
        })
        .collect();
    assert_eq!(seqs[0], seqs[1], "both sides deliver the same DigestCheck");
    seqs[0]
}

#[test]
fn equal_digests_are_counted_and_a_different_one_rebuilds_the_disabled_side() {
    let mut world = World::new(2, "1.0");
    world.link_up();
    let interval_ms =
        SyncSettings::new(Side::A, version("1.0"), BTreeSet::new()).digest_check_interval_ms;
    world.advance(interval_ms + 200);
    let seq = digest_check_seq(&world);
    let now = world.now_ms;
    world.side(Side::A).on_local_digest(now, seq, 7);
    world.side(Side::B).on_local_digest(now, seq, 7);
    world.settle();
    for side in [Side::A, Side::B] {
        let checks = world.side(side).digest_checks();
        assert_eq!((checks.equal, checks.differed), (1, 0), "side {side}");
        assert_eq!(checks.last, Some((seq, 7)));
    }
    assert_eq!(world.state(Side::B), SyncState::PairedDisabled);

    world.advance(interval_ms);
    let seq = digest_check_seq(&world);
    let now = world.now_ms;
    world.side(Side::A).on_local_digest(now, seq, 7);
    world.side(Side::B).on_local_digest(now, seq, 8);
    world.settle();
    assert!(world.events.iter().any(|(side, e)| *side == Side::B
        && *e
            == SyncEvent::DigestMismatch {
                seq,
                ours: 8,
                theirs: 7
            }));
    // The disabled side leaves the pair and will take the enabled side's state.
    assert_ne!(world.state(Side::B), SyncState::PairedDisabled);
    assert!(world.side(Side::B).needs_state());
    assert_eq!(world.side(Side::B).digest_checks().differed, 1);
}

/// The ordered time B delivered last.
fn last_time_ms(world: &World, side: Side) -> u64 {
    world.delivered[side_index(side)]
        .last()
        .expect("something delivered")
        .time_ms
}

#[test]
fn a_side_that_takes_over_slews_from_the_old_orderers_clock_to_its_own() {
    let mut world = World::new(2, "1.0");
    world.link_up();
    world.advance(5);
    // A's clock runs 5 s ahead of B's: its messages carry its time.
    let skew_ms = 5_000;
    let now = world.now_ms;
    world
        .side(Side::A)
        .on_pg_input(now + skew_ms, PgId(1), 1, 1, input(1));
    world.settle();
    world.advance(10);
    assert!(last_time_ms(&world, Side::B) >= now + skew_ms);
    // A stops; B takes over and goes on from A's time rather than standing still until its
    // own clock gets there.
    world.paused[0] = true;
    while world.state(Side::B) != SyncState::IsolatedEnabled {
        world.advance(1);
        assert!(world.now_ms < now + 2_000, "B never took over");
    }
    let a_last = last_time_ms(&world, Side::B);
    world.advance(1_000);
    let ordered_by_b: Vec<u64> = world.delivered[1]
        .iter()
        .filter(|m| m.epoch.owner == Some(Side::B))
        .map(|m| m.time_ms)
        .collect();
    let first = *ordered_by_b.first().expect("B ordered");
    // B continues A's timeline: A's last time plus the real time since, not B's own clock
    // (which is 5 s behind), and not standing still.
    assert!(
        first >= a_last && first <= a_last + 600,
        "B's first ordered time {first} after A's {a_last}"
    );
    // Then half speed while the difference shrinks: about 500 ms per second.
    let advanced = ordered_by_b.last().unwrap() - first;
    assert!(
        (400..=600).contains(&advanced),
        "ordered time advanced {advanced} ms in 1 s"
    );
    // After twice the difference, ordered time runs with B's clock again.
    world.advance(2 * skew_ms);
    let last = last_time_ms(&world, Side::B);
    assert!(
        last <= world.now_ms && last + 200 >= world.now_ms,
        "ordered time {last} against B's clock {}",
        world.now_ms
    );
    // Never backwards across the whole run.
    let times: Vec<u64> = world.delivered[1].iter().map(|m| m.time_ms).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]));
}

/// Two sides built from configuration pair on the newer configuration: B, whose logger holds a
/// later version, is the source, although A would win every other tie.
#[test]
fn two_sides_built_from_configuration_take_the_newer_configuration() {
    let mut world = World::new(2, "1.0");
    world.side(Side::A).set_built_from_configuration(3);
    world.side(Side::B).set_built_from_configuration(5);
    world.link_up();
    world.advance(5);
    assert_eq!(world.state(Side::B), SyncState::PairedEnabled);
    assert_eq!(world.state(Side::A), SyncState::PairedDisabled);
}

/// Without that, the usual rule stands: side A is the source.
#[test]
fn equal_configurations_leave_side_a_the_source() {
    let mut world = World::new(2, "1.0");
    world.side(Side::A).set_built_from_configuration(4);
    world.side(Side::B).set_built_from_configuration(4);
    world.link_up();
    world.advance(5);
    assert_eq!(world.state(Side::A), SyncState::PairedEnabled);
    assert_eq!(world.state(Side::B), SyncState::PairedDisabled);
}

#[test]
fn a_drop_decision_is_ordered_by_the_enabled_side_and_delivered_on_both() {
    let mut world = World::new(1, "1.0");
    world.link_up();
    world.advance(5);
    let drop = HistoricalDrop {
        range: DroppedRange {
            after: 3,
            through: 9,
        },
        rows_by_table: vec![("Event".into(), 4)],
    };
    let now = world.now_ms;
    assert!(
        world
            .side(Side::B)
            .submit_historical_drop(now, drop.clone())
            .is_err(),
        "a disabled side does not order"
    );
    let seq = world
        .side(Side::A)
        .submit_historical_drop(now, drop.clone())
        .unwrap();
    world.advance(20);
    for side in [Side::A, Side::B] {
        let delivered = world.delivered[side_index(side)]
            .iter()
            .find(|m| m.seq == seq)
            .unwrap_or_else(|| panic!("side {side} did not deliver {seq}"));
        assert_eq!(
            delivered.body,
            Body::HistoricalDrop(drop.clone()),
            "side {side}"
        );
    }
    assert_eq!(world.delivered[0], world.delivered[1]);

    // Each side tells the other of its logger.
    let now = world.now_ms;
    world.side(Side::B).logger_progress(now, false, 7);
    world.advance(5);
    assert_eq!(world.peer_logger, vec![(Side::A, false, 7)]);
}
