//! The client side of one request, as the hooks see it: the head they read and rewrite, the
//! body they may read, and the answer they write. Pingora's proxy `Session` is one; the
//! [`lean`](super::lean) lane's own session is the other, so that the hooks are one
//! implementation whichever way a request goes.
//!
//! Layer: part of [`crate::http`].

use std::net::IpAddr;
use std::time::Duration;

use bytes::Bytes;
use pingora::Result;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::proxy::Session;

/// What the hooks need of a request's client side. Its futures are `Send`, so that a hook's
/// own future is, whichever session it runs on.
pub trait Client: Send + Sync {
    fn req_header(&self) -> &RequestHeader;

    fn req_header_mut(&mut self) -> &mut RequestHeader;

    /// The client's address, when the connection is over IP.
    fn client_ip(&self) -> Option<IpAddr>;

    /// Whether the client connection is TLS.
    fn is_tls(&self) -> bool;

    fn is_http2(&self) -> bool;

    /// How long each read of the request's body may wait.
    fn set_read_timeout(&mut self, timeout: Duration);

    /// `None`: the connection closes after this request's answer, which then says so.
    fn set_keepalive(&mut self, seconds: Option<u64>);

    /// Whether the process is draining for a shutdown or an upgrade.
    fn is_process_shutting_down(&self) -> bool;

    /// The request body's next chunk; `None` at its end.
    fn read_request_body(&mut self) -> impl Future<Output = Result<Option<Bytes>>> + Send;

    /// Keeps the body read so far, so that the request can go to another upstream.
    fn enable_retry_buffering(&mut self);

    /// Whether the body was too long to keep whole for another attempt.
    fn retry_buffer_truncated(&self) -> bool;

    /// Writes the answer's head; `end`: it has no body.
    fn write_response_header(
        &mut self,
        header: Box<ResponseHeader>,
        end: bool,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Writes a part of the answer's body; `end`: the last.
    fn write_response_body(
        &mut self,
        body: Bytes,
        end: bool,
    ) -> impl Future<Output = Result<()>> + Send;

    /// The head written to the client, once it is.
    fn response_written(&self) -> Option<&ResponseHeader>;
}

impl Client for Session {
    fn req_header(&self) -> &RequestHeader {
        self.downstream_session.req_header()
    }

    fn req_header_mut(&mut self) -> &mut RequestHeader {
        self.downstream_session.req_header_mut()
    }

    fn client_ip(&self) -> Option<IpAddr> {
        self.downstream_session
            .client_addr()
            .and_then(|a| a.as_inet())
            .map(|a| a.ip())
    }

    fn is_tls(&self) -> bool {
        self.downstream_session
            .digest()
            .is_some_and(|d| d.ssl_digest.is_some())
    }

    fn is_http2(&self) -> bool {
        self.downstream_session.is_http2()
    }

    fn set_read_timeout(&mut self, timeout: Duration) {
        self.downstream_session.set_read_timeout(Some(timeout));
    }

    fn set_keepalive(&mut self, seconds: Option<u64>) {
        self.downstream_session.set_keepalive(seconds);
    }

    fn is_process_shutting_down(&self) -> bool {
        Session::is_process_shutting_down(self)
    }

    fn read_request_body(&mut self) -> impl Future<Output = Result<Option<Bytes>>> + Send {
        self.downstream_session.read_request_body()
    }

    fn enable_retry_buffering(&mut self) {
        self.downstream_session.enable_retry_buffering();
    }

    fn retry_buffer_truncated(&self) -> bool {
        self.downstream_session.retry_buffer_truncated()
    }

    fn write_response_header(
        &mut self,
        header: Box<ResponseHeader>,
        end: bool,
    ) -> impl Future<Output = Result<()>> + Send {
        Session::write_response_header(self, header, end)
    }

    fn write_response_body(
        &mut self,
        body: Bytes,
        end: bool,
    ) -> impl Future<Output = Result<()>> + Send {
        Session::write_response_body(self, Some(body), end)
    }

    fn response_written(&self) -> Option<&ResponseHeader> {
        self.downstream_session.response_written()
    }
}
