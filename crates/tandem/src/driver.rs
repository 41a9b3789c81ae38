//! The in-process closed loop: one router fed by the traffic simulator, with a TimeTick every
//! `tick_ms` of ordered time. The demo and the benchmarks run it; it is also the reference for
//! how the duplex sides drive a router (inputs in order, outputs fed back to their PGs).

use tandem_model::input::{Input, OrderedInput};
use tandem_model::output::Output;
use tandem_pg::TrafficSim;
use tandem_router::Router;

/// ICM's time message came every 500 ms; tandem's TimeTick every 100 ms.
pub const TICK_MS_DEFAULT: u64 = 100;

pub struct ClosedLoop {
    pub router: Router,
    pub sim: TrafficSim,
    pub seq: u64,
    pub now_ms: u64,
    pub tick_ms: u64,
    next_tick_ms: u64,
    batch: Vec<OrderedInput>,
    outputs: Vec<Output>,
    /// Every input applied, when recording is on (benchmarks replay them).
    pub recorded: Option<Vec<OrderedInput>>,
}

impl ClosedLoop {
    pub fn new(router: Router, sim: TrafficSim, start_ms: u64, tick_ms: u64) -> ClosedLoop {
        ClosedLoop {
            router,
            sim,
            seq: 0,
            now_ms: start_ms,
            tick_ms,
            next_tick_ms: start_ms + tick_ms,
            batch: Vec::new(),
            outputs: Vec::new(),
            recorded: None,
        }
    }

    fn apply(&mut self, input: OrderedInput, on_output: &mut impl FnMut(&Output)) {
        self.seq += 1;
        self.outputs.clear();
        self.router.apply_into(self.seq, &input, &mut self.outputs);
        for output in &self.outputs {
            self.sim.on_output(input.time_ms, output);
            on_output(output);
        }
        if let Some(recorded) = &mut self.recorded {
            recorded.push(input);
        }
    }

    /// Runs every simulator input and TimeTick due up to `until_ms`, in ordered-time order.
    pub fn run_until(&mut self, until_ms: u64, mut on_output: impl FnMut(&Output)) {
        loop {
            let sim_due = self.sim.next_due_ms().unwrap_or(u64::MAX);
            let next = sim_due.min(self.next_tick_ms);
            if next > until_ms {
                self.now_ms = until_ms;
                return;
            }
            self.now_ms = next;
            if sim_due <= self.next_tick_ms {
                self.sim.poll(next, &mut self.batch);
                let batch = std::mem::take(&mut self.batch);
                for input in batch.iter().cloned() {
                    self.apply(input, &mut on_output);
                }
                self.batch = batch;
                self.batch.clear();
            } else {
                let tick = OrderedInput {
                    time_ms: self.next_tick_ms,
                    input: Input::TimeTick,
                };
                self.next_tick_ms += self.tick_ms;
                self.apply(tick, &mut on_output);
            }
        }
    }
}
