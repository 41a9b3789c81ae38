//! The system page's view of the whole controller: each side's synchronizer (state, epoch, last
//! state transfer and its direction, state size now and max, events) and every distributor's
//! feed lag. It is gathered when a client asks and at most once per `SYSTEM_POLL_MS`, so a
//! distributor nobody watches asks nothing of the sides.

use crate::http;
use crate::run::{wall_ms, DistributorStatus, Shared};
use serde::Serialize;
use std::net::SocketAddr;
use tandem_mds::admin;
use tandem_mds::tls::Security;
use tandem_mds::{AdminReply, AdminRequest, SideReport};
use tokio::task::JoinSet;

/// The oldest view served; an older one is gathered again.
pub const SYSTEM_POLL_MS: u64 = 1_000;
/// How long a side or a distributor has to answer; one that does not is shown as unreachable.
pub const SYSTEM_ASK_TIMEOUT_MS: u64 = 800;

#[derive(Clone, Debug, Serialize)]
pub struct SideView {
    pub name: String,
    pub address: String,
    pub report: Option<SideReport>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DistributorView {
    pub name: String,
    pub address: String,
    pub status: Option<DistributorStatus>,
    pub error: Option<String>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct SystemView {
    pub gathered_at_ms: u64,
    /// Side A first.
    pub sides: Vec<SideView>,
    /// The other distributors of the topology, in its order.
    pub distributors: Vec<DistributorView>,
}

async fn side_view(name: String, addr: SocketAddr, security: Security) -> SideView {
    let asked = admin::ask(
        addr,
        &AdminRequest::Report,
        SYSTEM_ASK_TIMEOUT_MS,
        &security,
    )
    .await;
    let (report, error) = match asked {
        Ok(AdminReply::Report(report)) => (Some(*report), None),
        Ok(other) => (None, Some(format!("unexpected answer: {other:?}"))),
        Err(e) => (None, Some(e.to_string())),
    };
    SideView {
        name,
        address: addr.to_string(),
        report,
        error,
    }
}

async fn distributor_view(name: String, addr: SocketAddr, security: Security) -> DistributorView {
    // This distributor's certificate is its proof to the others.
    let status = match http::get(addr, "/api/status", SYSTEM_ASK_TIMEOUT_MS, &security, None).await
    {
        Ok(body) => serde_json::from_str::<serde_json::Value>(&body)
            .and_then(|v| serde_json::from_value::<DistributorStatus>(v["status"].clone()))
            .map_err(|e| format!("its status: {e}")),
        Err(e) => Err(e.to_string()),
    };
    let (status, error) = match status {
        Ok(status) => (Some(status), None),
        Err(e) => (None, Some(e)),
    };
    DistributorView {
        name,
        address: addr.to_string(),
        status,
        error,
    }
}

/// Asks both sides and every other distributor at once.
async fn gather(shared: &Shared) -> SystemView {
    let mut sides: Vec<(String, SocketAddr)> = shared.settings.sides.to_vec();
    sides.sort();
    let mut side_tasks = JoinSet::new();
    for (i, (name, addr)) in sides.into_iter().enumerate() {
        let security = shared.settings.security.clone();
        side_tasks.spawn(async move { (i, side_view(name, addr, security).await) });
    }
    let mut distributor_tasks = JoinSet::new();
    for (i, (name, addr)) in shared.settings.distributors.iter().cloned().enumerate() {
        let security = shared.settings.security.clone();
        distributor_tasks.spawn(async move { (i, distributor_view(name, addr, security).await) });
    }
    let mut sides: Vec<(usize, SideView)> = side_tasks.join_all().await;
    sides.sort_by_key(|(i, _)| *i);
    let mut distributors: Vec<(usize, DistributorView)> = distributor_tasks.join_all().await;
    distributors.sort_by_key(|(i, _)| *i);
    SystemView {
        gathered_at_ms: wall_ms(),
        sides: sides.into_iter().map(|(_, v)| v).collect(),
        distributors: distributors.into_iter().map(|(_, v)| v).collect(),
    }
}

/// The view at most `SYSTEM_POLL_MS` old; one gathering at a time, the other askers wait for it.
pub async fn view(shared: &Shared) -> SystemView {
    let mut held = shared.system.lock().await;
    if wall_ms().saturating_sub(held.gathered_at_ms) >= SYSTEM_POLL_MS {
        *held = gather(shared).await;
    }
    held.clone()
}
