//! updateaw: keeps the AW database's copy of the configuration in step with the central one.
//!
//! "Initialize Local Database" copies the whole configuration exported by a side, at the
//! version it had once the ordered stream was applied through a RecoveryKey. From then on every
//! feed frame carries the configuration changes accepted since the previous frame, each with its
//! dense version, and the version its rows were computed under. A version is named with the
//! RecoveryKey of the change that made it (`ConfigStamp`): two histories may number different
//! changes alike (an isolated side's, abandoned when the other side took over without it).
//! `UpdateAw` is the sans-IO decision: apply the next versions, or rebuild because the versions
//! do not follow (a gap, a snapshot that skipped changes, a central database rebuilt to an
//! older version, an AW database whose version was damaged, a version of another history). A mismatch again right after a rebuild is a rebuild loop:
//! it is reported, and the next rebuild waits `REBUILD_LOOP_RETRY_MS` rather than following
//! at once, forever.

use tandem_model::config::{ConfigChange, ConfigStamp};
use tandem_model::feed::{FeedFrameHeader, VersionedConfigChange};

/// After a rebuild loop is reported, the wait before the next rebuild.
pub const REBUILD_LOOP_RETRY_MS: u64 = 60_000;

/// What to do with a frame's configuration.
#[derive(Clone, Debug, PartialEq)]
pub enum ConfigDecision {
    /// Nothing to apply.
    UpToDate,
    /// Apply these changes, in order; the database then holds `config`.
    Apply {
        changes: Vec<ConfigChange>,
        config: ConfigStamp,
    },
    /// Copy the central configuration again.
    Rebuild { reason: String },
    /// The same kind of mismatch right after a rebuild: do not rebuild at once.
    RebuildLoop { reason: String },
}

/// Where the local configuration stands.
#[derive(Clone, Debug, Default)]
pub struct UpdateAw {
    /// The configuration the AW database holds; None before it was initialized.
    local: Option<ConfigStamp>,
    /// The RecoveryKey the last export was taken at: a frame at or before it, in its epoch
    /// range, was computed under a configuration the export already holds.
    exported_at: Option<u64>,
    /// A rebuild happened and no frame after the export has matched yet.
    rebuilt: bool,
    /// Rebuilds done, and rebuild loops reported.
    pub rebuilds: u64,
    pub loops: u64,
}

impl UpdateAw {
    /// The AW database holds `local` (None: nothing) on start.
    pub fn new(local: Option<ConfigStamp>) -> UpdateAw {
        UpdateAw {
            local,
            ..UpdateAw::default()
        }
    }

    pub fn local_config(&self) -> Option<ConfigStamp> {
        self.local
    }

    /// The database now holds the configuration exported at `config`, taken once the stream
    /// was applied through `recovery_key`. `rebuild` says it replaced one after a mismatch (not
    /// the first initialization).
    pub fn initialized(&mut self, config: ConfigStamp, recovery_key: u64, rebuild: bool) {
        self.local = Some(config);
        self.exported_at = Some(recovery_key);
        if rebuild {
            self.rebuilds += 1;
            self.rebuilt = true;
        }
    }

    /// The decision for one frame (or snapshot, which has no changes) with these changes.
    /// `Apply` and `UpToDate` are taken as done: the caller writes the changes with the frame.
    pub fn on_frame(
        &mut self,
        header: &FeedFrameHeader,
        changes: &[VersionedConfigChange],
    ) -> ConfigDecision {
        let Some(mut local) = self.local else {
            return ConfigDecision::Rebuild {
                reason: "the AW database holds no configuration".into(),
            };
        };
        let mut apply = Vec::new();
        for change in changes {
            if change.config_version == local.version && change.recovery_key != local.recovery_key {
                return self.mismatch(format!(
                    "configuration version {} arrived made by the change at {}, the AW database \
                     holds {local}",
                    change.config_version, change.recovery_key
                ));
            }
            if change.config_version <= local.version {
                // Already in the export (or applied from an earlier frame).
                continue;
            }
            if change.config_version != local.version + 1 {
                return self.mismatch(format!(
                    "configuration version {} arrived while the AW database holds version \
                     {}: versions {}..{} are missing",
                    change.config_version,
                    local.version,
                    local.version + 1,
                    change.config_version - 1
                ));
            }
            apply.push(change.change.clone());
            local = ConfigStamp {
                version: change.config_version,
                recovery_key: change.recovery_key,
            };
        }
        // A frame before the export in the export's own epoch range is of the export's history
        // (a range is one owner's), computed under the export's configuration or an earlier
        // one. A frame of another range may be of another history, and is checked.
        let before_export = self.exported_at.is_some_and(|at| {
            header.recovery_key <= at
                && tandem_mds::seq_epoch_range(header.recovery_key)
                    == tandem_mds::seq_epoch_range(at)
        });
        let computed_under = ConfigStamp {
            version: header.config_version,
            recovery_key: header.config_recovery_key,
        };
        if !before_export && computed_under != local {
            return self.mismatch(format!(
                "frame {} was computed under configuration {computed_under}, the AW database \
                 holds {local}",
                header.number
            ));
        }
        if !before_export {
            self.rebuilt = false;
        }
        self.local = Some(local);
        if apply.is_empty() {
            ConfigDecision::UpToDate
        } else {
            ConfigDecision::Apply {
                changes: apply,
                config: local,
            }
        }
    }

    fn mismatch(&mut self, reason: String) -> ConfigDecision {
        if self.rebuilt {
            self.loops += 1;
            // Reported once per rebuild; the next rebuild, after the wait, may succeed.
            self.rebuilt = false;
            ConfigDecision::RebuildLoop { reason }
        } else {
            ConfigDecision::Rebuild { reason }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frame `number` at RecoveryKey `number * 10`, computed under version `config_version`
    /// made by the change at `config_version * 7` (as `change` makes it).
    fn header(number: u64, config_version: u64) -> FeedFrameHeader {
        FeedFrameHeader {
            generation: 1,
            number,
            epoch: 1,
            config_version,
            config_recovery_key: config_version * 7,
            time_ms: number * 100,
            recovery_key: number * 10,
        }
    }

    fn stamp(version: u64) -> ConfigStamp {
        ConfigStamp {
            version,
            recovery_key: version * 7,
        }
    }

    fn change(config_version: u64) -> VersionedConfigChange {
        VersionedConfigChange {
            config_version,
            recovery_key: config_version * 7,
            change: ConfigChange::default(),
        }
    }

    #[test]
    fn versions_apply_in_order_and_a_gap_rebuilds() {
        let mut u = UpdateAw::new(None);
        assert!(matches!(
            u.on_frame(&header(1, 3), &[]),
            ConfigDecision::Rebuild { .. }
        ));
        u.initialized(stamp(3), 10, false);
        assert_eq!(u.on_frame(&header(2, 3), &[]), ConfigDecision::UpToDate);
        // Version 3 is in the export already; 4 and 5 follow.
        match u.on_frame(&header(3, 5), &[change(3), change(4), change(5)]) {
            ConfigDecision::Apply { changes, config } => {
                assert_eq!((changes.len(), config), (2, stamp(5)));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(u.local_config(), Some(stamp(5)));
        // 7 without 6.
        let gap = u.on_frame(&header(4, 7), &[change(7)]);
        assert!(
            matches!(&gap, ConfigDecision::Rebuild { reason } if reason.contains("6..6")),
            "{gap:?}"
        );
        // A snapshot computed under a newer version than held (its changes were skipped).
        let mut u = UpdateAw::new(Some(stamp(5)));
        assert!(matches!(
            u.on_frame(&header(9, 6), &[]),
            ConfigDecision::Rebuild { .. }
        ));
        // A central database rebuilt to an older version.
        let mut u = UpdateAw::new(Some(stamp(5)));
        assert!(matches!(
            u.on_frame(&header(9, 2), &[]),
            ConfigDecision::Rebuild { .. }
        ));
    }

    #[test]
    fn frames_older_than_the_export_are_not_mismatches() {
        let mut u = UpdateAw::new(Some(stamp(1)));
        assert!(matches!(
            u.on_frame(&header(5, 4), &[]),
            ConfigDecision::Rebuild { .. }
        ));
        // Exported at version 4 once the stream was applied through RecoveryKey 80.
        u.initialized(stamp(4), 80, true);
        // Frames 6 and 7 (RecoveryKeys 60, 70) were computed before the export, under 3.
        assert_eq!(
            u.on_frame(&header(6, 3), &[change(3)]),
            ConfigDecision::UpToDate
        );
        assert_eq!(u.on_frame(&header(7, 3), &[]), ConfigDecision::UpToDate);
        // Frame 8 (RecoveryKey 80) and after match.
        assert_eq!(
            u.on_frame(&header(8, 4), &[change(4)]),
            ConfigDecision::UpToDate
        );
        assert_eq!(u.on_frame(&header(9, 4), &[]), ConfigDecision::UpToDate);
        assert_eq!((u.rebuilds, u.loops), (1, 0));
    }

    #[test]
    fn a_mismatch_right_after_a_rebuild_is_a_loop() {
        let mut u = UpdateAw::new(Some(stamp(9)));
        assert!(matches!(
            u.on_frame(&header(5, 4), &[]),
            ConfigDecision::Rebuild { .. }
        ));
        // The export says 9 again, but the feed says 4: the central side disagrees with itself.
        u.initialized(stamp(9), 40, true);
        assert!(matches!(
            u.on_frame(&header(6, 4), &[]),
            ConfigDecision::RebuildLoop { .. }
        ));
        assert_eq!(u.loops, 1);
        // After the wait the next rebuild is a plain one.
        assert!(matches!(
            u.on_frame(&header(7, 4), &[]),
            ConfigDecision::Rebuild { .. }
        ));
        u.initialized(stamp(4), 70, true);
        assert_eq!(u.on_frame(&header(8, 4), &[]), ConfigDecision::UpToDate);
        assert_eq!((u.rebuilds, u.loops), (2, 1));
    }

    #[test]
    fn a_version_of_another_history_rebuilds() {
        // The database holds version 5 made by the change at 35; a side of another history
        // made its version 5 with the change at 36.
        let mut u = UpdateAw::new(Some(stamp(5)));
        let mut other = header(9, 5);
        other.config_recovery_key = 36;
        let decision = u.on_frame(&other, &[]);
        assert!(
            matches!(&decision, ConfigDecision::Rebuild { reason } if reason.contains("change 36")),
            "{decision:?}"
        );
        // A frame bringing that other version 5 and then 6: 6 follows 5 by number, but not the
        // 5 the database holds.
        let mut u = UpdateAw::new(Some(stamp(5)));
        let mut other_five = change(5);
        other_five.recovery_key = 36;
        let decision = u.on_frame(&header(10, 6), &[other_five, change(6)]);
        assert!(
            matches!(&decision, ConfigDecision::Rebuild { reason } if reason.contains("at 36")),
            "{decision:?}"
        );
        // Exported at a RecoveryKey of epoch range 2: a frame of range 1, numerically before
        // the export, may be of another history (one whose range 1 ran on), and is checked.
        let range = |r: u64, n: u64| (r << tandem_mds::protocol::SEQ_EPOCH_SHIFT) | n;
        let mut u = UpdateAw::new(None);
        u.initialized(stamp(5), range(2, 80), false);
        let mut lower_range = header(3, 4);
        lower_range.recovery_key = range(1, 30);
        assert!(matches!(
            u.on_frame(&lower_range, &[]),
            ConfigDecision::Rebuild { .. }
        ));
        // One of the export's own range before it is not.
        let mut same_range = header(4, 4);
        same_range.recovery_key = range(2, 70);
        assert_eq!(u.on_frame(&same_range, &[]), ConfigDecision::UpToDate);
    }
}
