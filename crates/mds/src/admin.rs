//! The client side of a configuration request (`PublicHello::Admin`): `tandem config`, the
//! distributor's configuration API and updateaw's export all ask a side this way.

use crate::protocol::{AdminReply, AdminRequest, PublicHello};
use crate::tls::{Role, Security};
use crate::transport::{self, FrameReader, TransportError};
use std::net::SocketAddr;
use std::time::Duration;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum AdminError {
    #[error("{addr}: {source}")]
    Transport {
        addr: SocketAddr,
        #[source]
        source: TransportError,
    },
    #[error("{addr} closed the connection without an answer: the outcome is unknown")]
    NoAnswer { addr: SocketAddr },
    #[error("{addr} did not answer within {timeout_ms} ms: the outcome is unknown")]
    Timeout { addr: SocketAddr, timeout_ms: u64 },
    #[error("no side took the request ({0})")]
    NoSide(String),
}

/// One configuration request to the side listening on `addr`.
pub async fn ask(
    addr: SocketAddr,
    request: &AdminRequest,
    timeout_ms: u64,
    security: &Security,
) -> Result<AdminReply, AdminError> {
    let failed = |source| AdminError::Transport { addr, source };
    let stream = transport::connect(addr, timeout_ms, security, Role::Central)
        .await
        .map_err(failed)?;
    let (read, mut write) = stream.into_split();
    transport::write_message(&mut write, &PublicHello::Admin(request.clone()))
        .await
        .map_err(failed)?;
    // An export is a whole configuration.
    let mut reader = FrameReader::<_, AdminReply>::new(read)
        .with_payload_max(crate::frame::BULK_FRAME_PAYLOAD_BYTES_MAX);
    match tokio::time::timeout(Duration::from_millis(timeout_ms), reader.next()).await {
        Ok(Ok(Some(reply))) => Ok(reply),
        Ok(Ok(None)) => Err(AdminError::NoAnswer { addr }),
        Ok(Err(e)) => Err(failed(e)),
        Err(_) => Err(AdminError::Timeout { addr, timeout_ms }),
    }
}

/// Asks each side in turn (`sides` lists them with their names) until one that orders input
/// answers.
pub async fn ask_ordering_side(
    sides: [(&str, SocketAddr); 2],
    request: &AdminRequest,
    timeout_ms: u64,
    security: &Security,
) -> Result<AdminReply, AdminError> {
    let mut reasons = Vec::new();
    for (name, addr) in sides {
        match ask(addr, request, timeout_ms, security).await {
            Ok(AdminReply::NotOrdering { reason }) => {
                reasons.push(format!("side {name}: {reason}"))
            }
            Ok(reply) => return Ok(reply),
            Err(e) => reasons.push(format!("side {name}: {e}")),
        }
    }
    Err(AdminError::NoSide(reasons.join("; ")))
}
