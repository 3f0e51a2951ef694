//! The response streams a plugin holds open (XSI-Events channels), each read ahead of the
//! plugin by a task of its own.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

use crate::upstream::{ChannelStream, StreamError};

/// Streams one plugin may hold open: far above one XSI-Events channel per user of a large
/// provider, low enough that a leaking plugin cannot exhaust the host's sockets unnoticed.
pub(super) const STREAMS_MAX: usize = 200_000;
/// Chunks read ahead of a plugin's reads, per stream.
const STREAM_AHEAD: usize = 1024;

/// The response streams a plugin holds open, by handle. A handle is good only for the plugin
/// that opened it: each plugin's context has its own.
#[derive(Default)]
pub(super) struct Streams {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<OpenStream>>>,
}

/// One open stream. A task reads the body ahead of the plugin, so the connection is drained
/// while the plugin handles what it read, and one read returns everything that arrived
/// meanwhile rather than a chunk per round trip. The queue is bounded: a plugin that stops
/// reading stops the task, and TCP pushes back on the server.
pub(super) struct OpenStream {
    pub(super) chunks: tokio::sync::Mutex<mpsc::Receiver<Result<bytes::Bytes, StreamError>>>,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Streams {
    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<OpenStream>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn add(
        &self,
        runtime: &tokio::runtime::Handle,
        mut body: ChannelStream,
    ) -> Option<u64> {
        let mut open = self.open();
        if open.len() >= STREAMS_MAX {
            return None;
        }
        let (sender, chunks) = mpsc::channel(STREAM_AHEAD);
        let reader = runtime.spawn(async move {
            loop {
                // The end is the channel closing; an error is passed on, and ends it too.
                let item = match body.next_chunk().await {
                    Ok(Some(bytes)) => Ok(bytes),
                    Ok(None) => return,
                    Err(e) => Err(e),
                };
                let failed = item.is_err();
                if sender.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        open.insert(
            id,
            Arc::new(OpenStream {
                chunks: tokio::sync::Mutex::new(chunks),
                reader,
            }),
        );
        Some(id)
    }

    pub(super) fn get(&self, id: u64) -> Option<Arc<OpenStream>> {
        self.open().get(&id).cloned()
    }

    /// Drops the stream (closing its connection); false if there was none.
    pub(super) fn remove(&self, id: u64) -> bool {
        self.open().remove(&id).is_some()
    }

    pub fn len(&self) -> usize {
        self.open().len()
    }
}
