//! Helpers shared by the simulator's event tests.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use xsi_sim::Simulator;
use xsi_sim::seed::Seed;

pub const EVENTS: &str = "/com.broadsoft.xsi-events/v2.0";

/// An open channel's stream, read document by document.
pub struct Stream {
    response: reqwest::Response,
    pending: String,
    pub id: String,
}

impl Stream {
    /// Opens a channel on XSP `xsp` with `authorization`; returns the stream and its first
    /// document, after checking the response's framing.
    pub async fn open(
        sim: &Simulator,
        http: &reqwest::Client,
        xsp: usize,
        authorization: &str,
        body: &str,
    ) -> (Self, String) {
        let url = format!(
            "http://{}/com.broadsoft.async{EVENTS}/channel",
            sim.xsp_addrs()[xsp]
        );
        let response = http
            .post(url)
            .header("authorization", authorization)
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "text/xml;charset=UTF-8");
        assert_eq!(response.headers()["transfer-encoding"], "chunked");
        let cookie = response.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            cookie.ends_with("; Path=/com.broadsoft.xsi-events; HttpOnly"),
            "{cookie}"
        );
        let mut stream = Self {
            response,
            pending: String::new(),
            id: String::new(),
        };
        let first = stream.next().await.expect("the Channel document");
        stream.id = between(&first, "<channelId>", "</channelId>");
        (stream, first)
    }

    /// The next document, or `None` when the stream ended.
    pub async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.pending.find('\n') {
                let line: String = self.pending.drain(..=end).collect();
                return Some(line.trim_end().to_owned());
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.response.chunk())
                .await
                .expect("stream stalled");
            match chunk {
                Ok(Some(bytes)) => self.pending.push_str(std::str::from_utf8(&bytes).unwrap()),
                _ => return None,
            }
        }
    }

    /// The next document that is not a heartbeat.
    pub async fn next_event(&mut self) -> Option<String> {
        loop {
            let document = self.next().await?;
            if !document.contains("<ChannelHeartBeat") {
                return Some(document);
            }
        }
    }
}

pub fn between(text: &str, start: &str, end: &str) -> String {
    text.split(start)
        .nth(1)
        .and_then(|t| t.split(end).next())
        .unwrap_or_default()
        .to_owned()
}

/// A simulator from seed text, and a client for it.
pub async fn start(seed: &str) -> (Arc<Simulator>, reqwest::Client) {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let sim = Simulator::start(toml::from_str::<Seed>(seed).unwrap())
        .await
        .unwrap();
    (sim, reqwest::Client::new())
}

/// `Authorization: Basic …` for `user:password`.
pub fn basic(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

/// Acknowledges `event` on XSP `xsp` with `authorization`; returns the answer's status.
pub async fn acknowledge(
    sim: &Simulator,
    http: &reqwest::Client,
    xsp: usize,
    authorization: &str,
    event: &str,
) -> u16 {
    let body = format!(
        r#"<EventResponse xmlns="http://schema.broadsoft.com/xsi"><eventID>{}</eventID><statusCode>200</statusCode><reason>OK</reason></EventResponse>"#,
        between(event, "<xsi:eventID>", "</xsi:eventID>")
    );
    http.post(format!(
        "http://{}{EVENTS}/channel/eventresponse",
        sim.xsp_addrs()[xsp]
    ))
    .header("authorization", authorization)
    .body(body)
    .send()
    .await
    .unwrap()
    .status()
    .as_u16()
}
