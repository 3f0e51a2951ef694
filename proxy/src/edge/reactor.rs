//! A plain TCP connection moved to the reactor of the runtime that serves it.
//!
//! Pingora accepts every connection on the runtime that runs a listener's accept loop, which
//! registers the socket with that runtime's reactor, while the connection's task runs on the
//! runtime serving the fewest connections ([`super::placement`]), most often another one. With n
//! worker threads, about all but one in n connections would thus be served by one thread and
//! woken by another: each time a socket becomes ready, the accepting thread wakes up, finds a
//! task of another runtime and writes to that runtime's eventfd, which wakes the serving thread.
//! Measured on loopback with two threads: 0.8 such cross-thread wake-ups a request.
//!
//! A duplicate of the socket's descriptor is registered with the serving runtime, and the
//! original, dropped, leaves the accepting reactor: the thread that waits for the socket is the
//! one that serves it. TLS connections keep their registration: their session owns the socket,
//! and Pingora gives no way to reach it.
//!
//! The adopted connection is tokio's socket behind a write buffer, without the layers of
//! Pingora's TCP stream: a rewind buffer, a zero-sized read and write buffer, a wrapper for
//! receive timestamps (off), and the accounting of how long reads and writes waited, which read
//! the clock twice for each read that waits (about one a request on each side) and which
//! nothing in xsigate reads. What a stream tells about itself (its addresses, when it was
//! established) is kept from the accepted one.
#![allow(
    unsafe_code,
    reason = "borrows the descriptor of a socket the stream owns, for the length of a dup"
)]

use std::os::fd::{AsRawFd as _, BorrowedFd};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::SystemTime;

use async_trait::async_trait;
use pingora::listeners::DEFAULT_L4_WRITE_BUFFER_SIZE;
use pingora::protocols::l4::stream::Stream as TcpConnection;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType,
};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter, ReadBuf};

/// `stream` registered with the current runtime's reactor when it is a plain TCP connection;
/// otherwise, or when its descriptor cannot be duplicated, `stream` as it came.
pub fn adopt(stream: Stream) -> Stream {
    let Some(fd) = stream
        .as_any()
        .downcast_ref::<TcpConnection>()
        .map(|tcp| tcp.as_raw_fd())
    else {
        return stream;
    };
    // SAFETY: `fd` is the socket `stream` owns, open until `stream` is dropped below.
    let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
    let Ok(owned) = borrowed.try_clone_to_owned() else {
        return stream;
    };
    let Ok(socket) = tokio::net::TcpStream::from_std(std::net::TcpStream::from(owned)) else {
        return stream;
    };
    let peer = stream
        .get_socket_digest()
        .and_then(|digest| digest.peer_addr().cloned());
    let socket_digest = SocketDigest::from_raw_fd(socket.as_raw_fd());
    // Just created: the cell is empty.
    let _ = socket_digest.peer_addr.set(peer);
    let established = stream
        .get_timing_digest()
        .first()
        .and_then(|layer| layer.as_ref())
        .map_or_else(SystemTime::now, |layer| layer.established_ts);
    drop(stream);
    Box::new(Adopted {
        // The write buffer the listener gives plain connections (`server.rs`): a small answer's
        // head and body leave in one send, not two.
        socket: BufWriter::with_capacity(DEFAULT_L4_WRITE_BUFFER_SIZE, socket),
        socket_digest: Arc::new(socket_digest),
        established,
    })
}

/// An adopted connection: tokio's socket with the write buffer its listener gave the original.
#[derive(Debug)]
struct Adopted {
    socket: BufWriter<tokio::net::TcpStream>,
    socket_digest: Arc<SocketDigest>,
    established: SystemTime,
}

impl AsyncRead for Adopted {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.socket).poll_read(cx, buf)
    }
}

impl AsyncWrite for Adopted {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.socket).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.socket.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.socket).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.socket).poll_shutdown(cx)
    }
}

#[async_trait]
impl Shutdown for Adopted {
    async fn shutdown(&mut self) {
        // As Pingora's stream: a peer already gone has nothing left to be told.
        let _ = AsyncWriteExt::shutdown(&mut self.socket).await;
    }
}

impl UniqueID for Adopted {
    fn id(&self) -> UniqueIDType {
        self.socket.get_ref().as_raw_fd()
    }
}

impl Ssl for Adopted {}

impl GetTimingDigest for Adopted {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        vec![Some(TimingDigest {
            established_ts: self.established,
            establishment_duration: None,
            offload_wait_duration: None,
        })]
    }
}

impl GetProxyDigest for Adopted {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        None
    }
}

impl GetSocketDigest for Adopted {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        Some(Arc::clone(&self.socket_digest))
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.socket_digest = Arc::new(digest);
    }
}

#[async_trait]
impl Peek for Adopted {}

#[cfg(test)]
mod tests {
    use std::io::{Read as _, Write as _};

    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    /// The runtime that accepted a connection may end (or sleep) while another serves it: the
    /// served connection must not depend on the accepting reactor.
    #[test]
    fn an_adopted_connection_is_served_by_the_runtime_that_adopted_it() {
        let accepting = runtime();
        let listener = accepting
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (socket, peer) = accepting.block_on(listener.accept()).unwrap();
        let mut accepted = TcpConnection::from(socket);
        let digest = SocketDigest::from_raw_fd(accepted.as_raw_fd());
        let _ = digest.peer_addr.set(Some(peer.into()));
        accepted.set_socket_digest(digest);
        let established = accepted.established_ts;
        let accepted: Stream = Box::new(accepted);
        drop(listener);
        drop(accepting);

        client.write_all(b"ping").unwrap();
        let served = runtime().block_on(async move {
            let mut stream = adopt(accepted);
            let mut request = [0u8; 4];
            stream.read_exact(&mut request).await?;
            stream.write_all(b"pong").await?;
            stream.flush().await?;
            let peer = stream
                .get_socket_digest()
                .and_then(|d| d.peer_addr().cloned());
            let timing = stream.get_timing_digest();
            let seen_established = timing.first().cloned().flatten().map(|t| t.established_ts);
            std::io::Result::Ok((request, peer, seen_established))
        });
        let (request, seen_peer, seen_established) =
            served.expect("served on the adopting runtime");
        assert_eq!(&request, b"ping");
        // What the stream tells of itself is the accepted connection's.
        assert_eq!(seen_peer, Some(client.local_addr().unwrap().into()));
        assert_eq!(seen_established, Some(established));
        let mut answer = [0u8; 4];
        client.read_exact(&mut answer).unwrap();
        assert_eq!(&answer, b"pong");
    }
}
