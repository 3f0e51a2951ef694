//! The login API (`/api/access/services/…`) of the real xsigate, with the idp-broadsoft plugin,
//! in front of the XSI simulator.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use serde_json::{Value, json};
use xsigate_tests::{Gateway, client, plugin_library, provider_for_simulator};

const ALICE: &str = "alice@acme.example";

async fn simulator() -> Arc<xsi_sim::Simulator> {
    let seed: xsi_sim::seed::Seed = toml::from_str(
        r#"
        [[users]]
        user_id = "alice@acme.example"
        password = "alice-pw"
        service_provider = "acme"
        group = "sales"

        [[users]]
        user_id = "bob@acme.example"
        password = "bob-pw"
        service_provider = "acme"
        group = "sales"
        "#,
    )
    .unwrap();
    xsi_sim::Simulator::start(seed).await.unwrap()
}

async fn gateway(sim: &xsi_sim::Simulator) -> Gateway {
    gateway_with(sim, "").await
}

/// A gateway with idp-broadsoft, and the fixture plugin consuming `fixture_topic` if given.
async fn gateway_with(sim: &xsi_sim::Simulator, fixture_topic: &str) -> Gateway {
    let mut plugins = format!(
        "[[plugins]]\nname = \"broadsoft\"\npath = \"{}\"\n",
        plugin_library("xsigate-idp-broadsoft").display()
    );
    let mut names = "\"broadsoft\"".to_owned();
    if !fixture_topic.is_empty() {
        plugins.push_str(&format!(
            "[[plugins]]\nname = \"fixture\"\npath = \"{}\"\nconfig = {{ topic = \"{fixture_topic}\" }}\n",
            plugin_library("xsigate-fixture-host-services").display()
        ));
        names.push_str(", \"fixture\"");
    }
    let provider = provider_for_simulator(
        "acme",
        &["acme.example"],
        sim,
        &format!("plugins = [{names}]"),
    );
    let mut gateway = Gateway::start(&format!("{plugins}{provider}")).await;
    gateway.wait_for("/readyz", 200).await;
    gateway
}

async fn post(gateway: &Gateway, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(gateway.url(path))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn login(gateway: &Gateway, user: &str, password: &str) -> reqwest::Response {
    post(
        gateway,
        "/api/access/services/idp/broadsoft",
        &json!({ "user": user, "password": password }),
    )
    .await
}

/// The error code of a JSON error answer.
async fn code(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["error"]["code"].as_str().unwrap_or("").to_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ztp_offers_options_from_configuration_alone() {
    let sim = simulator().await;
    let gateway = gateway(&sim).await;
    let ztp = |query: &str| {
        let body = json!({ "query": query });
        let gateway = &gateway;
        async move {
            let response = post(gateway, "/api/access/services/ztp", &body).await;
            assert_eq!(response.status(), 200);
            response.json::<Value>().await.unwrap()
        }
    };
    let known = ztp(ALICE).await;
    assert_eq!(known["options"][0]["method"], "broadsoft", "{known}");
    assert_eq!(known["options"][0]["sign_in"], "password", "{known}");
    assert_eq!(known["password_reset"], false);
    // An account that does not exist gets the same answer as one that does.
    let made_up = ztp("nobody@acme.example").await;
    assert_eq!(made_up["options"][0]["method"], "broadsoft");
    assert_eq!(made_up["options"].as_array().unwrap().len(), 1);
    assert_eq!(ztp("someone@elsewhere.example").await["options"], json!([]));
    assert_eq!(ztp("2025550101").await["options"], json!([]));

    assert_eq!(
        code(post(&gateway, "/api/access/services/ztp", &json!({ "nope": 1 })).await).await,
        (400, "bad_request".to_owned())
    );
    let get = client()
        .get(gateway.url("/api/access/services/ztp"))
        .send()
        .await
        .unwrap();
    assert_eq!(code(get).await, (405, "method_not_allowed".to_owned()));
    let large = client()
        .post(gateway.url("/api/access/services/ztp"))
        .body(vec![b' '; 64 * 1024])
        .send()
        .await
        .unwrap();
    assert_eq!(code(large).await, (413, "payload_too_large".to_owned()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_login_opens_a_session_that_survives_a_restart_and_ends_at_logout() {
    let sim = simulator().await;
    let mut gateway = gateway_with(&sim, "session.ended").await;

    let response = login(&gateway, ALICE, "alice-pw").await;
    assert_eq!(response.status(), 200);
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("xsigate_session="), "{cookie}");
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(cookie.contains(attribute), "{cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let body: Value = response.json().await.unwrap();
    let unique_id = body["unique_id"].as_str().unwrap().to_owned();
    assert_eq!(unique_id.len(), 32);
    assert!(
        !body.to_string().contains("alice"),
        "no userId leaves: {body}"
    );
    assert_eq!(body["level"], "user");
    let csrf = body["csrf_token"].as_str().unwrap().to_owned();
    let token = cookie.split(';').next().unwrap().to_owned();

    let session = |gateway: &Gateway| {
        let request = client()
            .get(gateway.url("/api/access/services/session"))
            .header("cookie", token.clone());
        async move { request.send().await.unwrap() }
    };
    let current: Value = session(&gateway).await.json().await.unwrap();
    assert_eq!(current["unique_id"], unique_id.as_str());

    // The same person logging in again keeps the same uniqueId.
    let again: Value = login(&gateway, "Alice@acme.example", "alice-pw")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(again["unique_id"], unique_id.as_str());

    assert_eq!(
        gateway
            .metric(
                "xsigate_logins_total{method=\"broadsoft\",provider=\"acme\",result=\"accepted\"}"
            )
            .await,
        Some(2.0)
    );

    gateway
        .wait_metric("xsigate_sessions_active", |v| v >= 1.0)
        .await;

    // Sessions live in the store: a new process (graceful upgrade) still knows this one.
    gateway.upgrade().await;
    let current: Value = session(&gateway).await.json().await.unwrap();
    assert_eq!(current["unique_id"], unique_id.as_str());

    // The store holds no password, session token or CSRF token.
    let mut stored = Vec::new();
    for entry in std::fs::read_dir(gateway.dir().join("data")).unwrap() {
        let path = entry.unwrap().path();
        if path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("xsigate.sqlite")
        {
            stored.extend(std::fs::read(path).unwrap());
        }
    }
    let contains = |needle: &[u8]| stored.windows(needle.len()).any(|w| w == needle);
    assert!(contains(ALICE.as_bytes()), "the right files were read");
    let value = token.split_once('=').unwrap().1;
    for secret in ["alice-pw", value, csrf.as_str()] {
        assert!(!contains(secret.as_bytes()), "{secret} is stored in clear");
    }

    // Logout needs the CSRF token.
    let forged = client()
        .post(gateway.url("/api/access/services/logout"))
        .header("cookie", token.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(code(forged).await, (403, "csrf_token_invalid".to_owned()));
    assert_eq!(session(&gateway).await.status(), 200);
    let logout = client()
        .post(gateway.url("/api/access/services/logout"))
        .header("cookie", token.clone())
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 200);
    assert!(
        logout.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    assert_eq!(
        code(session(&gateway).await).await,
        (401, "not_logged_in".to_owned())
    );
    // Plugins hear of the logout (event channels and screen recording stop on it).
    gateway
        .wait_metric(
            "xsigate_plugin_fixture_events_total{topic=\"session.ended\"}",
            |v| v == 1.0,
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_logins_look_alike_and_repeated_ones_are_locked_out() {
    let sim = simulator().await;
    let gateway = gateway(&sim).await;

    let wrong = login(&gateway, ALICE, "nope").await;
    let unknown_user = login(&gateway, "nobody@acme.example", "nope").await;
    let unknown_domain = login(&gateway, "alice@elsewhere.example", "nope").await;
    let strip = |mut body: Value| {
        body["error"]["request_id"] = Value::Null;
        body
    };
    let wrong_body = strip(wrong.json::<Value>().await.unwrap());
    assert_eq!(wrong_body["error"]["code"], "invalid_credentials");
    assert_eq!(strip(unknown_user.json().await.unwrap()), wrong_body);
    assert_eq!(strip(unknown_domain.json().await.unwrap()), wrong_body);

    // One more failure for alice (four in all from this client): the fifth locks.
    assert_eq!(code(login(&gateway, ALICE, "nope").await).await.0, 401);
    let locked = login(&gateway, ALICE, "nope").await;
    assert_eq!(locked.status(), 429);
    let retry_after: u64 = locked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    // Locked before any credential is checked: the right password is refused too, and the
    // XSP never sees it.
    // (Health checks keep arriving meanwhile; they are not logins.)
    let logins_seen = || {
        sim.platform()
            .requests()
            .iter()
            .filter(|r| !r.path.ends_with("/versions"))
            .count()
    };
    let before = logins_seen();
    assert_eq!(
        code(login(&gateway, ALICE, "alice-pw").await).await,
        (429, "too_many_attempts".to_owned())
    );
    assert_eq!(logins_seen(), before);
    assert_eq!(
        gateway
            .metric("xsigate_logins_total{method=\"broadsoft\",provider=\"-\",result=\"locked\"}")
            .await,
        Some(1.0)
    );
    // Failures at a provider count under it; an unknown domain under `-`.
    for (provider, count) in [("acme", 4.0), ("-", 1.0)] {
        let series = format!(
            "xsigate_logins_total{{method=\"broadsoft\",provider=\"{provider}\",result=\"rejected\"}}"
        );
        assert_eq!(gateway.metric(&series).await, Some(count), "{series}");
    }
    // The lock itself and the refusal after it.
    assert_eq!(
        gateway
            .metric("xsigate_rate_limited_total{endpoint=\"login\"}")
            .await,
        Some(2.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mailed_link_resets_the_password_once() {
    let seed: xsi_sim::seed::Seed = toml::from_str(
        r#"
        [[users]]
        user_id = "alice@acme.example"
        password = "alice-pw"
        service_provider = "acme"
        group = "sales"
        email = "alice@mail.example"

        [[admins]]
        user_id = "admin@acme.example"
        password = "admin-pw"
        scope = { level = "service_provider", service_provider = "acme" }
        "#,
    )
    .unwrap();
    let sim = xsi_sim::Simulator::start(seed).await.unwrap();
    let smtp = xsigate_tests::SmtpServer::start().await;
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("master"), "admin-pw\n").unwrap();
    let extra = format!(
        "plugins = [\"broadsoft\"]\n\
         master = {{ user = \"admin@acme.example\", password_file = \"{}\" }}\n\
         reset_url = \"https://dialer.acme.example/reset\"\n\
         [providers.acme.smtp]\nhost = \"127.0.0.1\"\nport = {}\nsecurity = \"none\"\n\
         from = \"Acme Dialer <noreply@acme.example>\"\n",
        secrets.path().join("master").display(),
        smtp.port
    );
    let plugin = format!(
        "[[plugins]]\nname = \"broadsoft\"\npath = \"{}\"\n",
        plugin_library("xsigate-idp-broadsoft").display()
    );
    let provider = provider_for_simulator("acme", &["acme.example"], &sim, &extra);
    let mut gateway = Gateway::start(&format!("{plugin}{provider}")).await;
    gateway.wait_for("/readyz", 200).await;
    let gateway = gateway;

    let ztp: Value = post(
        &gateway,
        "/api/access/services/ztp",
        &json!({ "query": ALICE }),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(ztp["password_reset"], true);

    // The same answer for nobody and for alice; only alice gets mail.
    let reset = |user: &str| {
        let body = json!({ "user": user });
        let gateway = &gateway;
        async move { post(gateway, "/api/access/services/reset", &body).await }
    };
    let nobody = reset("nobody@acme.example").await;
    assert_eq!(nobody.status(), 200);
    let nobody: Value = nobody.json().await.unwrap();
    let alice: Value = reset(ALICE).await.json().await.unwrap();
    assert_eq!(nobody, alice);
    let mail = smtp.wait_for(|m| m.contains("END MESSAGE")).await;
    assert!(mail.contains("To: alice@mail.example"), "{mail}");
    // Read it as a mail client would: the long link line comes quoted-printable.
    assert!(
        mail.contains("Content-Transfer-Encoding: quoted-printable"),
        "{mail}"
    );
    let mail = decode_quoted_printable(&mail);
    let token: String = mail
        .split("#token=")
        .nth(1)
        .unwrap()
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert_eq!(token.len(), 43, "{mail}");

    let confirm = |token: &str, password: &str| {
        let body = json!({ "token": token, "password": password });
        let gateway = &gateway;
        async move { post(gateway, "/api/access/services/reset/confirm", &body).await }
    };
    assert_eq!(confirm(&token, "new-pw-1").await.status(), 200);
    assert_eq!(login(&gateway, ALICE, "new-pw-1").await.status(), 200);
    assert_eq!(
        code(login(&gateway, ALICE, "alice-pw").await).await,
        (401, "invalid_credentials".to_owned())
    );
    assert_eq!(
        code(confirm(&token, "new-pw-2").await).await,
        (400, "invalid_reset_token".to_owned()),
        "a link works once"
    );
    assert_eq!(
        code(confirm("not-a-token", "x").await).await,
        (400, "invalid_reset_token".to_owned())
    );

    // Repeated requests are limited (per user and per client address).
    let mut limited = None;
    for _ in 0..10 {
        let response = reset(ALICE).await;
        if response.status() == 429 {
            limited = Some(response);
            break;
        }
        assert_eq!(response.status(), 200);
    }
    let limited = limited.expect("reset requests are rate-limited");
    assert!(limited.headers().contains_key("retry-after"));

    let received = smtp.received();
    for to in received.lines().filter(|l| l.starts_with("To: ")) {
        assert_eq!(to, "To: alice@mail.example");
    }
    gateway
        .wait_metric(
            "xsigate_password_resets_total{provider=\"acme\",result=\"completed\"}",
            |v| v == 1.0,
        )
        .await;
}

/// Quoted-printable (RFC 2045) as a mail client decodes it: soft line breaks removed, `=XX`
/// turned back into bytes.
fn decode_quoted_printable(text: &str) -> String {
    let joined = text.replace("=\r\n", "").replace("=\n", "");
    let bytes = joined.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'=', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The OpenAPI document of this API, kept true: it names every endpoint the router knows, and
/// each documented example, sent to a live gateway, gets a documented status with a body that
/// has the documented fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_api() {
    use xsigate::access::Endpoint;
    use xsigate::http::route::{Route, classify};

    let document: Value = serde_json::from_str(
        &std::fs::read_to_string(xsigate_tests::repo_root().join("docs/access-api.openapi.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(document["openapi"], "3.1.0");
    let paths = document["paths"].as_object().unwrap();
    let concrete = |path: &str| {
        path.replace("{method}", "broadsoft")
            .replace("{name}", "crm")
    };

    // Adding an endpoint without documenting it breaks this match, and so the build.
    let documented = |endpoint: Endpoint| match endpoint {
        Endpoint::Ztp => "/api/access/services/ztp",
        Endpoint::Login { .. } => "/api/access/services/idp/{method}",
        Endpoint::LoginCallback { .. } => "/api/access/services/idp/{method}/callback",
        Endpoint::LoginMetadata { .. } => "/api/access/services/idp/{method}/metadata",
        Endpoint::LoginResult => "/api/access/services/session/login",
        Endpoint::Logout => "/api/access/services/logout",
        Endpoint::Session => "/api/access/services/session",
        Endpoint::ResetRequest => "/api/access/services/reset",
        Endpoint::ResetConfirm => "/api/access/services/reset/confirm",
        Endpoint::AppletRedirect { .. } => "/api/access/services/applets/{name}",
        Endpoint::Keys => "/api/access/services/keys",
    };
    let endpoints = [
        Endpoint::Ztp,
        Endpoint::Login {
            method: "broadsoft".to_owned(),
        },
        Endpoint::LoginCallback {
            method: "broadsoft".to_owned(),
        },
        Endpoint::LoginMetadata {
            method: "broadsoft".to_owned(),
        },
        Endpoint::LoginResult,
        Endpoint::Logout,
        Endpoint::Session,
        Endpoint::ResetRequest,
        Endpoint::ResetConfirm,
        Endpoint::AppletRedirect {
            name: "crm".to_owned(),
        },
        Endpoint::Keys,
    ];
    assert_eq!(
        paths.len(),
        endpoints.len(),
        "every documented path is an endpoint"
    );
    for endpoint in endpoints {
        let path = documented(endpoint.clone());
        assert!(paths.contains_key(path), "{path} is not documented");
        assert_eq!(classify(&concrete(path)), Route::Access(endpoint), "{path}");
    }

    let resolve = |value: &Value| -> Value {
        let mut value = value.clone();
        while let Some(reference) = value["$ref"].as_str() {
            let pointer = reference.trim_start_matches('#');
            value = document.pointer(pointer).unwrap().clone();
        }
        value
    };
    let sim = simulator().await;
    let gateway = gateway(&sim).await;
    for (path, operations) in paths {
        for (method, operation) in operations.as_object().unwrap() {
            let url = gateway.url(&concrete(path));
            let request = match method.as_str() {
                "get" => client().get(url),
                "post" => client().post(url),
                other => panic!("undocumented method {other}"),
            };
            let example = &operation["requestBody"]["content"]["application/json"]["example"];
            let request = if example.is_null() {
                request
            } else {
                request.json(example)
            };
            let response = request.send().await.unwrap();
            let status = response.status().as_u16().to_string();
            let documented = resolve(&operation["responses"][&status]);
            assert!(
                !documented.is_null(),
                "{method} {path} answered {status}, which is not documented"
            );
            let body: Value = response.json().await.unwrap();
            let schema = resolve(&documented["content"]["application/json"]["schema"]);
            // A `oneOf` answer fits one of its alternatives.
            let alternatives = match schema["oneOf"].as_array() {
                Some(alternatives) => alternatives.iter().map(&resolve).collect(),
                None => vec![schema],
            };
            let fits = |schema: &Value| {
                schema["required"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .all(|field| !body[field.as_str().unwrap()].is_null())
            };
            assert!(
                alternatives.iter().any(fits),
                "{method} {path} {status}: {body} lacks the required fields of {alternatives:?}"
            );
        }
    }
}

/// A service provider with users in two groups, several sharing an e-mail address or an
/// extension, and administrators at every level.
const DIRECTORY_SEED: &str = r#"
    [[users]]
    user_id = "alice@acme.example"
    password = "alice-pw"
    service_provider = "acme"
    group = "sales"
    first_name = "Alice"
    last_name = "Able"
    number = "+12025550101"
    extension = "0101"
    email = "alice@mail.example"

    [[users]]
    user_id = "bob@acme.example"
    password = "bob-pw"
    service_provider = "acme"
    group = "support"
    number = "+12025550102"
    extension = "0101"
    email = "bob@mail.example"

    [[users]]
    user_id = "dave@acme.example"
    password = "dave-pw"
    service_provider = "acme"
    group = "sales"
    first_name = "Dave"
    last_name = "Desk"
    email = "Dave@Mail.example"

    [[users]]
    user_id = "dave.soft@acme.example"
    password = "dave-pw"
    service_provider = "acme"
    group = "support"
    first_name = "Dave"
    last_name = "Soft"
    email = "dave@mail.example"

    [[users]]
    user_id = "dave.old@acme.example"
    password = "another-pw"
    service_provider = "acme"
    group = "sales"
    email = "dave@mail.example"

    [[users]]
    user_id = "erin@acme.example"
    password = "erin-pw"
    service_provider = "acme"
    group = "sales"
    email = "erin@elsewhere.example"

    [[admins]]
    user_id = "sales-admin@acme.example"
    password = "sales-admin-pw"
    scope = { level = "group", service_provider = "acme", group = "sales" }

    [[admins]]
    user_id = "acme-admin@acme.example"
    password = "acme-admin-pw"
    scope = { level = "service_provider", service_provider = "acme" }

    [[admins]]
    user_id = "root@acme.example"
    password = "root-pw"
    scope = { level = "system" }
"#;

/// Provider `acme` with master credentials and all three login plugins, identified also by
/// e-mail domain `mail.example` and number prefix `+1202`; provider `beta` with BroadSoft login
/// only and no master credentials.
async fn directory_gateway(sim: &xsi_sim::Simulator) -> (Gateway, tempfile::TempDir) {
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("master"), "acme-admin-pw\n").unwrap();
    let mut plugins = String::new();
    for (name, config) in [
        ("broadsoft", ""),
        (
            "email",
            "config = { anchor_users = [\"alice@acme.example\"] }\n",
        ),
        (
            "phone",
            "config = { anchor_users = [\"alice@acme.example\"] }\n",
        ),
    ] {
        plugins.push_str(&format!(
            "[[plugins]]\nname = \"{name}\"\npath = \"{}\"\n{config}",
            plugin_library(&format!("xsigate-idp-{name}")).display()
        ));
    }
    let acme = provider_for_simulator(
        "acme",
        &["acme.example"],
        sim,
        &format!(
            "email_domains = [\"mail.example\"]\nnumber_prefixes = [\"+1202\"]\n\
             plugins = [\"broadsoft\", \"email\", \"phone\"]\n\
             master = {{ user = \"acme-admin@acme.example\", password_file = \"{}\" }}\n",
            secrets.path().join("master").display()
        ),
    );
    let beta = provider_for_simulator("beta", &["beta.example"], sim, "plugins = [\"broadsoft\"]");
    let mut gateway = Gateway::start(&format!("{plugins}{acme}{beta}")).await;
    gateway.wait_for("/readyz", 200).await;
    (gateway, secrets)
}

async fn login_with(gateway: &Gateway, method: &str, body: Value) -> (u16, Value) {
    let response = post(
        gateway,
        &format!("/api/access/services/idp/{method}"),
        &body,
    )
    .await;
    let status = response.status().as_u16();
    let mut body: Value = response.json().await.unwrap();
    if let Some(error) = body.get_mut("error") {
        error["request_id"] = Value::Null;
    }
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ztp_finds_the_provider_and_offers_what_its_configuration_allows() {
    let sim = xsi_sim::Simulator::start(toml::from_str(DIRECTORY_SEED).unwrap())
        .await
        .unwrap();
    let (gateway, _secrets) = directory_gateway(&sim).await;
    let ztp = |query: &str| {
        let body = json!({ "query": query });
        let gateway = &gateway;
        async move {
            let answer: Value = post(gateway, "/api/access/services/ztp", &body)
                .await
                .json()
                .await
                .unwrap();
            let methods: Vec<String> = answer["options"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["method"].as_str().unwrap().to_owned())
                .collect();
            (methods, answer)
        }
    };
    // A user id of acme: BroadSoft login at any level, and the address as an e-mail login.
    let (methods, answer) = ztp(ALICE).await;
    assert_eq!(methods, ["broadsoft", "email"], "{answer}");
    assert_eq!(
        answer["options"][0]["details"]["levels"],
        json!(["user", "group", "service_provider", "system"])
    );
    // Without master credentials there is nothing to look up with: BroadSoft login only.
    assert_eq!(ztp("zoe@beta.example").await.0, ["broadsoft"]);
    // An e-mail domain and a number prefix of acme's configuration.
    assert_eq!(ztp("Someone@Mail.example").await.0, ["email"]);
    assert_eq!(ztp("+1 (202) 555-0101").await.0, ["phone"]);
    // Claimed by no configuration: the reverse lookups of every provider that has them, the
    // same for an address that exists (erin's) and one that does not.
    let (unclaimed, answer) = ztp("erin@elsewhere.example").await;
    assert_eq!(unclaimed, ["email"]);
    assert_eq!(ztp("nobody@nowhere.example").await.1, answer);
    assert_eq!(ztp("0101").await.0, ["phone"]);
    assert_eq!(ztp("just words").await.0, Vec::<String>::new());
    // Nothing was looked up: the XSPs saw health checks only.
    assert!(
        sim.platform()
            .requests()
            .iter()
            .all(|r| r.path.ends_with("/versions")),
        "{:?}",
        sim.platform().requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadsoft_login_works_at_every_level_within_its_scope() {
    let sim = xsi_sim::Simulator::start(toml::from_str(DIRECTORY_SEED).unwrap())
        .await
        .unwrap();
    let (gateway, _secrets) = directory_gateway(&sim).await;
    let level_of = |body: &Value| body["level"].as_str().unwrap_or("").to_owned();
    for (user, password, params, level) in [
        ("alice@acme.example", "alice-pw", json!({}), "user"),
        (
            "sales-admin@acme.example",
            "sales-admin-pw",
            json!({ "level": "group", "service_provider": "acme", "group": "sales" }),
            "group",
        ),
        (
            "acme-admin@acme.example",
            "acme-admin-pw",
            json!({ "level": "service_provider", "service_provider": "acme" }),
            "service_provider",
        ),
        (
            "root@acme.example",
            "root-pw",
            json!({ "level": "system" }),
            "system",
        ),
    ] {
        let (status, body) = login_with(
            &gateway,
            "broadsoft",
            json!({ "user": user, "password": password, "params": params }),
        )
        .await;
        assert_eq!(
            (status, level_of(&body)),
            (200, level.to_owned()),
            "{user}: {body}"
        );
    }
    // Outside the administrator's scope, a user claiming a level, a level without its scope:
    // each the same answer as a wrong password (whose body is every failure's, as
    // `failed_logins_look_alike_and_repeated_ones_are_locked_out` shows). Four failures: a
    // fifth from this client would lock it.
    let mut wrong_password = None;
    for (user, password, params) in [
        (
            "sales-admin@acme.example",
            "sales-admin-pw",
            json!({ "level": "group", "service_provider": "acme", "group": "support" }),
        ),
        (
            "sales-admin@acme.example",
            "sales-admin-pw",
            json!({ "level": "service_provider", "service_provider": "acme" }),
        ),
        (
            "alice@acme.example",
            "alice-pw",
            json!({ "level": "group", "service_provider": "acme", "group": "sales" }),
        ),
        (
            "acme-admin@acme.example",
            "acme-admin-pw",
            json!({ "level": "group" }),
        ),
    ] {
        let refused = login_with(
            &gateway,
            "broadsoft",
            json!({ "user": user, "password": password, "params": params }),
        )
        .await;
        assert_eq!(refused.0, 401, "{user} {params}");
        assert_eq!(refused.1["error"]["code"], "invalid_credentials");
        let wrong_password = wrong_password.get_or_insert_with(|| refused.clone());
        assert_eq!(&refused, wrong_password, "{user} {params}");
    }
    // The scope was proven by the XSP: the out-of-scope claim reached it and was refused there.
    assert!(
        sim.platform().requests().iter().any(|r| {
            r.path.ends_with("/subscription")
                && r.auth_user.as_deref() == Some("sales-admin@acme.example")
                && r.status == 403
        }),
        "{:?}",
        sim.platform().requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn e_mail_and_phone_lookups_handle_none_one_and_several_matches() {
    let sim = xsi_sim::Simulator::start(toml::from_str(DIRECTORY_SEED).unwrap())
        .await
        .unwrap();
    let (gateway, _secrets) = directory_gateway(&sim).await;
    let attempt =
        |method: &'static str, user: &'static str, password: &'static str, params: Value| {
            let gateway = &gateway;
            async move {
                login_with(
                    gateway,
                    method,
                    json!({ "user": user, "password": password, "params": params }),
                )
                .await
            }
        };
    let (_, wrong_password) = attempt("email", "alice@mail.example", "nope", json!({})).await;
    assert_eq!(wrong_password["error"]["code"], "invalid_credentials");

    // One match, whatever the case of the address.
    for address in ["alice@mail.example", "ALICE@Mail.Example"] {
        let (status, body) = attempt("email", address, "alice-pw", json!({})).await;
        assert_eq!(status, 200, "{address}: {body}");
        assert_eq!(body["level"], "user");
    }
    // No match: the same answer as a wrong password.
    assert_eq!(
        attempt("email", "nobody@mail.example", "alice-pw", json!({})).await,
        (401, wrong_password.clone())
    );
    // Several: a choice between the accounts the password opens, and only those.
    let (status, body) = attempt("email", "dave@mail.example", "dave-pw", json!({})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["choose"],
        json!([
            { "user_id": "dave@acme.example", "label": "Dave Desk (sales)" },
            { "user_id": "dave.soft@acme.example", "label": "Dave Soft (support)" },
        ]),
        "{body}"
    );
    assert!(
        body.get("csrf_token").is_none(),
        "no session before the choice"
    );
    let (status, picked) = attempt(
        "email",
        "dave@mail.example",
        "dave-pw",
        json!({ "user_id": "dave.soft@acme.example" }),
    )
    .await;
    assert_eq!(status, 200, "{picked}");
    assert!(picked["csrf_token"].is_string());
    // Picking an account the password does not open is a failed login.
    assert_eq!(
        attempt(
            "email",
            "dave@mail.example",
            "dave-pw",
            json!({ "user_id": "dave.old@acme.example" })
        )
        .await,
        (401, wrong_password.clone())
    );
    // An address no configuration claims is searched at every provider that can look it up.
    assert_eq!(
        attempt("email", "erin@elsewhere.example", "erin-pw", json!({}))
            .await
            .0,
        200
    );

    // Phone numbers as people type them, and extensions: alice and bob share extension 0101,
    // and only alice's account opens with her password.
    for number in ["+1 (202) 555-0101", "202.555.0101", "0101"] {
        let (status, body) = attempt("phone", number, "alice-pw", json!({})).await;
        assert_eq!(status, 200, "{number}: {body}");
        assert!(body["csrf_token"].is_string(), "{number}: {body}");
    }
    assert_eq!(
        attempt("phone", "+1 202 555 0199", "alice-pw", json!({})).await,
        (401, wrong_password)
    );

    // The directory was searched with the master credentials, the password tried only on the
    // matches' own profiles.
    let requests = sim.platform().requests();
    assert!(requests.iter().any(|r| {
        r.path.ends_with("/directories/Enterprise")
            && r.auth_user.as_deref() == Some("acme-admin@acme.example")
    }));
    assert!(!requests.iter().any(|r| {
        r.path.contains("/directories/")
            && r.auth_user.as_deref() != Some("acme-admin@acme.example")
    }));
    for (series, count) in [
        ("xsigate_plugin_email_lookups_total{result=\"none\"}", 1.0),
        (
            "xsigate_plugin_email_lookups_total{result=\"several\"}",
            3.0,
        ),
        (
            "xsigate_plugin_phone_lookups_total{result=\"several\"}",
            1.0,
        ),
        (
            "xsigate_logins_total{method=\"email\",provider=\"acme\",result=\"choose\"}",
            1.0,
        ),
    ] {
        assert_eq!(gateway.metric(series).await, Some(count), "{series}");
    }
}
