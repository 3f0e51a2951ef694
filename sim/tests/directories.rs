//! Directory searches and fault injection over real HTTP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use base64::Engine as _;
use xsi_sim::Simulator;
use xsi_sim::seed::Seed;

fn seed() -> Seed {
    let mut seed = Seed::generated(0, 1, "acme.example");
    let people = [
        (
            "ann@acme.example",
            "Ann",
            "Archer",
            "sales",
            "2025550101",
            "0101",
            "Ann.Archer@Acme.Example",
        ),
        (
            "ben@acme.example",
            "Ben",
            "Baker",
            "sales",
            "2025550102",
            "0102",
            "ben@acme.example",
        ),
        (
            "cat@acme.example",
            "Cat",
            "Cooper",
            "support",
            "2025550203",
            "0203",
            "cat@acme.example",
        ),
        (
            "dan@acme.example",
            "Dan",
            "Archer",
            "support",
            "3035550104",
            "0104",
            "dan@acme.example",
        ),
    ];
    for (id, first, last, group, number, extension, email) in people {
        let mut user = Seed::generated(1, 1, "x").users.remove(0);
        user.user_id = id.to_owned();
        user.password = "pw".to_owned();
        user.service_provider = "acme".to_owned();
        user.group = group.to_owned();
        user.first_name = Some(first.to_owned());
        user.last_name = Some(last.to_owned());
        user.number = Some(number.to_owned());
        user.extension = Some(extension.to_owned());
        user.email = Some(email.to_owned());
        seed.users.push(user);
    }
    // Someone of another service provider, never visible to acme.
    let mut other = Seed::generated(1, 1, "other.example").users.remove(0);
    other.last_name = Some("Archer".to_owned());
    seed.users.push(other);
    seed
}

async fn start() -> (Arc<Simulator>, reqwest::Client) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    (
        Simulator::start(seed()).await.unwrap(),
        reqwest::Client::new(),
    )
}

async fn search(
    sim: &Simulator,
    http: &reqwest::Client,
    directory: &str,
    query: &str,
) -> (u16, String) {
    let url = format!(
        "http://{}/com.broadsoft.xsi-actions/v2.0/user/ann@acme.example/directories/{directory}?{query}",
        sim.xsp_addrs()[0]
    );
    let auth = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("ann@acme.example:pw")
    );
    let response = http
        .get(url)
        .header("authorization", auth)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn user_ids(body: &str) -> Vec<String> {
    body.split("<userId>")
        .skip(1)
        .map(|s| s.split('<').next().unwrap().to_owned())
        .collect()
}

fn total(body: &str) -> usize {
    body.split("<totalAvailableRecords>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn searches_follow_broadworks_criteria() {
    let (sim, http) = start().await;
    let cases: [(&str, &str, &[&str]); 9] = [
        ("Enterprise", "emailAddress=ann.archer@acme.example", &[]),
        (
            "Enterprise",
            "emailAddress=ann.archer@acme.example/i",
            &["ann@acme.example"],
        ),
        ("Enterprise", "number=*0102", &["ben@acme.example"]),
        (
            "Enterprise",
            "number=202555*",
            &["ann@acme.example", "ben@acme.example", "cat@acme.example"],
        ),
        ("Enterprise", "extension=0104", &["dan@acme.example"]),
        (
            "Enterprise",
            "lastName=Archer",
            &["ann@acme.example", "dan@acme.example"],
        ),
        (
            "Enterprise",
            "firstName=cat/i&lastName=Baker&searchCriteriaModeOr=true",
            &["ben@acme.example", "cat@acme.example"],
        ),
        ("Group", "lastName=Archer", &["ann@acme.example"]),
        ("Enterprise", "name=*cooper*/i", &["cat@acme.example"]),
    ];
    for (directory, query, expected) in cases {
        let (status, body) = search(&sim, &http, directory, query).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(user_ids(&body), expected, "{directory}?{query}");
        assert_eq!(total(&body), expected.len(), "{query}");
    }
    let (_, body) = search(&sim, &http, "Enterprise", "").await;
    assert_eq!(
        total(&body),
        4,
        "the other service provider's user is never listed"
    );
    assert!(
        body.contains("<Enterprise xmlns=\"http://schema.broadsoft.com/xsi\""),
        "{body}"
    );
    assert!(
        body.contains("<enterpriseDirectory><directoryDetails><userId>ann@acme.example</userId>"),
        "{body}"
    );
    assert!(
        body.contains("<emailAddress>Ann.Archer@Acme.Example</emailAddress>"),
        "{body}"
    );
    let (_, body) = search(&sim, &http, "Group", "").await;
    assert!(body.contains("<groupDirectory>"), "{body}");
}

#[tokio::test]
async fn pages_are_sorted_and_bounded() {
    let (sim, http) = start().await;
    let (_, body) = search(&sim, &http, "Enterprise", "start=2&results=2").await;
    assert!(body.contains("<startIndex>2</startIndex><numberOfRecords>2</numberOfRecords><totalAvailableRecords>4</totalAvailableRecords>"), "{body}");
    // Sorted by last name, then user id: Archer (ann, dan), Baker, Cooper.
    assert_eq!(user_ids(&body), ["dan@acme.example", "ben@acme.example"]);
    let (_, body) = search(&sim, &http, "Enterprise", "sortColumn=firstName&results=1").await;
    assert_eq!(user_ids(&body), ["ann@acme.example"]);
    for bad in [
        "start=0",
        "results=0",
        "results=1001",
        "start=x",
        "sortColumn=age",
        "lastName=a/b",
    ] {
        let (status, body) = search(&sim, &http, "Enterprise", bad).await;
        assert_eq!(status, 400, "{bad}");
        assert!(body.contains("<ErrorInfo"), "{bad}: {body}");
    }
}

#[tokio::test]
async fn faults_make_an_xsp_fail_or_slow_until_cleared() {
    let (sim, http) = start().await;
    let control = format!("http://{}", sim.control_addr());
    let fault = http
        .put(format!("{control}/xsp/0/fault"))
        .body(r#"{"status": 503}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(fault.status(), 200);
    assert_eq!(search(&sim, &http, "Enterprise", "").await.0, 503);

    let slow = http
        .put(format!("{control}/xsp/0/fault"))
        .body(r#"{"delay_ms": 300}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(slow.status(), 200);
    let started = std::time::Instant::now();
    assert_eq!(search(&sim, &http, "Enterprise", "").await.0, 200);
    assert!(started.elapsed() >= std::time::Duration::from_millis(300));

    let cleared = http
        .delete(format!("{control}/xsp/0/fault"))
        .send()
        .await
        .unwrap();
    assert_eq!(cleared.status(), 200);
    assert_eq!(search(&sim, &http, "Enterprise", "").await.0, 200);

    let bad = http
        .put(format!("{control}/xsp/0/fault"))
        .body(r#"{"status": "soon"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let missing = http
        .put(format!("{control}/xsp/7/fault"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}
