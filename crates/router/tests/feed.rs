//! The real-time feed: the rows drained at each tick, applied to the rows at an earlier tick,
//! give exactly the router's rows, across To5 steps and a half-hour boundary, with and without
//! input; and two routers that apply the same inputs drain the same rows (a state rebuilt from
//! its records too, once it has drained every row).

use std::collections::BTreeMap;
use tandem_model::config::{ConfigChange, ConfigObject, ConfigOp};
use tandem_model::feed::{FeedKey, FeedRow, FeedTable};
use tandem_model::generate::{generate, GenerateParams};
use tandem_model::input::{Input, OrderedInput};
use tandem_pg::{LoadParams, TrafficSim};
use tandem_router::FeedChanges;
use tandem_router::{records, Router};

/// 2026-11-21T10:00Z, a half-hour boundary.
const HALF_HOUR_BOUNDARY_MS: u64 = 1_795_255_200_000;
const TICK_MS: u64 = 100;

type Image = BTreeMap<FeedKey, FeedRow>;

fn image(router: &Router) -> Image {
    router.feed_rows().map(|row| (row.key(), row)).collect()
}

/// A router and its simulated PGs, run tick by tick.
struct Loop {
    router: Router,
    sim: TrafficSim,
    seq: u64,
    now_ms: u64,
    /// Every input applied, when recording.
    recorded: Option<Vec<OrderedInput>>,
}

impl Loop {
    fn new(start_ms: u64) -> Loop {
        Loop::with_agents(300, start_ms)
    }

    fn with_agents(agents: u32, start_ms: u64) -> Loop {
        let cc = generate(&GenerateParams {
            agents,
            skill_groups: 12,
            call_types: 6,
            peripherals: 2,
            ..GenerateParams::default()
        });
        let mut router = Router::from_contact_center(&cc, start_ms).unwrap();
        router.follow_feed_changes(true);
        let cps = f64::from(agents) / 10.0;
        let sim = TrafficSim::new(&cc, LoadParams::for_occupancy(agents, cps, 0.85), start_ms);
        Loop {
            router,
            sim,
            seq: 0,
            now_ms: start_ms,
            recorded: None,
        }
    }

    /// Drains the rows changed since the tick at `since_ms`.
    fn drain(&mut self, since_ms: u64) -> FeedChanges {
        self.router.feed_changes(Some(since_ms))
    }

    fn apply(&mut self, input: OrderedInput) {
        if let Some(recorded) = &mut self.recorded {
            recorded.push(input.clone());
        }
        self.seq += 1;
        for output in self.router.apply(self.seq, &input) {
            self.sim.on_output(input.time_ms, &output);
        }
    }

    /// The next tick with no other input: only ordered time moves.
    fn quiet_tick(&mut self) {
        self.now_ms += TICK_MS;
        self.apply(OrderedInput {
            time_ms: self.now_ms,
            input: Input::TimeTick,
        });
    }

    /// Applies the simulator's inputs up to the next tick, then the tick.
    fn next_tick(&mut self) {
        let tick_ms = self.now_ms + TICK_MS;
        let mut batch = Vec::new();
        while self.sim.next_due_ms().is_some_and(|due| due < tick_ms) {
            let due = self.sim.next_due_ms().unwrap();
            self.sim.poll(due, &mut batch);
            for input in batch.drain(..) {
                self.apply(input);
            }
        }
        self.now_ms = tick_ms;
        self.apply(OrderedInput {
            time_ms: tick_ms,
            input: Input::TimeTick,
        });
    }
}

/// Applies drained rows to an image; returns the keys that changed it.
fn apply_changes(image: &mut Image, changes: FeedChanges) -> Vec<FeedKey> {
    let keys: Vec<FeedKey> = changes.rows.iter().map(|(key, _)| *key).collect();
    assert!(
        keys.windows(2).all(|w| w[0] < w[1]),
        "rows out of key order"
    );
    if changes.complete {
        image.clear();
    }
    let mut changed = Vec::new();
    for (key, row) in changes.rows {
        let before = match row {
            Some(row) => image.insert(key, row.clone()).filter(|old| *old == row),
            None => image.remove(&key),
        };
        if before.is_none() {
            changed.push(key);
        }
    }
    changed
}

#[test]
fn drained_rows_applied_to_the_rows_at_a_tick_give_the_rows_at_every_later_tick() {
    // Start 90 s before a half hour, so that the run crosses To5 steps and the boundary.
    let mut l = Loop::new(HALF_HOUR_BOUNDARY_MS - 90_000);
    l.next_tick();
    let mut kept = image(&l.router);
    let _ = l.router.feed_changes(None);
    let mut since_ms = l.now_ms;
    let mut ticks = 0;
    let mut seen = BTreeMap::<FeedTable, usize>::new();
    let mut reset_at_boundary = 0;
    let first_frame = l.router.feed_frame_number();
    while l.now_ms < HALF_HOUR_BOUNDARY_MS + 60_000 {
        l.next_tick();
        let changes = l.drain(since_ms);
        since_ms = l.now_ms;
        assert!(!changes.complete);
        if l.now_ms == HALF_HOUR_BOUNDARY_MS {
            // Every member row with Half counts before the boundary is drained at it, whether
            // or not the agent did anything.
            let drained: Vec<FeedKey> = changes.rows.iter().map(|(key, _)| *key).collect();
            let counted: Vec<FeedKey> = kept
                .values()
                .filter_map(|row| match row {
                    FeedRow::AgentSkillGroup(m) if m.half != Default::default() => Some(row.key()),
                    _ => None,
                })
                .collect();
            for key in &counted {
                assert!(
                    drained.binary_search(key).is_ok(),
                    "{key:?} not drained at the half hour"
                );
            }
            reset_at_boundary = counted.len();
        }
        for key in apply_changes(&mut kept, changes) {
            *seen.entry(key.table()).or_default() += 1;
        }
        ticks += 1;
        // Comparing every row is the expensive part; every tenth tick and the boundary's.
        if ticks % 10 == 0 || l.now_ms.abs_diff(HALF_HOUR_BOUNDARY_MS) <= TICK_MS {
            assert_eq!(kept, image(&l.router), "image differs at tick {}", l.now_ms);
        }
    }
    assert_eq!(kept, image(&l.router));
    assert_eq!(l.router.feed_frame_number(), first_frame + ticks);
    // The load changed every table (the router queue too, at 85% occupancy; services only
    // through configuration, as the simulator gives its calls none), and the half hour reset
    // the member rows that had counts.
    for table in FeedTable::ALL
        .into_iter()
        .filter(|t| *t != FeedTable::ServiceRealTime)
    {
        assert!(
            seen.get(&table).copied().unwrap_or(0) > 0,
            "no {table:?} row changed"
        );
    }
    assert!(
        reset_at_boundary > 100,
        "{reset_at_boundary} member rows reset at the half hour"
    );
}

/// With no input at all, rows change only as their families roll: To5 buckets expire every
/// ten seconds, and at the half hour the Half counts reset, including in member rows that the
/// interval flush reaches only ticks later (more rows than it takes per tick).
#[test]
fn rolling_families_change_rows_with_no_input() {
    let mut l = Loop::with_agents(1_500, HALF_HOUR_BOUNDARY_MS - 5 * 60_000);
    while l.now_ms < HALF_HOUR_BOUNDARY_MS - 30_000 {
        l.next_tick();
    }
    let members = l
        .router
        .feed_rows()
        .filter(|r| r.table() == FeedTable::AgentSkillGroupRealTime)
        .count();
    assert!(
        members > tandem_router::INTERVAL_ROWS_PER_TICK_MAX,
        "{members} member rows fit one tick's interval flush"
    );
    let mut kept = image(&l.router);
    let _ = l.router.feed_changes(None);
    let mut since_ms = l.now_ms;
    let mut changed_at = Vec::new();
    while l.now_ms < HALF_HOUR_BOUNDARY_MS + 20_000 {
        l.quiet_tick();
        let changes = l.drain(since_ms);
        since_ms = l.now_ms;
        if !apply_changes(&mut kept, changes).is_empty() {
            changed_at.push(l.now_ms);
        }
        assert_eq!(kept, image(&l.router), "image differs at {}", l.now_ms);
    }
    // Rows changed at To5 steps (timers that fire on ticks change rows between them too).
    let steps = changed_at.iter().filter(|t| *t % 10_000 == 0).count();
    assert!(steps >= 4, "rows changed at {changed_at:?}");
}

/// A side that took its state by transfer drains every row at its first tick, then the same
/// rows as the side it took the state from, tick after tick.
#[test]
fn a_rebuilt_state_drains_what_the_original_drains() {
    let mut l = Loop::new(HALF_HOUR_BOUNDARY_MS - 30 * 60_000);
    for _ in 0..300 {
        l.next_tick();
    }
    let mut since_ms = l.now_ms;
    let _ = l.drain(since_ms);
    let mut rebuilt =
        Router::from_state(records::import(&records::export(&l.router.snapshot())).unwrap())
            .unwrap();
    rebuilt.follow_feed_changes(true);
    let first = rebuilt.feed_changes(None);
    assert!(first.complete);
    assert_eq!(first.rows.len(), image(&l.router).len());
    l.recorded = Some(Vec::new());
    let mut seq = l.seq;
    for _ in 0..100 {
        l.next_tick();
        for input in l.recorded.as_mut().unwrap().drain(..) {
            seq += 1;
            rebuilt.apply(seq, &input);
        }
        let original = l.drain(since_ms);
        assert_eq!(rebuilt.feed_changes(Some(since_ms)), original);
        since_ms = l.now_ms;
    }
    assert_eq!(rebuilt.digest(), l.router.digest());
}

#[test]
fn a_configuration_change_shows_in_the_next_frame() {
    let mut l = Loop::new(HALF_HOUR_BOUNDARY_MS - 30 * 60_000);
    for _ in 0..100 {
        l.next_tick();
    }
    let since_ms = l.now_ms;
    let _ = l.drain(since_ms);
    let prev = l.router.clone();
    // A new skill group adds a row, and a changed service-level type changes a row's figures.
    let group = prev
        .skill_groups_real_time()
        .into_iter()
        .find(|g| g.today.counts.service_level_calls_offered > 0)
        .expect("a skill group with calls");
    let config = prev.contact_center();
    let mut changed = config
        .skill_groups
        .iter()
        .find(|g| g.id == group.skill_group_id)
        .unwrap()
        .clone();
    changed.service_level_type = match changed.service_level_type {
        tandem_model::domain::ServiceLevelType::IgnoreAbandoned => {
            tandem_model::domain::ServiceLevelType::AbandonedCountAgainst
        }
        _ => tandem_model::domain::ServiceLevelType::IgnoreAbandoned,
    };
    let mut service = config.services[0].clone();
    service.id =
        tandem_model::ids::ServiceId(config.services.iter().map(|s| s.id.0).max().unwrap() + 1);
    service.name = "Added service".into();
    let mut added = changed.clone();
    added.id = tandem_model::ids::SkillGroupId(
        config.skill_groups.iter().map(|g| g.id.0).max().unwrap() + 1,
    );
    added.name = "Added".into();
    l.apply(OrderedInput {
        time_ms: l.now_ms,
        input: Input::ConfigChange(ConfigChange {
            ops: vec![
                ConfigOp::Upsert(ConfigObject::SkillGroup(changed.clone())),
                ConfigOp::Upsert(ConfigObject::SkillGroup(added.clone())),
                ConfigOp::Upsert(ConfigObject::Service(service.clone())),
            ],
            author: String::new(),
        }),
    });
    l.next_tick();
    let changes = l.drain(since_ms);
    let keys: Vec<FeedKey> = changes.rows.iter().map(|(key, _)| *key).collect();
    assert!(keys.contains(&FeedKey::SkillGroup(changed.id)));
    assert!(keys.contains(&FeedKey::SkillGroup(added.id)));
    assert!(keys.contains(&FeedKey::Service(service.id)));
}
