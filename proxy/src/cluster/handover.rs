//! The graceful stop's side of the leases: when Pingora broadcasts its shutdown (after the grace
//! period of a stop or an upgrade, while the process still runs), every lease is handed over at
//! once, so another instance (or the upgraded process) resumes the work within its next claim
//! instead of after the lease's time to live.

use std::sync::Arc;

use async_trait::async_trait;
use pingora::server::ShutdownWatch;
use pingora::services::background::BackgroundService;

use super::leases::Leases;

#[derive(Debug)]
pub struct HandoverService {
    pub leases: Arc<Leases>,
    /// Where the leases' store work runs.
    pub runtime: tokio::runtime::Handle,
}

#[async_trait]
impl BackgroundService for HandoverService {
    async fn start(&self, mut shutdown: ShutdownWatch) {
        // Both a broadcast and a dropped sender mean the process is stopping.
        let _ = shutdown.changed().await;
        let leases = Arc::clone(&self.leases);
        if let Err(error) = self.runtime.spawn(async move { leases.stop().await }).await {
            tracing::warn!(%error, "handing the leases over did not finish");
        }
    }
}
