//! OpenID Connect for xsigate's single sign-on plugins (`idp-o365`, `idp-onelogin`): a relying
//! party for the authorization code flow with PKCE on the host's redirect flow, and ID-token
//! verification.
//!
//! Like every plugin, it does no I/O of its own: discovery, keys and the token exchange go
//! through [`xsigate_plugin_sdk::Host::http`], and the flow's secrets (`state`, `nonce`, the
//! PKCE verifier) are made and kept by the host ([`xsigate_plugin_sdk::RedirectFlow`]).
//!
//! - [`provider`]: the identity provider's discovery document and signing keys, cached; an
//!   unknown key id refreshes the keys once.
//! - [`id_token`]: the checks of OpenID Connect Core §3.1.3.7, with an allow-list of
//!   algorithms (`none` and HMAC are never on it).
//! - [`relying_party`]: the authorization URL, and the callback: code exchange, then the ID
//!   token; app-only tokens by client credentials.
//! - [`email_sign_in`]: the e-mail reverse lookup both plugins are: the option offered to
//!   addresses the company directory knows, the verified address matched to one BroadWorks
//!   user.

pub mod email_sign_in;
pub mod id_token;
pub mod provider;
pub mod relying_party;

pub use email_sign_in::{
    AppToken, CompanyDirectory, EmailClaim, EmailSignIn, EmailSignIns, check_algorithms,
};
pub use id_token::{Expectations, Refusal, SigningKeys};
pub use jsonwebtoken::Algorithm;
pub use provider::{IdentityProvider, Metadata};
pub use relying_party::{Declined, RelyingParty, TokenAuth, email_of};
