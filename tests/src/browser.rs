//! Headless Debian Chromium or Firefox ESR driven over WebDriver (chromedriver or geckodriver,
//! and fantoccini).

use std::process::Command;
use std::time::Duration;

use anyhow::Context;
use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

use crate::process::{Process, free_port};

/// A WebDriver process and a session in a fresh browser profile.
pub struct Browser {
    pub client: Client,
    pub kind: Kind,
    _profile: TempDir,
    _driver: Process,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // geckodriver leaves Firefox running when it is killed (a test that failed before
        // `close`); Firefox's profile lives in our directory, so its command line names it.
        if self.kind == Kind::Firefox {
            let _ = Command::new("pkill")
                .args(["-KILL", "-f", &self._profile.0.display().to_string()])
                .status();
        }
    }
}

/// A DevTools command sent through chromedriver's `goog/cdp/execute` extension.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl fantoccini::wd::WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "cmd": self.cmd, "params": self.params });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// Which browser a [`Browser`] drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Debian's `chromium`, through `chromedriver`.
    Chromium,
    /// Debian's `firefox-esr` with its default preferences, through `geckodriver`.
    Firefox,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium session.
    pub async fn start(log_dir: &std::path::Path) -> anyhow::Result<Self> {
        Self::start_kind(Kind::Chromium, None, &[], log_dir).await
    }

    /// [`Self::start`] with more Chromium switches (a fake microphone, say).
    pub async fn start_with(
        log_dir: &std::path::Path,
        switches: &[String],
    ) -> anyhow::Result<Self> {
        Self::start_kind(Kind::Chromium, None, switches, log_dir).await
    }

    /// [`Self::start`] inside `netns`: a browser on another host, whose only network is the
    /// namespace's link (pages it opens must be served on the link's host end).
    pub async fn start_in(
        netns: &crate::netns::NetNs,
        log_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        Self::start_kind(Kind::Chromium, Some(netns), &[], log_dir).await
    }

    /// [`Self::start_in`] with more Chromium switches.
    pub async fn start_in_with(
        netns: &crate::netns::NetNs,
        log_dir: &std::path::Path,
        switches: &[String],
    ) -> anyhow::Result<Self> {
        Self::start_kind(Kind::Chromium, Some(netns), switches, log_dir).await
    }

    /// Starts geckodriver and a headless Firefox ESR session. Firefox keeps the preferences
    /// Debian ships (OpenH264 off, so no H.264 over WebRTC): this is the browser as users meet
    /// it. geckodriver makes its own fresh profile.
    pub async fn start_firefox(log_dir: &std::path::Path) -> anyhow::Result<Self> {
        Self::start_kind(Kind::Firefox, None, &[], log_dir).await
    }

    /// [`Self::start_firefox`] inside `netns`: a browser on another host, whose only network
    /// is the namespace's link (pages it opens must be served on the link's host end).
    pub async fn start_firefox_in(
        netns: &crate::netns::NetNs,
        log_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        Self::start_kind(Kind::Firefox, Some(netns), &[], log_dir).await
    }

    async fn start_kind(
        kind: Kind,
        netns: Option<&crate::netns::NetNs>,
        switches: &[String],
        log_dir: &std::path::Path,
    ) -> anyhow::Result<Self> {
        let port = free_port();
        let profile = TempDir::new("ferrocam-browser")?;
        let (name, driver, capabilities) = match kind {
            Kind::Chromium => {
                let mut driver = match netns {
                    None => Command::new(which("chromedriver")?),
                    Some(ns) => {
                        let mut inside = Command::new("ip");
                        inside.args(["netns", "exec", &ns.name, &which("chromedriver")?]);
                        // Reached from outside the namespace, over its link.
                        inside.arg(format!("--allowed-ips={}", ns.host_ip));
                        inside
                    }
                };
                driver.arg(format!("--port={port}"));
                let mut args = vec![
                    "--headless=new".to_owned(),
                    "--no-sandbox".into(),
                    "--disable-gpu".into(),
                    "--disable-dev-shm-usage".into(),
                    "--disable-background-networking".into(),
                    "--disable-component-update".into(),
                    "--disable-sync".into(),
                    "--no-first-run".into(),
                    "--disable-quic".into(),
                    "--autoplay-policy=no-user-gesture-required".into(),
                    "--window-size=1280,1000".into(),
                    format!("--user-data-dir={}", profile.0.display()),
                ];
                args.extend(switches.iter().cloned());
                let capabilities = json!({
                    "goog:chromeOptions": { "binary": which("chromium")?, "args": args }
                });
                ("chromedriver", driver, capabilities)
            }
            Kind::Firefox => {
                let mut driver = match netns {
                    None => Command::new(which("geckodriver")?),
                    Some(ns) => {
                        let mut inside = Command::new("ip");
                        inside.args(["netns", "exec", &ns.name, &which("geckodriver")?]);
                        // Reached from outside the namespace, over its link.
                        inside.args(["--host", &ns.ns_ip, "--allow-hosts", &ns.ns_ip]);
                        inside
                    }
                };
                driver.args(["--port", &port.to_string()]);
                // Its own temporary profiles go where the test can find (and we remove) them.
                driver.env("TMPDIR", &profile.0);
                let capabilities = json!({
                    "browserName": "firefox",
                    "moz:firefoxOptions": {
                        "binary": which("firefox-esr")?,
                        "args": ["-headless", "-width", "1280", "-height", "1000"],
                    }
                });
                ("geckodriver", driver, capabilities)
            }
        };
        let driver = Process::spawn(name, driver, log_dir)?;
        let capabilities = match capabilities {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        let host = netns.map_or("127.0.0.1", |ns| ns.ns_ip.as_str());
        let url = format!("http://{host}:{port}");
        let client = crate::eventually(
            &format!("{name} to accept a session"),
            Duration::from_secs(30),
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
            kind,
            _profile: profile,
            _driver: driver,
        })
    }

    /// Runs `source` in every page this browser loads from now on, before the page's own
    /// scripts (Chromium only: the DevTools call `Page.addScriptToEvaluateOnNewDocument`
    /// through chromedriver). For pages that must meet a browser lacking something.
    pub async fn before_every_page(&self, source: &str) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.kind == Kind::Chromium,
            "only Chromium takes DevTools calls"
        );
        self.client
            .issue_cmd(Cdp {
                cmd: "Page.addScriptToEvaluateOnNewDocument",
                params: json!({ "source": source }),
            })
            .await
            .context("Page.addScriptToEvaluateOnNewDocument")?;
        Ok(())
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

    /// Starts `script` (the body of an async function) in the page as `window.__job` and waits
    /// up to `limit` for its value, polling: unlike [`Self::js_async`], it is not bound by the
    /// WebDriver script timeout (a 50 MB transfer takes longer than that on a slow machine).
    pub async fn job(&self, name: &str, limit: Duration, script: &str) -> anyhow::Result<Value> {
        self.js(&format!(
            "window.__job = {{ done: false }};
             (async () => {{ {script} }})().then(
               (value) => {{ window.__job = {{ done: true, value }}; }},
               (error) => {{ window.__job = {{ done: true, error: String(error && error.message || error) }}; }});
             return true;"
        ))
        .await?;
        let job = crate::eventually(name, limit, || async {
            let job = self.js("return window.__job;").await?;
            Ok((job["done"] == true).then_some(job))
        })
        .await?;
        anyhow::ensure!(job["error"].is_null(), "{name}: {}", job["error"]);
        Ok(job["value"].clone())
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
            return self.viewer_started().await;
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
        self.viewer_started().await
    }

    /// Waits for the viewer's scripts to have run (its WebSocket opened). Now and then a
    /// freshly logged-in page showed its HTML but never ran app.js (no `window.ferrocam` 15 s
    /// later). Seen only in tests that had just made a network namespace and veth pair, so the
    /// likely cause is Chromium aborting requests in flight on a network change
    /// (`ERR_NETWORK_CHANGED`), not yet confirmed. Such a page is reloaded once, as a user
    /// would, and what it had loaded is printed, so the event stays visible.
    async fn viewer_started(&self) -> anyhow::Result<()> {
        let started = || async {
            let open = self
                .js("return !!(window.ferrocam && window.ferrocam.ws);")
                .await?;
            Ok(open.as_bool().unwrap_or(false).then_some(()))
        };
        if crate::eventually("the viewer's scripts", Duration::from_secs(10), &started)
            .await
            .is_ok()
        {
            return Ok(());
        }
        let loaded = self
            .js("return { state: document.readyState, url: location.href,
                          loaded: performance.getEntriesByType('resource').map((e) =>
                            `${e.name.split('/').pop()} ${e.responseStatus || '?'} ${Math.round(e.duration)} ms`) };")
            .await
            .unwrap_or_default();
        eprintln!(
            "PAGE DID NOT START: the viewer's scripts had not run after 10 s; reloading. {loaded}"
        );
        self.js("location.reload(); return null;").await?;
        crate::eventually(
            "the viewer's scripts after a reload",
            Duration::from_secs(10),
            started,
        )
        .await
        .map_err(|e| e.context(format!("before the reload the page had: {loaded}")))
    }

    /// Waits for the page's button for `device` to be enabled (device online) and clicks it.
    pub async fn click_device(&self, device: &str) -> anyhow::Result<()> {
        let selector = format!("button.device[data-device='{device}']:not([disabled])");
        // Find and click in one retried step: should the page replace the button between the
        // two (a device that went offline and came back), the click fails as "stale element"
        // and the next attempt finds the new one.
        let clicked = crate::eventually("the device button", Duration::from_secs(15), || async {
            let Ok(button) = self.client.find(fantoccini::Locator::Css(&selector)).await else {
                return Ok(None);
            };
            button.click().await?;
            Ok(Some(()))
        })
        .await;
        if let Err(e) = clicked {
            // Say what the page shows instead: the list it has, its socket, any error.
            let page = self
                .js("return { url: location.href,
                          socket: window.ferrocam && window.ferrocam.ws
                                  ? window.ferrocam.ws.readyState : null,
                          devices: window.ferrocam ? window.ferrocam.devices : null,
                          list: (document.getElementById('devices') || {}).outerHTML,
                          error: (document.getElementById('error') || {}).textContent };")
                .await
                .unwrap_or_default();
            return Err(e.context(format!("the page: {page}")));
        }
        Ok(())
    }

    /// Ends the WebDriver session (closing the browser).
    pub async fn close(self) -> anyhow::Result<()> {
        self.client
            .clone()
            .close()
            .await
            .context("closing the browser")
    }
}

/// Whether this distribution has Debian's Firefox ESR at all: installed, or a package apt can
/// install. Ubuntu has none (its Firefox is a snap), and the Firefox tests skip there, saying
/// so; where the package exists and is missing, starting Firefox fails the test instead.
pub fn firefox_esr_exists_here() -> bool {
    if which("firefox-esr").is_ok() {
        return true;
    }
    Command::new("apt-cache")
        .args(["policy", "firefox-esr"])
        .output()
        .map(|out| {
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .any(|l| l.trim().starts_with("Candidate:") && !l.contains("(none)"))
        })
        .unwrap_or(false)
}

fn which(program: &str) -> anyhow::Result<String> {
    // geckodriver comes from crates.io (`cargo install`, see scripts/setup-system.sh).
    let cargo_bin = std::env::var("CARGO_HOME")
        .map(|home| format!("{home}/bin"))
        .or_else(|_| std::env::var("HOME").map(|home| format!("{home}/.cargo/bin")))
        .unwrap_or_default();
    for dir in ["/usr/bin", "/usr/local/bin", "/snap/bin", &cargo_bin] {
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
