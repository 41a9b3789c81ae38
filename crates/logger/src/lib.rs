//! The logger of one side: a synchronized client of its side's MDS that writes the ordered
//! stream's configuration changes, historical rows and events to the side's central database.

pub mod peer;
pub mod run;
pub mod session;
pub mod verify;

// The storage layer has its crate; the logger's paths to it stay as they were.
pub use tandem_db as db;
pub use tandem_db::{schema, test_postgres};
