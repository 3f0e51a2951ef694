//! Single sign-on end to end: the gateway with `idp-o365` or `idp-onelogin`, a real OpenID
//! Provider (npm `oidc-provider` shaped as Entra ID or OneLogin, `sim/idp/oidc-provider.mjs`),
//! the simulator as the provider's BroadWorks and its Microsoft Graph or OneLogin API stand-in
//! as the company directory. The test plays the browser over HTTP: it keeps each site's cookies,
//! fills in the identity provider's own login and consent forms, and decides which cookies the
//! callback gets, as an attacker would.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use xsigate_tests::sso::{Dialer, IdpProcess, Jar, chromium_sign_in, location, resolve};
use xsigate_tests::{
    Gateway, client, free_port, plugin_library, provider_for_simulator, repo_root,
};

const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const RETURN_URL: &str = "http://127.0.0.1:5173/";

/// Which identity provider the world signs in with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sso {
    /// `idp-o365`, with oidc-provider shaped as Entra ID and the Graph stand-in.
    Office365,
    /// `idp-onelogin`, with oidc-provider shaped as OneLogin and the OneLogin API stand-in.
    OneLogin,
}

impl Sso {
    fn method(self) -> &'static str {
        match self {
            Self::Office365 => "o365",
            Self::OneLogin => "onelogin",
        }
    }

    fn shape(self) -> String {
        match self {
            Self::Office365 => format!("entra:{TENANT}"),
            Self::OneLogin => format!("onelogin:{ONELOGIN_SUBDOMAIN}"),
        }
    }

    fn issuer_path(self) -> String {
        match self {
            Self::Office365 => format!("/{TENANT}/v2.0"),
            Self::OneLogin => "/oidc/2".to_owned(),
        }
    }
}

const ONELOGIN_SUBDOMAIN: &str = "acme";

/// The identity provider: npm oidc-provider shaped as `sso`.
async fn start_idp(sso: Sso, port: u16, redirect_uri: &str) -> IdpProcess {
    let mut command = Command::new("node");
    command
        .arg(repo_root().join("sim/idp/oidc-provider.mjs"))
        .args([
            &sso.shape(),
            &port.to_string(),
            "xsigate",
            "client-secret",
            redirect_uri,
        ])
        .env("OIDC_TEST_CONTROLS", "1")
        .current_dir(repo_root())
        .stderr(Stdio::null());
    IdpProcess::start(command, "the identity provider (node)").await
}

/// The provider's world: alice and four members have an address of their own; bob and carol
/// share one; nobody has `nobody@mail.example`.
async fn simulator() -> Arc<xsi_sim::Simulator> {
    let seed: xsi_sim::seed::Seed = toml::from_str(
        r#"
        [[users]]
        user_id = "alice@acme.example"
        password = "alice-pw"
        service_provider = "acme"
        group = "sales"
        email = "alice@mail.example"

        [[users]]
        user_id = "bob@acme.example"
        password = "bob-pw"
        service_provider = "acme"
        group = "sales"
        email = "shared@mail.example"

        [[users]]
        user_id = "carol@acme.example"
        password = "carol-pw"
        service_provider = "acme"
        group = "sales"
        email = "shared@mail.example"

        [[users]]
        user_id = "member0@acme.example"
        password = "member-pw"
        service_provider = "acme"
        group = "sales"
        email = "member0@mail.example"

        [[users]]
        user_id = "member1@acme.example"
        password = "member-pw"
        service_provider = "acme"
        group = "sales"
        email = "member1@mail.example"

        [[users]]
        user_id = "member2@acme.example"
        password = "member-pw"
        service_provider = "acme"
        group = "sales"
        email = "member2@mail.example"

        [[users]]
        user_id = "member3@acme.example"
        password = "member-pw"
        service_provider = "acme"
        group = "sales"
        email = "member3@mail.example"

        [[admins]]
        user_id = "admin@acme.example"
        password = "admin-pw"
        scope = { level = "service_provider", service_provider = "acme" }
        "#,
    )
    .unwrap();
    xsi_sim::Simulator::start(seed).await.unwrap()
}

/// The gateway, its identity provider and the simulator, kept alive together.
struct World {
    gateway: Gateway,
    sso: Sso,
    idp: Option<IdpProcess>,
    /// The company directory Graph or OneLogin's API serves.
    directories: Arc<xsi_sim::directories::Directories>,
    /// The identity provider's own root, for its test controls.
    idp_root: String,
    sim: Arc<xsi_sim::Simulator>,
    _secrets: tempfile::TempDir,
}

/// The company directory: alice, and the address bob and carol share, but not `nobody@`.
fn directory_users() -> Vec<xsi_sim::directories::DirectoryUser> {
    ["alice@mail.example", "shared@mail.example"]
        .into_iter()
        .map(|mail| xsi_sim::directories::DirectoryUser {
            mail: mail.to_owned(),
            user_principal_name: mail.replace("@mail.", "@corp."),
        })
        .collect()
}

async fn world(master: bool) -> World {
    world_of(Sso::Office365, master).await
}

async fn world_of(sso: Sso, master: bool) -> World {
    world_with(Setup {
        sso,
        master,
        ..Setup::default()
    })
    .await
}

/// How a world is made.
#[derive(Debug, Clone, Copy)]
struct Setup {
    sso: Sso,
    /// The provider has master credentials.
    master: bool,
    /// `xsi-events` keeps users' channel sets.
    events: bool,
    /// What the gateway logs (an `XSIGATE_LOG` filter), when not its default.
    log_filter: Option<&'static str>,
    /// The dialer's origin, where logins return: `RETURN_URL`'s unless a dialer is served.
    dialer_port: u16,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            sso: Sso::Office365,
            master: true,
            events: true,
            log_filter: None,
            dialer_port: 5173,
        }
    }
}

async fn world_with(setup: Setup) -> World {
    let Setup {
        sso,
        master,
        events,
        log_filter,
        dialer_port,
    } = setup;
    let sim = simulator().await;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let idp_port = free_port();
    let method = sso.method();
    let redirect_uri = format!("http://{addr}/api/access/services/idp/{method}/callback");
    let idp = start_idp(sso, idp_port, &redirect_uri).await;
    let issuer = format!("http://127.0.0.1:{idp_port}{}", sso.issuer_path());
    let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
    let directories = match sso {
        Sso::Office365 => {
            let jwks = client()
                .get(format!("{issuer}/jwks"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let settings = xsi_sim::directories::DirectorySettings {
                users: directory_users(),
                graph: Some(xsi_sim::directories::GraphTenant {
                    issuer: issuer.clone(),
                    jwks,
                }),
                onelogin: None,
            };
            xsi_sim::directories::Directories::start(settings, any_port).await
        }
        Sso::OneLogin => {
            let settings = xsi_sim::directories::DirectorySettings {
                users: directory_users(),
                graph: None,
                onelogin: Some(xsi_sim::directories::OneLoginCredential {
                    client_id: "api-reader".to_owned(),
                    client_secret: "api-secret".to_owned(),
                }),
            };
            xsi_sim::directories::Directories::start(settings, any_port).await
        }
    }
    .unwrap();
    let secrets = tempfile::tempdir().unwrap();
    std::fs::write(secrets.path().join("client"), "client-secret").unwrap();
    std::fs::write(secrets.path().join("api"), "api-secret").unwrap();
    std::fs::write(secrets.path().join("master"), "admin-pw").unwrap();
    let client_secret = secrets.path().join("client");
    let account = match sso {
        Sso::Office365 => format!(
            "tenant = \"{TENANT}\"\nauthority = \"http://127.0.0.1:{idp_port}\"\n\
             graph_url = \"{}\"\ngraph_resource = \"https://graph.microsoft.com\"\n",
            directories.url()
        ),
        Sso::OneLogin => format!(
            "subdomain = \"{ONELOGIN_SUBDOMAIN}\"\nissuer = \"{issuer}\"\napi_url = \"{}\"\n\
             api_client_id = \"api-reader\"\napi_client_secret_file = \"{}\"\n",
            directories.url(),
            secrets.path().join("api").display()
        ),
    };
    let library = match sso {
        Sso::Office365 => plugin_library("xsigate-idp-o365"),
        Sso::OneLogin => plugin_library("xsigate-idp-onelogin"),
    };
    let plugins = format!(
        "[[plugins]]\nname = \"{method}\"\npath = \"{}\"\n[plugins.config]\nanchor_users = [\"alice@acme.example\"]\n\
         [plugins.config.providers.acme]\nclient_id = \"xsigate\"\nclient_secret_file = \"{}\"\n{account}",
        library.display(),
        client_secret.display(),
    ) + &format!(
        "[[plugins]]\nname = \"xsi-session\"\npath = \"{}\"\n\
         [[plugins]]\nname = \"events\"\npath = \"{}\"\n[plugins.config.providers.acme]\n",
        plugin_library("xsigate-xsi-session").display(),
        plugin_library("xsigate-xsi-events").display(),
    );
    let plugin_list = if events {
        format!("\"{method}\", \"xsi-session\", \"events\"")
    } else {
        format!("\"{method}\", \"xsi-session\"")
    };
    let master = if master {
        format!(
            "master = {{ user = \"admin@acme.example\", password_file = \"{}\" }}\n",
            secrets.path().join("master").display()
        )
    } else {
        String::new()
    };
    let provider = provider_for_simulator(
        "acme",
        &["acme.example"],
        &sim,
        &format!(
            "email_domains = [\"mail.example\"]\ncors_origins = [\"http://127.0.0.1:{dialer_port}\"]\n\
             plugins = [{plugin_list}]\n{master}sso = {{ public_url = \"http://{addr}\", \
             return_url = \"http://127.0.0.1:{dialer_port}/\" }}\n"
        ),
    );
    let mut gateway =
        Gateway::start_logging(addr, &format!("{plugins}{provider}"), &[], log_filter).await;
    gateway.wait_for("/readyz", 200).await;
    World {
        gateway,
        sso,
        idp: Some(idp),
        directories,
        idp_root: format!("http://127.0.0.1:{idp_port}"),
        sim,
        _secrets: secrets,
    }
}

/// Starts a single sign-on for `user` at the gateway, as a dialer does.
async fn start(world: &World, user: &str) -> reqwest::Response {
    client()
        .post(
            world
                .gateway
                .url(&format!("/api/access/services/idp/{}", world.sso.method())),
        )
        .json(&json!({ "user": user }))
        .send()
        .await
        .unwrap()
}

/// A browser: the gateway's cookies and the identity provider's.
#[derive(Debug, Default, Clone)]
struct Browser {
    gateway: Jar,
    idp: Jar,
}

impl Browser {
    /// Starts a single sign-on at the gateway; the identity provider's URL.
    async fn start(&mut self, world: &World, user: &str) -> String {
        let response = start(world, user).await;
        assert_eq!(response.status(), 200);
        self.gateway.absorb(&response);
        assert!(self.gateway.get("xsigate_flow").is_some(), "no flow cookie");
        let answer: Value = response.json().await.unwrap();
        answer["redirect"].as_str().unwrap().to_owned()
    }

    /// At the identity provider: signs in as `login` through its own forms and returns the
    /// callback URL it sends the browser to, not yet followed.
    async fn sign_in(&mut self, mut url: String, login: &str, gateway: &Gateway) -> String {
        let http = client();
        for _ in 0..12 {
            if url.starts_with(&gateway.url("/")) {
                return url;
            }
            let response = http
                .get(&url)
                .header("cookie", self.idp.header())
                .send()
                .await
                .unwrap();
            self.idp.absorb(&response);
            if response.status().is_redirection() {
                url = resolve(&url, &location(&response));
                continue;
            }
            let page = response.text().await.unwrap();
            let action = page
                .split("action=\"")
                .nth(1)
                .and_then(|rest| rest.split('"').next())
                .expect("a form")
                .replace("&amp;", "&");
            let action = resolve(&url, &action);
            let form: Vec<(&str, &str)> = if page.contains("name=\"login\"") {
                vec![("prompt", "login"), ("login", login), ("password", "any")]
            } else {
                vec![("prompt", "consent")]
            };
            let response = http
                .post(&action)
                .header("cookie", self.idp.header())
                .header("content-type", "application/x-www-form-urlencoded")
                .body(
                    url::form_urlencoded::Serializer::new(String::new())
                        .extend_pairs(form)
                        .finish(),
                )
                .send()
                .await
                .unwrap();
            self.idp.absorb(&response);
            url = resolve(&action, &location(&response));
        }
        panic!("the identity provider never sent the browser back");
    }

    /// Follows the callback with `cookies`; the response.
    async fn callback(&mut self, url: &str, cookies: &Jar) -> reqwest::Response {
        let response = client()
            .get(url)
            .header("cookie", cookies.header())
            .send()
            .await
            .unwrap();
        self.gateway.absorb(&response);
        response
    }

    async fn login_result(&self, world: &World) -> reqwest::Response {
        client()
            .post(world.gateway.url("/api/access/services/session/login"))
            .header("cookie", self.gateway.header())
            .send()
            .await
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_sign_on_logs_the_user_in_and_hands_the_dialer_its_answer_once() {
    let world = world(true).await;
    let mut browser = Browser::default();
    let url = browser.start(&world, "alice@mail.example").await;
    let callback = browser
        .sign_in(url, "alice@mail.example", &world.gateway)
        .await;
    let cookies = browser.gateway.clone();
    let response = browser.callback(&callback, &cookies).await;
    assert_eq!(response.status(), 303);
    // Back to the dialer with nothing in the URL.
    assert_eq!(location(&response), RETURN_URL);
    assert!(browser.gateway.get("xsigate_session").is_some());
    assert!(
        browser.gateway.get("xsigate_flow").is_none(),
        "the flow cookie stays"
    );

    let answer = browser.login_result(&world).await;
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert!(
        answer["csrf_token"].as_str().is_some_and(|t| t.len() == 43),
        "{answer}"
    );
    assert!(answer["unique_id"].is_string(), "{answer}");
    assert_eq!(browser.login_result(&world).await.status(), 404);

    let session: Value = client()
        .get(world.gateway.url("/api/access/services/session"))
        .header("cookie", browser.gateway.header())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(session["user_id"], "alice@acme.example");
}

/// A logged-in browser: its gateway cookies and the login's answer.
async fn logged_in(world: &World, login: &str) -> (Browser, Value) {
    let mut browser = Browser::default();
    let url = browser.start(world, login).await;
    let callback = browser.sign_in(url, login, &world.gateway).await;
    let cookies = browser.gateway.clone();
    let response = browser.callback(&callback, &cookies).await;
    assert_eq!(location(&response), RETURN_URL);
    let answer: Value = browser.login_result(world).await.json().await.unwrap();
    (browser, answer)
}

const ACTIONS: &str = "/com.broadsoft.xsi-actions/v2.0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_sign_on_session_reaches_its_own_user_on_the_masters_credentials_and_nothing_else()
{
    let world = world(true).await;
    let (browser, answer) = logged_in(&world, "alice@mail.example").await;
    let csrf = answer["csrf_token"].as_str().unwrap();
    let send = |method: reqwest::Method, path: &str| {
        client()
            .request(method, world.gateway.url(&format!("{ACTIONS}{path}")))
            .header("cookie", browser.gateway.header())
            .header("x-csrf-token", csrf)
    };

    let own = send(reqwest::Method::GET, "/user/alice@acme.example/profile")
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    assert!(own.headers().get("set-cookie").is_none());
    assert!(own.text().await.unwrap().contains("alice@acme.example"));
    let reached = world.sim.platform().requests();
    let profile = reached
        .iter()
        .rfind(|r| r.path.ends_with("/user/alice@acme.example/profile"))
        .expect("the profile request reached the XSP");
    assert_eq!(profile.auth_user.as_deref(), Some("admin@acme.example"));

    // The master could read bob and set alice's password without the old one: the session
    // may do neither, and nothing of it reaches an XSP.
    let other = send(reqwest::Method::GET, "/user/bob@acme.example/profile")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403);
    let password = send(
        reqwest::Method::PUT,
        "/user/alice@acme.example/profile/Password/Portal",
    )
    .header("content-type", "application/xml")
    .body(
        "<PortalPassword xmlns=\"http://schema.broadsoft.com/xsi\">\
         <newPassword>taken-over</newPassword></PortalPassword>",
    )
    .send()
    .await
    .unwrap();
    assert_eq!(password.status(), 403);
    let group = send(reqwest::Method::GET, "/group/sales")
        .send()
        .await
        .unwrap();
    assert_eq!(group.status(), 403);
    let reached: Vec<_> = world
        .sim
        .platform()
        .requests()
        .into_iter()
        .filter(|r| {
            ["bob@", "Password", "/group/"]
                .iter()
                .any(|p| r.path.contains(p))
        })
        .collect();
    assert!(reached.is_empty(), "a refusal reached an XSP: {reached:?}");
    assert_eq!(
        world
            .gateway
            .metric("xsigate_plugin_xsi_session_refused_total{reason=\"password_change\"}")
            .await,
        Some(1.0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_sign_on_users_events_channel_runs_on_the_masters_credentials() {
    let world = world(true).await;
    logged_in(&world, "alice@mail.example").await;
    let subscribed = |world: &World| {
        world.sim.platform().requests().into_iter().any(|r| {
            r.method == "POST"
                && r.path
                    .ends_with("/com.broadsoft.xsi-events/v2.0/user/alice@acme.example")
                && r.status < 300
        })
    };
    for _ in 0..100 {
        if subscribed(&world) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let requests = world.sim.platform().requests();
    let subscription = requests
        .iter()
        .find(|r| r.method == "POST" && r.path.ends_with("/v2.0/user/alice@acme.example"))
        .expect("alice's events were subscribed to");
    assert!(subscription.status < 300, "{subscription:?}");
    assert_eq!(
        subscription.auth_user.as_deref(),
        Some("admin@acme.example")
    );
    assert!(
        world
            .sim
            .platform()
            .channels()
            .views()
            .iter()
            .any(|c| c.owner == "admin@acme.example"),
        "no channel of the set is open"
    );
}

/// The victim's callback, followed by an attacker's browser with `cookies` (none, or its own
/// flow's): refused, no session, and the flow still the victim's.
async fn a_foreign_callback_is_refused(attacker_has_a_flow: bool) {
    let world = world(true).await;
    let mut victim = Browser::default();
    let url = victim.start(&world, "alice@mail.example").await;
    let callback = victim
        .sign_in(url, "alice@mail.example", &world.gateway)
        .await;

    let mut attacker = Browser::default();
    if attacker_has_a_flow {
        attacker.start(&world, "alice@mail.example").await;
    }
    let cookies = attacker.gateway.clone();
    let response = attacker.callback(&callback, &cookies).await;
    assert_eq!(response.status(), 303);
    assert_eq!(
        location(&response),
        format!("{RETURN_URL}?sso_error=login_flow_foreign")
    );
    assert!(attacker.gateway.get("xsigate_session").is_none());
    // The flow is still its own browser's.
    let cookies = victim.gateway.clone();
    let response = victim.callback(&callback, &cookies).await;
    assert_eq!(location(&response), RETURN_URL);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_without_a_flow_cookie_is_refused() {
    a_foreign_callback_is_refused(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_with_another_browsers_flow_cookie_is_refused() {
    a_foreign_callback_is_refused(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_callback_is_refused() {
    let world = world(true).await;
    let mut browser = Browser::default();
    let url = browser.start(&world, "alice@mail.example").await;
    let callback = browser
        .sign_in(url, "alice@mail.example", &world.gateway)
        .await;
    let cookies = browser.gateway.clone();
    assert_eq!(
        location(&browser.callback(&callback, &cookies).await),
        RETURN_URL
    );
    // The same callback, flow cookie and all, again.
    let replayed = browser.callback(&callback, &cookies).await;
    assert_eq!(replayed.status(), 400);
    let body: Value = replayed.json().await.unwrap();
    assert_eq!(body["error"]["code"], "login_flow_unknown");
}

/// Signs in as `login`, whom the identity provider vouches for: refused as every failed login
/// is, naming no account.
async fn refused_naming_no_account(login: &str) {
    let world = world(true).await;
    let mut browser = Browser::default();
    let url = browser.start(&world, login).await;
    let callback = browser.sign_in(url, login, &world.gateway).await;
    let cookies = browser.gateway.clone();
    let response = browser.callback(&callback, &cookies).await;
    assert_eq!(
        location(&response),
        format!("{RETURN_URL}?sso_error=invalid_credentials"),
        "{login}"
    );
    assert!(browser.gateway.get("xsigate_session").is_none());
    let logs = world.gateway.logs();
    for named in ["bob@acme.example", "carol@acme.example", login] {
        assert!(!logs.contains(named), "the log names {named}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_with_no_broadworks_user_is_refused_naming_no_account() {
    refused_naming_no_account("nobody@mail.example").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_two_broadworks_users_share_is_refused_naming_no_account() {
    refused_naming_no_account("shared@mail.example").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_no_provider_claims_gets_the_answer_of_a_refused_login() {
    let world = world(true).await;
    let response = start(&world, "alice@elsewhere.example").await;
    assert_eq!(response.status(), 401);
    assert!(response.headers().get("set-cookie").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_master_credentials_the_method_is_refused() {
    let world = world(false).await;
    let response = start(&world, "alice@mail.example").await;
    assert_eq!(response.status(), 404);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "unknown_login_method");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_provider_down_is_a_clear_error() {
    let mut world = world(true).await;
    world.idp.take();
    let response = start(&world, "alice@mail.example").await;
    assert_eq!(response.status(), 502);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "plugin_failed");
}

impl World {
    /// Has the identity provider spoil the ID tokens it issues from now on.
    async fn tamper(&self, mode: &str) {
        let response = client()
            .post(format!("{}/__test/tamper/{mode}", self.idp_root))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    async fn jwks_reads(&self) -> u32 {
        client()
            .get(format!("{}/__test/jwks-reads", self.idp_root))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .parse()
            .unwrap()
    }
}

/// Signs in as `login` at an identity provider that lies as `mode` says: the callback must end
/// on the dialer with a refusal, no session, and no directory search for anyone.
async fn refused_when_the_id_token_lies(mode: &str, login: &str) -> World {
    refused_by(Sso::Office365, mode, login).await
}

async fn refused_by(sso: Sso, mode: &str, login: &str) -> World {
    let world = world_of(sso, true).await;
    world.tamper(mode).await;
    let mut browser = Browser::default();
    let url = browser.start(&world, login).await;
    let callback = browser.sign_in(url, login, &world.gateway).await;
    let cookies = browser.gateway.clone();
    let response = browser.callback(&callback, &cookies).await;
    assert_eq!(response.status(), 303, "{mode}");
    assert_eq!(
        location(&response),
        format!("{RETURN_URL}?sso_error=invalid_credentials"),
        "{mode}"
    );
    assert!(browser.gateway.get("xsigate_session").is_none(), "{mode}");
    let searched: Vec<_> = world
        .sim
        .platform()
        .requests()
        .into_iter()
        .filter(|r| r.path.contains("/directories/"))
        .collect();
    assert!(searched.is_empty(), "{mode}: {searched:?}");
    assert_eq!(
        world
            .gateway
            .metric(&format!(
                "xsigate_logins_total{{method=\"{}\",provider=\"acme\",result=\"rejected\"}}",
                sso.method()
            ))
            .await,
        Some(1.0),
        "{mode}"
    );
    world
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_with_another_users_address_under_the_genuine_signature_is_refused() {
    refused_when_the_id_token_lies("signature", "nobody@mail.example").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_for_another_audience_is_refused() {
    refused_when_the_id_token_lies("aud", "alice@mail.example").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_from_another_issuer_is_refused() {
    refused_when_the_id_token_lies("iss", "alice@mail.example").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_id_token_is_refused() {
    refused_when_the_id_token_lies("expired", "alice@mail.example").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_with_another_flows_nonce_is_refused() {
    refused_when_the_id_token_lies("nonce", "alice@mail.example").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_signed_with_an_unpublished_key_is_refused_after_one_key_refresh() {
    let world = refused_when_the_id_token_lies("kid", "alice@mail.example").await;
    // The harness read the keys once, for the Graph stand-in; the flow read them once; the
    // unknown key id made it read them once more.
    assert_eq!(world.jwks_reads().await, 3);
    // A second made-up key id within the refresh interval reads them no more.
    let mut browser = Browser::default();
    let url = browser.start(&world, "alice@mail.example").await;
    let callback = browser
        .sign_in(url, "alice@mail.example", &world.gateway)
        .await;
    let cookies = browser.gateway.clone();
    let response = browser.callback(&callback, &cookies).await;
    assert_eq!(
        location(&response),
        format!("{RETURN_URL}?sso_error=invalid_credentials")
    );
    assert_eq!(world.jwks_reads().await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_id_token_is_refused() {
    refused_when_the_id_token_lies("none", "alice@mail.example").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_token_signed_with_hmac_over_the_public_key_is_refused() {
    refused_when_the_id_token_lies("hs256", "alice@mail.example").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_code_replayed_into_another_flow_is_refused() {
    let world = world(true).await;
    let mut first = Browser::default();
    let url = first.start(&world, "alice@mail.example").await;
    let callback = first
        .sign_in(url, "alice@mail.example", &world.gateway)
        .await;
    let cookies = first.gateway.clone();
    assert_eq!(
        location(&first.callback(&callback, &cookies).await),
        RETURN_URL
    );

    // The spent code, carried into a fresh flow of another browser with that flow's state.
    let code = url::Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    let mut second = Browser::default();
    let url = second.start(&world, "alice@mail.example").await;
    let state = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let mut replay = url::Url::parse(&callback).unwrap();
    replay
        .query_pairs_mut()
        .clear()
        .append_pair("code", &code)
        .append_pair("state", &state);
    let cookies = second.gateway.clone();
    let response = second.callback(replay.as_str(), &cookies).await;
    assert_eq!(response.status(), 303);
    assert!(
        location(&response).starts_with(&format!("{RETURN_URL}?sso_error=")),
        "{}",
        location(&response)
    );
    assert!(second.gateway.get("xsigate_session").is_none());
}

async fn ztp(world: &World, query: &str) -> Value {
    let response = client()
        .post(world.gateway.url("/api/access/services/ztp"))
        .json(&json!({ "query": query }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

/// ZTP offers the method to the addresses the company directory knows, asked with an app-only
/// token the directory accepted, and to no other.
async fn ztp_asks_the_company_directory(sso: Sso) {
    let world = world_of(sso, true).await;
    let known = ztp(&world, "alice@mail.example").await;
    assert_eq!(known["options"][0]["method"], sso.method(), "{known}");
    assert_eq!(known["options"][0]["sign_in"], "redirect", "{known}");
    assert_eq!(
        known["options"][0]["details"]["requires"],
        json!(["master", "email"])
    );
    let unknown = ztp(&world, "nobody@mail.example").await;
    assert_eq!(unknown["options"], json!([]), "{unknown}");
    let lookups = world.directories.lookups();
    assert_eq!(lookups.len(), 2, "{lookups:?}");
    assert!(lookups.iter().all(|l| l.refused.is_none()), "{lookups:?}");
    assert!(
        lookups[0].query.contains("alice@mail.example"),
        "{lookups:?}"
    );
    // Without master credentials the method is not offered, and the directory not asked.
    let without_master = world_of(sso, false).await;
    let answer = ztp(&without_master, "alice@mail.example").await;
    assert_eq!(answer["options"], json!([]), "{answer}");
    assert!(without_master.directories.lookups().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ztp_offers_office_365_to_the_addresses_microsoft_graph_knows() {
    ztp_asks_the_company_directory(Sso::Office365).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ztp_offers_onelogin_to_the_addresses_its_api_knows() {
    ztp_asks_the_company_directory(Sso::OneLogin).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_directory_stand_ins_let_in_only_tokens_of_the_client_credentials_grant() {
    for sso in [Sso::Office365, Sso::OneLogin] {
        let world = world_of(sso, true).await;
        let path = match sso {
            Sso::Office365 => "/v1.0/users?$filter=mail%20eq%20'alice@mail.example'",
            Sso::OneLogin => "/api/2/users?email=alice@mail.example",
        };
        for authorization in [
            None,
            Some("Bearer made-up"),
            Some("Basic eHNpZ2F0ZTpjbGllbnQtc2VjcmV0"),
        ] {
            let mut request = client().get(format!("{}{path}", world.directories.url()));
            if let Some(authorization) = authorization {
                request = request.header("authorization", authorization);
            }
            assert_eq!(
                request.send().await.unwrap().status(),
                401,
                "{sso:?} {authorization:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_onelogin_user_signs_in_and_reads_their_own_profile() {
    let world = world_of(Sso::OneLogin, true).await;
    let (browser, answer) = logged_in(&world, "alice@mail.example").await;
    assert!(answer["unique_id"].is_string(), "{answer}");
    let own = client()
        .get(
            world
                .gateway
                .url(&format!("{ACTIONS}/user/alice@acme.example/profile")),
        )
        .header("cookie", browser.gateway.header())
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    let other = client()
        .get(
            world
                .gateway
                .url(&format!("{ACTIONS}/user/bob@acme.example/profile")),
        )
        .header("cookie", browser.gateway.header())
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_onelogin_id_token_for_another_audience_is_refused() {
    refused_by(Sso::OneLogin, "aud", "alice@mail.example").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_code_token_secret_or_password_reaches_a_log_line_at_any_level() {
    for sso in [Sso::Office365, Sso::OneLogin] {
        // Everything xsigate and its plugins log; libraries that print whole messages stay at
        // their ceilings (`telemetry::LIBRARY_CEILINGS`): without those, Pingora's trace
        // prints the callback's request head, code and flow cookie included.
        let world = world_with(Setup {
            sso,
            log_filter: Some("trace"),
            ..Setup::default()
        })
        .await;
        assert!(!ztp(&world, "alice@mail.example").await["options"][0].is_null());
        let mut browser = Browser::default();
        let url = browser.start(&world, "alice@mail.example").await;
        let flow_cookie = browser.gateway.get("xsigate_flow").unwrap().to_owned();
        let callback = browser
            .sign_in(url, "alice@mail.example", &world.gateway)
            .await;
        let cookies = browser.gateway.clone();
        assert_eq!(
            location(&browser.callback(&callback, &cookies).await),
            RETURN_URL
        );
        let answer: Value = browser.login_result(&world).await.json().await.unwrap();
        let profile = client()
            .get(
                world
                    .gateway
                    .url(&format!("{ACTIONS}/user/alice@acme.example/profile")),
            )
            .header("cookie", browser.gateway.header())
            .send()
            .await
            .unwrap();
        assert_eq!(profile.status(), 200);

        let callback = url::Url::parse(&callback).unwrap();
        let param = |name: &str| {
            callback
                .query_pairs()
                .find(|(k, _)| k == name)
                .unwrap()
                .1
                .into_owned()
        };
        let master = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            "admin@acme.example:admin-pw",
        );
        let secrets = [
            ("authorization code", param("code")),
            ("state", param("state")),
            ("flow cookie", flow_cookie),
            (
                "session cookie",
                browser.gateway.get("xsigate_session").unwrap().to_owned(),
            ),
            (
                "CSRF token",
                answer["csrf_token"].as_str().unwrap().to_owned(),
            ),
            ("client secret", "client-secret".to_owned()),
            ("API secret", "api-secret".to_owned()),
            ("master password", "admin-pw".to_owned()),
            ("master credentials", master),
            // Every JWT (ID token, access tokens) starts with an encoded `{"`.
            ("a JWT", "eyJ".to_owned()),
        ];
        let logs = world.gateway.logs();
        for (what, secret) in &secrets {
            let line = logs.lines().find(|l| l.contains(secret.as_str()));
            assert!(
                line.is_none(),
                "{sso:?}: the log holds the {what}: {line:?}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_single_sign_on_session_reaches_its_own_resources_and_nobody_elses() {
    const OPERATIONS: usize = 30;
    // Without xsi-events, whose state reads for each user would mix with the exercise's.
    let world = world_with(Setup {
        events: false,
        ..Setup::default()
    })
    .await;
    let mut sessions = Vec::new();
    for user in ["alice", "member0", "member1", "member2", "member3"] {
        let (browser, answer) = logged_in(&world, &format!("{user}@mail.example")).await;
        sessions.push(xsigate_tests::isolation::SessionOf {
            user_id: format!("{user}@acme.example"),
            cookie: format!(
                "xsigate_session={}",
                browser.gateway.get("xsigate_session").unwrap()
            ),
            csrf: answer["csrf_token"].as_str().unwrap().to_owned(),
        });
    }
    let World { gateway, sim, .. } = world;
    let gateway = Arc::new(gateway);
    let exercise =
        xsigate_tests::isolation::every_session_on_its_own(&gateway, sessions, OPERATIONS).await;
    let seed = exercise.seed;

    // Every request the exercise sent went up on the master's credentials (the XSP cannot tell
    // whose session it served), so what proves isolation is what did not go up: exactly the
    // own accesses reached an XSP, none of the refused attempts.
    let reached: Vec<_> = sim
        .platform()
        .requests()
        .into_iter()
        .filter(|r| xsigate_tests::isolation::exercised(&r.path))
        .collect();
    for record in &reached {
        assert_eq!(
            record.auth_user.as_deref(),
            Some("admin@acme.example"),
            "{record:?}"
        );
    }
    assert_eq!(reached.len(), exercise.own_accesses, "seed {seed}");
    exercise.check_final_states(&sim);
}

/// Chromium signs in through the reference dialer with `sso`, on the identity provider's own
/// forms, and reads its own profile; then an address two BroadWorks users share is refused.
/// Nothing it held on the way — addresses, response bodies, storage, script-readable cookies —
/// carries the authorization code, a token or a BroadWorks credential.
async fn chromium_signs_in(sso: Sso) {
    let dialer_port = free_port();
    let world = world_with(Setup {
        sso,
        dialer_port,
        ..Setup::default()
    })
    .await;
    let _dialer = Dialer::serve(dialer_port, &world.gateway).await;
    let (report, brief) = chromium_sign_in(&world.gateway, dialer_port, sso.method(), "any").await;

    assert_eq!(report["profile_user"], "alice@acme.example", "{brief:#}");
    assert_eq!(
        report["status"], "Logged in as alice@acme.example",
        "{brief:#}"
    );
    // The profile went up on the master's credentials; the browser held only its cookie.
    let profile = world
        .sim
        .platform()
        .requests()
        .into_iter()
        .rfind(|r| {
            r.path.ends_with("/profile")
                && xsigate_tests::isolation::path_user(&r.path).as_deref()
                    == Some("alice@acme.example")
        })
        .expect("the dialer read the profile");
    assert_eq!(profile.auth_user.as_deref(), Some("admin@acme.example"));

    let dialer = format!("http://127.0.0.1:{dialer_port}/");
    assert_eq!(report["address_after_login"], dialer.as_str(), "{brief:#}");
    assert_eq!(
        report["address_after_refusal"],
        dialer.as_str(),
        "{brief:#}"
    );
    assert_eq!(
        report["refusal_status"], "Single sign-on refused: invalid_credentials",
        "{brief:#}"
    );

    // What the browser must never have held.
    let callbacks: Vec<url::Url> = report["callback_requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| url::Url::parse(u.as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(callbacks.len(), 2, "{brief:#}");
    let codes: Vec<String> = callbacks
        .iter()
        .map(|u| {
            u.query_pairs()
                .find(|(k, _)| k == "code")
                .unwrap()
                .1
                .into_owned()
        })
        .collect();
    let master = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        "admin@acme.example:admin-pw",
    );
    let mut never = vec!["admin-pw".to_owned(), master, "JSESSIONID".to_owned()];
    never.extend(codes);
    for address in report["addresses"].as_array().unwrap() {
        let address = address.as_str().unwrap();
        assert!(
            !address.contains("code=") && !never.iter().any(|n| address.contains(n.as_str())),
            "{sso:?}: the address bar showed {address}"
        );
    }
    for response in report["bodies"].as_array().unwrap() {
        let body = response["body"].as_str().unwrap();
        for secret in &never {
            assert!(
                !body.contains(secret.as_str()),
                "{sso:?}: {} answered a body with a secret",
                response["url"]
            );
        }
        // No ID or access token in anything the gateway answered (the identity provider's own
        // pages are its business).
        if response["url"]
            .as_str()
            .unwrap()
            .starts_with(&world.gateway.url("/"))
        {
            assert!(
                !body.contains("eyJ"),
                "{sso:?}: {} answered a JWT",
                response["url"]
            );
        }
    }
    // The dialer keeps nothing in storage once back (the method name it noted on the way out
    // is gone), and no cookie is readable by a script.
    let storage = &report["storage"];
    assert_eq!(storage["local"], "{}", "{brief:#}");
    assert_eq!(storage["session"], "{}", "{brief:#}");
    assert_eq!(storage["cookies"], "", "script-readable cookies: {brief:#}");
    assert_eq!(report["console_errors"], json!([]), "{brief:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_signs_in_with_office_365_and_reads_its_own_profile() {
    chromium_signs_in(Sso::Office365).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_signs_in_with_onelogin_and_reads_its_own_profile() {
    chromium_signs_in(Sso::OneLogin).await;
}
