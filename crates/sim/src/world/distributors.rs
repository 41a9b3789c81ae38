//! The real-time tier in the simulation. Each side publishes its feed with the real rtsrvr
//! parts (`FeedTicker`, `FeedPublisher`, `FeedHistory`, `FeedCursor`: what the side's feed
//! thread and subscriber tasks run), encoded as on the wire; each distributor reads it with the
//! real `FeedAssembler`, decides on the configuration with the real `UpdateAw`, and writes a
//! real AW database (SQLite in memory, through `tandem-db`) with the merged write of
//! `tandem distributor`. The database survives the distributor's crash, as its disk would.
//!
//! What the shell adds is the socket between a side and a distributor: it holds at most
//! `SOCKET_BYTES_MAX` unread bytes, so the side's writer to a slow distributor waits, as a
//! real writer does on a full socket.

use super::{side_of, Event, LinkId, World};
use crate::world::loggers::block_on;
use rand::Rng;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use tandem_central::rtsrvr::{
    encode_snapshot, EncodedFrame, FeedCursor, FeedHistory, FeedPublisher, FeedTick, Published,
    ServeStep,
};
use tandem_db::aw::{AwDb, FeedState};
use tandem_db::DbLocation;
use tandem_distributor::rtdist::{
    FeedAssembler, FeedError, FeedUpdate, FEED_RETRY_MS, FEED_SILENCE_MS,
};
use tandem_distributor::run::{AW_WRITE_RETRY_MS, INITIALIZE_RETRY_MS};
use tandem_distributor::updateaw::{ConfigDecision, UpdateAw};
use tandem_distributor::writer::{write_batch, AwWriteJob, AwWriteQueue, Refusal, WriteItem};
use tandem_mds::frame;
use tandem_mds::protocol::SideToDistributor;
use tandem_mds::AdminReply;
use tandem_model::config::{ConfigStamp, ContactCenter};
use tandem_model::feed::{FeedFrameHeader, FeedPosition};
use xxhash_rust::xxh3::xxh3_64;

pub(super) const LINK_SIDE_TO_DISTRIBUTOR: u8 = 5;
pub(super) const LINK_DISTRIBUTOR_TO_SIDE: u8 = 6;
/// Mixed into the seed for the distributors' own random stream, so that adding them left the
/// other components' draws as they were.
pub(super) const DISTRIBUTOR_STREAM: u64 = 0x6469_7374_7269_6275;
/// Unread bytes a side's socket to a distributor holds (the kernels' buffers at both ends).
const SOCKET_BYTES_MAX: usize = 64 << 10;
/// Quiet steps granted at the end for every distributor to hold the latest frame.
pub(super) const DISTRIBUTOR_CATCH_UP_MS_MAX: u64 = 3_000;
/// Frames remembered for the check that a frame's number and RecoveryKey name one frame.
const FRAMES_KEPT_MAX: usize = 100_000;

/// One subscribed distributor, at the side's end.
struct Subscription {
    generation: u64,
    cursor: FeedCursor,
    /// A snapshot is due: it is written at the next tick, with that tick's image.
    snapshot_due: bool,
    /// Bytes written to the socket that the distributor has not read yet.
    unread_bytes: usize,
}

/// A side's rtsrvr publisher and subscribers: they live and die with the side's process. The
/// ticks come from the side's machine.
#[derive(Default)]
pub(super) struct SideFeed {
    publisher: FeedPublisher,
    history: FeedHistory,
    /// The latest tick published: (generation, number).
    published: (u64, u64),
    /// The header of the latest tick published.
    latest: Option<FeedFrameHeader>,
    subscriptions: BTreeMap<usize, Subscription>,
}

/// A distributor's connection to a side.
#[derive(Clone, Copy, Debug)]
struct FeedLink {
    side: usize,
    generation: u64,
    last_heard_ms: u64,
    heard_any: bool,
}

/// A distributor process and its AW database.
pub(super) struct SimDistributor {
    /// The AW database: it outlives the process.
    db: AwDb,
    preferred: usize,
    pub(super) runs: bool,
    /// Whether its process is stopped: the bytes that come wait in `inbox`, a reset of its
    /// connection in `held`.
    pub(super) paused: bool,
    pub(super) held: VecDeque<Event>,
    /// While slow, the distributor reads one chunk of the feed per `read_interval_ms` (its AW
    /// database's writes stall, say).
    pub(super) slow_until_ms: u64,
    read_interval_ms: u64,
    next_read_ms: u64,
    assembler: FeedAssembler,
    updateaw: UpdateAw,
    /// The writer: what the feed queued for it, the product's order of its work (a batch a
    /// write failed for, written again with what follows), when it tries again, and the
    /// Feed_State row it last committed.
    writes: VecDeque<WriteItem>,
    queue: AwWriteQueue,
    write_retry_at_ms: u64,
    feed_state: FeedState,
    /// Whether its AW database refuses writes (a disk gone read-only): it outlives the process.
    pub(super) refuses_writes: bool,
    pub(super) write_failures: u64,
    link: Option<FeedLink>,
    current: usize,
    failed_in_a_row: u32,
    retry_at_ms: u64,
    /// Bytes that arrived and were not read yet, with their connection's generation.
    inbox: VecDeque<(u64, Arc<[u8]>)>,
    /// The frame its tables hold.
    pub(super) holds: Option<FeedPosition>,
    pub(super) frames: u64,
    pub(super) snapshots: u64,
    pub(super) subscriptions: u64,
    pub(super) rebuilds: u64,
}

impl SimDistributor {
    /// A distributor whose AW database was initialized from the contact center, as its first
    /// start does.
    pub(super) fn new(cc: &ContactCenter, config: ConfigStamp, preferred: usize) -> SimDistributor {
        let db = block_on(async {
            let db = AwDb::open(&DbLocation::sqlite_in_memory()).await?;
            db.replace_configuration(cc, config).await?;
            Ok::<_, tandem_db::DbError>(db)
        })
        .expect("an in-memory AW database opens and is initialized");
        let mut updateaw = UpdateAw::new(None);
        updateaw.initialized(config, 0, false);
        SimDistributor {
            db,
            preferred,
            runs: true,
            paused: false,
            held: VecDeque::new(),
            slow_until_ms: 0,
            read_interval_ms: 0,
            next_read_ms: 0,
            assembler: FeedAssembler::default(),
            updateaw,
            writes: VecDeque::new(),
            queue: AwWriteQueue::default(),
            write_retry_at_ms: 0,
            feed_state: FeedState::default(),
            refuses_writes: false,
            write_failures: 0,
            link: None,
            current: preferred,
            failed_in_a_row: 0,
            retry_at_ms: 0,
            inbox: VecDeque::new(),
            holds: None,
            frames: 0,
            snapshots: 0,
            subscriptions: 0,
            rebuilds: 0,
        }
    }

    /// The configuration its AW database holds, and its stamp.
    pub(super) fn configuration(&self) -> Option<(ContactCenter, ConfigStamp)> {
        block_on(self.db.load_configuration()).expect("an in-memory AW database reads")
    }

    pub(super) fn real_time_digest(&self) -> u128 {
        block_on(self.db.real_time_digest()).expect("an in-memory AW database reads its rows")
    }

    /// The frame the AW database's Feed_State names once the writer has written everything
    /// the distributor received (None while something waits for it).
    fn written_through(&self) -> Option<FeedPosition> {
        if !self.queue.waits_for_feed() || !self.writes.is_empty() {
            return None;
        }
        let state = block_on(self.db.feed_state())
            .expect("an in-memory AW database reads its Feed_State")?;
        Some(FeedPosition {
            generation: state.generation,
            number: state.frame_number,
            recovery_key: state.recovery_key,
        })
    }
}

impl World {
    fn distributor_link(side: usize, distributor: usize, to_distributor: bool) -> LinkId {
        if to_distributor {
            (LINK_SIDE_TO_DISTRIBUTOR, side, distributor)
        } else {
            (LINK_DISTRIBUTOR_TO_SIDE, distributor, side)
        }
    }

    /// The links between the sides and the distributors, for the swizzle.
    pub(super) fn distributor_links(&self) -> Vec<LinkId> {
        let mut links = Vec::new();
        for distributor in 0..self.distributors.len() {
            for side in 0..2 {
                links.push(Self::distributor_link(side, distributor, true));
                links.push(Self::distributor_link(side, distributor, false));
            }
        }
        links
    }

    // ----- the side's end -----

    /// The side's router applied an ordered TimeTick: publish its frame, write due snapshots,
    /// and write every subscription what it waits for.
    pub(super) fn feed_tick(&mut self, side: usize, tick: FeedTick) {
        let feed = &mut self.side_feeds[side];
        let header = match feed.publisher.on_tick(tick) {
            Published::StartedAgain(header) => {
                feed.history.start_at(header.generation, header.number);
                header
            }
            Published::Missed(header) => {
                feed.history.start_at(header.generation, header.number);
                feed.latest = None;
                self.machine_mut(side).feed_start_again();
                return;
            }
            Published::Frame(frame) => {
                feed.history.push(frame.clone());
                let header = frame.header;
                if !self.check_frame(side, &frame) {
                    return;
                }
                header
            }
        };
        let feed = &mut self.side_feeds[side];
        feed.published = (header.generation, header.number);
        feed.latest = Some(header);
        let due: Vec<usize> = feed
            .subscriptions
            .iter()
            .filter(|(_, s)| s.snapshot_due)
            .map(|(&d, _)| d)
            .collect();
        for distributor in due {
            let mut bytes = Vec::new();
            let feed = &mut self.side_feeds[side];
            encode_snapshot(header, feed.publisher.image(), &mut bytes);
            let subscription = feed
                .subscriptions
                .get_mut(&distributor)
                .expect("listed above");
            subscription.snapshot_due = false;
            subscription.cursor.sent(&header);
            self.write_to_distributor(side, distributor, bytes.into());
        }
        let subscribed: Vec<usize> = self.side_feeds[side]
            .subscriptions
            .keys()
            .copied()
            .collect();
        for distributor in subscribed {
            self.serve_distributor(side, distributor);
        }
    }

    /// A frame's number and RecoveryKey name one frame, whichever side computed it, and its
    /// predecessor's RecoveryKey with it: a distributor that holds the predecessor may apply it.
    fn check_frame(&mut self, side: usize, frame: &EncodedFrame) -> bool {
        let header = frame.header;
        let key = (header.generation, header.number, header.recovery_key);
        let hash = xxh3_64(&frame.bytes);
        let previous_key = frame.previous_recovery_key;
        match self.frames_published.get(&key) {
            Some(&(first, first_previous)) if first != hash || first_previous != previous_key => {
                self.violate(
                    "two different frames published under one number and RecoveryKey",
                    format!(
                        "side {} frame {} at {}",
                        side_of(side),
                        header.number,
                        header.recovery_key
                    ),
                );
                false
            }
            Some(_) => true,
            None => {
                if self.frames_published.len() < FRAMES_KEPT_MAX {
                    self.frames_published.insert(key, (hash, previous_key));
                }
                true
            }
        }
    }

    /// Writes the subscription what its cursor says, while the socket has room.
    fn serve_distributor(&mut self, side: usize, distributor: usize) {
        loop {
            let feed = &mut self.side_feeds[side];
            let Some(subscription) = feed.subscriptions.get_mut(&distributor) else {
                return;
            };
            if subscription.snapshot_due {
                return;
            }
            match subscription.cursor.step(&feed.history, feed.published) {
                ServeStep::Send(frame) => {
                    if subscription.unread_bytes > 0
                        && subscription.unread_bytes + frame.bytes.len() > SOCKET_BYTES_MAX
                    {
                        // The socket is full: the writer waits for the distributor to read.
                        return;
                    }
                    subscription.cursor.sent(&frame.header);
                    self.write_to_distributor(side, distributor, frame.bytes.clone().into());
                }
                ServeStep::Wait => return,
                ServeStep::Snapshot => {
                    subscription.snapshot_due = true;
                    return;
                }
                ServeStep::TooSlow => {
                    let reason = "the distributor fell out of the frames kept".to_string();
                    return self.close_subscription(side, distributor, reason);
                }
            }
        }
    }

    fn write_to_distributor(&mut self, side: usize, distributor: usize, bytes: Arc<[u8]>) {
        let Some(subscription) = self.side_feeds[side].subscriptions.get_mut(&distributor) else {
            return;
        };
        subscription.unread_bytes += bytes.len();
        let generation = subscription.generation;
        self.send(
            Self::distributor_link(side, distributor, true),
            Event::ToDistributor {
                distributor,
                generation,
                bytes,
            },
        );
    }

    /// The side ends a subscription with a reason, as `FeedShared::serve` does.
    fn close_subscription(&mut self, side: usize, distributor: usize, reason: String) {
        let mut bytes = Vec::new();
        frame::encode(&SideToDistributor::Closing { reason }, &mut bytes)
            .expect("a closing message encodes");
        self.write_to_distributor(side, distributor, bytes.into());
        self.side_feeds[side].subscriptions.remove(&distributor);
    }

    pub(super) fn side_hears_distributor_hello(
        &mut self,
        side: usize,
        distributor: usize,
        generation: u64,
        held: Option<FeedPosition>,
    ) {
        if !self.runs(side) {
            // Nobody listens: the connection is refused.
            return self.reset_distributor_link(side, distributor, generation, true);
        }
        let replaced = self.side_feeds[side].subscriptions.insert(
            distributor,
            Subscription {
                generation,
                cursor: FeedCursor::new(held),
                snapshot_due: false,
                unread_bytes: 0,
            },
        );
        if let Some(old) = replaced {
            self.reset_distributor_link(side, distributor, old.generation, true);
        }
        self.serve_distributor(side, distributor);
    }

    /// The side's process ends: every subscription's connection resets.
    pub(super) fn side_feed_ends(&mut self, side: usize) {
        let feed = std::mem::take(&mut self.side_feeds[side]);
        for (distributor, subscription) in feed.subscriptions {
            self.reset_distributor_link(side, distributor, subscription.generation, true);
        }
    }

    pub(super) fn reset_distributor_link(
        &mut self,
        side: usize,
        distributor: usize,
        generation: u64,
        to_distributor: bool,
    ) {
        self.send(
            Self::distributor_link(side, distributor, to_distributor),
            Event::DistributorLinkReset {
                side,
                distributor,
                generation,
                to_distributor,
            },
        );
    }

    pub(super) fn distributor_link_reset(
        &mut self,
        side: usize,
        distributor: usize,
        generation: u64,
        to_distributor: bool,
    ) {
        if !to_distributor {
            let feed = &mut self.side_feeds[side];
            if feed
                .subscriptions
                .get(&distributor)
                .is_some_and(|s| s.generation == generation)
            {
                feed.subscriptions.remove(&distributor);
            }
            return;
        }
        let d = &self.distributors[distributor];
        if d.runs && d.link.is_some_and(|l| l.generation == generation) {
            let heard_any = d.link.is_some_and(|l| l.heard_any);
            self.distributor_fails_over(distributor, "the connection reset", !heard_any);
        }
    }

    // ----- the distributor's end -----

    /// The distributor's process: subscribe when it has no subscription, read what came, and
    /// move to the other side when the current one goes silent.
    pub(super) fn distributor_tick(&mut self, distributor: usize) {
        let now = self.now_ms;
        let d = &self.distributors[distributor];
        if !d.runs || d.paused {
            return;
        }
        if !d.queue.waits_for_feed() || !d.writes.is_empty() {
            self.distributor_writes(distributor);
        }
        let d = &self.distributors[distributor];
        let Some(link) = d.link else {
            if now >= d.retry_at_ms {
                self.distributor_subscribes(distributor);
            }
            return;
        };
        if now >= link.last_heard_ms + FEED_SILENCE_MS {
            let reason = format!("no message for {FEED_SILENCE_MS} ms");
            return self.distributor_fails_over(distributor, &reason, false);
        }
        let slow = now < d.slow_until_ms;
        if slow && now < d.next_read_ms {
            return;
        }
        while let Some((generation, bytes)) = self.distributors[distributor].inbox.pop_front() {
            if self.distributors[distributor]
                .link
                .is_none_or(|l| l.generation != generation)
            {
                continue;
            }
            self.distributor_reads(distributor, link.side, generation, &bytes);
            if slow {
                let d = &mut self.distributors[distributor];
                d.next_read_ms = now + d.read_interval_ms;
                break;
            }
        }
    }

    fn distributor_subscribes(&mut self, distributor: usize) {
        self.next_distributor_generation += 1;
        let generation = self.next_distributor_generation;
        let now = self.now_ms;
        let d = &mut self.distributors[distributor];
        let side = d.current;
        d.link = Some(FeedLink {
            side,
            generation,
            last_heard_ms: now,
            heard_any: false,
        });
        d.inbox.clear();
        d.subscriptions += 1;
        let position = d.assembler.position();
        self.trace_line(format!(
            "distributor {distributor} subscribes on side {} holding {position:?}",
            side_of(side)
        ));
        self.send(
            Self::distributor_link(side, distributor, false),
            Event::DistributorHello {
                side,
                distributor,
                generation,
                position,
            },
        );
    }

    /// As `FeedClient::next` on an error: the connection goes, and the feed moves to the
    /// other side. `refused`: no message came on it (after two in a row, a pause first).
    fn distributor_fails_over(&mut self, distributor: usize, reason: &str, refused: bool) {
        let now = self.now_ms;
        let d = &mut self.distributors[distributor];
        let Some(link) = d.link.take() else {
            return;
        };
        d.assembler.connection_lost();
        d.inbox.clear();
        d.current = 1 - link.side;
        if refused {
            d.failed_in_a_row += 1;
            if d.failed_in_a_row >= 2 {
                d.retry_at_ms = now + FEED_RETRY_MS;
            }
        } else {
            d.failed_in_a_row = 0;
        }
        self.trace_line(format!(
            "distributor {distributor} leaves side {}: {reason}",
            side_of(link.side)
        ));
        self.reset_distributor_link(link.side, distributor, link.generation, false);
    }

    pub(super) fn distributor_hears(
        &mut self,
        distributor: usize,
        generation: u64,
        bytes: Arc<[u8]>,
    ) {
        let d = &mut self.distributors[distributor];
        if d.runs && d.link.is_some_and(|l| l.generation == generation) {
            d.inbox.push_back((generation, bytes));
        }
    }

    /// The distributor reads one chunk of what its side wrote: each message in it goes to the
    /// assembler, and each whole snapshot or frame to the AW database.
    fn distributor_reads(
        &mut self,
        distributor: usize,
        side: usize,
        generation: u64,
        bytes: &[u8],
    ) {
        let now = self.now_ms;
        if let Some(link) = self.distributors[distributor].link.as_mut() {
            link.last_heard_ms = now;
            link.heard_any = true;
        }
        if let Some(subscription) = self.side_feeds[side]
            .subscriptions
            .get_mut(&distributor)
            .filter(|s| s.generation == generation)
        {
            subscription.unread_bytes -= bytes.len();
        }
        let mut at = 0;
        while at < bytes.len() {
            let (message, used) = match frame::decode::<SideToDistributor>(&bytes[at..]) {
                Ok(Some(decoded)) => decoded,
                other => {
                    return self.violate(
                        "a side wrote a distributor what is not a whole message",
                        format!(
                            "side {} to distributor {distributor}: {other:?}",
                            side_of(side)
                        ),
                    );
                }
            };
            at += used;
            match self.distributors[distributor].assembler.on_message(message) {
                Ok(None) => {}
                Ok(Some(update)) => {
                    if !self.distributor_applies(distributor, side, update) {
                        return;
                    }
                }
                Err(FeedError::Closed(reason)) => {
                    return self.distributor_fails_over(distributor, &reason, false);
                }
                Err(error) => {
                    return self.violate(
                        "feed frames gap-free per distributor",
                        format!(
                            "side {} to distributor {distributor}: {error}",
                            side_of(side)
                        ),
                    );
                }
            }
        }
        if self.side_feeds[side]
            .subscriptions
            .get(&distributor)
            .is_some_and(|s| s.generation == generation)
        {
            self.serve_distributor(side, distributor);
        }
    }

    /// Applies a whole snapshot or frame: the configuration decision, then one transaction of
    /// the AW database. Returns false once a violation is found.
    fn distributor_applies(&mut self, distributor: usize, side: usize, update: FeedUpdate) -> bool {
        let header = *update.header();
        let key = (header.generation, header.number, header.recovery_key);
        if let FeedUpdate::Frame { .. } = &update {
            // The frame must follow the one the tables hold, in the same history.
            let held = self.distributors[distributor].holds;
            let previous = self.frames_published.get(&key).map(|&(_, p)| p);
            let follows = held.is_some_and(|h| {
                h.generation == header.generation && h.number + 1 == header.number
            }) && previous.is_none_or(|p| p == held.map(|h| h.recovery_key));
            if !follows {
                self.violate(
                    "feed frames gap-free per distributor",
                    format!(
                        "distributor {distributor} holds {held:?} and got frame {} at {} from \
                         side {}, which follows the frame at {previous:?}",
                        header.number,
                        header.recovery_key,
                        side_of(side)
                    ),
                );
                return false;
            }
        }
        let changes = match &update {
            FeedUpdate::Snapshot { .. } => &[][..],
            FeedUpdate::Frame { delta, .. } => &delta.config_changes[..],
        };
        let d = &mut self.distributors[distributor];
        let mut config = None;
        match d.updateaw.on_frame(&header, changes) {
            ConfigDecision::UpToDate => {}
            ConfigDecision::Apply {
                changes,
                config: stamp,
            } => config = Some((changes, stamp)),
            ConfigDecision::Rebuild { reason } | ConfigDecision::RebuildLoop { reason } => {
                self.trace_line(format!("distributor {distributor} rebuilds: {reason}"));
                self.distributor_rebuilds(distributor);
            }
        }
        let d = &mut self.distributors[distributor];
        match &update {
            FeedUpdate::Snapshot { .. } => d.snapshots += 1,
            FeedUpdate::Frame { .. } => d.frames += 1,
        }
        d.writes.push_back(WriteItem::Feed {
            update: Arc::new(update),
            config,
            side: side_of(side).to_string().to_lowercase(),
        });
        self.distributor_writes(distributor);
        let d = &mut self.distributors[distributor];
        d.holds = Some(header.position());
        true
    }

    /// The configuration copy mismatched the feed: copy the ordering side's configuration
    /// again, as `initialize` does with the answer to `ExportConfig`.
    fn distributor_rebuilds(&mut self, distributor: usize) {
        let ordering = (0..2).find(|&s| {
            self.runs(s) && {
                let sync = self.machine(s).sync();
                sync.state().is_enabled() && !sync.needs_state()
            }
        });
        let Some(side) = ordering else {
            // No side answers: the next frame tries again.
            return;
        };
        let AdminReply::Configuration {
            contact_center,
            config_version,
            config_recovery_key,
            recovery_key,
        } = self.machine(side).export_config()
        else {
            // The side is taking its peer's state: the next frame tries again.
            return;
        };
        let (cc, config) = (
            *contact_center,
            ConfigStamp {
                version: config_version,
                recovery_key: config_recovery_key,
            },
        );
        let d = &mut self.distributors[distributor];
        d.writes.push_back(WriteItem::Configuration {
            contact_center: Box::new(cc),
            config,
        });
        d.updateaw.initialized(config, recovery_key, true);
        d.rebuilds += 1;
    }

    /// The distributor's writer, as `tandem distributor`'s: the product's `AwWriteQueue` (a
    /// configuration copy alone, frames merged into one transaction with `write_batch`). A write
    /// the database refuses is tried again later, frames with what came meanwhile merged in.
    pub(super) fn distributor_writes(&mut self, distributor: usize) {
        let now = self.now_ms;
        let d = &mut self.distributors[distributor];
        if now < d.write_retry_at_ms {
            return;
        }
        let failed = loop {
            let Some(job) = d.queue.next_job(|| d.writes.pop_front()) else {
                break None;
            };
            let batch = match job {
                AwWriteJob::Configuration {
                    contact_center,
                    config,
                } => match block_on(d.db.replace_configuration(&contact_center, config)) {
                    Ok(()) => continue,
                    Err(e) => {
                        d.queue.configuration_refused(contact_center, config);
                        d.write_retry_at_ms = now + INITIALIZE_RETRY_MS;
                        break Some(format!("the configuration: {e}"));
                    }
                },
                AwWriteJob::Feed(batch) => batch,
            };
            if let Err((batch, e)) = block_on(write_batch(&d.db, batch, &mut d.feed_state, now)) {
                let number = batch.header.number;
                if d.queue.batch_refused(batch, &e) == Refusal::LeftOut {
                    // The product would start over from a snapshot; nothing in the simulation
                    // makes a write fail for good, so one that does is a bug.
                    let detail = format!("distributor {distributor}, frame {number}: {e}");
                    self.violate("the AW database refuses no write for good", detail);
                    return;
                }
                d.write_retry_at_ms = now + AW_WRITE_RETRY_MS;
                break Some(format!("frame {number}: {e}"));
            }
        };
        if let Some(what) = failed {
            self.distributors[distributor].write_failures += 1;
            self.trace_line(format!("distributor {distributor} could not write {what}"));
        }
    }

    /// The AW database's disk refuses writes, or takes them again.
    pub(super) fn set_aw_db_refuses_writes(&mut self, distributor: usize, refuse: bool) {
        let d = &mut self.distributors[distributor];
        if d.refuses_writes == refuse {
            return;
        }
        block_on(d.db.refuse_writes(refuse))
            .expect("an in-memory SQLite database takes the switch");
        d.refuses_writes = refuse;
        self.trace_line(format!(
            "AW database of distributor {distributor} {}",
            if refuse {
                "read-only"
            } else {
                "takes writes again"
            }
        ));
    }

    pub(super) fn crash_distributor(&mut self, distributor: usize) {
        if !self.distributors[distributor].runs {
            return;
        }
        self.trace_line(format!("distributor {distributor} down"));
        let d = &mut self.distributors[distributor];
        d.runs = false;
        d.paused = false;
        d.held.clear();
        d.inbox.clear();
        d.slow_until_ms = 0;
        // What waited for the writer dies with the process.
        d.writes.clear();
        d.queue = AwWriteQueue::default();
        d.write_retry_at_ms = 0;
        if let Some(link) = d.link.take() {
            self.reset_distributor_link(link.side, distributor, link.generation, false);
        }
    }

    /// A distributor starts: its feed position is gone with the process (it asks for a
    /// snapshot), its AW database and the configuration version it holds are not.
    pub(super) fn restart_distributor(&mut self, distributor: usize) {
        let d = &mut self.distributors[distributor];
        if d.runs {
            return;
        }
        let local = block_on(d.db.config()).expect("an in-memory AW database reads");
        d.runs = true;
        d.assembler = FeedAssembler::default();
        d.updateaw = UpdateAw::new(local);
        d.feed_state = FeedState::default();
        d.current = d.preferred;
        d.failed_in_a_row = 0;
        d.retry_at_ms = 0;
        d.holds = None;
        self.trace_line(format!("distributor {distributor} starts"));
    }

    pub(super) fn pause_distributor(&mut self, distributor: usize, for_ms: u64) {
        let d = &mut self.distributors[distributor];
        if d.runs && !d.paused {
            d.paused = true;
            self.trace_line(format!("distributor {distributor} stops"));
            self.schedule(self.now_ms + for_ms, Event::DistributorResume(distributor));
        }
    }

    /// The distributor's process goes on. Its read, waiting with a timeout, finds the bytes that
    /// came meanwhile before the timeout fires (tokio polls the read first); a reset that came
    /// after them is seen after them.
    pub(super) fn resume_distributor(&mut self, distributor: usize) {
        let now = self.now_ms;
        let d = &mut self.distributors[distributor];
        if !d.paused {
            return;
        }
        d.paused = false;
        if let Some(link) = d.link.as_mut().filter(|_| !d.inbox.is_empty()) {
            link.last_heard_ms = now;
        }
        self.trace_line(format!("distributor {distributor} goes on"));
        self.distributor_tick(distributor);
        while let Some(event) = self.distributors[distributor].held.pop_front() {
            self.handle(event);
        }
    }

    pub(super) fn slow_distributor(&mut self, distributor: usize, for_ms: u64) {
        let read_interval_ms = self.distributor_rng.random_range(50..400);
        let d = &mut self.distributors[distributor];
        if d.runs {
            d.slow_until_ms = self.now_ms + for_ms;
            d.read_interval_ms = read_interval_ms;
        }
    }

    /// At the end: every distributor holds the enabled side's latest frame within
    /// `DISTRIBUTOR_CATCH_UP_MS_MAX`, its writer has written it (Feed_State names it), and
    /// its AW database's real-time rows are the router's.
    pub(super) fn check_distributors(&mut self, enabled: usize) {
        for _ in 0..DISTRIBUTOR_CATCH_UP_MS_MAX {
            let latest = self.side_feeds[enabled].latest;
            let caught_up = latest.is_some_and(|h| {
                self.distributors.iter().all(|d| {
                    d.holds == Some(h.position()) && d.written_through() == Some(h.position())
                })
            });
            let router = self.machine(enabled).router();
            if caught_up && router.feed_frame_number() == latest.expect("caught up").number {
                let rows: Vec<_> = router.feed_rows().collect();
                let router_digest = tandem_db::aw::rows_digest(&rows);
                for distributor in 0..self.distributors.len() {
                    let digest = self.distributors[distributor].real_time_digest();
                    if digest != router_digest {
                        return self.violate(
                            "AW database real-time rows equal the router's after quiescence",
                            format!(
                                "distributor {distributor} at {latest:?}: digest {digest:032x}, \
                                 side {}'s router {router_digest:032x}",
                                side_of(enabled)
                            ),
                        );
                    }
                }
                return;
            }
            self.step();
            if self.violation.is_some() {
                return;
            }
        }
        let holds: Vec<_> = self
            .distributors
            .iter()
            .map(|d| (d.holds, d.written_through()))
            .collect();
        self.violate(
            "liveness: every distributor holds the latest frame after the faults heal",
            format!(
                "side {} published {:?}; the distributors hold, and have written, {holds:?}",
                side_of(enabled),
                self.side_feeds[enabled].latest
            ),
        );
    }
}
