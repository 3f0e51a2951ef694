//! `ztp`: which login options a user has, answered from configuration and the query's shape
//! alone: the same for an existing and a made-up account.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::json;
use xsigate_plugin_sdk::{LoginOption, LoginQuery, QueryMatch};

use super::api::{AccessReply, AccessRequest, FIELD_LIMIT, LoginApi, parse};
use crate::upstream::Provider;
use crate::wire::error::ErrorCode;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ZtpBody {
    pub(super) query: String,
}

impl LoginApi {
    /// Which login options the user has. Answered from configuration and the query's shape:
    /// the same for an existing and a made-up account.
    pub(super) async fn ztp(&self, request: &AccessRequest) -> Result<AccessReply, ErrorCode> {
        let body: ZtpBody = parse(&request.body)?;
        let query = body.query.trim();
        if query.is_empty() || query.len() > FIELD_LIMIT {
            return Err(ErrorCode::BadRequest);
        }
        let (candidates, matched) = self.candidates(query);
        let mut options: Vec<LoginOption> = Vec::new();
        for provider in &candidates {
            let query = LoginQuery {
                provider: provider.id.clone(),
                query: query.to_owned(),
                matched,
            };
            for option in self.plugins.chain(provider).login_options(&query).await {
                // Candidates offer the same lookups; the login tries them all.
                if !options.iter().any(|o| o.method == option.method) {
                    options.push(option);
                }
            }
        }
        // Reset links are requested by user id.
        let password_reset = matched == QueryMatch::UserDomain
            && candidates.iter().any(|p| self.resets.contains_key(&p.id));
        Ok(AccessReply::ok(&json!({
            "options": options,
            "password_reset": password_reset,
        })))
    }

    /// The providers a login query may belong to: the one the configuration names, or else
    /// every provider, as candidates for reverse lookups only.
    pub(super) fn candidates(&self, query: &str) -> (Vec<Arc<Provider>>, QueryMatch) {
        match self.providers.identify(query) {
            Some((provider, matched)) => (vec![Arc::clone(provider)], matched),
            None => (self.providers.all.clone(), QueryMatch::Nothing),
        }
    }
}
