//! Headless Debian Chromium driven over WebDriver (chromedriver + fantoccini).

use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

use crate::process::{Process, free_port};

/// A chromedriver process and a WebDriver session in a fresh browser profile.
pub struct Browser {
    pub client: Client,
    _profile: TempDir,
    _driver: Process,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn start(log_dir: &std::path::Path) -> anyhow::Result<Self> {
        let port = free_port();
        let mut driver = Command::new(which("chromedriver")?);
        driver.arg(format!("--port={port}"));
        let driver = Process::spawn("chromedriver", driver, log_dir)?;

        let profile = TempDir::new("ferrocam-chromium")?;
        let capabilities = json!({
            "goog:chromeOptions": {
                "binary": which("chromium")?,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-quic",
                    "--autoplay-policy=no-user-gesture-required", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.0.display()),
                ]
            }
        });
        let capabilities = match capabilities {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        let url = format!("http://127.0.0.1:{port}");
        let client = crate::eventually(
            "chromedriver to accept a session",
            Duration::from_secs(20),
            || {
                let capabilities = capabilities.clone();
                let url = url.clone();
                async move {
                    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
                    match ClientBuilder::new(connector)
                        .capabilities(capabilities)
                        .connect(&url)
                        .await
                    {
                        Ok(client) => Ok(Some(client)),
                        Err(e) => Err(anyhow::anyhow!("{e}")),
                    }
                }
            },
        )
        .await?;
        Ok(Self {
            client,
            _profile: profile,
            _driver: driver,
        })
    }

    /// Runs a script in the page and returns its value.
    pub async fn js(&self, script: &str) -> anyhow::Result<Value> {
        self.client
            .execute(script, vec![])
            .await
            .with_context(|| format!("running script: {script}"))
    }

    /// Runs an async script: the body gets `done` as its completion callback.
    pub async fn js_async(&self, body: &str) -> anyhow::Result<Value> {
        let script = format!("const done = arguments[arguments.length - 1]; {body}");
        self.client
            .execute_async(&script, vec![])
            .await
            .with_context(|| format!("running async script: {body}"))
    }

    /// Opens `base` (a gateway's root URL), which redirects to its login page, logs in as
    /// `user` and waits for the viewer to load.
    pub async fn login(&self, base: &str, user: &str, password: &str) -> anyhow::Result<()> {
        self.client.goto(base).await?;
        // Either the login form (redirected) or, with a live session cookie, the viewer.
        let logged_in = crate::eventually(
            "the login form or the viewer",
            Duration::from_secs(10),
            || async {
                if self
                    .client
                    .find(fantoccini::Locator::Id("devices"))
                    .await
                    .is_ok()
                {
                    return Ok(Some(true));
                }
                Ok(self
                    .client
                    .find(fantoccini::Locator::Id("login"))
                    .await
                    .ok()
                    .map(|_| false))
            },
        )
        .await?;
        if logged_in {
            return Ok(());
        }
        self.client
            .find(fantoccini::Locator::Id("user"))
            .await?
            .send_keys(user)
            .await?;
        self.client
            .find(fantoccini::Locator::Id("password"))
            .await?
            .send_keys(password)
            .await?;
        self.client
            .find(fantoccini::Locator::Id("submit"))
            .await?
            .click()
            .await?;
        crate::eventually(
            "the viewer after login",
            Duration::from_secs(10),
            || async {
                Ok(self
                    .client
                    .find(fantoccini::Locator::Id("devices"))
                    .await
                    .ok())
            },
        )
        .await?;
        Ok(())
    }

    /// Waits for the page's button for `device` to be enabled (device online) and clicks it.
    pub async fn click_device(&self, device: &str) -> anyhow::Result<()> {
        let selector = format!("button.device[data-device='{device}']:not([disabled])");
        // Find and click in one retried step: should the page replace the button between the
        // two (a device that went offline and came back), the click fails as "stale element"
        // and the next attempt finds the new one.
        crate::eventually("the device button", Duration::from_secs(15), || async {
            let Ok(button) = self.client.find(fantoccini::Locator::Css(&selector)).await else {
                return Ok(None);
            };
            button.click().await?;
            Ok(Some(()))
        })
        .await
    }

    /// Ends the WebDriver session (closing the browser).
    pub async fn close(self) -> anyhow::Result<()> {
        self.client.close().await.context("closing the browser")
    }
}

fn which(program: &str) -> anyhow::Result<String> {
    for dir in ["/usr/bin", "/usr/local/bin", "/snap/bin"] {
        let path = format!("{dir}/{program}");
        if std::path::Path::new(&path).exists() {
            return Ok(path);
        }
    }
    anyhow::bail!("{program} not found: run scripts/setup-system.sh (make test does)")
}

/// A directory removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(prefix: &str) -> anyhow::Result<Self> {
        let path = std::env::temp_dir().join(format!(
            "{prefix}-{}-{}",
            std::process::id(),
            crate::free_port()
        ));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        // Chromium's helper processes can outlive the WebDriver session (a test that failed
        // half-way, a closed last window); they are the ones using this profile.
        let _ = std::process::Command::new("pkill")
            .arg("-f")
            .arg(format!("user-data-dir={}", self.0.display()))
            .status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
