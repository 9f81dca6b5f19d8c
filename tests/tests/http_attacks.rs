//! The web server under the attacks a browser-facing service meets: connections that trickle
//! their request bodies, password guessing spread over many addresses, and a session cookie
//! kept after its owner logged out. A real gateway process, over real TCP.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use ferrocam_tests::{Stack, StackOptions};

const PASSWORD: &str = "correct horse battery";

/// Lets this process (and the gateway it starts) hold a few thousand sockets.
fn raise_open_files() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain libc calls on a struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 {
            limit.rlim_cur = limit.rlim_max.min(16_384);
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// `POST /api/login` as a script would; the status and the body.
fn login(stack: &Stack, user: &str, password: &str, forwarded_for: Option<&str>) -> (u16, String) {
    let mut request = ureq::post(&stack.url("api/login"))
        .header("content-type", "application/json")
        .config()
        .http_status_as_error(false)
        .build();
    if let Some(address) = forwarded_for {
        request = request.header("x-forwarded-for", address);
    }
    let mut reply = request
        .send(serde_json::json!({"user": user, "password": password}).to_string())
        .expect("the gateway answers");
    let status = reply.status().as_u16();
    (
        status,
        reply.body_mut().read_to_string().unwrap_or_default(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_bodies_do_not_stop_a_real_login() -> anyhow::Result<()> {
    raise_open_files();
    let stack = Stack::start(StackOptions::new("http_slow_bodies")).await?;
    let port = stack.gateways[0].http_port;
    let user = stack.creds.user.clone();

    // 1,000 connections that send their headers and 10 of the 100 body bytes they announce.
    let started = Instant::now();
    let slow = tokio::task::spawn_blocking(move || -> anyhow::Result<Vec<TcpStream>> {
        (0..1000)
            .map(|_| {
                let mut s = TcpStream::connect(("127.0.0.1", port))?;
                s.write_all(
                    b"POST /api/login HTTP/1.1\r\nHost: 127.0.0.1\r\n\
                      Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{\"user\":\"",
                )?;
                Ok(s)
            })
            .collect()
    })
    .await??;

    // The real user logs in meanwhile, at once.
    let (status, body) = tokio::task::spawn_blocking({
        let stack_url = stack.url("api/login");
        move || {
            let mut reply = ureq::post(&stack_url)
                .header("content-type", "application/json")
                .config()
                .http_status_as_error(false)
                .build()
                .send(serde_json::json!({"user": user, "password": PASSWORD}).to_string())?;
            anyhow::Ok((reply.status().as_u16(), reply.body_mut().read_to_string()?))
        }
    })
    .await??;
    assert_eq!(status, 200, "{body}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the login waited for the slow bodies"
    );

    // And the slow connections are answered and closed once their body time is up.
    let closed = tokio::task::spawn_blocking(move || {
        slow.into_iter()
            .filter(|s| {
                let mut s = s.try_clone().expect("clone");
                s.set_read_timeout(Some(Duration::from_secs(30))).ok();
                let mut all = Vec::new();
                s.read_to_end(&mut all).is_ok() && all.starts_with(b"HTTP/1.1 400")
            })
            .count()
    })
    .await?;
    assert_eq!(closed, 1000, "slow bodies answered 400 and closed");
    Ok(())
}

/// `GET /api/me` with a session cookie; the status.
fn me_with_cookie(stack: &Stack, token: &str) -> u16 {
    ureq::get(&stack.url("api/me"))
        .header("cookie", &format!("ferrocam_session={token}"))
        .config()
        .http_status_as_error(false)
        .build()
        .call()
        .expect("the gateway answers")
        .status()
        .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guesses_at_one_account_are_throttled_and_a_logout_ends_the_cookie() -> anyhow::Result<()> {
    // Behind a proxy on loopback: each guess names another client address.
    let stack = Stack::start(
        StackOptions::new("http_guessing").gateway_args(&["--trusted-proxies", "127.0.0.1"]),
    )
    .await?;
    let stack = std::sync::Arc::new(stack);
    let user = stack.creds.user.clone();
    tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
        // The owner logs in first (the page keeps the token as its cookie).
        let (status, body) = login(&stack, &user, PASSWORD, Some("192.0.2.10"));
        assert_eq!(status, 200, "{body}");
        let token: serde_json::Value = serde_json::from_str(&body)?;
        let token = token["token"].as_str().expect("a token").to_owned();

        // 100 wrong passwords for the same account, each from another address.
        let guesses: Vec<u16> = (0..100u32)
            .map(|i| {
                let from = format!("203.0.{}.{}", i / 200, i % 200 + 1);
                login(&stack, &user, "wrong", Some(&from)).0
            })
            .collect();
        assert!(
            guesses.iter().all(|s| *s == 401 || *s == 429),
            "{guesses:?}"
        );
        let throttled = guesses.iter().filter(|s| **s == 429).count();
        assert!(throttled >= 85, "{throttled} of 100 throttled: {guesses:?}");

        // The owner's session is untouched by the guessing; after a logout its cookie is dead.
        assert_eq!(me_with_cookie(&stack, &token), 200);
        let logout = ureq::post(&stack.url("api/logout"))
            .header("cookie", &format!("ferrocam_session={token}"))
            .config()
            .http_status_as_error(false)
            .build()
            .send_empty()?;
        assert_eq!(logout.status().as_u16(), 204);
        assert_eq!(
            me_with_cookie(&stack, &token),
            401,
            "an old cookie after logout"
        );
        Ok(())
    })
    .await?
}
