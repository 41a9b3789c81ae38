//! The rttest client: one command to a side's public listener, one text reply.

use std::net::SocketAddr;
use std::time::Duration;
use tandem_mds::tls::{Role, Security};
use tandem_mds::transport::{self, FrameReader, TransportError};
use tandem_mds::PublicHello;

/// Sends `command` to the side at `addr` and returns its reply.
pub async fn query(
    addr: SocketAddr,
    command: &str,
    timeout_ms: u64,
    security: &Security,
) -> Result<String, TransportError> {
    let stream = transport::connect(addr, timeout_ms, security, Role::Central).await?;
    let (read, mut write) = stream.into_split();
    transport::write_message(
        &mut write,
        &PublicHello::RtTest {
            command: command.to_string(),
        },
    )
    .await?;
    let mut reader = FrameReader::<_, String>::new(read);
    match tokio::time::timeout(Duration::from_millis(timeout_ms), reader.next()).await {
        Ok(Ok(Some(text))) => Ok(text),
        Ok(Ok(None)) => Err(TransportError::Closed),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(TransportError::Closed),
    }
}
