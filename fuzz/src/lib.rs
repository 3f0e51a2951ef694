//! The bodies of the fuzz targets. Each takes any bytes, must never panic, and checks what the
//! code it drives promises. `fuzz_targets/*.rs` hand them to libFuzzer (`scripts/fuzz`);
//! `tests/corpora.rs` replays every stored input on stable, in `cargo test`.

use std::path::Path;

use xsigate::config::{self, ConfigError, Source};
use xsigate::edge::framing::{self, Head, HeadLimits, Layout};
use xsigate::http::route;
use xsigate::upstream::StreamError;
use xsigate::upstream::answer::{self, Body, Decoded};

/// A request head as the edge reads it off a client connection.
pub fn edge_head(data: &[u8]) {
    let limits = HeadLimits {
        header_bytes: 4096,
        header_fields: 32,
        body_bytes: 65536,
    };
    let mut layout = Layout::default();
    if let Head::Complete { length, shape } = framing::check(data, limits, &mut layout) {
        assert!(length <= data.len() && length <= limits.header_bytes);
        assert_eq!(layout.length, length);
        // A head that passes names its length one way only.
        let names = field_names(&data[..length]);
        let lengths = names
            .iter()
            .filter(|n| n.eq_ignore_ascii_case("content-length"))
            .count();
        let codings = names
            .iter()
            .filter(|n| n.eq_ignore_ascii_case("transfer-encoding"))
            .count();
        assert!(
            lengths + codings <= 1,
            "{lengths} lengths and {codings} codings passed"
        );
        // The shape the lanes choose by agrees with the head: chunked has no length, a declared
        // one is within the limit, none at all is an empty body.
        match shape.body_length {
            None => assert_eq!(codings, 1, "no length without a coding"),
            Some(n) => {
                assert_eq!(codings, 0, "a length beside a coding");
                assert!(n <= limits.body_bytes);
                assert!(lengths == 1 || n == 0);
            }
        }
        // The target the lane routes by is the request line's, origin-form (or `*`).
        let target = shape.target.text(&data[..length]);
        assert!(
            target.starts_with('/') || target == "*",
            "target {target:?}"
        );
        let line = data[..length]
            .split(|&b| b == b'\n')
            .find(|line| !matches!(line, [] | [b'\r']))
            .unwrap_or_default();
        let word = line.split(|&b| b == b' ').nth(1).unwrap_or_default();
        assert_eq!(
            target.as_bytes(),
            word,
            "the target is not the request line's"
        );
        // The lane takes the request by the layout alone: its method is the request line's,
        // and every field lies in the head, named.
        let method = line.split(|&b| b == b' ').next().unwrap_or_default();
        assert_eq!(layout.method.of(data), method);
        for field in &layout.fields {
            assert!(field.name.range().end <= length && field.value.range().end <= length);
            assert!(!field.name.of(data).is_empty(), "a field without a name");
        }
    }
}

/// A request path as the router and the authorisation read it.
pub fn xsi_path(data: &[u8]) {
    let Ok(path) = std::str::from_utf8(data) else {
        return;
    };
    let _ = route::classify(path);
    let user = route::path_user_id(path);
    if route::check_path(path).is_ok() {
        // A path that passes means one thing: no segment turns into a separator or a dot
        // segment when an XSP decodes it.
        for segment in xsigate_broadworks::decoded_segments(path).skip(1) {
            assert!(
                !segment.contains('/') && !segment.contains('\\'),
                "{path:?}"
            );
            assert!(segment != "." && segment != "..", "{path:?}");
        }
        if let Some(user) = user {
            assert!(!user.is_empty(), "{path:?}");
        }
        authorization(path);
    }
}

/// What a login session of each level may reach at `path`: a user session never anything of
/// another user.
fn authorization(path: &str) {
    use xsigate_plugin_sdk::{LoginLevel, SessionInfo};
    use xsigate_xsi_session::authorize::authorize;
    const ALICE: &str = "alice@acme.example";
    for level in [
        LoginLevel::User,
        LoginLevel::Group,
        LoginLevel::ServiceProvider,
        LoginLevel::System,
    ] {
        let session = SessionInfo {
            user_id: ALICE,
            level,
            service_provider: Some("acme"),
            group: Some("sales"),
            xsp: None,
        };
        let allowed = authorize(path, &session).is_ok();
        if allowed
            && level == LoginLevel::User
            && let Some(user) = user_resource(path)
        {
            assert!(
                user.eq_ignore_ascii_case(ALICE),
                "{path:?} let alice reach {user}"
            );
        }
    }
}

/// The user a path's resource belongs to, read as an XSP routes it: the segment after
/// `<context>/v2.0/user/` (decoded, `user` in any case). A `user` segment deeper in another
/// resource's path (`…/channel/<id>/user/…`) is not one.
fn user_resource(path: &str) -> Option<String> {
    let segments: Vec<_> = xsigate_broadworks::decoded_segments(path).collect();
    let version = segments.iter().position(|s| s == "v2.0")?;
    let root = segments.get(version + 1)?;
    if !root.eq_ignore_ascii_case("user") {
        return None;
    }
    segments
        .get(version + 2)
        .map(|user| user.clone().into_owned())
}

/// A `providers.toml`: loaded or refused with the file, line and column.
pub fn providers_toml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let source = Source {
        name: "fuzz.toml".to_owned(),
        text,
        base_dir: Path::new("/nonexistent/xsigate-fuzz"),
    };
    if let Err(error) = config::load(&source) {
        let message = error.to_string();
        if let ConfigError::Invalid { line, column, .. } = &error {
            assert!(*line >= 1 && *column >= 1, "{message}");
            assert!(message.starts_with("fuzz.toml:"), "{message}");
        }
    }
}

/// What a client sends the login API: bodies, endpoint names, content types, cookies.
pub fn login_api(data: &[u8]) {
    xsigate::access::fuzzing::bodies(data);
    if let Ok(text) = std::str::from_utf8(data) {
        xsigate::access::fuzzing::headers(text);
    }
}

/// XSI documents as the lookups read them and as a channel delivers them.
pub fn xsi_documents(data: &[u8]) {
    let _ = xsigate_broadworks::tree(data);
    let _ = xsigate_broadworks::records(data);
    let _ = xsigate_broadworks::element_text(data, "userId");
    let (cuts, stream) = data.split_at(data.len().min(4));
    xsigate_xsi_events::fuzzing::channel(stream, cuts);
}

/// The JSON a plugin hands the host (host-call metadata, hook answers) and the host hands a
/// plugin (deliveries, topics), and the ABI's string buffers.
pub fn plugin_abi(data: &[u8]) {
    use xsigate_plugin_sdk::{abi, calls, topics};
    macro_rules! read_as {
        ($($kind:ty),* $(,)?) => {
            $( let _ = serde_json::from_slice::<$kind>(data); )*
        };
    }
    read_as!(
        calls::HttpMeta,
        calls::XsiMeta,
        calls::StreamMeta,
        calls::KeyMeta,
        calls::PrefixMeta,
        calls::UserIdMeta,
        calls::UniqueIdMeta,
        calls::SealMeta,
        calls::PublishMeta,
        calls::SleepMeta,
        calls::HttpHead,
        calls::XsiHead,
        calls::StreamReadHead,
        calls::Delivery,
        xsigate_plugin_sdk::Login,
        xsigate_plugin_sdk::LoginQuery,
        xsigate_plugin_sdk::LoginOption,
        xsigate_plugin_sdk::Choice,
        topics::SessionStarted,
        topics::UserCredentials,
        topics::SessionEnded,
    );
    assert!(!abi::Str::from_bytes(data).is_absent());
    let buffer = abi::Buf::from_vec(data.to_vec());
    assert_eq!(buffer.as_slice(), data);
    assert_eq!(buffer.as_str().is_some(), std::str::from_utf8(data).is_ok());
}

/// An answer of the screen-recording service or of Firebase's token endpoint: the first two
/// bytes are the status, then header lines up to a blank line, then the body.
pub fn service_replies(data: &[u8]) {
    let status = data
        .get(..2)
        .map_or(200, |s| 100 + u16::from_be_bytes([s[0], s[1]]) % 500);
    let rest = data.get(2..).unwrap_or_default();
    let text = String::from_utf8_lossy(rest);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let headers = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_owned(), value.trim().to_owned()))
        .collect();
    let response = xsigate_plugin_sdk::HttpResponse {
        status,
        headers,
        body: body.as_bytes().to_vec(),
    };
    xsigate_srs_login::fuzzing::reply(&response);
    xsigate_firebase_sync::fuzzing::reply(&response);
}

/// An upstream's answer as the lean lane and the channel streams read it: the first byte says
/// whether the request was a `HEAD` and how the network splits the rest.
pub fn upstream_answers(data: &[u8]) {
    let Some((&control, wire)) = data.split_first() else {
        return;
    };
    let to_head = control & 1 == 1;
    let step = usize::from(control >> 1) + 1;
    let mut buf = bytes::BytesMut::from(wire);
    let Ok(Some((head, body))) = answer::parse_head(&mut buf, to_head, 8) else {
        return;
    };
    assert!(!head.status.is_informational());
    // What goes on names the body's framing one way only.
    assert!(
        !(head.fields.contains_key("content-length")
            && head.fields.contains_key("transfer-encoding")),
        "a length beside a coding"
    );
    assert!(head.fields.capacity() >= head.fields.len() + 8);
    if to_head {
        assert_eq!(body, Body::Done);
    }
    if body == Body::UntilClose {
        assert!(
            !head.keeps_connection,
            "a body that runs to the close keeps it"
        );
    }
    // The body is the same however the network splits it.
    let at_once = body_of(body, &buf, buf.len().max(1));
    assert_eq!(
        at_once,
        body_of(body, &buf, step),
        "split in steps of {step}"
    );
    if let (Body::Length(length), Ok((bytes, _))) = (body, &at_once) {
        assert!(bytes.len() as u64 <= length);
    }
}

/// What a body decodes to from `wire` fed `step` bytes at a time, then the connection's close:
/// its bytes and whether it ended before the close, or why it failed.
fn body_of(mut body: Body, wire: &[u8], step: usize) -> Result<(Vec<u8>, bool), String> {
    let mut buf = bytes::BytesMut::new();
    let mut out = Vec::new();
    let mut fed = 0;
    loop {
        match body.decode(&mut buf).map_err(|e| e.to_string())? {
            Decoded::Data(bytes) => out.extend_from_slice(&bytes),
            Decoded::End => return Ok((out, true)),
            Decoded::NeedMore if fed == wire.len() => {
                return match body.closed() {
                    Ok(()) => Ok((out, false)),
                    Err(StreamError::Truncated) => Err("truncated".to_owned()),
                    Err(e) => Err(e.to_string()),
                };
            }
            Decoded::NeedMore => {
                let next = (fed + step).min(wire.len());
                buf.extend_from_slice(&wire[fed..next]);
                fed = next;
            }
        }
    }
}

/// The field names of a head by a plain reading of its lines: the fuzz target checks the edge
/// against this rather than against a second HTTP parser.
fn field_names(head: &[u8]) -> Vec<String> {
    head.split(|b| *b == b'\n')
        .skip(1)
        .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
        .take_while(|line| !line.is_empty())
        .filter_map(|line| {
            let colon = line.iter().position(|b| *b == b':')?;
            Some(String::from_utf8_lossy(&line[..colon]).trim().to_owned())
        })
        .collect()
}

/// A SAML response posted to the SAML plugin's callback, with no key to sign it.
pub fn saml_responses(data: &[u8]) {
    xsigate_idp_saml::fuzzing::response(data);
}
