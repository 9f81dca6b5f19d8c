//! Making a Debian package with cargo-deb and reading it back: its control fields, its
//! relations, and its unpacked contents with the checks both packages share (binary, unit,
//! sysusers.d file, conffile, maintainer scripts).
//!
//! Apart from the tests so each test states only what is particular to its package.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use ferrocam_tests::process::{run, stdout, workspace_bin, workspace_root};

/// Whether `cargo deb` runs here (the package tests skip without it).
pub fn cargo_deb_installed() -> bool {
    Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The package for this machine, made by cargo-deb around the debug binary.
pub fn build_deb(package: &str, work: &Path) -> anyhow::Result<PathBuf> {
    // cargo-deb takes binaries from <target dir>/release; give it one holding the debug builds.
    let target = work.join("target");
    fs::create_dir_all(target.join("release"))?;
    let binary = target.join("release").join(package);
    let built = workspace_bin(package)?;
    if fs::hard_link(&built, &binary).is_err() {
        fs::copy(&built, &binary)?;
    }
    let out = work.join("out");
    fs::create_dir_all(&out)?;
    run(Command::new("cargo")
        .args([
            "deb",
            "--no-build",
            "--no-strip",
            "--fast",
            "--locked",
            "-p",
            package,
            "-o",
        ])
        .arg(&out)
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(workspace_root()))?;
    let arch = stdout(Command::new("dpkg").arg("--print-architecture"))?;
    let deb = out.join(format!(
        "{package}_{}-1_{}.deb",
        env!("CARGO_PKG_VERSION"),
        arch.trim()
    ));
    anyhow::ensure!(deb.exists(), "cargo-deb did not write {}", deb.display());
    Ok(deb)
}

/// Control field `name` of the package.
pub fn field(deb: &Path, name: &str) -> anyhow::Result<String> {
    Ok(
        stdout(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name))?
            .trim()
            .to_owned(),
    )
}

/// "a (>= 1), b | c" → {"a", "b | c"}: the package names, versions dropped.
pub fn relations(field: &str) -> BTreeSet<String> {
    field
        .split(',')
        .map(|rel| {
            rel.split('|')
                .map(|alt| alt.split('(').next().unwrap_or("").trim())
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .collect()
}

/// Permission bits of `path`.
fn mode(path: &Path) -> anyhow::Result<u32> {
    Ok(fs::metadata(path)
        .with_context(|| path.display().to_string())?
        .permissions()
        .mode()
        & 0o7777)
}

/// An unpacked package: its file tree and its control files.
pub struct Unpacked {
    pub root: PathBuf,
    pub control: PathBuf,
}

/// Unpacks the package and its control files; checks what both packages share.
pub fn unpack(deb: &Path, package: &str, work: &Path) -> anyhow::Result<Unpacked> {
    let root = work.join("root");
    let control = work.join("control");
    run(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
    run(Command::new("dpkg-deb").arg("-e").arg(deb).arg(&control))?;
    let unpacked = Unpacked { root, control };

    let binary = unpacked.root.join("usr/bin").join(package);
    assert_eq!(mode(&binary)?, 0o755, "{}", binary.display());
    assert_eq!(
        fs::read(&binary)?,
        fs::read(workspace_bin(package)?)?,
        "the packaged binary is the built one"
    );
    // The unit and the sysusers.d file are the repository's own.
    let unit = unpacked
        .root
        .join(format!("usr/lib/systemd/system/{package}.service"));
    assert_eq!(
        fs::read_to_string(&unit).context("the unit is packaged")?,
        fs::read_to_string(workspace_root().join(format!("systemd/{package}.service")))?
    );
    let sysusers = unpacked
        .root
        .join(format!("usr/lib/sysusers.d/{package}.conf"));
    assert_eq!(
        fs::read_to_string(&sysusers).context("the sysusers.d file is packaged")?,
        fs::read_to_string(workspace_root().join(format!("systemd/{package}.sysusers")))?
    );

    // /etc/ferrocam/<name>.env is the one conffile; root-only (systemd reads it, not the service).
    let env_name = package.trim_start_matches("ferrocam-");
    let conffile = format!("/etc/ferrocam/{env_name}.env");
    assert_eq!(
        fs::read_to_string(unpacked.control.join("conffiles"))?
            .lines()
            .collect::<Vec<_>>(),
        vec![conffile.as_str()]
    );
    assert_eq!(mode(&unpacked.root.join(&conffile[1..]))?, 0o600);

    // postinst: cargo-deb's generated part replaced the token, creates the user with sysusers
    // and enables the unit; the scripts are valid sh.
    let postinst = fs::read_to_string(unpacked.control.join("postinst"))?;
    assert!(!postinst.contains("#DEBHELPER#"), "{postinst}");
    assert!(
        postinst.contains(&format!(
            "systemd-sysusers ${{DPKG_ROOT:+--root=\"$DPKG_ROOT\"}} {package}.conf"
        )),
        "{postinst}"
    );
    assert!(
        postinst.contains(&format!("deb-systemd-helper enable {package}.service")),
        "{postinst}"
    );
    for script in ["postinst", "prerm", "postrm"] {
        let path = unpacked.control.join(script);
        assert_eq!(mode(&path)?, 0o755, "{script}");
        run(Command::new("sh").arg("-n").arg(&path))?;
    }
    Ok(unpacked)
}
