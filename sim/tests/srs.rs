//! The SRS stand-in follows the Client Login API: the expected Origin, Basic logins with and
//! without configuration, cookie sessions, opt-in CSRF, the keep-alive rule and `/version`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use xsi_sim::srs::{Srs, SrsFault, SrsSettings};

const ORIGIN: &str = "https://desktop.example";

async fn start() -> std::sync::Arc<Srs> {
    Srs::start(
        SrsSettings {
            origin: ORIGIN.to_owned(),
            agents: HashMap::from([("agent@acme.example".to_owned(), "pw".to_owned())]),
            keep_alive: Duration::from_millis(1500),
            version: "8.5.500.07".to_owned(),
        },
        SocketAddr::from(([127, 0, 0, 1], 0)),
    )
    .await
    .unwrap()
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn cookie_of(response: &reqwest::Response) -> String {
    let value = response.headers()["set-cookie"].to_str().unwrap();
    value.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_origin_decides_cors_and_every_call_needs_it() {
    let srs = start().await;
    let client = client();
    let me = format!("{}/api/v2/me", srs.url());

    let allowed = client
        .request(reqwest::Method::OPTIONS, &me)
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap();
    assert_eq!(allowed.status(), 200);
    assert_eq!(allowed.headers()["access-control-allow-origin"], ORIGIN);
    assert_eq!(
        allowed.headers()["access-control-allow-credentials"],
        "true"
    );
    assert!(
        allowed.headers()["access-control-expose-headers"]
            .to_str()
            .unwrap()
            .contains("X-CSRF-TOKEN")
    );

    let other = client
        .request(reqwest::Method::OPTIONS, &me)
        .header("origin", "https://evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 403);
    assert!(other.headers().get("access-control-allow-origin").is_none());

    let none = client
        .get(&me)
        .basic_auth("agent@acme.example", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 400, "Origin is mandatory");

    let version: Value = client
        .get(format!("{}/version", srs.url()))
        .header("origin", ORIGIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(version["version"], "8.5.500.07");
}

#[tokio::test]
async fn logins_check_credentials_and_configuration_and_sessions_need_pings() {
    let srs = start().await;
    let client = client();
    let me = format!("{}/api/v2/me", srs.url());
    let login = |password: &str, body: Option<Value>| {
        let request = match body {
            Some(body) => client.post(&me).json(&body),
            None => client.get(&me),
        };
        request
            .header("origin", ORIGIN)
            .basic_auth("agent@acme.example", Some(password))
            .send()
    };

    assert_eq!(login("wrong", None).await.unwrap().status(), 401);
    for bad in [
        json!({ "server": "https://rws" }),
        json!([{ "name": "place", "value": "P1" }]),
        json!([{ "name": "server", "value": "rws-without-scheme" }]),
        json!([{ "name": "server", "value": "https://rws" }, { "name": "devices", "value": [{ "dn": "100" }] }]),
        json!([{ "name": "server", "value": "https://rws" }, { "name": "hotseat", "value": true }]),
    ] {
        assert_eq!(
            login("pw", Some(bad.clone())).await.unwrap().status(),
            400,
            "{bad}"
        );
    }
    let configuration = json!([
        { "name": "server", "value": "https://rws1" },
        { "name": "peer_server", "value": "https://rws2" },
        { "name": "place", "value": "P1" },
        { "name": "devices", "value": [{ "dn": "100", "switch": "SW" }] },
    ]);
    srs.set_fault(SrsFault {
        rws_down: vec!["https://rws1".to_owned()],
        ..SrsFault::default()
    });
    assert_eq!(
        login("pw", Some(configuration.clone()))
            .await
            .unwrap()
            .status(),
        503
    );
    srs.set_fault(SrsFault::default());
    let opened = login("pw", Some(configuration.clone())).await.unwrap();
    assert_eq!(opened.status(), 200);
    assert!(
        opened.headers().get("x-csrf-token").is_none(),
        "no CSRF token without the opt-in"
    );
    let cookie = cookie_of(&opened);
    assert_eq!(srs.sessions()[0].configuration, Some(configuration));

    let ping = || {
        client
            .get(format!("{}/ping", srs.url()))
            .header("origin", ORIGIN)
            .header("cookie", &cookie)
            .send()
    };
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(ping().await.unwrap().status(), 200, "pinged in time");
    }
    tokio::time::sleep(Duration::from_millis(2000)).await;
    assert_eq!(
        ping().await.unwrap().status(),
        401,
        "a late ping finds the session dropped"
    );
    assert!(!srs.sessions()[0].active);

    // Without the opt-in, the cookie alone ends the session.
    let again = cookie_of(&login("pw", None).await.unwrap());
    let end = client
        .post(&me)
        .header("origin", ORIGIN)
        .header("cookie", &again)
        .json(&json!({ "operationName": "EndContactCenterSession" }))
        .send()
        .await
        .unwrap();
    assert_eq!(end.status(), 200);
    assert_eq!(end.json::<Value>().await.unwrap()["statusCode"], 0);
    assert!(srs.sessions().iter().any(|s| s.ended));
}
