//! The login API's readers of client input, as the fuzz targets drive them (`fuzz/`): the JSON
//! bodies of every endpoint with their field checks, the endpoint names, the content type, a
//! single sign-on callback's fields, the cookie header, and a device cookie offered for a user.

use std::sync::OnceLock;

use super::api::{FIELD_LIMIT, parse};
use super::device::Devices;
use super::endpoint::{Endpoint, cookie, is_form, is_json};
use super::login::LoginBody;
use super::redirect::callback_fields;
use super::reset::{ConfirmBody, ResetBody};
use super::ztp::ZtpBody;
use crate::state::seal::Sealer;
use crate::wire::headers::{DEVICE_COOKIE, FLOW_COOKIE, SESSION_COOKIE};

/// `body` as each endpoint's JSON body, then what the endpoint checks of its fields.
pub fn bodies(body: &[u8]) {
    let within = |field: &str| !field.trim().is_empty() && field.trim().len() <= FIELD_LIMIT;
    if let Ok(login) = parse::<LoginBody>(body) {
        let _ = within(&login.user) && login.password.is_some_and(|p| !p.is_empty());
    }
    if let Ok(reset) = parse::<ResetBody>(body) {
        let _ = within(&reset.user);
    }
    if let Ok(confirm) = parse::<ConfirmBody>(body) {
        let _ = within(&confirm.token) && within(&confirm.password);
    }
    if let Ok(ztp) = parse::<ZtpBody>(body) {
        let _ = within(&ztp.query);
    }
}

/// `text` as an endpoint name, a content type, a `Cookie` header and a device cookie.
pub fn headers(text: &str) {
    let _ = Endpoint::parse(text);
    let _ = is_json(Some(text));
    let _ = is_form(Some(text));
    let _ = callback_fields(text.as_bytes());
    if let Ok(value) = http::HeaderValue::from_str(text) {
        for name in [SESSION_COOKIE, DEVICE_COOKIE, FLOW_COOKIE] {
            let _ = cookie(std::iter::once(&value), name);
        }
    }
    static DEVICES: OnceLock<Option<Devices>> = OnceLock::new();
    let devices = DEVICES
        .get_or_init(|| Devices::new(&Sealer::from_material(b"fuzzing key material, fixed")).ok());
    if let Some(devices) = devices {
        let (user, offered) = text.split_once(' ').unwrap_or(("alice@acme.example", text));
        assert!(
            devices.recognise(offered, user).is_none(),
            "a made-up device cookie was recognised"
        );
    }
}
