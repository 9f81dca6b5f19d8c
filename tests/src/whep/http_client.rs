//! HTTP for WHEP tests: one request off the async runtime with the stack's credentials, and
//! the reply reduced to status, headers and body ([`HttpReply`]).
//!
//! Apart from the player because tests also use it on its own, to send exactly the requests a
//! player would not (bad media types, missing If-Match, foreign sessions).

use std::time::Duration;

/// An HTTP response reduced to what the tests look at.
#[derive(Debug, Clone)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl HttpReply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }
}

/// Sends one HTTP request off the async runtime (ureq is blocking).
pub async fn http(
    method: &'static str,
    url: String,
    headers: Vec<(&'static str, String)>,
    body: Option<String>,
) -> anyhow::Result<HttpReply> {
    let mut headers = headers;
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        && let Some(bearer) = crate::creds::bearer_for(&url)
    {
        headers.push(("authorization", bearer));
    }
    // An empty value means "no credentials at all".
    headers.retain(|(k, v)| !(k.eq_ignore_ascii_case("authorization") && v.is_empty()));
    tokio::task::spawn_blocking(move || {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .max_redirects(0)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .new_agent();
        let mut req = ureq::http::Request::builder().method(method).uri(&url);
        for (k, v) in &headers {
            req = req.header(*k, v);
        }
        let mut resp = match body {
            Some(body) => agent.run(req.body(body)?)?,
            None => agent.run(req.body(())?)?,
        };
        let status = resp.status().as_u16();
        let headers = resp
            .headers()
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        Ok(HttpReply {
            status,
            headers,
            body,
        })
    })
    .await?
}

impl std::fmt::Display for HttpReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HTTP {}: {}", self.status, self.body.trim())
    }
}

impl std::error::Error for HttpReply {}
