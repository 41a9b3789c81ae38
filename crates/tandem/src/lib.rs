//! The `tandem` binary's library: the subcommands and the in-process driver they share. Kept as
//! a library so integration tests drive exactly what the binary runs.

pub mod admin;
pub mod aw;
pub mod bench;
pub mod bench_aw;
pub mod bench_aw_db;
pub mod bench_duplex;
pub mod bench_logger;
pub mod certs;
pub mod cluster;
pub mod demo;
pub mod driver;
pub mod fuzzing;
pub mod processes;
pub mod sim;
pub mod token;
pub mod watch;
