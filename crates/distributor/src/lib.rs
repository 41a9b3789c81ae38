//! tandem's Distributor AW (SPEC section 7): rtdist takes the real-time feed from either side,
//! updateaw keeps the local copy of the configuration, both are written to the local AW
//! database, and rtclient serves client AWs over HTTP and WebSocket.

pub mod auth;
pub mod freshness;
pub mod http;
pub mod rtclient;
pub mod rtdist;
pub mod run;
pub mod system;
pub mod updateaw;
pub mod writer;
