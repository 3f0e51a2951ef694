//! Device cookies, as OWASP's authentication cheat sheet describes them: a browser that logged
//! in as a user gets a cookie, sealed under the server key and bound to that user, naming a
//! random device. Its later logins as the same user are counted under the device alone, so the
//! failures of strangers, which lock the user id for unknown clients, never lock the user out of
//! a browser they have used before; and a device that fails is locked on its own.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::limit::user_key;
use crate::state::seal::{SealError, SealKey, Sealer};
use crate::text::hex;
use crate::wire::headers::DEVICE_COOKIE;

/// Random bytes naming a device.
const DEVICE_ID_BYTES: usize = 16;
/// How long a browser keeps its device cookie.
const MAX_AGE_SECONDS: u64 = 365 * 24 * 3600;
/// The cookie is sent to the login API only.
const COOKIE_PATH: &str = "/api/access/services/";

#[derive(Debug)]
pub struct Devices {
    key: SealKey,
}

impl Devices {
    pub fn new(sealer: &Sealer) -> Result<Self, SealError> {
        Ok(Self {
            key: sealer.key("devices")?,
        })
    }

    /// A new device cookie value for a browser that logged in as `user`.
    pub fn issue(&self, user: &str) -> Result<String, SealError> {
        let device: [u8; DEVICE_ID_BYTES] = rand::random();
        let sealed = self.key.seal(user_key(user).as_bytes(), &device)?;
        Ok(URL_SAFE_NO_PAD.encode(sealed))
    }

    /// The limiter key of the device a cookie names, when it was issued to a browser that
    /// logged in as `user` (user ids in any case).
    pub fn recognise(&self, cookie: &str, user: &str) -> Option<String> {
        let sealed = URL_SAFE_NO_PAD.decode(cookie).ok()?;
        let device = self.key.open(user_key(user).as_bytes(), &sealed).ok()?;
        (device.len() == DEVICE_ID_BYTES).then(|| format!("device:{}", hex(&device)))
    }

    /// The `Set-Cookie` value that gives the browser its device cookie.
    pub fn cookie(value: &str, secure: bool) -> String {
        let secure = if secure { "; Secure" } else { "" };
        format!(
            "{DEVICE_COOKIE}={value}; Path={COOKIE_PATH}; HttpOnly; SameSite=Strict; \
             Max-Age={MAX_AGE_SECONDS}{secure}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_cookie_works_for_its_user_only_and_cannot_be_forged() {
        let devices = Devices::new(&Sealer::from_material(&[7u8; 32])).unwrap();
        let cookie = devices.issue("alice@acme.example").unwrap();
        let device = devices.recognise(&cookie, "ALICE@acme.example").unwrap();
        assert!(device.starts_with("device:") && device.len() == 7 + 32);
        assert_eq!(devices.recognise(&cookie, "bob@acme.example"), None);
        let mut forged = URL_SAFE_NO_PAD.decode(&cookie).unwrap();
        let last = forged.len() - 1;
        forged[last] ^= 1;
        assert_eq!(
            devices.recognise(&URL_SAFE_NO_PAD.encode(forged), "alice@acme.example"),
            None
        );
        assert_eq!(
            devices.recognise("not base64 !", "alice@acme.example"),
            None
        );
        let other_server = Devices::new(&Sealer::from_material(&[8u8; 32])).unwrap();
        assert_eq!(other_server.recognise(&cookie, "alice@acme.example"), None);
        assert_ne!(
            devices.issue("alice@acme.example").unwrap(),
            cookie,
            "each browser is a device of its own"
        );
    }
}
