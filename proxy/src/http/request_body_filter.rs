//! `request_body_filter`: a chunked request body may not grow past `body_bytes`. A declared
//! `Content-Length` over the limit never gets here (the edge refuses the head); a chunked body
//! is only known as it arrives, so it is counted here and cut off with `413`.

use bytes::Bytes;
use pingora::{Error, ErrorType, Result};

use super::ProxyApp;
use super::context::RequestCtx;

impl ProxyApp {
    pub(super) fn count_request_body(
        &self,
        body: Option<&Bytes>,
        ctx: &mut RequestCtx,
    ) -> Result<()> {
        let Some(chunk) = body else {
            return Ok(());
        };
        ctx.body_bytes += chunk.len() as u64;
        if ctx.body_bytes > self.settings.body_bytes {
            return Error::e_explain(ErrorType::HTTPStatus(413), "request body over body_bytes");
        }
        Ok(())
    }
}
