//! Rules that serde alone cannot express: cross-field and cross-provider checks, URL shapes,
//! secret references, and files that must be readable. The first problem found is returned with
//! the key path of the value at fault; the loader turns that path into a line and column.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use super::error::KeyPath;
use super::schema::{
    Config, MasterCredentials, ProviderConfig, ServerConfig, SmtpConfig, SmtpSecurity, SsoConfig,
    StoreConfig, StoreTls,
};
use super::secret::Secret;

/// A rule violation at a key path.
#[derive(Debug)]
pub struct Problem {
    pub path: KeyPath,
    pub message: String,
}

type Checked<T = ()> = Result<T, Problem>;

fn problem(path: &KeyPath, message: impl Into<String>) -> Problem {
    Problem {
        path: path.clone(),
        message: message.into(),
    }
}

/// An operator's name: it appears in audit lines and on the console, so plain characters only.
fn check_admin_name(name: &str, at: &KeyPath) -> Checked {
    let plain = |c: char| c.is_ascii_alphanumeric() || "._@-".contains(c);
    if name.is_empty() || name.len() > 64 || !name.chars().all(plain) {
        return Err(problem(
            at,
            "an operator's name is 1 to 64 letters, digits, `.`, `_`, `@` or `-`",
        ));
    }
    Ok(())
}

/// Checks `config`, resolves its secret references, and makes relative paths relative to
/// `base_dir` (the directory of the configuration file).
pub fn validate(config: &mut Config, base_dir: &Path) -> Checked {
    let root = KeyPath::root();
    validate_server(&mut config.server, &root.key("server"), base_dir)?;

    let plugins = root.key("plugins");
    let mut plugin_names = HashSet::new();
    for (i, plugin) in config.plugins.iter_mut().enumerate() {
        let at = plugins.index(i);
        check_identifier(&plugin.name, &at.key("name"), "plugin name")?;
        if !plugin_names.insert(plugin.name.clone()) {
            return Err(problem(
                &at.key("name"),
                format!("plugin `{}` is listed twice", plugin.name),
            ));
        }
        plugin.path = relative_to(base_dir, &plugin.path);
        files_relative_to(base_dir, &mut plugin.config);
        if plugin.call_timeout_ms == 0 {
            return Err(problem(
                &at.key("call_timeout_ms"),
                "must be greater than zero",
            ));
        }
    }

    let providers = root.key("providers");
    if config.providers.is_empty() {
        return Err(problem(
            &providers,
            "at least one provider must be configured",
        ));
    }
    // Whatever identifies a provider on the login page identifies one provider only.
    let mut owners: [HashMap<&str, &str>; 3] = Default::default();
    for (id, provider) in &mut config.providers {
        let at = providers.key(id);
        check_identifier(id, &at, "provider id")?;
        validate_provider(provider, &at, base_dir, &plugin_names)?;
    }
    for (id, provider) in &config.providers {
        let at = providers.key(id);
        let lists = [
            ("domains", "domain", &provider.domains),
            ("email_domains", "e-mail domain", &provider.email_domains),
            (
                "number_prefixes",
                "number prefix",
                &provider.number_prefixes,
            ),
        ];
        for ((key, what, values), owner_of) in lists.into_iter().zip(&mut owners) {
            for (i, value) in values.iter().enumerate() {
                if let Some(owner) = owner_of.insert(value, id) {
                    let message = if owner == id {
                        format!("{what} `{value}` is listed twice")
                    } else {
                        format!("{what} `{value}` already belongs to provider `{owner}`")
                    };
                    return Err(problem(&at.key(key).index(i), message));
                }
            }
        }
    }
    Ok(())
}

fn validate_server(server: &mut ServerConfig, at: &KeyPath, base_dir: &Path) -> Checked {
    let listeners = at.key("listeners");
    if server.listeners.is_empty() {
        return Err(problem(&listeners, "at least one listener is required"));
    }
    let mut addresses = HashSet::new();
    for (i, listener) in server.listeners.iter_mut().enumerate() {
        let here = listeners.index(i);
        if !addresses.insert(listener.address) {
            return Err(problem(
                &here.key("address"),
                format!("address {} is used twice", listener.address),
            ));
        }
        if let Some(tls) = &mut listener.tls {
            tls.cert_file = relative_to(base_dir, &tls.cert_file);
            tls.key_file = relative_to(base_dir, &tls.key_file);
            check_readable(&tls.cert_file, &here.key("tls").key("cert_file"))?;
            check_readable(&tls.key_file, &here.key("tls").key("key_file"))?;
        }
    }
    if addresses.contains(&server.metrics.address) {
        return Err(problem(
            &at.key("metrics").key("address"),
            "the metrics listener must not share an address with a proxy listener",
        ));
    }
    let console = at.key("console");
    if addresses.contains(&server.console.address)
        || server.console.address == server.metrics.address
    {
        return Err(problem(
            &console.key("address"),
            "the console listener needs an address of its own",
        ));
    }
    if server.console.idle_seconds == 0
        || server.console.lifetime_seconds < server.console.idle_seconds
    {
        return Err(problem(
            &console.key("lifetime_seconds"),
            "idle_seconds must be above zero and lifetime_seconds at least idle_seconds",
        ));
    }
    let mut admins = HashSet::new();
    for (i, admin) in server.admins.iter().enumerate() {
        let user = at.key("admins").index(i).key("user");
        check_admin_name(&admin.user, &user)?;
        if !admins.insert(admin.user.to_lowercase()) {
            return Err(problem(
                &user,
                format!("operator `{}` is listed twice", admin.user),
            ));
        }
    }
    server.data_dir = relative_to(base_dir, &server.data_dir);
    if let Some(secret_file) = &mut server.secret_file {
        *secret_file = relative_to(base_dir, secret_file);
        // A missing file is created on first start; one that exists must be usable.
        if secret_file.exists() {
            check_readable(secret_file, &at.key("secret_file"))?;
        }
    }
    let timeouts = at.key("timeouts");
    for (key, value) in [
        ("connect_ms", server.timeouts.connect_ms),
        (
            "upstream_read_seconds",
            server.timeouts.upstream_read_seconds,
        ),
        (
            "downstream_read_seconds",
            server.timeouts.downstream_read_seconds,
        ),
        ("stream_idle_seconds", server.timeouts.stream_idle_seconds),
        (
            "upstream_idle_seconds",
            server.timeouts.upstream_idle_seconds,
        ),
    ] {
        if value == 0 {
            return Err(problem(&timeouts.key(key), "must be greater than zero"));
        }
    }
    if server.upstream_keepalive_pool_size == 0 {
        return Err(problem(
            &at.key("upstream_keepalive_pool_size"),
            "must be greater than zero",
        ));
    }
    validate_store(&mut server.store, &at.key("store"), base_dir)?;
    let clients = at.key("clients");
    let limits = &server.clients;
    for (key, value) in [
        (
            "connections_per_address",
            u64::from(limits.connections_per_address),
        ),
        (
            "request_burst_per_address",
            u64::from(limits.request_burst_per_address),
        ),
        ("header_seconds", limits.header_seconds),
        ("idle_seconds", limits.idle_seconds),
        ("header_bytes", limits.header_bytes as u64),
        ("header_fields", limits.header_fields as u64),
        ("body_bytes", limits.body_bytes),
    ] {
        if value == 0 {
            return Err(problem(&clients.key(key), "must be greater than zero"));
        }
    }
    if limits.header_bytes < 1024 {
        return Err(problem(
            &clients.key("header_bytes"),
            "must be at least 1024: a browser's request header alone comes near that",
        ));
    }
    let sessions = at.key("sessions");
    for (key, value) in [
        ("idle_seconds", server.sessions.idle_seconds),
        ("lifetime_seconds", server.sessions.lifetime_seconds),
    ] {
        if value == 0 {
            return Err(problem(&sessions.key(key), "must be greater than zero"));
        }
    }
    Ok(())
}

fn validate_provider(
    provider: &mut ProviderConfig,
    at: &KeyPath,
    base_dir: &Path,
    plugin_names: &HashSet<String>,
) -> Checked {
    if provider.domains.is_empty() {
        return Err(problem(
            &at.key("domains"),
            "at least one domain is required",
        ));
    }
    for (i, domain) in provider.domains.iter().enumerate() {
        check_domain(domain, &at.key("domains").index(i))?;
    }
    for (i, domain) in provider.email_domains.iter().enumerate() {
        check_domain(domain, &at.key("email_domains").index(i))?;
    }
    for (i, prefix) in provider.number_prefixes.iter().enumerate() {
        let digits = prefix.strip_prefix('+').unwrap_or(prefix);
        if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return Err(problem(
                &at.key("number_prefixes").index(i),
                format!("`{prefix}` is not a number prefix: 1 to 15 digits, optionally after `+`"),
            ));
        }
    }

    if provider.xsp.is_empty() {
        return Err(problem(&at.key("xsp"), "at least one XSP URL is required"));
    }
    let mut seen = HashSet::new();
    for (i, url) in provider.xsp.iter().enumerate() {
        let here = at.key("xsp").index(i);
        check_base_url(url, &here)?;
        if !seen.insert(url.as_str()) {
            return Err(problem(&here, "this XSP is listed twice"));
        }
    }
    if let Some(ca_file) = &mut provider.ca_file {
        check_ca_file(ca_file, &at.key("ca_file"), base_dir)?;
    }

    let health = at.key("health_check");
    if !provider.health_check.path.starts_with('/') {
        return Err(problem(&health.key("path"), "must start with `/`"));
    }
    if provider.health_check.interval_ms < 100 {
        return Err(problem(&health.key("interval_ms"), "must be at least 100"));
    }
    for (key, value) in [
        (
            "timeout_ms",
            u64::from(provider.health_check.timeout_ms > 0),
        ),
        ("fall", u64::from(provider.health_check.fall)),
        ("rise", u64::from(provider.health_check.rise)),
    ] {
        if value == 0 {
            return Err(problem(&health.key(key), "must be greater than zero"));
        }
    }

    check_named_urls(&provider.gateway, &at.key("gateway"), "gateway service")?;
    for (name, applet) in &provider.applets {
        let here = at.key("applets").key(name);
        check_identifier(name, &here, "applet name")?;
        check_base_url(&applet.url, &here.key("url"))?;
    }

    if let Some(master) = &mut provider.master {
        master.password = resolve_master_password(master, &at.key("master"), base_dir)?;
    }
    if let Some(smtp) = &mut provider.smtp {
        validate_smtp(smtp, &at.key("smtp"), base_dir)?;
    }
    if let Some(url) = &provider.reset_url {
        let here = at.key("reset_url");
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(problem(&here, "must be an http or https URL"));
        }
        if url.fragment().is_some() {
            return Err(problem(
                &here,
                "must have no fragment: the token goes there",
            ));
        }
        if provider.master.is_none() || provider.smtp.is_none() {
            return Err(problem(
                &here,
                "password reset needs `master` (to set the password) and `smtp` (to send the link)",
            ));
        }
    }
    for (i, origin) in provider.cors_origins.iter().enumerate() {
        check_origin(origin, &at.key("cors_origins").index(i))?;
    }
    if let Some(sso) = &provider.sso {
        validate_sso(sso, &provider.cors_origins, &at.key("sso"))?;
    }
    for (i, name) in provider.plugins.iter().enumerate() {
        if !plugin_names.contains(name) {
            return Err(problem(
                &at.key("plugins").index(i),
                format!("no [[plugins]] entry is named `{name}`"),
            ));
        }
    }
    Ok(())
}

fn validate_sso(sso: &SsoConfig, cors_origins: &[url::Url], at: &KeyPath) -> Checked {
    check_origin(&sso.public_url, &at.key("public_url"))?;
    let here = at.key("return_url");
    // No query or fragment: a failed login adds `?sso_error=<code>`.
    check_base_url(&sso.return_url, &here)?;
    let origin = sso.return_url.origin();
    if !cors_origins
        .iter()
        .any(|allowed| allowed.origin() == origin)
    {
        return Err(problem(
            &here,
            "its origin must be one of the provider's `cors_origins`: the dialer there reads the \
             login's result",
        ));
    }
    Ok(())
}

fn resolve_master_password(
    master: &MasterCredentials,
    at: &KeyPath,
    base_dir: &Path,
) -> Checked<Secret> {
    if master.user.trim().is_empty() {
        return Err(problem(&at.key("user"), "must not be empty"));
    }
    resolve_password(
        master.inline_password.is_some(),
        master.password_env.as_deref(),
        master.password_file.as_deref(),
        at,
        base_dir,
    )
}

/// Reads a password given by reference (`password_env` or `password_file`, exactly one) in the
/// table at `at`.
fn resolve_password(
    inline: bool,
    env: Option<&str>,
    file: Option<&Path>,
    at: &KeyPath,
    base_dir: &Path,
) -> Checked<Secret> {
    if inline {
        return Err(problem(
            &at.key("password"),
            "secrets are never written inline: use `password_env` or `password_file`",
        ));
    }
    let value = match (env, file) {
        (Some(_), Some(_)) => {
            return Err(problem(
                &at.key("password_file"),
                "give `password_env` or `password_file`, not both",
            ));
        }
        (None, None) => return Err(problem(at, "`password_env` or `password_file` is required")),
        (Some(var), None) => match std::env::var(var) {
            Ok(value) => value,
            Err(std::env::VarError::NotPresent) => {
                return Err(problem(
                    &at.key("password_env"),
                    format!("environment variable `{var}` is not set"),
                ));
            }
            Err(std::env::VarError::NotUnicode(_)) => {
                return Err(problem(
                    &at.key("password_env"),
                    format!("environment variable `{var}` is not UTF-8"),
                ));
            }
        },
        (None, Some(file)) => {
            let path = relative_to(base_dir, file);
            let bytes = check_readable(&path, &at.key("password_file"))?;
            let text = String::from_utf8(bytes).map_err(|_| {
                problem(
                    &at.key("password_file"),
                    format!("{} is not UTF-8", path.display()),
                )
            })?;
            // Files written by editors and `echo` end in a newline that is not part of the secret.
            text.trim_end_matches(['\r', '\n']).to_owned()
        }
    };
    if value.is_empty() {
        return Err(problem(at, "the referenced password is empty"));
    }
    Ok(Secret::new(value))
}

fn validate_store(store: &mut StoreConfig, at: &KeyPath, base_dir: &Path) -> Checked {
    if store.lease_seconds < 3 {
        return Err(problem(
            &at.key("lease_seconds"),
            "must be at least 3: leases are renewed every third of it",
        ));
    }
    let Some(url) = &store.url else {
        let needs_url = if store.ca_file.is_some() {
            Some("a `ca_file`")
        } else if store.password_env.is_some()
            || store.password_file.is_some()
            || store.inline_password.is_some()
        {
            Some("a password")
        } else {
            None
        };
        if let Some(what) = needs_url {
            return Err(problem(
                &at.key("url"),
                format!(
                    "{what} needs a `url`: without one the store is the SQLite file in data_dir"
                ),
            ));
        }
        return Ok(());
    };
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(problem(
            &at.key("url"),
            format!(
                "`{}:` is not a store xsigate knows: give a `postgres://` URL, or no `url` for \
                 the SQLite file in data_dir",
                url.scheme()
            ),
        ));
    }
    if url.password().is_some() {
        return Err(problem(
            &at.key("url"),
            "secrets are never written inline: take the password out of the URL and use \
             `password_env` or `password_file`",
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(problem(&at.key("url"), "needs the database's host"));
    }
    // One place says how the connection is protected: libpq's `ssl*` parameters in the URL
    // would silently compete with `tls`.
    if let Some((name, _)) = url.query_pairs().find(|(name, _)| name.starts_with("ssl")) {
        return Err(problem(
            &at.key("url"),
            format!("`{name}` is not read from the URL: TLS is set by `tls` and `ca_file`"),
        ));
    }
    if let Some(ca_file) = &mut store.ca_file {
        if store.tls == StoreTls::Off {
            return Err(problem(
                &at.key("ca_file"),
                "trusts a certificate for TLS, which `tls = \"off\"` turns off",
            ));
        }
        check_ca_file(ca_file, &at.key("ca_file"), base_dir)?;
    }
    if store.max_connections == 0 {
        return Err(problem(
            &at.key("max_connections"),
            "must be greater than zero",
        ));
    }
    if store.inline_password.is_some()
        || store.password_env.is_some()
        || store.password_file.is_some()
    {
        store.password = Some(resolve_password(
            store.inline_password.is_some(),
            store.password_env.as_deref(),
            store.password_file.as_deref(),
            at,
            base_dir,
        )?);
    }
    Ok(())
}

/// Resolves a PEM bundle's path against the config's folder and checks that it holds a
/// certificate.
fn check_ca_file(ca_file: &mut PathBuf, at: &KeyPath, base_dir: &Path) -> Checked {
    *ca_file = relative_to(base_dir, ca_file);
    let contents = check_readable(ca_file, at)?;
    if !contents
        .windows(27)
        .any(|w| w == b"-----BEGIN CERTIFICATE-----")
    {
        return Err(problem(at, "contains no PEM certificate"));
    }
    Ok(())
}

fn validate_smtp(smtp: &mut SmtpConfig, at: &KeyPath, base_dir: &Path) -> Checked {
    if smtp.host.trim().is_empty() {
        return Err(problem(&at.key("host"), "must not be empty"));
    }
    let loopback = smtp.host == "localhost"
        || smtp
            .host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if smtp.security == SmtpSecurity::None && !loopback {
        return Err(problem(
            &at.key("security"),
            "mail carries reset links: `none` is allowed only for a relay on this machine; use \
             `starttls` or `tls`",
        ));
    }
    if smtp.from.parse::<lettre::message::Mailbox>().is_err() {
        return Err(problem(
            &at.key("from"),
            format!("`{}` is not a mail address", smtp.from),
        ));
    }
    if smtp.timeout_ms == 0 {
        return Err(problem(&at.key("timeout_ms"), "must be greater than zero"));
    }
    match &smtp.user {
        Some(user) if user.trim().is_empty() => Err(problem(&at.key("user"), "must not be empty")),
        Some(_) => {
            smtp.password = Some(resolve_password(
                smtp.inline_password.is_some(),
                smtp.password_env.as_deref(),
                smtp.password_file.as_deref(),
                at,
                base_dir,
            )?);
            Ok(())
        }
        None if smtp.inline_password.is_some()
            || smtp.password_env.is_some()
            || smtp.password_file.is_some() =>
        {
            Err(problem(&at.key("user"), "a password needs a `user`"))
        }
        None => Ok(()),
    }
}

fn check_named_urls(urls: &BTreeMap<String, url::Url>, at: &KeyPath, what: &str) -> Checked {
    for (name, url) in urls {
        let here = at.key(name);
        check_identifier(name, &here, what)?;
        check_base_url(url, &here)?;
    }
    Ok(())
}

/// An upstream base URL: http or https, a host, no credentials, query or fragment.
fn check_base_url(url: &url::Url, at: &KeyPath) -> Checked {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(problem(
            at,
            format!("scheme must be http or https, not `{}`", url.scheme()),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(problem(at, "URL has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(problem(at, "credentials are never written into URLs"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(problem(at, "URL must not have a query or fragment"));
    }
    Ok(())
}

fn check_origin(origin: &url::Url, at: &KeyPath) -> Checked {
    check_base_url(origin, at)?;
    if origin.path() != "/" {
        return Err(problem(
            at,
            "an origin is scheme, host and port only (no path)",
        ));
    }
    Ok(())
}

/// Provider, plugin, service and applet names appear in URLs, metric labels and logs.
fn check_identifier(name: &str, at: &KeyPath, what: &str) -> Checked {
    let valid = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
        && name.as_bytes()[0].is_ascii_alphanumeric();
    if valid {
        Ok(())
    } else {
        Err(problem(
            at,
            format!(
                "{what} `{name}` must be 1-63 of a-z, 0-9, `-`, `_`, starting with a letter or digit"
            ),
        ))
    }
}

fn check_domain(domain: &str, at: &KeyPath) -> Checked {
    let valid = !domain.is_empty()
        && domain.len() <= 253
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        });
    if valid {
        Ok(())
    } else {
        Err(problem(
            at,
            format!("`{domain}` is not a lower-case domain name"),
        ))
    }
}

fn check_readable(path: &Path, at: &KeyPath) -> Checked<Vec<u8>> {
    std::fs::read(path).map_err(|e| problem(at, format!("cannot read {}: {e}", path.display())))
}

/// A plugin's `*_file` keys, at any depth of its `config` table, name files the way the host's
/// own keys do: relative to the configuration file. Plugins see absolute paths, so that no
/// plugin depends on the directory the gateway was started from.
fn files_relative_to(base_dir: &Path, table: &mut serde_json::Map<String, serde_json::Value>) {
    for (key, value) in table.iter_mut() {
        match value {
            serde_json::Value::String(path) if key.ends_with("_file") => {
                *path = relative_to(base_dir, Path::new(path.as_str()))
                    .to_string_lossy()
                    .into_owned();
            }
            serde_json::Value::Object(inner) => files_relative_to(base_dir, inner),
            _ => {}
        }
    }
}

fn relative_to(base_dir: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}
