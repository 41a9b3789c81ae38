//! rttest's dumps of the router's live state (SPEC section 5): agents, skill groups, call types
//! and the router queue, each a text table with a header line.
//!
//! The dumps only read the router, through its views, in key order, so two sides that hold the
//! same state print the same tables. Times and durations are ordered time, the router's own
//! clock, not the wall clock. Each dump is bounded twice: by rows (`RTTEST_ROWS_MAX`) and by
//! bytes (`RTTEST_REPLY_BYTES_MAX`, so the reply fits in one frame); a dump that stops early
//! says how many rows it left out.

use chrono::DateTime;
use tandem_model::ids::{PeripheralId, SkillGroupId};
use tandem_router::views::{AgentRealTime, RouterQueueEntry};
use tandem_router::Router;

/// The most rows one dump lists.
pub const RTTEST_ROWS_MAX: usize = 10_000;
/// The largest dump: half a frame, leaving room for the frame's own encoding.
pub const RTTEST_REPLY_BYTES_MAX: usize = tandem_mds::frame::FRAME_PAYLOAD_BYTES_MAX / 2;
/// Characters of a name shown; a longer name is cut, so one name cannot widen every row.
const NAME_CHARS_MAX: usize = 32;
/// Skill groups listed per agent or queued call; the rest are counted as "+N".
const SKILL_GROUPS_SHOWN_MAX: usize = 8;
/// Room kept for the line that counts the rows left out.
const FOOTER_BYTES_MAX: usize = 200;

/// The dump commands, in the order the unknown-command message lists them.
pub const DUMP_COMMANDS: [&str; 4] = ["agents", "skill-groups", "call-types", "queue"];

/// Renders a dump command, or `None` when `command` is not one.
pub fn render(command: &str, router: &Router) -> Option<String> {
    Some(match command {
        "agents" => agents(router, RTTEST_ROWS_MAX),
        "skill-groups" => skill_groups(router, RTTEST_ROWS_MAX),
        "call-types" => call_types(router, RTTEST_ROWS_MAX),
        "queue" => queue(router, RTTEST_ROWS_MAX),
        _ => return None,
    })
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Align {
    Left,
    Right,
}

/// A table that lists at most `rows_max` rows, laid out once all are known.
struct TextTable {
    columns: &'static [(&'static str, Align)],
    rows: Vec<Vec<String>>,
    rows_max: usize,
}

impl TextTable {
    fn new(columns: &'static [(&'static str, Align)], rows_max: usize) -> TextTable {
        TextTable {
            columns,
            rows: Vec::new(),
            rows_max,
        }
    }

    fn is_full(&self) -> bool {
        self.rows.len() >= self.rows_max
    }

    fn push(&mut self, row: Vec<String>) {
        assert_eq!(
            row.len(),
            self.columns.len(),
            "a row has one cell per column"
        );
        debug_assert!(!self.is_full());
        self.rows.push(row);
    }

    /// The header, the rows that fit, and, when some did not, a last line counting them out of
    /// `total` (`what` names the rows).
    fn render(mut self, total: usize, what: &str) -> String {
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (title, _))| {
                self.rows
                    .iter()
                    .map(|row| row[i].chars().count())
                    .chain([title.len()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        // A padded line's bytes: its cells' bytes, their padding, the gaps and the newline.
        let line_bytes = |row: &[String]| -> usize {
            row.iter()
                .zip(&widths)
                .map(|(cell, width)| cell.len() + width.saturating_sub(cell.chars().count()))
                .sum::<usize>()
                + 2 * (widths.len() - 1)
                + 1
        };
        let header: Vec<String> = self.columns.iter().map(|(t, _)| t.to_string()).collect();
        let mut bytes = line_bytes(&header) + FOOTER_BYTES_MAX;
        let rows_fit = self
            .rows
            .iter()
            .take_while(|row| {
                bytes += line_bytes(row);
                bytes <= RTTEST_REPLY_BYTES_MAX
            })
            .count();
        self.rows.truncate(rows_fit);

        let mut out = String::new();
        for row in std::iter::once(&header).chain(&self.rows) {
            let mut line = String::new();
            for (i, (cell, (_, align))) in row.iter().zip(self.columns).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                let width = widths[i];
                match align {
                    Align::Left => line.push_str(&format!("{cell:<width$}")),
                    Align::Right => line.push_str(&format!("{cell:>width$}")),
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        let shown = self.rows.len();
        if total > shown {
            out.push_str(&format!(
                "... {} more {what} left out of this dump ({shown} of {total} shown)\n",
                total - shown
            ));
        }
        debug_assert!(out.len() <= RTTEST_REPLY_BYTES_MAX);
        out
    }
}

/// "h:mm:ss".
fn duration(ms: u64) -> String {
    let s = ms / 1000;
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

/// Time of day in UTC, as rttest's other lists show times.
fn time_of_day(ms: u64, millis: bool) -> String {
    let t = DateTime::from_timestamp_millis(ms as i64).unwrap_or_default();
    if millis {
        t.format("%H:%M:%S%.3f").to_string()
    } else {
        t.format("%H:%M:%S").to_string()
    }
}

fn name(text: &str) -> String {
    match text.char_indices().nth(NAME_CHARS_MAX) {
        Some((cut, _)) => format!("{}~", &text[..cut]),
        None if text.is_empty() => "-".into(),
        None => text.to_string(),
    }
}

fn skill_group_list(groups: &[SkillGroupId]) -> String {
    if groups.is_empty() {
        return "-".into();
    }
    let mut out: Vec<String> = groups
        .iter()
        .take(SKILL_GROUPS_SHOWN_MAX)
        .map(|g| g.to_string())
        .collect();
    if groups.len() > SKILL_GROUPS_SHOWN_MAX {
        out.push(format!("+{}", groups.len() - SKILL_GROUPS_SHOWN_MAX));
    }
    out.join(",")
}

fn percent(fraction: Option<f64>) -> String {
    fraction.map_or("-".into(), |f| format!("{:.1}%", f * 100.0))
}

fn seconds(ms: Option<f64>) -> String {
    ms.map_or("-".into(), |ms| format!("{:.1}s", ms / 1000.0))
}

/// The PG of a peripheral, by name.
fn pg_name(router: &Router, peripheral: PeripheralId) -> String {
    let state = router.state();
    state
        .peripherals
        .get(&peripheral)
        .and_then(|p| state.pgs.get(&p.pg))
        .map_or("-".into(), |pg| name(&pg.name))
}

const AGENT_COLUMNS: &[(&str, Align)] = &[
    ("pg", Align::Left),
    ("peripheral", Align::Right),
    ("agent", Align::Right),
    ("login", Align::Left),
    ("name", Align::Left),
    ("state", Align::Left),
    ("reason", Align::Right),
    ("since", Align::Left),
    ("in-state", Align::Right),
    ("skill-groups", Align::Left),
    ("call", Align::Left),
];

fn agent_call(agent: &AgentRealTime) -> String {
    let call = match (agent.call, agent.reserved_for) {
        (Some(call), _) => format!("{}/{}", call.peripheral, call.call_id),
        (None, Some(key)) => format!("reserved for router call {}", key.0),
        (None, None) => return "-".into(),
    };
    match agent.skill_group_id {
        Some(group) => format!("{call} in {group}"),
        None => call,
    }
}

/// Agent_Real_Time: the agents logged on, by skill target id (the agent id).
fn agents(router: &Router, rows_max: usize) -> String {
    let now_ms = router.now_ms();
    let mut table = TextTable::new(AGENT_COLUMNS, rows_max);
    for agent in router.agents_logged_on() {
        if table.is_full() {
            break;
        }
        table.push(vec![
            pg_name(router, agent.peripheral_id),
            agent.peripheral_id.to_string(),
            agent.agent_id.to_string(),
            name(&agent.peripheral_number),
            name(&agent.name),
            agent.agent_state.to_string(),
            agent.reason_code.to_string(),
            time_of_day(agent.state_since_ms, false),
            duration(now_ms.saturating_sub(agent.state_since_ms)),
            skill_group_list(&agent.skill_groups),
            agent_call(&agent),
        ]);
    }
    table.render(router.agents_logged_on_count() as usize, "agents")
}

const SKILL_GROUP_COLUMNS: &[(&str, Align)] = &[
    ("skill-group", Align::Right),
    ("name", Align::Left),
    ("peripheral", Align::Right),
    ("logged-on", Align::Right),
    ("avail", Align::Right),
    ("not-ready", Align::Right),
    ("ready", Align::Right),
    ("talking", Align::Right),
    ("hold", Align::Right),
    ("work", Align::Right),
    ("reserved", Align::Right),
    ("busy-other", Align::Right),
    ("calls-q-now", Align::Right),
    ("router-q-now", Align::Right),
    ("longest-q", Align::Right),
    ("in-progress", Align::Right),
    ("offered-half", Align::Right),
    ("handled-half", Align::Right),
    ("abandoned-half", Align::Right),
    ("sl-half", Align::Right),
    ("sl-today", Align::Right),
];

/// Skill_Group_Real_Time, by skill target id. "ready" is ICM's Ready (logged on and not
/// NotReady); "avail" the agents in the Ready state.
fn skill_groups(router: &Router, rows_max: usize) -> String {
    let mut table = TextTable::new(SKILL_GROUP_COLUMNS, rows_max);
    let state = router.state();
    for id in state.skill_groups.keys() {
        if table.is_full() {
            break;
        }
        let Some(g) = router.skill_group_real_time(*id) else {
            continue;
        };
        let peripheral = state.skill_groups.get(id).map(|c| c.peripheral);
        table.push(vec![
            id.to_string(),
            name(&g.name),
            peripheral.map_or("-".into(), |p| p.to_string()),
            g.logged_on.to_string(),
            g.avail.to_string(),
            g.not_ready.to_string(),
            g.ready.to_string(),
            (g.talking_in + g.talking_out + g.talking_other).to_string(),
            g.hold.to_string(),
            (g.work_ready + g.work_not_ready).to_string(),
            g.reserved.to_string(),
            g.busy_other.to_string(),
            g.calls_q_now.to_string(),
            g.router_calls_q_now.to_string(),
            duration(g.router_longest_call_q_ms),
            g.calls_in_progress.to_string(),
            g.half.counts.calls_offered.to_string(),
            g.half.counts.calls_handled.to_string(),
            g.half.counts.calls_abandoned.to_string(),
            percent(g.half.service_level),
            percent(g.today.service_level),
        ]);
    }
    table.render(state.skill_groups.len(), "skill groups")
}

const CALL_TYPE_COLUMNS: &[(&str, Align)] = &[
    ("call-type", Align::Right),
    ("name", Align::Left),
    ("calls-q-now", Align::Right),
    ("in-progress", Align::Right),
    ("offered-half", Align::Right),
    ("handled-half", Align::Right),
    ("abandoned-half", Align::Right),
    ("sl-half", Align::Right),
    ("offered-today", Align::Right),
    ("handled-today", Align::Right),
    ("abandoned-today", Align::Right),
    ("routed-today", Align::Right),
    ("default-today", Align::Right),
    ("errors-today", Align::Right),
    ("asa-today", Align::Right),
    ("sl-today", Align::Right),
];

/// Call_Type_Real_Time, by call type id.
fn call_types(router: &Router, rows_max: usize) -> String {
    let mut table = TextTable::new(CALL_TYPE_COLUMNS, rows_max);
    let state = router.state();
    for id in state.call_types.keys() {
        if table.is_full() {
            break;
        }
        let Some(c) = router.call_type_real_time(*id) else {
            continue;
        };
        let (half, today) = (&c.half, &c.today);
        table.push(vec![
            c.id.to_string(),
            name(&c.name),
            c.calls_q_now.to_string(),
            c.calls_in_progress.to_string(),
            half.counts.calls_offered.to_string(),
            half.counts.calls_handled.to_string(),
            half.counts.calls_abandoned.to_string(),
            percent(half.service_level),
            today.counts.calls_offered.to_string(),
            today.counts.calls_handled.to_string(),
            today.counts.calls_abandoned.to_string(),
            today.counts.calls_routed.to_string(),
            today.counts.calls_default_routed.to_string(),
            today.counts.route_errors.to_string(),
            seconds(today.asa_ms),
            percent(today.service_level),
        ]);
    }
    table.render(state.call_types.len(), "call types")
}

const QUEUE_COLUMNS: &[(&str, Align)] = &[
    ("router-call", Align::Right),
    ("request", Align::Left),
    ("call-type", Align::Right),
    ("dialed", Align::Left),
    ("priority", Align::Right),
    ("enqueued", Align::Left),
    ("age", Align::Right),
    ("skill-groups", Align::Left),
];

fn request(entry: &RouterQueueEntry) -> String {
    let key = entry.request;
    format!(
        "{}/{}/{}",
        key.routing_client, key.pg_incarnation, key.request_id
    )
}

/// The router queue: one row per queued call, in router call key order, with the skill groups
/// it waits in. `request` is routing client / PG incarnation / request id.
fn queue(router: &Router, rows_max: usize) -> String {
    let now_ms = router.now_ms();
    let mut table = TextTable::new(QUEUE_COLUMNS, rows_max);
    let mut total = 0;
    for entry in router.router_queue() {
        total += 1;
        if table.is_full() {
            continue; // Counted, not shown.
        }
        table.push(vec![
            entry.router_call_key.0.to_string(),
            request(&entry),
            entry
                .call_type
                .map_or("-".into(), |call_type| call_type.to_string()),
            name(&entry.dialed_digits),
            entry.priority.to_string(),
            time_of_day(entry.enqueued_ms, true),
            duration(now_ms.saturating_sub(entry.enqueued_ms)),
            skill_group_list(&entry.skill_groups),
        ]);
    }
    table.render(total, "queued calls")
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_model::config::ContactCenter;
    use tandem_model::domain::AgentState;
    use tandem_model::ids::{AgentId, PeripheralId, RouteRequestKey, RoutingClientId};
    use tandem_model::input::{Input, OrderedInput, RouteRequest};

    const EXAMPLE_CONTACT_CENTER: &str = include_str!("../../../examples/contact-center.toml");
    /// 2026-11-21T10:00:00Z, a half-hour boundary.
    const T0: u64 = 1_795_255_200_000;

    /// Drives a router built from the example contact center with inputs at chosen times.
    struct Harness {
        router: Router,
        seq: u64,
        now_ms: u64,
    }

    impl Harness {
        fn new() -> Harness {
            let cc = ContactCenter::from_toml_str(EXAMPLE_CONTACT_CENTER).unwrap();
            let mut h = Harness {
                router: Router::from_contact_center(&cc, T0).unwrap(),
                seq: 0,
                now_ms: T0,
            };
            for peripheral in [5000, 5001] {
                h.input(Input::PeripheralOnline {
                    peripheral: PeripheralId(peripheral),
                });
            }
            h
        }

        fn input(&mut self, input: Input) {
            self.seq += 1;
            let ordered = OrderedInput {
                time_ms: self.now_ms,
                input,
            };
            self.router.apply(self.seq, &ordered);
            self.router.check_invariants().unwrap();
        }

        fn advance(&mut self, ms: u64) {
            self.now_ms += ms;
            self.input(Input::TimeTick);
        }

        fn login(&mut self, agent: u32, state: AgentState) {
            self.input(Input::AgentLogin {
                agent: AgentId(agent),
                state,
                reason_code: 0,
            });
        }

        fn dump(&self, command: &str) -> String {
            render(command, &self.router).unwrap()
        }
    }

    /// The cells of the row whose first cell is `key`, by column title. Cells are separated by
    /// at least two spaces, and none is empty or holds two spaces itself.
    fn row(text: &str, key: &str) -> Vec<(String, String)> {
        let split = |line: &str| -> Vec<String> {
            line.split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(String::from)
                .collect()
        };
        let mut lines = text.lines();
        let header = split(lines.next().unwrap());
        let cells = lines
            .map(split)
            .find(|cells| cells[0] == key)
            .unwrap_or_else(|| panic!("no row {key} in\n{text}"));
        assert_eq!(cells.len(), header.len(), "row {key} in\n{text}");
        header.into_iter().zip(cells).collect()
    }

    fn cell(row: &[(String, String)], column: &str) -> String {
        row.iter()
            .find(|(title, _)| title == column)
            .unwrap_or_else(|| panic!("no column {column}"))
            .1
            .clone()
    }

    /// Agent 100000 (groups 10000 and 10002, PG1) and 100002 (10002 and 10004) are NotReady and
    /// 100001 (10001, 10003, 10005 on PG2) is Ready; a route request for call type 1000 finds
    /// nobody available in 10000 and queues in 10000 and 10002 at priority 5.
    fn queued_call() -> Harness {
        let mut h = Harness::new();
        h.login(100_000, AgentState::NotReady);
        h.login(100_001, AgentState::Ready);
        h.login(100_002, AgentState::NotReady);
        h.advance(5_000);
        h.input(Input::RouteRequest(RouteRequest {
            key: RouteRequestKey {
                routing_client: RoutingClientId(1),
                pg_incarnation: 1,
                request_id: 7,
            },
            dialed_number: "8000000000".into(),
            ani: "02079460000".into(),
            caller_entered_digits: String::new(),
            call_variables: vec![],
        }));
        h.advance(3_000);
        h
    }

    #[test]
    fn agents_lists_the_agents_logged_on() {
        let h = queued_call();
        let text = h.dump("agents");
        assert!(text.starts_with("pg  "), "{text}");
        assert_eq!(text.lines().count(), 1 + 3, "{text}");
        let ready = row(&text, "PG2");
        assert_eq!(cell(&ready, "agent"), "100001");
        assert_eq!(cell(&ready, "login"), "10001");
        assert_eq!(cell(&ready, "name"), "Agent 2");
        assert_eq!(cell(&ready, "state"), "Ready");
        assert_eq!(cell(&ready, "peripheral"), "5001");
        assert_eq!(cell(&ready, "since"), "10:00:00");
        assert_eq!(cell(&ready, "in-state"), "0:00:08");
        assert_eq!(cell(&ready, "skill-groups"), "10001,10003,10005");
        assert_eq!(cell(&ready, "call"), "-");
        // Agents in key order: 100000 is the first row.
        let first = row(&text, "PG1");
        assert_eq!(cell(&first, "agent"), "100000");
        assert_eq!(cell(&first, "state"), "NotReady");
        assert_eq!(cell(&first, "skill-groups"), "10000,10002");
    }

    #[test]
    fn skill_groups_show_agents_and_the_router_queue() {
        let h = queued_call();
        let text = h.dump("skill-groups");
        assert_eq!(text.lines().count(), 1 + 20, "{text}");
        let sales = row(&text, "10000");
        assert_eq!(cell(&sales, "name"), "Sales_1");
        assert_eq!(cell(&sales, "logged-on"), "1");
        assert_eq!(cell(&sales, "avail"), "0");
        assert_eq!(cell(&sales, "not-ready"), "1");
        assert_eq!(cell(&sales, "ready"), "0");
        assert_eq!(cell(&sales, "router-q-now"), "1");
        assert_eq!(cell(&sales, "longest-q"), "0:00:03");
        assert_eq!(cell(&sales, "sl-half"), "-");
        let billing = row(&text, "10002");
        assert_eq!(cell(&billing, "logged-on"), "2");
        assert_eq!(cell(&billing, "router-q-now"), "1");
        let support = row(&text, "10001");
        assert_eq!(cell(&support, "avail"), "1");
        assert_eq!(cell(&support, "ready"), "1");
        assert_eq!(cell(&support, "router-q-now"), "0");
    }

    #[test]
    fn call_types_count_the_queued_call() {
        let h = queued_call();
        let text = h.dump("call-types");
        assert_eq!(text.lines().count(), 1 + 10, "{text}");
        let sales = row(&text, "1000");
        assert_eq!(cell(&sales, "name"), "CT_Sales_1");
        assert_eq!(cell(&sales, "calls-q-now"), "1");
        assert_eq!(cell(&sales, "offered-half"), "0");
        let other = row(&text, "1001");
        assert_eq!(cell(&other, "calls-q-now"), "0");
    }

    #[test]
    fn queue_lists_the_call_until_an_agent_takes_it() {
        let mut h = queued_call();
        let text = h.dump("queue");
        assert_eq!(text.lines().count(), 1 + 1, "{text}");
        let call = row(&text, "1");
        assert_eq!(cell(&call, "request"), "1/1/7");
        assert_eq!(cell(&call, "call-type"), "1000");
        assert_eq!(cell(&call, "dialed"), "8000000000");
        assert_eq!(cell(&call, "priority"), "5");
        assert_eq!(cell(&call, "enqueued"), "10:00:05.000");
        assert_eq!(cell(&call, "age"), "0:00:03");
        assert_eq!(cell(&call, "skill-groups"), "10000,10002");

        // The agent who becomes available is reserved for the queued call.
        h.input(Input::AgentStateChange {
            agent: AgentId(100_000),
            state: AgentState::Ready,
            reason_code: 0,
        });
        assert_eq!(h.dump("queue").lines().count(), 1);
        let agents = h.dump("agents");
        let reserved = row(&agents, "PG1");
        assert_eq!(cell(&reserved, "state"), "Reserved");
        assert_eq!(
            cell(&reserved, "call"),
            "reserved for router call 1 in 10000"
        );
        assert_eq!(cell(&reserved, "in-state"), "0:00:00");
    }

    #[test]
    fn a_long_dump_says_how_many_rows_it_left_out() {
        let mut h = Harness::new();
        for agent in 100_000..100_010 {
            h.login(agent, AgentState::Ready);
        }
        let text = agents(&h.router, 4);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1 + 4 + 1, "{text}");
        assert_eq!(
            lines[5],
            "... 6 more agents left out of this dump (4 of 10 shown)"
        );
        // The whole dump has no such line.
        assert!(!h.dump("agents").contains("left out"));
    }

    #[test]
    fn an_unknown_command_is_no_dump() {
        let h = Harness::new();
        assert!(render("status", &h.router).is_none());
        assert!(render("agent", &h.router).is_none());
        // An empty queue is its header alone.
        assert_eq!(h.dump("queue").lines().count(), 1);
    }

    #[test]
    fn long_names_and_lists_are_cut() {
        assert_eq!(name(&"x".repeat(40)), format!("{}~", "x".repeat(32)));
        assert_eq!(name(""), "-");
        let groups: Vec<SkillGroupId> = (1..=10).map(SkillGroupId).collect();
        assert_eq!(skill_group_list(&groups), "1,2,3,4,5,6,7,8,+2");
        assert_eq!(duration(3_723_999), "1:02:03");
    }
}
