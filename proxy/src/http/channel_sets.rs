//! A session's XSI-Events channel joins only its own user's channel sets. BroadWorks binds a
//! set to the user who made it and refuses another user's channel in it; xsigate refuses it
//! first, so that a session never depends on the XSP for what the gateway can see itself.

use super::client::Client;
use pingora::Result;

use super::ProxyApp;
use super::context::RequestCtx;
use crate::access::BODY_LIMIT;
use crate::wire::error::ErrorCode;
use crate::wire::route::RouteClass;

impl ProxyApp {
    /// For a session's channel open (`POST …/com.broadsoft.async/…/channel`): reads its small
    /// body (Pingora then sends it from its retry buffer), and refuses a set that belongs to
    /// another user, or a body that names its set in a way two readers could take differently.
    pub(super) async fn own_channel_set(
        &self,
        session: &mut impl Client,
        ctx: &RequestCtx,
    ) -> Result<Result<(), ErrorCode>> {
        let Some(bound) = &ctx.session else {
            return Ok(Ok(()));
        };
        if ctx.route != RouteClass::XsiAsync || session.req_header().method != http::Method::POST {
            return Ok(Ok(()));
        }
        session.enable_retry_buffering();
        let mut body = Vec::new();
        while let Some(chunk) = session.read_request_body().await? {
            if body.len() + chunk.len() > BODY_LIMIT {
                session.set_keepalive(None);
                return Ok(Err(ErrorCode::PayloadTooLarge));
            }
            body.extend_from_slice(&chunk);
        }
        let Some(set_id) = channel_set_of(&body) else {
            return Ok(Err(ErrorCode::BadRequest));
        };
        let user = &bound.session;
        Ok(
            match self
                .sessions
                .claim_channel_set(&user.provider, &set_id, &user.user_id)
                .await
            {
                Ok(true) => Ok(()),
                Ok(false) => Err(ErrorCode::ChannelSetNotOwned),
                Err(()) => Err(ErrorCode::Internal),
            },
        )
    }
}

/// The channel set a `Channel` document names: exactly one non-empty `channelSetId` under a
/// `Channel` root, or nothing (a second one, which an XSP might read instead, is no answer).
fn channel_set_of(body: &[u8]) -> Option<String> {
    let root = xsigate_broadworks::tree(body).ok()?;
    let mut sets = root.all("channelSetId");
    match (root.name == "Channel", sets.next(), sets.next()) {
        (true, Some(set), None) if !set.nil && !set.text.is_empty() => Some(set.text.clone()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::channel_set_of;

    #[test]
    fn a_channel_names_one_set_or_none() {
        let channel = |inner: &str| {
            format!(
                "<?xml version=\"1.0\"?><Channel xmlns=\"http://schema.broadsoft.com/xsi\">{inner}\
                 <priority>1</priority><weight>100</weight><expires>3600</expires></Channel>"
            )
        };
        let one = channel("<channelSetId>set-a</channelSetId>");
        assert_eq!(channel_set_of(one.as_bytes()).as_deref(), Some("set-a"));
        let prefixed = "<xsi:Channel xmlns:xsi=\"http://schema.broadsoft.com/xsi\">\
                        <xsi:channelSetId> set-b </xsi:channelSetId></xsi:Channel>";
        assert_eq!(
            channel_set_of(prefixed.as_bytes()).as_deref(),
            Some("set-b")
        );
        for refused in [
            channel("<channelSetId>mine</channelSetId><channelSetId>theirs</channelSetId>"),
            channel(""),
            channel("<channelSetId></channelSetId>"),
            "<Subscription><channelSetId>x</channelSetId></Subscription>".to_owned(),
            "not xml".to_owned(),
        ] {
            assert_eq!(channel_set_of(refused.as_bytes()), None, "{refused}");
        }
    }
}
