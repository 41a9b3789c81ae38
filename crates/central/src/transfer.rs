//! State-transfer sessions: one TCP connection per synchronized client on the private network,
//! always opened by side A's MDS (the seed's rule), whichever way the state goes.
//!
//! The sender's core takes the cut (`Core::serve_cut`: the synchronizer's cut and a
//! copy-on-write snapshot of the router, a few pointer copies), and this module does the rest
//! off the core: it exports the snapshot to records on a blocking thread, streams them in
//! checksummed frames, and ends with the digest at the cut. The receiver rebuilds the state on
//! a blocking thread, checks the digest, and hands the state to its core. Any failure ends the
//! session; the receiver's core retries with backoff.

use crate::outputs::OutputLog;
use crate::side::CoreEvent;
use crate::status::SyncRecord;
use std::io::IsTerminal;
use std::net::SocketAddr;
use std::time::{Duration, Instant};
use tandem_mds::transport::{self, FrameReader, Outbound};
use tandem_mds::{LogicVersion, SyncCut, TransferMessage};
use tandem_router::{records, State, STATE_FORMAT_VERSION};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tracing::info;

/// The router's name as a synchronized client.
pub const ROUTER_CLIENT: &str = "router";
/// State bytes per frame.
pub const TRANSFER_CHUNK_BYTES: usize = 1 << 20;
/// The largest state a receiver accepts.
pub const STATE_BYTES_MAX: u64 = 16 << 30;
/// A session silent this long has failed.
const TRANSFER_SILENCE_MS_MAX: u64 = 10_000;
/// How long side B waits for the request a session's nonce names to arrive on the private link.
const NONCE_WAIT_MS_MAX: u64 = 2_000;
/// How often it asks its core again meanwhile.
const NONCE_POLL_MS: u64 = 10;

/// What the source's core hands its session.
pub struct Cut {
    pub cut: SyncCut,
    pub state: State,
    /// The side's own data beside the router's records (its output log), encoded.
    pub side_data: Vec<u8>,
    /// How long the core stopped to take the cut.
    pub stall_us: u64,
    pub direction: String,
}

pub enum TransferOutcome {
    Sent(SyncRecord),
    Received {
        cut: SyncCut,
        state: Box<State>,
        outputs: OutputLog,
        record: SyncRecord,
    },
    Failed(String),
}

/// Side A opens a session to B's transfer listener: to receive (`a_receives`) or to send.
pub(crate) async fn open_from_a(
    addr: SocketAddr,
    nonce: u64,
    a_receives: bool,
    tx: mpsc::Sender<CoreEvent>,
    logic_version: LogicVersion,
) {
    let outcome = async {
        let stream = transport::connect(addr, 2_000)
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
    stream: TcpStream,
    tx: mpsc::Sender<CoreEvent>,
    logic_version: LogicVersion,
) {
    let (read, write) = stream.into_split();
    let mut reader = FrameReader::<_, TransferMessage>::new(read);
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
    let out = Outbound::<TransferMessage>::spawn(write);
    // The export runs beside the core, on the snapshot; records go out as they are made.
    let (chunks_tx, mut chunks) = mpsc::channel::<Vec<u8>>(8);
    let exporter = tokio::task::spawn_blocking(move || {
        let size = records::state_size(&state);
        let mut hasher = xxhash_rust::xxh3::Xxh3::new();
        let mut chunk = Vec::with_capacity(TRANSFER_CHUNK_BYTES);
        let mut closed = false;
        let _ = chunks_tx.blocking_send(size.to_le_bytes().to_vec());
        records::export_to(&state, &mut |record| {
            hasher.update(record);
            chunk.extend_from_slice(record);
            if chunk.len() >= TRANSFER_CHUNK_BYTES && !closed {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(TRANSFER_CHUNK_BYTES));
                closed = chunks_tx.blocking_send(full).is_err();
            }
        });
        if !chunk.is_empty() && !closed {
            let _ = chunks_tx.blocking_send(chunk);
        }
        hasher.digest128()
    });
    let size_bytes = chunks.recv().await.ok_or("the export stopped")?;
    let state_bytes = u64::from_le_bytes(size_bytes.try_into().map_err(|_| "bad size")?);
    let io = |e: transport::TransportError| e.to_string();
    out.send_paced(&TransferMessage::Header {
        client: ROUTER_CLIENT.into(),
        state_version: STATE_FORMAT_VERSION,
        logic_version: logic_version.clone(),
        cut,
        state_bytes,
    })
    .await
    .map_err(io)?;
    while let Some(bytes) = chunks.recv().await {
        out.send_paced(&TransferMessage::Chunk { bytes })
            .await
            .map_err(io)?;
    }
    let digest = exporter.await.map_err(|e| e.to_string())?;
    out.send_paced(&TransferMessage::End { digest, side_data })
        .await
        .map_err(io)?;
    drop(out);
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
        FrameReader::<_, TransferMessage>::new(read),
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
    let mut bytes = Vec::with_capacity(state_bytes as usize);
    let mut last_log = Instant::now();
    let (digest, side_data) = loop {
        match next_message(&mut reader).await? {
            TransferMessage::Chunk { bytes: chunk } => {
                if bytes.len() as u64 + chunk.len() as u64 > state_bytes {
                    return Err("the sender sent more than the size it announced".into());
                }
                bytes.extend_from_slice(&chunk);
                // Progress for rttest; a full queue only skips an update.
                let _ = tx.try_send(CoreEvent::TransferProgress {
                    nonce,
                    received: bytes.len() as u64,
                    total: state_bytes,
                });
                if let Some(bar) = &bar {
                    bar.set_position(bytes.len() as u64);
                }
                if last_log.elapsed() >= Duration::from_secs(1) {
                    last_log = Instant::now();
                    info!(
                        nonce,
                        "state transfer {direction}: {} of {state_bytes} bytes",
                        bytes.len()
                    );
                }
            }
            TransferMessage::End { digest, side_data } => break (digest, side_data),
            _ => return Err("unexpected message in a state transfer".into()),
        }
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if bytes.len() as u64 != state_bytes {
        return Err(format!(
            "received {} of {state_bytes} state bytes",
            bytes.len()
        ));
    }
    let outputs: OutputLog =
        rmp_serde::from_slice(&side_data).map_err(|e| format!("side data: {e}"))?;
    // Rebuild and check off the core: import checks every record, the references between
    // objects and the invariants; the digest must be the sender's at the cut.
    let received_ms = started.elapsed().as_millis() as u64;
    let state = tokio::task::spawn_blocking(move || -> Result<State, String> {
        let (state, ours) = records::import_with_digest(&bytes).map_err(|e| e.to_string())?;
        if ours != digest {
            return Err(format!(
                "digest {ours:032x} of the rebuilt state differs from the sender's {digest:032x}"
            ));
        }
        Ok(state)
    })
    .await
    .map_err(|e| e.to_string())??;
    let duration_ms = started.elapsed().as_millis() as u64;
    info!(
        nonce,
        received_ms,
        rebuilt_ms = duration_ms - received_ms,
        "state transfer {direction}: {state_bytes} bytes received in {received_ms} ms, rebuilt and checked in {} ms",
        duration_ms - received_ms
    );
    Ok(TransferOutcome::Received {
        cut,
        state: Box::new(state),
        outputs,
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
/// receiver's records.
pub async fn measure_loopback(
    state: State,
    logic_version: LogicVersion,
) -> Result<(SyncRecord, SyncRecord), String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let nonce = 1;
    let (tx_a, mut core_a) = mpsc::channel::<CoreEvent>(1_024);
    let (tx_b, mut core_b) = mpsc::channel::<CoreEvent>(1_024);
    let lv = logic_version.clone();
    tokio::spawn(async move {
        if let Ok((stream, _)) = listener.accept().await {
            accept_at_b(stream, tx_b, lv).await;
        }
    });
    tokio::spawn(open_from_a(addr, nonce, false, tx_a, logic_version));
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
                        side_data: rmp_serde::to_vec(&OutputLog::default())
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
