//! The simulator's XSI-Actions over real HTTP: authentication, sessions, scope, every resource.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{basic, start};
use xsi_sim::Simulator;
use xsi_sim::seed::Seed;
use xsi_sim::xsp::AuthKind;

const SEED: &str = r#"
[[users]]
user_id = "alice@acme.example"
password = "alice-pw"
service_provider = "acme"
is_enterprise = true
group = "sales"
first_name = "Alice"
last_name = "Zoë <Anders>"
number = "2025550101"
extension = "0101"
email = "alice@acme.example"

[[users]]
user_id = "bob@acme.example"
password = "bob-pw"
service_provider = "acme"
group = "support"

[[admins]]
user_id = "admin@acme.example"
password = "admin-pw"
scope = { level = "service_provider", service_provider = "acme" }

[[admins]]
user_id = "sales-admin@acme.example"
password = "sales-pw"
scope = { level = "group", service_provider = "acme", group = "sales" }
"#;

const ACTIONS: &str = "/com.broadsoft.xsi-actions/v2.0";

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().build().unwrap()
}

fn url(sim: &Simulator, xsp: usize, path: &str) -> String {
    format!("http://{}{path}", sim.xsp_addrs()[xsp])
}

#[tokio::test]
async fn unauthenticated_requests_get_the_basic_challenge() {
    let (sim, _) = start(SEED).await;
    let http = client();
    for auth in [
        None,
        Some(basic("alice@acme.example", "wrong")),
        Some(basic("nobody@acme.example", "x")),
    ] {
        let mut request = http.get(url(
            &sim,
            0,
            &format!("{ACTIONS}/user/alice@acme.example/profile"),
        ));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401);
        assert_eq!(
            response.headers()["www-authenticate"],
            "Basic realm=\"XtendedServicesInterface\""
        );
        assert!(response.headers().get("set-cookie").is_none());
    }
    let kinds: Vec<AuthKind> = sim.platform().requests().iter().map(|r| r.auth).collect();
    assert_eq!(
        kinds,
        [AuthKind::None, AuthKind::Rejected, AuthKind::Rejected]
    );
}

#[tokio::test]
async fn profile_is_served_with_a_session_cookie_per_context_and_xsp() {
    let (sim, _) = start(SEED).await;
    let http = client();
    let auth = basic("alice@acme.example", "alice-pw");
    let profile = format!("{ACTIONS}/user/alice@acme.example/profile");

    let response = http
        .get(url(&sim, 0, &profile))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/xml;charset=ISO-8859-1"
    );
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with("JSESSIONID="), "{cookie}");
    assert!(
        cookie.ends_with("; Path=/com.broadsoft.xsi-actions; HttpOnly"),
        "{cookie}"
    );
    let body = response.text().await.unwrap();
    assert!(body.starts_with(r#"<?xml version="1.0" encoding="ISO-8859-1"?><Profile xmlns="http://schema.broadsoft.com/xsi" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><details><userId>alice@acme.example</userId><firstName>Alice</firstName><lastName>Zo&#235; &lt;Anders&gt;</lastName><groupId>sales</groupId><serviceProvider isEnterprise="true">acme</serviceProvider><number>2025550101</number><extension>0101</extension></details><additionalDetails><emailAddress>alice@acme.example</emailAddress></additionalDetails>"#), "{body}");

    // The cookie spares the password check on the XSP that issued it, and only there.
    let session = cookie.split(';').next().unwrap().to_owned();
    for xsp in [0, 1] {
        let response = http
            .get(url(&sim, xsp, &profile))
            .header("authorization", &auth)
            .header("cookie", &session)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers().get("set-cookie").is_some(), xsp == 1);
    }
    // A cookie never replaces the Authorization header.
    let response = http
        .get(url(&sim, 0, &profile))
        .header("cookie", &session)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);

    let records = sim.platform().requests();
    let seen: Vec<(usize, AuthKind)> = records.iter().map(|r| (r.xsp, r.auth)).collect();
    assert_eq!(
        seen,
        [
            (0, AuthKind::Basic),
            (0, AuthKind::Cookie),
            (1, AuthKind::Basic),
            (0, AuthKind::None)
        ]
    );
    assert_eq!(records[0].auth_user.as_deref(), Some("alice@acme.example"));
}

#[tokio::test]
async fn expired_sessions_reauthenticate_or_are_challenged_when_the_xsp_is_strict() {
    let (sim, _) = start(SEED).await;
    let control = format!("http://{}", sim.control_addr());
    let http = client();
    let auth = basic("alice@acme.example", "alice-pw");
    let profile = url(
        &sim,
        0,
        &format!("{ACTIONS}/user/alice@acme.example/profile"),
    );
    let get = |cookie: Option<String>| {
        let mut request = http.get(&profile).header("authorization", &auth);
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        request.send()
    };
    let first = get(None).await.unwrap();
    let cookie = first.headers()["set-cookie"].to_str().unwrap().to_owned();
    let session = cookie.split(';').next().unwrap().to_owned();

    let expired: serde_json::Value = http
        .delete(format!("{control}/xsp/0/sessions"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(expired["expired"], 1);
    // BroadWorks authenticates a stale cookie's request afresh from its Basic credentials.
    let again = get(Some(session.clone())).await.unwrap();
    assert_eq!(again.status(), 200);
    let renewed = again.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert_ne!(renewed.split(';').next().unwrap(), session);

    // A strict XSP challenges the stale cookie instead, and still serves Basic alone.
    let strict = http
        .put(format!("{control}/xsp/0/fault"))
        .json(&serde_json::json!({"stale_session_status": 401}))
        .send()
        .await
        .unwrap();
    assert_eq!(strict.status(), 200);
    assert_eq!(get(Some(session)).await.unwrap().status(), 401);
    assert_eq!(get(None).await.unwrap().status(), 200);
    let auth_kinds: Vec<AuthKind> = sim.platform().requests().iter().map(|r| r.auth).collect();
    assert_eq!(
        auth_kinds,
        [
            AuthKind::Basic,
            AuthKind::Basic,
            AuthKind::Rejected,
            AuthKind::Basic
        ]
    );
}

#[tokio::test]
async fn users_reach_only_themselves_and_admins_only_their_scope() {
    let (sim, _) = start(SEED).await;
    let http = client();
    let cases = [
        (
            ("alice@acme.example", "alice-pw"),
            "alice@acme.example",
            200,
        ),
        (("alice@acme.example", "alice-pw"), "bob@acme.example", 403),
        (("admin@acme.example", "admin-pw"), "bob@acme.example", 200),
        (
            ("sales-admin@acme.example", "sales-pw"),
            "alice@acme.example",
            200,
        ),
        (
            ("sales-admin@acme.example", "sales-pw"),
            "bob@acme.example",
            403,
        ),
        (
            ("admin@acme.example", "admin-pw"),
            "ghost@acme.example",
            404,
        ),
    ];
    for ((user, password), target, status) in cases {
        let response = http
            .get(url(&sim, 0, &format!("{ACTIONS}/user/{target}/services")))
            .header("authorization", basic(user, password))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{user} -> {target}");
        let body = response.text().await.unwrap();
        if status != 200 {
            assert!(
                body.contains("<ErrorInfo xmlns=\"http://schema.broadsoft.com/xsi\"><summary>"),
                "{body}"
            );
            assert!(
                body.contains("<summaryEnglish>") && body.contains("<errorCode>"),
                "{body}"
            );
        } else {
            assert!(
                body.contains(&format!(
                    "<uri>/v2.0/user/{target}/services/donotdisturb</uri>"
                )),
                "{body}"
            );
        }
    }
}

#[tokio::test]
async fn service_settings_round_trip_through_put_and_get() {
    let (sim, _) = start(SEED).await;
    let http = client();
    let auth = basic("alice@acme.example", "alice-pw");
    let service = |name: &str| {
        url(
            &sim,
            1,
            &format!("{ACTIONS}/user/alice@acme.example/services/{name}"),
        )
    };
    let cases = [
        (
            "DoNotDisturb",
            "<DoNotDisturb xmlns=\"http://schema.broadsoft.com/xsi\"><active>true</active></DoNotDisturb>",
            "<DoNotDisturb xmlns=\"http://schema.broadsoft.com/xsi\"><active>true</active><ringSplash>false</ringSplash></DoNotDisturb>",
        ),
        (
            "callforwardingalways",
            "<CallForwardingAlways xmlns=\"http://schema.broadsoft.com/xsi\"><active>true</active><forwardToPhoneNumber>+15550100</forwardToPhoneNumber><ringSplash>true</ringSplash></CallForwardingAlways>",
            "<CallForwardingAlways xmlns=\"http://schema.broadsoft.com/xsi\"><active>true</active><forwardToPhoneNumber>+15550100</forwardToPhoneNumber><ringSplash>true</ringSplash></CallForwardingAlways>",
        ),
        (
            "RemoteOffice",
            "<RemoteOffice xmlns=\"http://schema.broadsoft.com/xsi\"><active>false</active><remoteOfficeNumber xs:nil=\"true\" xmlns:xs=\"http://www.w3.org/2001/XMLSchema-instance\"/></RemoteOffice>",
            "<RemoteOffice xmlns=\"http://schema.broadsoft.com/xsi\"><active>false</active></RemoteOffice>",
        ),
    ];
    for (name, put, expected) in cases {
        let response = http
            .put(service(name))
            .header("authorization", &auth)
            .body(put)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{name}");
        assert!(
            response.headers().get("content-type").is_none(),
            "a PUT answers with no content"
        );
        assert!(response.text().await.unwrap().is_empty());
        let body = http
            .get(service(name))
            .header("authorization", &auth)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.ends_with(expected), "{name}: {body}");
    }
    let user = sim
        .platform()
        .directory()
        .user("alice@acme.example")
        .unwrap()
        .clone();
    assert!(user.do_not_disturb.active && user.call_forwarding_always.active);

    for bad in [
        "<DoNotDisturb><active>maybe</active></DoNotDisturb>",
        "<DoNotDisturb><active>",
        "<CallForwardingAlways><active>true</active><forwardToPhoneNumber xsi:nil=\"true\"/></CallForwardingAlways>",
    ] {
        let name = if bad.contains("Forwarding") {
            "callforwardingalways"
        } else {
            "donotdisturb"
        };
        let response = http
            .put(service(name))
            .header("authorization", &auth)
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{bad}");
        assert!(response.text().await.unwrap().contains("<ErrorInfo"));
    }
}

#[tokio::test]
async fn portal_password_changes_for_self_with_old_password_and_for_admins_without() {
    let (sim, _) = start(SEED).await;
    let http = client();
    let portal = url(
        &sim,
        0,
        &format!("{ACTIONS}/user/alice@acme.example/profile/Password/Portal"),
    );
    let body = |old: Option<&str>, new: &str| match old {
        Some(old) => format!(
            "<Portal xmlns=\"http://schema.broadsoft.com/xsi\"><oldPassword>{old}</oldPassword><newPassword>{new}</newPassword></Portal>"
        ),
        None => format!(
            "<Portal xmlns=\"http://schema.broadsoft.com/xsi\"><newPassword>{new}</newPassword></Portal>"
        ),
    };
    let response = http
        .put(&portal)
        .header("authorization", basic("alice@acme.example", "alice-pw"))
        .body(body(Some("nope"), "next-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let response = http
        .put(&portal)
        .header("authorization", basic("alice@acme.example", "alice-pw"))
        .body(body(Some("alice-pw"), "next-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let old = http
        .get(url(
            &sim,
            0,
            &format!("{ACTIONS}/user/alice@acme.example/profile"),
        ))
        .header("authorization", basic("alice@acme.example", "alice-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(old.status(), 401, "the old password stops working");
    let response = http
        .put(&portal)
        .header("authorization", basic("admin@acme.example", "admin-pw"))
        .body(body(None, "reset-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let new = http
        .get(url(
            &sim,
            0,
            &format!("{ACTIONS}/user/alice@acme.example/profile"),
        ))
        .header("authorization", basic("alice@acme.example", "reset-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(new.status(), 200);
}

#[tokio::test]
async fn versions_and_unknown_resources() {
    let (sim, _) = start(SEED).await;
    let http = client();
    let auth = basic("bob@acme.example", "bob-pw");
    let versions = http
        .get(url(&sim, 0, &format!("{ACTIONS}/versions")))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(versions.status(), 200);
    assert!(
        versions
            .text()
            .await
            .unwrap()
            .contains("<Versions xmlns=\"http://schema.broadsoft.com/xsi\"><commands><baseline>")
    );
    let unknown = http
        .get(url(
            &sim,
            0,
            &format!("{ACTIONS}/user/bob@acme.example/services/nosuch"),
        ))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let method = http
        .delete(url(
            &sim,
            0,
            &format!("{ACTIONS}/user/bob@acme.example/profile"),
        ))
        .header("authorization", &auth)
        .send()
        .await
        .unwrap();
    assert_eq!(method.status(), 405);
}

#[tokio::test]
async fn control_api_observes_requests_and_kills_and_restores_an_xsp() {
    let (sim, _) = start(SEED).await;
    let http = client();
    let control = format!("http://{}", sim.control_addr());
    let profile = url(&sim, 1, &format!("{ACTIONS}/user/bob@acme.example/profile"));
    http.get(&profile)
        .header("authorization", basic("bob@acme.example", "bob-pw"))
        .send()
        .await
        .unwrap();
    let requests: serde_json::Value = http
        .get(format!("{control}/requests"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(requests[0]["xsp"], 1);
    assert_eq!(requests[0]["auth_user"], "bob@acme.example");
    assert_eq!(requests[0]["auth"], "basic");

    let stopped = http
        .post(format!("{control}/xsp/1/stop"))
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.status(), 200);
    assert!(
        http.get(&profile).send().await.is_err(),
        "a killed XSP refuses connections"
    );
    let started = http
        .post(format!("{control}/xsp/1/start"))
        .send()
        .await
        .unwrap();
    assert_eq!(started.status(), 200);
    let back = http
        .get(&profile)
        .header("authorization", basic("bob@acme.example", "bob-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(back.status(), 200);

    let user: serde_json::Value = http
        .get(format!("{control}/users/bob@acme.example"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(user["group"], "support");
    let mut changed = user.clone();
    changed["do_not_disturb"]["active"] = true.into();
    let put = http
        .put(format!("{control}/users/bob@acme.example"))
        .json(&changed)
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    let dnd = http
        .get(url(
            &sim,
            0,
            &format!("{ACTIONS}/user/bob@acme.example/services/donotdisturb"),
        ))
        .header("authorization", basic("bob@acme.example", "bob-pw"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(dnd.contains("<active>true</active>"), "{dnd}");
}

#[tokio::test]
async fn xsps_serve_https_with_a_self_signed_certificate_written_for_clients() {
    let dir = tempfile::tempdir().unwrap();
    let cert_out = dir.path().join("xsp.pem");
    let mut seed = toml::from_str::<Seed>(SEED).unwrap();
    seed.tls = Some(xsi_sim::seed::TlsSeed::SelfSigned {
        self_signed_cert_out: cert_out.clone(),
    });
    let sim = Simulator::start(seed).await.unwrap();
    let url = format!(
        "https://127.0.0.1:{}{ACTIONS}/user/alice@acme.example/profile",
        sim.xsp_addrs()[0].port()
    );
    let pem = std::fs::read(&cert_out).unwrap();
    let trusting = reqwest::Client::builder()
        .tls_certs_only(reqwest::Certificate::from_pem_bundle(&pem).unwrap())
        .build()
        .unwrap();
    let response = trusting
        .get(&url)
        .header("authorization", basic("alice@acme.example", "alice-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        client().get(&url).send().await.is_err(),
        "a client that does not trust the certificate fails"
    );
    // A stopped XSP comes back with the same certificate.
    assert!(sim.stop_xsp(0));
    assert!(sim.start_xsp(0).await.unwrap());
    let response = trusting
        .get(&url)
        .header("authorization", basic("alice@acme.example", "alice-pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn seeds_load_from_json_and_requests_are_counted_per_user() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.json");
    std::fs::write(
        &path,
        r#"{"users": [{"user_id": "dana@acme.example", "password": "dana-pw", "service_provider": "acme", "group": "g"}]}"#,
    )
    .unwrap();
    let sim = Simulator::start(Seed::from_file(&path).unwrap())
        .await
        .unwrap();
    let http = client();
    let profile = url(
        &sim,
        0,
        &format!("{ACTIONS}/user/dana@acme.example/profile"),
    );
    for _ in 0..3 {
        let response = http
            .get(&profile)
            .header("authorization", basic("Dana@acme.example", "dana-pw"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    http.get(&profile).send().await.unwrap();
    let counts: serde_json::Value = http
        .get(format!("http://{}/requests/by-user", sim.control_addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(counts, serde_json::json!({"-": 1, "dana@acme.example": 3}));

    std::fs::write(&path, r#"{"users": [{"user_id": "x"}]}"#).unwrap();
    let error = Seed::from_file(&path).unwrap_err().to_string();
    assert!(
        error.contains("seed.json") && error.contains("missing field"),
        "{error}"
    );
}

/// The Busy Lamp Field service: the monitored users with their details, set by user id only,
/// cleared by `xsi:nil`, limited to the watcher's service provider and never the watcher.
#[tokio::test]
async fn busy_lamp_field_lists_monitored_users_and_is_set_by_user_id() {
    let seed = format!(
        "{SEED}\n[[users]]\nuser_id = \"carol@other.example\"\npassword = \"carol-pw\"\n\
         service_provider = \"other\"\ngroup = \"g\"\n"
    );
    let (sim, _) = start(&seed).await;
    let http = client();
    let auth = basic("alice@acme.example", "alice-pw");
    let blf = url(
        &sim,
        0,
        &format!("{ACTIONS}/user/alice@acme.example/services/BusyLampField"),
    );
    let get = || async {
        let response = http
            .get(&blf)
            .header("authorization", &auth)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    };
    let put = |body: String| {
        let request = http.put(&blf).header("authorization", &auth).body(body);
        async move {
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    const NS: &str = "xmlns=\"http://schema.broadsoft.com/xsi\"";
    const XSI: &str = "xmlns:xsi=\"http://www.w3.org/2001/XMLSchema-instance\"";
    assert!(get().await.ends_with(&format!(
        "<BusyLampField {NS} {XSI}><monitoredUserList></monitoredUserList></BusyLampField>"
    )));

    let list = |ids: &[&str]| {
        let entries: String = ids
            .iter()
            .map(|id| {
                format!(
                    "<userDetails><userId>{id}</userId><firstName>ignored</firstName></userDetails>"
                )
            })
            .collect();
        format!(
            "<BusyLampField {NS}><monitoredUserList>{entries}</monitoredUserList></BusyLampField>"
        )
    };
    assert_eq!(
        put(list(&["BOB@acme.example", "bob@acme.example"])).await.0,
        200
    );
    // In the schema's order: userId, firstName, lastName, groupId, serviceProvider, number,
    // extension; the user id as the directory spells it, once.
    assert!(
        get().await.ends_with(&format!(
            "<BusyLampField {NS} {XSI}><monitoredUserList><userDetails><userId>bob@acme.example</userId>\
             <firstName xsi:nil=\"true\"/><lastName xsi:nil=\"true\"/><groupId>support</groupId>\
             <serviceProvider isEnterprise=\"false\">acme</serviceProvider></userDetails>\
             </monitoredUserList></BusyLampField>"
        )),
        "{}",
        get().await
    );

    for (ids, error) in [
        (&["carol@other.example"][..], "4008"),
        (&["nobody@acme.example"][..], "4008"),
        (&["alice@acme.example"][..], "4000"),
    ] {
        let (status, body) = put(list(ids)).await;
        assert_eq!(status, 400, "{ids:?}");
        assert!(body.contains(error), "{ids:?}: {body}");
    }
    assert!(
        get().await.contains("bob@acme.example"),
        "a refused PUT changes nothing"
    );

    // A PUT without the list leaves it; xsi:nil clears it.
    assert_eq!(put(format!("<BusyLampField {NS}/>")).await.0, 200);
    assert!(get().await.contains("bob@acme.example"));
    let nil =
        format!("<BusyLampField {NS} {XSI}><monitoredUserList xsi:nil=\"true\"/></BusyLampField>");
    assert_eq!(put(nil).await.0, 200);
    assert!(!get().await.contains("<userDetails>"));
}
