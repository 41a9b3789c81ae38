//! Regression scenarios for races in the synchronizer: a fine-grained two-side harness where
//! lease answers and peer messages can be held back, so that each race is set up exactly.
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use tandem_mds::lease::{LeaseAnswer, LeaseGranter};
use tandem_mds::{
    Action, Body, Epoch, LogicVersion, Ordered, PeerMessage, Side, Source, SyncEvent, SyncSettings,
    SyncState, Synchronizer,
};
use tandem_model::ids::{AgentId, PgId};
use tandem_model::input::Input;

fn version() -> LogicVersion {
    LogicVersion {
        build: "1.0".into(),
        time_zone_data: "2026a".into(),
    }
}
fn input(n: u64) -> Input {
    Input::AgentLogout {
        agent: AgentId(n as u32),
        reason_code: 0,
    }
}
fn ep(number: u64, owner: Side) -> Epoch {
    Epoch::new(number, owner)
}
fn si(s: Side) -> usize {
    match s {
        Side::A => 0,
        Side::B => 1,
    }
}

struct H {
    now: u64,
    s: [Synchronizer; 2],
    paused: [bool; 2],
    pgs: BTreeMap<PgId, LeaseGranter>,
    reach: [BTreeSet<PgId>; 2],
    link: bool,
    inbox: [VecDeque<PeerMessage>; 2],
    /// Hold lease requests of this side instead of answering them at once.
    defer_leases: [bool; 2],
    pending_leases: VecDeque<(usize, Epoch, u64)>,
    /// Hold peer messages (do not deliver inboxes) while set.
    hold_wire: bool,
    delivered: [Vec<Ordered>; 2],
    acks: Vec<(Side, PgId, u64, u64)>,
    events: Vec<(Side, SyncEvent)>,
}

impl H {
    fn new(pgs: u32, epoch: Epoch, held: u64) -> H {
        let ids: BTreeSet<PgId> = (1..=pgs).map(PgId).collect();
        let mk = |side| {
            Synchronizer::new(
                SyncSettings::new(side, version(), ids.clone()),
                epoch,
                held,
                0,
                false,
                0,
            )
            .unwrap()
        };
        let mut h = H {
            now: 0,
            s: [mk(Side::A), mk(Side::B)],
            paused: [false; 2],
            pgs: ids.iter().map(|&p| (p, LeaseGranter::new())).collect(),
            reach: [ids.clone(), ids.clone()],
            link: false,
            inbox: [VecDeque::new(), VecDeque::new()],
            defer_leases: [false; 2],
            pending_leases: VecDeque::new(),
            hold_wire: false,
            delivered: [vec![], vec![]],
            acks: vec![],
            events: vec![],
        };
        for i in 0..2 {
            for pg in h.reach[i].clone() {
                h.s[i].pg_reachable(0, pg, true);
            }
        }
        h
    }
    fn set_reach(&mut self, side: Side, pg: PgId, r: bool) {
        let i = si(side);
        if r {
            self.reach[i].insert(pg);
        } else {
            self.reach[i].remove(&pg);
        }
        let now = self.now;
        self.s[i].pg_reachable(now, pg, r);
        self.settle();
    }
    fn answer_lease(&mut self, i: usize, epoch: Epoch, requested: u64) {
        let now = self.now;
        for pg in self.reach[i].clone() {
            match self.pgs.get_mut(&pg).unwrap().request(now, epoch, 800) {
                LeaseAnswer::Granted => self.s[i].on_lease_granted(now, pg, epoch, requested),
                LeaseAnswer::Refused { granted } => self.s[i].on_lease_refused(now, granted),
            }
        }
    }
    fn grant_pending(&mut self) {
        while let Some((i, e, r)) = self.pending_leases.pop_front() {
            self.answer_lease(i, e, r);
        }
        self.settle();
    }
    fn pump(&mut self, i: usize) -> bool {
        let mut any = false;
        let side = if i == 0 { Side::A } else { Side::B };
        while let Some(a) = self.s[i].poll() {
            any = true;
            let now = self.now;
            match a {
                Action::SendPeer(m) if self.link => self.inbox[1 - i].push_back(m),
                Action::SendPeer(_) => {}
                Action::Deliver(m) => self.delivered[i].push(m),
                Action::AckPg {
                    pg,
                    incarnation,
                    input_no,
                    ..
                } => self.acks.push((side, pg, incarnation, input_no)),
                Action::RequestLease {
                    epoch,
                    requested_ms,
                } => {
                    if self.defer_leases[i] {
                        self.pending_leases.push_back((i, epoch, requested_ms));
                    } else {
                        self.answer_lease(i, epoch, requested_ms);
                    }
                }
                Action::TestOtherSide => {
                    for pg in self.reach[i].clone() {
                        let en = self.pgs[&pg].other_side_enabled(now, side);
                        self.s[i].on_test_other_side(now, pg, en);
                    }
                }
                Action::Event(e) => self.events.push((side, e)),
                _ => {}
            }
        }
        any
    }
    fn settle(&mut self) {
        loop {
            let mut any = false;
            for i in 0..2 {
                if !self.paused[i] {
                    any |= self.pump(i);
                }
            }
            if !self.hold_wire {
                for i in 0..2 {
                    if self.paused[i] {
                        continue;
                    }
                    while let Some(m) = self.inbox[i].pop_front() {
                        any = true;
                        let now = self.now;
                        self.s[i].on_peer_message(now, m);
                    }
                }
            }
            if !any {
                return;
            }
        }
    }
    fn advance(&mut self, ms: u64) {
        for _ in 0..ms {
            self.now += 1;
            for i in 0..2 {
                if !self.paused[i] {
                    let now = self.now;
                    self.s[i].tick(now);
                }
            }
            self.settle();
        }
    }
    fn link_up(&mut self) {
        self.link = true;
        let now = self.now;
        self.s[0].peer_link_up(now);
        self.s[1].peer_link_up(now);
        self.settle();
    }
    fn link_down(&mut self) {
        self.link = false;
        self.inbox = [VecDeque::new(), VecDeque::new()];
        let now = self.now;
        self.s[0].peer_link_down(now);
        self.s[1].peer_link_down(now);
        self.settle();
    }
    fn st(&self, s: Side) -> SyncState {
        self.s[si(s)].state()
    }
    /// Two different messages under one sequence number, across both sides.
    fn conflicting_seq(&self) -> Option<(u64, Ordered, Ordered)> {
        let mut by: BTreeMap<u64, &Ordered> = BTreeMap::new();
        for d in &self.delivered {
            for m in d {
                let f = by.entry(m.seq).or_insert(m);
                if *f != m {
                    return Some((m.seq, (*f).clone(), m.clone()));
                }
            }
        }
        None
    }
}

fn pg_inputs(h: &H, side: Side) -> Vec<(PgId, u64, u64)> {
    h.delivered[si(side)]
        .iter()
        .filter_map(|m| m.pg_input().map(|p| (p.pg, p.incarnation, p.input_no)))
        .collect()
}

/// Regression: pairing bumps the epoch without the PGs while the other side is being granted the same
/// epoch number by the PGs: both order in epoch 2, and later the same seq is delivered with two
/// different messages.
#[test]
fn pairing_bump_and_pg_grant_share_an_epoch_number() {
    let held = (1u64 << 40) | 5;
    let mut h = H::new(1, ep(1, Side::B), held);
    // A reaches no PG; B reaches PG 1.
    h.set_reach(Side::A, PgId(1), false);
    h.defer_leases[1] = true;
    // Both start Connecting; after 1 s A is IsolatedDisabled, B Testing with a lease request out.
    h.advance(1_000);
    assert_eq!(h.st(Side::A), SyncState::IsolatedDisabled);
    assert_eq!(h.st(Side::B), SyncState::Testing);
    assert!(!h.pending_leases.is_empty());
    // The private link comes up while B's lease request for {2,B} is in flight.
    h.hold_wire = true;
    h.link_up(); // both Hellos queued, none delivered
                 // A handles B's Hello first: in sync, A is the source (tie -> A), A does not own {1,B}: bumps to {2,A}.
    let m = h.inbox[0].pop_front().unwrap();
    let now = h.now;
    h.s[0].on_peer_message(now, m);
    // PG grants B {2,B}; then B handles A's Hello.
    h.grant_pending();
    h.hold_wire = false;
    h.defer_leases[1] = false;
    h.settle();
    eprintln!(
        "A {} {:?} / B {} {:?}",
        h.st(Side::A),
        h.s[0].epoch(),
        h.st(Side::B),
        h.s[1].epoch()
    );
    // B's fresh Hello as it takes over fences A at once: only B orders.
    assert_eq!(h.st(Side::A), SyncState::IsolatedDisabled);
    assert_eq!(h.st(Side::B), SyncState::IsolatedEnabled);
    assert_eq!(h.s[0].epoch(), h.s[1].epoch());
    let now = h.now;
    h.s[1].on_pg_input(now, PgId(1), 1, 1, input(1)); // B orders a PG input at (2<<40)|2
    h.settle();
    h.advance(300);
    eprintln!(
        "after 300ms: A {} held {:x} / B {} held {:x}",
        h.st(Side::A),
        h.s[0].held_through(),
        h.st(Side::B),
        h.s[1].held_through()
    );
    // Later: the link drops, B loses its PG, A regains it and takes over in epoch 3.
    h.link_down();
    h.set_reach(Side::B, PgId(1), false);
    h.set_reach(Side::A, PgId(1), true);
    h.advance(4_000);
    eprintln!(
        "A {} {:?} / B {} {:?}",
        h.st(Side::A),
        h.s[0].epoch(),
        h.st(Side::B),
        h.s[1].epoch()
    );
    eprintln!(
        "A delivered {:?}",
        h.delivered[0].iter().map(|m| m.seq).collect::<Vec<_>>()
    );
    let c = h.conflicting_seq();
    assert!(
        c.is_none(),
        "two different messages delivered at one sequence: {c:#?}"
    );
}

/// Regression: an IsolatedEnabled side that was paused past its leases orders, delivers and acks a PG
/// input on wake-up before its next tick, while the other side is IsolatedEnabled in a higher
/// epoch under a live lease.
#[test]
fn woken_side_orders_on_pg_input_without_checking_its_leases() {
    let mut h = H::new(1, ep(1, Side::A), 0);
    h.link_up();
    h.advance(5);
    assert_eq!(h.st(Side::A), SyncState::PairedEnabled);
    h.link = false; // silent cut
    h.advance(1_000);
    assert_eq!(h.st(Side::A), SyncState::IsolatedEnabled);
    assert_eq!(h.st(Side::B), SyncState::IsolatedDisabled);
    h.paused[0] = true; // SIGSTOP A
    h.advance(3_000);
    assert_eq!(h.st(Side::B), SyncState::IsolatedEnabled);
    // A paired in epoch 2 (a started process never orders in its persisted epoch 1), so B
    // takes over in epoch 3.
    assert_eq!(h.s[0].epoch(), ep(2, Side::A));
    assert_eq!(h.s[1].epoch(), ep(3, Side::B));
    // SIGCONT: the first event A handles is a PG input queued during the pause.
    h.paused[0] = false;
    let now = h.now;
    h.s[0].on_pg_input(now, PgId(1), 1, 1, input(1));
    h.settle();
    assert!(
        pg_inputs(&h, Side::A).is_empty(),
        "A (epoch 1, leases lapsed) delivered {:?} while B is enabled in epoch 2; acks {:?}",
        pg_inputs(&h, Side::A),
        h.acks
    );
}

/// Regression: after a PG restart (new incarnation), the delivery of the old incarnation's inputs
/// overwrites the new cursor's delivered_through; a duplicate of the new incarnation's input 1 is
/// then acknowledged through input 3, which was never sent.
#[test]
fn new_incarnation_acked_before_delivery() {
    let mut h = H::new(1, ep(1, Side::A), 0);
    h.link_up();
    h.advance(5);
    let now = h.now;
    for n in 1..=3 {
        h.s[0].on_pg_input(now, PgId(1), 1, n, input(n));
    }
    h.settle();
    let inc1_through = h.s[0].held_through();
    // The PG restarts; its first input of incarnation 2 reaches A before B's ack of inc 1 does.
    h.s[0].on_pg_input(now, PgId(1), 2, 1, input(100));
    h.settle();
    // B's ack (it holds everything; an ack of the earlier point is what a delayed batch says).
    h.s[0].on_peer_message(
        now,
        PeerMessage::Ack {
            held_through: inc1_through,
        },
    );
    h.settle();
    h.acks.clear();
    // The PG resends its unacknowledged input 1 of incarnation 2.
    h.s[0].on_pg_input(now, PgId(1), 2, 1, input(100));
    h.settle();
    let delivered = pg_inputs(&h, Side::A);
    eprintln!("delivered on A: {delivered:?}; acks now: {:?}", h.acks);
    for &(_, pg, inc, no) in &h.acks {
        assert!(
            delivered
                .iter()
                .any(|&(p, i, n)| p == pg && i == inc && n >= no),
            "ack of ({pg}, inc {inc}, #{no}) before it was delivered"
        );
    }
}

/// Regression: a Hello from a peer that needs state does not take a PairedEnabled side out of
/// PairedEnabled: it keeps ordering, never delivers, and fills its log.
#[test]
fn paired_enabled_stuck_after_peer_restart_reconnects() {
    let mut h = H::new(1, ep(1, Side::A), 0);
    h.link_up();
    h.advance(5);
    // B is killed and restarts without state; its new connection reaches A before A's heartbeat
    // timeout closed the old one (the shell reports a new link).
    h.s[1] = Synchronizer::new(
        SyncSettings::new(Side::B, version(), [PgId(1)].into()),
        ep(1, Side::A),
        0,
        0,
        true,
        h.now,
    )
    .unwrap();
    let now = h.now;
    h.s[1].pg_reachable(now, PgId(1), true);
    h.link_up();
    let before = pg_inputs(&h, Side::A).len();
    let now = h.now;
    h.s[0].on_pg_input(now, PgId(1), 1, 1, input(1));
    h.advance(5_000);
    eprintln!(
        "A {} B {}; A delivered {} new PG inputs",
        h.st(Side::A),
        h.st(Side::B),
        pg_inputs(&h, Side::A).len() - before
    );
    assert!(pg_inputs(&h, Side::A).len() > before, "A never delivers");
}

/// Regression: a corrupt peer Ordered message sets a PG cursor to u64::MAX; when this side later becomes
/// enabled, the next input from that PG overflows (panic in debug, wrap in release).
#[test]
fn peer_message_leads_to_overflow() {
    let mut h = H::new(1, ep(1, Side::A), 0);
    h.link_up();
    h.advance(5);
    // The epoch A paired in (a new one: a started process never orders in its persisted one).
    let epoch = h.s[0].epoch();
    let seq = tandem_mds::next_seq(h.s[1].held_through(), epoch).unwrap();
    let now = h.now;
    h.s[1].on_peer_message(
        now,
        PeerMessage::Ordered {
            messages: vec![Ordered {
                seq,
                epoch,
                time_ms: now,
                body: Body::Input {
                    source: Source::Pg {
                        pg: PgId(1),
                        incarnation: 1,
                        input_no: u64::MAX,
                    },
                    input: input(1),
                },
            }],
        },
    );
    h.settle();
    // A fails; B takes over.
    h.paused[0] = true;
    h.link = false;
    h.advance(3_000);
    assert_eq!(h.st(Side::B), SyncState::IsolatedEnabled);
    let now = h.now;
    h.s[1].on_pg_input(now, PgId(1), 1, 5, input(5));
}
