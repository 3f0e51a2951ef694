//! The response streams a plugin holds open (XSI-Events channels), read when the plugin reads.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::FutureExt as _;

use crate::upstream::{ChannelStream, StreamError};

/// Streams one plugin may hold open: far above one XSI-Events channel per user of a large
/// provider, low enough that a leaking plugin cannot exhaust the host's sockets unnoticed.
pub(super) const STREAMS_MAX: usize = 200_000;

/// The response streams a plugin holds open, by handle. A handle is good only for the plugin
/// that opened it: each plugin's context has its own.
#[derive(Default)]
pub(super) struct Streams {
    next: AtomicU64,
    open: Mutex<HashMap<u64, Arc<OpenStream>>>,
}

/// One open stream, read only when its plugin reads it. No task reads ahead: a channel set
/// waits far longer than it reads, and a reader task with its queue cost each set about 4 KiB
/// (heaptrack, bench/events.sh). While the plugin handles what it read, what arrives waits in
/// the socket's buffer, which is the read-ahead, and TCP pushes back on a server whose plugin
/// stops reading.
pub(super) struct OpenStream {
    reading: tokio::sync::Mutex<Reading>,
}

struct Reading {
    body: ChannelStream,
    /// An error met after data that a read returned first: the next read reports it.
    failed: Option<StreamError>,
}

/// What one read of a stream found.
pub(super) enum StreamRead {
    /// Everything that had arrived, at least one byte, up to about the read's limit.
    Data(Vec<u8>),
    /// Nothing arrived within the wait; the stream stays open.
    Quiet,
    /// The stream ended.
    End,
    Failed(StreamError),
}

impl OpenStream {
    /// Waits up to `wait` for the body's next bytes, then takes whatever else has arrived
    /// meanwhile without waiting, up to about `max` bytes, so a busy stream is drained in few
    /// reads rather than a chunk per round trip. Dropping the read loses nothing: the stream's
    /// reads are cancel-safe and what a read decoded is returned before it ends.
    pub(super) async fn read(&self, wait: Duration, max: usize) -> StreamRead {
        let mut reading = self.reading.lock().await;
        if let Some(e) = reading.failed.take() {
            return StreamRead::Failed(e);
        }
        let mut bytes = match tokio::time::timeout(wait, reading.body.next_chunk()).await {
            Err(_) => return StreamRead::Quiet,
            Ok(Ok(Some(chunk))) => Vec::from(chunk),
            Ok(Ok(None)) => return StreamRead::End,
            Ok(Err(e)) => return StreamRead::Failed(e),
        };
        // An end is seen again by the next read; an error is kept for it.
        while bytes.len() < max {
            let next = tokio::task::unconstrained(reading.body.next_chunk()).now_or_never();
            match next {
                Some(Ok(Some(chunk))) => bytes.extend_from_slice(&chunk),
                Some(Err(e)) => {
                    reading.failed = Some(e);
                    break;
                }
                Some(Ok(None)) | None => break,
            }
        }
        StreamRead::Data(bytes)
    }
}

impl Streams {
    fn open(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<OpenStream>>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn add(&self, body: ChannelStream) -> Option<u64> {
        let mut open = self.open();
        if open.len() >= STREAMS_MAX {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let reading = Reading { body, failed: None };
        open.insert(
            id,
            Arc::new(OpenStream {
                reading: tokio::sync::Mutex::new(reading),
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncWriteExt as _;
    use tokio::net::{TcpListener, TcpStream};

    use super::{StreamRead, Streams};
    use crate::upstream::{ChannelStream, StreamError};

    /// A stream whose XSP answers `body` after a chunked head, then keeps the connection open.
    async fn stream_answering(body: &'static [u8]) -> (Streams, u64, tokio::task::JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let xsp = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut answer = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
            answer.extend_from_slice(body);
            socket.write_all(&answer).await.unwrap();
            tokio::time::sleep(Duration::from_secs(30)).await;
        });
        let socket = TcpStream::connect(address).await.unwrap();
        let io: pingora::protocols::Stream =
            Box::new(pingora::protocols::l4::stream::Stream::from(socket));
        let (head, body) = ChannelStream::read_head(io).await.unwrap();
        assert_eq!(head.status, 200);
        let streams = Streams::default();
        let id = streams.add(body).unwrap();
        (streams, id, xsp)
    }

    #[tokio::test]
    async fn a_read_takes_every_chunk_that_arrived_and_the_next_sees_the_end() {
        let (streams, id, xsp) = stream_answering(b"6\r\n<Event\r\n2\r\n/>\r\n0\r\n\r\n").await;
        let open = streams.get(id).unwrap();
        let first = open.read(Duration::from_secs(10), 1 << 20).await;
        assert!(matches!(first, StreamRead::Data(ref bytes) if bytes == b"<Event/>"));
        let next = open.read(Duration::from_secs(10), 1 << 20).await;
        assert!(matches!(next, StreamRead::End));
        xsp.abort();
    }

    #[tokio::test]
    async fn a_broken_chunk_after_data_is_reported_by_the_next_read_not_lost() {
        let (streams, id, xsp) = stream_answering(b"6\r\n<Event\r\nzz\r\n").await;
        let open = streams.get(id).unwrap();
        let first = open.read(Duration::from_secs(10), 1 << 20).await;
        assert!(matches!(first, StreamRead::Data(ref bytes) if bytes == b"<Event"));
        // The XSP keeps the connection open: a lost error would be a quiet wait here.
        let next = open.read(Duration::from_millis(500), 1 << 20).await;
        assert!(
            matches!(next, StreamRead::Failed(StreamError::Broken(_))),
            "the broken chunk size was not reported"
        );
        xsp.abort();
    }

    #[tokio::test]
    async fn a_quiet_stream_answers_quiet_and_stays_open() {
        let (streams, id, xsp) = stream_answering(b"").await;
        let open = streams.get(id).unwrap();
        let read = open.read(Duration::from_millis(50), 1 << 20).await;
        assert!(matches!(read, StreamRead::Quiet));
        assert_eq!(streams.len(), 1);
        xsp.abort();
    }
}
