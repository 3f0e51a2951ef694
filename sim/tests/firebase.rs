//! The Firebase stand-in follows the Realtime Database REST API and Google's JWT-bearer token
//! endpoint: verbs, multi-path updates, `print=silent`, ETags, credentials, and an assertion
//! check that refuses forged signatures and wrong claims. Assertions are signed here with
//! jsonwebtoken, an implementation independent of both the stand-in and the plugin.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use xsi_sim::firebase::{Firebase, FirebaseSettings, SCOPES};

const SECRET: &str = "standin-secret-0123456789abcdefghijklmnop";
const CLIENT_EMAIL: &str = "firebase-sync@demo-xsigate.iam.gserviceaccount.com";

fn service_account() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/firebase/service-account.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

async fn start(token_lifetime: Duration) -> Arc<Firebase> {
    Firebase::start(
        FirebaseSettings {
            service_account: service_account().to_string(),
            secret: Some(SECRET.to_owned()),
            token_lifetime,
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap()
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// An assertion signed with `pem` carrying `claims`.
fn assertion(pem: &str, claims: &Value) -> String {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(pem.as_bytes()).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        claims,
        &key,
    )
    .unwrap()
}

fn claims(firebase: &Firebase) -> Value {
    json!({
        "iss": CLIENT_EMAIL,
        "scope": SCOPES.join(" "),
        "aud": firebase.token_url(),
        "iat": now(),
        "exp": now() + 3600,
    })
}

async fn grant(firebase: &Firebase, assertion: &str) -> (u16, Value) {
    let response = client()
        .post(firebase.token_url())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"
        ))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.json().await.unwrap())
}

#[tokio::test]
async fn the_token_endpoint_grants_only_well_signed_assertions_with_the_right_claims() {
    let firebase = start(Duration::from_secs(3600)).await;
    let pem = service_account()["private_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, granted) = grant(&firebase, &assertion(&pem, &claims(&firebase))).await;
    assert_eq!(status, 200, "{granted}");
    assert_eq!(granted["token_type"], "Bearer");
    assert_eq!(granted["expires_in"], 3600);

    let other = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/firebase/other-private-key.pem"
    ))
    .unwrap();
    let (status, answer) = grant(&firebase, &assertion(&other, &claims(&firebase))).await;
    assert_eq!(status, 400, "signed by another key");
    assert_eq!(answer["error_description"], "invalid signature");
    let mut tampered = assertion(&pem, &claims(&firebase));
    tampered.insert(tampered.find('.').unwrap() + 5, 'A');
    let cases = [
        ("iss", json!("someone@else.iam.gserviceaccount.com"), "iss"),
        ("aud", json!("https://oauth2.googleapis.com/token"), "aud"),
        ("scope", json!(SCOPES[0]), "scope"),
        ("exp", json!(now() - 10), "expired"),
        ("iat", json!(now() + 600), "future"),
    ];
    for (claim, value, why) in cases {
        let mut wrong = claims(&firebase);
        wrong[claim] = value;
        let (status, answer) = grant(&firebase, &assertion(&pem, &wrong)).await;
        assert_eq!(status, 400, "{claim}");
        assert_eq!(answer["error"], "invalid_grant");
        assert!(
            answer["error_description"].as_str().unwrap().contains(why),
            "{answer}"
        );
    }
    let (status, answer) = grant(&firebase, &tampered).await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let requests = firebase.token_requests();
    assert_eq!(requests.iter().filter(|r| r.granted).count(), 1);
}

#[tokio::test]
async fn every_request_needs_a_secret_or_a_live_access_token() {
    let firebase = start(Duration::from_secs(1)).await;
    let url = format!("{}/users/u1.json", firebase.url());
    let status = |r: reqwest::Response| r.status().as_u16();
    let anonymous = client().get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        anonymous.json::<Value>().await.unwrap(),
        json!({"error": "Permission denied"})
    );
    let wrong = client()
        .get(format!("{url}?auth=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(status(wrong), 401);
    let right = client()
        .get(format!("{url}?auth={SECRET}"))
        .send()
        .await
        .unwrap();
    assert_eq!(status(right), 200);

    let pem = service_account()["private_key"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, granted) = grant(&firebase, &assertion(&pem, &claims(&firebase))).await;
    let token = granted["access_token"].as_str().unwrap();
    let bearer = client().get(&url).bearer_auth(token).send().await.unwrap();
    assert_eq!(status(bearer), 200);
    let query = client()
        .get(format!("{url}?access_token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(status(query), 200);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let expired = client().get(&url).bearer_auth(token).send().await.unwrap();
    assert_eq!(status(expired), 401);
    assert_eq!(firebase.refused(), 3);
}

#[tokio::test]
async fn rest_verbs_multi_path_updates_silent_writes_and_etags() {
    let firebase = start(Duration::from_secs(3600)).await;
    let url =
        |path: &str, query: &str| format!("{}/{path}.json?auth={SECRET}{query}", firebase.url());
    let http = client();

    let put = http
        .put(url("users/u1", ""))
        .json(&json!({"dnd": {"active": true}, "voicemail": {"new": 1}}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 200);
    assert_eq!(put.json::<Value>().await.unwrap()["dnd"]["active"], true);

    let silent = http
        .patch(url("", "&print=silent"))
        .json(&json!({"users/u1/dnd/active": false, "users/u2/calls/c1": {"state": "Active"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(silent.status(), 204);
    assert_eq!(silent.bytes().await.unwrap().len(), 0);
    assert_eq!(
        firebase.get("users"),
        json!({"u1": {"dnd": {"active": false}, "voicemail": {"new": 1}}, "u2": {"calls": {"c1": {"state": "Active"}}}})
    );

    let overlapping = http
        .patch(url("", ""))
        .json(&json!({"users/u1": {}, "users/u1/dnd": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(overlapping.status(), 400);
    let bad_key = http
        .patch(url("users/u1", ""))
        .json(&json!({"a.b": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_key.status(), 400);
    let not_json = http
        .put(url("users/u1", ""))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 400);

    let pushed: Value = http
        .post(url("log", ""))
        .json(&json!({"x": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let name = pushed["name"].as_str().unwrap();
    assert_eq!(firebase.get(&format!("log/{name}/x")), 1);

    let read = http
        .get(url("users/u1/dnd", ""))
        .header("X-Firebase-ETag", "true")
        .send()
        .await
        .unwrap();
    let etag = read.headers()["etag"].to_str().unwrap().to_owned();
    let matching = http
        .put(url("users/u1/dnd", ""))
        .header("if-match", &etag)
        .json(&json!({"active": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(matching.status(), 200);
    let stale = http
        .put(url("users/u1/dnd", ""))
        .header("if-match", &etag)
        .json(&json!({"active": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 412);
    assert_ne!(stale.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(
        stale.json::<Value>().await.unwrap(),
        json!({"active": true})
    );

    let deleted = http.delete(url("users/u2", "")).send().await.unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(deleted.json::<Value>().await.unwrap(), Value::Null);
    assert_eq!(firebase.get("users/u2"), Value::Null);
    let missing: Value = http
        .get(url("nothing", ""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(missing, Value::Null);
    assert_eq!(
        http.get(format!("{}/users", firebase.url()))
            .send()
            .await
            .unwrap()
            .status(),
        404,
        "no .json"
    );

    // A stopped stand-in refuses connections, and comes back with its data.
    firebase.stop();
    assert!(http.get(url("users/u1", "")).send().await.is_err());
    firebase.restart().await.unwrap();
    let back: Value = http
        .get(url("users/u1/dnd", ""))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(back, json!({"active": true}));
}
