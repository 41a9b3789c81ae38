//! rtsrvr: the real-time feed from this side's router to the distributors.
//!
//! At every ordered TimeTick the core drains the router's change logs
//! (`Router::feed_changes`: the rows written since the last tick, read as they are now) and
//! hands them, with the frame's header and the configuration changes accepted since the last
//! tick, to the feed's own thread over a bounded channel. That thread keeps the image of every
//! row it has published; the frame is what differs from it (rows new or changed, rows gone). It
//! encodes the frame once into wire messages and appends it to a bounded history. Each
//! subscribed distributor has a task that writes frames from the history to its socket, or
//! first a snapshot of the image when the history lacks the frames it asks for. So the core
//! copies nothing per tick and never waits for a distributor, a slow distributor falls out of
//! the history and is told so, and every distributor reads the same bytes.
//!
//! Both sides compute the same frames: the router's change logs hold the same keys on both
//! sides after the same inputs, and the image at frame `n` is every row at tick `n`. A side
//! whose state was replaced (a state transfer), or whose feed thread fell behind, starts again:
//! the next drain reads every row, that tick has no frame, and requests for earlier frames get
//! a snapshot.

use imbl::OrdMap;
use serde::Serialize;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tandem_mds::frame;
use tandem_mds::protocol::SideToDistributor;
use tandem_model::feed::*;
use tandem_router::{FeedChanges, Router};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{oneshot, watch};
use tracing::{debug, warn};

/// Frames kept for distributors that resume: five minutes of 100 ms ticks.
pub const FEED_HISTORY_FRAMES_MAX: usize = 3_000;
/// Encoded bytes of frames kept; the oldest go first. At 10,000 calls/s over 20,000 agents a
/// frame is about 700 KB, so this keeps some 18 s, far more than a distributor's failover takes.
pub const FEED_HISTORY_BYTES_MAX: usize = 128 << 20;
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
    /// The RecoveryKey of the tick the frame follows (None: not known), so that it is written
    /// only to a reader that holds that tick's rows.
    pub previous_recovery_key: Option<u64>,
    pub rows: usize,
    pub bytes: Vec<u8>,
}

/// The frames kept: a run of consecutive numbers of one generation.
#[derive(Debug, Default)]
pub struct FeedHistory {
    frames: VecDeque<Arc<EncodedFrame>>,
    bytes: usize,
    /// The tick the feed last started again at (generation, number): it has no frame, and
    /// neither has anything before it.
    started_at: (u64, u64),
}

impl FeedHistory {
    /// The feed starts again at this tick.
    pub fn start_at(&mut self, generation: u64, number: u64) {
        self.frames.clear();
        self.bytes = 0;
        self.started_at = (generation, number);
    }

    pub fn push(&mut self, frame: Arc<EncodedFrame>) {
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

    /// The frames kept.
    pub fn frames(&self) -> usize {
        self.frames.len()
    }
}

/// What a subscription does next.
#[derive(Debug)]
pub enum ServeStep {
    /// Write this frame.
    Send(Arc<EncodedFrame>),
    /// The next frame is not computed yet: wait for the next tick.
    Wait,
    /// This side cannot have the next frame (the feed started again since, or the reader
    /// came back after a long time): write a snapshot of the image at the next tick.
    Snapshot,
    /// The history moved on while the reader read: it is too slow for the feed.
    TooSlow,
}

/// Where one subscription stands in the feed: the frame it writes next, and whether it wrote
/// anything yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FeedCursor {
    next: Option<(u64, u64)>,
    sent_any: bool,
    /// The RecoveryKey of the frame the reader holds. A frame is written only after the one
    /// it follows: two ordered histories may number their frames alike (an isolated side's,
    /// abandoned at a takeover, and the one that took over; or this side's own before and
    /// after it took its peer's state), and a frame applied to the rows of another history's
    /// frame would leave the reader's rows wrong for good.
    held_key: Option<u64>,
}

impl FeedCursor {
    /// A subscription from a distributor that holds the frame at `held` (`None`: it holds
    /// nothing, and gets a snapshot first).
    pub fn new(held: Option<FeedPosition>) -> FeedCursor {
        FeedCursor {
            next: held.map(|h| (h.generation, h.number + 1)),
            sent_any: false,
            held_key: held.map(|h| h.recovery_key),
        }
    }

    /// What to write next, given the frames kept and the latest frame published.
    pub fn step(&self, history: &FeedHistory, published: (u64, u64)) -> ServeStep {
        let Some((generation, number)) = self.next else {
            return ServeStep::Snapshot;
        };
        if let Some(frame) = history.get(generation, number) {
            return match (self.held_key, frame.previous_recovery_key) {
                // The reader's frame is of another history.
                (Some(held), Some(previous)) if held != previous => ServeStep::Snapshot,
                _ => ServeStep::Send(frame),
            };
        }
        let (latest_generation, latest) = published;
        if latest_generation == generation && latest < number {
            ServeStep::Wait
        } else if history.evicted(generation, number) && self.sent_any {
            // A reader that falls out of the history after it was sent something is too
            // slow, while one that came back after a long time gets a snapshot.
            ServeStep::TooSlow
        } else {
            ServeStep::Snapshot
        }
    }

    /// The frame or snapshot at `header` was written.
    pub fn sent(&mut self, header: &FeedFrameHeader) {
        self.next = Some((header.generation, header.number + 1));
        self.sent_any = true;
        self.held_key = Some(header.recovery_key);
    }
}

/// The published rows: every row of the feed at the latest tick. Cloned in O(1) for a
/// snapshot, after which only the nodes written while the snapshot is encoded are copied.
pub type FeedImage = OrdMap<FeedKey, FeedRow>;

/// What the feed thread shares with the subscribers' tasks.
pub struct FeedShared {
    history: Mutex<FeedHistory>,
    /// Subscribers waiting for a snapshot: the feed thread answers each at its next tick with
    /// the image and the tick's header.
    snapshot_requests: Mutex<Vec<oneshot::Sender<(FeedFrameHeader, FeedImage)>>>,
    /// The latest frame's (generation, number): subscribers wait on it.
    published: watch::Sender<(u64, u64)>,
    /// The feed thread met a tick it could not make a frame of: the core's next drain must
    /// read every row.
    needs_complete: AtomicBool,
    subscribers: Mutex<usize>,
    status: Mutex<FeedStatus>,
}

/// What `rttest feed` shows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FeedStatus {
    pub generation: u64,
    pub latest_frame: u64,
    pub image_rows: usize,
    pub frames_kept: usize,
    pub bytes_kept: usize,
    pub ticks_skipped: u64,
    pub restarts: u64,
    pub subscribers: usize,
    pub snapshots_sent: u64,
    pub slow_disconnects: u64,
}

/// A tick handed to the feed's publisher.
#[derive(Debug)]
pub struct FeedTick {
    pub header: FeedFrameHeader,
    pub changes: FeedChanges,
    pub config_changes: Vec<VersionedConfigChange>,
}

/// The core's half of the feed, without I/O: what each ordered TimeTick hands the publisher.
#[derive(Debug, Default)]
pub struct FeedTicker {
    config_changes: Vec<VersionedConfigChange>,
    /// The generation and ordered time of the last tick handed over; `None` after a restart,
    /// so that the next drain reads every row.
    last_tick: Option<(u64, u64)>,
    /// The sequence number of the last TimeTick seen.
    last_tick_seq: u64,
}

impl FeedTicker {
    /// Follows `router`, a new state (built from configuration or received by transfer): it
    /// logs its changes from now on, and the next tick starts the feed again.
    pub fn attach(&mut self, router: &mut Router) {
        router.follow_feed_changes(true);
        self.last_tick = None;
        self.config_changes.clear();
    }

    /// A configuration change the router accepted: it goes with the next frame.
    pub fn config_applied(&mut self, change: VersionedConfigChange) {
        self.config_changes.push(change);
    }

    /// The sequence number of the last TimeTick seen.
    pub fn last_tick_seq(&self) -> u64 {
        self.last_tick_seq
    }

    /// The router applied an ordered TimeTick: the tick to publish. `start_again` (the
    /// publisher could not make a frame of an earlier tick) makes it read every row.
    pub fn tick(
        &mut self,
        router: &mut Router,
        generation: u64,
        epoch: u64,
        recovery_key: u64,
        start_again: bool,
    ) -> FeedTick {
        self.last_tick_seq = recovery_key;
        let since_ms = match self.last_tick {
            Some((last_generation, at_ms)) if last_generation == generation && !start_again => {
                Some(at_ms)
            }
            _ => None,
        };
        let changes = router.feed_changes(since_ms);
        let header = FeedFrameHeader {
            generation,
            number: router.feed_frame_number(),
            epoch,
            config_version: router.config_version(),
            config_recovery_key: router.config_recovery_key(),
            time_ms: router.now_ms(),
            recovery_key,
        };
        self.last_tick = Some((generation, header.time_ms));
        FeedTick {
            header,
            changes,
            config_changes: std::mem::take(&mut self.config_changes),
        }
    }

    /// The tick was not handed over: its rows are in no frame, so the next drain reads every
    /// row.
    pub fn tick_lost(&mut self) {
        self.last_tick = None;
    }
}

/// What the publisher made of a tick.
#[derive(Debug)]
pub enum Published {
    /// The feed starts again at this tick: the image is every row, and the tick has no frame.
    StartedAgain(FeedFrameHeader),
    /// Only the rows written since a tick the publisher never saw: no frame can be made. The
    /// next tick must read every row.
    Missed(FeedFrameHeader),
    /// The tick's frame.
    Frame(Arc<EncodedFrame>),
}

/// The feed's publisher, without I/O: it keeps the image of every row published, and makes
/// each tick's frame from what differs from it.
#[derive(Debug, Default)]
pub struct FeedPublisher {
    image: FeedImage,
    last: Option<FeedFrameHeader>,
}

impl FeedPublisher {
    pub fn on_tick(&mut self, tick: FeedTick) -> Published {
        let header = tick.header;
        let follows = self.last.is_some_and(|last| {
            last.generation == header.generation && last.number + 1 == header.number
        });
        if tick.changes.complete {
            self.image = tick
                .changes
                .rows
                .into_iter()
                .filter_map(|(key, row)| Some((key, row?)))
                .collect();
            self.last = Some(header);
            Published::StartedAgain(header)
        } else if !follows {
            self.last = None;
            Published::Missed(header)
        } else {
            let delta = frame_of(&mut self.image, tick.changes, tick.config_changes);
            let mut frame = encode_frame(header, &delta);
            frame.previous_recovery_key = self.last.map(|last| last.recovery_key);
            self.last = Some(header);
            Published::Frame(Arc::new(frame))
        }
    }

    /// Every row published, as of the last tick.
    pub fn image(&self) -> &FeedImage {
        &self.image
    }
}

/// The core's half: it hands each tick to the feed's thread, never blocks, and copies nothing
/// but the rows written. The ticks themselves come from the side's machine (`FeedTicker`).
pub struct FeedCore {
    ticks: SyncSender<FeedTick>,
    shared: Arc<FeedShared>,
}

impl FeedCore {
    /// Starts the feed thread.
    pub fn start() -> std::io::Result<FeedCore> {
        let (ticks, received) = sync_channel(FEED_TICKS_QUEUED_MAX);
        let (published, _) = watch::channel((0, 0));
        let shared = Arc::new(FeedShared {
            history: Mutex::new(FeedHistory::default()),
            snapshot_requests: Mutex::new(Vec::new()),
            published,
            needs_complete: AtomicBool::new(false),
            subscribers: Mutex::new(0),
            status: Mutex::new(FeedStatus::default()),
        });
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("rtsrvr".into())
            .spawn(move || feed_thread(received, &thread_shared))?;
        Ok(FeedCore { ticks, shared })
    }

    pub fn shared(&self) -> Arc<FeedShared> {
        self.shared.clone()
    }

    /// Whether the feed's thread met a tick it could not make a frame of since the last call:
    /// the next tick must then read every row (`FeedTicker::tick_lost`).
    pub fn take_needs_complete(&self) -> bool {
        self.shared.needs_complete.swap(false, Ordering::Relaxed)
    }

    /// Hands a tick to the feed's thread. Returns false when its queue is full: the tick is
    /// skipped, and the next one must read every row.
    pub fn publish(&self, tick: FeedTick) -> bool {
        match self.ticks.try_send(tick) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) => {
                self.shared.status.lock().unwrap().ticks_skipped += 1;
                false
            }
            Err(TrySendError::Disconnected(_)) => true,
        }
    }
}

fn feed_thread(ticks: Receiver<FeedTick>, shared: &FeedShared) {
    let mut publisher = FeedPublisher::default();
    while let Ok(tick) = ticks.recv() {
        let header = match publisher.on_tick(tick) {
            Published::StartedAgain(header) => {
                debug!(frame = header.number, "the feed starts again");
                shared
                    .history
                    .lock()
                    .unwrap()
                    .start_at(header.generation, header.number);
                shared.status.lock().unwrap().restarts += 1;
                header
            }
            Published::Missed(header) => {
                shared.needs_complete.store(true, Ordering::Relaxed);
                shared
                    .history
                    .lock()
                    .unwrap()
                    .start_at(header.generation, header.number);
                continue;
            }
            Published::Frame(frame) => {
                let header = frame.header;
                shared.history.lock().unwrap().push(frame);
                header
            }
        };
        let image = publisher.image();
        for request in std::mem::take(&mut *shared.snapshot_requests.lock().unwrap()) {
            let _ = request.send((header, image.clone()));
        }
        {
            let history = shared.history.lock().unwrap();
            let mut status = shared.status.lock().unwrap();
            status.generation = header.generation;
            status.latest_frame = header.number;
            status.image_rows = image.len();
            status.frames_kept = history.frames.len();
            status.bytes_kept = history.bytes;
        }
        shared
            .published
            .send_replace((header.generation, header.number));
    }
}

/// The frame that brings `image` to the rows in `changes`, applied to it: upserts for rows new
/// or different, deletes for rows gone.
fn frame_of(
    image: &mut FeedImage,
    changes: FeedChanges,
    config_changes: Vec<VersionedConfigChange>,
) -> FeedDelta {
    let mut delta = FeedDelta {
        config_changes,
        ..FeedDelta::default()
    };
    for (key, row) in changes.rows {
        match row {
            Some(row) => {
                if image.get(&key) != Some(&row) {
                    image.insert(key, row.clone());
                    delta.upserts.push(row);
                }
            }
            None => {
                if image.remove(&key).is_some() {
                    delta.deletes.push(key);
                }
            }
        }
    }
    delta
}

/// `SideToDistributor::Snapshot` and `Frame` borrowed: the same variants, in the same order,
/// with the same fields, so the same bytes on the wire, encoded without copying a row.
#[derive(Serialize)]
#[serde(rename = "SideToDistributor")]
enum MessageRef<'a> {
    Snapshot {
        header: FeedFrameHeader,
        part: u32,
        last: bool,
        rows: &'a [&'a FeedRow],
    },
    Frame {
        header: FeedFrameHeader,
        part: u32,
        last: bool,
        delta: DeltaRef<'a>,
    },
}

/// `FeedDelta` borrowed: part of a frame's entries.
#[derive(Serialize)]
#[serde(rename = "FeedDelta")]
struct DeltaRef<'a> {
    upserts: &'a [FeedRow],
    deletes: &'a [FeedKey],
    config_changes: &'a [VersionedConfigChange],
}

/// Encodes entries `0..total` as consecutive messages, each of at most `FEED_PART_ROWS_MAX`
/// entries; `message(range, part, last)` builds the message of a range. A part too large for a
/// frame is halved until it fits. A single entry too large for any frame (none the router
/// produces) is left out with a warning: for a configuration change the distributors' check of
/// the configuration version then sees the gap and rebuilds their copy.
fn encode_parts<'a>(
    total: usize,
    frame_number: u64,
    message: impl Fn(std::ops::Range<usize>, u32, bool) -> MessageRef<'a>,
    out: &mut Vec<u8>,
) {
    let mut start = 0;
    let mut part = 0;
    loop {
        let mut end = total.min(start + FEED_PART_ROWS_MAX);
        loop {
            match frame::encode(&message(start..end, part, end == total), out) {
                Ok(()) => break,
                Err(e) if end - start > 1 => {
                    debug!(
                        frame = frame_number,
                        entries = end - start,
                        "a feed part halved: {e}"
                    );
                    end = start + (end - start) / 2;
                }
                Err(e) => {
                    warn!(
                        frame = frame_number,
                        "a feed entry too large for a message was left out: {e}"
                    );
                    break;
                }
            }
        }
        part += 1;
        start = end;
        if start >= total {
            break;
        }
    }
}

/// Encodes `delta` as the wire messages of a frame's parts: configuration changes first, then
/// upserts, then deletes, as a frame lists them.
pub fn encode_frame(header: FeedFrameHeader, delta: &FeedDelta) -> EncodedFrame {
    let (changes, upserts) = (delta.config_changes.len(), delta.upserts.len());
    let total = delta.rows();
    // The slice of `items` that entries `range` cover, where `items` start at entry `offset`.
    fn within<'t, T>(items: &'t [T], offset: usize, range: &std::ops::Range<usize>) -> &'t [T] {
        let from = range.start.clamp(offset, offset + items.len()) - offset;
        let to = range.end.clamp(offset, offset + items.len()) - offset;
        &items[from..to]
    }
    let mut bytes = Vec::with_capacity(256 + total * 64);
    encode_parts(
        total,
        header.number,
        |range, part, last| MessageRef::Frame {
            header,
            part,
            last,
            delta: DeltaRef {
                config_changes: within(&delta.config_changes, 0, &range),
                upserts: within(&delta.upserts, changes, &range),
                deletes: within(&delta.deletes, changes + upserts, &range),
            },
        },
        &mut bytes,
    );
    EncodedFrame {
        header,
        previous_recovery_key: None,
        rows: total,
        bytes,
    }
}

/// Encodes every row of `image` as the wire messages of a snapshot at `header`; returns the
/// rows.
pub fn encode_snapshot(header: FeedFrameHeader, image: &FeedImage, out: &mut Vec<u8>) -> usize {
    let rows: Vec<&FeedRow> = image.values().collect();
    encode_parts(
        rows.len(),
        header.number,
        |range, part, last| MessageRef::Snapshot {
            header,
            part,
            last,
            rows: &rows[range],
        },
        out,
    );
    rows.len()
}

impl FeedShared {
    pub fn status(&self) -> FeedStatus {
        let mut status = self.status.lock().unwrap().clone();
        status.subscribers = *self.subscribers.lock().unwrap();
        status
    }

    /// Serves one subscribed distributor until it goes or falls behind: the frames after
    /// the one it holds from the history, or a snapshot, then each new frame.
    pub async fn serve<W: AsyncWrite + Unpin>(
        self: Arc<Self>,
        name: String,
        held: Option<FeedPosition>,
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
        let reason = self.clone().serve_frames(held, &mut write).await;
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
        held: Option<FeedPosition>,
        write: &mut W,
    ) -> Option<String> {
        let mut published = self.published.subscribe();
        let mut cursor = FeedCursor::new(held);
        loop {
            let latest = *published.borrow_and_update();
            let step = cursor.step(&self.history.lock().unwrap(), latest);
            match step {
                ServeStep::Send(frame) => {
                    if !self.write_timed(write, &frame.bytes).await {
                        return Some(self.slow(&format!("frame {}", frame.header.number)));
                    }
                    cursor.sent(&frame.header);
                }
                ServeStep::Wait => {
                    if published.changed().await.is_err() {
                        return None;
                    }
                }
                ServeStep::TooSlow => {
                    return Some(self.slow(&format!(
                        "frames more than {FEED_HISTORY_FRAMES_MAX} ticks behind"
                    )));
                }
                ServeStep::Snapshot => {
                    // The image at the next tick, then every row of it.
                    let (request, answer) = oneshot::channel();
                    self.snapshot_requests.lock().unwrap().push(request);
                    let Ok((header, image)) = answer.await else {
                        return None;
                    };
                    let bytes = tokio::task::spawn_blocking(move || {
                        let mut bytes = Vec::new();
                        encode_snapshot(header, &image, &mut bytes);
                        bytes
                    })
                    .await
                    .ok()?;
                    if !self.write_timed(write, &bytes).await {
                        return Some(self.slow("a snapshot"));
                    }
                    self.status.lock().unwrap().snapshots_sent += 1;
                    cursor.sent(&header);
                }
            }
        }
    }

    async fn write_timed<W: AsyncWrite + Unpin>(&self, write: &mut W, bytes: &[u8]) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_millis(FEED_WRITE_TIMEOUT_MS), async {
                write.write_all(bytes).await?;
                // A TLS stream may hold the end of a write until it is flushed.
                write.flush().await
            })
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
        ticker: FeedTicker,
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
                ticker: FeedTicker::default(),
                seq: 0,
                now_ms: START_MS,
                agents: cc.agents.iter().map(|a| a.id).collect(),
            };
            driver.ticker.attach(&mut driver.router);
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
            let start_again = self.core.take_needs_complete();
            let tick = self
                .ticker
                .tick(&mut self.router, GENERATION, 1, self.seq, start_again);
            if !self.core.publish(tick) {
                self.ticker.tick_lost();
            }
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

        /// Subscribes holding this side's frame `last_frame`.
        fn subscribe(
            &self,
            last_frame: Option<u64>,
        ) -> FrameReader<tokio::io::DuplexStream, SideToDistributor> {
            let held = last_frame.map(|number| FeedPosition {
                generation: GENERATION,
                number,
                recovery_key: self.recovery_key_of(number),
            });
            self.subscribe_holding(held)
        }

        /// The RecoveryKey of this side's tick `number`: the sequence number of the TimeTick
        /// that the frame after it follows.
        fn recovery_key_of(&self, number: u64) -> u64 {
            let shared = self.core.shared();
            let history = shared.history.lock().unwrap();
            history
                .get(GENERATION, number + 1)
                .and_then(|frame| frame.previous_recovery_key)
                .or_else(|| {
                    history
                        .get(GENERATION, number)
                        .map(|f| f.header.recovery_key)
                })
                .expect("the tick is kept")
        }

        /// Waits until the feed thread has published every tick handed to it, so that only
        /// the test's next tick answers a snapshot request.
        fn settled(&self) {
            let deadline = std::time::Instant::now() + Duration::from_millis(WAIT_MS);
            while self.core.shared().status().latest_frame != self.router.feed_frame_number() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "the feed thread published the last tick within {WAIT_MS} ms"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        }

        fn subscribe_holding(
            &self,
            held: Option<FeedPosition>,
        ) -> FrameReader<tokio::io::DuplexStream, SideToDistributor> {
            self.settled();
            let (ours, theirs) = tokio::io::duplex(1 << 20);
            tokio::spawn(self.core.shared().serve("aw1".into(), held, theirs));
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
        // The snapshot is the image at the tick after the request.
        let mut first = d.subscribe(None);
        snapshot_requested(&d).await;
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
        // One that held the tick the feed started at (which has no frame) resumes after it
        // too; one of another generation (a cold start since) gets a snapshot.
        let started = d.core.shared().history.lock().unwrap().started_at.1;
        let mut oldest = d.subscribe(Some(started));
        match next(&mut oldest).await {
            SideToDistributor::Frame { header, .. } => assert_eq!(header.number, started + 1),
            other => panic!("expected frame {}, got {other:?}", started + 1),
        }
        let mut stale = d.subscribe_holding(Some(FeedPosition {
            generation: GENERATION + 1,
            number: through,
            recovery_key: 1,
        }));
        snapshot_requested(&d).await;
        d.step();
        assert!(matches!(
            next(&mut stale).await,
            SideToDistributor::Snapshot { .. }
        ));
        // One that holds a frame of this number from another history (an isolated side's,
        // abandoned at a takeover) gets a snapshot, not this side's next frame.
        let held = through - 5;
        let mut other_history = d.subscribe_holding(Some(FeedPosition {
            generation: GENERATION,
            number: held,
            recovery_key: d.recovery_key_of(held) + 1_000_000,
        }));
        snapshot_requested(&d).await;
        d.step();
        assert!(matches!(
            next(&mut other_history).await,
            SideToDistributor::Snapshot { .. }
        ));
        let status = d.core.shared().status();
        assert_eq!(status.latest_frame, through + 2);
        assert_eq!(status.subscribers, 5);
        assert_eq!(status.snapshots_sent, 3);
        assert_eq!(status.restarts, 1);
    }

    #[tokio::test]
    async fn a_replaced_state_starts_the_feed_again() {
        let mut d = Driver::new();
        let mut reader = d.subscribe(None);
        snapshot_requested(&d).await;
        for _ in 0..3 {
            d.step();
        }
        let mut image = BTreeMap::new();
        let through = d.router.feed_frame_number();
        read_through(&mut reader, &mut image, None, through).await;
        // The state is replaced: the next tick has no frame, and the subscriber, waiting for
        // it, gets a snapshot at the tick after instead.
        let mut replaced = d.router.clone();
        d.ticker.attach(&mut replaced);
        d.router = replaced;
        d.step();
        snapshot_requested(&d).await;
        d.step();
        match next(&mut reader).await {
            SideToDistributor::Snapshot {
                header, rows, last, ..
            } => {
                assert!(last);
                assert_eq!(header.number, d.router.feed_frame_number());
                image = rows.into_iter().map(|row| (row.key(), row)).collect();
            }
            other => panic!("expected a snapshot, got {other:?}"),
        }
        assert_eq!(image, rows(&d.router));
        assert_eq!(d.core.shared().status().restarts, 2);
    }

    /// Lets the subscribers' tasks run until one has asked for a snapshot. The feed thread
    /// publishes the tick the request waits on in its own time, so the wait is bounded by
    /// time, not by a count of polls.
    async fn snapshot_requested(d: &Driver) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(WAIT_MS);
        while tokio::time::Instant::now() < deadline {
            if !d.core.shared().snapshot_requests.lock().unwrap().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        panic!("no snapshot was asked for within {WAIT_MS} ms");
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
            config_recovery_key: 0,
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

        // Rows too large for FEED_PART_ROWS_MAX of them in one message: parts are halved.
        let queue: Vec<FeedRow> = (0..FEED_PART_ROWS_MAX as u64)
            .map(|i| {
                FeedRow::RouterQueue(RouterQueueRow {
                    router_call_key: tandem_model::ids::RouterCallKey(i),
                    request: Default::default(),
                    call_type_id: None,
                    dialed_digits: "9".repeat(1_000),
                    priority: 1,
                    enqueued_ms: i,
                    skill_groups: vec![],
                })
            })
            .collect();
        let delta = FeedDelta {
            upserts: queue,
            ..FeedDelta::default()
        };
        let encoded = encode_frame(header, &delta);
        let mut buffer = encoded.bytes.as_slice();
        let mut decoded = Vec::new();
        let mut parts = 0;
        while !buffer.is_empty() {
            let (message, len): (SideToDistributor, usize) =
                frame::decode(buffer).unwrap().unwrap();
            buffer = &buffer[len..];
            let SideToDistributor::Frame { delta, .. } = message else {
                panic!("a frame part");
            };
            decoded.extend(delta.upserts);
            parts += 1;
        }
        assert!(parts >= 2, "{parts} parts");
        assert_eq!(decoded, delta.upserts);
    }

    fn encoded(number: u64, recovery_key: u64, previous: u64) -> Arc<EncodedFrame> {
        let header = FeedFrameHeader {
            generation: GENERATION,
            number,
            epoch: 1,
            config_version: 1,
            config_recovery_key: 0,
            time_ms: number * 100,
            recovery_key,
        };
        let mut frame = encode_frame(header, &FeedDelta::default());
        frame.previous_recovery_key = Some(previous);
        Arc::new(frame)
    }

    #[test]
    fn a_cursor_writes_a_frame_only_to_a_reader_that_holds_the_frame_it_follows() {
        let mut history = FeedHistory::default();
        history.start_at(GENERATION, 10);
        for number in 11..=13 {
            history.push(encoded(number, 1_000 + number, 999 + number));
        }
        let at = |number, recovery_key| {
            FeedCursor::new(Some(FeedPosition {
                generation: GENERATION,
                number,
                recovery_key,
            }))
        };
        // Held frames of this history, the tick the feed started at included: the next frame.
        for held in 10..=12 {
            match at(held, 1_000 + held).step(&history, (GENERATION, 13)) {
                ServeStep::Send(frame) => assert_eq!(frame.header.number, held + 1),
                other => panic!("expected frame {}, got {other:?}", held + 1),
            }
        }
        // The latest frame: wait for the next.
        assert!(matches!(
            at(13, 1_013).step(&history, (GENERATION, 13)),
            ServeStep::Wait
        ));
        // A frame of this number from another history, or one this side never kept: a
        // snapshot.
        assert!(matches!(
            at(12, 7).step(&history, (GENERATION, 13)),
            ServeStep::Snapshot
        ));
        assert!(matches!(
            at(5, 1_005).step(&history, (GENERATION, 13)),
            ServeStep::Snapshot
        ));
        // A reader ahead of this side waits until the frame after its own is computed here,
        // and gets it only if it follows the reader's.
        let ahead = at(15, 1_015);
        assert!(matches!(
            ahead.step(&history, (GENERATION, 13)),
            ServeStep::Wait
        ));
        history.push(encoded(14, 1_014, 1_013));
        history.push(encoded(15, 2_015, 1_014));
        history.push(encoded(16, 1_016, 2_015));
        assert!(matches!(
            ahead.step(&history, (GENERATION, 16)),
            ServeStep::Snapshot
        ));
        // A cursor that wrote frames follows them: after this side's state was replaced by a
        // history whose numbers are behind, it waits, then gets a snapshot rather than the
        // new history's frame of the next number.
        let mut cursor = at(13, 1_013);
        cursor.sent(&encoded(14, 1_014, 1_013).header);
        match cursor.step(&history, (GENERATION, 16)) {
            ServeStep::Send(frame) => {
                assert_eq!(frame.header.number, 15);
                cursor.sent(&frame.header);
            }
            other => panic!("expected frame 15, got {other:?}"),
        }
        history.start_at(GENERATION, 11);
        assert!(matches!(
            cursor.step(&history, (GENERATION, 11)),
            ServeStep::Wait
        ));
        for number in 12..=16 {
            history.push(encoded(number, 3_000 + number, 2_999 + number));
        }
        assert!(matches!(
            cursor.step(&history, (GENERATION, 16)),
            ServeStep::Snapshot
        ));
    }
}
