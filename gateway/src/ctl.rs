//! `ferrocam-gateway ctl`: one control command from the shell, through a running gateway's
//! REST relay. Arguments are `key=value`; numbers and `true`/`false` are sent as JSON numbers
//! and booleans.
//!
//! ```sh
//! ferrocam-gateway ctl demo status
//! ferrocam-gateway ctl demo video.set bitrate_kbps=800
//! ferrocam-gateway ctl demo gpio.set name=lamp value=true
//! ferrocam-gateway ctl demo snapshot width=640 out=demo.jpg
//! ```
//!
//! `snapshot` fetches the JPEG (`GET …/snapshot.jpg`, which wakes an idle camera) and saves it
//! to `out` (default `<device>.jpg`); `width` and `max_age_ms` pass through.

use anyhow::Context;

#[derive(Debug, clap::Args)]
pub struct CtlArgs {
    /// Gateway base URL.
    #[arg(long, env = "FERROCAM_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// API token (`ferrocam-gateway new-token`); sent as `Authorization: Bearer`.
    #[arg(long, env = "FERROCAM_TOKEN", hide_env_values = true)]
    token: String,
    /// Device id.
    device: String,
    /// Command (`ping`, `status`, `controls.list`, `controls.set`, `video.set`, `snapshot`,
    /// `gpio.list`, `gpio.get`, `gpio.set`, `ptz`).
    cmd: String,
    /// Arguments as key=value.
    args: Vec<String>,
}

/// Builds the request body from the command line.
fn request(cmd: &str, args: &[String]) -> anyhow::Result<serde_json::Value> {
    let mut body = serde_json::Map::new();
    body.insert("cmd".into(), cmd.into());
    for arg in args {
        let (key, value) = arg
            .split_once('=')
            .with_context(|| format!("argument {arg:?} is not key=value"))?;
        let value = serde_json::from_str::<serde_json::Value>(value)
            .ok()
            .filter(|v| v.is_number() || v.is_boolean())
            .unwrap_or_else(|| value.into());
        body.insert(key.into(), value);
    }
    Ok(body.into())
}

pub fn run(args: &CtlArgs) -> anyhow::Result<()> {
    if args.cmd == "snapshot" {
        return save_snapshot(args);
    }
    let body = request(&args.cmd, &args.args)?;
    let url = format!(
        "{}/api/devices/{}/control",
        args.url.trim_end_matches('/'),
        args.device
    );
    let agent = agent();
    let mut response = agent
        .post(&url)
        .header("authorization", &format!("Bearer {}", args.token))
        .send_json(&body)
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let text = response.body_mut().read_to_string()?;
    println!("{text}");
    anyhow::ensure!(
        status.is_success(),
        "{}",
        failure(status.as_u16(), &args.device, &text)
    );
    Ok(())
}

/// An HTTP client that hands back error statuses as responses (their bodies say why).
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent()
}

/// `ctl <device> snapshot [width=N] [max_age_ms=N] [out=FILE]`.
fn save_snapshot(args: &CtlArgs) -> anyhow::Result<()> {
    let mut out = format!("{}.jpg", args.device);
    let mut query = Vec::new();
    for arg in &args.args {
        match arg.split_once('=') {
            Some(("out", file)) => out = file.to_owned(),
            Some((key @ ("width" | "max_age_ms"), value))
                if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) =>
            {
                query.push(format!("{key}={value}"))
            }
            _ => anyhow::bail!("snapshot takes width=N, max_age_ms=N and out=FILE, not {arg:?}"),
        }
    }
    let url = format!(
        "{}/api/devices/{}/snapshot.jpg{}{}",
        args.url.trim_end_matches('/'),
        args.device,
        if query.is_empty() { "" } else { "?" },
        query.join("&")
    );
    let agent = agent();
    let mut response = agent
        .get(&url)
        .header("authorization", &format!("Bearer {}", args.token))
        .call()
        .with_context(|| format!("GET {url}"))?;
    let status = response.status();
    let taken = response
        .headers()
        .get("last-modified")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    if !status.is_success() {
        let text = response.body_mut().read_to_string()?;
        anyhow::bail!("{}", snapshot_failure(status.as_u16(), &args.device, &text));
    }
    let jpeg = response
        .body_mut()
        .with_config()
        .limit(16 * 1024 * 1024)
        .read_to_vec()?;
    std::fs::write(&out, &jpeg).with_context(|| format!("writing {out}"))?;
    println!(
        "{}",
        serde_json::json!({ "saved": out, "bytes": jpeg.len(), "taken": taken })
    );
    Ok(())
}

/// Like [`failure`], but a snapshot's 400, 503 and 504 carry the device's own reason.
fn snapshot_failure(status: u16, device: &str, body: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let message = json
        .pointer("/error/message")
        .and_then(|v| v.as_str())
        .unwrap_or("?");
    match status {
        400 => format!("the snapshot request was refused (HTTP 400): {message}"),
        503 => format!("device {device} cannot take a snapshot now (HTTP 503): {message}"),
        504 => format!("device {device} took no snapshot in time (HTTP 504): {message}"),
        _ => failure(status, device, body),
    }
}

/// Says who refused: only a 422 carries the device's own answer (an `error` outcome); every
/// other failure is the gateway's, about the caller, the request or reaching the device.
fn failure(status: u16, device: &str, body: &str) -> String {
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    let error = |path: &str| json.pointer(path).and_then(|v| v.as_str()).unwrap_or("?");
    match status {
        422 => format!(
            "the device refused: {} ({})",
            error("/error/message"),
            error("/error/code")
        ),
        401 => "the gateway refused the credentials (HTTP 401): check FERROCAM_TOKEN".to_owned(),
        403 => format!(
            "the gateway refused the request (HTTP 403): {}",
            error("/error/message")
        ),
        404 => format!("the gateway knows no device {device} this token may reach (HTTP 404)"),
        409 => format!("the gateway says device {device} is offline (HTTP 409)"),
        504 => format!(
            "device {device} did not answer the gateway in time (HTTP 504): {}",
            error("/error/message")
        ),
        _ => format!(
            "the gateway refused (HTTP {status}): {}",
            error("/error/message")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arguments_become_typed_json() {
        let args = [
            "bitrate_kbps=800".to_owned(),
            "name=lamp".to_owned(),
            "value=true".to_owned(),
        ];
        assert_eq!(
            request("video.set", &args).unwrap(),
            serde_json::json!({"cmd": "video.set", "bitrate_kbps": 800, "name": "lamp", "value": true})
        );
        assert!(request("ping", &["oops".to_owned()]).is_err());
    }

    #[test]
    fn failures_name_who_refused() {
        let device = r#"{"v":1,"id":1,"error":{"code":"forbidden","message":"view only"}}"#;
        assert_eq!(
            failure(422, "cam", device),
            "the device refused: view only (forbidden)"
        );
        let gateway = |status, code| {
            let body = format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#);
            failure(status, "cam", &body)
        };
        for (status, code) in [
            (401, "unauthorized"),
            (403, "forbidden"),
            (404, "unknown_device"),
            (409, "offline"),
            (400, "bad_request"),
            (429, "rate_limited"),
        ] {
            let text = gateway(status, code);
            assert!(text.contains("gateway"), "{status}: {text}");
            assert!(!text.contains("device refused"), "{status}: {text}");
        }
        assert!(gateway(404, "unknown_device").contains("no device cam"));
        assert!(gateway(409, "offline").contains("offline"));
        assert!(gateway(504, "timeout").contains("did not answer"));
        // A body that is not JSON (a proxy's error page) still gets a sentence.
        assert!(failure(502, "cam", "<html>").contains("HTTP 502"));
    }
}
