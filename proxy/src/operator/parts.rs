//! What the console needs of the running gateway.

use std::sync::Arc;
use std::time::Duration;

use crate::access::{LoginApi, Sessions};
use crate::audit::Audit;
use crate::plugin::Plugins;
use crate::state::Shared;
use crate::upstream::Providers;

/// How long plugins have to report their state or an action's outcome.
pub const PLUGIN_WAIT: Duration = Duration::from_secs(3);

/// What the console needs of the running gateway.
pub struct ConsoleParts {
    pub providers: Arc<Providers>,
    pub plugins: Arc<Plugins>,
    pub sessions: Arc<Sessions>,
    pub login_api: Arc<LoginApi>,
    pub shared: Shared,
    pub audit: Audit,
}

impl std::fmt::Debug for ConsoleParts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleParts").finish_non_exhaustive()
    }
}
