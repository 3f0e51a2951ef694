//! The call-centre packages over real HTTP: Call Center Queue and Monitoring at a call centre,
//! Call Center Agent and Agent Monitoring at an agent, driven through the control API.
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

[[users]]
user_id = "carol@acme.example"
password = "carol-pw"
service_provider = "acme"
group = "sales"

[[admins]]
user_id = "sales-admin@acme.example"
password = "sales-pw"
scope = { level = "group", service_provider = "acme", group = "sales" }

[[admins]]
user_id = "support-admin@acme.example"
password = "support-pw"
scope = { level = "group", service_provider = "acme", group = "support" }

[[call_centers]]
user_id = "sales-cc@acme.example"
name = "Sales"
number = "2025550300"
service_provider = "acme"
group = "sales"
agents = ["alice@acme.example"]
"#;

fn auth(user: &str) -> String {
    let password = match user.split('@').next().unwrap() {
        "alice" => "alice-pw",
        "carol" => "carol-pw",
        "sales-admin" => "sales-pw",
        _ => "support-pw",
    };
    basic(user, password)
}

async fn subscribe(
    sim: &Simulator,
    http: &reqwest::Client,
    user: &str,
    target: &str,
    packages: &[&str],
    set: &str,
) -> u16 {
    let events: String = packages
        .iter()
        .map(|p| format!("<event>{p}</event>"))
        .collect();
    let body = format!(
        "<Subscription><eventPackageList>{events}</eventPackageList><channelSetId>{set}</channelSetId></Subscription>"
    );
    http.post(format!(
        "http://{}{EVENTS}/user/{target}",
        sim.xsp_addrs()[0]
    ))
    .header("authorization", auth(user))
    .body(body)
    .send()
    .await
    .unwrap()
    .status()
    .as_u16()
}

/// The next event, acknowledged.
async fn next(sim: &Simulator, http: &reqwest::Client, stream: &mut Stream, user: &str) -> String {
    let event = stream.next_event().await.unwrap();
    assert_eq!(acknowledge(sim, http, 0, &auth(user), &event).await, 200);
    event
}

async fn set_agent(
    sim: &Simulator,
    http: &reqwest::Client,
    agent: &str,
    change: impl Fn(&mut serde_json::Value),
) {
    let url = format!("http://{}/users/{agent}", sim.control_addr());
    let mut user: serde_json::Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    change(&mut user);
    assert_eq!(
        http.put(&url).json(&user).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn queue_and_monitoring_follow_calls_and_agents() {
    let (sim, http) = start(SEED).await;
    let admin = "sales-admin@acme.example";
    let (mut stream, _) = Stream::open(
        &sim,
        &http,
        0,
        &auth(admin),
        "<Channel><channelSetId>cc</channelSetId></Channel>",
    )
    .await;
    let status = subscribe(
        &sim,
        &http,
        admin,
        "sales-cc@acme.example",
        &["Call Center Queue", "Call Center Monitoring"],
        "cc",
    )
    .await;
    assert_eq!(status, 200);
    let queue = next(&sim, &http, &mut stream, admin).await;
    assert!(queue.contains(r#"<xsi:targetId>sales-cc@acme.example</xsi:targetId><xsi:eventData xsi1:type="xsi:ACDSubscriptionEvent"/>"#), "{queue}");
    let figures = next(&sim, &http, &mut stream, admin).await;
    assert!(figures.contains("<xsi:numCallsInQueue><xsi:value>0</xsi:value></xsi:numCallsInQueue><xsi:numAgentsAssigned>1</xsi:numAgentsAssigned><xsi:numAgentsStaffed>0</xsi:numAgentsStaffed>"), "{figures}");

    let control = format!(
        "http://{}/callcenters/sales-cc@acme.example",
        sim.control_addr()
    );
    let queued: serde_json::Value = http
        .post(format!("{control}/queue"))
        .json(&serde_json::json!({"address": "tel:+15550100", "name": "A Caller"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let call_id = queued["call_id"].as_str().unwrap().to_owned();
    let added = next(&sim, &http, &mut stream, admin).await;
    assert!(added.contains(&format!(r#"<xsi:eventData xsi1:type="xsi:ACDCallAddedEvent"><xsi:queueEntry><xsi:callId>{call_id}</xsi:callId>"#)), "{added}");
    assert!(added.contains("<xsi:remoteParty><xsi:name>A Caller</xsi:name><xsi:address>tel:+15550100</xsi:address><xsi:callType>Network</xsi:callType></xsi:remoteParty><xsi:addTime>"), "{added}");
    assert!(added.contains("<xsi:acdName>Sales</xsi:acdName><xsi:acdNumber>tel:2025550300</xsi:acdNumber></xsi:queueEntry><xsi:position>1</xsi:position>"), "{added}");
    let figures = next(&sim, &http, &mut stream, admin).await;
    assert!(
        figures.contains("<xsi:numCallsInQueue><xsi:value>1</xsi:value></xsi:numCallsInQueue>"),
        "{figures}"
    );

    set_agent(&sim, &http, "alice@acme.example", |u| {
        u["agent_state"] = "Available".into();
    })
    .await;
    let figures = next(&sim, &http, &mut stream, admin).await;
    assert!(figures.contains("<xsi:numAgentsStaffed>1</xsi:numAgentsStaffed><xsi:numStaffedAgentsIdle>1</xsi:numStaffedAgentsIdle>"), "{figures}");

    let abandoned = http
        .delete(format!("{control}/queue/{call_id}"))
        .send()
        .await
        .unwrap();
    assert_eq!(abandoned.status(), 200);
    let event = next(&sim, &http, &mut stream, admin).await;
    assert!(
        event.contains("ACDCallAbandonedEvent") && event.contains("<xsi:removeTime>"),
        "{event}"
    );
    let figures = next(&sim, &http, &mut stream, admin).await;
    assert!(
        figures.contains("<xsi:numCallsInQueue><xsi:value>0</xsi:value></xsi:numCallsInQueue>"),
        "{figures}"
    );
    assert_eq!(
        http.delete(format!("{control}/queue/{call_id}"))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
}

#[tokio::test]
async fn agents_see_their_state_and_monitoring_figures() {
    let (sim, http) = start(SEED).await;
    let agent = "alice@acme.example";
    let (mut stream, _) = Stream::open(
        &sim,
        &http,
        0,
        &auth(agent),
        "<Channel><channelSetId>agent</channelSetId></Channel>",
    )
    .await;
    let status = subscribe(
        &sim,
        &http,
        agent,
        agent,
        &["Call Center Agent", "Call Center Agent Monitoring"],
        "agent",
    )
    .await;
    assert_eq!(status, 200);
    let initial = next(&sim, &http, &mut stream, agent).await;
    assert!(initial.contains("<xsi:joinData><xsi:joinInfos><xsi:joinInfo><xsi:acdUserId>sales-cc@acme.example</xsi:acdUserId><xsi:joined/></xsi:joinInfo></xsi:joinInfos></xsi:joinData><xsi:stateInfo><xsi:state>Sign-Out</xsi:state>"), "{initial}");
    let monitoring = next(&sim, &http, &mut stream, agent).await;
    assert!(monitoring.contains(r#"xsi1:type="xsi:CallCenterAgentMonitoringSubscriptionEvent"><xsi:monitoringStatus><xsi:averageACDCallTime><xsi:value>0</xsi:value>"#), "{monitoring}");

    set_agent(&sim, &http, agent, |u| {
        u["agent_state"] = "Unavailable".into();
    })
    .await;
    let state = next(&sim, &http, &mut stream, agent).await;
    assert!(state.contains(r#"xsi1:type="xsi:AgentStateEvent"><xsi:agentStateInfo><xsi:state>Unavailable</xsi:state><xsi:stateTimestamp><xsi:value>"#), "{state}");
    let since: u64 = between(&state, "<xsi:value>", "</xsi:value>")
        .parse()
        .unwrap();
    assert!(
        since > 1_700_000_000_000,
        "the new state starts now: {since}"
    );

    set_agent(&sim, &http, agent, |u| u["agent_monitoring"] = serde_json::json!({"average_acd_call_time_ms": 6154, "average_acd_outgoing_call_time_ms": 0})).await;
    let figures = next(&sim, &http, &mut stream, agent).await;
    assert!(figures.contains(r#"xsi1:type="xsi:CallCenterAgentMonitoringEvent"><xsi:monitoringStatus><xsi:averageACDCallTime><xsi:value>6154</xsi:value>"#), "{figures}");
}

#[tokio::test]
async fn a_call_centre_is_watched_by_its_agents_and_admins_in_scope() {
    let (sim, http) = start(SEED).await;
    let packages = ["Call Center Queue"];
    let cases = [
        ("alice@acme.example", 200),
        ("sales-admin@acme.example", 200),
        ("carol@acme.example", 403),
        ("support-admin@acme.example", 403),
    ];
    for (user, status) in cases {
        assert_eq!(
            subscribe(&sim, &http, user, "sales-cc@acme.example", &packages, "s").await,
            status,
            "{user}"
        );
    }
    let control = format!(
        "http://{}/callcenters/nowhere@acme.example/queue",
        sim.control_addr()
    );
    let missing = http
        .post(control)
        .json(&serde_json::json!({"address": "tel:1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
}

/// An agent reads its ACD state and the call centres it serves through XSI-Actions; a user who
/// serves none has no Call Center service.
#[tokio::test]
async fn the_call_center_service_lists_the_centres_an_agent_serves() {
    let (sim, _) = start(SEED).await;
    let http = reqwest::Client::new();
    let get = |user: &str| {
        http.get(format!(
            "http://{}/com.broadsoft.xsi-actions/v2.0/user/{user}/services/CallCenter",
            sim.xsp_addrs()[0]
        ))
        .header("authorization", auth(user))
        .send()
    };
    let response = get("alice@acme.example").await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.text().await.unwrap();
    assert!(
        body.ends_with(
            "<CallCenter xmlns=\"http://schema.broadsoft.com/xsi\"><agentACDState>Sign-Out</agentACDState>\
             <callCenterList><callCenterDetails><serviceUserId>sales-cc@acme.example</serviceUserId>\
             <available>true</available><phoneNumber>2025550300</phoneNumber></callCenterDetails>\
             </callCenterList></CallCenter>"
        ),
        "{body}"
    );
    assert_eq!(get("carol@acme.example").await.unwrap().status(), 404);
}
