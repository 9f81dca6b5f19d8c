//! TURN with ephemeral credentials: the gateway mints coturn `use-auth-secret` credentials for
//! each viewer; Chromium streams with `iceTransportPolicy: "relay"` through a real coturn on
//! loopback; credentials past their expiry are refused by coturn.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use ferrocam_tests::coturn::{self, SECRET};
use ferrocam_tests::{Browser, Stack, StackOptions, eventually, free_port};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

fn password(username: &str) -> String {
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Relay candidates a fresh peer connection gathers with `ice_servers` and relay-only policy.
async fn relay_candidates(browser: &Browser, ice_servers: &Value) -> anyhow::Result<u64> {
    let script = format!(
        "const pc = new RTCPeerConnection({{ iceServers: {ice_servers}, iceTransportPolicy: 'relay' }});
         let n = 0;
         pc.onicecandidate = (e) => {{
           if (e.candidate) {{ if (e.candidate.type === 'relay') n++; }}
           else {{ pc.close(); done(n); }}
         }};
         pc.createDataChannel('probe');
         pc.createOffer().then((o) => pc.setLocalDescription(o));"
    );
    Ok(browser.js_async(&script).await?.as_u64().unwrap_or(0))
}

#[tokio::test]
async fn chromium_streams_through_coturn_with_minted_credentials() -> anyhow::Result<()> {
    let turn_port = free_port();
    let turn_url = format!("turn:127.0.0.1:{turn_port}?transport=udp");
    let stack = Stack::start(StackOptions::new("turn_relay").gateway_args(&[
        "--turn-url",
        &turn_url,
        "--turn-secret",
        SECRET,
        "--turn-ttl-secs",
        "600",
    ]))
    .await?;
    let _coturn = coturn::start("127.0.0.1".parse()?, turn_port, &stack.log_dir)?;
    let browser = Browser::start(&stack.log_dir).await?;
    stack.open_viewer(&browser, 0).await?;

    // The page got fresh credentials in its hello.
    let servers = eventually(
        "TURN credentials from the gateway",
        Duration::from_secs(15),
        || async {
            let v = browser.js("return window.ferrocam.iceServers;").await?;
            Ok(v.as_array().filter(|a| !a.is_empty()).map(|_| v.clone()))
        },
    )
    .await?;
    let minted = &servers[0];
    assert_eq!(minted["urls"][0], turn_url.as_str(), "{servers}");
    let username = minted["username"].as_str().unwrap();
    let expiry: u64 = username.split(':').next().unwrap().parse()?;
    let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    assert!((now + 590..=now + 610).contains(&expiry), "{username}");
    assert_eq!(minted["credential"], password(username).as_str());

    // Relay-only: every packet goes through coturn.
    browser
        .js("window.ferrocam.watch('demo', { iceTransportPolicy: 'relay' }); return null;")
        .await?;
    let pair = eventually("60 frames through the relay", Duration::from_secs(30), || async {
        let v = browser
            .js_async(
                "const pc = window.ferrocam.pc;
                 pc.getStats().then((r) => {
                   let frames = 0, pair = null, local = {};
                   r.forEach((s) => {
                     if (s.type === 'inbound-rtp' && s.kind === 'video') frames = s.framesDecoded;
                     if (s.type === 'candidate-pair' && s.nominated && s.state === 'succeeded') pair = s;
                     if (s.type === 'local-candidate') local[s.id] = s.candidateType;
                   });
                   done({ frames, local: pair ? local[pair.localCandidateId] : null });
                 });",
            )
            .await?;
        Ok((v["frames"].as_u64().unwrap_or(0) >= 60).then_some(v))
    })
    .await?;
    assert_eq!(pair["local"], "relay", "{pair}");

    // Expired credentials: coturn refuses the allocation, so nothing is gathered.
    let stale_user = format!("{}:someone", now - 60);
    let stale = json!([{ "urls": [turn_url], "username": stale_user, "credential": password(&stale_user) }]);
    assert_eq!(
        relay_candidates(&browser, &stale).await?,
        0,
        "expired credentials were accepted"
    );
    let fresh = json!([minted]);
    assert!(
        relay_candidates(&browser, &fresh).await? > 0,
        "fresh credentials were refused"
    );
    browser.close().await
}
