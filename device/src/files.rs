//! Peer-to-peer file transfer on a viewer's `files` data channel: recordings, snapshots and
//! uploads leave the board (or reach it) straight from and to the browser, with no server in
//! between. The protocol is `ferrocam_protocol::files`.
//!
//! A transfer is paced by the receiver: each chunk waits until the channel has less than
//! `rtc::channel::SEND_BUFFER` bytes unacknowledged, so a slow viewer never makes the device
//! buffer a file in memory, and the `control` channel's messages never queue behind more than
//! that. What a transfer reads, it reads from disk as it goes.
//!
//! Who may do what: every viewer may list and fetch; only the control role may delete, upload
//! or keep a snapshot.

mod library;
mod serve;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::Arc;

pub use library::Library;
pub use serve::serve;

use crate::media::MediaEngine;

/// What a `files` channel needs.
pub struct FileService {
    pub library: Arc<Library>,
    /// For `files.snapshot`.
    pub media: Arc<MediaEngine>,
}

/// SHA-256 of a file, hex. Blocking.
pub fn sha256_file(path: &Path) -> anyhow::Result<String> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let mut context = ring::digest::Context::new(&ring::digest::SHA256);
    let mut buffer = vec![0u8; 256 * 1024];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        context.update(&buffer[..n]);
    }
    Ok(hex(context.finish().as_ref()))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
