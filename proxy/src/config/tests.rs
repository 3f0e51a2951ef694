use std::path::Path;

use super::*;

const VALID: &str = r#"
[providers.acme]
domains = ["acme.example"]
xsp = ["http://127.0.0.1:1"]
"#;

fn load_text(text: &str, dir: &Path) -> Result<Config, ConfigError> {
    load(&Source {
        name: "broken.toml".to_owned(),
        text,
        base_dir: dir,
    })
}

#[test]
fn minimal_config_loads_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let config = load_text(VALID, dir.path()).unwrap();
    assert_eq!(config.server.listeners.len(), 1);
    assert_eq!(config.server.data_dir, dir.path().join("./data"));
}

#[test]
fn shipped_file_is_valid() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let config = load_file(&root.join("providers.toml")).unwrap();
    assert_eq!(config.providers["demo"].xsp.len(), 2);
    assert!(
        !config.providers["demo"]
            .master
            .as_ref()
            .unwrap()
            .password
            .is_empty()
    );
}

/// Each broken configuration must be rejected with the right line, column, key path and reason.
#[test]
fn broken_configs_name_file_line_column_and_key() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("master.pw"), "s3cret\n").unwrap();

    struct Case {
        name: &'static str,
        text: &'static str,
        at: &'static str,
        key: &'static str,
        says: &'static str,
    }
    let cases = [
        Case {
            name: "syntax error",
            text: "[providers.acme\ndomains = []\n",
            at: "1:16",
            key: "",
            says: "",
        },
        Case {
            name: "unknown top-level key",
            text: "listen = \"0.0.0.0:80\"\n[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\n",
            at: "1:1",
            key: "listen",
            says: "unknown field `listen`",
        },
        Case {
            name: "unknown provider key",
            text: "[providers.acme]\ndomains = [\"a.example\"]\nxsps = [\"http://x\"]\n",
            at: "3:1",
            key: "providers.acme.xsps",
            says: "unknown field `xsps`",
        },
        Case {
            name: "wrong type",
            text: "[providers.acme]\ndomains = \"a.example\"\nxsp = [\"http://x\"]\n",
            at: "2:11",
            key: "providers.acme.domains",
            says: "invalid type",
        },
        Case {
            name: "missing required key",
            text: "[providers.acme]\ndomains = [\"a.example\"]\n",
            at: "1:1",
            key: "providers.acme",
            says: "missing field `xsp`",
        },
        Case {
            name: "malformed URL",
            text: "[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://ok\", \"not a url\"]\n",
            at: "3:21",
            key: "providers.acme.xsp[1]",
            says: "relative URL without a base",
        },
        Case {
            name: "unsupported URL scheme",
            text: "[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"ftp://xsp.example\"]\n",
            at: "3:8",
            key: "providers.acme.xsp[0]",
            says: "scheme must be http or https",
        },
        Case {
            name: "credentials in a URL",
            text: "[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"https://u:p@xsp.example\"]\n",
            at: "3:8",
            key: "providers.acme.xsp[0]",
            says: "credentials are never written into URLs",
        },
        Case {
            name: "duplicate domain across providers",
            text: "[providers.a]\ndomains = [\"x.example\"]\nxsp = [\"http://a\"]\n[providers.b]\ndomains = [\"y.example\", \"x.example\"]\nxsp = [\"http://b\"]\n",
            at: "5:25",
            key: "providers.b.domains[1]",
            says: "already belongs to provider `a`",
        },
        Case {
            name: "unreadable secret file",
            text: "[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\nmaster = { user = \"admin\", password_file = \"missing.pw\" }\n",
            at: "4:44",
            key: "providers.acme.master.password_file",
            says: "cannot read",
        },
        Case {
            name: "unset environment variable",
            text: "[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\n[providers.acme.master]\nuser = \"admin\"\npassword_env = \"XSIGATE_TEST_SURELY_UNSET_VARIABLE\"\n",
            at: "6:16",
            key: "providers.acme.master.password_env",
            says: "`XSIGATE_TEST_SURELY_UNSET_VARIABLE` is not set",
        },
        Case {
            name: "inline password",
            text: "[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\n[providers.acme.master]\nuser = \"admin\"\npassword = \"hunter2\"\n",
            at: "6:12",
            key: "providers.acme.master.password",
            says: "never written inline",
        },
        Case {
            name: "number prefix with letters",
            text: "[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\nnumber_prefixes = [\"+1202\", \"1-800\"]\n",
            at: "4:29",
            key: "providers.acme.number_prefixes[1]",
            says: "`1-800` is not a number prefix",
        },
        Case {
            name: "e-mail domain of two providers",
            text: "[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\nemail_domains = [\"acme.com\"]\n[providers.beta]\ndomains = [\"b.example\"]\nxsp = [\"http://y\"]\nemail_domains = [\"acme.com\"]\n",
            at: "8:18",
            key: "providers.beta.email_domains[0]",
            says: "e-mail domain `acme.com` already belongs to provider `acme`",
        },
        Case {
            // XSI-Events settings are the xsi-events plugin's own config table.
            name: "the removed provider events table",
            text: "[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\nevents = { level = \"user\" }\n",
            at: "4:1",
            key: "providers.acme.events",
            says: "unknown field `events`",
        },
        Case {
            name: "invalid listener address",
            text: "[[server.listeners]]\naddress = \"localhost:80\"\n[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\n",
            at: "2:11",
            key: "server.listeners[0].address",
            says: "invalid socket address",
        },
        Case {
            name: "listener address used twice",
            text: "[[server.listeners]]\naddress = \"127.0.0.1:80\"\n[[server.listeners]]\naddress = \"127.0.0.1:80\"\n[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\n",
            at: "4:11",
            key: "server.listeners[1].address",
            says: "is used twice",
        },
        Case {
            name: "metrics on a proxy address",
            text: "[server]\nmetrics = { address = \"127.0.0.1:8080\" }\n[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\n",
            at: "2:23",
            key: "server.metrics.address",
            says: "must not share an address",
        },
        Case {
            name: "provider id with capitals",
            text: "[providers.Acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\n",
            at: "1:1",
            key: "providers.Acme",
            says: "provider id `Acme`",
        },
        Case {
            name: "domain with capitals",
            text: "[providers.acme]\ndomains = [\"Acme.Example\"]\nxsp = [\"http://x\"]\n",
            at: "2:12",
            key: "providers.acme.domains[0]",
            says: "not a lower-case domain name",
        },
        Case {
            name: "unknown plugin reference",
            text: "[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\nplugins = [\"xsi-events\"]\n",
            at: "4:12",
            key: "providers.acme.plugins[0]",
            says: "no [[plugins]] entry is named `xsi-events`",
        },
        Case {
            name: "zero timeout",
            text: "[server.timeouts]\nconnect_ms = 0\n[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\n",
            at: "2:14",
            key: "server.timeouts.connect_ms",
            says: "greater than zero",
        },
        Case {
            name: "negative number",
            text: "[server]\ngrace_period_seconds = -1\n[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\n",
            at: "2:24",
            key: "server.grace_period_seconds",
            says: "invalid value",
        },
        Case {
            name: "CORS origin with a path",
            text: "[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\ncors_origins = [\"https://app.example/login\"]\n",
            at: "4:17",
            key: "providers.acme.cors_origins[0]",
            says: "no path",
        },
        Case {
            name: "no providers",
            text: "[server]\naccess_log = false\n",
            at: "1:1",
            key: "providers",
            says: "at least one provider",
        },
        Case {
            name: "plain SMTP to a remote relay",
            text: "[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\n[providers.acme.smtp]\nhost = \"smtp.acme.example\"\nsecurity = \"none\"\nfrom = \"noreply@acme.example\"\n",
            at: "6:12",
            key: "providers.acme.smtp.security",
            says: "allowed only for a relay on this machine",
        },
        Case {
            name: "SMTP sender that is no address",
            text: "[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\n[providers.acme.smtp]\nhost = \"127.0.0.1\"\nsecurity = \"none\"\nfrom = \"not an address\"\n",
            at: "7:8",
            key: "providers.acme.smtp.from",
            says: "is not a mail address",
        },
        Case {
            name: "inline SMTP password",
            text: "[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\n[providers.acme.smtp]\nhost = \"smtp.acme.example\"\nfrom = \"a@acme.example\"\nuser = \"a@acme.example\"\npassword = \"hunter2\"\n",
            at: "8:12",
            key: "providers.acme.smtp.password",
            says: "never written inline",
        },
        Case {
            name: "SMTP password without a user",
            text: "[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\n[providers.acme.smtp]\nhost = \"smtp.acme.example\"\nfrom = \"a@acme.example\"\npassword_file = \"master.pw\"\n",
            at: "4:1",
            key: "providers.acme.smtp.user",
            says: "a password needs a `user`",
        },
        Case {
            name: "password in the store URL",
            text: "[server.store]\nurl = \"postgres://xsigate:hunter2@db.example/xsigate\"\n[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\n",
            at: "2:7",
            key: "server.store.url",
            says: "never written inline",
        },
        Case {
            name: "store that is not PostgreSQL",
            text: "[server.store]\nurl = \"mysql://xsigate@db.example/xsigate\"\n[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\n",
            at: "2:7",
            key: "server.store.url",
            says: "`mysql:` is not a store xsigate knows",
        },
        Case {
            name: "store password without a URL",
            text: "[server.store]\npassword_env = \"DB_PW\"\n[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\n",
            at: "1:1",
            key: "server.store.url",
            says: "a password needs a `url`",
        },
        Case {
            name: "TLS settings in the store URL",
            text: "[server.store]\nurl = \"postgres://xsigate@db.example/xsigate?sslmode=disable\"\n[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\n",
            at: "2:7",
            key: "server.store.url",
            says: "`sslmode` is not read from the URL",
        },
        Case {
            name: "store TLS mode unknown",
            text: "[server.store]\nurl = \"postgres://xsigate@db.example/xsigate\"\ntls = \"prefer\"\n[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\n",
            at: "3:7",
            key: "server.store.tls",
            says: "unknown variant `prefer`",
        },
        Case {
            name: "store CA with TLS off",
            text: "[server.store]\nurl = \"postgres://xsigate@db.example/xsigate\"\ntls = \"off\"\nca_file = \"ca.pem\"\n[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\n",
            at: "4:11",
            key: "server.store.ca_file",
            says: "which `tls = \"off\"` turns off",
        },
        Case {
            name: "store CA unreadable",
            text: "[server.store]\nurl = \"postgres://xsigate@db.example/xsigate\"\nca_file = \"no-such-ca.pem\"\n[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\n",
            at: "3:11",
            key: "server.store.ca_file",
            says: "cannot read",
        },
        Case {
            name: "lease too short to renew",
            text: "[server.store]\nlease_seconds = 2\n[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\n",
            at: "2:17",
            key: "server.store.lease_seconds",
            says: "must be at least 3",
        },
        Case {
            name: "unreadable TLS certificate",
            text: "[[server.listeners]]\naddress = \"127.0.0.1:8443\"\ntls = { cert_file = \"nope.crt\", key_file = \"nope.key\" }\n[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\n",
            at: "3:21",
            key: "server.listeners[0].tls.cert_file",
            says: "cannot read",
        },
    ];

    let mut failures = Vec::new();
    for case in &cases {
        let error = match load_text(case.text, dir.path()) {
            Ok(_) => {
                failures.push(format!("{}: accepted a broken config", case.name));
                continue;
            }
            Err(e) => e,
        };
        let ConfigError::Invalid {
            file,
            line,
            column,
            key,
            message,
        } = &error
        else {
            failures.push(format!("{}: unexpected error kind: {error}", case.name));
            continue;
        };
        let rendered = error.to_string();
        let matches = file == "broken.toml"
            && format!("{line}:{column}") == case.at
            && key == case.key
            && message.contains(case.says)
            && rendered.starts_with(&format!("broken.toml:{}: ", case.at))
            && !rendered.contains("hunter2");
        if !matches {
            failures.push(format!(
                "{}: expected {} {} `{}`, got: {rendered}",
                case.name, case.at, case.key, case.says
            ));
        }
    }
    assert!(cases.len() >= 15);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn smtp_defaults_to_starttls_and_reads_its_password_by_reference() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("smtp.pw"), "relay-secret\n").unwrap();
    let text = format!(
        "{VALID}[providers.acme.smtp]\nhost = \"smtp.acme.example\"\nfrom = \"Acme <noreply@acme.example>\"\nuser = \"noreply@acme.example\"\npassword_file = \"smtp.pw\"\n"
    );
    let config = load_text(&text, dir.path()).unwrap();
    let smtp = config.providers["acme"].smtp.as_ref().unwrap();
    assert_eq!(smtp.security, SmtpSecurity::Starttls);
    assert_eq!(smtp.password.as_ref().unwrap().expose(), "relay-secret");
}

#[test]
fn password_file_is_read_relative_to_the_config() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("master.pw"), "s3cret\n").unwrap();
    let text = "[providers.acme]\ndomains = [\"a.example\"]\nxsp = [\"http://x\"]\nmaster = { user = \"admin\", password_file = \"master.pw\" }\n";
    let config = load_text(text, dir.path()).unwrap();
    let master = config.providers["acme"].master.as_ref().unwrap();
    assert_eq!(master.password.expose(), "s3cret");
}

#[test]
fn plugin_file_keys_are_relative_to_the_config_like_the_hosts_own() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[[plugins]]\nname = \"firebase\"\npath = \"lib/libfb.so\"\n\
         [plugins.config]\nkey_file = \"keys/k.json\"\nlabel_file_name = \"not a path key\"\n\
         [plugins.config.providers.acme]\nsecret_file = \"s.txt\"\nabsolute_file = \"/etc/x\"\n\
         count_file = 3\n{VALID}"
    );
    let config = load_text(&text, dir.path()).unwrap();
    let plugin = &config.plugins[0];
    let base = dir.path();
    assert_eq!(plugin.path, base.join("lib/libfb.so"));
    assert_eq!(
        plugin.config["key_file"],
        base.join("keys/k.json").to_string_lossy().as_ref()
    );
    assert_eq!(plugin.config["label_file_name"], "not a path key");
    let acme = &plugin.config["providers"]["acme"];
    assert_eq!(
        acme["secret_file"],
        base.join("s.txt").to_string_lossy().as_ref()
    );
    assert_eq!(acme["absolute_file"], "/etc/x");
    assert_eq!(acme["count_file"], 3);
}
