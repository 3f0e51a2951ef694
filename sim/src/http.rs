//! Serving HTTP/1.1 on a listener, shared by the simulated XSPs, the control API and the test
//! harness's upstreams.

use std::future::Future;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub type Body = Full<Bytes>;

/// Serves every connection accepted on `listener` with `handler` until the returned task is
/// aborted; aborting it also cuts every open connection, as a killed process would.
pub fn serve<F, Fut>(listener: TcpListener, handler: F) -> JoinHandle<()>
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, std::io::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut connections = tokio::task::JoinSet::new();
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                continue;
            };
            let handler = handler.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |request| handler(request, peer));
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(io, service)
                    .await;
            });
            while connections.try_join_next().is_some() {}
        }
    })
}

/// Binds `addr`, retrying for a while when the port is still held by a connection that is
/// closing (a restarted XSP comes back on its old port).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let mut attempts = 0;
    loop {
        match TcpListener::bind(addr).await {
            Ok(listener) => return Ok(listener),
            Err(e) if attempts < 100 && e.kind() == std::io::ErrorKind::AddrInUse => {
                attempts += 1;
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e),
        }
    }
}
