//! Loading plugin libraries: open, check the ABI version, look up init, initialise.
#![allow(
    unsafe_code,
    reason = "dlopen and calls of a plugin's C entry points; each call states its invariant"
)]

use std::path::{Path, PathBuf};

use libloading::Library;
use xsigate_plugin_sdk::Manifest;
use xsigate_plugin_sdk::abi::{self, AbiVersionFn, InitFn, PluginApi, Str};

use super::context::PluginContext;

/// Why a plugin could not be loaded or wired. Each message names the `[[plugins]]` entry and
/// the library file.
#[derive(Debug, thiserror::Error)]
#[error("{origin}: plugin `{name}` ({}): {reason}", path.display())]
pub struct PluginError {
    /// `file:line:column` of the `[[plugins]]` entry.
    pub origin: String,
    pub name: String,
    pub path: PathBuf,
    pub reason: LoadFailure,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadFailure {
    #[error("no such file{}", build_hint(.build))]
    Missing {
        /// The command that builds the library, when its path is a cargo build's output.
        build: Option<String>,
    },
    #[error("cannot load the library: {0}")]
    Open(String),
    #[error(
        "not an xsigate plugin: it exports no `{}` symbol",
        abi::ABI_VERSION_SYMBOL
    )]
    NotAPlugin,
    #[error(
        "built for plugin ABI {found}, but this xsigate speaks ABI {}; rebuild it against the \
         xsigate-plugin-sdk of this release",
        abi::ABI_VERSION
    )]
    AbiMismatch { found: u32 },
    #[error("missing symbol `{0}` (is `export_plugin!` used?)")]
    MissingSymbol(&'static str),
    #[error("init failed: {0}")]
    Init(String),
    #[error("its manifest is invalid: {0}")]
    Manifest(String),
    #[error("{0}")]
    Wiring(String),
}

fn build_hint(build: &Option<String>) -> String {
    build
        .as_ref()
        .map(|command| format!("; build it with `{command}`"))
        .unwrap_or_default()
}

/// `cargo build [--release] -p <crate>` for a path of the form
/// `…/target/{debug,release}/lib<crate>.so`, the one place a cargo-built plugin lands.
fn cargo_build_command(path: &Path) -> Option<String> {
    let file = path.file_name()?.to_str()?;
    let crate_name = file
        .strip_prefix(std::env::consts::DLL_PREFIX)?
        .strip_suffix(std::env::consts::DLL_SUFFIX)?;
    let profile = path.parent()?;
    if profile.parent()?.file_name()? != "target" {
        return None;
    }
    let flag = match profile.file_name()?.to_str()? {
        "release" => " --release",
        "debug" => "",
        _ => return None,
    };
    Some(format!(
        "cargo build{flag} -p {}",
        crate_name.replace('_', "-")
    ))
}

/// What loading produced.
pub(super) struct Loaded {
    pub api: PluginApi,
    pub manifest: Manifest,
    pub context: &'static PluginContext,
}

/// Opens `path` and initialises the plugin with `config` (JSON text).
pub(super) fn load(
    path: &Path,
    config: &str,
    context: PluginContext,
) -> Result<Loaded, LoadFailure> {
    if matches!(path.try_exists(), Ok(false)) {
        return Err(LoadFailure::Missing {
            build: cargo_build_command(path),
        });
    }
    // SAFETY: loading runs the library's initialisers. Plugins are trusted code by design
    // (operators name them in their configuration), and this is the documented contract.
    let library = unsafe { Library::new(path) }.map_err(|e| LoadFailure::Open(e.to_string()))?;
    // Plugins are never unloaded: thread-local destructors and leaked instances may point into
    // the library for the life of the process.
    let library: &'static Library = Box::leak(Box::new(library));

    // SAFETY: the symbol's type is fixed by the ABI; a library that exports the name with
    // another type is not a plugin of any version, and the name is specific enough.
    let version = unsafe { library.get::<AbiVersionFn>(abi::ABI_VERSION_SYMBOL.as_bytes()) }
        .map_err(|_| LoadFailure::NotAPlugin)?;
    // SAFETY: as above; the function takes nothing and returns a number.
    let found = unsafe { version() };
    if found != abi::ABI_VERSION {
        return Err(LoadFailure::AbiMismatch { found });
    }
    // SAFETY: the ABI version matches, so the init symbol has the type this version defines.
    let init = unsafe { library.get::<InitFn>(abi::INIT_SYMBOL.as_bytes()) }
        .map_err(|_| LoadFailure::MissingSymbol(abi::INIT_SYMBOL))?;

    let context: &'static PluginContext = Box::leak(Box::new(context));
    let host = PluginContext::host_api(context);
    // SAFETY: `host` lives for the process; `config` outlives the call.
    let result = unsafe { init(host, Str::new(config)) };
    context.finish_init();
    if !result.ok {
        let reason = String::from_utf8_lossy(result.error.as_slice()).into_owned();
        return Err(LoadFailure::Init(reason));
    }
    let manifest: Manifest = serde_json::from_slice(result.manifest.as_slice())
        .map_err(|e| LoadFailure::Manifest(e.to_string()))?;
    Ok(Loaded {
        api: result.plugin,
        manifest,
        context,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_cargo_built_library_names_the_command_that_builds_it() {
        let so = |p: &str| PathBuf::from(p.replace(".so", std::env::consts::DLL_SUFFIX));
        assert_eq!(
            cargo_build_command(&so("/srv/xsigate/target/release/libxsigate_idp_email.so"))
                .as_deref(),
            Some("cargo build --release -p xsigate-idp-email")
        );
        assert_eq!(
            cargo_build_command(&so("target/debug/libacme_tagger.so")).as_deref(),
            Some("cargo build -p acme-tagger")
        );
        assert_eq!(
            cargo_build_command(&so("/usr/lib/xsigate/libxsigate_idp_email.so")),
            None
        );
        assert_eq!(
            cargo_build_command(&so("target/release/xsigate_idp_email.txt")),
            None
        );
        assert_eq!(
            LoadFailure::Missing {
                build: Some("cargo build -p x".to_owned())
            }
            .to_string(),
            "no such file; build it with `cargo build -p x`"
        );
        assert_eq!(
            LoadFailure::Missing { build: None }.to_string(),
            "no such file"
        );
    }
}
