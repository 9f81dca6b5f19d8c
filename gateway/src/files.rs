//! Replacing a configuration file the gateway reads, safely.
//!
//! The CLI rewrites files that a running gateway watches and that hold secrets or hashes
//! (`auth.toml`, `devices.toml`, a device's enrollment file). Writing in place would let the
//! gateway read half a file; writing a new file and renaming it over the old one avoids that,
//! but the new file must also keep what the operator set up: `auth.toml` is typically
//! `root:ferrocam-gateway 0640`, and a copy made by `sudo` would otherwise be `root:root`,
//! which the gateway cannot read. So the new file is created `0600` (never briefly readable by
//! others), given the old file's owner, group and mode, flushed to disk, then renamed.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;

/// Replaces `path` with `contents` in one step. An existing file's owner, group and mode are
/// kept; a new file gets `mode`.
pub fn replace(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let tmp = path.with_extension(format!(
        "{}.tmp-{}",
        path.extension().and_then(|e| e.to_str()).unwrap_or(""),
        std::process::id()
    ));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    let written = (|| -> anyhow::Result<()> {
        file.write_all(contents.as_bytes())?;
        match std::fs::metadata(path) {
            Ok(old) => {
                std::os::unix::fs::fchown(&file, Some(old.uid()), Some(old.gid()))
                    .context("keeping the file's owner")?;
                file.set_permissions(std::fs::Permissions::from_mode(old.mode() & 0o7777))?;
            }
            Err(_) => file.set_permissions(std::fs::Permissions::from_mode(mode))?,
        }
        file.sync_all()?;
        Ok(())
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e.context(format!("writing {}", tmp.display())));
    }
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_file_keeps_its_mode_and_a_new_one_gets_the_given_mode() {
        let dir = std::env::temp_dir().join(format!(
            "ferrocam-files-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("auth.toml");
        replace(&path, "a = 1\n", 0o600).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        replace(&path, "a = 2\n", 0o600).unwrap();
        assert_eq!(mode(&path), 0o640);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a = 2\n");
        // Nothing left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    }
}
