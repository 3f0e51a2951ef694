//! XSI-Events subscriptions over real HTTP: initial events, events from XSI-Actions changes,
//! group and service-provider targets, refresh, delete, expiry, acknowledgements.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{EVENTS, Stream, acknowledge, basic, between, start};
use xsi_sim::Simulator;

const SEED: &str = r#"
[events]
channel_expires_min = 1
channel_expires_max = 300
subscription_expires_min = 1
subscription_expires_max = 300
event_timeout_seconds = 30
ack_timeout_seconds = 1

[[users]]
user_id = "alice@acme.example"
password = "alice-pw"
service_provider = "acme"
group = "sales"

[[users]]
user_id = "bob@acme.example"
password = "bob-pw"
service_provider = "acme"
group = "support"

[[admins]]
user_id = "sales-admin@acme.example"
password = "sales-pw"
scope = { level = "group", service_provider = "acme", group = "sales" }

[[admins]]
user_id = "acme-admin@acme.example"
password = "acme-pw"
scope = { level = "service_provider", service_provider = "acme" }
"#;

const ACTIONS: &str = "/com.broadsoft.xsi-actions/v2.0";

fn auth(user: &str) -> String {
    let password = match user.split('@').next().unwrap() {
        "alice" => "alice-pw",
        "bob" => "bob-pw",
        "sales-admin" => "sales-pw",
        _ => "acme-pw",
    };
    basic(user, password)
}

fn xsp_url(sim: &Simulator, xsp: usize, path: &str) -> String {
    format!("http://{}{path}", sim.xsp_addrs()[xsp])
}

async fn subscribe(
    sim: &Simulator,
    http: &reqwest::Client,
    user: &str,
    target: &str,
    body: &str,
) -> (u16, String) {
    let response = http
        .post(xsp_url(sim, 0, &format!("{EVENTS}/{target}")))
        .header("authorization", auth(user))
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn put_dnd(sim: &Simulator, http: &reqwest::Client, user: &str, active: bool) {
    let response = http
        .put(xsp_url(sim, 1, &format!("{ACTIONS}/user/{user}/services/DoNotDisturb")))
        .header("authorization", auth(user))
        .body(format!("<DoNotDisturb xmlns=\"http://schema.broadsoft.com/xsi\"><active>{active}</active></DoNotDisturb>"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn a_user_subscription_starts_with_state_and_follows_changes() {
    let (sim, http) = start(SEED).await;
    let (mut stream, _) = Stream::open(
        &sim,
        &http,
        0,
        &auth("alice@acme.example"),
        "<Channel><channelSetId>alice-set</channelSetId><expires>300</expires></Channel>",
    )
    .await;
    let (status, body) = subscribe(
        &sim,
        &http,
        "alice@acme.example",
        "user/alice@acme.example",
        r#"<Subscription xmlns="http://schema.broadsoft.com/xsi"><event>Do Not Disturb</event><expires>3600</expires><channelSetId>alice-set</channelSetId><applicationId>dialer</applicationId></Subscription>"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let subscription_id = between(&body, "<subscriptionId>", "</subscriptionId>");
    assert!(body.ends_with(&format!("<subscriptionId>{subscription_id}</subscriptionId><expires>300</expires></Subscription>")), "{body}");

    let initial = stream.next_event().await.unwrap();
    let event_id = between(&initial, "<xsi:eventID>", "</xsi:eventID>");
    assert_eq!(
        initial,
        format!(
            r#"<?xml version="1.0" encoding="UTF-8"?><xsi:Event xmlns:xsi="http://schema.broadsoft.com/xsi" xmlns:xsi1="http://www.w3.org/2001/XMLSchema-instance" xsi1:type="xsi:SubscriptionEvent"><xsi:eventID>{event_id}</xsi:eventID><xsi:sequenceNumber>1</xsi:sequenceNumber><xsi:userId>alice@acme.example</xsi:userId><xsi:externalApplicationId>dialer</xsi:externalApplicationId><xsi:subscriptionId>{subscription_id}</xsi:subscriptionId><xsi:channelId>{}</xsi:channelId><xsi:targetId>alice@acme.example</xsi:targetId><xsi:eventData xsi1:type="xsi:DoNotDisturbEvent"><xsi:info><xsi:active>false</xsi:active><xsi:ringSplash>false</xsi:ringSplash></xsi:info></xsi:eventData></xsi:Event>"#,
            stream.id
        )
    );
    assert_eq!(
        acknowledge(&sim, &http, 1, &auth("alice@acme.example"), &initial).await,
        404,
        "acks go to the channel's XSP"
    );
    assert_eq!(
        acknowledge(&sim, &http, 0, &auth("alice@acme.example"), &initial).await,
        200
    );
    assert_eq!(
        acknowledge(&sim, &http, 0, &auth("alice@acme.example"), &initial).await,
        404,
        "an event is acknowledged once"
    );

    put_dnd(&sim, &http, "alice@acme.example", true).await;
    let change = stream.next_event().await.unwrap();
    assert!(
        change.contains("<xsi:sequenceNumber>2</xsi:sequenceNumber>"),
        "{change}"
    );
    assert!(
        change.contains("<xsi:info><xsi:active>true</xsi:active>"),
        "{change}"
    );
    assert_eq!(
        acknowledge(&sim, &http, 0, &auth("alice@acme.example"), &change).await,
        200
    );

    // An unchanged PUT sends nothing; the next real change does.
    put_dnd(&sim, &http, "alice@acme.example", true).await;
    put_dnd(&sim, &http, "alice@acme.example", false).await;
    let change = stream.next_event().await.unwrap();
    assert!(
        change.contains("<xsi:sequenceNumber>3</xsi:sequenceNumber>")
            && change.contains("<xsi:active>false</xsi:active>"),
        "{change}"
    );
    acknowledge(&sim, &http, 0, &auth("alice@acme.example"), &change).await;
}

#[tokio::test]
async fn package_lists_get_every_initial_event_and_control_changes_are_published() {
    let (sim, http) = start(SEED).await;
    let (mut stream, _) = Stream::open(
        &sim,
        &http,
        0,
        &auth("bob@acme.example"),
        "<Channel><channelSetId>bob-set</channelSetId><expires>300</expires></Channel>",
    )
    .await;
    let (status, _) = subscribe(
        &sim,
        &http,
        "bob@acme.example",
        "user/bob@acme.example",
        "<Subscription><eventPackageList><event>Advanced Call</event><event>Voice Mail Message Summary</event><event>Call Forwarding Always</event><event>Remote Office</event></eventPackageList><expires>300</expires><channelSetId>bob-set</channelSetId></Subscription>",
    )
    .await;
    assert_eq!(status, 200);
    let mut kinds = Vec::new();
    for _ in 0..4 {
        let event = stream.next_event().await.unwrap();
        kinds.push(between(&event, "<xsi:eventData xsi1:type=\"xsi:", "\""));
        if event.contains("CallSubscriptionEvent") {
            assert!(
                event.contains("<xsi:hookStatus>On-Hook</xsi:hookStatus>"),
                "{event}"
            );
            assert!(
                event.contains("<xsi:externalApplicationId>default</xsi:externalApplicationId>"),
                "{event}"
            );
        }
        acknowledge(&sim, &http, 0, &auth("bob@acme.example"), &event).await;
    }
    assert_eq!(
        kinds,
        [
            "CallSubscriptionEvent",
            "VoiceMailMessageSummaryEvent",
            "CallForwardingAlwaysEvent",
            "RemoteOfficeEvent"
        ]
    );

    let control = format!("http://{}/users/bob@acme.example", sim.control_addr());
    let mut user: serde_json::Value = http
        .get(&control)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    user["voice_mail"]["new_messages"] = 2.into();
    user["remote_office"] =
        serde_json::json!({"active": true, "remote_office_number": "6045550100"});
    assert_eq!(
        http.put(&control)
            .json(&user)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Events of one change arrive in package order, but find each by type rather than rely on it.
    let changes = [
        stream.next_event().await.unwrap(),
        stream.next_event().await.unwrap(),
    ];
    let of_type = |kind: &str| {
        changes
            .iter()
            .find(|e| e.contains(kind))
            .unwrap_or_else(|| panic!("no {kind}: {changes:?}"))
    };
    assert!(
        of_type("RemoteOfficeEvent").contains("<xsi:info><xsi:active>true</xsi:active><xsi:remoteOfficeNumber>tel:6045550100</xsi:remoteOfficeNumber></xsi:info>")
    );
    assert!(
        of_type("VoiceMailMessageSummaryEvent").contains(
            "<xsi:messageSummary><xsi:newMessages>2</xsi:newMessages></xsi:messageSummary>"
        )
    );
}

#[tokio::test]
async fn collection_targets_follow_admin_scope_without_initial_events() {
    let (sim, http) = start(SEED).await;
    let (mut stream, _) = Stream::open(
        &sim,
        &http,
        0,
        &auth("sales-admin@acme.example"),
        "<Channel><channelSetId>sales</channelSetId><expires>300</expires></Channel>",
    )
    .await;
    let body = "<Subscription><event>Do Not Disturb</event><expires>300</expires><channelSetId>sales</channelSetId></Subscription>";
    let refusals = [
        ("alice@acme.example", "user/bob@acme.example", 403),
        ("alice@acme.example", "system", 403),
        ("alice@acme.example", "serviceprovider/acme", 403),
        ("sales-admin@acme.example", "serviceprovider/acme", 403),
        (
            "sales-admin@acme.example",
            "enterprise/acme/group/support",
            403,
        ),
        ("sales-admin@acme.example", "user/ghost@acme.example", 404),
    ];
    for (user, target, status) in refusals {
        assert_eq!(
            subscribe(&sim, &http, user, target, body).await.0,
            status,
            "{user} -> {target}"
        );
    }
    let (status, _) = subscribe(
        &sim,
        &http,
        "sales-admin@acme.example",
        "serviceprovider/acme/group/sales",
        body,
    )
    .await;
    assert_eq!(status, 200);

    put_dnd(&sim, &http, "bob@acme.example", true).await;
    put_dnd(&sim, &http, "alice@acme.example", true).await;
    let event = stream.next_event().await.unwrap();
    assert!(
        event.contains("<xsi:sequenceNumber>1</xsi:sequenceNumber>"),
        "no initial event for a group target: {event}"
    );
    assert!(
        event.contains("<xsi:userId>sales-admin@acme.example</xsi:userId>"),
        "{event}"
    );
    assert!(
        event.contains("<xsi:targetId>alice@acme.example</xsi:targetId>"),
        "only users of the group: {event}"
    );
    assert_eq!(
        acknowledge(&sim, &http, 0, &auth("sales-admin@acme.example"), &event).await,
        200
    );

    let views: serde_json::Value = http
        .get(format!("http://{}/subscriptions", sim.control_addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(views[0]["target_type"], "Group");
    assert_eq!(views[0]["events_sent"], 1);
}

#[tokio::test]
async fn subscriptions_are_read_refreshed_deleted_and_expire() {
    let (sim, http) = start(SEED).await;
    let (mut stream, _) = Stream::open(
        &sim,
        &http,
        0,
        &auth("alice@acme.example"),
        "<Channel><channelSetId>s</channelSetId><expires>300</expires></Channel>",
    )
    .await;
    let (_, body) = subscribe(&sim, &http, "alice@acme.example", "user/alice@acme.example", "<Subscription><event>Do Not Disturb</event><expires>100</expires><channelSetId>s</channelSetId><applicationId>app</applicationId></Subscription>").await;
    let id = between(&body, "<subscriptionId>", "</subscriptionId>");
    let initial = stream.next_event().await.unwrap();
    acknowledge(&sim, &http, 0, &auth("alice@acme.example"), &initial).await;

    let subscription_url = xsp_url(&sim, 1, &format!("{EVENTS}/subscription/{id}"));
    let read = http
        .get(&subscription_url)
        .header("authorization", auth("alice@acme.example"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(read.contains(&format!("<subscriptionId>{id}</subscriptionId><subscriberId>alice@acme.example</subscriberId><targetIdType>User</targetIdType><targetId>alice@acme.example</targetId><event>Do Not Disturb</event><expires>")), "{read}");
    assert!(
        read.ends_with(
            "<channelSetId>s</channelSetId><applicationId>app</applicationId></Subscription>"
        ),
        "{read}"
    );
    let foreign = http
        .get(&subscription_url)
        .header("authorization", auth("bob@acme.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);

    let refreshed = http
        .put(&subscription_url)
        .header("authorization", auth("alice@acme.example"))
        .body("<Subscription><expires>1</expires></Subscription>")
        .send()
        .await
        .unwrap();
    assert_eq!(refreshed.status(), 200);
    assert!(
        refreshed
            .text()
            .await
            .unwrap()
            .contains("<expires>1</expires>")
    );
    let again = stream.next_event().await.unwrap();
    assert!(
        again.contains("DoNotDisturbEvent")
            && again.contains("<xsi:sequenceNumber>2</xsi:sequenceNumber>"),
        "a refresh resends the state: {again}"
    );
    acknowledge(&sim, &http, 0, &auth("alice@acme.example"), &again).await;
    let terminated = stream.next_event().await.unwrap();
    assert!(
        terminated.contains(r#"<xsi:eventData xsi1:type="xsi:SubscriptionTerminatedEvent"/>"#),
        "{terminated}"
    );
    acknowledge(&sim, &http, 0, &auth("alice@acme.example"), &terminated).await;
    assert_eq!(
        http.get(&subscription_url)
            .header("authorization", auth("alice@acme.example"))
            .send()
            .await
            .unwrap()
            .status(),
        403
    );

    let (_, body) = subscribe(&sim, &http, "alice@acme.example", "user/alice@acme.example", "<Subscription><event>Do Not Disturb</event><expires>100</expires><channelSetId>s</channelSetId></Subscription>").await;
    let id = between(&body, "<subscriptionId>", "</subscriptionId>");
    let initial = stream.next_event().await.unwrap();
    acknowledge(&sim, &http, 0, &auth("alice@acme.example"), &initial).await;
    let deleted = http
        .delete(xsp_url(&sim, 0, &format!("{EVENTS}/subscription/{id}")))
        .header("authorization", auth("alice@acme.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    put_dnd(&sim, &http, "alice@acme.example", true).await;
    let views: serde_json::Value = http
        .get(format!("http://{}/subscriptions", sim.control_addr()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(views.as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn unacknowledged_events_end_the_channel_as_non_responsive() {
    let (sim, http) = start(SEED).await;
    let (mut stream, _) = Stream::open(
        &sim,
        &http,
        0,
        &auth("alice@acme.example"),
        "<Channel><channelSetId>s</channelSetId><expires>300</expires></Channel>",
    )
    .await;
    subscribe(&sim, &http, "alice@acme.example", "user/alice@acme.example", "<Subscription><event>Do Not Disturb</event><expires>300</expires><channelSetId>s</channelSetId></Subscription>").await;
    let initial = stream.next_event().await.unwrap();
    assert!(initial.contains("DoNotDisturbEvent"));
    let terminated = stream.next_event().await.unwrap();
    assert!(
        terminated.contains("<xsi:reason>NonResponsiveChannel</xsi:reason>"),
        "{terminated}"
    );
    assert_eq!(stream.next().await, None);
}

#[tokio::test]
async fn malformed_subscriptions_are_refused() {
    let (sim, http) = start(SEED).await;
    let cases = [
        "<Subscription><event>Telepathy</event><channelSetId>s</channelSetId></Subscription>",
        "<Subscription><channelSetId>s</channelSetId></Subscription>",
        "<Subscription><event>Do Not Disturb</event></Subscription>",
        "<Subscription><event>Do Not Disturb</event><expires>soon</expires><channelSetId>s</channelSetId></Subscription>",
        "<Subscription><event>Do Not Disturb</event><httpContact><uri>http://127.0.0.1:1/</uri></httpContact></Subscription>",
        "<Subscription><event>",
    ];
    for body in cases {
        let (status, text) = subscribe(
            &sim,
            &http,
            "alice@acme.example",
            "user/alice@acme.example",
            body,
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert!(text.contains("<ErrorInfo"), "{body}: {text}");
    }
}

#[tokio::test]
async fn comm_pilot_express_profiles_are_served_and_published() {
    let (sim, http) = start(SEED).await;
    let (mut stream, _) = Stream::open(
        &sim,
        &http,
        0,
        &auth("bob@acme.example"),
        "<Channel><channelSetId>cpe</channelSetId><expires>300</expires></Channel>",
    )
    .await;
    let (status, _) = subscribe(&sim, &http, "bob@acme.example", "user/bob@acme.example", "<Subscription><event>CommPilot Express</event><expires>300</expires><channelSetId>cpe</channelSetId></Subscription>").await;
    assert_eq!(status, 200);
    let initial = stream.next_event().await.unwrap();
    assert!(initial.contains(r#"<xsi:eventData xsi1:type="xsi:CommPilotExpressEvent"><xsi:info><xsi:profile xsi1:nil="true"/></xsi:info></xsi:eventData>"#), "{initial}");
    acknowledge(&sim, &http, 0, &auth("bob@acme.example"), &initial).await;

    let service = xsp_url(
        &sim,
        1,
        &format!("{ACTIONS}/user/bob@acme.example/services/CommPilotExpress"),
    );
    let put = |body: &'static str| {
        http.put(&service)
            .header("authorization", auth("bob@acme.example"))
            .body(body)
            .send()
    };
    assert_eq!(
        put("<CommPilotExpress><profile>Busy</profile></CommPilotExpress>")
            .await
            .unwrap()
            .status(),
        200
    );
    let change = stream.next_event().await.unwrap();
    assert!(
        change.contains("<xsi:info><xsi:profile>Busy</xsi:profile></xsi:info>"),
        "{change}"
    );
    acknowledge(&sim, &http, 0, &auth("bob@acme.example"), &change).await;
    let read = http
        .get(&service)
        .header("authorization", auth("bob@acme.example"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        read.ends_with("<profile>Busy</profile></CommPilotExpress>"),
        "{read}"
    );
    assert_eq!(
        put("<CommPilotExpress><profile>Asleep</profile></CommPilotExpress>")
            .await
            .unwrap()
            .status(),
        400
    );
    let cleared = put(
        r#"<CommPilotExpress><profile xsi:nil="true" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"/></CommPilotExpress>"#,
    );
    assert_eq!(cleared.await.unwrap().status(), 200);
    let change = stream.next_event().await.unwrap();
    assert!(
        change.contains(r#"<xsi:profile xsi1:nil="true"/>"#),
        "{change}"
    );
}

#[tokio::test]
async fn subscriptions_are_queried_by_target_type_target_and_event() {
    let (sim, http) = start(SEED).await;
    let (_stream, _) = Stream::open(
        &sim,
        &http,
        0,
        &auth("sales-admin@acme.example"),
        "<Channel><channelSetId>q</channelSetId><expires>300</expires></Channel>",
    )
    .await;
    for (target, event) in [
        ("user/alice@acme.example", "Do Not Disturb"),
        ("user/alice@acme.example", "Remote Office"),
        ("enterprise/acme/group/sales", "Do Not Disturb"),
    ] {
        let body = format!(
            "<Subscription><event>{event}</event><expires>300</expires><channelSetId>q</channelSetId></Subscription>"
        );
        assert_eq!(
            subscribe(&sim, &http, "sales-admin@acme.example", target, &body)
                .await
                .0,
            200,
            "{target}"
        );
    }
    let query = |q: &str| {
        http.get(xsp_url(&sim, 0, &format!("{EVENTS}/subscription?{q}")))
            .header("authorization", auth("sales-admin@acme.example"))
            .send()
    };
    let count = |body: &str| body.matches("<subscription>").count();

    let all_users = query("").await.unwrap().text().await.unwrap();
    assert!(all_users.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?><SubscriptionList xmlns="http://schema.broadsoft.com/xsi"><subscription><subscriptionId>"#), "{all_users}");
    assert_eq!(count(&all_users), 2, "User is the default target type");
    let dnd = query("targetId=alice%40acme.example&event=Do%20Not%20Disturb")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(count(&dnd), 1);
    assert_eq!(
        query("targetEntityType=Group").await.unwrap().status(),
        400,
        "Group needs targetGrpParentId"
    );
    let group = query("targetEntityType=Group&targetGrpParentId=acme")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(count(&group), 1);
    assert!(group.contains("<targetIdType>Group</targetIdType><targetGrpParentId>acme</targetGrpParentId><targetId>sales</targetId>"), "{group}");
    assert_eq!(
        query("subscriberId=alice%40acme.example")
            .await
            .unwrap()
            .status(),
        403
    );
    // A named target proves scope: in it the list comes back (maybe empty), outside it 403.
    for (q, status) in [
        (
            "targetEntityType=Group&targetGrpParentId=acme&targetId=sales",
            200,
        ),
        (
            "targetEntityType=Group&targetGrpParentId=acme&targetId=support",
            403,
        ),
        ("targetEntityType=ServiceProvider&targetId=acme", 403),
        ("targetEntityType=System", 403),
        ("targetId=alice%40acme.example", 200),
    ] {
        assert_eq!(query(q).await.unwrap().status(), status, "{q}");
    }
}
