//! A minimal HTTP client for the distributors' own APIs: `tandem aw status` and the system page's
//! view of the other distributors. The answers are small JSON bodies that axum sends with a
//! length, so a whole HTTP client library would add nothing.

use std::net::SocketAddr;
use std::time::Duration;
use tandem_mds::tls::{Role, Security};
use tandem_mds::transport;
use thiserror::Error;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The largest answer read; a longer one is cut and fails to parse.
pub const ANSWER_BYTES_MAX: usize = 4 << 20;

#[derive(Debug, Error)]
pub enum HttpGetError {
    #[error("{addr}: {source}")]
    Io {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("{addr} did not answer within {timeout_ms} ms")]
    Timeout { addr: SocketAddr, timeout_ms: u64 },
    #[error("{addr}: not an HTTP answer")]
    NotHttp { addr: SocketAddr },
    #[error("{addr}{path}: {status_line}: {body}")]
    Status {
        addr: SocketAddr,
        path: String,
        status_line: String,
        body: String,
    },
}

/// A GET of `path` on the distributor at `addr`: the body of a 200 answer. In TLS the client
/// proves who it is with its certificate, or else with `token`.
pub async fn get(
    addr: SocketAddr,
    path: &str,
    timeout_ms: u64,
    security: &Security,
    token: Option<&str>,
) -> Result<String, HttpGetError> {
    let (status_line, body) = request(addr, "GET", path, None, timeout_ms, security, token).await?;
    if !status_line.contains(" 200 ") {
        return Err(HttpGetError::Status {
            addr,
            path: path.to_string(),
            status_line,
            body,
        });
    }
    Ok(body)
}

/// One request: its status line and body, whatever the status. The body ends at its
/// Content-Length when the answer gives one (some servers keep the connection open), else at
/// the close.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout_ms: u64,
    security: &Security,
    token: Option<&str>,
) -> Result<(String, String), HttpGetError> {
    let exchange = async {
        let mut stream = transport::connect(addr, timeout_ms, security, Role::Aw)
            .await
            .map_err(std::io::Error::other)?;
        let authorization = token
            .map(|token| format!("Authorization: Bearer {token}\r\n"))
            .unwrap_or_default();
        let content = body
            .map(|b| {
                format!(
                    "Content-Type: application/json\r\nContent-Length: {}\r\n",
                    b.len()
                )
            })
            .unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{authorization}{content}Connection: close\r\n\r\n{}",
            body.unwrap_or("")
        );
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            answer.extend_from_slice(&chunk[..n]);
            if answer.len() >= ANSWER_BYTES_MAX {
                answer.truncate(ANSWER_BYTES_MAX);
                break;
            }
            if let Some(head_end) = find(&answer, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&answer[..head_end]);
                let length = head.lines().find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.trim()
                        .eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                });
                if length.is_some_and(|length| answer.len() >= head_end + 4 + length) {
                    break;
                }
            }
        }
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(Duration::from_millis(timeout_ms), exchange)
        .await
        .map_err(|_| HttpGetError::Timeout { addr, timeout_ms })?
        .map_err(|source| HttpGetError::Io { addr, source })?;
    let text = String::from_utf8_lossy(&answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return Err(HttpGetError::NotHttp { addr });
    };
    let status_line = head.lines().next().unwrap_or("").to_string();
    Ok((status_line, body.to_string()))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
