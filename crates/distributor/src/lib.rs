//! The Distributor AW (`tandem distributor`): rtdist keeps the real-time feed from the central
//! controller's sides, with failover between them.

pub mod rtdist;
