//! XSI-Events channels over real HTTP: the stream, heartbeats, updates, deletes, expiry,
//! silence, duplicate channel sets, and commands sent to the wrong XSP.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{EVENTS, Stream, basic, start};

use xsi_sim::Simulator;

const SEED: &str = r#"
[events]
channel_expires_min = 1
channel_expires_max = 60
event_timeout_seconds = 1

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
"#;

const DECL: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;

fn auth(user: &str) -> String {
    let password = if user.starts_with("alice") {
        "alice-pw"
    } else {
        "bob-pw"
    };
    basic(user, password)
}

fn url(sim: &Simulator, xsp: usize, path: &str) -> String {
    format!("http://{}{EVENTS}{path}", sim.xsp_addrs()[xsp])
}

#[tokio::test]
async fn a_channel_lives_on_its_xsp_through_heartbeats_updates_and_delete() {
    let (sim, http) = start(SEED).await;
    let create = r#"<Channel xmlns="http://schema.broadsoft.com/xsi"><channelSetId>set-a</channelSetId><priority>1</priority><weight>50</weight><expires>30</expires></Channel>"#;
    let (mut stream, first) =
        Stream::open(&sim, &http, 0, &auth("alice@acme.example"), create).await;
    assert_eq!(
        first,
        format!(
            r#"{DECL}<Channel xmlns="http://schema.broadsoft.com/xsi"><channelId>{}</channelId><expires>30</expires></Channel>"#,
            stream.id
        )
    );
    assert_eq!(stream.id.len(), 36);

    let heartbeat = format!("/channel/{}/heartbeat", stream.id);
    let response = http
        .put(url(&sim, 0, &heartbeat))
        .header("authorization", auth("alice@acme.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(response.text().await.unwrap().is_empty());
    assert_eq!(
        stream.next().await.unwrap(),
        format!(r#"{DECL}<ChannelHeartBeat xmlns="http://schema.broadsoft.com/xsi"/>"#)
    );

    // Channel commands only work on the XSP that holds the stream, and only for its owner.
    let elsewhere = http
        .put(url(&sim, 1, &heartbeat))
        .header("authorization", auth("alice@acme.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 404);
    let stranger = http
        .put(url(&sim, 0, &heartbeat))
        .header("authorization", auth("bob@acme.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), 404);

    let update = http
        .put(url(&sim, 0, &format!("/channel/{}", stream.id)))
        .header("authorization", auth("alice@acme.example"))
        .body(r#"<Channel xmlns="http://schema.broadsoft.com/xsi"><expires>45</expires></Channel>"#)
        .send()
        .await
        .unwrap();
    assert_eq!(update.status(), 200);
    assert!(update.text().await.unwrap().ends_with(&format!(
        "<channelId>{}</channelId><expires>45</expires></Channel>",
        stream.id
    )));

    let set = http
        .get(url(&sim, 1, "/channelset/set-a"))
        .header("authorization", auth("alice@acme.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200, "a channel set spans XSPs");
    let set = set.text().await.unwrap();
    assert!(set.contains(&format!("<channel><channelId>{}</channelId><channelSetId>set-a</channelSetId><priority>1</priority><weight>50</weight><expires>4", stream.id)), "{set}");

    let ack = http
        .post(url(&sim, 0, "/channel/eventresponse"))
        .header("authorization", auth("alice@acme.example"))
        .body(r#"<EventResponse xmlns="http://schema.broadsoft.com/xsi"><eventID>e-1</eventID><statusCode>200</statusCode><reason>OK</reason></EventResponse>"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ack.status(), 404, "no such event was sent");
    let acks = sim.platform().acks();
    assert_eq!((acks[0].event_id.as_str(), acks[0].known), ("e-1", false));

    let delete = http
        .delete(url(&sim, 0, &format!("/channel/{}", stream.id)))
        .header("authorization", auth("alice@acme.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), 200);
    assert_eq!(
        stream.next().await.unwrap(),
        format!(
            r#"{DECL}<xsi:Event xsi1:type="xsi:ChannelTerminatedEvent" xmlns:xsi1="http://www.w3.org/2001/XMLSchema-instance" xmlns:xsi="http://schema.broadsoft.com/xsi"><xsi:channelId>{}</xsi:channelId><xsi:reason>ExplicitDelete</xsi:reason></xsi:Event>"#,
            stream.id
        )
    );
    assert_eq!(
        stream.next().await,
        None,
        "the stream closes after the termination"
    );
    let gone = http
        .put(url(&sim, 0, &heartbeat))
        .header("authorization", auth("alice@acme.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(gone.status(), 404);
}

#[tokio::test]
async fn the_server_substitutes_its_own_expiry_and_ends_expired_channels() {
    let (sim, http) = start(SEED).await;
    let (_, first) = Stream::open(
        &sim,
        &http,
        0,
        &auth("alice@acme.example"),
        "<Channel><channelSetId>s</channelSetId><expires>3600</expires></Channel>",
    )
    .await;
    assert!(
        first.contains("<expires>60</expires>"),
        "a request above the range gets the server's value: {first}"
    );
    let (mut short, first) = Stream::open(
        &sim,
        &http,
        0,
        &auth("alice@acme.example"),
        "<Channel><channelSetId>s</channelSetId><expires>1</expires></Channel>",
    )
    .await;
    assert!(first.contains("<expires>1</expires>"), "{first}");
    let terminated = short.next().await.unwrap();
    assert!(
        terminated.contains("<xsi:reason>Expired</xsi:reason>"),
        "{terminated}"
    );
    assert_eq!(short.next().await, None);
}

#[tokio::test]
async fn heartbeats_keep_a_channel_and_silence_tears_it_down() {
    let (sim, http) = start(SEED).await;
    let body = |set: &str| {
        format!("<Channel><channelSetId>{set}</channelSetId><expires>60</expires></Channel>")
    };
    let (mut kept, _) = Stream::open(&sim, &http, 1, &auth("alice@acme.example"), &body("a")).await;
    let (mut silent, _) = Stream::open(&sim, &http, 1, &auth("bob@acme.example"), &body("b")).await;
    for _ in 0..8 {
        let heartbeat = url(&sim, 1, &format!("/channel/{}/heartbeat", kept.id));
        let response = http
            .put(heartbeat)
            .header("authorization", auth("alice@acme.example"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert!(kept.next().await.unwrap().contains("ChannelHeartBeat"));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(
        silent.next().await,
        None,
        "no heartbeat for the event timeout ends the stream"
    );
    let views = sim.platform().channels().views();
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].channel_id, kept.id);
    assert_eq!(views[0].heartbeats, 8);
}

#[tokio::test]
async fn a_new_channel_set_of_the_same_application_ends_the_old_one() {
    let (sim, http) = start(SEED).await;
    let (mut old, _) = Stream::open(&sim, &http, 0, &auth("alice@acme.example"), "<Channel><channelSetId>one</channelSetId><expires>60</expires><applicationId>dialer</applicationId></Channel>").await;
    let (_other_app, _) = Stream::open(&sim, &http, 0, &auth("alice@acme.example"), "<Channel><channelSetId>two</channelSetId><expires>60</expires><applicationId>wallboard</applicationId></Channel>").await;
    let (_new, _) = Stream::open(&sim, &http, 1, &auth("alice@acme.example"), "<Channel><channelSetId>three</channelSetId><expires>60</expires><applicationId>dialer</applicationId></Channel>").await;
    let terminated = old.next().await.unwrap();
    assert!(
        terminated.contains("<xsi:reason>DuplicateChannelSet</xsi:reason>"),
        "{terminated}"
    );
    let sets: Vec<String> = sim
        .platform()
        .channels()
        .views()
        .into_iter()
        .map(|v| v.channel_set_id)
        .collect();
    assert_eq!(sets.len(), 2);
    assert!(!sets.contains(&"one".to_owned()));
}

#[tokio::test]
async fn killing_the_xsp_cuts_its_streams_and_bad_requests_are_refused() {
    let (sim, http) = start(SEED).await;
    let (mut stream, _) = Stream::open(
        &sim,
        &http,
        0,
        &auth("alice@acme.example"),
        "<Channel><channelSetId>s</channelSetId></Channel>",
    )
    .await;
    assert!(sim.stop_xsp(0));
    assert_eq!(stream.next().await, None);
    assert!(sim.platform().channels().views().is_empty());

    let async_url = format!(
        "http://{}/com.broadsoft.async{EVENTS}/channel",
        sim.xsp_addrs()[1]
    );
    for body in [
        "<Channel><expires>60</expires></Channel>",
        "<Channel><channelSetId>s</channelSetId><expires>soon</expires></Channel>",
        "<Channel",
    ] {
        let response = http
            .post(&async_url)
            .header("authorization", auth("alice@acme.example"))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{body}");
    }
    let unauthenticated = http
        .post(&async_url)
        .body("<Channel><channelSetId>s</channelSetId></Channel>")
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let other = format!(
        "http://{}/com.broadsoft.async{EVENTS}/subscription",
        sim.xsp_addrs()[1]
    );
    let response = http
        .post(other)
        .header("authorization", auth("alice@acme.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        404,
        "only channel creation uses the async prefix"
    );
}

#[tokio::test]
async fn stream_faults_cut_channels_and_silence_event_commands() {
    let (sim, http) = start(SEED).await;
    let control = format!("http://{}", sim.control_addr());
    let body = "<Channel><channelSetId>s</channelSetId><expires>60</expires></Channel>";
    let (mut cut, _) = Stream::open(&sim, &http, 0, &auth("alice@acme.example"), body).await;
    let response = http
        .post(format!("{control}/channels/{}/cut", cut.id))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        cut.next().await,
        None,
        "a cut stream just ends, with no termination event"
    );
    let again = http
        .post(format!("{control}/channels/{}/cut", cut.id))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);

    let (stream, _) = Stream::open(&sim, &http, 0, &auth("alice@acme.example"), body).await;
    let fault = http
        .put(format!("{control}/xsp/0/fault"))
        .body(r#"{"events_status": 503}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(fault.status(), 200);
    let heartbeat = url(&sim, 0, &format!("/channel/{}/heartbeat", stream.id));
    let response = http
        .put(&heartbeat)
        .header("authorization", auth("alice@acme.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        503,
        "the XSP stops answering event commands"
    );
    let actions = format!(
        "http://{}/com.broadsoft.xsi-actions/v2.0/user/alice@acme.example/profile",
        sim.xsp_addrs()[0]
    );
    let response = http
        .get(actions)
        .header("authorization", auth("alice@acme.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "while XSI-Actions still work");
    http.delete(format!("{control}/xsp/0/fault"))
        .send()
        .await
        .unwrap();
    let response = http
        .put(&heartbeat)
        .header("authorization", auth("alice@acme.example"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

/// A channel set belongs to the user who made it: nobody else can add a channel to it, and a
/// subscription's events go only to its owner's channels.
#[tokio::test]
async fn a_channel_set_belongs_to_the_user_who_made_it() {
    let (sim, http) = start(SEED).await;
    let body = "<Channel><channelSetId>alice-set</channelSetId><expires>60</expires></Channel>";
    let (mut alice, _) = Stream::open(&sim, &http, 0, &auth("alice@acme.example"), body).await;
    let intruder = http
        .post(format!(
            "http://{}/com.broadsoft.async{EVENTS}/channel",
            sim.xsp_addrs()[1]
        ))
        .header("authorization", auth("bob@acme.example"))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(intruder.status(), 403);
    let owners: Vec<String> = sim
        .platform()
        .channels()
        .views()
        .into_iter()
        .map(|v| v.owner)
        .collect();
    assert_eq!(owners, ["alice@acme.example"]);

    // Bob's subscription naming alice's set reaches no channel of hers.
    let subscribed = http
        .post(url(&sim, 0, "/user/bob@acme.example"))
        .header("authorization", auth("bob@acme.example"))
        .body("<Subscription xmlns=\"http://schema.broadsoft.com/xsi\"><event>Do Not Disturb</event><expires>60</expires><channelSetId>alice-set</channelSetId><applicationId>spy</applicationId></Subscription>")
        .send()
        .await
        .unwrap();
    assert_eq!(subscribed.status(), 200);
    let nothing = tokio::time::timeout(Duration::from_millis(500), alice.next_event()).await;
    assert!(
        nothing.is_err(),
        "alice's channel carried bob's event: {nothing:?}"
    );
}
