//! `fail_to_proxy`: a request that failed is answered with the error envelope, naming no
//! upstream. Which code a failure gets is [`error_code`], a decision of its own.

use pingora::proxy::FailToProxy;

use super::client::Client;
use pingora::{Error, ErrorSource, ErrorType};

use super::ProxyApp;
use super::context::RequestCtx;
use super::respond;
use crate::wire::error::ErrorCode;

/// The answer to a request that failed with an error of this source and type; `None` when the
/// client is gone and nothing can be answered.
pub fn error_code(source: &ErrorSource, kind: &ErrorType) -> Option<ErrorCode> {
    match (source, kind) {
        (_, ErrorType::HTTPStatus(status)) if *status >= 500 => Some(ErrorCode::Internal),
        (_, ErrorType::HTTPStatus(413)) => Some(ErrorCode::PayloadTooLarge),
        (_, ErrorType::HTTPStatus(_)) => Some(ErrorCode::BadRequest),
        (
            ErrorSource::Upstream,
            ErrorType::ConnectTimedout | ErrorType::ReadTimedout | ErrorType::WriteTimedout,
        ) => Some(ErrorCode::UpstreamTimeout),
        (ErrorSource::Upstream, _) => Some(ErrorCode::UpstreamUnavailable),
        (
            ErrorSource::Downstream,
            ErrorType::ReadError | ErrorType::WriteError | ErrorType::ConnectionClosed,
        ) => None,
        (ErrorSource::Downstream, _) => Some(ErrorCode::BadRequest),
        // Raised by `upstream_peer` itself: every XSP tried, or no address yet.
        (ErrorSource::Internal | ErrorSource::Unset, ErrorType::ConnectNoRoute) => {
            Some(ErrorCode::UpstreamUnavailable)
        }
        (ErrorSource::Internal | ErrorSource::Unset, _) => Some(ErrorCode::Internal),
    }
}

impl ProxyApp {
    pub(super) async fn answer_failure(
        &self,
        session: &mut impl Client,
        e: &Error,
        ctx: &mut RequestCtx,
    ) -> FailToProxy {
        let code = ctx
            .plugin_failure
            .or_else(|| error_code(e.esource(), e.etype()));
        let mut status = 0;
        if let Some(code) = code {
            ctx.refused = Some(code);
            // Once a response has started downstream, a second one cannot be written.
            if session.response_written().is_none() {
                // The connection is closed after a failure; `Connection: close` tells the client
                // not to send its next request on it.
                session.set_keepalive(None);
                status = code.status();
                let cors = ctx.cors_headers();
                if respond::error(session, code, &ctx.request_id, &cors)
                    .await
                    .is_err()
                {
                    status = 0;
                }
            }
        }
        FailToProxy {
            error_code: status,
            can_reuse_downstream: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_failures_name_no_upstream_and_tell_timeouts_apart() {
        let upstream = |kind| error_code(&ErrorSource::Upstream, &kind);
        for timeout in [
            ErrorType::ConnectTimedout,
            ErrorType::ReadTimedout,
            ErrorType::WriteTimedout,
        ] {
            assert_eq!(upstream(timeout), Some(ErrorCode::UpstreamTimeout));
        }
        for broken in [
            ErrorType::ConnectRefused,
            ErrorType::ConnectionClosed,
            ErrorType::InvalidHTTPHeader,
        ] {
            assert_eq!(upstream(broken), Some(ErrorCode::UpstreamUnavailable));
        }
    }

    #[test]
    fn a_client_that_left_gets_nothing_and_a_bad_one_a_400() {
        let downstream = |kind| error_code(&ErrorSource::Downstream, &kind);
        for gone in [
            ErrorType::ReadError,
            ErrorType::WriteError,
            ErrorType::ConnectionClosed,
        ] {
            assert_eq!(downstream(gone), None);
        }
        assert_eq!(
            downstream(ErrorType::ReadTimedout),
            Some(ErrorCode::BadRequest)
        );
        assert_eq!(
            downstream(ErrorType::InvalidHTTPHeader),
            Some(ErrorCode::BadRequest)
        );
        assert_eq!(
            error_code(&ErrorSource::Downstream, &ErrorType::HTTPStatus(400)),
            Some(ErrorCode::BadRequest)
        );
        assert_eq!(
            error_code(&ErrorSource::Downstream, &ErrorType::HTTPStatus(413)),
            Some(ErrorCode::PayloadTooLarge)
        );
    }

    #[test]
    fn the_gateways_own_failures_are_500_unless_no_xsp_was_left() {
        assert_eq!(
            error_code(&ErrorSource::Internal, &ErrorType::ConnectNoRoute),
            Some(ErrorCode::UpstreamUnavailable)
        );
        assert_eq!(
            error_code(&ErrorSource::Unset, &ErrorType::InternalError),
            Some(ErrorCode::Internal)
        );
    }
}
