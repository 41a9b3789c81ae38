//! rtsrvr: the real-time feed from this side's router to the distributors.
//!
//! At every ordered TimeTick the core hands the feed a copy-on-write snapshot of the router
//! (`FeedCore::tick`, O(1)) with the frame's header and the configuration changes accepted since
//! the last tick. The feed's own thread computes the frame as the difference from the previous
//! tick's snapshot (`Router::feed_delta`), encodes it once into wire messages and appends it to
//! a bounded history. Each subscribed distributor has a task that writes frames from the
//! history to its socket, or first a snapshot computed from the latest tick's router when the
//! history lacks the frames it asks for. So the core never waits for a distributor, a slow one
//! falls out of the history and is told so, and every distributor reads the same bytes.
//!
//! Both sides compute the same frames: a frame depends only on the router's states at two
//! consecutive ticks and the ordered configuration changes between them. A side whose state was
//! replaced (a state transfer), or whose feed thread fell behind, starts again from its next
//! tick: it emits no frame for that tick, and answers requests for earlier frames with a
//! snapshot.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tandem_mds::frame::{self, FRAME_PAYLOAD_BYTES_MAX};
use tandem_mds::protocol::SideToDistributor;
use tandem_model::feed::*;
use tandem_router::Router;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::watch;
use tracing::{debug, warn};

/// Frames kept for distributors that resume: five minutes of 100 ms ticks.
pub const FEED_HISTORY_FRAMES_MAX: usize = 3_000;
/// Encoded bytes of frames kept; the oldest go first.
pub const FEED_HISTORY_BYTES_MAX: usize = 256 << 20;
/// Ticks the core may hand the feed thread before it waits no more and skips ticks: the feed
/// then starts again from a later tick.
pub const FEED_TICKS_QUEUED_MAX: usize = 64;
/// Distributors subscribed at once; more are refused with a reason.
pub const FEED_SUBSCRIBERS_MAX: usize = 64;
/// A write of one frame to a distributor that takes longer than this ends the subscription:
/// the distributor is too slow (or gone silent) and resubscribes.
pub const FEED_WRITE_TIMEOUT_MS: u64 = 10_000;

/// One frame, encoded once as the wire messages of its parts.
#[derive(Debug)]
pub struct EncodedFrame {
    pub header: FeedFrameHeader,
    pub rows: usize,
    pub bytes: Vec<u8>,
}

/// The frames kept: a run of consecutive numbers of one generation.
#[derive(Debug, Default)]
struct History {
    frames: VecDeque<Arc<EncodedFrame>>,
    bytes: usize,
    /// The tick the feed last started again at (generation, number): it has no frame, and
    /// neither has anything before it.
    started_at: (u64, u64),
}

impl History {
    /// The feed starts again at this tick.
    fn start_at(&mut self, generation: u64, number: u64) {
        self.frames.clear();
        self.bytes = 0;
        self.started_at = (generation, number);
    }

    fn push(&mut self, frame: Arc<EncodedFrame>) {
        if let Some(last) = self.frames.back() {
            // The feed thread pushes consecutive frames only; anything else starts again.
            if last.header.generation != frame.header.generation
                || last.header.number + 1 != frame.header.number
            {
                self.start_at(
                    frame.header.generation,
                    frame.header.number.saturating_sub(1),
                );
            }
        }
        self.bytes += frame.bytes.len();
        self.frames.push_back(frame);
        while self.frames.len() > FEED_HISTORY_FRAMES_MAX
            || (self.bytes > FEED_HISTORY_BYTES_MAX && self.frames.len() > 1)
        {
            let old = self.frames.pop_front().expect("more than one frame");
            self.bytes -= old.bytes.len();
        }
    }

    /// Whether frame `number` of `generation` was computed since the feed last started, yet
    /// is no longer kept: a reader that needs it is too slow for the bounds.
    fn evicted(&self, generation: u64, number: u64) -> bool {
        let Some(first) = self.frames.front() else {
            return false;
        };
        first.header.generation == generation
            && self.started_at.0 == generation
            && number > self.started_at.1
            && number < first.header.number
    }

    /// Frame `number` of `generation`, if kept.
    fn get(&self, generation: u64, number: u64) -> Option<Arc<EncodedFrame>> {
        let first = self.frames.front()?;
        if first.header.generation != generation || number < first.header.number {
            return None;
        }
        let frame = self.frames.get((number - first.header.number) as usize)?;
        debug_assert_eq!(frame.header.number, number);
        Some(frame.clone())
    }
}

/// What the feed thread shares with the subscribers' tasks.
pub struct FeedShared {
    history: Mutex<History>,
    /// The router at the latest tick the feed thread took, for snapshots.
    latest: Mutex<Option<(FeedFrameHeader, Router)>>,
    /// The latest frame's (generation, number): subscribers wait on it.
    published: watch::Sender<(u64, u64)>,
    subscribers: Mutex<usize>,
    status: Mutex<FeedStatus>,
}

/// What `rttest feed` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedStatus {
    pub generation: u64,
    pub latest_frame: u64,
    pub frames_kept: usize,
    pub bytes_kept: usize,
    pub ticks_skipped: u64,
    pub restarts: u64,
    pub subscribers: usize,
    pub snapshots_sent: u64,
    pub slow_disconnects: u64,
}

/// A tick handed to the feed thread.
struct Tick {
    header: FeedFrameHeader,
    router: Router,
    config_changes: Vec<VersionedConfigChange>,
    /// The router's state was replaced (or ticks were skipped) since the previous tick handed
    /// over: this tick starts the feed again and has no frame.
    restart: bool,
}

/// The core's half: cheap, never blocks.
pub struct FeedCore {
    ticks: SyncSender<Tick>,
    config_changes: Vec<VersionedConfigChange>,
    restart: bool,
    shared: Arc<FeedShared>,
}

impl FeedCore {
    /// Starts the feed thread.
    pub fn start() -> std::io::Result<FeedCore> {
        let (ticks, received) = sync_channel(FEED_TICKS_QUEUED_MAX);
        let (published, _) = watch::channel((0, 0));
        let shared = Arc::new(FeedShared {
            history: Mutex::new(History::default()),
            latest: Mutex::new(None),
            published,
            subscribers: Mutex::new(0),
            status: Mutex::new(FeedStatus::default()),
        });
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("rtsrvr".into())
            .spawn(move || feed_thread(received, &thread_shared))?;
        Ok(FeedCore {
            ticks,
            config_changes: Vec::new(),
            restart: true,
            shared,
        })
    }

    pub fn shared(&self) -> Arc<FeedShared> {
        self.shared.clone()
    }

    /// A configuration change the router accepted: it goes with the next frame.
    pub fn config_applied(&mut self, change: VersionedConfigChange) {
        self.config_changes.push(change);
    }

    /// The router's state was replaced: the next tick starts the feed again.
    pub fn restart(&mut self) {
        self.restart = true;
        self.config_changes.clear();
    }

    /// The router applied an ordered TimeTick.
    pub fn tick(&mut self, router: &Router, generation: u64, epoch: u64, recovery_key: u64) {
        let header = FeedFrameHeader {
            generation,
            number: router.feed_frame_number(),
            epoch,
            config_version: router.config_version(),
            time_ms: router.now_ms(),
            recovery_key,
        };
        let tick = Tick {
            header,
            router: router.clone(),
            config_changes: std::mem::take(&mut self.config_changes),
            restart: self.restart,
        };
        match self.ticks.try_send(tick) {
            Ok(()) => self.restart = false,
            Err(TrySendError::Full(_)) => {
                // The changes of a skipped tick are in no frame: distributors see the
                // configuration version move past theirs and rebuild their copy.
                self.restart = true;
                self.shared.status.lock().unwrap().ticks_skipped += 1;
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn feed_thread(ticks: Receiver<Tick>, shared: &FeedShared) {
    let mut previous: Option<(FeedFrameHeader, Router)> = None;
    while let Ok(tick) = ticks.recv() {
        let follows = previous.as_ref().is_some_and(|(header, _)| {
            header.generation == tick.header.generation && header.number + 1 == tick.header.number
        });
        if follows && !tick.restart {
            let (_, base) = previous.as_ref().expect("checked above");
            let mut delta = tick.router.feed_delta(base);
            delta.config_changes = tick.config_changes;
            let frame = Arc::new(encode_frame(tick.header, &delta));
            let mut history = shared.history.lock().unwrap();
            history.push(frame);
            let mut status = shared.status.lock().unwrap();
            status.frames_kept = history.frames.len();
            status.bytes_kept = history.bytes;
        } else {
            debug!(frame = tick.header.number, "the feed starts again");
            let mut status = shared.status.lock().unwrap();
            status.restarts += 1;
            shared
                .history
                .lock()
                .unwrap()
                .start_at(tick.header.generation, tick.header.number);
            status.frames_kept = 0;
            status.bytes_kept = 0;
        }
        {
            let mut status = shared.status.lock().unwrap();
            status.generation = tick.header.generation;
            status.latest_frame = tick.header.number;
        }
        *shared.latest.lock().unwrap() = Some((tick.header, tick.router.clone()));
        previous = Some((tick.header, tick.router));
        shared
            .published
            .send_replace((tick.header.generation, tick.header.number));
    }
}

/// Room left in a message for what surrounds a part's rows (the header, part number, flags).
const PART_OVERHEAD_BYTES: usize = 1_024;

/// Cuts `items` into parts of at most `FEED_PART_ROWS_MAX` items and about
/// `FEED_PART_BYTES_MAX` encoded bytes (a single larger item gets a part of its own). An item
/// too large for any message (none the router produces) is left out with a warning; for a
/// configuration change, the distributors' check of the configuration version then sees the
/// gap and rebuilds their copy.
fn cut_parts<T: Serialize>(items: impl IntoIterator<Item = T>, frame_number: u64) -> Vec<Vec<T>> {
    let mut parts = Vec::new();
    let mut current = Vec::new();
    let mut current_bytes = 0;
    for item in items {
        let bytes = frame::payload_len(&item);
        if bytes > FRAME_PAYLOAD_BYTES_MAX - PART_OVERHEAD_BYTES {
            warn!(
                frame = frame_number,
                bytes, "a feed item too large for a message was left out"
            );
            continue;
        }
        if !current.is_empty()
            && (current.len() >= FEED_PART_ROWS_MAX || current_bytes + bytes > FEED_PART_BYTES_MAX)
        {
            parts.push(std::mem::take(&mut current));
            current_bytes = 0;
        }
        current_bytes += bytes;
        current.push(item);
    }
    if !current.is_empty() || parts.is_empty() {
        parts.push(current);
    }
    parts
}

/// One entry of a frame, in the order a frame lists them.
#[derive(Serialize)]
enum DeltaItem<'a> {
    Change(&'a VersionedConfigChange),
    Upsert(&'a FeedRow),
    Delete(FeedKey),
}

/// Encodes `delta` as the wire messages of a frame's parts.
pub fn encode_frame(header: FeedFrameHeader, delta: &FeedDelta) -> EncodedFrame {
    let items = delta
        .config_changes
        .iter()
        .map(DeltaItem::Change)
        .chain(delta.upserts.iter().map(DeltaItem::Upsert))
        .chain(delta.deletes.iter().copied().map(DeltaItem::Delete));
    let parts = cut_parts(items, header.number);
    let count = parts.len();
    let mut bytes = Vec::new();
    for (part, items) in parts.into_iter().enumerate() {
        let mut delta = FeedDelta::default();
        for item in items {
            match item {
                DeltaItem::Change(change) => delta.config_changes.push(change.clone()),
                DeltaItem::Upsert(row) => delta.upserts.push(row.clone()),
                DeltaItem::Delete(key) => delta.deletes.push(key),
            }
        }
        let message = SideToDistributor::Frame {
            header,
            part: part as u32,
            last: part + 1 == count,
            delta,
        };
        if let Err(e) = frame::encode(&message, &mut bytes) {
            warn!(
                frame = header.number,
                "a part of a feed frame was left out: {e}"
            );
        }
    }
    EncodedFrame {
        header,
        rows: delta.rows(),
        bytes,
    }
}

/// Encodes every row of `router` as the wire messages of a snapshot at `header`; returns the
/// rows.
pub fn encode_snapshot(header: FeedFrameHeader, router: &Router, out: &mut Vec<u8>) -> usize {
    let parts = cut_parts(router.feed_rows(), header.number);
    let count = parts.len();
    let mut rows = 0;
    for (part, part_rows) in parts.into_iter().enumerate() {
        rows += part_rows.len();
        let message = SideToDistributor::Snapshot {
            header,
            part: part as u32,
            last: part + 1 == count,
            rows: part_rows,
        };
        if let Err(e) = frame::encode(&message, out) {
            warn!(
                frame = header.number,
                "a part of a feed snapshot was left out: {e}"
            );
        }
    }
    rows
}

impl FeedShared {
    pub fn status(&self) -> FeedStatus {
        let mut status = self.status.lock().unwrap().clone();
        status.subscribers = *self.subscribers.lock().unwrap();
        status
    }

    /// Serves one subscribed distributor until it goes or falls behind: the frames after
    /// `last_frame` from the history, or a snapshot, then each new frame.
    pub async fn serve<W: AsyncWrite + Unpin>(
        self: Arc<Self>,
        name: String,
        generation: u64,
        last_frame: Option<u64>,
        mut write: W,
    ) {
        let admitted = {
            let mut subscribers = self.subscribers.lock().unwrap();
            let admitted = *subscribers < FEED_SUBSCRIBERS_MAX;
            if admitted {
                *subscribers += 1;
            }
            admitted
        };
        if !admitted {
            let reason = format!("this side serves at most {FEED_SUBSCRIBERS_MAX} distributors");
            let _ = close(&mut write, reason).await;
            return;
        }
        let reason = self
            .clone()
            .serve_frames(generation, last_frame, &mut write)
            .await;
        *self.subscribers.lock().unwrap() -= 1;
        if let Some(reason) = reason {
            warn!(distributor = %name, "{reason}");
            let _ = close(&mut write, reason).await;
        } else {
            debug!(distributor = %name, "the distributor left the feed");
        }
    }

    /// Returns why the subscription ended, when the side ends it.
    async fn serve_frames<W: AsyncWrite + Unpin>(
        self: Arc<Self>,
        generation: u64,
        last_frame: Option<u64>,
        write: &mut W,
    ) -> Option<String> {
        let mut published = self.published.subscribe();
        // The first frame to send: the one after the distributor's, if kept.
        let mut next = last_frame.and_then(|last| {
            self.history
                .lock()
                .unwrap()
                .get(generation, last + 1)
                .map(|frame| (frame.header.generation, frame.header.number))
        });
        loop {
            let (generation, number) = match next {
                Some(position) => position,
                None => {
                    // Wait for a tick to snapshot, then send every row at it.
                    let latest = loop {
                        let latest = self.latest.lock().unwrap().clone();
                        if let Some(latest) = latest {
                            break latest;
                        }
                        if published.changed().await.is_err() {
                            return None;
                        }
                    };
                    let (header, router) = latest;
                    let bytes = tokio::task::spawn_blocking(move || {
                        let mut bytes = Vec::new();
                        encode_snapshot(header, &router, &mut bytes);
                        bytes
                    })
                    .await
                    .ok()?;
                    if !self.write_timed(write, &bytes).await {
                        return Some(self.slow("a snapshot"));
                    }
                    self.status.lock().unwrap().snapshots_sent += 1;
                    next = Some((header.generation, header.number + 1));
                    continue;
                }
            };
            let frame = self.history.lock().unwrap().get(generation, number);
            match frame {
                Some(frame) => {
                    if !self.write_timed(write, &frame.bytes).await {
                        return Some(self.slow(&format!("frame {number}")));
                    }
                    next = Some((generation, number + 1));
                }
                None => {
                    let (latest_generation, latest) = *published.borrow_and_update();
                    let evicted = self.history.lock().unwrap().evicted(generation, number);
                    if latest_generation == generation && latest < number {
                        // Not computed yet: wait for the next tick.
                        if published.changed().await.is_err() {
                            return None;
                        }
                    } else if evicted {
                        // The history moved on while this distributor read: it is too slow
                        // for the feed.
                        return Some(self.slow(&format!(
                            "frames more than {FEED_HISTORY_FRAMES_MAX} ticks behind"
                        )));
                    } else {
                        // The feed started again (a new state, or skipped ticks): a snapshot.
                        next = None;
                    }
                }
            }
        }
    }

    async fn write_timed<W: AsyncWrite + Unpin>(&self, write: &mut W, bytes: &[u8]) -> bool {
        matches!(
            tokio::time::timeout(
                Duration::from_millis(FEED_WRITE_TIMEOUT_MS),
                write.write_all(bytes)
            )
            .await,
            Ok(Ok(()))
        )
    }

    fn slow(&self, what: &str) -> String {
        self.status.lock().unwrap().slow_disconnects += 1;
        format!(
            "the distributor took {what} too slowly (over {FEED_WRITE_TIMEOUT_MS} ms): \
             subscription ended; subscribe again for a snapshot"
        )
    }
}

async fn close<W: AsyncWrite + Unpin>(write: &mut W, reason: String) -> std::io::Result<()> {
    let mut bytes = Vec::new();
    frame::encode(&SideToDistributor::Closing { reason }, &mut bytes)
        .map_err(std::io::Error::other)?;
    tokio::time::timeout(Duration::from_millis(FEED_WRITE_TIMEOUT_MS), async {
        write.write_all(&bytes).await?;
        write.shutdown().await
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use tandem_mds::transport::FrameReader;
    use tandem_model::domain::AgentState;
    use tandem_model::generate::{generate, GenerateParams};
    use tandem_model::input::{Input, OrderedInput};

    const START_MS: u64 = 1_795_255_200_000;
    const GENERATION: u64 = 7;
    const WAIT_MS: u64 = 10_000;

    /// A router whose agents log in one per tick, ticks handed to a feed.
    struct Driver {
        router: Router,
        core: FeedCore,
        seq: u64,
        now_ms: u64,
        agents: Vec<tandem_model::ids::AgentId>,
    }

    impl Driver {
        fn new() -> Driver {
            let cc = generate(&GenerateParams {
                agents: 40,
                ..GenerateParams::default()
            });
            let mut driver = Driver {
                router: Router::from_contact_center(&cc, START_MS).unwrap(),
                core: FeedCore::start().unwrap(),
                seq: 0,
                now_ms: START_MS,
                agents: cc.agents.iter().map(|a| a.id).collect(),
            };
            for p in &cc.peripherals {
                driver.apply(Input::PeripheralOnline { peripheral: p.id });
            }
            driver.tick();
            driver
        }

        fn apply(&mut self, input: Input) {
            self.seq += 1;
            self.router.apply(
                self.seq,
                &OrderedInput {
                    time_ms: self.now_ms,
                    input,
                },
            );
        }

        fn tick(&mut self) {
            self.now_ms += 100;
            self.apply(Input::TimeTick);
            self.core.tick(&self.router, GENERATION, 1, self.seq);
        }

        /// Logs the next agent in, then ticks.
        fn step(&mut self) {
            let agent = self.agents.remove(0);
            self.apply(Input::AgentLogin {
                agent,
                state: AgentState::Ready,
                reason_code: 0,
            });
            self.tick();
        }

        fn subscribe(
            &self,
            last_frame: Option<u64>,
        ) -> FrameReader<tokio::io::DuplexStream, SideToDistributor> {
            self.subscribe_to(GENERATION, last_frame)
        }

        fn subscribe_to(
            &self,
            generation: u64,
            last_frame: Option<u64>,
        ) -> FrameReader<tokio::io::DuplexStream, SideToDistributor> {
            let (ours, theirs) = tokio::io::duplex(1 << 20);
            tokio::spawn(
                self.core
                    .shared()
                    .serve("aw1".into(), generation, last_frame, theirs),
            );
            FrameReader::new(ours)
        }
    }

    async fn next(
        reader: &mut FrameReader<tokio::io::DuplexStream, SideToDistributor>,
    ) -> SideToDistributor {
        tokio::time::timeout(Duration::from_millis(WAIT_MS), reader.next())
            .await
            .expect("a message in time")
            .expect("a well-formed message")
            .expect("the side keeps the subscription")
    }

    /// Reads until the image holds frame `through`; returns the image and whether the
    /// subscription began with a snapshot.
    async fn read_through(
        reader: &mut FrameReader<tokio::io::DuplexStream, SideToDistributor>,
        image: &mut BTreeMap<FeedKey, FeedRow>,
        mut at: Option<u64>,
        through: u64,
    ) -> Vec<u64> {
        let mut frames = Vec::new();
        while at != Some(through) {
            match next(reader).await {
                SideToDistributor::Snapshot {
                    header, rows, part, ..
                } => {
                    if part == 0 {
                        image.clear();
                    }
                    image.extend(rows.into_iter().map(|row| (row.key(), row)));
                    at = Some(header.number);
                }
                SideToDistributor::Frame {
                    header,
                    delta,
                    last,
                    ..
                } => {
                    if let Some(at) = at {
                        assert_eq!(header.number, at + 1, "frames follow each other");
                    }
                    for key in delta.deletes {
                        image.remove(&key);
                    }
                    image.extend(delta.upserts.into_iter().map(|row| (row.key(), row)));
                    assert!(last, "a small frame has one part");
                    frames.push(header.number);
                    at = Some(header.number);
                }
                SideToDistributor::Closing { reason } => panic!("closed: {reason}"),
            }
        }
        frames
    }

    fn rows(router: &Router) -> BTreeMap<FeedKey, FeedRow> {
        router.feed_rows().map(|row| (row.key(), row)).collect()
    }

    #[tokio::test]
    async fn a_subscriber_gets_a_snapshot_then_every_frame_and_resumes_from_the_history() {
        let mut d = Driver::new();
        d.step();
        let mut first = d.subscribe(None);
        let mut image = BTreeMap::new();
        for _ in 0..10 {
            d.step();
        }
        let through = d.router.feed_frame_number();
        read_through(&mut first, &mut image, None, through).await;
        assert_eq!(image, rows(&d.router));
        assert!(
            image
                .keys()
                .filter(|k| k.table() == FeedTable::AgentRealTime)
                .count()
                >= 11
        );

        // A distributor that held frame `through - 5` resumes with the frames after it.
        let mut resumed = d.subscribe(Some(through - 5));
        match next(&mut resumed).await {
            SideToDistributor::Frame { header, .. } => assert_eq!(header.number, through - 4),
            other => panic!("expected frame {}, got {other:?}", through - 4),
        }
        // One that held the feed's first tick (which has no frame) resumes after it too; one
        // of another generation (a cold start since) gets a snapshot.
        let mut oldest = d.subscribe(Some(1));
        match next(&mut oldest).await {
            SideToDistributor::Frame { header, .. } => assert_eq!(header.number, 2),
            other => panic!("expected frame 2, got {other:?}"),
        }
        let mut stale = d.subscribe_to(GENERATION + 1, Some(through));
        assert!(matches!(
            next(&mut stale).await,
            SideToDistributor::Snapshot { .. }
        ));
        let status = d.core.shared().status();
        assert_eq!(status.latest_frame, through);
        assert_eq!(status.subscribers, 4);
        assert!(status.snapshots_sent >= 1);
    }

    #[tokio::test]
    async fn a_replaced_state_starts_the_feed_again() {
        let mut d = Driver::new();
        for _ in 0..3 {
            d.step();
        }
        let mut reader = d.subscribe(None);
        let mut image = BTreeMap::new();
        let through = d.router.feed_frame_number();
        read_through(&mut reader, &mut image, None, through).await;
        // The state is replaced: the next tick has no frame, and the subscriber, waiting for
        // it, gets a snapshot at a later tick instead.
        d.core.restart();
        d.step();
        d.step();
        let through = d.router.feed_frame_number();
        let mut saw_snapshot = false;
        while !saw_snapshot {
            if let SideToDistributor::Snapshot {
                header, rows, part, ..
            } = next(&mut reader).await
            {
                assert_eq!(part, 0);
                assert!(header.number > through - 2);
                image = rows.into_iter().map(|row| (row.key(), row)).collect();
                saw_snapshot = header.number == through;
                if !saw_snapshot {
                    read_through(&mut reader, &mut image, Some(header.number), through).await;
                    saw_snapshot = true;
                }
            }
        }
        assert_eq!(image, rows(&d.router));
        assert_eq!(d.core.shared().status().restarts, 2);
    }

    #[test]
    fn large_frames_are_cut_into_parts_that_each_fit() {
        let rows: Vec<FeedRow> = (0..(FEED_PART_ROWS_MAX as u32 * 2 + 5))
            .map(|i| {
                FeedRow::Peripheral(PeripheralRealTimeRow {
                    peripheral_id: tandem_model::ids::PeripheralId(i),
                    online: true,
                    online_since_ms: 1,
                    agents_logged_on: 2,
                    calls_in_progress: 3,
                })
            })
            .collect();
        let header = FeedFrameHeader {
            generation: 1,
            number: 9,
            epoch: 1,
            config_version: 1,
            time_ms: 1,
            recovery_key: 1,
        };
        let delta = FeedDelta {
            upserts: rows.clone(),
            deletes: vec![FeedKey::Agent(tandem_model::ids::AgentId(4))],
            config_changes: vec![],
        };
        let encoded = encode_frame(header, &delta);
        let mut buffer = encoded.bytes.as_slice();
        let mut decoded = FeedDelta::default();
        let mut parts = Vec::new();
        while !buffer.is_empty() {
            let (message, len): (SideToDistributor, usize) =
                frame::decode(buffer).unwrap().unwrap();
            buffer = &buffer[len..];
            let SideToDistributor::Frame {
                part, last, delta, ..
            } = message
            else {
                panic!("a frame part");
            };
            parts.push((part, last));
            decoded.upserts.extend(delta.upserts);
            decoded.deletes.extend(delta.deletes);
        }
        assert_eq!(parts, vec![(0, false), (1, false), (2, true)]);
        assert_eq!(decoded, delta);
    }
}
