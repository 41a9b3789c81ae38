//! The one transport of every tandem TCP link: frames (`frame.rs`) over a byte stream, a
//! reader that yields whole messages, and a writer task fed through a bounded queue.
//!
//! Everything here is generic over `AsyncRead`/`AsyncWrite`, so that the same links run over
//! TLS once the streams are wrapped. A slow reader on the far end never grows memory here: the
//! queue to each writer is bounded (`OUTBOUND_FRAMES_MAX`) and a full queue is an error the
//! caller handles (usually by closing the link with a reason).

use crate::frame::{self, FrameError, FRAME_HEADER_BYTES};
use serde::{de::DeserializeOwned, Serialize};
use std::marker::PhantomData;
use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
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
                if write.write_all(&bytes).await.is_err() {
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

/// Connects with a timeout, with Nagle's algorithm off: every link carries small, urgent
/// messages (heartbeats, acks, route responses).
pub async fn connect(addr: SocketAddr, timeout_ms: u64) -> Result<TcpStream, TransportError> {
    let stream = tokio::time::timeout(Duration::from_millis(timeout_ms), TcpStream::connect(addr))
        .await
        .map_err(|_| TransportError::ConnectTimeout { addr, timeout_ms })??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Prepares an accepted stream like a connected one.
pub fn accepted(stream: &TcpStream) -> Result<(), TransportError> {
    stream.set_nodelay(true)?;
    Ok(())
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
        let stream = connect(addr, 1_000).await.unwrap();
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
