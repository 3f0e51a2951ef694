//! What a new configuration changes, by section: providers and plugins added, removed or
//! changed, and the `[server]` tables that differ.

use std::collections::BTreeSet;
use std::fmt;

use toml::{Table, Value};

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Changes {
    pub providers_added: Vec<String>,
    pub providers_removed: Vec<String>,
    pub providers_changed: Vec<String>,
    pub plugins_added: Vec<String>,
    pub plugins_removed: Vec<String>,
    pub plugins_changed: Vec<String>,
    /// `[server]` keys whose values differ.
    pub server_changed: Vec<String>,
}

impl Changes {
    /// Between two valid configuration texts.
    pub fn between(running: &str, new: &str) -> Self {
        let running: Table = running.parse().unwrap_or_default();
        let new: Table = new.parse().unwrap_or_default();
        let (providers_added, providers_removed, providers_changed) =
            compare(&table(&running, "providers"), &table(&new, "providers"));
        let (plugins_added, plugins_removed, plugins_changed) =
            compare(&plugins(&running), &plugins(&new));
        let (added, removed, changed) = compare(&table(&running, "server"), &table(&new, "server"));
        let mut server_changed: Vec<String> =
            added.into_iter().chain(removed).chain(changed).collect();
        server_changed.sort();
        Self {
            providers_added,
            providers_removed,
            providers_changed,
            plugins_added,
            plugins_removed,
            plugins_changed,
            server_changed,
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Self::default()
    }
}

fn table(root: &Table, key: &str) -> Table {
    root.get(key)
        .and_then(Value::as_table)
        .cloned()
        .unwrap_or_default()
}

/// `[[plugins]]` by name.
fn plugins(root: &Table) -> Table {
    root.get("plugins")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|plugin| {
            let name = plugin.get("name")?.as_str()?.to_owned();
            Some((name, plugin.clone()))
        })
        .collect()
}

/// Keys added, removed, and present in both with different values.
fn compare(old: &Table, new: &Table) -> (Vec<String>, Vec<String>, Vec<String>) {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let (mut added, mut removed, mut changed) = (Vec::new(), Vec::new(), Vec::new());
    for key in keys {
        match (old.get(key), new.get(key)) {
            (None, Some(_)) => added.push(key.clone()),
            (Some(_), None) => removed.push(key.clone()),
            (Some(a), Some(b)) if a != b => changed.push(key.clone()),
            _ => {}
        }
    }
    (added, removed, changed)
}

impl fmt::Display for Changes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return writeln!(f, "no change");
        }
        let lines = [
            ("providers added", &self.providers_added),
            ("providers removed", &self.providers_removed),
            ("providers changed", &self.providers_changed),
            ("plugins added", &self.plugins_added),
            ("plugins removed", &self.plugins_removed),
            ("plugins changed", &self.plugins_changed),
            ("server settings changed", &self.server_changed),
        ];
        for (what, names) in lines {
            if !names.is_empty() {
                writeln!(f, "{what}: {}", names.join(", "))?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_plugins_and_server_tables_are_compared_by_name() {
        let old = "[server]\nthreads = 2\n[[plugins]]\nname = \"a\"\npath = \"a.so\"\n\
                   [[plugins]]\nname = \"b\"\npath = \"b.so\"\n\
                   [providers.acme]\ndomains = [\"acme.example\"]\n\
                   [providers.gone]\ndomains = [\"gone.example\"]\n";
        let new = "[server]\nthreads = 4\n[[plugins]]\nname = \"b\"\npath = \"b2.so\"\n\
                   [[plugins]]\nname = \"c\"\npath = \"c.so\"\n\
                   [providers.acme]\ndomains = [\"acme.example\"]\n\
                   [providers.beta]\ndomains = [\"beta.example\"]\n";
        let changes = Changes::between(old, new);
        assert_eq!(changes.providers_added, ["beta"]);
        assert_eq!(changes.providers_removed, ["gone"]);
        assert!(changes.providers_changed.is_empty());
        assert_eq!(changes.plugins_added, ["c"]);
        assert_eq!(changes.plugins_removed, ["a"]);
        assert_eq!(changes.plugins_changed, ["b"]);
        assert_eq!(changes.server_changed, ["threads"]);
        assert_eq!(
            changes.to_string(),
            "providers added: beta\nproviders removed: gone\nplugins added: c\n\
             plugins removed: a\nplugins changed: b\nserver settings changed: threads\n"
        );
        assert!(Changes::between(old, old).is_empty());
    }
}
