//! The HTTP surface in process: the router with its guard, a relay that no broker feeds (device
//! states are set directly), and an auth file with two API tokens and a user.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode, header};
use ferrocam_protocol::control::Role;
use ferrocam_protocol::{DeviceStatus, InstanceId};
use tokio::sync::mpsc;
use tower::ServiceExt as _;

use super::{AppState, HttpSettings, router};
use crate::auth::grant::GrantSigner;
use crate::auth::{Auth, password, token};
use crate::relay::{Publish, Relay};

/// The gateway's own origin in these tests.
const HOST: &str = "cams.lan:8080";
/// A site listed in `allowed_origins`.
const LISTED: &str = "https://nvr.example";

struct Gateway {
    app: axum::Router,
    auth: Arc<Auth>,
    auth_path: std::path::PathBuf,
    relay: Arc<Relay>,
    /// What the relay asked the broker to publish.
    broker: mpsc::UnboundedReceiver<Publish>,
    /// `control`, every device.
    admin: String,
    /// `view`, only `porch`.
    porch: String,
}

/// A gateway whose sessions may do at most `role`.
fn gateway(role: Role) -> Gateway {
    let (admin, admin_hash) = token::generate();
    let (porch, porch_hash) = token::generate();
    let auth_file = format!(
        "session_secret = \"{}\"\nallowed_origins = [\"{LISTED}\"]\n\
         [[user]]\nname = \"alice\"\npassword_hash = \"{}\"\nrole = \"control\"\ndevices = [\"*\"]\n\
         [[token]]\nname = \"admin\"\nsha256 = \"{admin_hash}\"\nrole = \"control\"\ndevices = [\"*\"]\n\
         [[token]]\nname = \"porch\"\nsha256 = \"{porch_hash}\"\nrole = \"view\"\ndevices = [\"porch\"]\n",
        "A".repeat(44),
        password::hash("wonderland"),
    );
    let dir = std::env::temp_dir().join(format!(
        "ferrocam-http-{}-{}",
        std::process::id(),
        rand::random::<u32>()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("auth.toml"), auth_file).unwrap();
    let auth = Arc::new(Auth::load(dir.join("auth.toml"), vec![7; 32]).unwrap());
    let auth_for_test = Arc::clone(&auth);

    let (tx, broker) = mpsc::unbounded_channel();
    let instance = InstanceId::parse("gw-test").unwrap();
    let relay = Arc::new(Relay::new(
        instance.clone(),
        tx,
        GrantSigner::for_tests(instance),
    ));
    let settings = HttpSettings {
        ice_servers: Vec::new(),
        answer_timeout: Duration::from_secs(1),
        role,
        turn: None,
        public_ops: false,
        hosts: super::hardening::HostPolicy::Names(vec!["cams.lan".into()]),
        trusted_proxies: vec![super::client::Cidr::parse("127.0.0.1").unwrap()],
    };
    let (_, shutdown) = tokio::sync::watch::channel(false);
    let state = AppState::new(
        Arc::clone(&relay),
        settings,
        auth,
        shutdown,
        Default::default(),
    );
    Gateway {
        app: router(state),
        auth_path: dir.join("auth.toml"),
        auth: Arc::clone(&auth_for_test),
        relay,
        broker,
        admin,
        porch,
    }
}

impl Gateway {
    fn device(&self, id: &str, online: bool) {
        let status: DeviceStatus = serde_json::from_value(serde_json::json!({
            "v": 1, "device": id, "online": online, "epoch": 1,
        }))
        .unwrap();
        self.relay.on_status(status);
    }

    async fn send(&self, request: Request<Body>) -> Reply {
        let response = self.app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Reply {
    /// `error.code` of a JSON refusal.
    fn code(&self) -> String {
        let json: serde_json::Value = serde_json::from_str(&self.body).unwrap_or_default();
        json["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

fn request(method: &str, path: &str, token: &str) -> axum::http::request::Builder {
    Request::builder()
        .method(method)
        .uri(path)
        .header(header::HOST, HOST)
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
}

fn get(path: &str, token: &str) -> Request<Body> {
    request("GET", path, token).body(Body::empty()).unwrap()
}

fn control(device: &str, token: &str) -> Request<Body> {
    request("POST", &format!("/api/devices/{device}/control"), token)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(r#"{"cmd":"status"}"#))
        .unwrap()
}

fn whep(device: &str, token: &str, sdp: &str) -> Request<Body> {
    request("POST", &format!("/whep/{device}"), token)
        .header(header::CONTENT_TYPE, "application/sdp")
        .body(Body::from(sdp.to_owned()))
        .unwrap()
}

/// An offer of the right shape; the relay never gets to judge its codecs here.
const OFFER: &str = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
    m=video 9 UDP/TLS/RTP/SAVPF 102\r\na=rtpmap:102 H264/90000\r\n\
    a=fmtp:102 packetization-mode=1;profile-level-id=42e01f\r\n";

fn login(content_type: &str, origin: Option<&str>, body: &str) -> Request<Body> {
    let mut builder = Request::builder()
        .method("POST")
        .uri("/api/login")
        .header(header::HOST, HOST)
        .header(header::CONTENT_TYPE, content_type);
    if let Some(origin) = origin {
        builder = builder.header(header::ORIGIN, origin);
    }
    builder.body(Body::from(body.to_owned())).unwrap()
}

/// Logs alice in (as a script: JSON, no Origin) and returns her session token.
async fn alice_logs_in(gw: &Gateway) -> String {
    let json = r#"{"user":"alice","password":"wonderland"}"#;
    let reply = gw.send(login("application/json", None, json)).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let body: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
    body["token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_logout_or_a_new_password_ends_the_session() {
    let gw = gateway(Role::Control);
    let token = alice_logs_in(&gw).await;
    assert_eq!(gw.send(get("/api/me", &token)).await.status, StatusCode::OK);
    // The cookie the page holds, sent back to log out.
    let logout = Request::builder()
        .method("POST")
        .uri("/api/logout")
        .header(header::HOST, HOST)
        .header(header::COOKIE, format!("ferrocam_session={token}"))
        .body(Body::empty())
        .unwrap();
    assert_eq!(gw.send(logout).await.status, StatusCode::NO_CONTENT);
    assert_eq!(
        gw.send(get("/api/me", &token)).await.status,
        StatusCode::UNAUTHORIZED,
        "a copy of the logged-out token"
    );
    // Another session of alice's is unaffected by that logout...
    let other = alice_logs_in(&gw).await;
    assert_eq!(gw.send(get("/api/me", &other)).await.status, StatusCode::OK);
    // ...until her password changes (the file rewritten and reloaded): then every session made
    // with the old one is over.
    let text = std::fs::read_to_string(&gw.auth_path).unwrap();
    let old_hash = text
        .lines()
        .find_map(|l| l.strip_prefix("password_hash = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_owned();
    std::fs::write(
        &gw.auth_path,
        text.replace(&old_hash, &password::hash("through the looking glass")),
    )
    .unwrap();
    gw.auth.reload().unwrap();
    assert_eq!(
        gw.send(get("/api/me", &other)).await.status,
        StatusCode::UNAUTHORIZED
    );
}

#[tokio::test]
async fn a_login_is_taken_only_as_json_from_the_gateways_own_origin() {
    let gw = gateway(Role::Control);
    let json = r#"{"user":"alice","password":"wonderland"}"#;
    // Another site's page: refused before the password is even looked at, and no cookie.
    for origin in ["https://evil.example", LISTED, "http://cams.lan:9999"] {
        let reply = gw.send(login("application/json", Some(origin), json)).await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{origin}: {reply:?}");
        assert!(reply.headers.get(header::SET_COOKIE).is_none(), "{origin}");
    }
    // The bodies a foreign form can send without a preflight, even without an Origin header.
    for (content_type, body) in [
        ("text/plain", json),
        ("text/plain;charset=UTF-8", json),
        (
            "application/x-www-form-urlencoded",
            "user=alice&password=wonderland",
        ),
        ("multipart/form-data; boundary=x", json),
    ] {
        let reply = gw.send(login(content_type, None, body)).await;
        assert_eq!(
            reply.status,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "{content_type}: {reply:?}"
        );
        assert!(reply.headers.get(header::SET_COOKIE).is_none());
    }
    // The gateway's own page, and scripts (no Origin), log in.
    for origin in [Some("http://cams.lan:8080"), None] {
        let reply = gw
            .send(login("application/json; charset=utf-8", origin, json))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{origin:?}: {reply:?}");
        assert!(reply.headers.get(header::SET_COOKIE).is_some());
    }
}

#[tokio::test]
async fn a_device_outside_the_callers_scope_is_answered_like_one_that_does_not_exist() {
    let gw = gateway(Role::Control);
    gw.device("cam", true);
    gw.device("porch", true);
    let hidden = gw.send(get("/api/devices/cam", &gw.porch)).await;
    let missing = gw.send(get("/api/devices/ghost", &gw.admin)).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    assert_eq!(
        (hidden.code(), missing.code()),
        ("unknown_device".into(), "unknown_device".into())
    );
    assert_eq!(
        hidden.body.replace("cam", "ghost"),
        missing.body,
        "the words must not tell the two apart"
    );
    for request in [
        control("cam", &gw.porch),
        get("/api/devices/cam/snapshot.jpg", &gw.porch),
    ] {
        let reply = gw.send(request).await;
        assert_eq!(
            (reply.status, reply.code()),
            (StatusCode::NOT_FOUND, "unknown_device".to_owned()),
            "{reply:?}"
        );
    }
    let hidden = gw.send(whep("cam", &gw.porch, OFFER)).await;
    let missing = gw.send(whep("ghost", &gw.admin, OFFER)).await;
    assert_eq!(hidden.status, StatusCode::NOT_FOUND);
    assert_eq!(hidden.body.replace("cam", "ghost"), missing.body);
    assert!(gw.broker.is_empty(), "nothing reached a device");
}

#[tokio::test]
async fn me_says_the_role_sessions_get_capped_by_the_gateway() {
    let role_of = |reply: Reply| -> String {
        let json: serde_json::Value = serde_json::from_str(&reply.body).unwrap();
        json["role"].as_str().unwrap().to_owned()
    };
    let gw = gateway(Role::Control);
    assert_eq!(role_of(gw.send(get("/api/me", &gw.admin)).await), "control");
    assert_eq!(role_of(gw.send(get("/api/me", &gw.porch)).await), "view");
    // `--role view`: a control token's sessions can only watch, and the page must know.
    let gw = gateway(Role::View);
    assert_eq!(role_of(gw.send(get("/api/me", &gw.admin)).await), "view");
}

#[tokio::test]
async fn a_whep_body_that_is_not_sdp_is_a_bad_request() {
    let mut gw = gateway(Role::Control);
    gw.device("cam", true);
    for body in ["hello", "{\"sdp\":\"v=0\"}", "v=0\r\ns=-\r\n"] {
        let reply = gw.send(whep("cam", &gw.admin, body)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body:?}: {reply:?}");
        assert!(reply.body.contains("not an SDP offer"), "{reply:?}");
    }
    assert!(gw.broker.try_recv().is_err(), "nothing was relayed");
}

#[tokio::test]
async fn rest_control_and_whep_agree_on_unknown_and_offline_devices() {
    let gw = gateway(Role::Control);
    gw.device("cam", false);
    for request in [
        control("cam", &gw.admin),
        get("/api/devices/cam/snapshot.jpg", &gw.admin),
        whep("cam", &gw.admin, OFFER),
    ] {
        let path = request.uri().path().to_owned();
        let reply = gw.send(request).await;
        assert_eq!(reply.status, StatusCode::CONFLICT, "{path}: {reply:?}");
        assert!(reply.headers.contains_key(header::RETRY_AFTER), "{path}");
        assert!(reply.body.contains("offline"), "{path}: {reply:?}");
    }
    assert_eq!(gw.send(control("cam", &gw.admin)).await.code(), "offline");
    for request in [
        control("ghost", &gw.admin),
        get("/api/devices/ghost/snapshot.jpg", &gw.admin),
        whep("ghost", &gw.admin, OFFER),
    ] {
        let path = request.uri().path().to_owned();
        let reply = gw.send(request).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}: {reply:?}");
    }
    assert_eq!(
        gw.send(control("ghost", &gw.admin)).await.code(),
        "unknown_device"
    );
}

#[tokio::test]
async fn every_response_is_hardened_and_foreign_host_names_are_refused() {
    let gw = gateway(Role::Control);
    for path in ["/", "/login", "/api/devices", "/app.js"] {
        let reply = gw.send(get(path, &gw.admin)).await;
        let csp = reply.headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap();
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"));
        assert_eq!(reply.headers[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(reply.headers[header::REFERRER_POLICY], "no-referrer");
    }
    // A DNS-rebinding page: the browser sends the attacker's name, whatever address it reached.
    let rebound = Request::builder()
        .uri("/api/devices")
        .header(header::HOST, "attacker.example:8080")
        .header(header::AUTHORIZATION, format!("Bearer {}", gw.admin))
        .body(Body::empty())
        .unwrap();
    let reply = gw.send(rebound).await;
    assert_eq!(reply.status, StatusCode::MISDIRECTED_REQUEST);
    assert!(reply.body.contains("--allowed-hosts"), "{}", reply.body);
    let by_address = Request::builder()
        .uri("/api/devices")
        .header(header::HOST, "192.0.2.7:8080")
        .header(header::AUTHORIZATION, format!("Bearer {}", gw.admin))
        .body(Body::empty())
        .unwrap();
    assert_eq!(gw.send(by_address).await.status, StatusCode::OK);
}

#[tokio::test]
async fn wrong_passwords_for_one_user_are_throttled_from_any_number_of_addresses() {
    let gw = gateway(Role::Control);
    let mut refused = 0;
    for i in 0..100u32 {
        // Each guess from another address, through the trusted proxy (127.0.0.1).
        let mut request = login(
            "application/json",
            None,
            r#"{"user":"alice","password":"guess"}"#,
        );
        request.headers_mut().insert(
            "x-forwarded-for",
            format!("198.51.{}.{}", i / 250, i % 250 + 1)
                .parse()
                .unwrap(),
        );
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(std::net::SocketAddr::from((
                [127, 0, 0, 1],
                40000,
            ))));
        let reply = gw.send(request).await;
        match reply.status {
            StatusCode::UNAUTHORIZED => {}
            StatusCode::TOO_MANY_REQUESTS => refused += 1,
            other => panic!("attempt {i}: {other} {}", reply.body),
        }
    }
    assert!(refused >= 85, "only {refused} of 100 guesses throttled");
    // Another account is not held back.
    let reply = gw
        .send(login(
            "application/json",
            None,
            r#"{"user":"bob","password":"x"}"#,
        ))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_device_announcing_four_billion_snapshot_chunks_gets_the_caller_a_clear_error() {
    let mut gw = gateway(Role::Control);
    gw.device("cam", true);
    let app = gw.app.clone();
    let admin = gw.admin.clone();
    let caller = tokio::spawn(async move {
        let response = app
            .oneshot(get("/api/devices/cam/snapshot.jpg", &admin))
            .await
            .unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&body).into_owned())
    });
    // The request the relay published, then the device's (signed, so believed) reply claiming
    // 4294967295 chunks: the gateway must neither allocate for them nor wait for them.
    let published = tokio::time::timeout(Duration::from_secs(5), gw.broker.recv())
        .await
        .expect("the snapshot request is published")
        .expect("the relay is alive");
    let request = ferrocam_protocol::Request::decode(&published.payload).unwrap();
    let cam = ferrocam_protocol::DeviceId::parse("cam").unwrap();
    let announce = serde_json::json!({
        "v": 1, "id": 1,
        "ok": {"mime": "image/jpeg", "bytes": 1000, "chunks": 4_294_967_295u32, "width": 1, "height": 1}
    });
    gw.relay.on_reply(
        &cam,
        ferrocam_protocol::Reply::new(
            ferrocam_protocol::Party::Device(cam.clone()),
            cam.clone(),
            request.session,
            ferrocam_protocol::FromDevice::ControlReply {
                message: announce.to_string(),
                sealed: false,
            },
        ),
    );
    let (status, body) = caller.await.unwrap();
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(body.contains("oversized snapshot"), "{body}");
    // And the gateway serves on.
    assert_eq!(
        gw.send(get("/api/devices", &gw.admin)).await.status,
        StatusCode::OK
    );
}
