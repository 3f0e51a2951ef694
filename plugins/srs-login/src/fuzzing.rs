//! SRS's answers as the fuzz targets drive them: any status, headers and body, read as a login
//! answer (with and without CSRF protection) and as a version answer.

use xsigate_plugin_sdk::HttpResponse;

use crate::{Rws, session_of, version_of};

pub fn reply(response: &HttpResponse) {
    for csrf in [false, true] {
        if let Ok(session) = session_of(response, csrf, Rws::Primary) {
            // A session always has a cookie to present, and only name=value pairs in it.
            assert!(!session.cookie.is_empty());
            assert!(session.cookie.split("; ").all(|pair| pair.contains('=')));
        }
    }
    if let Some(version) = version_of(response) {
        assert!(version.len() <= 64);
    }
}
