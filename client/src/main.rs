//! `ferrocam-files`: a camera's recordings, snapshots and uploads from a script, without a
//! browser. It opens a WebRTC session to the camera through the gateway (WHEP, with an API
//! token) and speaks the `files` data channel protocol itself, so the files come straight from
//! the device and the gateway never carries them.
//!
//! ```sh
//! export FERROCAM_TOKEN=fct_…
//! ferrocam-files demo list
//! ferrocam-files demo get rec-20261130-200501-123            # → rec-20261130-200501-123.mp4
//! ferrocam-files demo get rec-20261130-200501-123 --thumbnail --out thumb.jpg
//! ferrocam-files demo delete rec-20261130-200501-123          # control role
//! ferrocam-files demo snapshot                                # keep one on the device
//! ferrocam-files demo put notes.txt                           # control role
//! ```
//!
//! An interrupted `get` leaves `<out>.part`; running it again continues from there, and the
//! result is checked against the device's SHA-256 either way.

mod files;
mod whep;

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use serde_json::json;

/// Fetch and manage a ferrocam camera's files, peer to peer.
#[derive(Debug, Parser)]
#[command(name = "ferrocam-files", version)]
struct Args {
    /// The gateway's base URL.
    #[arg(long, env = "FERROCAM_URL", default_value = "http://127.0.0.1:8080")]
    url: String,
    /// An API token (`ferrocam-gateway new-token`).
    #[arg(long, env = "FERROCAM_TOKEN", hide_env_values = true)]
    token: String,
    /// The local UDP address WebRTC binds to (`0.0.0.0:0`: every interface).
    #[arg(long, default_value = "0.0.0.0:0")]
    udp: String,
    /// The camera's id.
    device: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The camera's files, newest first, one per line: id, kind, bytes, seconds.
    List {
        /// Only `recording`, `snapshot` or `upload`.
        #[arg(long)]
        kind: Option<String>,
        /// How many (at most 200).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// JSON, as the camera sends it.
        #[arg(long)]
        json: bool,
    },
    /// Downloads a file (resuming a `.part` left by an earlier try).
    Get {
        file: String,
        /// Where to (default: the id with the file's extension, here).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The file's thumbnail instead (JPEG).
        #[arg(long)]
        thumbnail: bool,
    },
    /// Removes a file from the camera.
    Delete { file: String },
    /// Takes a snapshot and keeps it on the camera.
    Snapshot,
    /// Sends a file to the camera's upload folder.
    Put {
        path: PathBuf,
        /// The label it is kept with (default: the file's name).
        #[arg(long)]
        name: Option<String>,
    },
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let target = whep::Target {
        gateway: args.url.clone(),
        token: args.token.clone(),
        device: args.device.clone(),
    };
    let session = whep::Session::connect(&target, &args.udp).await?;
    let outcome = run(&args.command, files::Files::new(session.channel.clone())).await;
    session.close().await;
    outcome
}

async fn run(command: &Command, mut files: files::Files) -> anyhow::Result<()> {
    match command {
        Command::List { kind, limit, json } => {
            let mut asked = json!({ "limit": limit });
            if let Some(kind) = kind {
                asked["kind"] = kind.as_str().into();
            }
            let (_, list) = files.request("files.list", asked).await?;
            if *json {
                println!("{}", serde_json::to_string_pretty(&list)?);
                return Ok(());
            }
            for file in list["files"].as_array().into_iter().flatten() {
                let seconds = file["duration_ms"]
                    .as_u64()
                    .map(|ms| format!("{:.1}", ms as f64 / 1000.0))
                    .unwrap_or_else(|| "-".into());
                println!(
                    "{}\t{}\t{}\t{seconds}",
                    file["id"].as_str().unwrap_or(""),
                    file["kind"].as_str().unwrap_or(""),
                    file["bytes"]
                );
            }
        }
        Command::Get {
            file,
            out,
            thumbnail,
        } => {
            let ext = match (file.split('-').next(), thumbnail) {
                (_, true) | (Some("snap"), _) => "jpg",
                (Some("rec"), _) => "mp4",
                _ => "bin",
            };
            let out = out
                .clone()
                .unwrap_or_else(|| PathBuf::from(format!("{file}.{ext}")));
            let (bytes, resumed, sha256) = files.get(file, *thumbnail, &out).await?;
            let from = if resumed > 0 {
                format!(", resumed at byte {resumed}")
            } else {
                String::new()
            };
            eprintln!(
                "{}: {bytes} bytes{from}, SHA-256 {sha256} checked",
                out.display()
            );
        }
        Command::Delete { file } => {
            files
                .request("files.delete", json!({ "file": file }))
                .await?;
            eprintln!("deleted {file}");
        }
        Command::Snapshot => {
            let (_, kept) = files.request("files.snapshot", json!({})).await?;
            println!("{}", kept["id"].as_str().unwrap_or(""));
        }
        Command::Put { path, name } => {
            let name = name.clone().unwrap_or_else(|| {
                path.file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default()
            });
            println!("{}", files.put(path, &name).await?);
        }
    }
    Ok(())
}
