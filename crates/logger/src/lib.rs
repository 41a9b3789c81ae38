//! The logger of one side: a synchronized client of its side's MDS that writes the ordered
//! stream's configuration changes, historical rows and events to the side's central database.

pub mod db;
pub mod peer;
pub mod run;
pub mod schema;
pub mod test_postgres;
pub mod verify;
