//! The one transport of every tandem TCP link: frames (`frame.rs`) over a byte stream, a
//! reader that yields whole messages, and a writer task fed through a bounded queue.
//!
//! Every link is a `Stream`: TLS with mutual authentication from the cluster CA (`tls.rs`), or
//! plaintext only when a process runs with `--insecure-plaintext`. `connect` verifies the
//! server's role; `accept` verifies the client's certificate and role. A slow reader on the far end never grows memory here: the
//! queue to each writer is bounded (`OUTBOUND_FRAMES_MAX`) and a full queue is an error the
//! caller handles (usually by closing the link with a reason).

use crate::frame::{self, FrameError, FRAME_HEADER_BYTES};
use crate::tls::{self, PeerIdentity, Role, Security, TlsContext, TLS_HANDSHAKE_TIMEOUT_MS};
use serde::{de::DeserializeOwned, Serialize};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Frames queued to one connection's writer before sending more is refused.
pub const OUTBOUND_FRAMES_MAX: usize = 16_384;
/// Bytes read from the socket at once.
const READ_CHUNK_BYTES: usize = 64 * 1024;

#[derive(Debug, Error)]
pub enum TransportError {
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("bad frame: {0}")]
    Frame(#[from] FrameError),
    #[error("the connection closed in the middle of a frame")]
    Truncated,
    #[error("the send queue of this connection is full ({0} frames)")]
    QueueFull(usize),
    #[error("the connection is closed")]
    Closed,
    #[error("connecting to {addr} timed out after {timeout_ms} ms")]
    ConnectTimeout { addr: SocketAddr, timeout_ms: u64 },
    #[error("TLS handshake failed: {0}")]
    Handshake(String),
    #[error("the TLS handshake took longer than {0} ms")]
    HandshakeTimeout(u64),
    #[error("{peer} may not use this listener (it takes {allowed})")]
    WrongRole { peer: PeerIdentity, allowed: String },
    #[error("this process has no certificate of its own to serve TLS with")]
    NoServerCertificate,
}

/// Reads whole messages of type `T` from a byte stream.
pub struct FrameReader<R, T> {
    read: R,
    buffer: Vec<u8>,
    /// Bytes at the front of `buffer` already consumed.
    start: usize,
    /// The largest frame payload this link accepts.
    payload_max: usize,
    _message: PhantomData<fn() -> T>,
}

impl<R: AsyncRead + Unpin, T: DeserializeOwned> FrameReader<R, T> {
    pub fn new(read: R) -> FrameReader<R, T> {
        FrameReader {
            read,
            buffer: Vec::with_capacity(READ_CHUNK_BYTES),
            start: 0,
            payload_max: frame::FRAME_PAYLOAD_BYTES_MAX,
            _message: PhantomData,
        }
    }

    /// The same reader, taking frames of up to `max` payload bytes (a link that carries whole
    /// configurations: `frame::BULK_FRAME_PAYLOAD_BYTES_MAX`).
    pub fn with_payload_max(mut self, max: usize) -> FrameReader<R, T> {
        self.payload_max = max;
        self
    }

    /// The same stream, read from here on as messages of another type (a connection whose
    /// first message says what follows).
    pub fn retype<U: DeserializeOwned>(self) -> FrameReader<R, U> {
        FrameReader {
            read: self.read,
            buffer: self.buffer,
            start: self.start,
            payload_max: self.payload_max,
            _message: PhantomData,
        }
    }

    /// The next message, or `None` at a clean end of stream.
    pub async fn next(&mut self) -> Result<Option<T>, TransportError> {
        loop {
            if let Some((message, used)) =
                frame::decode_with_max::<T>(&self.buffer[self.start..], self.payload_max)?
            {
                self.start += used;
                return Ok(Some(message));
            }
            // Compact before reading more, so the buffer holds at most one frame and a chunk.
            if self.start > 0 {
                self.buffer.drain(..self.start);
                self.start = 0;
            }
            let len = self.buffer.len();
            self.buffer.resize(len + READ_CHUNK_BYTES, 0);
            let n = self.read.read(&mut self.buffer[len..]).await?;
            self.buffer.truncate(len + n);
            if n == 0 {
                return if self.buffer.is_empty() {
                    Ok(None)
                } else {
                    Err(TransportError::Truncated)
                };
            }
        }
    }
}

impl<R: AsyncRead + Unpin, T> FrameReader<R, T> {
    /// Appends raw bytes that follow the last message read (a bulk payload that carries its
    /// own framing) to `out`: at most `max` bytes and at most `out`'s spare capacity, first the
    /// bytes already buffered, else what one read of the stream returns. Returns how many were
    /// appended; 0 at the end of the stream (or when there is no room).
    pub async fn read_raw(
        &mut self,
        out: &mut Vec<u8>,
        max: usize,
    ) -> Result<usize, TransportError> {
        let room = max.min(out.capacity() - out.len());
        if room == 0 {
            return Ok(0);
        }
        let buffered = self.buffer.len() - self.start;
        if buffered > 0 {
            let n = buffered.min(room);
            out.extend_from_slice(&self.buffer[self.start..self.start + n]);
            self.start += n;
            return Ok(n);
        }
        // Straight into `out`'s spare capacity, without zeroing it first.
        let mut limited = (&mut self.read).take(room as u64);
        Ok(limited.read_buf(out).await?)
    }
}

/// Writes one message as a frame.
pub async fn write_message<W: AsyncWrite + Unpin, T: Serialize>(
    write: &mut W,
    message: &T,
) -> Result<(), TransportError> {
    write_message_with_max(write, message, frame::FRAME_PAYLOAD_BYTES_MAX).await
}

/// Writes one message as a frame of up to `max` payload bytes (a whole configuration).
pub async fn write_message_with_max<W: AsyncWrite + Unpin, T: Serialize>(
    write: &mut W,
    message: &T,
    max: usize,
) -> Result<(), TransportError> {
    let mut bytes = Vec::with_capacity(FRAME_HEADER_BYTES + 64);
    frame::encode_with_max(message, &mut bytes, max)?;
    write.write_all(&bytes).await?;
    // A TLS stream returns from a write with the end of it still held when the socket is
    // full; the flush hands everything to the socket, as a plain TCP write does.
    write.flush().await?;
    Ok(())
}

/// The sending half of a connection: messages are encoded here and written by a task of their
/// own, so a slow peer never blocks the caller.
pub struct Outbound<T> {
    queue: mpsc::Sender<Vec<u8>>,
    _message: PhantomData<fn(T)>,
}

impl<T> Clone for Outbound<T> {
    fn clone(&self) -> Self {
        Outbound {
            queue: self.queue.clone(),
            _message: PhantomData,
        }
    }
}

impl<T: Serialize> Outbound<T> {
    /// Starts the writer task on `write`; it ends when every `Outbound` is dropped or the
    /// socket fails.
    pub fn spawn<W: AsyncWrite + Unpin + Send + 'static>(mut write: W) -> Outbound<T> {
        let (queue, mut frames) = mpsc::channel::<Vec<u8>>(OUTBOUND_FRAMES_MAX);
        tokio::spawn(async move {
            while let Some(first) = frames.recv().await {
                // Coalesce what is queued into one write.
                let mut bytes = first;
                while bytes.len() < READ_CHUNK_BYTES {
                    match frames.try_recv() {
                        Ok(more) => bytes.extend_from_slice(&more),
                        Err(_) => break,
                    }
                }
                // Flushed each time: a TLS stream would otherwise hold the end of a write
                // until the next one, and the last message of a burst would wait for it.
                if write.write_all(&bytes).await.is_err() || write.flush().await.is_err() {
                    return;
                }
            }
            let _ = write.shutdown().await;
        });
        Outbound {
            queue,
            _message: PhantomData,
        }
    }

    /// Queues `message`; fails at once when the queue is full or the writer is gone.
    pub fn send(&self, message: &T) -> Result<(), TransportError> {
        let mut bytes = Vec::new();
        frame::encode(message, &mut bytes)?;
        self.try_queue(bytes)
    }

    /// Queues a message that may be as large as a bulk frame (one carrying a whole
    /// configuration, up to `frame::BULK_FRAME_PAYLOAD_BYTES_MAX`); the reader must accept
    /// bulk frames. Fails at once when the queue is full or the writer is gone.
    pub fn send_bulk(&self, message: &T) -> Result<(), TransportError> {
        let mut bytes = Vec::new();
        frame::encode_with_max(message, &mut bytes, frame::BULK_FRAME_PAYLOAD_BYTES_MAX)?;
        self.try_queue(bytes)
    }

    fn try_queue(&self, bytes: Vec<u8>) -> Result<(), TransportError> {
        self.queue.try_send(bytes).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => TransportError::QueueFull(OUTBOUND_FRAMES_MAX),
            mpsc::error::TrySendError::Closed(_) => TransportError::Closed,
        })
    }

    /// Queues `message`, waiting while the queue is full (for bulk senders that pace
    /// themselves, such as a state transfer).
    pub async fn send_paced(&self, message: &T) -> Result<(), TransportError> {
        let mut bytes = Vec::new();
        frame::encode(message, &mut bytes)?;
        self.queue
            .send(bytes)
            .await
            .map_err(|_| TransportError::Closed)
    }
}

/// One TCP connection of a tandem link, in TLS unless the process runs with
/// `--insecure-plaintext`.
pub enum Stream {
    Plain(TcpStream),
    Client(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Server(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

/// The reading half of a `Stream`.
pub type ReadHalf = tokio::io::ReadHalf<Stream>;
/// The writing half of a `Stream`.
pub type WriteHalf = tokio::io::WriteHalf<Stream>;

impl Stream {
    /// The two halves, for a reader task and a writer task.
    pub fn into_split(self) -> (ReadHalf, WriteHalf) {
        tokio::io::split(self)
    }
}

impl AsyncRead for Stream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Client(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Stream::Server(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Connects with a timeout, with Nagle's algorithm off (every link carries small, urgent
/// messages: heartbeats, acks, route responses), and in TLS verifies that the server holds a
/// certificate of `server_role` from the cluster CA.
pub async fn connect(
    addr: SocketAddr,
    timeout_ms: u64,
    security: &Security,
    server_role: Role,
) -> Result<Stream, TransportError> {
    let stream = tokio::time::timeout(Duration::from_millis(timeout_ms), TcpStream::connect(addr))
        .await
        .map_err(|_| TransportError::ConnectTimeout { addr, timeout_ms })??;
    secure(stream, security, server_role).await
}

/// The client's half of `connect` on a TCP connection made some other way (one with socket
/// options of its own).
pub async fn secure(
    stream: TcpStream,
    security: &Security,
    server_role: Role,
) -> Result<Stream, TransportError> {
    stream.set_nodelay(true)?;
    match security {
        Security::InsecurePlaintext => Ok(Stream::Plain(stream)),
        Security::Tls(context) => {
            let connector = tokio_rustls::TlsConnector::from(context.client_config());
            let handshake = connector.connect(TlsContext::server_name(server_role), stream);
            let tls =
                tokio::time::timeout(Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS), handshake)
                    .await
                    .map_err(|_| TransportError::HandshakeTimeout(TLS_HANDSHAKE_TIMEOUT_MS))?
                    .map_err(|e| TransportError::Handshake(e.to_string()))?;
            Ok(Stream::Client(Box::new(tls)))
        }
    }
}

/// How often a listener reports refused connections, at most: a flood of bad clients does not
/// fill the log.
pub const REFUSAL_LOG_INTERVAL_MS: u64 = 10_000;

/// Reports one listener's refused connections: the first at once, then at most one line per
/// `REFUSAL_LOG_INTERVAL_MS`, saying how many more were refused meanwhile.
pub struct RefusalLog {
    listener: &'static str,
    /// When the last line was written, and the refusals since then not reported.
    state: std::sync::Mutex<(Option<std::time::Instant>, u64)>,
}

impl RefusalLog {
    pub fn new(listener: &'static str) -> RefusalLog {
        RefusalLog {
            listener,
            state: std::sync::Mutex::new((None, 0)),
        }
    }

    pub fn refused(&self, why: std::fmt::Arguments<'_>) {
        let now = std::time::Instant::now();
        let suppressed = {
            let mut state = self
                .state
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let interval = Duration::from_millis(REFUSAL_LOG_INTERVAL_MS);
            if state.0.is_some_and(|at| now.duration_since(at) < interval) {
                state.1 += 1;
                return;
            }
            state.0 = Some(now);
            std::mem::take(&mut state.1)
        };
        if suppressed > 0 {
            tracing::warn!(
                "{} refused a connection: {why} ({suppressed} more refused since the last report)",
                self.listener
            );
        } else {
            tracing::warn!("{} refused a connection: {why}", self.listener);
        }
    }
}

/// Who may use a listener.
#[derive(Clone, Copy, Debug)]
pub enum ClientAuth {
    /// A certificate from the cluster CA of one of these roles.
    Roles(&'static [Role]),
    /// A certificate is optional (HTTP: a browser authenticates with a token instead); one
    /// presented is still verified.
    Optional,
}

/// Completes the TLS handshake of an accepted connection (within `TLS_HANDSHAKE_TIMEOUT_MS`)
/// and checks the client's role. Returns the stream and, in TLS, the identity its
/// certificate names (`None` for a client without one on an `Optional` listener, and always in
/// plaintext).
pub async fn accept(
    stream: TcpStream,
    security: &Security,
    auth: ClientAuth,
) -> Result<(Stream, Option<PeerIdentity>), TransportError> {
    stream.set_nodelay(true)?;
    let context = match security {
        Security::InsecurePlaintext => return Ok((Stream::Plain(stream), None)),
        Security::Tls(context) => context,
    };
    let required = matches!(auth, ClientAuth::Roles(_));
    let config = context
        .server_config(required)
        .ok_or(TransportError::NoServerCertificate)?;
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let tls = tokio::time::timeout(
        Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS),
        acceptor.accept(stream),
    )
    .await
    .map_err(|_| TransportError::HandshakeTimeout(TLS_HANDSHAKE_TIMEOUT_MS))?
    .map_err(|e| TransportError::Handshake(e.to_string()))?;
    let identity = match tls.get_ref().1.peer_certificates().and_then(|c| c.first()) {
        Some(cert) => {
            Some(tls::identity_of(cert).map_err(|e| TransportError::Handshake(e.to_string()))?)
        }
        None => None,
    };
    if let ClientAuth::Roles(roles) = auth {
        // The verifier required a certificate; a role outside the listener's is refused here.
        let identity = identity.as_ref().ok_or(TransportError::Handshake(
            "the client presented no certificate".into(),
        ))?;
        if !roles.contains(&identity.role) {
            return Err(TransportError::WrongRole {
                peer: identity.clone(),
                allowed: roles
                    .iter()
                    .map(|r| r.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    }
    Ok((Stream::Server(Box::new(tls)), identity))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_cross_a_socket_whole_and_in_order() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let (read, _write) = stream.into_split();
            let mut reader = FrameReader::<_, (u64, Vec<u8>)>::new(read);
            let mut got = Vec::new();
            while let Some(message) = reader.next().await.unwrap() {
                got.push(message);
            }
            got
        });
        let stream = connect(addr, 1_000, &Security::InsecurePlaintext, Role::Central)
            .await
            .unwrap();
        let (_read, write) = stream.into_split();
        let outbound = Outbound::<(u64, Vec<u8>)>::spawn(write);
        let sent: Vec<(u64, Vec<u8>)> = (0..2_000u64)
            .map(|i| (i, vec![i as u8; (i % 300) as usize]))
            .collect();
        for message in &sent {
            outbound.send_paced(message).await.unwrap();
        }
        drop(outbound);
        assert_eq!(server.await.unwrap(), sent);
    }

    /// Raw bytes between two frames are read whole, whatever was buffered with the first
    /// frame, and the frame after them is read as usual.
    #[tokio::test]
    async fn raw_bytes_between_frames_are_read_as_they_are() {
        let raw: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let mut stream = Vec::new();
        frame::encode(&7u64, &mut stream).unwrap();
        stream.extend_from_slice(&raw);
        frame::encode(&8u64, &mut stream).unwrap();
        let mut reader = FrameReader::<_, u64>::new(&stream[..]);
        assert_eq!(reader.next().await.unwrap(), Some(7));
        let mut got = Vec::with_capacity(raw.len());
        while got.len() < raw.len() {
            let missing = raw.len() - got.len();
            assert!(
                reader
                    .read_raw(&mut got, missing.min(70_000))
                    .await
                    .unwrap()
                    > 0
            );
        }
        assert_eq!(got, raw);
        assert_eq!(reader.read_raw(&mut got, 0).await.unwrap(), 0);
        assert_eq!(reader.next().await.unwrap(), Some(8));
        assert_eq!(reader.next().await.unwrap(), None);
    }

    use crate::tls::{generate_ca, issued_security, PemPair};

    fn context(ca: &PemPair, role: Role, name: &str) -> Security {
        issued_security(ca, role, name).unwrap()
    }

    /// A listener that takes one connection with `auth` and reports the outcome, echoing one
    /// message back when it was accepted.
    async fn listener(
        security: Security,
        auth: ClientAuth,
    ) -> (
        SocketAddr,
        tokio::task::JoinHandle<Result<Option<PeerIdentity>, TransportError>>,
    ) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let (stream, peer) = accept(tcp, &security, auth).await?;
            let (read, mut write) = stream.into_split();
            let mut reader = FrameReader::<_, u64>::new(read);
            if let Some(n) = reader.next().await? {
                write_message(&mut write, &(n + 1)).await?;
            }
            Ok(peer)
        });
        (addr, task)
    }

    #[tokio::test]
    async fn mutual_tls_carries_messages_and_names_the_peer() {
        let ca = generate_ca().unwrap();
        let (addr, server) = listener(
            context(&ca, Role::Central, "side-b"),
            ClientAuth::Roles(&[Role::Central]),
        )
        .await;
        let client = context(&ca, Role::Central, "side-a");
        let stream = connect(addr, 1_000, &client, Role::Central).await.unwrap();
        let (read, mut write) = stream.into_split();
        write_message(&mut write, &41u64).await.unwrap();
        let mut reader = FrameReader::<_, u64>::new(read);
        assert_eq!(reader.next().await.unwrap(), Some(42));
        drop(write);
        let peer = server
            .await
            .unwrap()
            .unwrap()
            .expect("a client certificate");
        assert_eq!(
            peer,
            PeerIdentity {
                role: Role::Central,
                name: "side-a".into()
            }
        );
    }

    #[tokio::test]
    async fn a_role_the_listener_does_not_take_is_refused() {
        let ca = generate_ca().unwrap();
        let (addr, server) = listener(
            context(&ca, Role::Central, "side-b"),
            ClientAuth::Roles(&[Role::Central]),
        )
        .await;
        let pg = context(&ca, Role::Pg, "pg1");
        // The handshake itself succeeds (the certificate is the cluster's); the listener then
        // closes the connection without reading a byte of it.
        if let Ok(stream) = connect(addr, 1_000, &pg, Role::Central).await {
            let (read, mut write) = stream.into_split();
            let _ = write_message(&mut write, &1u64).await;
            let mut reader = FrameReader::<_, u64>::new(read);
            assert!(!matches!(reader.next().await, Ok(Some(_))));
        }
        let refused = server.await.unwrap();
        assert!(
            matches!(refused, Err(TransportError::WrongRole { ref peer, .. }) if peer.role == Role::Pg),
            "{refused:?}"
        );
    }

    #[tokio::test]
    async fn a_certificate_of_another_ca_and_a_plaintext_client_are_refused() {
        let ca = generate_ca().unwrap();
        let stranger = generate_ca().unwrap();
        for client in [
            context(&stranger, Role::Central, "side-a"),
            Security::InsecurePlaintext,
        ] {
            let (addr, server) = listener(
                context(&ca, Role::Central, "side-b"),
                ClientAuth::Roles(&[Role::Central]),
            )
            .await;
            // A plaintext client connects and writes a frame the listener never takes.
            if let Ok(stream) = connect(addr, 1_000, &client, Role::Central).await {
                let (read, mut write) = stream.into_split();
                let _ = write_message(&mut write, &1u64).await;
                let mut reader = FrameReader::<_, u64>::new(read);
                assert!(!matches!(reader.next().await, Ok(Some(_))));
            }
            let refused = server.await.unwrap();
            assert!(
                matches!(refused, Err(TransportError::Handshake(_))),
                "{refused:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_client_checks_the_servers_role() {
        let ca = generate_ca().unwrap();
        // A PG certificate listening where a side should be.
        let (addr, _server) =
            listener(context(&ca, Role::Pg, "pg1"), ClientAuth::Roles(&Role::ALL)).await;
        let client = context(&ca, Role::Pg, "pg2");
        let refused = connect(addr, 1_000, &client, Role::Central).await;
        assert!(
            matches!(refused, Err(TransportError::Handshake(ref e)) if e.contains("certificate")),
            "{:?}",
            refused.err()
        );
    }

    #[tokio::test]
    async fn a_client_that_never_completes_the_handshake_is_dropped() {
        let ca = generate_ca().unwrap();
        let (addr, server) = listener(
            context(&ca, Role::Central, "side-b"),
            ClientAuth::Roles(&[Role::Central]),
        )
        .await;
        let _silent = TcpStream::connect(addr).await.unwrap();
        let started = std::time::Instant::now();
        let refused = server.await.unwrap();
        assert!(matches!(refused, Err(TransportError::HandshakeTimeout(_))));
        assert!(started.elapsed() >= Duration::from_millis(TLS_HANDSHAKE_TIMEOUT_MS - 100));
    }

    #[tokio::test]
    async fn a_stream_that_ends_inside_a_frame_is_an_error() {
        let mut bytes = Vec::new();
        frame::encode(&7u64, &mut bytes).unwrap();
        bytes.pop();
        let mut reader = FrameReader::<_, u64>::new(&bytes[..]);
        assert!(matches!(
            reader.next().await,
            Err(TransportError::Truncated)
        ));
        let mut empty = FrameReader::<_, u64>::new(&[][..]);
        assert!(empty.next().await.unwrap().is_none());
    }
}
