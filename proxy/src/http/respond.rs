//! Writing the answers xsigate gives itself: JSON (errors in the one envelope of
//! [`crate::wire::error`]), a plugin's answer, and empty preflight answers.

use super::client::Client;
use bytes::Bytes;
use pingora::http::ResponseHeader;

use crate::plugin::Answer;
use crate::wire::error::{ErrorCode, error_body};
use crate::wire::headers::REQUEST_ID;

/// Writes a complete JSON response.
pub async fn json(
    session: &mut impl Client,
    status: u16,
    body: Bytes,
    request_id: &str,
    extra: &[(&'static str, &str)],
) -> pingora::Result<()> {
    let mut header = ResponseHeader::build(status, Some(4 + extra.len()))?;
    header.insert_header(http::header::CONTENT_TYPE, "application/json")?;
    header.insert_header(http::header::CONTENT_LENGTH, body.len())?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    header.insert_header(REQUEST_ID, request_id)?;
    for (name, value) in extra {
        // A login sets two cookies; any other header given replaces the default.
        if name.eq_ignore_ascii_case(http::header::SET_COOKIE.as_str()) {
            header.append_header(*name, *value)?;
        } else {
            header.insert_header(*name, *value)?;
        }
    }
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(body, true).await
}

/// Writes the response a request-filter plugin answered with. xsigate frames it
/// (`Content-Length`) and adds the request id; the plugin's other headers pass as given.
pub async fn plugin_answer(
    session: &mut impl Client,
    answer: &Answer,
    request_id: &str,
    extra: &[(&'static str, &str)],
) -> pingora::Result<()> {
    let mut header = ResponseHeader::build(answer.status, Some(answer.headers.len() + 2))?;
    for (name, value) in &answer.headers {
        header.append_header(name.clone(), value.clone())?;
    }
    for (name, value) in extra {
        header.insert_header(*name, *value)?;
    }
    header.insert_header(http::header::CONTENT_LENGTH, answer.body.len())?;
    header.insert_header(REQUEST_ID, request_id)?;
    session
        .write_response_header(Box::new(header), false)
        .await?;
    session.write_response_body(answer.body.clone(), true).await
}

/// Writes a JSON error response, with `extra` headers (CORS).
pub async fn error(
    session: &mut impl Client,
    code: ErrorCode,
    request_id: &str,
    extra: &[(&'static str, &str)],
) -> pingora::Result<()> {
    let mut headers = extra.to_vec();
    // XSI clients expect the XSP's Basic challenge; give it so they can prompt or retry.
    if code == ErrorCode::MissingCredentials {
        headers.push((
            "www-authenticate",
            "Basic realm=\"XtendedServicesInterface\"",
        ));
    }
    json(
        session,
        code.status(),
        error_body(code, request_id),
        request_id,
        &headers,
    )
    .await
}

/// Writes a response without a body (a CORS preflight's answer).
pub async fn empty(
    session: &mut impl Client,
    status: u16,
    request_id: &str,
    extra: &[(&'static str, &str)],
) -> pingora::Result<()> {
    let mut header = ResponseHeader::build(status, Some(2 + extra.len()))?;
    header.insert_header(http::header::CONTENT_LENGTH, 0)?;
    header.insert_header(REQUEST_ID, request_id)?;
    for (name, value) in extra {
        header.insert_header(*name, *value)?;
    }
    session.write_response_header(Box::new(header), true).await
}
