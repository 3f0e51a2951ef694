//! Reading one request head from a client connection under the edge's deadlines.

use std::pin::Pin;
use std::time::Duration;

use bytes::BytesMut;
use futures_util::future::FusedFuture;
use pingora::protocols::Stream;
use pingora::server::ShutdownWatch;
use tokio::io::AsyncReadExt as _;
use tokio::time::{Instant, Sleep};

use super::framing::{self, Head, HeadLimits, Layout};
use crate::wire::error::ErrorCode;

/// What most request heads fit in; the buffer doubles up to the limit when needed.
const FIRST_READ: usize = 1024;
/// What is read and thrown away of a refused client's rest before closing.
const DRAIN_BYTES: usize = 256 * 1024;

#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub head: HeadLimits,
    pub header_time: Duration,
    pub idle: Duration,
}

pub(super) enum Ending {
    /// `buf` starts with a head that may pass (and may hold more of the request after it).
    Complete(framing::Shape),
    /// The client closed, stayed idle, or the server is shutting down: close without a word.
    Closed,
    Refused(Refusal),
}

/// Reads until `buf` holds a complete head, the client goes quiet, or a limit is reached;
/// a complete head's parts are placed in `layout`.
///
/// `timer` is the connection's one timer, kept from request to request: moving a registered
/// tokio timer later is a single atomic store, where a new timer for each request takes the
/// timer wheel's lock twice and, when the thread's driver has no earlier timer, wakes the
/// driver through its eventfd (a system call on about one request in five under load).
///
/// `stopping` ends when the server starts shutting down; it is the connection's for its life,
/// polled only while the read waits.
pub(super) async fn read(
    stream: &mut Stream,
    buf: &mut BytesMut,
    layout: &mut Layout,
    limits: Limits,
    mut timer: Pin<&mut Sleep>,
    mut stopping: Pin<&mut impl FusedFuture<Output = ()>>,
    shutdown: &ShutdownWatch,
) -> Ending {
    if *shutdown.borrow() || stopping.is_terminated() {
        // Going away: a connection between requests takes no new one.
        return Ending::Closed;
    }
    // Waiting for the first byte is idle time; once it came, the whole head has header_time.
    timer.as_mut().reset(Instant::now() + limits.idle);
    let mut timing_head = false;
    let mut scanned = 0;
    loop {
        let room = limits.head.header_bytes.saturating_sub(buf.len()).max(1);
        buf.reserve(room.min(buf.len().max(FIRST_READ)));
        let started = !buf.is_empty();
        let read = tokio::select! {
            biased;
            read = stream.read_buf(buf) => read,
            () = timer.as_mut() => {
                return if started {
                    Ending::Refused(Refusal::new(ErrorCode::RequestTimeout))
                } else {
                    Ending::Closed
                };
            }
            () = stopping.as_mut(), if !started => return Ending::Closed,
        };
        match read {
            Err(_) | Ok(0) => return Ending::Closed,
            Ok(_) => {}
        }
        // A head can only end, or turn out wrong, at a line end: parsing only then keeps a client
        // that sends one byte at a time from making each byte cost a parse of all before it.
        // A whole head's last byte is one, which spares the search in the common case.
        let line_ended = buf.last() == Some(&b'\n') || buf[scanned..].contains(&b'\n');
        scanned = buf.len();
        if line_ended || buf.len() >= limits.head.header_bytes {
            match framing::check(buf, limits.head, layout) {
                Head::Partial => {}
                Head::Complete { shape, .. } => return Ending::Complete(shape),
                Head::Refused { code, method, path } => {
                    let mut refusal = Refusal::new(code);
                    method.clone_into(&mut refusal.method);
                    path.clone_into(&mut refusal.path);
                    return Ending::Refused(refusal);
                }
            }
        }
        // Most heads come whole in the first read; only one that did not is timed as a head.
        if !timing_head {
            timing_head = true;
            timer.as_mut().reset(Instant::now() + limits.header_time);
        }
    }
}

/// Reads and drops what a refused client still sends, until it closes or `time` passes.
pub(super) async fn drain(stream: &mut Stream, time: Duration) {
    // On the heap: this future is part of every connection's, idle or not, and a refusal is rare.
    let mut sink = vec![0u8; 4096];
    let mut left = DRAIN_BYTES;
    let _ = tokio::time::timeout(time, async {
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// Why the edge answers a connection itself, and what it read of the request (for the log).
#[derive(Debug)]
pub(super) struct Refusal {
    pub code: ErrorCode,
    pub method: String,
    pub path: String,
    pub retry_after: Option<u64>,
}

impl Refusal {
    pub fn new(code: ErrorCode) -> Self {
        Self {
            code,
            method: "-".to_owned(),
            path: "-".to_owned(),
            retry_after: None,
        }
    }
}
