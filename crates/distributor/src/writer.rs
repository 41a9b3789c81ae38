//! The AW database writer's work without I/O: what the feed queued becomes one transaction
//! after another, in order. A configuration copy goes alone; snapshots and frames queued
//! together are merged into one (`FeedBatch`: the last value of each row wins, a snapshot
//! starts over), so a slow disk costs larger transactions, not a growing queue. A write the
//! database refuses for a while (`DbError::is_transient`) is tried again with what came
//! meanwhile merged in, so the database never skips a frame; one that would fail every time is
//! left out with the frames after it until a snapshot, which the feed subscribes for.
//! `tandem distributor`'s writer task and the whole-system simulation both run `AwWriteQueue`
//! and `write_batch`.

use crate::rtdist::FeedUpdate;
use std::collections::BTreeMap;
use std::sync::Arc;
use tandem_db::aw::{AwDb, AwWrite, FeedState};
use tandem_db::DbError;
use tandem_model::config::{ConfigChange, ConfigStamp, ContactCenter};
use tandem_model::feed::{FeedFrameHeader, FeedKey, FeedRow};

/// Configuration changes one AW database transaction takes at most; while a write fails, the
/// feed waits once this many are merged.
pub const MERGED_CONFIG_CHANGES_MAX: usize = 10_000;
/// Deleted keys one AW database transaction takes at most; while a write fails, the feed waits
/// once this many are merged. Merged rows are bounded by the real-time tables' size, but the
/// keys of deleted rows (each call that leaves the router's queue has a key of its own) would
/// grow for as long as the database refuses writes.
pub const MERGED_DELETED_KEYS_MAX: usize = 100_000;

/// Snapshots and frames merged for one transaction of the AW database, with the header and
/// side of the last, and the attempts to write them that failed.
pub struct FeedBatch {
    merged: Merged,
    pub header: FeedFrameHeader,
    /// The first's ordered time.
    pub first_time_ms: u64,
    side: String,
    pub failures: u32,
}

impl FeedBatch {
    pub fn new(
        update: &FeedUpdate,
        config: Option<(Vec<ConfigChange>, ConfigStamp)>,
        side: String,
    ) -> FeedBatch {
        let mut merged = Merged::default();
        merged.add(update, config);
        FeedBatch {
            merged,
            header: *update.header(),
            first_time_ms: update.header().time_ms,
            side,
            failures: 0,
        }
    }

    pub fn add(
        &mut self,
        update: &FeedUpdate,
        config: Option<(Vec<ConfigChange>, ConfigStamp)>,
        side: String,
    ) {
        self.merged.add(update, config);
        self.header = *update.header();
        self.side = side;
    }

    /// Whether it holds `MERGED_CONFIG_CHANGES_MAX` configuration changes or
    /// `MERGED_DELETED_KEYS_MAX` deleted keys: nothing more is merged in, and the feed waits
    /// while the batch cannot be written (its rows are bounded by the real-time tables' size
    /// already).
    pub fn full(&self) -> bool {
        self.merged.deleted >= MERGED_DELETED_KEYS_MAX
            || self
                .merged
                .config
                .as_ref()
                .is_some_and(|(changes, _)| changes.len() >= MERGED_CONFIG_CHANGES_MAX)
    }

    /// Snapshots and frames merged in.
    pub fn updates(&self) -> u64 {
        self.merged.snapshots + self.merged.frames
    }
}

/// What a committed batch wrote.
pub struct Committed {
    pub header: FeedFrameHeader,
    pub replace: bool,
    pub upserts: Vec<FeedRow>,
    pub rows: u64,
    /// The configuration version it brought the database to, if it changed it.
    pub config_version: Option<u64>,
}

/// Writes the batch with Feed_State in one transaction, and moves `feed_state` on to it. A
/// write that fails changes nothing and gives the batch back, to be written again with what
/// comes meanwhile added.
pub async fn write_batch(
    db: &AwDb,
    mut batch: FeedBatch,
    feed_state: &mut FeedState,
    wall_ms: u64,
) -> Result<Committed, (FeedBatch, DbError)> {
    let header = batch.header;
    let mut state = feed_state.clone();
    state.follow(&header);
    state.side = Some(batch.side.clone());
    state.snapshots += batch.merged.snapshots;
    state.frames += batch.merged.frames;
    state.written_wall_ms = wall_ms;
    state.lag_ms = wall_ms as i64 - header.time_ms as i64;
    let config = batch.merged.config.take();
    let (replace, snapshots, frames) = (
        batch.merged.replace,
        batch.merged.snapshots,
        batch.merged.frames,
    );
    let (upserts, deletes) = std::mem::take(&mut batch.merged).rows();
    let write = AwWrite {
        replace,
        upserts: &upserts,
        deletes: &deletes,
        config: config
            .as_ref()
            .map(|(changes, stamp)| (&changes[..], *stamp)),
        feed_state: Some(&state),
    };
    let rows = write.rows() as u64;
    match db.write(write).await {
        Ok(()) => {
            *feed_state = state;
            Ok(Committed {
                header,
                replace,
                upserts,
                rows,
                config_version: config.map(|(_, stamp)| stamp.version),
            })
        }
        Err(e) => {
            batch.merged = Merged::unwritten(replace, upserts, deletes, config, snapshots, frames);
            batch.failures += 1;
            Err((batch, e))
        }
    }
}

/// Frames merged for one transaction of the AW database.
#[derive(Default)]
pub struct Merged {
    /// A snapshot is among them: the transaction replaces every real-time row.
    pub replace: bool,
    /// Each key's last row, or `None` for a key deleted since the database's rows (none after
    /// a snapshot: a key it does not hold is simply absent).
    rows: BTreeMap<FeedKey, Option<FeedRow>>,
    /// The `None`s of `rows`.
    deleted: usize,
    /// The configuration changes to apply, and the version they bring the database to.
    pub config: Option<(Vec<ConfigChange>, ConfigStamp)>,
    pub snapshots: u64,
    pub frames: u64,
}

impl Merged {
    pub fn add(&mut self, update: &FeedUpdate, config: Option<(Vec<ConfigChange>, ConfigStamp)>) {
        match update {
            FeedUpdate::Snapshot { rows, .. } => {
                self.replace = true;
                self.snapshots += 1;
                self.rows = rows.iter().map(|r| (r.key(), Some(r.clone()))).collect();
                self.deleted = 0;
            }
            FeedUpdate::Frame { delta, .. } => {
                self.frames += 1;
                for key in &delta.deletes {
                    if self.replace {
                        self.rows.remove(key);
                    } else if !matches!(self.rows.insert(*key, None), Some(None)) {
                        self.deleted += 1;
                    }
                }
                for row in &delta.upserts {
                    if let Some(None) = self.rows.insert(row.key(), Some(row.clone())) {
                        self.deleted -= 1;
                    }
                }
            }
        }
        if let Some((changes, version)) = config {
            match &mut self.config {
                Some((held, held_version)) => {
                    held.extend(changes);
                    *held_version = version;
                }
                None => self.config = Some((changes, version)),
            }
        }
    }

    /// Merged frames as `rows` gave them, for a write that failed.
    pub fn unwritten(
        replace: bool,
        upserts: Vec<FeedRow>,
        deletes: Vec<FeedKey>,
        config: Option<(Vec<ConfigChange>, ConfigStamp)>,
        snapshots: u64,
        frames: u64,
    ) -> Merged {
        let deleted = deletes.len();
        let mut rows: BTreeMap<FeedKey, Option<FeedRow>> =
            deletes.into_iter().map(|key| (key, None)).collect();
        rows.extend(upserts.into_iter().map(|row| (row.key(), Some(row))));
        debug_assert_eq!(rows.len(), deleted + rows.values().flatten().count());
        Merged {
            replace,
            rows,
            deleted,
            config,
            snapshots,
            frames,
        }
    }

    /// The upserts and deletes.
    pub fn rows(self) -> (Vec<FeedRow>, Vec<FeedKey>) {
        debug_assert!(!self.replace || self.deleted == 0);
        let mut upserts = Vec::with_capacity(self.rows.len() - self.deleted);
        let mut deletes = Vec::with_capacity(self.deleted);
        for (key, row) in self.rows {
            match row {
                Some(row) => upserts.push(row),
                None => deletes.push(key),
            }
        }
        (upserts, deletes)
    }
}

/// What the feed queues for the writer, in order.
pub enum WriteItem {
    Feed {
        update: Arc<FeedUpdate>,
        /// The configuration changes updateaw decided to apply with it, and the version they
        /// bring the database to.
        config: Option<(Vec<ConfigChange>, ConfigStamp)>,
        /// The side it came from ("a" or "b").
        side: String,
    },
    /// A copy of the central configuration (an initialization or a rebuild).
    Configuration {
        contact_center: Box<ContactCenter>,
        config: ConfigStamp,
    },
}

/// One transaction to make.
pub enum AwWriteJob {
    /// Replace the configuration with a copy, alone in its transaction.
    Configuration {
        contact_center: Box<ContactCenter>,
        config: ConfigStamp,
    },
    /// Write merged snapshots and frames with Feed_State (`write_batch`).
    Feed(FeedBatch),
}

/// What becomes of a batch the database refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// It may pass later: it is tried again with what follows.
    TryAgain,
    /// It would fail every time: it is left out, and so are the frames after it until a
    /// snapshot. The feed must start over (a configuration copy and a snapshot).
    LeftOut,
}

/// What the writer leaves out after a write refused for good. Until a configuration copy is
/// written (the one the feed's start-over queues, exported after the refused frames), everything
/// is left out, snapshots too: the refused configuration changes are in no snapshot. After it,
/// frames are left out until a snapshot replaces every real-time row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeftOut {
    /// Snapshots and frames left out so far, the refused batch's included.
    pub updates: u64,
    /// The ordered time of the first: the database holds nothing newer.
    pub since_time_ms: u64,
    copied: bool,
}

/// The order of the writer's work: what the feed queued, a batch to try again, and what to
/// leave out after a write refused for good.
#[derive(Default)]
pub struct AwWriteQueue {
    /// An item taken from the feed's queue that ends the batch before it (a configuration
    /// copy after frames), or a configuration copy the database refused.
    pending: Option<WriteItem>,
    /// Snapshots and frames the database refused, to be tried again with what follows.
    unwritten: Option<FeedBatch>,
    /// After a write refused for good: written on a database that lacks the refused rows and
    /// configuration changes, frames would mark it as holding a frame it does not.
    left_out: Option<LeftOut>,
}

impl AwWriteQueue {
    /// Whether the next job must wait for the feed to queue something.
    pub fn waits_for_feed(&self) -> bool {
        self.pending.is_none() && self.unwritten.is_none()
    }

    /// What is left out since a write refused for good, until a configuration copy and a
    /// snapshot.
    pub fn left_out(&self) -> Option<LeftOut> {
        self.left_out
    }

    /// The batch waiting to be tried again, if a write was refused.
    pub fn unwritten(&self) -> Option<&FeedBatch> {
        self.unwritten.as_ref()
    }

    /// The next transaction: a refused batch again, with what the feed queued since merged in;
    /// else a configuration copy alone; else the queued snapshots and frames up to a
    /// configuration copy or `FeedBatch::full`. `queued` takes the feed's next item without
    /// waiting (None: nothing more is queued). None: nothing to write.
    pub fn next_job(
        &mut self,
        mut queued: impl FnMut() -> Option<WriteItem>,
    ) -> Option<AwWriteJob> {
        let mut batch = match self.unwritten.take() {
            Some(batch) => batch,
            None => loop {
                match self.pending.take().or_else(&mut queued)? {
                    WriteItem::Configuration {
                        contact_center,
                        config,
                    } => {
                        // Handed out before anything queued after it, even when refused for a
                        // while.
                        if let Some(left_out) = &mut self.left_out {
                            left_out.copied = true;
                        }
                        return Some(AwWriteJob::Configuration {
                            contact_center,
                            config,
                        });
                    }
                    WriteItem::Feed { update, .. }
                        if self.left_out.is_some_and(|left_out| {
                            !left_out.copied || matches!(*update, FeedUpdate::Frame { .. })
                        }) =>
                    {
                        if let Some(left_out) = &mut self.left_out {
                            left_out.updates += 1;
                        }
                    }
                    WriteItem::Feed {
                        update,
                        config,
                        side,
                    } => {
                        self.left_out = None;
                        break FeedBatch::new(&update, config, side);
                    }
                }
            },
        };
        // Everything queued behind it, up to a configuration copy, goes in the same
        // transaction.
        while self.pending.is_none() && !batch.full() {
            match queued() {
                Some(WriteItem::Feed {
                    update,
                    config,
                    side,
                }) => batch.add(&update, config, side),
                Some(other) => self.pending = Some(other),
                None => break,
            }
        }
        Some(AwWriteJob::Feed(batch))
    }

    /// The database refused `batch` (as `write_batch` gave it back) with `error`.
    pub fn batch_refused(&mut self, batch: FeedBatch, error: &DbError) -> Refusal {
        assert!(self.unwritten.is_none(), "one batch is written at a time");
        if error.is_transient() {
            self.unwritten = Some(batch);
            Refusal::TryAgain
        } else {
            self.left_out = Some(LeftOut {
                updates: batch.updates(),
                since_time_ms: batch.first_time_ms,
                copied: false,
            });
            Refusal::LeftOut
        }
    }

    /// The database refused a configuration copy: it is the next job again, before anything
    /// queued after it.
    pub fn configuration_refused(
        &mut self,
        contact_center: Box<ContactCenter>,
        config: ConfigStamp,
    ) {
        assert!(
            self.pending.is_none(),
            "a configuration copy is handed out only with nothing pending"
        );
        self.pending = Some(WriteItem::Configuration {
            contact_center,
            config,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_db::aw::tests_support::sample_rows_n;
    use tandem_db::DbLocation;
    use tandem_model::feed::FeedDelta;
    use tandem_model::ids::RouterCallKey;

    fn header(number: u64) -> FeedFrameHeader {
        FeedFrameHeader {
            generation: 1,
            number,
            epoch: 1,
            config_version: 1,
            config_recovery_key: 0,
            time_ms: number * 100,
            recovery_key: number,
        }
    }

    fn stamp(version: u64) -> ConfigStamp {
        ConfigStamp {
            version,
            recovery_key: version * 10,
        }
    }

    #[test]
    fn merged_frames_keep_the_last_value_and_a_snapshot_starts_over() {
        let mut merged = Merged::default();
        let first = sample_rows_n(1);
        let second = sample_rows_n(2);
        merged.add(
            &FeedUpdate::Frame {
                header: header(2),
                delta: FeedDelta {
                    upserts: first.clone(),
                    deletes: vec![second[4].key()],
                    config_changes: Vec::new(),
                },
            },
            Some((vec![ConfigChange::default()], stamp(4))),
        );
        merged.add(
            &FeedUpdate::Frame {
                header: header(3),
                delta: FeedDelta {
                    upserts: vec![second[4].clone()],
                    deletes: vec![first[0].key()],
                    config_changes: Vec::new(),
                },
            },
            Some((vec![ConfigChange::default()], stamp(5))),
        );
        assert_eq!(
            merged.config.as_ref().map(|(c, v)| (c.len(), *v)),
            Some((2, stamp(5)))
        );
        let (upserts, deletes) = merged.rows();
        assert_eq!(deletes, vec![first[0].key()]);
        assert_eq!(upserts.len(), first.len());
        assert!(upserts.contains(&second[4]));

        let mut merged = Merged::default();
        merged.add(
            &FeedUpdate::Frame {
                header: header(2),
                delta: FeedDelta {
                    upserts: first.clone(),
                    ..FeedDelta::default()
                },
            },
            None,
        );
        merged.add(
            &FeedUpdate::Snapshot {
                header: header(3),
                rows: second.clone(),
            },
            None,
        );
        merged.add(
            &FeedUpdate::Frame {
                header: header(4),
                delta: FeedDelta {
                    deletes: vec![second[0].key()],
                    ..FeedDelta::default()
                },
            },
            None,
        );
        assert!(merged.replace);
        assert_eq!((merged.snapshots, merged.frames), (1, 2));
        let (upserts, deletes) = merged.rows();
        assert!(deletes.is_empty());
        assert_eq!(upserts, second[1..].to_vec());
    }

    fn frame(number: u64, upserts: Vec<FeedRow>, deletes: Vec<FeedKey>) -> FeedUpdate {
        FeedUpdate::Frame {
            header: header(number),
            delta: FeedDelta {
                upserts,
                deletes,
                config_changes: Vec::new(),
            },
        }
    }

    fn rows(numbers: std::ops::RangeInclusive<u32>) -> Vec<FeedRow> {
        numbers.flat_map(sample_rows_n).collect()
    }

    #[test]
    fn deleted_keys_are_counted_once_and_bound_what_is_merged() {
        let held = rows(1..=2);
        let keys: Vec<FeedKey> = held.iter().map(FeedRow::key).collect();
        let mut batch = FeedBatch::new(&frame(2, Vec::new(), keys.clone()), None, "a".into());
        assert_eq!(batch.merged.deleted, keys.len());
        // A key deleted again counts once; one written again is no longer deleted.
        batch.add(
            &frame(3, vec![held[0].clone()], vec![keys[1]]),
            None,
            "a".into(),
        );
        assert_eq!(batch.merged.deleted, keys.len() - 1);
        assert_eq!(batch.updates(), 2);
        let (upserts, deletes) =
            Merged::unwritten(false, vec![held[0].clone()], keys[1..].to_vec(), None, 0, 2).rows();
        assert_eq!((upserts.len(), deletes.len()), (1, keys.len() - 1));

        // After a snapshot a deleted key is simply absent: nothing accumulates.
        batch.add(
            &FeedUpdate::Snapshot {
                header: header(4),
                rows: held.clone(),
            },
            None,
            "a".into(),
        );
        batch.add(&frame(5, Vec::new(), vec![keys[0]]), None, "a".into());
        assert_eq!(batch.merged.deleted, 0);
        assert!(!batch.merged.rows.contains_key(&keys[0]));

        // Keys of calls that left the router's queue, one frame after another, while writes
        // fail: the batch takes no more once the bound is reached.
        let mut batch = FeedBatch::new(&frame(2, Vec::new(), Vec::new()), None, "a".into());
        let per_frame = 1_000;
        for n in 0..(MERGED_DELETED_KEYS_MAX / per_frame) as u64 {
            assert!(!batch.full(), "full after {n} frames");
            let gone = (0..per_frame as u64)
                .map(|i| FeedKey::RouterQueue(RouterCallKey(n * per_frame as u64 + i)))
                .collect();
            batch.add(&frame(3 + n, Vec::new(), gone), None, "a".into());
        }
        assert!(batch.full());
    }

    #[tokio::test]
    async fn a_write_the_database_refuses_is_written_again_with_what_followed() {
        let db = AwDb::open(&DbLocation::sqlite_in_memory()).await.unwrap();
        let mut image: BTreeMap<FeedKey, FeedRow> = BTreeMap::new();
        let mut apply = |update: &FeedUpdate| match update {
            FeedUpdate::Snapshot { rows, .. } => {
                image = rows.iter().map(|r| (r.key(), r.clone())).collect();
                tandem_db::aw::rows_digest(image.values())
            }
            FeedUpdate::Frame { delta, .. } => {
                for key in &delta.deletes {
                    image.remove(key);
                }
                for row in &delta.upserts {
                    image.insert(row.key(), row.clone());
                }
                tandem_db::aw::rows_digest(image.values())
            }
        };
        let mut feed_state = FeedState::default();
        let snapshot = FeedUpdate::Snapshot {
            header: header(1),
            rows: rows(1..=100),
        };
        let snapshot_digest = apply(&snapshot);
        let batch = FeedBatch::new(&snapshot, None, "a".into());
        let committed = write_batch(&db, batch, &mut feed_state, 1_000)
            .await
            .map_err(|(_, e)| e)
            .unwrap();
        assert_eq!((committed.header.number, committed.replace), (1, true));

        // The disk fills: a frame that adds rows fails, and changes nothing.
        db.cap_growth(true).await.unwrap();
        let added = rows(101..=300);
        let second = frame(2, added.clone(), vec![sample_rows_n(1)[0].key()]);
        apply(&second);
        let batch = FeedBatch::new(&second, None, "a".into());
        let (mut batch, _) = write_batch(&db, batch, &mut feed_state, 2_000)
            .await
            .err()
            .expect("a full database refuses the frame");
        assert_eq!(batch.failures, 1);
        assert_eq!(feed_state.frame_number, 1);
        assert_eq!(db.feed_state().await.unwrap().unwrap().frame_number, 1);
        assert_eq!(db.real_time_digest().await.unwrap(), snapshot_digest);

        // The next frame deletes a row the refused one added: merged, it is never written.
        let third = frame(3, rows(301..=310), vec![added[0].key()]);
        let expected = apply(&third);
        batch.add(&third, None, "b".into());
        let (batch, _) = write_batch(&db, batch, &mut feed_state, 3_000)
            .await
            .err()
            .expect("still full");
        assert_eq!(batch.failures, 2);

        // Room again: one transaction brings the database to the image.
        db.cap_growth(false).await.unwrap();
        let committed = write_batch(&db, batch, &mut feed_state, 4_000)
            .await
            .map_err(|(_, e)| e)
            .unwrap();
        assert_eq!(committed.header.number, 3);
        assert!(!committed.replace);
        assert_eq!(db.real_time_digest().await.unwrap(), expected);
        let stored = db.feed_state().await.unwrap().unwrap();
        assert_eq!(stored, feed_state);
        assert_eq!(
            (stored.frame_number, stored.frames, stored.snapshots),
            (3, 2, 1)
        );
        assert_eq!(stored.side.as_deref(), Some("b"));

        // A read-only disk refuses even rows updated in place, until it takes writes again.
        db.refuse_writes(true).await.unwrap();
        let fourth = frame(4, sample_rows_n(2), Vec::new());
        let expected = apply(&fourth);
        let batch = FeedBatch::new(&fourth, None, "b".into());
        let (batch, _) = write_batch(&db, batch, &mut feed_state, 5_000)
            .await
            .err()
            .expect("a read-only database refuses the frame");
        assert_eq!(feed_state.frame_number, 3);
        db.refuse_writes(false).await.unwrap();
        write_batch(&db, batch, &mut feed_state, 6_000)
            .await
            .map_err(|(_, e)| e)
            .unwrap();
        assert_eq!(db.real_time_digest().await.unwrap(), expected);
        assert_eq!(db.feed_state().await.unwrap().unwrap().frame_number, 4);
    }

    fn feed(update: FeedUpdate) -> WriteItem {
        WriteItem::Feed {
            update: Arc::new(update),
            config: None,
            side: "a".into(),
        }
    }

    fn copy(version: u64) -> WriteItem {
        WriteItem::Configuration {
            contact_center: Box::default(),
            config: stamp(version),
        }
    }

    /// What a job writes: ("config", version) or ("feed", last frame number, updates merged).
    fn shown(job: Option<AwWriteJob>) -> Option<(&'static str, u64, u64)> {
        job.map(|job| match job {
            AwWriteJob::Configuration { config, .. } => ("config", config.version, 1),
            AwWriteJob::Feed(batch) => ("feed", batch.header.number, batch.updates()),
        })
    }

    fn take(
        items: &mut std::collections::VecDeque<WriteItem>,
    ) -> impl FnMut() -> Option<WriteItem> + '_ {
        move || items.pop_front()
    }

    #[test]
    fn a_configuration_copy_is_written_alone_and_in_order() {
        let mut queue = AwWriteQueue::default();
        let mut items: std::collections::VecDeque<WriteItem> = [
            feed(frame(2, Vec::new(), Vec::new())),
            feed(frame(3, Vec::new(), Vec::new())),
            copy(7),
            feed(frame(4, Vec::new(), Vec::new())),
        ]
        .into();
        assert!(queue.waits_for_feed());
        assert_eq!(
            shown(queue.next_job(take(&mut items))),
            Some(("feed", 3, 2))
        );
        assert!(
            !queue.waits_for_feed(),
            "the copy taken from the feed waits"
        );
        assert_eq!(
            shown(queue.next_job(take(&mut items))),
            Some(("config", 7, 1))
        );
        // Refused, the copy is the next job again, before the frame queued after it.
        let Some(AwWriteJob::Configuration {
            contact_center,
            config,
        }) = queue.next_job(|| Some(copy(8)))
        else {
            panic!("the copy again");
        };
        assert_eq!(config, stamp(8));
        queue.configuration_refused(contact_center, config);
        assert_eq!(
            shown(queue.next_job(take(&mut items))),
            Some(("config", 8, 1))
        );
        assert_eq!(
            shown(queue.next_job(take(&mut items))),
            Some(("feed", 4, 1))
        );
        assert!(queue.waits_for_feed());
        assert_eq!(shown(queue.next_job(take(&mut items))), None);
    }

    #[test]
    fn a_batch_refused_for_a_while_comes_back_first_with_what_followed() {
        let mut queue = AwWriteQueue::default();
        let mut items: std::collections::VecDeque<WriteItem> =
            [feed(frame(2, Vec::new(), Vec::new()))].into();
        let Some(AwWriteJob::Feed(batch)) = queue.next_job(take(&mut items)) else {
            panic!("a batch");
        };
        let full_disk = DbError::Pool("the server is restarting".into());
        assert_eq!(queue.batch_refused(batch, &full_disk), Refusal::TryAgain);
        assert!(!queue.waits_for_feed());
        assert_eq!(queue.unwritten().map(|b| b.header.number), Some(2));
        items.extend([
            feed(frame(3, Vec::new(), Vec::new())),
            copy(9),
            feed(frame(4, Vec::new(), Vec::new())),
        ]);
        assert_eq!(
            shown(queue.next_job(take(&mut items))),
            Some(("feed", 3, 2))
        );
        assert_eq!(
            shown(queue.next_job(take(&mut items))),
            Some(("config", 9, 1))
        );
        assert_eq!(
            shown(queue.next_job(take(&mut items))),
            Some(("feed", 4, 1))
        );
    }

    #[test]
    fn after_a_write_refused_for_good_everything_waits_for_a_copy_then_frames_for_a_snapshot() {
        let mut queue = AwWriteQueue::default();
        let mut items: std::collections::VecDeque<WriteItem> =
            [feed(frame(2, Vec::new(), Vec::new()))].into();
        let Some(AwWriteJob::Feed(batch)) = queue.next_job(take(&mut items)) else {
            panic!("a batch");
        };
        let refused = DbError::BadRow {
            table: "Agent_Real_Time".into(),
            problem: "a NUL character".into(),
        };
        assert_eq!(queue.batch_refused(batch, &refused), Refusal::LeftOut);
        assert!(queue.waits_for_feed(), "nothing is tried again");
        let snapshot = |number| {
            feed(FeedUpdate::Snapshot {
                header: header(number),
                rows: rows(1..=2),
            })
        };
        items.extend([
            feed(frame(3, Vec::new(), Vec::new())),
            snapshot(4),
            feed(frame(5, Vec::new(), Vec::new())),
            copy(9),
            feed(frame(6, Vec::new(), Vec::new())),
            snapshot(7),
        ]);
        // Before the configuration copy everything is left out, a snapshot too (it lacks the
        // refused configuration changes); after it, frames until a snapshot.
        assert_eq!(
            shown(queue.next_job(take(&mut items))),
            Some(("config", 9, 1))
        );
        let left_out = queue.left_out().expect("still leaving frames out");
        assert_eq!((left_out.updates, left_out.since_time_ms), (4, 200));
        assert_eq!(
            shown(queue.next_job(take(&mut items))),
            Some(("feed", 7, 1))
        );
        assert_eq!(queue.left_out(), None);
        items.push_back(feed(frame(8, Vec::new(), Vec::new())));
        assert_eq!(
            shown(queue.next_job(take(&mut items))),
            Some(("feed", 8, 1))
        );
    }
}
