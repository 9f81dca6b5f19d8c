//! The file protocol, on its own data channel labelled `files` (opened by the viewer), so a
//! large transfer never queues in front of control requests.
//!
//! Requests and replies are JSON text in the control protocol's envelope (`v`, `id`, `cmd`;
//! `ok` or `error`). File bytes travel as binary messages, each a [`ChunkHeader`] and up to
//! [`FILE_CHUNK`] bytes:
//!
//! ```text
//! → {"v":1,"id":4,"cmd":"files.list","limit":20}
//! ← {"v":1,"id":4,"ok":{"files":[{"id":"rec-20261130-200501-123","kind":"recording",…}],"more":false}}
//! → {"v":1,"id":5,"cmd":"files.get","file":"rec-20261130-200501-123","offset":0}
//! ← {"v":1,"id":5,"ok":{"file":"rec-…","bytes":15346587,"offset":0,"sha256":"9f…","mime":"video/mp4"}}
//! ← [id 5, offset 0][65520 bytes]  [id 5, offset 65520][65520 bytes]  …
//! → {"v":1,"id":6,"cmd":"files.get","file":"rec-…","offset":7340032}     (resumed)
//! ```
//!
//! A transfer broken off (a closed tab, a lost connection) resumes with `files.get` from the
//! bytes it has; the `sha256` of the whole file checks the result. Uploads (`files.put`) send
//! the same binary messages the other way, after the device's reply.

use serde::{Deserialize, Serialize};

use crate::PROTOCOL_VERSION;
use crate::record::{FileId, FileKind};

/// The data channel's label.
pub const FILES_CHANNEL: &str = "files";

/// The largest binary message either side sends: 64 KiB, what the device's SCTP stack
/// announces (`a=max-message-size`) and what every browser takes.
pub const MAX_FILE_MESSAGE: usize = 64 * 1024;

/// File bytes per binary message: a full message less its header.
pub const FILE_CHUNK: usize = MAX_FILE_MESSAGE - ChunkHeader::LEN;

/// The most entries one `files.list` returns.
pub const MAX_LIST: u32 = 200;

/// The longest display name a `files.put` may carry.
pub const MAX_UPLOAD_NAME: usize = 128;

/// A request, tagged by `"cmd"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilesRequest {
    pub v: u16,
    pub id: u64,
    #[serde(flatten)]
    pub command: FilesCommand,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd")]
pub enum FilesCommand {
    /// The device's files, newest first, `limit` at a time (at most [`MAX_LIST`]); the next
    /// page starts `before` the oldest one listed.
    #[serde(rename = "files.list")]
    List {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<FileKind>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        before: Option<FileId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
    },
    /// Sends a file (or its thumbnail) from `offset` on, in binary chunks after the reply.
    #[serde(rename = "files.get")]
    Get {
        file: FileId,
        #[serde(default)]
        offset: u64,
        #[serde(default)]
        part: FilePart,
    },
    /// Stops sending the file that request `request` asked for.
    #[serde(rename = "files.cancel")]
    Cancel { request: u64 },
    /// Removes a file (control role).
    #[serde(rename = "files.delete")]
    Delete { file: FileId },
    /// Announces an upload of `bytes` bytes (control role); its chunks follow the reply, and
    /// the device checks them against `sha256` (hex) before keeping the file.
    #[serde(rename = "files.put")]
    Put {
        name: String,
        bytes: u64,
        sha256: String,
    },
    /// Takes a snapshot and keeps it on the device (control role).
    #[serde(rename = "files.snapshot")]
    Snapshot,
}

impl FilesCommand {
    /// Whether the command changes what the device keeps (needs the control role).
    pub fn mutates(&self) -> bool {
        matches!(
            self,
            FilesCommand::Delete { .. } | FilesCommand::Put { .. } | FilesCommand::Snapshot
        )
    }
}

/// Which bytes of a file `files.get` sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FilePart {
    /// The file itself.
    #[default]
    Media,
    /// A small JPEG of its first picture (recordings and snapshots).
    Thumbnail,
}

/// One file in a `files.list` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    pub id: FileId,
    pub kind: FileKind,
    pub bytes: u64,
    /// Recordings: how long it plays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u32>,
    /// Recordings: with sound.
    #[serde(default)]
    pub audio: bool,
    /// `files.get` with `part: thumbnail` has something to send.
    #[serde(default)]
    pub thumbnail: bool,
    /// Recordings cut off by a crash and recovered: they end early.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub recovered: bool,
    /// Uploads: the name the sender gave (for display only; never a path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub mime: String,
}

/// The `files.list` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileList {
    pub files: Vec<FileEntry>,
    /// More, older files follow the last one.
    pub more: bool,
}

/// The `files.get` reply; the chunks follow.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetReply {
    pub file: FileId,
    pub part: FilePart,
    /// The whole file's size.
    pub bytes: u64,
    /// Where the chunks begin.
    pub offset: u64,
    /// SHA-256 of the whole file, hex.
    pub sha256: String,
    pub mime: String,
}

/// The `files.put` reply: send the chunks now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutReply {
    pub file: FileId,
    /// The most an upload may be, in bytes.
    pub max_bytes: u64,
}

/// Sent when an upload's last chunk arrived and checked out (or did not).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutDone {
    pub v: u16,
    /// The `files.put` request's id.
    pub id: u64,
    pub file: FileId,
    /// Kept (the checksum matched), or why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl PutDone {
    pub fn new(id: u64, file: FileId, error: Option<String>) -> Self {
        Self {
            v: PROTOCOL_VERSION,
            id,
            file,
            error,
        }
    }
}

/// The front of every binary message: the request it belongs to and where its bytes go in
/// the file, both big-endian u64.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    pub request: u64,
    pub offset: u64,
}

impl ChunkHeader {
    pub const LEN: usize = 16;

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut out = [0u8; Self::LEN];
        out[..8].copy_from_slice(&self.request.to_be_bytes());
        out[8..].copy_from_slice(&self.offset.to_be_bytes());
        out
    }

    /// Splits a binary message into its header and bytes; `None` when it is too short or its
    /// bytes are more than a chunk.
    pub fn decode(message: &[u8]) -> Option<(Self, &[u8])> {
        if message.len() < Self::LEN || message.len() > Self::LEN + FILE_CHUNK {
            return None;
        }
        let (head, data) = message.split_at(Self::LEN);
        let word = |b: &[u8]| u64::from_be_bytes(b.try_into().expect("8 bytes"));
        Some((
            Self {
                request: word(&head[..8]),
                offset: word(&head[8..]),
            },
            data,
        ))
    }
}

impl FilesRequest {
    /// Parses one request (size, version and id as [`crate::control::decode_request`]).
    pub fn decode(text: &str) -> Result<Self, (u64, crate::control::ControlError)> {
        crate::control::decode_request(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_parse_with_their_defaults_and_refuse_paths() {
        let get = FilesRequest::decode(
            r#"{"v":1,"id":5,"cmd":"files.get","file":"rec-20261130-200501-123"}"#,
        )
        .unwrap();
        assert_eq!(
            get.command,
            FilesCommand::Get {
                file: "rec-20261130-200501-123".parse().unwrap(),
                offset: 0,
                part: FilePart::Media,
            }
        );
        let (id, error) = FilesRequest::decode(
            r#"{"v":1,"id":6,"cmd":"files.delete","file":"../../etc/passwd"}"#,
        )
        .unwrap_err();
        assert_eq!(id, 6);
        assert!(error.message.contains("not a file id"), "{error:?}");
        assert!(FilesCommand::Snapshot.mutates());
        assert!(!FilesCommand::Cancel { request: 1 }.mutates());
    }

    #[test]
    fn chunk_headers_round_trip_and_bound_the_message() {
        let header = ChunkHeader {
            request: 7,
            offset: 1 << 40,
        };
        let message = [&header.encode()[..], b"abc"].concat();
        assert_eq!(ChunkHeader::decode(&message), Some((header, &b"abc"[..])));
        assert_eq!(ChunkHeader::decode(&message[..15]), None);
        assert_eq!(ChunkHeader::decode(&vec![0; 16 + FILE_CHUNK + 1]), None);
    }
}
