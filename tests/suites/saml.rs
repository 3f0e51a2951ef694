//! SAML 2.0 single sign-on end to end: the gateway with `idp-saml`, a real SAML identity
//! provider (PyPI pysaml2's `Server`, signing with Debian's xmlsec1, `sim/idp/saml-idp.py`)
//! registered from the gateway's own service-provider metadata, and the simulator as the
//! provider's BroadWorks. The test plays the browser over HTTP; the identity provider's test
//! controls make its next response lie in one way each, and every lie must end at the dialer's
//! `sso_error=invalid_credentials` with no session and nothing sent to an XSP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use xsigate_tests::sso::{Dialer, IdpProcess, Jar, chromium_sign_in, location, resolve};
use xsigate_tests::{
    Gateway, client, free_port, plugin_library, provider_for_simulator, repo_root,
};

const RETURN_URL: &str = "http://127.0.0.1:5173/";
const ACTIONS: &str = "/com.broadsoft.xsi-actions/v2.0";
/// The password of every user at the identity provider (`saml-idp.py`'s).
const IDP_PASSWORD: &str = "idp-pw";
const REFUSED: &str = "http://127.0.0.1:5173/?sso_error=invalid_credentials";

/// The Python that runs the identity provider: the virtual environment `scripts/install-deps
/// test` makes with pysaml2 in it.
fn python() -> PathBuf {
    let python = repo_root().join("target/saml-idp-env/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `scripts/install-deps test`",
        python.display()
    );
    python
}

fn saml_idp() -> PathBuf {
    repo_root().join("sim/idp/saml-idp.py")
}

/// Writes `<dir>/<name>.key` and `<dir>/<name>.pem`.
fn make_keys(dir: &Path, name: &str) {
    let status = Command::new(python())
        .env("PYTHONWARNINGS", "ignore")
        .arg(saml_idp())
        .args(["keys", dir.to_str().unwrap(), name])
        .status()
        .unwrap();
    assert!(status.success(), "saml-idp.py keys failed");
}

/// The identity provider, registering the gateway from its metadata at `sp_metadata_url`.
async fn start_idp(port: u16, keys: &Path, sp_metadata_url: &str) -> IdpProcess {
    let mut command = Command::new(python());
    command
        .arg(saml_idp())
        .arg("serve")
        .arg(port.to_string())
        .arg(keys.join("idp.key"))
        .arg(keys.join("idp.pem"))
        .arg(sp_metadata_url)
        .arg("alice@mail.example,shared@mail.example,nobody@mail.example")
        .env("SAML_TEST_CONTROLS", "1")
        .env("PYTHONWARNINGS", "ignore")
        .stderr(Stdio::inherit());
    IdpProcess::start(command, "the SAML identity provider (pysaml2)").await
}

/// alice and dave have an address of their own; bob and carol share one; nobody has
/// `nobody@`. The wrapping lies name dave in the assertion they smuggle in.
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
        user_id = "dave@acme.example"
        password = "dave-pw"
        service_provider = "acme"
        group = "sales"
        email = "dave@mail.example"

        [[admins]]
        user_id = "admin@acme.example"
        password = "admin-pw"
        scope = { level = "service_provider", service_provider = "acme" }
        "#,
    )
    .unwrap();
    xsi_sim::Simulator::start(seed).await.unwrap()
}

struct World {
    gateway: Gateway,
    sim: Arc<xsi_sim::Simulator>,
    idp_root: String,
    _idp: IdpProcess,
    _keys: tempfile::TempDir,
}

#[derive(Debug, Clone, Copy)]
struct Setup {
    /// The gateway signs its AuthnRequests.
    sign_requests: bool,
    /// The operator accepts SHA-1 signatures.
    allow_sha1: bool,
    /// The gateway knows the identity provider by its metadata file (pysaml2's own), not by
    /// the three explicit keys.
    idp_metadata: bool,
    /// The dialer's origin, where logins return.
    dialer_port: u16,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            sign_requests: false,
            allow_sha1: false,
            idp_metadata: false,
            dialer_port: 5173,
        }
    }
}

async fn world() -> World {
    world_with(Setup::default()).await
}

async fn world_with(setup: Setup) -> World {
    let sim = simulator().await;
    let keys = tempfile::tempdir().unwrap();
    make_keys(keys.path(), "idp");
    make_keys(keys.path(), "sp");
    std::fs::write(keys.path().join("master"), "admin-pw").unwrap();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let idp_port = free_port();
    let idp_root = format!("http://127.0.0.1:{idp_port}");
    let dir = keys.path().display();
    let idp = if setup.idp_metadata {
        let file = keys.path().join("idp-metadata.xml");
        let status = Command::new(python())
            .env("PYTHONWARNINGS", "ignore")
            .arg(saml_idp())
            .args(["metadata", &idp_port.to_string()])
            .arg(keys.path().join("idp.key"))
            .arg(keys.path().join("idp.pem"))
            .arg(&file)
            .status()
            .unwrap();
        assert!(status.success(), "saml-idp.py metadata failed");
        format!("idp_metadata_file = \"{}\"\n", file.display())
    } else {
        format!(
            "idp_entity_id = \"{idp_root}/idp\"\nidp_sso_url = \"{idp_root}/sso/redirect\"\n\
             idp_certificate_file = \"{dir}/idp.pem\"\n"
        )
    };
    let plugins = format!(
        "[[plugins]]\nname = \"saml\"\npath = \"{}\"\n[plugins.config]\n\
         anchor_users = [\"alice@acme.example\"]\n[plugins.config.providers.acme]\n\
         {idp}sp_entity_id = \"http://{addr}/saml/acme\"\n\
         sp_certificate_file = \"{dir}/sp.pem\"\nsp_key_file = \"{dir}/sp.key\"\n\
         sign_requests = {}\nallow_sha1 = {}\nemail_domains = [\"mail.example\"]\n\
         [[plugins]]\nname = \"xsi-session\"\npath = \"{}\"\n",
        plugin_library("xsigate-idp-saml").display(),
        setup.sign_requests,
        setup.allow_sha1,
        plugin_library("xsigate-xsi-session").display(),
    );
    let dialer_port = setup.dialer_port;
    let provider = provider_for_simulator(
        "acme",
        &["acme.example"],
        &sim,
        &format!(
            "email_domains = [\"mail.example\"]\ncors_origins = [\"http://127.0.0.1:{dialer_port}\"]\n\
             plugins = [\"saml\", \"xsi-session\"]\n\
             master = {{ user = \"admin@acme.example\", password_file = \"{dir}/master\" }}\n\
             sso = {{ public_url = \"http://{addr}\", return_url = \"http://127.0.0.1:{dialer_port}/\" }}\n"
        ),
    );
    let mut gateway =
        Gateway::start_logging(addr, &format!("{plugins}{provider}"), &[], None).await;
    gateway.wait_for("/readyz", 200).await;
    // pysaml2 reads the gateway's metadata as it is served.
    let metadata = gateway.url("/api/access/services/idp/saml/metadata?provider=acme");
    let idp = start_idp(idp_port, keys.path(), &metadata).await;
    World {
        gateway,
        sim,
        idp_root,
        _idp: idp,
        _keys: keys,
    }
}

/// The self-submitting form the identity provider answered with, as a browser would post it.
#[derive(Debug, Clone)]
struct SamlPost {
    action: String,
    saml_response: String,
    relay_state: String,
}

impl SamlPost {
    /// The response document, decoded.
    fn xml(&self) -> String {
        let bytes = base64::Engine::decode(
            &base64::engine::general_purpose::STANDARD,
            &self.saml_response,
        )
        .unwrap();
        String::from_utf8(bytes).unwrap()
    }
}

fn field(page: &str, name: &str) -> String {
    let marker = format!("name=\"{name}\" value=\"");
    let value = page
        .split(&marker)
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no {name} in {page}"));
    value
        .replace("&quot;", "\"")
        .replace("&#x27;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// A browser that starts a sign-on at the gateway and signs in at the identity provider.
#[derive(Debug, Default, Clone)]
struct Browser {
    gateway: Jar,
}

impl Browser {
    /// The identity provider's URL for a sign-on of `user`.
    async fn start(&mut self, world: &World, user: &str) -> String {
        let response = client()
            .post(world.gateway.url("/api/access/services/idp/saml"))
            .json(&json!({ "user": user }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        self.gateway.absorb(&response);
        assert!(self.gateway.get("xsigate_flow").is_some(), "no flow cookie");
        let answer: Value = response.json().await.unwrap();
        answer["redirect"].as_str().unwrap().to_owned()
    }

    /// Signs in at the identity provider as `email`; the form it answers with.
    async fn sign_in(&mut self, url: &str, email: &str) -> SamlPost {
        let page = client().get(url).send().await.unwrap();
        assert_eq!(
            page.status(),
            200,
            "the identity provider refused the request"
        );
        let page = page.text().await.unwrap();
        let key = field(&page, "key");
        let answer = client()
            .post(resolve(url, "/sso/login"))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs([
                        ("key", key.as_str()),
                        ("login", email),
                        ("password", IDP_PASSWORD),
                    ])
                    .finish(),
            )
            .send()
            .await
            .unwrap();
        let page = answer.text().await.unwrap();
        let action = page
            .split("action=\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .expect("the self-submitting form")
            .to_owned();
        SamlPost {
            action,
            saml_response: field(&page, "SAMLResponse"),
            relay_state: field(&page, "RelayState"),
        }
    }

    /// Posts the identity provider's form to the gateway with this browser's cookies.
    async fn post(&mut self, post: &SamlPost) -> reqwest::Response {
        let response = client()
            .post(&post.action)
            .header("cookie", self.gateway.header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(
                url::form_urlencoded::Serializer::new(String::new())
                    .extend_pairs([
                        ("SAMLResponse", post.saml_response.as_str()),
                        ("RelayState", post.relay_state.as_str()),
                    ])
                    .finish(),
            )
            .send()
            .await
            .unwrap();
        self.gateway.absorb(&response);
        response
    }
}

impl World {
    /// Has the identity provider's next response lie as `mode` says.
    async fn tamper(&self, mode: &str, extra: Value) {
        let response = client()
            .post(format!("{}/__test/tamper/{mode}", self.idp_root))
            .json(&extra)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "tamper mode {mode}");
    }

    /// Requests that reached an XSP, but the gateway's health probes.
    fn xsp_requests(&self) -> Vec<xsi_sim::xsp::RequestRecord> {
        let mut requests = self.sim.platform().requests();
        requests.retain(|r| r.auth_user.is_some() || !r.path.ends_with("/versions"));
        requests
    }
}

/// A whole sign-on of `email`; the gateway's answer to the callback, and the browser.
async fn sign_on(world: &World, email: &str) -> (reqwest::Response, Browser, SamlPost) {
    let mut browser = Browser::default();
    let url = browser.start(world, "alice@mail.example").await;
    let post = browser.sign_in(&url, email).await;
    let response = browser.post(&post).await;
    (response, browser, post)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_saml_sign_on_logs_the_user_in_on_the_masters_credentials() {
    let world = world().await;
    let (response, browser, post) = sign_on(&world, "alice@mail.example").await;
    assert_eq!(response.status(), 303, "{}", world.gateway.logs());
    assert_eq!(location(&response), RETURN_URL, "{}", world.gateway.logs());
    assert!(browser.gateway.get("xsigate_session").is_some());
    assert!(browser.gateway.get("xsigate_flow").is_none());
    // The assertion was signed, and the response itself not (pysaml2's usual shape).
    let xml = post.xml();
    assert!(xml.contains("SignatureValue") && xml.contains("InResponseTo=\"_"));

    let answer: Value = client()
        .post(world.gateway.url("/api/access/services/session/login"))
        .header("cookie", browser.gateway.header())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let csrf = answer["csrf_token"].as_str().expect("the login's answer");
    let profile = client()
        .get(
            world
                .gateway
                .url(&format!("{ACTIONS}/user/alice@acme.example/profile")),
        )
        .header("cookie", browser.gateway.header())
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(profile.status(), 200);
    let reached = world.sim.platform().requests();
    let upstream = reached
        .iter()
        .rfind(|r| r.path.ends_with("/user/alice@acme.example/profile"))
        .expect("the profile request reached the XSP");
    assert_eq!(upstream.auth_user.as_deref(), Some("admin@acme.example"));
}

/// A provider table that could only ever refuse, or accept too much, stops the start with the
/// key that is wrong.
#[test]
fn a_misconfigured_identity_provider_stops_the_start_naming_the_key() {
    let keys = tempfile::tempdir().unwrap();
    make_keys(keys.path(), "idp");
    make_keys(keys.path(), "sp");
    std::fs::write(keys.path().join("master"), "admin-pw").unwrap();
    let dir = keys.path().display();
    let check = |table: &str| {
        let config = keys.path().join("providers.toml");
        std::fs::write(
            &config,
            format!(
                "[[plugins]]\nname = \"saml\"\npath = \"{}\"\n[plugins.config]\n\
                 anchor_users = [\"alice@acme.example\"]\n[plugins.config.providers.acme]\n\
                 sp_entity_id = \"https://xsi.acme.example/saml\"\n\
                 sp_certificate_file = \"{dir}/sp.pem\"\nemail_domains = [\"acme.example\"]\n\
                 {table}\n\
                 [providers.acme]\ndomains = [\"acme.example\"]\nxsp = [\"http://127.0.0.1:1\"]\n\
                 plugins = [\"saml\"]\nmaster = {{ user = \"admin@acme.example\", password_file = \"{dir}/master\" }}\n\
                 sso = {{ public_url = \"https://xsi.acme.example\", return_url = \"https://dialer.acme.example/\" }}\n\
                 cors_origins = [\"https://dialer.acme.example\"]\n",
                plugin_library("xsigate-idp-saml").display()
            ),
        )
        .unwrap();
        let output = Command::new(xsigate_tests::binary("xsigate"))
            .args(["check", "-c"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(!output.status.success(), "{table} was accepted");
        String::from_utf8_lossy(&output.stderr).into_owned()
    };
    let explicit = format!(
        "idp_entity_id = \"https://sts.acme.example/idp\"\n\
         idp_sso_url = \"https://sts.acme.example/sso\"\n\
         idp_certificate_file = \"{dir}/idp.pem\"\n"
    );
    // The service provider's key is another certificate's.
    let stderr = check(&format!("{explicit}sp_key_file = \"{dir}/idp.key\""));
    assert!(
        stderr.contains("providers.acme.sp_key_file: is not the key of sp_certificate_file"),
        "{stderr}"
    );
    // No certificate to verify the identity provider's signatures with.
    let stderr = check(&format!(
        "idp_entity_id = \"https://sts.acme.example/idp\"\n\
         idp_sso_url = \"https://sts.acme.example/sso\"\nsp_key_file = \"{dir}/sp.key\""
    ));
    assert!(
        stderr.contains("providers.acme.idp_metadata_file"),
        "{stderr}"
    );
    // Metadata with a DTD is not read.
    std::fs::write(
        keys.path().join("idp.xml"),
        "<!DOCTYPE m [<!ENTITY e \"x\">]><EntityDescriptor/>",
    )
    .unwrap();
    let stderr = check(&format!(
        "idp_metadata_file = \"{dir}/idp.xml\"\nsp_key_file = \"{dir}/sp.key\""
    ));
    assert!(
        stderr.contains("providers.acme.idp_metadata_file: is refused: a DOCTYPE"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_identity_provider_can_be_known_by_its_metadata_file() {
    let world = world_with(Setup {
        idp_metadata: true,
        ..Setup::default()
    })
    .await;
    let (response, browser, _) = sign_on(&world, "alice@mail.example").await;
    assert_eq!(location(&response), RETURN_URL, "{}", world.gateway.logs());
    assert!(browser.gateway.get("xsigate_session").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_provider_metadata_names_the_callback_and_the_certificate() {
    let world = world().await;
    // pysaml2 started from it (the world would not exist otherwise); its content:
    let response = client()
        .get(
            world
                .gateway
                .url("/api/access/services/idp/saml/metadata?provider=acme"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/samlmetadata+xml"
    );
    let metadata = response.text().await.unwrap();
    let callback = world.gateway.url("/api/access/services/idp/saml/callback");
    for wanted in [
        format!("entityID=\"{}\"", world.gateway.url("/saml/acme")),
        format!("Location=\"{callback}\""),
        "urn:oasis:names:tc:SAML:2.0:bindings:HTTP-POST".to_owned(),
        "use=\"signing\"".to_owned(),
        "use=\"encryption\"".to_owned(),
        "X509Certificate".to_owned(),
    ] {
        assert!(
            metadata.contains(&wanted),
            "{wanted} missing from {metadata}"
        );
    }
    assert!(!metadata.contains("PRIVATE"), "the metadata carries a key");
    // No document for a provider that does not exist or a method that has none.
    for path in [
        "/api/access/services/idp/saml/metadata?provider=other",
        "/api/access/services/idp/saml/metadata",
        "/api/access/services/idp/broadsoft/metadata?provider=acme",
    ] {
        let response = client().get(world.gateway.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 404, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_response_instead_of_a_signed_assertion_is_accepted() {
    let world = world().await;
    world.tamper("response_signed", json!({})).await;
    let (response, browser, _) = sign_on(&world, "alice@mail.example").await;
    assert_eq!(location(&response), RETURN_URL, "{}", world.gateway.logs());
    assert!(browser.gateway.get("xsigate_session").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_encrypted_assertion_is_decrypted_with_the_service_providers_key() {
    let world = world().await;
    world.tamper("encrypted", json!({})).await;
    let (response, browser, post) = sign_on(&world, "alice@mail.example").await;
    let xml = post.xml();
    assert!(
        xml.contains("EncryptedAssertion") && !xml.contains("alice@"),
        "{xml}"
    );
    assert_eq!(location(&response), RETURN_URL, "{}", world.gateway.logs());
    assert!(browser.gateway.get("xsigate_session").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_authn_requests_are_accepted_by_the_identity_provider() {
    let world = world_with(Setup {
        sign_requests: true,
        ..Setup::default()
    })
    .await;
    let mut browser = Browser::default();
    let url = browser.start(&world, "alice@mail.example").await;
    let query: Vec<(String, String)> = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .into_owned()
        .collect();
    let names: Vec<&str> = query.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["SAMLRequest", "RelayState", "SigAlg", "Signature"]);
    assert_eq!(
        query[2].1,
        "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
    );
    // pysaml2 checks the signature against the certificate of the metadata it read.
    let post = browser.sign_in(&url, "alice@mail.example").await;
    let response = browser.post(&post).await;
    assert_eq!(location(&response), RETURN_URL, "{}", world.gateway.logs());

    // A request whose signature no longer matches is one pysaml2 refuses.
    let mut browser = Browser::default();
    let url = browser.start(&world, "alice@mail.example").await;
    let forged = url.replace("RelayState=", "RelayState=x");
    let page = client().get(&forged).send().await.unwrap();
    assert_eq!(page.status(), 400);
}

/// A response the identity provider was told to make as `mode` says: refused at the dialer,
/// no session, and nothing reached an XSP.
async fn refused(mode: &str, extra: Value, reason: &str) -> World {
    let world = world().await;
    world.tamper(mode, extra).await;
    let before = world.xsp_requests().len();
    let (response, browser, _) = sign_on(&world, "alice@mail.example").await;
    assert_eq!(response.status(), 303, "{mode}");
    assert_eq!(
        location(&response),
        REFUSED,
        "{mode}: {}",
        world.gateway.logs()
    );
    assert!(
        browser.gateway.get("xsigate_session").is_none(),
        "{mode}: a session"
    );
    let reached = &world.xsp_requests()[before..];
    assert!(reached.is_empty(), "{mode}: {reached:?} reached an XSP");
    // Refused by the check this lie is for, not by an accident of the lie.
    // The log is written beside the answer, not before it.
    let logs = world
        .gateway
        .wait_log(|logs| logs.contains("single sign-on refused"))
        .await;
    let refusal = logs
        .lines()
        .find(|line| line.contains("single sign-on refused"))
        .unwrap_or_default();
    assert!(refusal.contains(reason), "{mode}: {refusal}");
    // Every line is the gateway's own: libxml2 and xmlsec print nothing of the document.
    let foreign: Vec<&str> = logs
        .lines()
        .filter(|line| !line.contains(" xsigate") && !line.trim().is_empty())
        .collect();
    assert!(
        foreign.is_empty(),
        "{mode}: lines from elsewhere: {foreign:#?}"
    );
    world
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_response_is_refused() {
    refused(
        "unsigned",
        json!({}),
        "no valid signature by the identity provider's certificate",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_signed_by_another_key_is_refused() {
    refused(
        "other_key",
        json!({}),
        "no valid signature by the identity provider's certificate",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_supplied_in_key_info_only_is_refused() {
    refused(
        "keyinfo_only",
        json!({}),
        "no valid signature by the identity provider's certificate",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsigned_assertion_beside_the_signed_one_is_refused() {
    refused("wrap_sibling", json!({}), "more than one assertion").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_signed_assertion_moved_under_extensions_is_refused() {
    refused("wrap_extension", json!({}), "more than one assertion").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_assertion_for_another_audience_is_refused() {
    refused(
        "audience",
        json!({}),
        "the assertion is for another audience",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_for_another_destination_is_refused() {
    refused(
        "destination",
        json!({}),
        "the assertion is for another recipient",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signed_response_for_another_destination_is_refused() {
    refused(
        "destination_signed",
        json!({}),
        "the response is for another destination",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsolicited_response_is_refused() {
    refused(
        "unsolicited",
        json!({}),
        "the response answers no request of this flow",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_response_to_another_request_is_refused() {
    refused(
        "other_flow",
        json!({}),
        "the response answers no request of this flow",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_response_is_refused() {
    refused("expired", json!({}), "the response has expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha1_is_refused_when_not_allowed() {
    refused(
        "sha1",
        json!({}),
        "a signature algorithm that is not allowed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sha1_is_accepted_where_the_operator_allows_it() {
    let world = world_with(Setup {
        allow_sha1: true,
        ..Setup::default()
    })
    .await;
    world.tamper("sha1", json!({})).await;
    let (response, browser, post) = sign_on(&world, "alice@mail.example").await;
    assert!(post.xml().contains("xmldsig#rsa-sha1"));
    assert_eq!(location(&response), RETURN_URL, "{}", world.gateway.logs());
    assert!(browser.gateway.get("xsigate_session").is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_comment_inside_the_name_id_is_refused() {
    refused("comment", json!({}), "a comment").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_doctype_with_entities_is_refused() {
    refused("doctype_entities", json!({}), "a DOCTYPE").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_doctype_with_an_external_reference_is_refused_and_nothing_is_fetched() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let world = refused("doctype_external", json!({ "url": url }), "a DOCTYPE").await;
    // Whatever parsed the document would have connected by now.
    let connection = tokio::time::timeout(Duration::from_millis(500), listener.accept()).await;
    assert!(
        connection.is_err(),
        "something fetched the external reference"
    );
    drop(world);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_transported_by_rsa_pkcs1_v1_5_is_refused() {
    refused(
        "encrypted_rsa15",
        json!({}),
        "an encryption algorithm that is not allowed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_response_is_refused() {
    let world = world().await;
    let (response, victim, post) = sign_on(&world, "alice@mail.example").await;
    assert_eq!(location(&response), RETURN_URL, "{}", world.gateway.logs());
    let before = world.xsp_requests().len();
    // Posted again as it was, even with the victim's cookies: its flow is gone.
    let mut again = victim.clone();
    let replayed = again.post(&post).await;
    assert_eq!(replayed.status(), 400);
    assert!(again.gateway.get("xsigate_session") == victim.gateway.get("xsigate_session"));
    // Posted into a live flow of the attacker's own: that flow asked for something else.
    let mut attacker = Browser::default();
    let url = attacker.start(&world, "alice@mail.example").await;
    let relay_state = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .find(|(name, _)| name == "RelayState")
        .unwrap()
        .1
        .into_owned();
    let replayed = attacker
        .post(&SamlPost {
            relay_state,
            ..post
        })
        .await;
    assert_eq!(location(&replayed), REFUSED);
    assert!(attacker.gateway.get("xsigate_session").is_none());
    let reached = &world.xsp_requests()[before..];
    assert!(reached.is_empty(), "{reached:?} reached an XSP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_address_two_users_share_matches_nobody() {
    let world = world().await;
    let (response, browser, _) = sign_on(&world, "shared@mail.example").await;
    assert_eq!(location(&response), REFUSED);
    assert!(browser.gateway.get("xsigate_session").is_none());
}

/// Chromium signs in through the reference dialer with SAML, on the identity provider's own
/// form, and reads its own profile; then an address two BroadWorks users share is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chromium_signs_in_with_saml_and_reads_its_own_profile() {
    let dialer_port = free_port();
    let world = world_with(Setup {
        dialer_port,
        ..Setup::default()
    })
    .await;
    let _dialer = Dialer::serve(dialer_port, &world.gateway).await;
    let (report, brief) = chromium_sign_in(&world.gateway, dialer_port, "saml", IDP_PASSWORD).await;
    assert_eq!(report["profile_user"], "alice@acme.example", "{brief:#}");
    assert_eq!(
        report["refusal_status"], "Single sign-on refused: invalid_credentials",
        "{brief:#}"
    );
    let dialer = format!("http://127.0.0.1:{dialer_port}/");
    assert_eq!(report["address_after_login"], dialer.as_str(), "{brief:#}");
    // Nothing the gateway answered carries an assertion or a BroadWorks credential.
    for response in report["bodies"].as_array().unwrap() {
        let url = response["url"].as_str().unwrap();
        let body = response["body"].as_str().unwrap();
        if url.starts_with(&world.gateway.url("/")) {
            for secret in ["admin-pw", "SAMLResponse", "Assertion", "JSESSIONID"] {
                assert!(!body.contains(secret), "{url} answered {secret}");
            }
        }
    }
    assert_eq!(report["storage"]["session"], "{}", "{brief:#}");
    assert_eq!(report["storage"]["cookies"], "", "{brief:#}");
    assert_eq!(report["console_errors"], json!([]), "{brief:#}");
}
