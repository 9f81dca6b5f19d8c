//! Debian packages and systemd units: what `make deb` / `make pi` ship.
//!
//! The packages are made with the real cargo-deb from the real `[package.metadata.deb]`, around
//! the debug binaries `make test` builds (a release build would take minutes), then unpacked into
//! a throwaway root where the maintainer scripts' work is replayed with root-aware tools
//! (`systemd-sysusers --root`, `systemctl --root`): running the scripts themselves would create
//! users and start services on this machine. The units pass `systemd-analyze verify` and score
//! "OK" in `systemd-analyze security`.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use ferrocam_tests::process::{run, stdout, workspace_bin, workspace_root};

/// A fresh scratch folder under cargo's target/tmp.
fn scratch(name: &str) -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn cargo_deb_installed() -> bool {
    Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The package for this machine, made by cargo-deb around the debug binary.
fn build_deb(package: &str, work: &Path) -> anyhow::Result<PathBuf> {
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

fn field(deb: &Path, name: &str) -> anyhow::Result<String> {
    Ok(
        stdout(Command::new("dpkg-deb").arg("-f").arg(deb).arg(name))?
            .trim()
            .to_owned(),
    )
}

/// "a (>= 1), b | c" → {"a", "b | c"}: the package names, versions dropped.
fn relations(field: &str) -> BTreeSet<String> {
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

fn mode(path: &Path) -> anyhow::Result<u32> {
    Ok(fs::metadata(path)
        .with_context(|| path.display().to_string())?
        .permissions()
        .mode()
        & 0o7777)
}

/// Unpacks the package and its control files; checks what both packages share.
struct Unpacked {
    root: PathBuf,
    control: PathBuf,
}

fn unpack(deb: &Path, package: &str, work: &Path) -> anyhow::Result<Unpacked> {
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

/// What the postinst does, replayed inside the throwaway root: sysusers and enabling the unit.
fn replay_postinst(root: &Path, package: &str) -> anyhow::Result<()> {
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

fn passwd_entry(root: &Path, user: &str) -> anyhow::Result<Vec<String>> {
    let passwd = fs::read_to_string(root.join("etc/passwd"))?;
    let line = passwd
        .lines()
        .find(|l| l.starts_with(&format!("{user}:")))
        .with_context(|| format!("no user {user} in {passwd}"))?;
    Ok(line.split(':').map(str::to_owned).collect())
}

/// Members of `group` in the root's /etc/group, or None if the group is missing.
fn group_members(root: &Path, group: &str) -> anyhow::Result<Option<Vec<String>>> {
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

#[test]
fn the_device_package_installs_binary_config_user_unit_and_its_gstreamer_plugins()
-> anyhow::Result<()> {
    if !cargo_deb_installed() {
        println!("skipped: cargo-deb is not installed (scripts/setup-system.sh test installs it)");
        return Ok(());
    }
    let work = scratch("deb-device")?;
    let deb = build_deb("ferrocam-device", &work)?;

    assert_eq!(field(&deb, "Package")?, "ferrocam-device");
    assert_eq!(
        field(&deb, "Version")?,
        format!("{}-1", env!("CARGO_PKG_VERSION"))
    );
    // What the binary links and what its pipelines load at run time (device/src/media).
    let depends = relations(&field(&deb, "Depends")?);
    for needed in [
        "libc6",
        "libglib2.0-0",
        "libgstreamer1.0-0",
        "libgstreamer-plugins-base1.0-0",
        "gstreamer1.0-plugins-base",
        "gstreamer1.0-plugins-good",
        "gstreamer1.0-plugins-bad",
        "gstreamer1.0-plugins-ugly",
        "gstreamer1.0-alsa",
        "systemd | systemd-standalone-sysusers",
    ] {
        assert!(
            depends.contains(needed),
            "Depends lacks {needed}: {depends:?}"
        );
    }
    assert!(
        field(&deb, "Depends")?.contains("libgstreamer1.0-0 (>= 1.22)"),
        "built with GStreamer 1.22's API"
    );
    let recommends = relations(&field(&deb, "Recommends")?);
    assert!(
        recommends.contains("gstreamer1.0-libcamera"),
        "{recommends:?}"
    );

    let unpacked = unpack(&deb, "ferrocam-device", &work)?;
    let env = fs::read_to_string(unpacked.root.join("etc/ferrocam/device.env"))?;
    let settings: Vec<&str> = env
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(
        settings,
        [
            "FERROCAM_DEVICE_ID=camera",
            "FERROCAM_BROKER=mqtt://127.0.0.1:1883",
            "FERROCAM_GRANT_KEY=/etc/ferrocam/grant.pub"
        ]
    );
    // The commented-out settings name real flags' variables.
    let help = stdout(Command::new(workspace_bin("ferrocam-device")?).arg("--help"))?;
    for var in env
        .lines()
        .filter_map(|l| l.strip_prefix('#').and_then(|l| l.split_once('=')))
        .map(|(k, _)| k.trim())
        .filter(|k| k.starts_with("FERROCAM_"))
        .chain(settings.iter().filter_map(|l| l.split('=').next()))
    {
        assert!(
            help.contains(var),
            "device.env mentions {var}, which --help does not know"
        );
    }

    // Fresh installs do not start an unconfigured device; upgrades restart a running one.
    let postinst = fs::read_to_string(unpacked.control.join("postinst"))?;
    assert!(!postinst.contains("deb-systemd-invoke start"), "{postinst}");
    assert!(postinst.contains("deb-systemd-invoke try-restart ferrocam-device.service"));

    replay_postinst(&unpacked.root, "ferrocam-device")?;
    let user = passwd_entry(&unpacked.root, "ferrocam")?;
    assert_eq!(
        user[5], "/var/lib/ferrocam",
        "home = the unit's StateDirectory"
    );
    assert_eq!(user[6], "/usr/sbin/nologin");
    assert!(user[2].parse::<u32>()? < 1000, "a system user: {user:?}");
    for group in ["video", "audio", "gpio"] {
        let members = group_members(&unpacked.root, group)?
            .with_context(|| format!("group {group} exists (gpio is created when missing)"))?;
        assert!(
            members.contains(&"ferrocam".to_owned()),
            "{group}: {members:?}"
        );
    }
    fs::remove_dir_all(&work)?;
    Ok(())
}

#[test]
fn the_gateway_package_installs_binary_config_user_and_unit() -> anyhow::Result<()> {
    if !cargo_deb_installed() {
        println!("skipped: cargo-deb is not installed (scripts/setup-system.sh test installs it)");
        return Ok(());
    }
    let work = scratch("deb-gateway")?;
    let deb = build_deb("ferrocam-gateway", &work)?;
    assert_eq!(field(&deb, "Package")?, "ferrocam-gateway");
    let depends = relations(&field(&deb, "Depends")?);
    assert!(depends.contains("libc6"), "{depends:?}");
    assert!(
        !depends.iter().any(|d| d.contains("gstreamer")),
        "the gateway never touches media: {depends:?}"
    );

    let unpacked = unpack(&deb, "ferrocam-gateway", &work)?;
    let env = fs::read_to_string(unpacked.root.join("etc/ferrocam/gateway.env"))?;
    let settings: Vec<&str> = env
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    assert_eq!(
        settings,
        [
            "FERROCAM_HTTP=127.0.0.1:8080",
            "FERROCAM_AUTH_CONFIG=/etc/ferrocam/auth.toml",
            "FERROCAM_GRANT_SIGNING_KEY=/var/lib/ferrocam-gateway/grant.key"
        ]
    );
    let help = stdout(Command::new(workspace_bin("ferrocam-gateway")?).arg("--help"))?;
    for var in settings.iter().filter_map(|l| l.split('=').next()) {
        assert!(
            help.contains(var),
            "gateway.env sets {var}, which --help does not know"
        );
    }

    // The signing key is made with the gateway's own keygen, guarded so that a failure cannot
    // fail the installation. The service starts on a fresh install only once auth.toml exists;
    // upgrades restart it if it runs.
    let postinst = fs::read_to_string(unpacked.control.join("postinst"))?;
    let keygen = postinst
        .find("/usr/bin/ferrocam-gateway keygen --out \"$key\"")
        .context("postinst makes the signing key")?;
    assert!(
        postinst.contains("fi || true"),
        "keygen failures are tolerated"
    );
    let start = postinst
        .find("deb-systemd-invoke start ferrocam-gateway.service")
        .context("postinst starts a configured gateway")?;
    assert!(keygen < start, "the key exists before the first start");
    assert!(
        postinst.contains("[ -e /etc/ferrocam/auth.toml ]"),
        "{postinst}"
    );
    assert!(postinst.contains("deb-systemd-invoke try-restart ferrocam-gateway.service"));
    assert!(
        !postinst.contains("deb-systemd-invoke $_dh_action"),
        "{postinst}"
    );

    // keygen really writes what the postinst then chowns: the key and grant.pub next to it.
    let keys = work.join("keys");
    fs::create_dir_all(&keys)?;
    let printed = stdout(
        Command::new(unpacked.root.join("usr/bin/ferrocam-gateway"))
            .args(["keygen", "--out"])
            .arg(keys.join("grant.key")),
    )?;
    assert!(keys.join("grant.key").exists());
    assert_eq!(
        fs::read_to_string(keys.join("grant.pub"))?.trim(),
        printed.trim(),
        "grant.pub holds the printed public key"
    );

    replay_postinst(&unpacked.root, "ferrocam-gateway")?;
    let user = passwd_entry(&unpacked.root, "ferrocam-gateway")?;
    assert_eq!(user[5], "/var/lib/ferrocam-gateway");
    assert_eq!(
        group_members(&unpacked.root, "video")?.unwrap_or_default(),
        Vec::<String>::new(),
        "the gateway user gets no hardware groups"
    );
    fs::remove_dir_all(&work)?;
    Ok(())
}

/// A copy of the repository's unit whose ExecStart points at the built binary, so `verify`
/// (which checks that the command exists) works before anything is installed.
fn unit_copy(package: &str, dir: &Path) -> anyhow::Result<PathBuf> {
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
fn verify(unit: &Path) -> anyhow::Result<String> {
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
fn exposure(unit: &Path) -> anyhow::Result<f64> {
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
fn settings(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

fn values(settings: &[(String, String)], key: &str) -> Vec<String> {
    settings
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

#[test]
fn the_units_verify_and_are_sandboxed() -> anyhow::Result<()> {
    let dir = scratch("units")?;
    for package in ["ferrocam-device", "ferrocam-gateway"] {
        let copy = unit_copy(package, &dir)?;
        let complaints = verify(&copy)?;
        assert!(complaints.is_empty(), "{package}.service: {complaints}");

        let text = fs::read_to_string(&copy)?;
        let s = settings(&text);
        let one = |key: &str| values(&s, key).join(" ");
        assert_eq!(one("Type"), "notify");
        assert!(one("WatchdogSec").parse::<u32>()? > 0);
        assert_eq!(one("Restart"), "on-failure");
        assert!(one("StartLimitBurst").parse::<u32>()? > 0);
        assert!(one("StartLimitIntervalSec").parse::<u32>()? > 0);
        assert!(
            values(&s, "DynamicUser").is_empty(),
            "a real user owns the groups"
        );
        let short = package.trim_start_matches("ferrocam-");
        assert_eq!(one("EnvironmentFile"), format!("/etc/ferrocam/{short}.env"));
        for (key, value) in [
            ("ProtectSystem", "strict"),
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("NoNewPrivileges", "yes"),
            ("SystemCallFilter", "@system-service"),
            ("CapabilityBoundingSet", ""),
        ] {
            assert!(
                values(&s, key).iter().any(|v| v == value),
                "{package}: {key}={value}"
            );
        }
        if package == "ferrocam-device" {
            assert_eq!(one("User"), "ferrocam");
            assert_eq!(one("StateDirectory"), "ferrocam");
            assert_eq!(one("DevicePolicy"), "closed");
            assert_eq!(
                values(&s, "DeviceAllow"),
                [
                    "char-video4linux rw",
                    "char-media rw",
                    "char-dma_heap rw",
                    "char-alsa rw",
                    "char-gpiochip rw"
                ]
            );
            assert_eq!(
                one("RestrictAddressFamilies"),
                "AF_INET AF_INET6 AF_UNIX AF_NETLINK"
            );
        } else {
            assert_eq!(one("User"), "ferrocam-gateway");
            assert_eq!(one("StateDirectory"), "ferrocam-gateway");
            assert_eq!(one("PrivateDevices"), "yes");
            assert_eq!(one("RestrictAddressFamilies"), "AF_INET AF_INET6 AF_UNIX");
        }

        // A static property of the file: "OK" is ≤ 3.0 on systemd's 0–10 scale.
        let score = exposure(&copy)?;
        assert!(score <= 3.0, "{package}.service exposure {score} > 3.0");
    }

    // The checks can fail: a misspelt key is reported, and an unhardened unit scores badly.
    let broken = dir.join("broken.service");
    fs::write(
        &broken,
        format!(
            "[Service]\nExecStart={}\nWatchdogSecs=30\n",
            workspace_bin("ferrocam-device")?.display()
        ),
    )?;
    let complaints = verify(&broken)?;
    assert!(complaints.contains("WatchdogSecs"), "{complaints:?}");
    assert!(exposure(&broken)? > 8.0);
    fs::remove_dir_all(&dir)?;
    Ok(())
}
