//! The domain model of tandem: the vocabulary every other crate speaks.
//!
//! It holds plain data and pure checks only: configuration objects and their validation, routing
//! scripts as data, the ordered inputs and the outputs of the router, real-time counters and
//! their metric definitions, local-time period arithmetic, and the state-record codec. It knows
//! nothing of sockets, files (except reading a TOML configuration), threads or clocks.

pub mod calendar;
pub mod codec;
pub mod config;
pub mod domain;
pub mod feed;
pub mod generate;
pub mod ids;
pub mod input;
pub mod logged;
pub mod output;
pub mod realtime;
pub mod script;
pub mod topology;

pub use config::{ConfigChange, ConfigObject, ConfigOp, ContactCenter, ObjectRef};
pub use domain::{AgentState, LabelKind, ServiceLevelType};
pub use ids::*;
pub use input::{AfterCall, Input, OrderedInput, RouteEndReason, RouteRequest};
pub use output::{AnswerKind, HistoricalRow, Output, RouteAnswer};
