//! The systemd units as `systemd-analyze` sees them: a verifiable copy, `verify`'s complaints,
//! the `security` exposure score, and the unit's `Key=value` settings.
//!
//! Apart from the tests so the sandboxing test reads as the list of settings it requires.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use ferrocam_tests::process::{workspace_bin, workspace_root};

/// A copy of the repository's unit whose ExecStart points at the built binary, so `verify`
/// (which checks that the command exists) works before anything is installed.
pub fn unit_copy(package: &str, dir: &Path) -> anyhow::Result<PathBuf> {
    let text = fs::read_to_string(workspace_root().join(format!("systemd/{package}.service")))?;
    let exec = format!("ExecStart=/usr/bin/{package}\n");
    anyhow::ensure!(
        text.contains(&exec),
        "{package}.service runs /usr/bin/{package}"
    );
    let text = text.replace(
        &exec,
        &format!("ExecStart={}\n", workspace_bin(package)?.display()),
    );
    let path = dir.join(format!("{package}.service"));
    fs::write(&path, text)?;
    Ok(path)
}

/// `systemd-analyze verify`'s complaints about a unit (empty when it is clean).
pub fn verify(unit: &Path) -> anyhow::Result<String> {
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(unit)
        .output()
        .context("systemd-analyze is missing (scripts/setup-system.sh test installs systemd)")?;
    let mut complaints = String::from_utf8_lossy(&out.stderr).into_owned();
    if !out.status.success() {
        complaints.push_str(&format!("\n(exit status {})", out.status));
    }
    Ok(complaints.trim().to_owned())
}

/// The overall exposure `systemd-analyze security --offline=yes` gives a unit (0 = locked
/// down … 10 = unprotected).
pub fn exposure(unit: &Path) -> anyhow::Result<f64> {
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(unit)
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level"))
        .with_context(|| {
            format!(
                "no score in: {text}{}",
                String::from_utf8_lossy(&out.stderr)
            )
        })?;
    let score = line
        .rsplit(':')
        .next()
        .and_then(|s| s.split_whitespace().next())
        .context("score")?;
    println!("{line}");
    Ok(score.parse()?)
}

/// `Key=value` lines of a unit (comments and sections dropped), in order.
pub fn settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

/// Every value `key` is set to in `settings`, in order.
pub fn values(settings: &[(String, String)], key: &str) -> Vec<String> {
    settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}
