//! What the single-sign-on suites share: a browser's cookie jar as the test keeps it, reading
//! a redirect or a form as a browser does, and the reference dialer served for a gateway.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::{Gateway, client, repo_root};

/// One site's cookies, as `name=value` pairs (paths and ports are not told apart: the test
/// chooses what the callback gets itself).
#[derive(Debug, Default, Clone)]
pub struct Jar(Vec<(String, String)>);

impl Jar {
    pub fn absorb(&mut self, response: &reqwest::Response) {
        for value in response.headers().get_all("set-cookie") {
            let text = value.to_str().unwrap();
            let pair = text.split(';').next().unwrap();
            let (name, value) = pair.split_once('=').unwrap();
            self.0.retain(|(n, _)| n != name);
            if !value.is_empty() && !text.contains("Max-Age=0") {
                self.0.push((name.to_owned(), value.to_owned()));
            }
        }
    }

    pub fn header(&self) -> String {
        self.0
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A `Location` or a form's `action` as the browser reads it, against the page's URL.
pub fn resolve(base: &str, reference: &str) -> String {
    url::Url::parse(base)
        .unwrap()
        .join(reference)
        .unwrap()
        .to_string()
}

pub fn location(response: &reqwest::Response) -> String {
    response.headers()["location"].to_str().unwrap().to_owned()
}

/// The reference dialer, served by `dialer/serve.mjs` for `gateway`; ended with the test.
#[derive(Debug)]
pub struct Dialer {
    child: Child,
}

impl Drop for Dialer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dialer {
    pub async fn serve(port: u16, gateway: &Gateway) -> Self {
        let child = Command::new("node")
            .arg(repo_root().join("dialer/serve.mjs"))
            .arg(format!("127.0.0.1:{port}"))
            .env("XSIGATE_URL", gateway.url(""))
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs (scripts/install-deps test)");
        let dialer = Self { child };
        for _ in 0..100 {
            if client()
                .get(format!("http://127.0.0.1:{port}/config.json"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                return dialer;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the dialer did not start");
    }
}
