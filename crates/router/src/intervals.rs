//! The interval cursor: when a historical interval ends, every skill group, call type and agent
//! skill group row must yield its `*_Interval` row. Rows touched by events do so lazily on their
//! next touch; the cursor visits the rest, at most `INTERVAL_ROWS_PER_TICK_MAX` rows per TimeTick,
//! so an interval boundary never makes one input do work proportional to the configuration.

use crate::{Ctx, Router};
use tandem_model::ids::*;
use tandem_model::realtime::AgentCounts;

/// Rows the cursor visits per TimeTick. At 10 ticks a second it visits 20,000 rows a second: a
/// 100,000-agent configuration with 300,000 member rows is flushed within about 16 s of a
/// 5-minute interval.
pub const INTERVAL_ROWS_PER_TICK_MAX: usize = 2_000;

impl Router {
    pub(crate) fn start_interval_flush(&mut self, finished_interval_start_ms: u64) {
        let cursor = &mut self.state.scalars.interval_cursor;
        cursor.flushing_start_ms = finished_interval_start_ms;
        cursor.table = 0;
        cursor.after_skill_group = None;
        cursor.after_call_type = None;
        cursor.after_member = None;
    }

    pub(crate) fn flush_intervals(&mut self, ctx: &mut Ctx) {
        let mut budget = INTERVAL_ROWS_PER_TICK_MAX;
        while budget > 0 && self.state.scalars.interval_cursor.flushing_start_ms != 0 {
            let cursor = self.state.scalars.interval_cursor;
            match cursor.table {
                0 => {
                    let next = self
                        .state
                        .skill_group_rt
                        .next_after(cursor.after_skill_group.as_ref())
                        .map(|(k, _)| *k);
                    match next {
                        Some(group) => {
                            // Touching with no change rolls the row and emits its finished interval.
                            self.touch_skill_group(ctx, group, None, |_| {});
                            self.state.scalars.interval_cursor.after_skill_group = Some(group);
                        }
                        None => self.state.scalars.interval_cursor.table = 1,
                    }
                }
                1 => {
                    let next = self
                        .state
                        .call_type_rt
                        .next_after(cursor.after_call_type.as_ref())
                        .map(|(k, _)| *k);
                    match next {
                        Some(call_type) => {
                            self.touch_call_type(ctx, call_type, None, |_| {});
                            self.state.scalars.interval_cursor.after_call_type = Some(call_type);
                        }
                        None => self.state.scalars.interval_cursor.table = 2,
                    }
                }
                2 => {
                    let next: Option<(AgentId, SkillGroupId)> = self
                        .state
                        .agent_skill_group_rt
                        .next_after(cursor.after_member.as_ref())
                        .map(|(k, _)| *k);
                    match next {
                        Some((agent, group)) => {
                            self.touch_agent_skill_group(
                                ctx,
                                agent,
                                group,
                                &AgentCounts::default(),
                            );
                            self.state.scalars.interval_cursor.after_member = Some((agent, group));
                        }
                        None => self.state.scalars.interval_cursor.flushing_start_ms = 0,
                    }
                }
                _ => self.state.scalars.interval_cursor.flushing_start_ms = 0,
            }
            budget -= 1;
        }
    }
}
