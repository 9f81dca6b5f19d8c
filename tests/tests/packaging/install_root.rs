//! The maintainer scripts' work replayed inside a throwaway root (`systemd-sysusers --root`,
//! `systemctl --root`), and reading the users and groups it made.
//!
//! Apart from the tests because running the real scripts would create users and enable
//! services on this machine; this is the safe stand-in both packages use.

use std::fs;
use std::path::Path;
use std::process::Command;

use anyhow::Context;
use ferrocam_tests::process::run;

/// What the postinst does, replayed inside the throwaway root: sysusers and enabling the unit.
pub fn replay_postinst(root: &Path, package: &str) -> anyhow::Result<()> {
    // A Debian base system's users and groups (video and audio come with base-passwd).
    fs::create_dir_all(root.join("etc"))?;
    fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n",
    )?;
    fs::write(
        root.join("etc/group"),
        "root:x:0:\naudio:x:29:\nvideo:x:44:\nnogroup:x:65534:\n",
    )?;
    run(Command::new("systemd-sysusers")
        .arg(format!("--root={}", root.display()))
        .arg(format!("{package}.conf")))?;
    run(Command::new("systemctl")
        .arg(format!("--root={}", root.display()))
        .arg("enable")
        .arg(format!("{package}.service")))?;
    let wants = root.join(format!(
        "etc/systemd/system/multi-user.target.wants/{package}.service"
    ));
    assert_eq!(
        fs::read_link(&wants).context("enabled: the unit is wanted by multi-user.target")?,
        Path::new(&format!("/usr/lib/systemd/system/{package}.service"))
    );
    Ok(())
}

/// The `/etc/passwd` fields of `user` in the root.
pub fn passwd_entry(root: &Path, user: &str) -> anyhow::Result<Vec<String>> {
    let passwd = fs::read_to_string(root.join("etc/passwd"))?;
    let line = passwd
        .lines()
        .find(|l| l.starts_with(&format!("{user}:")))
        .with_context(|| format!("no user {user} in {passwd}"))?;
    Ok(line.split(':').map(str::to_owned).collect())
}

/// Members of `group` in the root's /etc/group, or None if the group is missing.
pub fn group_members(root: &Path, group: &str) -> anyhow::Result<Option<Vec<String>>> {
    let groups = fs::read_to_string(root.join("etc/group"))?;
    Ok(groups
        .lines()
        .find(|l| l.starts_with(&format!("{group}:")))
        .map(|l| {
            l.rsplit(':')
                .next()
                .unwrap_or("")
                .split(',')
                .filter(|m| !m.is_empty())
                .map(str::to_owned)
                .collect()
        }))
}
