//! The page's file transfer (files.js), driven from tests and `bench-files`.

use std::time::Duration;

use serde_json::Value;

use crate::{Browser, eventually};

/// Waits until the page has opened its `files` channel to the camera it watches.
pub async fn files_channel_open(browser: &Browser) -> anyhow::Result<()> {
    eventually("the files channel", Duration::from_secs(60), || async {
        let open = browser
            .js("return Boolean(window.FerrocamFiles && FerrocamFiles.state.client);")
            .await?;
        Ok((open == true).then_some(()))
    })
    .await
}

/// Uploads `bytes` random bytes from the page as `name` (`files.put`, checked by the camera);
/// returns `{file, sha256, ms}`.
pub async fn upload_random(browser: &Browser, name: &str, bytes: usize) -> anyhow::Result<Value> {
    browser
        .job(
            "the upload",
            Duration::from_secs(300),
            &format!(
                "const data = new Uint8Array({bytes});
                 for (let i = 0; i < data.length; i += 65536) crypto.getRandomValues(data.subarray(i, i + 65536));
                 const started = performance.now();
                 const put = await FerrocamFiles.state.client.put({name:?}, data);
                 return {{ ...put, ms: performance.now() - started }};"
            ),
        )
        .await
}
