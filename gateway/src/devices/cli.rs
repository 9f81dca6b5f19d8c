//! `ferrocam-gateway device add|list|remove`: enrollment a person can do without editing files.
//!
//! `add` makes the device's two secrets (broker password, signing key), records their public
//! halves in `devices.toml`, and writes everything the device needs into one config file in
//! the format of `/etc/ferrocam/device.env`: copy it to the board as that file and restart the
//! device. The secrets exist only in that file; enrolling again replaces them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use ferrocam_protocol::DeviceId;
use ferrocam_protocol::signed::{Signer, generate_seed};

use super::{DeviceEntry, DevicesFile, password_digest};

#[derive(Debug, clap::Subcommand)]
pub enum DeviceCmd {
    /// Enrolls a device and writes its config file.
    Add(AddArgs),
    /// Lists the enrolled devices.
    List(ListArgs),
    /// Removes a device: the embedded broker refuses it and gateways drop its messages at once.
    Remove(RemoveArgs),
}

/// Where the device list is.
#[derive(Debug, clap::Args)]
pub struct ListFile {
    /// The device list (the gateway's `--devices`).
    #[arg(
        long,
        env = "FERROCAM_DEVICES",
        default_value = "/etc/ferrocam/devices.toml"
    )]
    pub devices: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct AddArgs {
    /// The new device's id: 1–64 of A-Z a-z 0-9 _ . -
    pub id: DeviceId,
    #[command(flatten)]
    pub file: ListFile,
    /// The broker URL(s) the device connects to, without credentials (the device's own are
    /// added): the gateway's `--mqtt-listen` as the board reaches it, or your broker.
    #[arg(long, default_value = "mqtt://127.0.0.1:1883")]
    pub broker: String,
    /// The gateway's public grant key file. Default: `grant.pub` next to the device list.
    #[arg(long)]
    pub grant_pub: Option<PathBuf>,
    /// Where to write the device's config file (mode 0600: it holds the device's secrets).
    /// Default: `<id>.env` in the current directory.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Enroll again an id that is already enrolled (new secrets; the old ones stop working).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub file: ListFile,
    /// One JSON object per device.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    pub id: DeviceId,
    #[command(flatten)]
    pub file: ListFile,
}

pub fn run(cmd: &DeviceCmd) -> anyhow::Result<()> {
    match cmd {
        DeviceCmd::Add(args) => add(args),
        DeviceCmd::List(args) => list(args),
        DeviceCmd::Remove(args) => remove(args),
    }
}

fn add(args: &AddArgs) -> anyhow::Result<()> {
    let path = &args.file.devices;
    let mut file = DevicesFile::read(path)?;
    let existing = file.devices.iter().position(|d| d.id == args.id.as_str());
    anyhow::ensure!(
        existing.is_none() || args.force,
        "device {} is already enrolled (use --force to give it new secrets)",
        args.id
    );
    let grant_pub = args
        .grant_pub
        .clone()
        .unwrap_or_else(|| sibling(path, "grant.pub"));
    let grant_key = std::fs::read_to_string(&grant_pub)
        .with_context(|| {
            format!(
                "reading the gateway's public grant key {} (`ferrocam-gateway init` writes it)",
                grant_pub.display()
            )
        })?
        .trim()
        .to_owned();
    let seed = generate_seed();
    let signer = Signer::from_seed_base64(&seed).map_err(|e| anyhow::anyhow!(e))?;
    let password = generate_seed();
    let broker = broker_urls_for(&args.id, &args.broker)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from(format!("{}.env", args.id)));
    let config = format!(
        "# ferrocam-device config for \"{id}\", from `ferrocam-gateway device add`.\n\
         # Install it on the board as /etc/ferrocam/device.env (mode 0600: it holds this\n\
         # device's secrets), then: sudo systemctl restart ferrocam-device\n\
         # More settings: ferrocam-device --help (each flag has a FERROCAM_* variable).\n\
         FERROCAM_DEVICE_ID={id}\n\
         FERROCAM_BROKER={broker}\n\
         FERROCAM_BROKER_PASSWORD={password}\n\
         FERROCAM_SIGNING_KEY={seed}\n\
         FERROCAM_GRANT_PUBLIC_KEY={grant_key}\n",
        id = args.id,
    );
    // A fresh 0600 file renamed into place: never an old file's looser mode, never a symlink
    // followed.
    let _ = std::fs::remove_file(&out);
    crate::files::replace(&out, &config, 0o600)?;
    let entry = DeviceEntry {
        id: args.id.to_string(),
        public_key: signer.public_key(),
        broker_password_sha256: password_digest(&password),
        added: httpdate::fmt_http_date(std::time::SystemTime::now()),
    };
    match existing {
        Some(i) => file.devices[i] = entry,
        None => file.devices.push(entry),
    }
    file.write(path)?;
    println!(
        "enrolled {id} in {list}\nits config file: {out}\n\
         copy it to the device as /etc/ferrocam/device.env and restart ferrocam-device;\n\
         on an external broker also give it a login: user {id}, the FERROCAM_BROKER_PASSWORD in that file",
        id = args.id,
        list = path.display(),
        out = out.display(),
    );
    Ok(())
}

fn list(args: &ListArgs) -> anyhow::Result<()> {
    let file = DevicesFile::read(&args.file.devices)?;
    for device in &file.devices {
        if args.json {
            println!(
                "{}",
                serde_json::json!({
                    "id": device.id,
                    "public_key": device.public_key,
                    "added": device.added,
                })
            );
        } else {
            println!("{}\t{}\t{}", device.id, device.added, device.public_key);
        }
    }
    Ok(())
}

fn remove(args: &RemoveArgs) -> anyhow::Result<()> {
    let path = &args.file.devices;
    let mut file = DevicesFile::read(path)?;
    let before = file.devices.len();
    file.devices.retain(|d| d.id != args.id.as_str());
    anyhow::ensure!(
        file.devices.len() < before,
        "device {} is not enrolled in {}",
        args.id,
        path.display()
    );
    file.write(path)?;
    println!(
        "removed {}; running gateways drop its messages within a second",
        args.id
    );
    Ok(())
}

/// The broker URLs with the device's id as user name: `mqtt://host` → `mqtt://cam@host`.
fn broker_urls_for(id: &DeviceId, urls: &str) -> anyhow::Result<String> {
    let with_user: anyhow::Result<Vec<String>> = urls
        .split(',')
        .map(|url| {
            let url = url.trim();
            let (scheme, rest) = url
                .split_once("://")
                .with_context(|| format!("{url:?} is not a broker URL (mqtt://host:port)"))?;
            anyhow::ensure!(
                !rest.contains('@'),
                "give the broker URL without credentials: {url:?}"
            );
            Ok(format!("{scheme}://{id}@{rest}"))
        })
        .collect();
    let joined = with_user?.join(",");
    // Fail here, not on the board.
    ferrocam_mqtt::BrokerAddr::parse_list(&joined)?;
    Ok(joined)
}

fn sibling(path: &Path, name: &str) -> PathBuf {
    path.parent()
        .map(|dir| dir.join(name))
        .unwrap_or_else(|| PathBuf::from(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls_get_the_device_as_user() {
        let id = DeviceId::parse("cam-2").unwrap();
        assert_eq!(
            broker_urls_for(&id, "mqtt://10.0.0.1:1883, mqtts://b.lan").unwrap(),
            "mqtt://cam-2@10.0.0.1:1883,mqtts://cam-2@b.lan"
        );
        assert!(broker_urls_for(&id, "mqtt://u:p@10.0.0.1").is_err());
        assert!(broker_urls_for(&id, "10.0.0.1:1883").is_err());
    }
}
