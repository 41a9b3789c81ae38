//! rttest's answers, rendered by the side in the seed's layout (SPEC section 5).

use chrono::{DateTime, Offset, TimeZone, Utc};
use std::collections::VecDeque;
use tandem_mds::{DigestChecks, Epoch, LogicVersion, Side, SyncState};
use tandem_model::domain::AgentState;

/// One state transfer, as `rttest sync` lists it.
#[derive(Clone, Debug)]
pub struct SyncRecord {
    /// When it finished (wall clock, ms since the Unix epoch).
    pub at_ms: u64,
    /// "(A->B)" or "(B->A)".
    pub direction: String,
    pub bytes: u64,
    pub duration_ms: u64,
    /// How long the sender's core stopped to take its cut.
    pub stall_us: u64,
    /// Whether this side sent it.
    pub sent: bool,
}

pub struct StatusInputs<'a> {
    pub side: Side,
    pub now_ms: u64,
    pub started_ms: u64,
    pub time_zone: &'a str,
    pub sync_state: SyncState,
    pub epoch: Epoch,
    pub held_through: u64,
    pub delivered_through: u64,
    pub peer_connected: bool,
    pub pgs_reachable: &'a [(String, bool)],
    pub state_size_now: u64,
    pub state_size_max: u64,
    pub digest_checks: DigestChecks,
    /// Inputs skipped as quarantined since start, and those the suspect file listed at start.
    pub quarantined_skipped: u64,
    pub quarantined_listed: usize,
    /// Bytes received of the total, while this side receives a state.
    pub transfer_progress: Option<(u64, u64)>,
    pub logic_version: &'a LogicVersion,
    pub history: &'a VecDeque<SyncRecord>,
    pub events: &'a VecDeque<(u64, String)>,
    pub transfer_under_way: bool,
}

/// The build's release date, as rttest shows it.
const RELEASE_DATE: &str = "11/21/2026 00:00:00";

fn utc(ms: u64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms as i64).unwrap_or_default()
}

/// "12/01      20:05:36", as the seed shows times.
fn month_day_time(ms: u64) -> String {
    utc(ms).format("%m/%d      %H:%M:%S").to_string()
}

fn hours_since(now_ms: u64, then_ms: u64) -> String {
    format!(
        "({:.1} hr)",
        now_ms.saturating_sub(then_ms) as f64 / 3_600_000.0
    )
}

/// Digits grouped by thousands, as the seed shows sizes.
fn grouped(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The commands `render` answers; `crate::dumps` answers the dumps of the router's state.
pub const STATUS_COMMANDS: [&str; 3] = ["status", "sync", "events"];

/// Renders an rttest command; an unknown command lists the known ones.
pub fn render(command: &str, s: &StatusInputs) -> String {
    match command {
        "status" => status(s),
        "sync" => sync(s),
        "events" => {
            let mut out = String::new();
            for (at, text) in s.events {
                out.push_str(&format!(
                    "{}  {text}\n",
                    utc(*at).format("%m/%d %H:%M:%S%.3f")
                ));
            }
            out
        }
        other => format!(
            "unknown rttest command {other:?}; known: {}\n",
            STATUS_COMMANDS
                .iter()
                .chain(&crate::dumps::DUMP_COMMANDS)
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn status(s: &StatusInputs) -> String {
    let tz: chrono_tz::Tz = s.time_zone.parse().unwrap_or(chrono_tz::UTC);
    let now = utc(s.now_ms);
    let local = tz.from_utc_datetime(&now.naive_utc());
    let offset_hours = local.offset().fix().local_minus_utc() as f64 / 3600.0;
    let last_sync = s.history.back();
    let mut out = String::new();
    out.push_str(&format!("RTTEST status (side {})\n", s.side));
    out.push_str(&format!(
        "Router version:     tandem {}, logic {}\n",
        env!("CARGO_PKG_VERSION"),
        s.logic_version
    ));
    out.push_str(&format!("Release Date:       {RELEASE_DATE}\n\n"));
    out.push_str(&format!(
        "Current Time:       {}\n",
        month_day_time(s.now_ms)
    ));
    out.push_str(&format!(
        "Local Time:         {} ({offset_hours:+.1} hr) {}\n",
        local.format("%m/%d      %H:%M:%S"),
        s.time_zone
    ));
    out.push_str(&format!(
        "Router Up:          {} {}\n",
        month_day_time(s.started_ms),
        hours_since(s.now_ms, s.started_ms)
    ));
    match last_sync {
        Some(record) => out.push_str(&format!(
            "Router Sync:        {} {} {}\n",
            month_day_time(record.at_ms),
            hours_since(s.now_ms, record.at_ms),
            record.direction
        )),
        None => out.push_str("Router Sync:        never\n"),
    }
    out.push_str(&format!(
        "State size now:     {} bytes\n",
        grouped(s.state_size_now)
    ));
    out.push_str(&format!(
        "State size max:     {}\n\n",
        grouped(s.state_size_max)
    ));
    out.push_str(&format!("Synchronizer:       {}\n", s.sync_state));
    out.push_str(&format!(
        "Epoch:              {} ({})\n",
        s.epoch.number,
        s.epoch.owner.map_or("none".to_string(), |o| o.to_string())
    ));
    out.push_str(&format!(
        "Sequence:           held {} delivered {}\n",
        s.held_through, s.delivered_through
    ));
    match s.digest_checks.last {
        Some((seq, digest)) => out.push_str(&format!(
            "State digest:       {digest:032x} at sequence {seq}\n"
        )),
        None => out.push_str("State digest:       none yet\n"),
    }
    out.push_str(&format!(
        "Digest checks:      {} equal, {} differed\n",
        s.digest_checks.equal, s.digest_checks.differed
    ));
    out.push_str(&format!(
        "Quarantined inputs: {} skipped, {} listed\n",
        s.quarantined_skipped, s.quarantined_listed
    ));
    out.push_str(&format!(
        "Peer:               {}{}\n",
        if s.peer_connected {
            "connected"
        } else {
            "not connected"
        },
        match (s.transfer_under_way, s.transfer_progress) {
            (true, Some((received, total))) => format!(
                ", state transfer under way: {} of {} bytes",
                grouped(received),
                grouped(total)
            ),
            (true, None) => ", state transfer under way".to_string(),
            (false, _) => String::new(),
        }
    ));
    let reachable = s.pgs_reachable.iter().filter(|(_, r)| *r).count();
    out.push_str(&format!(
        "PGs reachable:      {reachable} of {}:",
        s.pgs_reachable.len()
    ));
    for (name, r) in s.pgs_reachable {
        out.push_str(&format!(" {name}={}", if *r { "up" } else { "down" }));
    }
    out.push_str("\n\n");
    out.push_str("side process  OK MH last-state-change     last-heartbeat\n");
    let side = s.side.to_string().to_lowercase();
    let since = month_day_time(s.started_ms);
    let beat = month_day_time(s.now_ms);
    for (process, m, h) in [("mds", " ", "H"), ("router", "M", "H")] {
        out.push_str(&format!(
            "{side}    {process:<8} Y  {m}{h} {since}  {beat}\n"
        ));
    }
    out
}

fn sync(s: &StatusInputs) -> String {
    let mut out =
        String::from("when                  direction  bytes            ms       stall-us  role\n");
    for r in s.history {
        out.push_str(&format!(
            "{}  {:<9}  {:>15}  {:>7}  {:>9}  {}\n",
            utc(r.at_ms).format("%m/%d %H:%M:%S"),
            r.direction,
            grouped(r.bytes),
            r.duration_ms,
            r.stall_us,
            if r.sent { "sent" } else { "received" }
        ));
    }
    out
}

/// The router's one-line summary (`rttest summary`): agents by state, the queue, today's
/// service level and ASA, calls handled, route requests and the state size.
pub fn summary_line(s: &tandem_router::views::Summary) -> String {
    let count = |state: AgentState| s.agents_by_state.get(state.name()).copied().unwrap_or(0);
    let talking = count(AgentState::TalkingIn)
        + count(AgentState::TalkingOut)
        + count(AgentState::TalkingOther)
        + count(AgentState::Hold);
    let wrap = count(AgentState::WorkReady) + count(AgentState::WorkNotReady);
    let percent =
        |v: Option<f64>| v.map_or("   -  ".to_string(), |v| format!("{:5.1}%", v * 100.0));
    format!(
        "agents ready {:4} reserved {:3} talking {:4} wrap-up {:3} not ready {:4}  queued {:4}  SL today {}  ASA {:5.1} s  handled {:6}  route requests {:7}  state {:.2} MB\n",
        count(AgentState::Ready),
        count(AgentState::Reserved),
        talking,
        wrap,
        count(AgentState::NotReady),
        s.router_calls_queued,
        percent(s.service_level_today),
        s.today.asa_ms().unwrap_or(0.0) / 1000.0,
        s.today.calls_handled,
        s.route_requests,
        s.state_size_bytes as f64 / 1e6,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_grouped_by_thousands() {
        assert_eq!(grouped(744_048), "744,048");
        assert_eq!(grouped(12), "12");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }

    /// Renders `command` for a side that has just started, changed by `change`.
    fn render_with(command: &str, change: impl FnOnce(&mut StatusInputs)) -> String {
        let logic_version = LogicVersion {
            build: "test".into(),
            time_zone_data: "2026a".into(),
        };
        let (history, events) = (VecDeque::new(), VecDeque::new());
        let mut inputs = StatusInputs {
            side: Side::A,
            now_ms: 0,
            started_ms: 0,
            time_zone: "UTC",
            sync_state: SyncState::Connecting,
            epoch: Epoch::default(),
            held_through: 0,
            delivered_through: 0,
            peer_connected: false,
            pgs_reachable: &[],
            state_size_now: 0,
            state_size_max: 0,
            digest_checks: DigestChecks::default(),
            quarantined_skipped: 0,
            quarantined_listed: 0,
            transfer_progress: None,
            logic_version: &logic_version,
            history: &history,
            events: &events,
            transfer_under_way: false,
        };
        change(&mut inputs);
        render(command, &inputs)
    }

    #[test]
    fn an_unknown_command_lists_every_command() {
        assert_eq!(
            render_with("agent", |_| {}),
            "unknown rttest command \"agent\"; known: status, sync, events, agents, skill-groups, \
             call-types, queue\n"
        );
    }

    #[test]
    fn status_reports_quarantined_inputs() {
        let text = render_with("status", |s| {
            s.quarantined_skipped = 3;
            s.quarantined_listed = 2;
        });
        assert!(
            text.contains("\nQuarantined inputs: 3 skipped, 2 listed\n"),
            "{text}"
        );
    }
}
