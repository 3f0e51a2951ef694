//! The crate's layers, as `lib.rs` and `ARCHITECTURE.md` state them, checked against the code:
//! every `crate::<module>` path in a module's files must name the module itself or a layer
//! below it, so no import circle can form between the folders of `src/`; and no circle may form
//! between files either, within a folder included.
#![allow(clippy::unwrap_used, clippy::panic)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Each top-level module and what it may use, bottom up.
const LAYERS: &[(&str, &[&str])] = &[
    ("text", &[]),
    ("allocator", &[]),
    ("config", &["text"]),
    ("wire", &["text"]),
    ("telemetry", &["text"]),
    ("metrics", &["wire", "text"]),
    ("edge", &["config", "wire", "metrics", "text"]),
    ("audit", &["metrics", "text"]),
    ("state", &["text"]),
    ("cluster", &["metrics", "state", "text"]),
    ("upstream", &["config", "wire", "metrics", "text"]),
    (
        "plugin",
        &[
            "config", "wire", "metrics", "audit", "state", "cluster", "upstream", "text",
        ],
    ),
    (
        "access",
        &[
            "config", "wire", "metrics", "audit", "state", "cluster", "upstream", "plugin", "text",
        ],
    ),
    (
        "operator",
        &[
            "config", "wire", "metrics", "audit", "state", "cluster", "upstream", "plugin",
            "access", "text",
        ],
    ),
    (
        "http",
        &[
            "config", "wire", "metrics", "edge", "audit", "state", "cluster", "upstream", "plugin",
            "access", "text",
        ],
    ),
    ("cli", &["telemetry", "text"]),
    ("reload", &["config", "text"]),
    (
        "server",
        &[
            "config", "wire", "metrics", "edge", "audit", "state", "cluster", "upstream", "plugin",
            "access", "http", "operator", "reload", "text",
        ],
    ),
];

/// Files directly in `src/` (`lib.rs` and `main.rs` included): everything else is in a folder.
const TOP_LEVEL_FILES_MAX: usize = 6;

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to.
fn module_of(file: &Path) -> String {
    let relative = file.strip_prefix(src()).unwrap();
    let first = relative.components().next().unwrap().as_os_str();
    first.to_string_lossy().trim_end_matches(".rs").to_owned()
}

/// The top-level modules a file's code (not its comments) names as `crate::<module>`.
fn uses(text: &str) -> Vec<String> {
    let mut used = Vec::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let after = &rest[at + "crate::".len()..];
            let name: String = after
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                used.push(name);
            }
            rest = after;
        }
    }
    used
}

#[test]
fn every_module_uses_only_the_layers_below_it() {
    let allowed: BTreeMap<&str, &[&str]> = LAYERS.iter().copied().collect();
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut violations = Vec::new();
    for file in &files {
        let module = module_of(file);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some(below) = allowed.get(module.as_str()) else {
            panic!("{module} is not in LAYERS: place it in a layer");
        };
        let text = std::fs::read_to_string(file).unwrap();
        for used in uses(&text) {
            if used != module && !below.contains(&used.as_str()) {
                violations.push(format!(
                    "{}: {module} uses {used}",
                    file.strip_prefix(src()).unwrap().display()
                ));
            }
        }
    }
    assert!(violations.is_empty(), "{}", violations.join("\n"));
}

#[test]
fn the_layers_form_no_circle() {
    // Each module may only use modules declared before it.
    for (index, (module, below)) in LAYERS.iter().enumerate() {
        for used in *below {
            let position = LAYERS.iter().position(|(m, _)| m == used);
            assert!(
                position.is_some_and(|p| p < index),
                "{module} uses {used}, which is not below it"
            );
        }
    }
}

#[test]
fn src_holds_folders_and_at_most_a_few_files() {
    let files: Vec<String> = std::fs::read_dir(src())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert!(files.len() <= TOP_LEVEL_FILES_MAX, "{files:?}");
}

#[test]
fn the_scan_sees_uses_and_skips_comments() {
    assert_eq!(
        uses("use crate::state::Shared; // crate::http"),
        ["state".to_owned()]
    );
    assert_eq!(
        uses("let x = crate::wire::error::LIVE; crate::metrics::M"),
        ["wire".to_owned(), "metrics".to_owned()]
    );
    assert!(uses("//! See [`crate::access::Sessions`].").is_empty());
}

/// The module path of a file of `src/`: `plugin/context.rs` is `plugin::context`,
/// `plugin/mod.rs` is `plugin`.
fn module_path(file: &Path) -> String {
    let relative = file.strip_prefix(src()).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The modules of `src/` a file's code names, resolved to the longest existing module.
fn module_uses(module: &str, text: &str, modules: &[String]) -> Vec<String> {
    let resolve = |path: Vec<&str>| {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].join("::"))
            .find(|candidate| modules.contains(candidate))
    };
    let parent: Vec<&str> = module.split("::").filter(|p| !p.is_empty()).collect();
    let parent = parent.get(..parent.len().saturating_sub(1)).unwrap_or(&[]);
    let mut used = Vec::new();
    // Inline test modules (`mod tests { use super::*; }`) are not part of the product's graph.
    for line in text
        .lines()
        .take_while(|line| line.trim() != "#[cfg(test)]")
    {
        let code = line.split("//").next().unwrap_or_default();
        let words: Vec<&str> = code
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
            .filter(|w| w.contains("::"))
            .collect();
        for word in words {
            let segments: Vec<&str> = word.split("::").filter(|s| !s.is_empty()).collect();
            let target = match segments.first() {
                Some(&"crate") => resolve(segments[1..].to_vec()),
                Some(&"super") => {
                    let mut path = parent.to_vec();
                    path.extend(&segments[1..]);
                    resolve(path)
                }
                Some(&"self") | Some(_) => {
                    let mut path: Vec<&str> =
                        module.split("::").filter(|p| !p.is_empty()).collect();
                    let start = usize::from(segments.first() == Some(&"self"));
                    path.extend(&segments[start..]);
                    resolve(path).filter(|found| found.len() > module.len())
                }
                None => None,
            };
            if let Some(target) = target.filter(|t| t != module && !t.is_empty()) {
                used.push(target);
            }
        }
    }
    used
}

#[test]
fn no_module_of_src_imports_itself_round_a_circle() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let modules: Vec<String> = files.iter().map(|f| module_path(f)).collect();
    let mut edges: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (file, module) in files.iter().zip(&modules) {
        let text = std::fs::read_to_string(file).unwrap();
        let mut used = module_uses(module, &text, &modules);
        used.sort();
        used.dedup();
        edges.insert(module.clone(), used);
    }
    // Depth-first search for a back edge; the circle is printed when one is found.
    fn visit(
        module: &str,
        edges: &BTreeMap<String, Vec<String>>,
        path: &mut Vec<String>,
        done: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|m| m == module) {
            let mut circle = path[at..].to_vec();
            circle.push(module.to_owned());
            return Some(circle);
        }
        if done.iter().any(|m| m == module) {
            return None;
        }
        path.push(module.to_owned());
        for next in edges.get(module).into_iter().flatten() {
            if let Some(circle) = visit(next, edges, path, done) {
                return Some(circle);
            }
        }
        path.pop();
        done.push(module.to_owned());
        None
    }
    let mut done = Vec::new();
    for module in edges.keys() {
        let circle = visit(module, &edges, &mut Vec::new(), &mut done);
        assert!(
            circle.is_none(),
            "import circle: {}",
            circle.unwrap().join(" -> ")
        );
    }
    assert!(edges.len() > 50, "the scan found {} modules", edges.len());
}
