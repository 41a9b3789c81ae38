//! The identity of a poison input: one that panicked the router's `apply`.
//!
//! The same input crashes both sides at once, since both apply it. Each side's shell records
//! the input in flight when its router panicked; an input recorded during two crashes is
//! quarantined. The enabled synchronizer then orders it as `Body::Quarantined`, which both
//! sides skip, instead of the input itself (`Synchronizer::set_quarantine`).
//!
//! A quarantined input is known by its PG and its bytes, not by its number: when both sides
//! crash they restart from configuration, and the PG numbers what it still holds afresh (a new
//! incarnation), so the same poison input comes back under new numbers after every crash.

use tandem_model::ids::PgId;
use tandem_model::input::Input;
use xxhash_rust::xxh3::xxh3_64;

/// The most quarantined inputs a synchronizer holds. The shell's bounded read of its suspect
/// file cannot produce more.
pub const QUARANTINED_INPUTS_MAX: usize = 1_024;

/// A PG input's identity: its place in its PG's numbering and the hash of its bytes
/// (`input_hash`). The hash keeps a record from matching a different input under the same
/// numbers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QuarantineKey {
    pub pg: PgId,
    pub incarnation: u64,
    pub input_no: u64,
    pub input_hash: u64,
}

impl QuarantineKey {
    /// What stays the same when the PG numbers the input again.
    pub fn input(&self) -> QuarantinedInput {
        QuarantinedInput {
            pg: self.pg,
            input_hash: self.input_hash,
        }
    }
}

/// A quarantined input: one PG's input with these bytes, under whatever numbers it comes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct QuarantinedInput {
    pub pg: PgId,
    pub input_hash: u64,
}

/// The xxh3-64 of an input's MessagePack bytes, as a frame carries them.
pub fn input_hash(input: &Input) -> u64 {
    // Every input crossed a frame in this encoding before it was ordered, so encoding succeeds;
    // were it ever to fail, the hash of no bytes matches no recorded input.
    let bytes = rmp_serde::to_vec(input).unwrap_or_default();
    xxh3_64(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_model::ids::AgentId;

    #[test]
    fn equal_inputs_hash_equal_and_different_ones_differ() {
        let logout = |agent| Input::AgentLogout {
            agent: AgentId(agent),
            reason_code: 0,
        };
        assert_eq!(input_hash(&logout(1)), input_hash(&logout(1)));
        assert_ne!(input_hash(&logout(1)), input_hash(&logout(2)));
        assert_ne!(input_hash(&Input::TimeTick), input_hash(&logout(1)));
    }
}
