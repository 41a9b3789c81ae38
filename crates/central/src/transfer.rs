//! State-transfer sessions: one TCP connection per synchronized client on the private network,
//! always opened by side A's MDS (the seed's rule), whichever way the state goes.
//!
//! The sender's core takes the cut (`Core::serve_cut`: the synchronizer's cut and a
//! copy-on-write snapshot of the router, a few pointer copies), and this module does the rest
//! off the core. A session is a `Header` frame (the cut and the state's size in records), the
//! state records themselves, and an `End` frame with the digest at the cut. The records cross
//! as they are, not inside frames: they carry their own lengths and checksums, and framing them
//! again cost a copy and a checksum of every byte on each end.
//!
//! The sender exports the snapshot on a blocking thread straight into the pieces its session
//! writes to the socket. The receiver hands each piece to a blocking thread that checks and
//! decodes the records in it while the next piece is read (`records::StateImport`), compares
//! the digest of the records read with the sender's, checks the rebuilt state's invariants and
//! hands it to its core. Any failure ends the session; the receiver's core retries with backoff.

use crate::outputs::OutputLog;
use crate::side::CoreEvent;
use crate::status::SyncRecord;
use serde::{Deserialize, Serialize};
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tandem_mds::frame::BULK_FRAME_PAYLOAD_BYTES_MAX;
use tandem_mds::tls::{Role, Security};
use tandem_mds::transport::{self, FrameReader};
use tandem_mds::transport::{ClientAuth, Stream};
use tandem_mds::{LogicVersion, SyncCut, TransferMessage, TransferRequest};
use tandem_router::records::{self, StateImport};
use tandem_router::{ImportError, State, STATE_FORMAT_VERSION};
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, oneshot};
use tracing::info;

/// The router's name as a synchronized client.
pub const ROUTER_CLIENT: &str = "router";
/// The size of the pieces of the state stream that go between the socket and the export or
/// import thread (the records in them are whole on the sender's side, cut anywhere on the
/// receiver's).
pub const TRANSFER_PIECE_BYTES: usize = 1 << 20;
/// The most pieces each end holds at once: what the export may make ahead of the socket, what
/// the receiver may read ahead of its import.
const TRANSFER_PIECES_MAX: usize = 8;
/// The largest state a receiver accepts.
pub const STATE_BYTES_MAX: u64 = 16 << 30;
/// A session silent this long has failed.
const TRANSFER_SILENCE_MS_MAX: u64 = 10_000;
/// How long side B waits for the request a session's nonce names to arrive on the private link.
pub const NONCE_WAIT_MS_MAX: u64 = 2_000;
/// How often it asks its core again meanwhile.
pub const NONCE_POLL_MS: u64 = 10;

/// What the source's core hands its session.
pub struct Cut {
    pub cut: SyncCut,
    pub state: State,
    /// The side's own data beside the router's records (`SideData`), encoded.
    pub side_data: Vec<u8>,
    /// How long the core stopped to take the cut.
    pub stall_us: u64,
    pub direction: String,
}

/// What a state transfer carries beside the router's records: the side's output log, and the
/// history its logger feed keeps of the state (`LoggerFeed::history`).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SideData {
    pub outputs: OutputLog,
    pub history: Vec<u64>,
}

/// `SideData` as a source encodes it, borrowing its output log: the cut stalls the core.
#[derive(Serialize)]
pub struct SideDataRef<'a> {
    pub outputs: &'a OutputLog,
    pub history: Vec<u64>,
}

pub enum TransferOutcome {
    Sent(SyncRecord),
    Received {
        cut: SyncCut,
        state: Box<State>,
        side_data: SideData,
        record: SyncRecord,
    },
    Failed(String),
}

/// Why a source refuses to send its state for `request`, if it does: the receiver must read
/// the router's state format and run the same logic.
pub fn refusal(request: &TransferRequest, logic_version: &LogicVersion) -> Option<String> {
    (request.client != ROUTER_CLIENT
        || request.state_version != tandem_router::STATE_FORMAT_VERSION
        || request.logic_version != *logic_version)
        .then(|| {
            format!(
                "the peer reads {} state version {} with logic {}, this side sends version {} with logic {}",
                request.client,
                request.state_version,
                request.logic_version,
                tandem_router::STATE_FORMAT_VERSION,
                logic_version
            )
        })
}

/// Side A opens a session to B's transfer listener: to receive (`a_receives`) or to send.
pub(crate) async fn open_from_a(
    addr: SocketAddr,
    nonce: u64,
    a_receives: bool,
    tx: mpsc::Sender<CoreEvent>,
    logic_version: LogicVersion,
    security: Security,
) {
    let outcome = async {
        let stream = transport::connect(addr, 2_000, &security, Role::Central)
            .await
            .map_err(|e| e.to_string())?;
        let (read, mut write) = stream.into_split();
        transport::write_message(&mut write, &TransferMessage::Open { nonce, a_receives })
            .await
            .map_err(|e| e.to_string())?;
        if a_receives {
            receive(read, nonce, &tx, &logic_version, "(B->A)").await
        } else {
            send(write, nonce, &tx, &logic_version).await
        }
    }
    .await
    .unwrap_or_else(TransferOutcome::Failed);
    let _ = tx.send(CoreEvent::TransferDone { nonce, outcome }).await;
}

/// Side B takes a session A opened.
pub(crate) async fn accept_at_b(
    stream: Stream,
    tx: mpsc::Sender<CoreEvent>,
    logic_version: LogicVersion,
) {
    let (read, write) = stream.into_split();
    let mut reader =
        FrameReader::<_, TransferMessage>::new(read).with_payload_max(BULK_FRAME_PAYLOAD_BYTES_MAX);
    let Ok(Ok(Some(TransferMessage::Open { nonce, a_receives }))) =
        tokio::time::timeout(Duration::from_secs(5), reader.next()).await
    else {
        return;
    };
    // The nonce must be one B's core knows, for the direction A says. The request naming it
    // travels on the private link and may arrive after this session: wait for it, bounded.
    let deadline = Instant::now() + Duration::from_millis(NONCE_WAIT_MS_MAX);
    let known = loop {
        let (reply, answer) = oneshot::channel();
        if tx
            .send(CoreEvent::ResolveNonce { nonce, reply })
            .await
            .is_err()
        {
            return;
        }
        match answer.await {
            Ok(Some(b_receives)) => break Some(b_receives),
            Ok(None) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(NONCE_POLL_MS)).await;
            }
            _ => break None,
        }
    };
    let b_receives = match known {
        Some(b_receives) if b_receives != a_receives => b_receives,
        _ => {
            let mut write = write;
            let _ = transport::write_message(
                &mut write,
                &TransferMessage::Refuse {
                    reason: "unknown nonce or direction".into(),
                },
            )
            .await;
            return;
        }
    };
    let outcome = if b_receives {
        receive_from(reader, nonce, &tx, &logic_version, "(A->B)").await
    } else {
        send(write, nonce, &tx, &logic_version).await
    }
    .unwrap_or_else(TransferOutcome::Failed);
    let _ = tx.send(CoreEvent::TransferDone { nonce, outcome }).await;
}

/// Serves the cut: export on a blocking thread, then stream it.
async fn send<W: tokio::io::AsyncWrite + Unpin + Send + 'static>(
    write: W,
    nonce: u64,
    tx: &mpsc::Sender<CoreEvent>,
    logic_version: &LogicVersion,
) -> Result<TransferOutcome, String> {
    let started = Instant::now();
    let (reply, answer) = oneshot::channel();
    tx.send(CoreEvent::ServeCut { nonce, reply })
        .await
        .map_err(|_| "the core stopped".to_string())?;
    let cut = answer.await.map_err(|_| "the core stopped".to_string())??;
    let Cut {
        cut,
        state,
        side_data,
        stall_us,
        direction,
    } = cut;
    let mut write = write;
    let state_bytes = records::state_size(&state);
    transport::write_message(
        &mut write,
        &TransferMessage::Header {
            client: ROUTER_CLIENT.into(),
            state_version: STATE_FORMAT_VERSION,
            logic_version: logic_version.clone(),
            cut,
            state_bytes,
        },
    )
    .await
    .map_err(|e| e.to_string())?;
    // The export runs beside the core, on the snapshot, and writes its records straight into
    // the pieces this task writes to the socket. Pieces go back and forth between the two, at
    // most `TRANSFER_PIECES_MAX` of them: a slow receiver holds the export back.
    let (pieces_tx, mut pieces) = mpsc::channel::<Vec<u8>>(TRANSFER_PIECES_MAX);
    let (free_tx, mut free) = mpsc::channel::<Vec<u8>>(TRANSFER_PIECES_MAX);
    let exporter = tokio::task::spawn_blocking(move || {
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        // The export's own buffer is the first piece.
        let mut made = 1;
        let mut stopped = false;
        records::export_pieces(&state, TRANSFER_PIECE_BYTES, &mut |piece| {
            hasher.update(piece);
            if stopped {
                return;
            }
            let next = match free.try_recv() {
                Ok(next) => Some(next),
                Err(_) if made < TRANSFER_PIECES_MAX => {
                    made += 1;
                    Some(Vec::with_capacity(TRANSFER_PIECE_BYTES))
                }
                Err(_) => free.blocking_recv(),
            };
            // The session ended early when it takes no more pieces.
            stopped = match next {
                Some(next) => pieces_tx
                    .blocking_send(std::mem::replace(piece, next))
                    .is_err(),
                None => true,
            };
        });
        // The snapshot goes back with the digest, to be dropped once the session has ended:
        // freeing it can take longer than a large export's last pieces take to send.
        (hasher.digest128(), state)
    });
    let mut sent = 0u64;
    while let Some(mut piece) = pieces.recv().await {
        sent += piece.len() as u64;
        write.write_all(&piece).await.map_err(|e| e.to_string())?;
        piece.clear();
        // Room for every piece there is, so this never waits.
        let _ = free_tx.try_send(piece);
    }
    let (digest, state) = exporter.await.map_err(|e| e.to_string())?;
    if sent != state_bytes {
        return Err(format!(
            "the export wrote {sent} bytes, the state size is {state_bytes}"
        ));
    }
    // The side data holds the output replay logs: a bulk frame.
    transport::write_message_with_max(
        &mut write,
        &TransferMessage::End { digest, side_data },
        BULK_FRAME_PAYLOAD_BYTES_MAX,
    )
    .await
    .map_err(|e| e.to_string())?;
    write.shutdown().await.map_err(|e| e.to_string())?;
    tokio::task::spawn_blocking(move || drop(state));
    let duration_ms = started.elapsed().as_millis() as u64;
    info!(nonce, state_bytes, duration_ms, "state sent {direction}");
    Ok(TransferOutcome::Sent(SyncRecord {
        at_ms: crate::side::wall_ms(),
        direction,
        bytes: state_bytes,
        duration_ms,
        stall_us,
        sent: true,
    }))
}

async fn receive<R: tokio::io::AsyncRead + Unpin>(
    read: R,
    nonce: u64,
    tx: &mpsc::Sender<CoreEvent>,
    logic_version: &LogicVersion,
    direction: &str,
) -> Result<TransferOutcome, String> {
    receive_from(
        FrameReader::<_, TransferMessage>::new(read).with_payload_max(BULK_FRAME_PAYLOAD_BYTES_MAX),
        nonce,
        tx,
        logic_version,
        direction,
    )
    .await
}

async fn next_message<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut FrameReader<R, TransferMessage>,
) -> Result<TransferMessage, String> {
    match tokio::time::timeout(
        Duration::from_millis(TRANSFER_SILENCE_MS_MAX),
        reader.next(),
    )
    .await
    {
        Err(_) => Err(format!(
            "nothing from the sender for {TRANSFER_SILENCE_MS_MAX} ms"
        )),
        Ok(Err(e)) => Err(e.to_string()),
        Ok(Ok(None)) => Err("the sender closed the session".into()),
        Ok(Ok(Some(TransferMessage::Refuse { reason }))) => Err(format!("refused: {reason}")),
        Ok(Ok(Some(message))) => Ok(message),
    }
}

async fn receive_from<R: tokio::io::AsyncRead + Unpin>(
    mut reader: FrameReader<R, TransferMessage>,
    nonce: u64,
    tx: &mpsc::Sender<CoreEvent>,
    logic_version: &LogicVersion,
    direction: &str,
) -> Result<TransferOutcome, String> {
    let started = Instant::now();
    let TransferMessage::Header {
        client,
        state_version,
        logic_version: theirs,
        cut,
        state_bytes,
    } = next_message(&mut reader).await?
    else {
        return Err("the session did not start with a header".into());
    };
    if client != ROUTER_CLIENT || state_version != STATE_FORMAT_VERSION || theirs != *logic_version
    {
        return Err(format!(
            "incompatible state: {client} version {state_version} with logic {theirs}; this side reads version {STATE_FORMAT_VERSION} with logic {logic_version}"
        ));
    }
    if state_bytes > STATE_BYTES_MAX {
        return Err(format!(
            "a state of {state_bytes} bytes exceeds the limit of {STATE_BYTES_MAX}"
        ));
    }
    let _ = tx
        .send(CoreEvent::TransferHeader { nonce, state_bytes })
        .await;
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(state_bytes);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "state transfer {msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar.set_message(direction.to_string());
        bar
    });
    // The records follow the header as they are (they carry their own framing and checksums),
    // `state_bytes` of them. They are rebuilt on a blocking thread as they arrive, while this
    // task reads the next ones: receiving and decoding overlap, and no copy of the whole stream
    // is held. Pieces go back and forth between the two, at most `TRANSFER_PIECES_MAX` of them.
    let (pieces_tx, mut pieces) = mpsc::channel::<Vec<u8>>(TRANSFER_PIECES_MAX);
    let (free_tx, mut free) = mpsc::channel::<Vec<u8>>(TRANSFER_PIECES_MAX);
    let importer = tokio::task::spawn_blocking(move || -> Result<StateImport, ImportError> {
        let mut import = StateImport::new();
        while let Some(mut piece) = pieces.blocking_recv() {
            import.feed(&piece)?;
            piece.clear();
            // Room for every piece there is, so this never waits.
            let _ = free_tx.try_send(piece);
        }
        Ok(import)
    });
    let mut received = 0u64;
    let mut last_log = Instant::now();
    let read: Result<Option<(u128, Vec<u8>)>, String> = async {
        let mut made = 0;
        while received < state_bytes {
            let piece = match free.try_recv() {
                Ok(piece) => Some(piece),
                Err(_) if made < TRANSFER_PIECES_MAX => {
                    made += 1;
                    Some(Vec::with_capacity(TRANSFER_PIECE_BYTES))
                }
                Err(_) => free.recv().await,
            };
            // The import stopped at an error, which it reports.
            let Some(mut piece) = piece else {
                return Ok(None);
            };
            let wanted = (state_bytes - received).min(TRANSFER_PIECE_BYTES as u64) as usize;
            while piece.len() < wanted {
                let missing = wanted - piece.len();
                let read = tokio::time::timeout(
                    Duration::from_millis(TRANSFER_SILENCE_MS_MAX),
                    reader.read_raw(&mut piece, missing),
                )
                .await
                .map_err(|_| format!("nothing from the sender for {TRANSFER_SILENCE_MS_MAX} ms"))?
                .map_err(|e| e.to_string())?;
                if read == 0 {
                    return Err(format!(
                        "the sender closed the session after {} of {state_bytes} state bytes",
                        received + piece.len() as u64
                    ));
                }
            }
            received += wanted as u64;
            if pieces_tx.send(piece).await.is_err() {
                return Ok(None);
            }
            // Progress for rttest; a full queue only skips an update.
            let _ = tx.try_send(CoreEvent::TransferProgress {
                nonce,
                received,
                total: state_bytes,
            });
            if let Some(bar) = &bar {
                bar.set_position(received);
            }
            if last_log.elapsed() >= Duration::from_secs(1) {
                last_log = Instant::now();
                info!(
                    nonce,
                    "state transfer {direction}: {received} of {state_bytes} bytes"
                );
            }
        }
        match next_message(&mut reader).await? {
            TransferMessage::End { digest, side_data } => Ok(Some((digest, side_data))),
            _ => Err("unexpected message in a state transfer".into()),
        }
    }
    .await;
    drop(pieces_tx);
    let received_ms = started.elapsed().as_millis() as u64;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    // An error in the records comes first: it says more than the session's end it caused.
    let import = importer
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    let Some((digest, side_data)) = read? else {
        return Err("the import stopped without an error".into());
    };
    let side_data: SideData =
        rmp_serde::from_slice(&side_data).map_err(|e| format!("side data: {e}"))?;
    if side_data.history.len() > crate::logger_feed::HISTORY_RANGES_MAX {
        return Err(format!(
            "side data: a history of {} epoch ranges, more than {}",
            side_data.history.len(),
            crate::logger_feed::HISTORY_RANGES_MAX
        ));
    }
    // The digest of the records read must be the sender's at the cut; only then is the time
    // spent to check every relationship between objects, off the core.
    let ours = import.digest().map_err(|e| e.to_string())?;
    if ours != digest {
        return Err(format!(
            "digest {ours:032x} of the rebuilt state differs from the sender's {digest:032x}"
        ));
    }
    let state = tokio::task::spawn_blocking(move || import.finish())
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?
        .0;
    let duration_ms = started.elapsed().as_millis() as u64;
    info!(
        nonce,
        received_ms,
        checked_ms = duration_ms - received_ms,
        "state transfer {direction}: {state_bytes} bytes received and rebuilt in {received_ms} ms, checked in {} ms",
        duration_ms - received_ms
    );
    Ok(TransferOutcome::Received {
        cut,
        state: Box::new(state),
        side_data,
        record: SyncRecord {
            at_ms: crate::side::wall_ms(),
            direction: direction.to_string(),
            bytes: state_bytes,
            duration_ms,
            stall_us: 0,
            sent: false,
        },
    })
}

/// One state transfer of `state` through the real sessions over loopback TCP, side A sending to
/// side B, each end with a stand-in for its core: the benchmark of the transfer pipeline alone
/// (export, framing, the socket, import and the digest check). Returns the sender's and the
/// receiver's records. `security` is both ends' (a TLS context of role `central`, or
/// plaintext).
pub async fn measure_loopback(
    state: State,
    logic_version: LogicVersion,
    security: Security,
) -> Result<(SyncRecord, SyncRecord), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let nonce = 1;
    let (tx_a, mut core_a) = mpsc::channel::<CoreEvent>(1_024);
    let (tx_b, mut core_b) = mpsc::channel::<CoreEvent>(1_024);
    let lv = logic_version.clone();
    let server_security = security.clone();
    tokio::spawn(async move {
        if let Ok((stream, _)) = listener.accept().await {
            let auth = ClientAuth::Roles(&[Role::Central]);
            if let Ok((stream, _)) = transport::accept(stream, &server_security, auth).await {
                accept_at_b(stream, tx_b, lv).await;
            }
        }
    });
    tokio::spawn(open_from_a(
        addr,
        nonce,
        false,
        tx_a,
        logic_version,
        security,
    ));
    let mut state = Some(state);
    let mut sent = None;
    let mut received = None;
    while sent.is_none() || received.is_none() {
        tokio::select! {
            Some(event) = core_a.recv() => match event {
                CoreEvent::ServeCut { reply, .. } => {
                    let started = Instant::now();
                    let state = state.take().ok_or("the cut was asked for twice")?;
                    let stall_us = started.elapsed().as_micros() as u64;
                    let _ = reply.send(Ok(Cut {
                        cut: SyncCut {
                            seq: 0,
                            epoch: tandem_mds::Epoch::default(),
                            time_ms: 0,
                            pg_cursors: Vec::new(),
                        },
                        state,
                        side_data: rmp_serde::to_vec(&SideData::default())
                            .map_err(|e| e.to_string())?,
                        stall_us,
                        direction: "(A->B)".into(),
                    }));
                }
                CoreEvent::TransferDone { outcome, .. } => match outcome {
                    TransferOutcome::Sent(record) => sent = Some(record),
                    TransferOutcome::Failed(reason) => return Err(format!("sending: {reason}")),
                    TransferOutcome::Received { .. } => return Err("A received".into()),
                },
                _ => {}
            },
            Some(event) = core_b.recv() => match event {
                CoreEvent::ResolveNonce { reply, .. } => {
                    let _ = reply.send(Some(true));
                }
                CoreEvent::TransferDone { outcome, .. } => match outcome {
                    TransferOutcome::Received { record, .. } => received = Some(record),
                    TransferOutcome::Failed(reason) => return Err(format!("receiving: {reason}")),
                    TransferOutcome::Sent(_) => return Err("B sent".into()),
                },
                _ => {}
            },
            else => return Err("both ends stopped".into()),
        }
    }
    Ok((sent.expect("sent"), received.expect("received")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_model::generate::{generate, GenerateParams};
    use tokio::io::AsyncWriteExt;

    /// 2026-11-21T10:00:00Z.
    const T0: u64 = 1_795_255_200_000;

    /// A state of a few thousand agents: records of every size, over several pieces.
    fn state() -> State {
        let cc = generate(&GenerateParams {
            agents: 5_000,
            skill_groups: 100,
            call_types: 25,
            peripherals: 2,
            ..GenerateParams::default()
        });
        tandem_router::Router::from_contact_center(&cc, T0)
            .unwrap()
            .snapshot()
    }

    /// What a sender writes on a session after the cut, but with the records, the announced
    /// size and the digest chosen by the test; the stream ends after `records`.
    async fn receive_session(records: Vec<u8>, state_bytes: u64, digest: u128) -> TransferOutcome {
        let logic_version = crate::side::logic_version("test");
        let (mut sender, receiver) = tokio::io::duplex(64 * 1024);
        let header = TransferMessage::Header {
            client: ROUTER_CLIENT.into(),
            state_version: STATE_FORMAT_VERSION,
            logic_version: logic_version.clone(),
            cut: SyncCut {
                seq: 0,
                epoch: tandem_mds::Epoch::default(),
                time_ms: 0,
                pg_cursors: Vec::new(),
            },
            state_bytes,
        };
        let complete = records.len() as u64 == state_bytes;
        tokio::spawn(async move {
            // The receiver may stop reading at an error: what is left is not written.
            transport::write_message(&mut sender, &header).await?;
            sender.write_all(&records).await?;
            if complete {
                let side_data = rmp_serde::to_vec(&SideData::default()).expect("encodes");
                transport::write_message(&mut sender, &TransferMessage::End { digest, side_data })
                    .await?;
            }
            sender.shutdown().await?;
            Ok::<(), transport::TransportError>(())
        });
        // Room for every progress event, so that nothing needs to read them.
        let (tx, _events) = mpsc::channel(100_000);
        receive(receiver, 1, &tx, &logic_version, "(A->B)")
            .await
            .unwrap_or_else(TransferOutcome::Failed)
    }

    fn failure(outcome: TransferOutcome) -> String {
        match outcome {
            TransferOutcome::Failed(reason) => reason,
            TransferOutcome::Received { .. } => panic!("a damaged session was accepted"),
            TransferOutcome::Sent(_) => panic!("the receiver sent"),
        }
    }

    #[tokio::test]
    async fn a_whole_session_rebuilds_the_state() {
        let state = state();
        let records = records::export(&state);
        let digest = records::digest(&state);
        assert!(records.len() > 2 * TRANSFER_PIECE_BYTES);
        let size = records.len() as u64;
        match receive_session(records, size, digest).await {
            TransferOutcome::Received {
                state: received, ..
            } => assert_eq!(records::digest(&received), digest),
            TransferOutcome::Failed(reason) => panic!("refused: {reason}"),
            TransferOutcome::Sent(_) => panic!("the receiver sent"),
        }
    }

    /// A corrupt session is refused: a flipped byte, a stream cut short, a digest that is not
    /// the rebuilt state's, a stream longer than announced.
    #[tokio::test]
    async fn a_damaged_session_is_refused() {
        let state = state();
        let records = records::export(&state);
        let digest = records::digest(&state);
        let size = records.len() as u64;

        for at in [20, records.len() / 2, records.len() - 3] {
            let mut flipped = records.clone();
            flipped[at] ^= 0x08;
            let reason = failure(receive_session(flipped, size, digest).await);
            assert!(
                reason.contains("checksum") || reason.contains("record"),
                "flip at {at}: {reason}"
            );
        }

        let half = records[..records.len() / 2].to_vec();
        let reason = failure(receive_session(half, size, digest).await);
        assert!(reason.contains("closed the session"), "{reason}");

        let reason = failure(receive_session(records.clone(), size, digest ^ 1).await);
        assert!(reason.contains("digest"), "{reason}");

        // Announced one byte short: the last record is cut, and what follows is no End frame.
        let reason = failure(receive_session(records.clone(), size - 1, digest).await);
        assert!(!reason.is_empty());
    }
}
