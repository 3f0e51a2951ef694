//! Firebase's answers as the fuzz targets drive them: a token endpoint's answer of any status,
//! headers and body, and a service-account key file of any text.

use std::time::{Duration, Instant};

use xsigate_plugin_sdk::HttpResponse;

use crate::auth::ServiceAccount;
use crate::{TOKEN_LIFE_MAX, granted_token};

pub fn reply(response: &HttpResponse) {
    let asked = Instant::now();
    if let Ok(token) = granted_token(response, asked) {
        assert!(!token.value.is_empty());
        assert!(token.refresh_at <= asked + TOKEN_LIFE_MAX + Duration::from_secs(1));
    }
    if let Ok(text) = std::str::from_utf8(&response.body) {
        let _ = ServiceAccount::from_json(text);
    }
}
