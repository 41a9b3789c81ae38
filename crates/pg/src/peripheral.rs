//! What a PG's peripherals are to its protocol: the source of its inputs and the taker of the
//! router's outputs. `GatewayCore` drives one through this trait; the seeded traffic simulator
//! (`TrafficSim`) is one implementation, for tests, benchmarks and the whole-system
//! simulation, and a peripheral of real phones is another kind of the same.

use tandem_model::input::OrderedInput;
use tandem_model::output::Output;

/// A PG's peripherals as its protocol (`GatewayCore`) drives them.
pub trait Peripheral {
    /// Appends the inputs the peripherals produced through `now_ms`, in order.
    fn poll(&mut self, now_ms: u64, inputs: &mut Vec<OrderedInput>);
    /// An output the router sent this PG, taken in number order.
    fn on_output(&mut self, now_ms: u64, output: &Output);
    /// The peripherals report their agents and calls whole in the next inputs: the router
    /// rebuilds its view of them (a start, both sides lost, a new incarnation).
    fn report_peripherals(&mut self);
    /// No new calls from now on: the PG is draining.
    fn stop_arrivals(&mut self);
    /// Route requests sent that have no answer yet.
    fn route_requests_unanswered(&self) -> usize;
}

impl Peripheral for crate::TrafficSim {
    fn poll(&mut self, now_ms: u64, inputs: &mut Vec<OrderedInput>) {
        crate::TrafficSim::poll(self, now_ms, inputs);
    }

    fn on_output(&mut self, now_ms: u64, output: &Output) {
        crate::TrafficSim::on_output(self, now_ms, output);
    }

    fn report_peripherals(&mut self) {
        crate::TrafficSim::report_peripherals(self);
    }

    fn stop_arrivals(&mut self) {
        crate::TrafficSim::stop_arrivals(self);
    }

    fn route_requests_unanswered(&self) -> usize {
        crate::TrafficSim::route_requests_unanswered(self)
    }
}
