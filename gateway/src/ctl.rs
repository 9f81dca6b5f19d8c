//! `ferrocam-gateway ctl`: one control command from the shell, through a running gateway's
//! REST relay. Arguments are `key=value`; numbers and `true`/`false` are sent as JSON numbers
//! and booleans.
//!
//! ```sh
//! ferrocam-gateway ctl demo status
//! ferrocam-gateway ctl demo video.set bitrate_kbps=800
//! ferrocam-gateway ctl demo gpio.set name=lamp value=true
//! ```

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
    let body = request(&args.cmd, &args.args)?;
    let url = format!(
        "{}/api/devices/{}/control",
        args.url.trim_end_matches('/'),
        args.device
    );
    let agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .new_agent();
    let mut response = agent
        .post(&url)
        .header("authorization", &format!("Bearer {}", args.token))
        .send_json(&body)
        .with_context(|| format!("POST {url}"))?;
    let status = response.status();
    let text = response.body_mut().read_to_string()?;
    println!("{text}");
    anyhow::ensure!(status.is_success(), "the device refused: HTTP {status}");
    Ok(())
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
}
