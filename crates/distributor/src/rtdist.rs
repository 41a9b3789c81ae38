//! rtdist: a distributor's subscription to the real-time feed (SPEC section 7).
//!
//! `FeedAssembler` is the sans-IO half: it puts the parts of snapshots and frames together and
//! checks that every frame follows the one before, so a distributor never applies a frame out of
//! order or twice. `FeedClient` is the I/O half: it subscribes on the preferred side with the
//! last frame it holds, reads until the side goes (a closed connection, or no message for
//! `FEED_SILENCE_MS`, as frames come every tick), and then subscribes on the other side with the
//! same position, so it resumes with no frame missing or repeated. A side that lacks the frames
//! asked for sends a snapshot instead.

use std::net::SocketAddr;
use std::time::Duration;
use tandem_mds::protocol::{PublicHello, SideToDistributor};
use tandem_mds::tls::{Role, Security};
use tandem_mds::transport::{self, FrameReader, ReadHalf};
use tandem_model::feed::{FeedDelta, FeedFrameHeader, FeedPosition, FeedRow, FEED_PARTS_MAX};
use thiserror::Error;
use tracing::{info, warn};

/// A side that sends nothing for this long is taken as gone (frames come every 100 ms).
pub const FEED_SILENCE_MS: u64 = 2_000;
/// How long a connection attempt to a side may take.
pub const FEED_CONNECT_TIMEOUT_MS: u64 = 1_000;
/// The pause before trying the sides again once both refused.
pub const FEED_RETRY_MS: u64 = 200;

/// A whole snapshot or frame.
#[derive(Clone, Debug, PartialEq)]
pub enum FeedUpdate {
    /// Every row at `header.number`: the distributor's rows are replaced.
    Snapshot {
        header: FeedFrameHeader,
        rows: Vec<FeedRow>,
    },
    /// What changed from `header.number - 1`.
    Frame {
        header: FeedFrameHeader,
        delta: FeedDelta,
    },
}

impl FeedUpdate {
    pub fn header(&self) -> &FeedFrameHeader {
        match self {
            FeedUpdate::Snapshot { header, .. } | FeedUpdate::Frame { header, .. } => header,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum FeedError {
    #[error("part {got} of frame {frame} came where part {expected} was due")]
    PartOutOfOrder { frame: u64, expected: u32, got: u32 },
    #[error("frame {got} came after frame {held}: frames must follow each other")]
    NotNext { held: u64, got: u64 },
    #[error("a frame came before any snapshot")]
    FrameBeforeSnapshot,
    #[error("frame {frame} has more than {FEED_PARTS_MAX} parts")]
    TooManyParts { frame: u64 },
    #[error("the side ended the subscription: {0}")]
    Closed(String),
}

enum Partial {
    Snapshot {
        header: FeedFrameHeader,
        rows: Vec<FeedRow>,
        next_part: u32,
    },
    Frame {
        header: FeedFrameHeader,
        delta: FeedDelta,
        next_part: u32,
    },
}

/// Puts parts together and checks the order of frames.
#[derive(Default)]
pub struct FeedAssembler {
    /// The last whole snapshot or frame given out.
    position: Option<FeedPosition>,
    partial: Option<Partial>,
}

impl FeedAssembler {
    /// The frame held, to subscribe with.
    pub fn position(&self) -> Option<FeedPosition> {
        self.position
    }

    /// A connection ended: parts of an unfinished frame are dropped (the next side sends the
    /// frame again, whole).
    pub fn connection_lost(&mut self) {
        self.partial = None;
    }

    /// Takes one message; returns a snapshot or frame once its last part is in. An error leaves
    /// the position as it was: the caller subscribes again from it.
    pub fn on_message(
        &mut self,
        message: SideToDistributor,
    ) -> Result<Option<FeedUpdate>, FeedError> {
        match message {
            SideToDistributor::Closing { reason } => {
                self.partial = None;
                Err(FeedError::Closed(reason))
            }
            SideToDistributor::Snapshot {
                header,
                part,
                last,
                rows,
            } => {
                let (mut held, next_part) = match self.partial.take() {
                    Some(Partial::Snapshot {
                        header: h,
                        rows,
                        next_part,
                    }) if h == header => (rows, next_part),
                    _ => (Vec::new(), 0),
                };
                self.check_part(header.number, next_part, part)?;
                held.extend(rows);
                if last {
                    self.position = Some(header.position());
                    return Ok(Some(FeedUpdate::Snapshot { header, rows: held }));
                }
                self.partial = Some(Partial::Snapshot {
                    header,
                    rows: held,
                    next_part: part + 1,
                });
                Ok(None)
            }
            SideToDistributor::Frame {
                header,
                part,
                last,
                delta,
            } => {
                match self.position {
                    None => return Err(FeedError::FrameBeforeSnapshot),
                    Some(held)
                        if held.generation != header.generation
                            || held.number + 1 != header.number =>
                    {
                        self.partial = None;
                        return Err(FeedError::NotNext {
                            held: held.number,
                            got: header.number,
                        });
                    }
                    Some(_) => {}
                }
                let (mut held, next_part) = match self.partial.take() {
                    Some(Partial::Frame {
                        header: h,
                        delta,
                        next_part,
                    }) if h == header => (delta, next_part),
                    _ => (FeedDelta::default(), 0),
                };
                self.check_part(header.number, next_part, part)?;
                held.config_changes.extend(delta.config_changes);
                held.upserts.extend(delta.upserts);
                held.deletes.extend(delta.deletes);
                if last {
                    self.position = Some(header.position());
                    return Ok(Some(FeedUpdate::Frame {
                        header,
                        delta: held,
                    }));
                }
                self.partial = Some(Partial::Frame {
                    header,
                    delta: held,
                    next_part: part + 1,
                });
                Ok(None)
            }
        }
    }

    fn check_part(&mut self, frame: u64, expected: u32, got: u32) -> Result<(), FeedError> {
        if got != expected {
            self.partial = None;
            return Err(FeedError::PartOutOfOrder {
                frame,
                expected,
                got,
            });
        }
        if got >= FEED_PARTS_MAX {
            self.partial = None;
            return Err(FeedError::TooManyParts { frame });
        }
        Ok(())
    }
}

/// The feed from the sides, with failover: `next` gives each snapshot and frame in order.
pub struct FeedClient {
    name: String,
    /// The preferred side first.
    sides: [SocketAddr; 2],
    current: usize,
    reader: Option<FrameReader<ReadHalf, SideToDistributor>>,
    assembler: FeedAssembler,
    security: Security,
    /// Subscriptions made: the first, then one per failover or resubscription.
    pub subscriptions: u64,
}

impl FeedClient {
    pub fn new(
        name: impl Into<String>,
        preferred: SocketAddr,
        other: SocketAddr,
        security: Security,
    ) -> FeedClient {
        FeedClient {
            name: name.into(),
            sides: [preferred, other],
            current: 0,
            reader: None,
            assembler: FeedAssembler::default(),
            security,
            subscriptions: 0,
        }
    }

    /// The side the feed comes from now (0: the preferred one), if subscribed.
    pub fn side(&self) -> Option<usize> {
        self.reader.as_ref().map(|_| self.current)
    }

    pub fn position(&self) -> Option<FeedPosition> {
        self.assembler.position()
    }

    /// Forgets the feed's position: the next subscription asks for a snapshot (the AW database
    /// lost frames it could not write).
    pub fn start_over(&mut self) {
        self.reader = None;
        self.assembler = FeedAssembler::default();
    }

    /// The next snapshot or frame, from whichever side serves it.
    pub async fn next(&mut self) -> FeedUpdate {
        let mut failed_in_a_row = 0;
        loop {
            if self.reader.is_none() {
                match self.subscribe().await {
                    Ok(reader) => {
                        self.reader = Some(reader);
                        failed_in_a_row = 0;
                    }
                    Err(e) => {
                        warn!(distributor = %self.name, side = %self.sides[self.current], "cannot subscribe: {e}");
                        self.current = 1 - self.current;
                        failed_in_a_row += 1;
                        if failed_in_a_row >= 2 {
                            tokio::time::sleep(Duration::from_millis(FEED_RETRY_MS)).await;
                        }
                        continue;
                    }
                }
            }
            let reader = self.reader.as_mut().expect("subscribed above");
            let message =
                tokio::time::timeout(Duration::from_millis(FEED_SILENCE_MS), reader.next()).await;
            let outcome = match message {
                Ok(Ok(Some(message))) => self.assembler.on_message(message),
                Ok(Ok(None)) => Err(FeedError::Closed("the connection closed".into())),
                Ok(Err(e)) => Err(FeedError::Closed(e.to_string())),
                Err(_) => Err(FeedError::Closed(format!(
                    "no message for {FEED_SILENCE_MS} ms"
                ))),
            };
            match outcome {
                Ok(Some(update)) => return update,
                Ok(None) => {}
                Err(e) => {
                    info!(distributor = %self.name, side = %self.sides[self.current], "the feed moves to the other side: {e}");
                    self.reader = None;
                    self.assembler.connection_lost();
                    self.current = 1 - self.current;
                }
            }
        }
    }

    async fn subscribe(
        &mut self,
    ) -> Result<FrameReader<ReadHalf, SideToDistributor>, transport::TransportError> {
        let stream = transport::connect(
            self.sides[self.current],
            FEED_CONNECT_TIMEOUT_MS,
            &self.security,
            Role::Central,
        )
        .await?;
        let (read, mut write) = stream.into_split();
        transport::write_message(
            &mut write,
            &PublicHello::Distributor {
                name: self.name.clone(),
                held: self.assembler.position(),
            },
        )
        .await?;
        // The side reads nothing after the hello, so closing this direction is harmless.
        drop(write);
        self.subscriptions += 1;
        Ok(FrameReader::new(read))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_model::feed::{FeedKey, PeripheralRealTimeRow};
    use tandem_model::ids::PeripheralId;

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

    fn row(id: u32) -> FeedRow {
        FeedRow::Peripheral(PeripheralRealTimeRow {
            peripheral_id: PeripheralId(id),
            online: true,
            online_since_ms: 0,
            agents_logged_on: id,
            calls_in_progress: 0,
        })
    }

    #[test]
    fn parts_make_whole_updates_and_frames_must_follow_each_other() {
        let mut a = FeedAssembler::default();
        assert_eq!(
            a.on_message(SideToDistributor::Frame {
                header: header(5),
                part: 0,
                last: true,
                delta: FeedDelta::default(),
            }),
            Err(FeedError::FrameBeforeSnapshot)
        );
        let snapshot = |part, last, id| SideToDistributor::Snapshot {
            header: header(5),
            part,
            last,
            rows: vec![row(id)],
        };
        assert_eq!(a.on_message(snapshot(0, false, 1)), Ok(None));
        assert_eq!(
            a.on_message(snapshot(1, true, 2)),
            Ok(Some(FeedUpdate::Snapshot {
                header: header(5),
                rows: vec![row(1), row(2)],
            }))
        );
        assert_eq!(a.position(), Some(header(5).position()));
        // Frame 7 after 5: refused, position kept.
        let frame = |number, part, last| SideToDistributor::Frame {
            header: header(number),
            part,
            last,
            delta: FeedDelta {
                deletes: vec![FeedKey::Peripheral(PeripheralId(1))],
                ..FeedDelta::default()
            },
        };
        assert_eq!(
            a.on_message(frame(7, 0, true)),
            Err(FeedError::NotNext { held: 5, got: 7 })
        );
        assert_eq!(a.position(), Some(header(5).position()));
        // Parts must come in order; a lost connection drops a partial frame.
        assert_eq!(a.on_message(frame(6, 0, false)), Ok(None));
        assert_eq!(
            a.on_message(frame(6, 2, true)),
            Err(FeedError::PartOutOfOrder {
                frame: 6,
                expected: 1,
                got: 2
            })
        );
        assert_eq!(a.on_message(frame(6, 0, false)), Ok(None));
        a.connection_lost();
        assert_eq!(a.on_message(frame(6, 0, false)), Ok(None));
        match a.on_message(frame(6, 1, true)) {
            Ok(Some(FeedUpdate::Frame { header, delta })) => {
                assert_eq!(header.number, 6);
                assert_eq!(delta.deletes.len(), 2);
            }
            other => panic!("{other:?}"),
        }
        // The same frame again is a repeat, refused.
        assert_eq!(
            a.on_message(frame(6, 0, true)),
            Err(FeedError::NotNext { held: 6, got: 6 })
        );
        assert!(matches!(
            a.on_message(SideToDistributor::Closing {
                reason: "slow".into()
            }),
            Err(FeedError::Closed(_))
        ));
    }
}
