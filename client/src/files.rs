//! The file protocol from the client's side (`ferrocam_protocol::files`): one request at a
//! time, downloads written to disk as they arrive (resumed from a `.part` file), uploads sent
//! in order.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use bytes::BytesMut;
use ferrocam_protocol::files::{ChunkHeader, FILE_CHUNK, GetReply};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webrtc::data_channel::{DataChannel, DataChannelEvent};

/// The channel and the next request id.
pub struct Files {
    channel: Arc<dyn DataChannel>,
    next_id: u64,
}

/// A message from the camera.
enum Incoming {
    Text(Value),
    Chunk(ChunkHeader, bytes::Bytes),
}

impl Files {
    pub fn new(channel: Arc<dyn DataChannel>) -> Self {
        Self {
            channel,
            next_id: 1,
        }
    }

    async fn next(&self) -> anyhow::Result<Incoming> {
        loop {
            match self.channel.poll().await {
                Some(DataChannelEvent::OnMessage(message)) if message.is_string => {
                    return Ok(Incoming::Text(serde_json::from_slice(&message.data)?));
                }
                Some(DataChannelEvent::OnMessage(message)) => {
                    let data = message.data.freeze();
                    let (header, bytes) = ChunkHeader::decode(&data)
                        .context("a binary message that is not a file chunk")?;
                    let bytes = data.slice_ref(bytes);
                    return Ok(Incoming::Chunk(header, bytes));
                }
                Some(DataChannelEvent::OnClose) | None => bail!("the camera closed the channel"),
                Some(_) => continue,
            }
        }
    }

    /// Sends one request and returns its `ok` body (or the camera's error, in words).
    pub async fn request(&mut self, command: &str, args: Value) -> anyhow::Result<(u64, Value)> {
        let id = self.next_id;
        self.next_id += 1;
        let mut body = json!({ "v": 1, "id": id, "cmd": command });
        if let (Some(body), Value::Object(args)) = (body.as_object_mut(), args) {
            body.extend(args);
        }
        self.channel
            .send_text(&body.to_string())
            .await
            .map_err(|e| anyhow::anyhow!("sending {command}: {e}"))?;
        loop {
            let Incoming::Text(reply) = self.next().await? else {
                continue; // a chunk of an earlier, abandoned transfer
            };
            if reply["id"] != id {
                continue;
            }
            if let Some(error) = reply.get("error").filter(|e| e.is_object()) {
                bail!(
                    "{}: {}",
                    error["code"].as_str().unwrap_or("error"),
                    error["message"].as_str().unwrap_or("")
                );
            }
            return Ok((id, reply["ok"].clone()));
        }
    }

    /// Downloads `file` (or its thumbnail) to `out`. Bytes already in `out`.part are kept and
    /// the rest is asked for from there; the whole is checked against the camera's SHA-256
    /// before `out` appears. Returns (bytes, bytes resumed from, sha256).
    pub async fn get(
        &mut self,
        file: &str,
        thumbnail: bool,
        out: &Path,
    ) -> anyhow::Result<(u64, u64, String)> {
        let part_path = out.with_extension(match out.extension() {
            Some(ext) => format!("{}.part", ext.to_string_lossy()),
            None => "part".to_owned(),
        });
        let part = if thumbnail { "thumbnail" } else { "media" };
        let mut have = tokio::fs::metadata(&part_path).await.map_or(0, |m| m.len());
        let reply = loop {
            let asked = json!({ "file": file, "offset": have, "part": part });
            match self.request("files.get", asked).await {
                Ok((_, reply)) => break serde_json::from_value::<GetReply>(reply)?,
                // A .part longer than the file: not this file's beginning; start again.
                Err(e) if have > 0 && e.to_string().starts_with("out_of_range") => {
                    tokio::fs::remove_file(&part_path).await?;
                    have = 0;
                }
                Err(e) => return Err(e),
            }
        };
        let mut written = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&part_path)
            .await
            .with_context(|| format!("opening {}", part_path.display()))?;
        let mut offset = reply.offset;
        while offset < reply.bytes {
            let Incoming::Chunk(header, bytes) = self.next().await? else {
                continue;
            };
            if header.offset != offset {
                bail!("a chunk for byte {} where {offset} was next", header.offset);
            }
            written.write_all(&bytes).await?;
            offset += bytes.len() as u64;
        }
        written.sync_all().await?;
        drop(written);
        let digest = sha256(&part_path).await?;
        if digest != reply.sha256 {
            tokio::fs::remove_file(&part_path).await?;
            bail!(
                "the file arrived damaged (SHA-256 {digest}, the camera's is {}); run again",
                reply.sha256
            );
        }
        tokio::fs::rename(&part_path, out).await?;
        Ok((reply.bytes, reply.offset, digest))
    }

    /// Uploads `path` under `name` (the control role); returns the camera's id for it.
    pub async fn put(&mut self, path: &Path, name: &str) -> anyhow::Result<String> {
        let bytes = tokio::fs::metadata(path).await?.len();
        let digest = sha256(path).await?;
        let (id, _) = self
            .request(
                "files.put",
                json!({ "name": name, "bytes": bytes, "sha256": digest }),
            )
            .await?;
        let mut source = tokio::fs::File::open(path).await?;
        let mut offset = 0u64;
        while offset < bytes {
            let n = FILE_CHUNK.min((bytes - offset) as usize);
            let mut message = BytesMut::zeroed(ChunkHeader::LEN + n);
            message[..ChunkHeader::LEN].copy_from_slice(
                &ChunkHeader {
                    request: id,
                    offset,
                }
                .encode(),
            );
            source.read_exact(&mut message[ChunkHeader::LEN..]).await?;
            self.channel
                .send(message)
                .await
                .map_err(|e| anyhow::anyhow!("sending: {e}"))?;
            offset += n as u64;
        }
        loop {
            let Incoming::Text(done) = self.next().await? else {
                continue;
            };
            if done["id"] == id && done.get("file").is_some() && done.get("ok").is_none() {
                if let Some(error) = done["error"].as_str() {
                    bail!("the camera did not keep it: {error}");
                }
                return Ok(done["file"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
}

/// SHA-256 of a file, hex, on a blocking thread.
async fn sha256(path: &Path) -> anyhow::Result<String> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut file = std::fs::File::open(&path)?;
        let mut context = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let n = file.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            context.update(&buffer[..n]);
        }
        Ok(context
            .finish()
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect())
    })
    .await?
}
