//! The metrics listener's answers: `/metrics`, `/healthz` and `/readyz`, on an address of its
//! own (loopback by default) so that scrapes and probes never queue behind proxied traffic.

use std::sync::Arc;

use async_trait::async_trait;
use http::Response;
use pingora::apps::http_app::ServeHttp;
use pingora::protocols::http::ServerSession;

use crate::metrics::Metrics;
use crate::upstream::Providers;
use crate::wire::error::{self, ErrorCode};

/// The metrics listener: `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug)]
pub struct LocalEndpoints {
    pub metrics: Metrics,
    pub providers: Arc<Providers>,
}

#[async_trait]
impl ServeHttp for LocalEndpoints {
    async fn response(&self, session: &mut ServerSession) -> Response<Vec<u8>> {
        let json = "application/json";
        let (status, content_type, body) = match session.req_header().uri.path() {
            "/metrics" => (
                200,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            "/healthz" => (200, json, error::LIVE.to_vec()),
            "/readyz" => {
                let (status, body) = error::readiness(self.providers.ready());
                (status, json, body.to_vec())
            }
            _ => (
                404,
                json,
                error::error_body(ErrorCode::NotFound, "").to_vec(),
            ),
        };
        let length = body.len();
        let mut response = Response::new(body);
        *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or(http::StatusCode::OK);
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static(content_type),
        );
        headers.insert(
            http::header::CONTENT_LENGTH,
            http::HeaderValue::from(length),
        );
        response
    }
}
