//! Replays every stored input of every fuzz target (`fuzz/corpus/<target>/`, the seeds and what
//! the long runs kept, and `fuzz/regressions/<target>/`, inputs that once failed) on stable.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::path::Path;

fn replay(target: &str, run: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut inputs = 0;
    for folder in ["corpus", "regressions"] {
        let Ok(entries) = std::fs::read_dir(root.join(folder).join(target)) else {
            continue;
        };
        for entry in entries {
            let path = entry.unwrap().path();
            // A running `scripts/fuzz` may remove an input while this reads the folder.
            let Ok(data) = std::fs::read(&path) else {
                continue;
            };
            let outcome = std::panic::catch_unwind(|| run(&data));
            assert!(outcome.is_ok(), "{target}: {} fails", path.display());
            inputs += 1;
        }
    }
    assert!(inputs > 0, "{target} has no corpus");
}

#[test]
fn edge_head() {
    replay("edge_head", xsigate_fuzz::edge_head);
}

#[test]
fn xsi_path() {
    replay("xsi_path", xsigate_fuzz::xsi_path);
}

#[test]
fn providers_toml() {
    replay("providers_toml", xsigate_fuzz::providers_toml);
}

#[test]
fn login_api() {
    replay("login_api", xsigate_fuzz::login_api);
}

#[test]
fn xsi_documents() {
    replay("xsi_documents", xsigate_fuzz::xsi_documents);
}

#[test]
fn plugin_abi() {
    replay("plugin_abi", xsigate_fuzz::plugin_abi);
}

#[test]
fn service_replies() {
    replay("service_replies", xsigate_fuzz::service_replies);
}

#[test]
fn saml_responses() {
    replay("saml_responses", xsigate_fuzz::saml_responses);
}

#[test]
fn upstream_answers() {
    replay("upstream_answers", xsigate_fuzz::upstream_answers);
}
