//! `ztp`: which login options a user has, answered from configuration and the query's shape
//! alone: the same for an existing and a made-up account.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};
use xsigate_plugin_sdk::{LoginQuery, QueryMatch};

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
        let mut options: Vec<Value> = Vec::new();
        let mut methods: Vec<String> = Vec::new();
        for provider in &candidates {
            let query = LoginQuery {
                provider: provider.id.clone(),
                query: query.to_owned(),
                matched,
            };
            let chain = self.plugins.chain(provider);
            for option in chain.login_options(&query).await {
                // Candidates offer the same lookups; the login tries them all.
                if methods.contains(&option.method) {
                    continue;
                }
                let sign_in = if chain.redirects(&option.method) {
                    "redirect"
                } else {
                    "password"
                };
                methods.push(option.method.clone());
                let mut offered = json!(option);
                offered["sign_in"] = json!(sign_in);
                options.push(offered);
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
