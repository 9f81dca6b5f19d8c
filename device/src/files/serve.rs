//! One viewer's `files` channel: requests answered in order, at most one download and one
//! upload at a time. A download runs in its own task, so `files.cancel` and `files.list` are
//! answered while it sends.

use std::path::PathBuf;
use std::sync::Arc;

use bytes::BytesMut;
use ferrocam_protocol::control::{ControlError, ControlErrorCode, ControlResponse, Role};
use ferrocam_protocol::files::{
    ChunkHeader, FILE_CHUNK, FilePart, FilesCommand, FilesRequest, GetReply, PutDone, PutReply,
};
use ferrocam_protocol::record::FileId;
use tokio::io::{AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio::task::JoinHandle;

use super::FileService;
use crate::media::SnapshotRequest;
use crate::rtc::{ChannelEvent, ControlChannel};

/// A download in progress: the request it answers.
struct Download {
    request: u64,
    task: JoinHandle<()>,
}

/// An upload in progress.
struct Upload {
    request: u64,
    file: FileId,
    name: String,
    expected: u64,
    sha256: String,
    received: u64,
    out: tokio::fs::File,
    digest: ring::digest::Context,
}

/// Serves the channel until the viewer closes it; whatever is half done then is dropped (a
/// half-sent download resumes with `files.get` from an offset; a half-received upload is
/// removed).
pub async fn serve(channel: ControlChannel, role: Role, service: Arc<FileService>) {
    let channel = Arc::new(channel);
    let mut download: Option<Download> = None;
    let mut upload: Option<Upload> = None;
    while let Some(event) = channel.next().await {
        let replies = match event {
            ChannelEvent::Text(text) => {
                request(&text, role, &service, &channel, &mut download, &mut upload).await
            }
            ChannelEvent::Binary(data) => chunk(&data, &service, &mut upload).await,
        };
        for reply in replies {
            if channel.send_text(&reply).await.is_err() {
                break;
            }
        }
    }
    if let Some(download) = download {
        download.task.abort();
    }
    if let Some(upload) = upload {
        abandon(&service, upload).await;
    }
}

async fn request(
    text: &str,
    role: Role,
    service: &Arc<FileService>,
    channel: &Arc<ControlChannel>,
    download: &mut Option<Download>,
    upload: &mut Option<Upload>,
) -> Vec<String> {
    let request = match FilesRequest::decode(text) {
        Ok(request) => request,
        Err((id, error)) => return vec![error_reply(id, error)],
    };
    let id = request.id;
    if request.command.mutates() && role != Role::Control {
        let error = refusal(
            ControlErrorCode::Forbidden,
            "this session may watch and fetch files, not change them",
        );
        return vec![error_reply(id, error)];
    }
    let outcome = match request.command {
        FilesCommand::List {
            kind,
            before,
            limit,
        } => {
            let library = Arc::clone(&service.library);
            blocking(move || Ok(serde_json::to_value(library.list(kind, before, limit))?)).await
        }
        FilesCommand::Get { file, offset, part } => {
            if let Some(previous) = download.take() {
                previous.task.abort();
            }
            match prepare(service, file, part, offset).await {
                Ok((path, reply)) => {
                    let body = serde_json::to_value(&reply).expect("replies serialize");
                    // The reply goes out before the first chunk: the task starts after it.
                    let ok = ok_reply(id, body);
                    if channel.send_text(&ok).await.is_err() {
                        return Vec::new();
                    }
                    let task = tokio::spawn(send_file(Arc::clone(channel), id, path, reply));
                    *download = Some(Download { request: id, task });
                    return Vec::new();
                }
                Err(error) => Err(error),
            }
        }
        FilesCommand::Cancel { request } => {
            if let Some(d) = download.take_if(|d| d.request == request) {
                d.task.abort();
            }
            Ok(serde_json::json!({}))
        }
        FilesCommand::Delete { file } => {
            let library = Arc::clone(&service.library);
            match blocking(move || Ok(library.delete(file))).await {
                Ok(true) => Ok(serde_json::json!({ "deleted": file })),
                Ok(false) => Err(refusal(
                    ControlErrorCode::NotFound,
                    format!("no file {file}"),
                )),
                Err(e) => Err(e),
            }
        }
        FilesCommand::Put {
            name,
            bytes,
            sha256,
        } => begin_upload(service, id, name, bytes, sha256, upload).await,
        FilesCommand::Snapshot => keep_snapshot(service).await,
    };
    vec![match outcome {
        Ok(body) => ok_reply(id, body),
        Err(error) => error_reply(id, error),
    }]
}

/// Finds the file, its size and checksum; refuses an offset past its end.
async fn prepare(
    service: &FileService,
    file: FileId,
    part: FilePart,
    offset: u64,
) -> Result<(PathBuf, GetReply), ControlError> {
    let library = Arc::clone(&service.library);
    let (path, mime) = library
        .locate(file, part)
        .ok_or_else(|| refusal(ControlErrorCode::NotFound, format!("no file {file}")))?;
    let path_for_digest = path.clone();
    let (bytes, sha256) = blocking(move || {
        let bytes = std::fs::metadata(&path_for_digest)?.len();
        Ok((bytes, library.digest(file, part, &path_for_digest)?))
    })
    .await?;
    if offset > bytes {
        return Err(refusal(
            ControlErrorCode::OutOfRange,
            format!("offset {offset} is past the end ({bytes} bytes)"),
        ));
    }
    let reply = GetReply {
        file,
        part,
        bytes,
        offset,
        sha256,
        mime: mime.to_owned(),
    };
    Ok((path, reply))
}

/// Sends `reply.bytes - reply.offset` bytes of `path` in chunks, each after the channel has
/// room (the receiver's pace).
async fn send_file(channel: Arc<ControlChannel>, request: u64, path: PathBuf, reply: GetReply) {
    let sent = async {
        let mut file = tokio::fs::File::open(&path).await?;
        file.seek(std::io::SeekFrom::Start(reply.offset)).await?;
        let mut offset = reply.offset;
        while offset < reply.bytes {
            let n = FILE_CHUNK.min((reply.bytes - offset) as usize);
            let mut message = BytesMut::zeroed(ChunkHeader::LEN + n);
            message[..ChunkHeader::LEN].copy_from_slice(&ChunkHeader { request, offset }.encode());
            file.read_exact(&mut message[ChunkHeader::LEN..]).await?;
            channel.send_binary(message).await?;
            offset += n as u64;
        }
        anyhow::Ok(offset)
    };
    match sent.await {
        Ok(bytes) => tracing::debug!(file = %reply.file, bytes, "file sent"),
        Err(e) => tracing::debug!(file = %reply.file, error = %e, "file transfer ended early"),
    }
}

async fn begin_upload(
    service: &FileService,
    id: u64,
    name: String,
    bytes: u64,
    sha256: String,
    upload: &mut Option<Upload>,
) -> Result<serde_json::Value, ControlError> {
    if bytes == 0 {
        return Err(refusal(ControlErrorCode::BadRequest, "an empty file"));
    }
    if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(refusal(
            ControlErrorCode::BadRequest,
            "sha256 must be 64 hex digits",
        ));
    }
    if let Some(previous) = upload.take() {
        abandon(service, previous).await;
    }
    let library = Arc::clone(&service.library);
    let file = library
        .new_upload(bytes)
        .map_err(|why| refusal(ControlErrorCode::OutOfRange, why))?;
    let out = tokio::fs::File::create(library.upload_part_path(file))
        .await
        .map_err(|e| refusal(ControlErrorCode::Failed, e.to_string()))?;
    let started = Upload {
        request: id,
        file,
        name,
        expected: bytes,
        sha256: sha256.to_ascii_lowercase(),
        received: 0,
        out,
        digest: ring::digest::Context::new(&ring::digest::SHA256),
    };
    *upload = Some(started);
    Ok(serde_json::to_value(PutReply {
        file,
        max_bytes: library.max_upload,
    })
    .expect("replies serialize"))
}

/// One binary message: the next piece of the upload in progress, in order.
async fn chunk(data: &[u8], service: &FileService, upload: &mut Option<Upload>) -> Vec<String> {
    let Some(current) = upload.as_mut() else {
        let error = refusal(
            ControlErrorCode::BadRequest,
            "binary data without a files.put",
        );
        return vec![error_reply(0, error)];
    };
    let fits = ChunkHeader::decode(data).filter(|(header, bytes)| {
        header.request == current.request
            && header.offset == current.received
            && current.received + bytes.len() as u64 <= current.expected
    });
    let Some((_, bytes)) = fits else {
        let upload = upload.take().expect("checked");
        let done = PutDone::new(
            upload.request,
            upload.file,
            Some("a chunk out of order or past the announced size; upload dropped".into()),
        );
        abandon(service, upload).await;
        return vec![serde_json::to_string(&done).expect("serializes")];
    };
    if let Err(e) = current.out.write_all(bytes).await {
        let upload = upload.take().expect("checked");
        let done = PutDone::new(upload.request, upload.file, Some(format!("writing: {e}")));
        abandon(service, upload).await;
        return vec![serde_json::to_string(&done).expect("serializes")];
    }
    current.digest.update(bytes);
    current.received += bytes.len() as u64;
    if current.received < current.expected {
        return Vec::new();
    }
    let finished = upload.take().expect("checked");
    vec![serde_json::to_string(&finish_upload(service, finished).await).expect("serializes")]
}

async fn finish_upload(service: &FileService, mut upload: Upload) -> PutDone {
    let digest = super::hex(upload.digest.clone().finish().as_ref());
    let (request, file) = (upload.request, upload.file);
    if digest != upload.sha256 {
        abandon(service, upload).await;
        return PutDone::new(
            request,
            file,
            Some(format!(
                "the bytes have SHA-256 {digest}, not the one announced"
            )),
        );
    }
    let flushed = upload.out.sync_all().await;
    let library = Arc::clone(&service.library);
    let name = std::mem::take(&mut upload.name);
    let kept = blocking(move || {
        flushed?;
        library.keep_upload(file, &name)
    })
    .await;
    PutDone::new(request, file, kept.err().map(|e| e.message))
}

async fn abandon(service: &FileService, upload: Upload) {
    drop(upload.out);
    let _ = tokio::fs::remove_file(service.library.upload_part_path(upload.file)).await;
}

async fn keep_snapshot(service: &FileService) -> Result<serde_json::Value, ControlError> {
    let full = SnapshotRequest {
        max_age: None,
        width: None,
    };
    let jpeg = service
        .media
        .snapshot(full)
        .await
        .map_err(|e| refusal(ControlErrorCode::Unavailable, format!("{e}")))?;
    let thumbnail = SnapshotRequest {
        max_age: Some(std::time::Duration::from_secs(2)),
        width: Some(320),
    };
    let small = service
        .media
        .snapshot(thumbnail)
        .await
        .map_err(|e| refusal(ControlErrorCode::Unavailable, format!("{e}")))?;
    let library = Arc::clone(&service.library);
    blocking(move || {
        Ok(serde_json::to_value(
            library.keep_snapshot(&jpeg, &small.data)?,
        )?)
    })
    .await
}

/// Runs disk work on the blocking pool; any failure becomes a `failed` error.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, ControlError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(refusal(ControlErrorCode::Failed, format!("{e:#}"))),
        Err(e) => Err(refusal(ControlErrorCode::Failed, e.to_string())),
    }
}

fn refusal(code: ControlErrorCode, message: impl Into<String>) -> ControlError {
    ControlError::new(code, message)
}

fn ok_reply(id: u64, body: serde_json::Value) -> String {
    serde_json::to_string(&ControlResponse::ok(id, body)).expect("replies serialize")
}

fn error_reply(id: u64, error: ControlError) -> String {
    serde_json::to_string(&ControlResponse::error(id, error)).expect("replies serialize")
}
