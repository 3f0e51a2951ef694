//! Call control over real HTTP and the call packages' events.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{EVENTS, Stream, acknowledge, basic, between, start};
use xsi_sim::Simulator;

const SEED: &str = r#"
[[users]]
user_id = "alice@acme.example"
password = "alice-pw"
service_provider = "acme"
group = "sales"
first_name = "Alice"
last_name = "Anders"
number = "2025550101"
extension = "0101"

[[users]]
user_id = "bob@acme.example"
password = "bob-pw"
service_provider = "acme"
group = "sales"
first_name = "Bob"
last_name = "Berg"
number = "2025550102"
extension = "0102"
"#;

const ACTIONS: &str = "/com.broadsoft.xsi-actions/v2.0";

fn auth(user: &str) -> String {
    let password = if user.starts_with("alice") {
        "alice-pw"
    } else {
        "bob-pw"
    };
    basic(user, password)
}

fn url(sim: &Simulator, path: &str) -> String {
    format!("http://{}{path}", sim.xsp_addrs()[0])
}

/// A channel with a call-package subscription for `user`; returns the stream after the initial event.
async fn watch(
    sim: &Simulator,
    http: &reqwest::Client,
    user: &str,
    package: &str,
) -> (Stream, String) {
    // One channel set per watcher: events of a set go to one of its channels.
    let set = format!("{user}-{package}");
    let (mut stream, _) = Stream::open(
        sim,
        http,
        0,
        &auth(user),
        &format!("<Channel><channelSetId>{set}</channelSetId></Channel>"),
    )
    .await;
    let response = http
        .post(url(sim, &format!("{EVENTS}/user/{user}")))
        .header("authorization", auth(user))
        .body(format!("<Subscription><event>{package}</event><channelSetId>{set}</channelSetId></Subscription>"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let initial = stream.next_event().await.unwrap();
    ack(sim, http, user, &initial).await;
    (stream, initial)
}

async fn ack(sim: &Simulator, http: &reqwest::Client, user: &str, event: &str) {
    assert_eq!(acknowledge(sim, http, 0, &auth(user), event).await, 200);
}

fn event_type(event: &str) -> String {
    between(event, "<xsi:eventData xsi1:type=\"xsi:", "\"")
}

#[tokio::test]
async fn a_call_between_two_users_alerts_is_answered_and_released() {
    let (sim, http) = start(SEED).await;
    let (mut alice_events, initial) = watch(&sim, &http, "alice@acme.example", "Basic Call").await;
    assert!(initial.contains(r#"<xsi:eventData xsi1:type="xsi:CallSubscriptionEvent"><xsi:hookStatus>On-Hook</xsi:hookStatus></xsi:eventData>"#), "{initial}");
    let (mut bob_events, _) = watch(&sim, &http, "bob@acme.example", "Advanced Call").await;

    let response = http
        .post(url(
            &sim,
            &format!("{ACTIONS}/user/alice@acme.example/calls/new?address=0102"),
        ))
        .header("authorization", auth("alice@acme.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let start = response.text().await.unwrap();
    let alice_call = between(&start, "<callId>", "</callId>");
    assert!(
        start
            .contains("<CallStartInfo xmlns=\"http://schema.broadsoft.com/xsi\"><callId>callhalf-"),
        "{start}"
    );

    let originated = alice_events.next_event().await.unwrap();
    assert_eq!(event_type(&originated), "CallOriginatedEvent");
    assert!(
        originated.contains(&format!("<xsi:call><xsi:callId>{alice_call}</xsi:callId>")),
        "{originated}"
    );
    assert!(originated.contains("<xsi:personality>Originator</xsi:personality><xsi:state>Alerting</xsi:state><xsi:remoteParty><xsi:name>Bob Berg</xsi:name><xsi:address>tel:0102</xsi:address><xsi:userId>bob@acme.example</xsi:userId><xsi:callType>Group</xsi:callType></xsi:remoteParty><xsi:startTime>"), "{originated}");
    ack(&sim, &http, "alice@acme.example", &originated).await;
    let received = bob_events.next_event().await.unwrap();
    assert_eq!(event_type(&received), "CallReceivedEvent");
    assert!(received.contains("<xsi:personality>Terminator</xsi:personality><xsi:state>Alerting</xsi:state><xsi:remoteParty><xsi:name>Alice Anders</xsi:name><xsi:address>tel:2025550101</xsi:address>"), "{received}");
    ack(&sim, &http, "bob@acme.example", &received).await;
    let bob_call = between(&received, "<xsi:callId>", "</xsi:callId>");

    let refused = http
        .put(url(
            &sim,
            &format!("{ACTIONS}/user/alice@acme.example/calls/{alice_call}/Talk"),
        ))
        .header("authorization", auth("alice@acme.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        refused.status(),
        400,
        "the caller cannot answer its own call"
    );
    let answered = http
        .put(url(
            &sim,
            &format!("{ACTIONS}/user/bob@acme.example/calls/{bob_call}/Talk"),
        ))
        .header("authorization", auth("bob@acme.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(answered.status(), 200);
    for (stream, user) in [
        (&mut alice_events, "alice@acme.example"),
        (&mut bob_events, "bob@acme.example"),
    ] {
        let event = stream.next_event().await.unwrap();
        assert_eq!(event_type(&event), "CallAnsweredEvent", "{user}");
        assert!(
            event.contains("<xsi:state>Active</xsi:state>") && event.contains("<xsi:answerTime>"),
            "{event}"
        );
        ack(&sim, &http, user, &event).await;
    }

    // XSI-Actions lists the call and gives its details, as its events did.
    let listed = http
        .get(url(&sim, &format!("{ACTIONS}/user/bob@acme.example/calls")))
        .header("authorization", auth("bob@acme.example"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        listed.contains(&format!("<Calls xmlns=\"http://schema.broadsoft.com/xsi\"><call><callId>{bob_call}</callId><uri>")),
        "{listed}"
    );
    let details = http
        .get(url(
            &sim,
            &format!("{ACTIONS}/user/bob@acme.example/calls/{bob_call}"),
        ))
        .header("authorization", auth("bob@acme.example"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        details.contains(&format!(
            "<Call xmlns=\"http://schema.broadsoft.com/xsi\"><callId>{bob_call}</callId>"
        )) && details.contains("<personality>Terminator</personality><state>Active</state>")
            && details.contains("<answerTime>"),
        "{details}"
    );
    let foreign = http
        .get(url(
            &sim,
            &format!("{ACTIONS}/user/alice@acme.example/calls/{bob_call}"),
        ))
        .header("authorization", auth("alice@acme.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 404, "a call of another user is not found");

    // A new subscription during the call starts off hook, with the call.
    let (_, during) = watch(&sim, &http, "bob@acme.example", "Standard Call").await;
    assert!(
        during.contains(&format!(
            "<xsi:calls><xsi:call><xsi:callId>{bob_call}</xsi:callId>"
        )),
        "{during}"
    );
    assert!(
        during.contains("<xsi:hookStatus>Off-Hook</xsi:hookStatus>"),
        "{during}"
    );

    let released = http
        .delete(url(
            &sim,
            &format!("{ACTIONS}/user/alice@acme.example/calls/{alice_call}"),
        ))
        .header("authorization", auth("alice@acme.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(released.status(), 200);
    let alice_release = alice_events.next_event().await.unwrap();
    assert_eq!(event_type(&alice_release), "CallReleasedEvent");
    assert!(
        alice_release.contains(
            "<xsi:state>Released</xsi:state><xsi:releasingParty>localRelease</xsi:releasingParty>"
        ),
        "{alice_release}"
    );
    let bob_release = bob_events.next_event().await.unwrap();
    assert!(
        bob_release.contains("<xsi:releasingParty>remoteRelease</xsi:releasingParty>")
            && bob_release.contains("<xsi:releaseTime>"),
        "{bob_release}"
    );
    let again = http
        .delete(url(
            &sim,
            &format!("{ACTIONS}/user/alice@acme.example/calls/{alice_call}"),
        ))
        .header("authorization", auth("alice@acme.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
}

#[tokio::test]
async fn network_calls_have_one_half_and_bad_commands_are_refused() {
    let (sim, http) = start(SEED).await;
    let (mut events, _) = watch(&sim, &http, "alice@acme.example", "Advanced Call").await;
    let response = http
        .post(url(
            &sim,
            &format!("{ACTIONS}/user/alice@acme.example/calls/New?address=%2B15550100"),
        ))
        .header("authorization", auth("alice@acme.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let originated = events.next_event().await.unwrap();
    assert!(
        originated.contains(
            "<xsi:address>tel:+15550100</xsi:address><xsi:callType>Network</xsi:callType>"
        ),
        "{originated}"
    );

    let cases = [
        (
            "POST",
            format!("{ACTIONS}/user/alice@acme.example/calls/new"),
            "alice@acme.example",
            400,
        ),
        (
            "PUT",
            format!("{ACTIONS}/user/alice@acme.example/calls/callhalf-99:0/Talk"),
            "alice@acme.example",
            404,
        ),
        (
            "POST",
            format!("{ACTIONS}/user/bob@acme.example/calls/new?address=0101"),
            "alice@acme.example",
            403,
        ),
        (
            "GET",
            format!("{ACTIONS}/user/alice@acme.example/calls/elsewhere"),
            "alice@acme.example",
            404,
        ),
    ];
    for (method, path, user, status) in cases {
        let request = http
            .request(method.parse().unwrap(), url(&sim, &path))
            .header("authorization", auth(user));
        assert_eq!(
            request.send().await.unwrap().status(),
            status,
            "{method} {path}"
        );
    }
}
