//! The PG's half of the split-brain guard: it grants epoch leases to one side at a time, and
//! answers Test Other Side from what it knows.
//!
//! A PG grants one epoch at a time. It renews the lease of the epoch it granted; it grants a
//! higher epoch to the same side at once (that side gave up its own lease by asking); and it
//! grants a higher epoch to the other side only after the holder's lease has lapsed here. It
//! refuses any lower epoch, naming the one it granted, so that a side waking from a pause
//! learns at once that it was replaced.

use crate::protocol::{Epoch, Side};

#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum LeaseAnswer {
    Granted,
    /// Refused: `granted` holds a live lease here, or is higher than the epoch asked for.
    Refused {
        granted: Epoch,
    },
}

/// A holder whose last renewal is older than this is reported as not enabled by Test Other
/// Side, although its lease may still run: an enabled side renews every 100 ms by default, so
/// such silence means it is paused or cut off, and the asking side should wait for the lease to
/// lapse and take over rather than give up.
pub const TEST_OTHER_SIDE_SILENCE_MS_MAX: u64 = 300;

/// Bugs planted for the whole-system simulation to catch; only its tests turn them on.
#[cfg(feature = "planted-bugs")]
pub mod planted {
    use std::sync::atomic::AtomicBool;

    /// The PG grants a lease on an epoch lower than the one it granted last.
    pub static SKIP_EPOCH_CHECK: AtomicBool = AtomicBool::new(false);
}

#[derive(Clone, Debug, Default)]
pub struct LeaseGranter {
    /// The epoch granted last, and when its lease lapses on this PG's clock.
    granted: Option<(Epoch, u64)>,
    /// When the holder last asked for (or renewed) its lease.
    renewed_ms: u64,
}

impl LeaseGranter {
    pub fn new() -> LeaseGranter {
        LeaseGranter::default()
    }

    /// The highest epoch this PG has granted.
    pub fn granted(&self) -> Option<Epoch> {
        self.granted.map(|(epoch, _)| epoch)
    }

    /// A side asks for (or renews) a lease of `lease_ms` on `epoch`.
    pub fn request(&mut self, now_ms: u64, epoch: Epoch, lease_ms: u64) -> LeaseAnswer {
        let Some(asker) = epoch.owner else {
            return LeaseAnswer::Refused {
                granted: self.granted().unwrap_or_default(),
            };
        };
        let grant = match self.granted {
            None => true,
            Some((held, expires_ms)) => {
                if epoch < held {
                    #[cfg(feature = "planted-bugs")]
                    {
                        planted::SKIP_EPOCH_CHECK.load(std::sync::atomic::Ordering::Relaxed)
                    }
                    #[cfg(not(feature = "planted-bugs"))]
                    false
                } else if epoch == held {
                    true
                } else {
                    held.owner == Some(asker) || now_ms >= expires_ms
                }
            }
        };
        if grant {
            self.granted = Some((epoch, now_ms + lease_ms));
            self.renewed_ms = now_ms;
            LeaseAnswer::Granted
        } else {
            LeaseAnswer::Refused {
                granted: self.granted().unwrap_or_default(),
            }
        }
    }

    /// Test Other Side, asked by `asker`: whether the other side holds a live lease here and
    /// renewed it recently.
    pub fn other_side_enabled(&self, now_ms: u64, asker: Side) -> bool {
        self.granted.is_some_and(|(epoch, expires_ms)| {
            epoch.owner == Some(asker.peer())
                && now_ms < expires_ms
                && now_ms.saturating_sub(self.renewed_ms) <= TEST_OTHER_SIDE_SILENCE_MS_MAX
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_other_side_gets_a_higher_epoch_only_after_the_lease_lapses() {
        let mut pg = LeaseGranter::new();
        assert_eq!(
            pg.request(0, Epoch::new(1, Side::A), 800),
            LeaseAnswer::Granted
        );
        assert_eq!(
            pg.request(500, Epoch::new(1, Side::A), 800),
            LeaseAnswer::Granted
        );
        assert!(pg.other_side_enabled(700, Side::B));
        assert!(
            !pg.other_side_enabled(1_000, Side::B),
            "silent for 500 ms: paused or cut off"
        );
        assert_eq!(
            pg.request(1_000, Epoch::new(2, Side::B), 800),
            LeaseAnswer::Refused {
                granted: Epoch::new(1, Side::A)
            }
        );
        assert!(
            !pg.other_side_enabled(1_300, Side::B),
            "A's renewal at 500 lapsed at 1,300"
        );
        assert_eq!(
            pg.request(1_300, Epoch::new(2, Side::B), 800),
            LeaseAnswer::Granted
        );
        // A wakes up and renews its old epoch: refused, and told which epoch replaced it.
        assert_eq!(
            pg.request(1_400, Epoch::new(1, Side::A), 800),
            LeaseAnswer::Refused {
                granted: Epoch::new(2, Side::B)
            }
        );
    }

    #[test]
    fn the_holder_may_move_to_a_higher_epoch_at_once() {
        let mut pg = LeaseGranter::new();
        assert_eq!(
            pg.request(0, Epoch::new(3, Side::B), 800),
            LeaseAnswer::Granted
        );
        assert_eq!(
            pg.request(10, Epoch::new(4, Side::B), 800),
            LeaseAnswer::Granted
        );
        assert_eq!(
            pg.request(20, Epoch::new(4, Side::A), 800),
            LeaseAnswer::Refused {
                granted: Epoch::new(4, Side::B)
            },
            "one epoch is never granted to two sides"
        );
    }
}
