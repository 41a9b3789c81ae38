//! The CallRouter: a pure, deterministic state machine over the ordered stream.
//!
//! `Router::apply(seq, input)` is the only way state changes. It reads no clock (time arrives in
//! each [`OrderedInput`]), does no I/O, draws no random numbers and never iterates in hash order,
//! so two routers fed the same inputs in the same order hold byte-identical state and produce
//! byte-identical outputs. [`Router::digest`] proves it.
//!
//! Bad input is rejected with an ordered event and changes nothing; `apply` never panics on any
//! input. Every piece of per-input work is bounded by the input's own size or by a named limit,
//! never by the size of the whole configuration.

mod agents;
mod calls;
mod configure;
mod families;
mod feed;
pub mod intervals;
mod prefetch;
pub mod records;
mod report;
mod routing;
pub mod rows;
pub mod state;
pub mod table;
mod trie;
pub mod views;

pub use prefetch::{PREFETCH_DISTANCE, PREFETCH_STATE_BYTES_MIN};

pub use feed::FeedChanges;
pub use intervals::INTERVAL_ROWS_PER_TICK_MAX;
pub use records::{ImportError, STATE_FORMAT_VERSION};
pub use state::State;

use chrono_tz::Tz;
use tandem_model::calendar::{periods, TIME_MS_MAX};
use tandem_model::config::{ContactCenter, Settings};
use tandem_model::input::{Input, OrderedInput};
use tandem_model::output::{
    EventCode, HistoricalRecord, HistoricalRow, Output, RouterEvent, Severity,
};
use thiserror::Error;

/// The most timers fired within one input; the rest fire on the next input (a TimeTick comes
/// every 100 ms), so a burst of expiries never makes one input slow.
pub const TIMERS_PER_INPUT_MAX: usize = 4_096;
/// The state-size alarm clears when the size falls below this share of the limit (hysteresis).
pub const STATE_SIZE_ALARM_CLEAR_PERCENT: u64 = 90;
pub const MB: u64 = 1_000_000;
/// From this state size up, the invariant check splits its work over two threads;
/// below it a thread costs more than it saves.
pub const PARALLEL_STATE_BYTES_MIN: u64 = 4 * MB;

/// Runs `a` on a second thread and `b` on this one when `parallel`, both on this one otherwise,
/// and returns both results. Which thread runs what never changes a result.
pub(crate) fn join<A: Send, B>(
    parallel: bool,
    a: impl FnOnce() -> A + Send,
    b: impl FnOnce() -> B,
) -> (A, B) {
    if !parallel {
        let a = a();
        return (a, b());
    }
    std::thread::scope(|scope| {
        let a = scope.spawn(a);
        let b = b();
        (
            a.join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            b,
        )
    })
}

#[derive(Debug, Error)]
pub enum RouterError {
    #[error("invalid configuration: {0}")]
    Config(String),
}

/// Where the outputs of one input are collected, with the ordered context they are stamped with.
pub(crate) struct Ctx<'a> {
    pub seq: u64,
    pub now_ms: u64,
    pub out: &'a mut Vec<Output>,
    historical_index: u32,
}

impl Ctx<'_> {
    pub fn historical(&mut self, row: HistoricalRow) {
        self.out.push(Output::Historical(HistoricalRecord {
            recovery_key: self.seq,
            index: self.historical_index,
            row,
        }));
        self.historical_index += 1;
    }

    pub fn event(&mut self, severity: Severity, code: EventCode, message: String) {
        self.out.push(Output::Event(RouterEvent {
            severity,
            code,
            message,
        }));
    }
}

/// An input the router refused: reported as an ordered event, state unchanged.
#[derive(Debug)]
pub(crate) struct Rejection(pub String);

pub(crate) type Applied = Result<(), Rejection>;

pub(crate) fn reject<T>(message: impl Into<String>) -> Result<T, Rejection> {
    Err(Rejection(message.into()))
}

#[derive(Clone)]
pub struct Router {
    state: State,
    tz: Tz,
    /// `records::configuration_size` and the configuration version it was computed at.
    configuration_size: Option<(u64, u64)>,
}

impl Router {
    /// A router with the given settings and no configuration objects.
    pub fn new(settings: Settings, start_ms: u64) -> Result<Router, RouterError> {
        settings.check().map_err(RouterError::Config)?;
        let tz: Tz = settings.time_zone.parse().map_err(|_| {
            RouterError::Config(format!("unknown time zone {}", settings.time_zone))
        })?;
        let mut state = State::default();
        state.scalars.periods = periods(tz, settings.interval_minutes, start_ms);
        state.scalars.now_ms = start_ms;
        state.scalars.next_router_call_key = 1;
        state.scalars.settings = settings;
        Ok(Router {
            state,
            tz,
            configuration_size: None,
        })
    }

    /// A router loaded with a whole contact center (the cold start from the logger's central DB).
    pub fn from_contact_center(cc: &ContactCenter, start_ms: u64) -> Result<Router, RouterError> {
        cc.validate()
            .map_err(|e| RouterError::Config(e.to_string()))?;
        let mut router = Router::new(cc.settings.clone(), start_ms)?;
        let mut out = Vec::new();
        let mut ctx = Ctx {
            seq: 0,
            now_ms: start_ms,
            out: &mut out,
            historical_index: 0,
        };
        router
            .apply_config_change(&mut ctx, &cc.to_change(), usize::MAX)
            .map_err(|r| RouterError::Config(r.0))?;
        Ok(router)
    }

    /// A router loaded with a whole contact center that is at configuration version
    /// `config_version`, made by the change at `config_recovery_key` (the central database's),
    /// so the next change is numbered after it.
    pub fn from_contact_center_at(
        cc: &ContactCenter,
        config_version: u64,
        config_recovery_key: u64,
        start_ms: u64,
    ) -> Result<Router, RouterError> {
        let mut router = Router::from_contact_center(cc, start_ms)?;
        router.state.scalars.config_version = config_version;
        router.state.scalars.config_recovery_key = config_recovery_key;
        router.configuration_size = None;
        Ok(router)
    }

    /// Rebuilds a router from an imported state.
    pub fn from_state(state: State) -> Result<Router, RouterError> {
        state
            .scalars
            .settings
            .check()
            .map_err(RouterError::Config)?;
        let tz: Tz = state
            .scalars
            .settings
            .time_zone
            .parse()
            .map_err(|_| RouterError::Config("unknown time zone in state".into()))?;
        Ok(Router {
            state,
            tz,
            configuration_size: None,
        })
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    /// A consistent snapshot of the whole state at the last applied sequence number. It costs a
    /// few pointer copies; the live router keeps applying input while the snapshot is exported.
    pub fn snapshot(&self) -> State {
        self.state.clone()
    }

    pub fn last_seq(&self) -> u64 {
        self.state.scalars.last_seq
    }

    pub fn now_ms(&self) -> u64 {
        self.state.scalars.now_ms
    }

    pub fn config_version(&self) -> u64 {
        self.state.scalars.config_version
    }

    /// The RecoveryKey of the change that made the configuration version (0: loaded whole).
    pub fn config_recovery_key(&self) -> u64 {
        self.state.scalars.config_recovery_key
    }

    /// The configuration version and the change that made it.
    pub fn config_stamp(&self) -> tandem_model::config::ConfigStamp {
        tandem_model::config::ConfigStamp {
            version: self.state.scalars.config_version,
            recovery_key: self.state.scalars.config_recovery_key,
        }
    }

    /// Applies one ordered input and returns its outputs.
    pub fn apply(&mut self, seq: u64, input: &OrderedInput) -> Vec<Output> {
        let mut out = Vec::new();
        self.apply_into(seq, input, &mut out);
        out
    }

    /// Applies one ordered input, appending its outputs to `out` (which the caller may reuse).
    pub fn apply_into(&mut self, seq: u64, input: &OrderedInput, out: &mut Vec<Output>) {
        let mut ctx = Ctx {
            seq,
            now_ms: self.state.scalars.now_ms,
            out,
            historical_index: 0,
        };
        if input.time_ms > TIME_MS_MAX {
            self.state.scalars.last_seq = seq;
            self.state.scalars.counters.inputs_rejected += 1;
            ctx.event(
                Severity::Warning,
                EventCode::InputRejected,
                format!(
                    "{} rejected: time {} ms is past the latest ordered time {TIME_MS_MAX} ms",
                    input.input.name(),
                    input.time_ms
                ),
            );
            return;
        }
        // Ordered time never goes backwards; an input stamped earlier keeps the router's time.
        if input.time_ms < self.state.scalars.now_ms {
            ctx.event(
                Severity::Warning,
                EventCode::TimeWentBackwards,
                format!(
                    "input {seq} carries time {} ms, before the router's {} ms; kept {} ms",
                    input.time_ms, self.state.scalars.now_ms, self.state.scalars.now_ms
                ),
            );
        } else {
            ctx.now_ms = input.time_ms;
        }
        self.advance_time(&mut ctx);
        self.fire_timers(&mut ctx);
        if matches!(input.input, Input::TimeTick) {
            self.state.scalars.time_ticks += 1;
            self.flush_intervals(&mut ctx);
            self.sweep_dispatch(&mut ctx);
        }
        let outcome = self.dispatch(&mut ctx, &input.input);
        let scalars = &mut self.state.scalars;
        scalars.last_seq = seq;
        match outcome {
            Ok(()) => scalars.counters.inputs_applied += 1,
            Err(Rejection(message)) => {
                scalars.counters.inputs_rejected += 1;
                ctx.event(
                    Severity::Warning,
                    EventCode::InputRejected,
                    format!("{} rejected: {message}", input.input.name()),
                );
            }
        }
        self.check_state_size(&mut ctx);
        self.state.scalars.counters.historical_records += ctx.historical_index as u64;
    }

    fn advance_time(&mut self, ctx: &mut Ctx) {
        let scalars = &mut self.state.scalars;
        scalars.now_ms = ctx.now_ms;
        if ctx.now_ms >= scalars.periods.next_change_ms {
            let interval_before = scalars.periods.interval_start_ms;
            scalars.periods = periods(self.tz, scalars.settings.interval_minutes, ctx.now_ms);
            if scalars.periods.interval_start_ms != interval_before {
                self.start_interval_flush(interval_before);
            }
        }
    }

    fn dispatch(&mut self, ctx: &mut Ctx, input: &Input) -> Applied {
        match input {
            Input::TimeTick => Ok(()),
            Input::ConfigChange(change) => {
                self.config_change_input(ctx, change);
                Ok(())
            }
            Input::PeripheralOnline { peripheral } => {
                self.peripheral_online(ctx, *peripheral, true)
            }
            Input::PeripheralOffline { peripheral } => {
                self.peripheral_online(ctx, *peripheral, false)
            }
            Input::AgentLogin {
                agent,
                state,
                reason_code,
            } => self.agent_login(ctx, *agent, *state, *reason_code),
            Input::AgentLogout { agent, reason_code } => {
                self.agent_logout(ctx, *agent, *reason_code)
            }
            Input::AgentStateChange {
                agent,
                state,
                reason_code,
            } => self.agent_state_change(ctx, *agent, *state, *reason_code),
            Input::CallArrived {
                call,
                skill_group,
                call_type,
                service,
                router_call_key,
            } => self.call_arrived(
                ctx,
                *call,
                *skill_group,
                *call_type,
                *service,
                *router_call_key,
            ),
            Input::CallOffered {
                call,
                agent,
                skill_group,
            } => self.call_offered(ctx, *call, *agent, *skill_group),
            Input::CallAnswered { call } => self.call_answered(ctx, *call),
            Input::CallHeld { call } => self.call_held(ctx, *call, true),
            Input::CallRetrieved { call } => self.call_held(ctx, *call, false),
            Input::CallTransferred {
                call,
                skill_group,
                after_call,
            } => self.call_transferred(ctx, *call, *skill_group, *after_call),
            Input::CallEnded { call, after_call } => self.call_ended(ctx, *call, *after_call),
            Input::CallAbandoned { call } => self.call_abandoned(ctx, *call),
            Input::CallCleared { call } => self.call_cleared(ctx, *call),
            Input::RouteRequest(request) => self.route_request(ctx, request),
            Input::PeripheralReport(report) => self.peripheral_report(ctx, report),
            Input::RouteRequestEnded { key, reason } => {
                self.route_request_ended(ctx, *key, *reason)
            }
        }
    }

    fn check_state_size(&mut self, ctx: &mut Ctx) {
        let version = self.state.scalars.config_version;
        let configuration_size = match self.configuration_size {
            Some((at_version, size)) if at_version == version => size,
            _ => {
                let size = records::configuration_size(&self.state);
                self.configuration_size = Some((version, size));
                size
            }
        };
        let size = configuration_size + records::live_size(&self.state);
        debug_assert_eq!(size, self.state_size());
        let scalars = &mut self.state.scalars;
        scalars.state_size_max = scalars.state_size_max.max(size);
        let limit = scalars.settings.state_size_alarm_mb as u64 * MB;
        if !scalars.state_size_alarm_raised && size > limit {
            scalars.state_size_alarm_raised = true;
            ctx.event(
                Severity::Info,
                EventCode::StateSizeAlarm,
                format!(
                    "The router state size of {} MB has grown beyond the alarm limit of {} MB",
                    size.div_ceil(MB),
                    limit / MB
                ),
            );
        } else if scalars.state_size_alarm_raised
            && size * 100 < limit * STATE_SIZE_ALARM_CLEAR_PERCENT
        {
            scalars.state_size_alarm_raised = false;
            ctx.event(
                Severity::Info,
                EventCode::StateSizeAlarmCleared,
                format!(
                    "The router state size of {} MB is back below the alarm limit of {} MB",
                    size.div_ceil(MB),
                    limit / MB
                ),
            );
        }
    }

    /// The exact byte size of the state records a state transfer would send now.
    pub fn state_size(&self) -> u64 {
        records::state_size(&self.state)
    }

    pub fn state_size_max(&self) -> u64 {
        self.state.scalars.state_size_max
    }

    /// A fast hash over the canonical state records (xxh3-128 of the export stream).
    pub fn digest(&self) -> u128 {
        records::digest(&self.state)
    }
}
