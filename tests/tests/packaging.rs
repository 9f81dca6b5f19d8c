//! Debian packages and systemd units: what `make deb` / `make pi` ship.
//!
//! The packages are made with the real cargo-deb from the real `[package.metadata.deb]`, around
//! the debug binaries `make test` builds (a release build would take minutes), then unpacked into
//! a throwaway root where the maintainer scripts' work is replayed with root-aware tools
//! (`systemd-sysusers --root`, `systemctl --root`): running the scripts themselves would create
//! users and start services on this machine. The units pass `systemd-analyze verify` and score
//! "OK" in `systemd-analyze security`.

#[path = "packaging/deb.rs"]
mod deb;
#[path = "packaging/install_root.rs"]
mod install_root;
#[path = "packaging/units.rs"]
mod units;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use ferrocam_tests::process::{stdout, workspace_bin};

use deb::{build_deb, cargo_deb_installed, field, relations, unpack};
use install_root::{group_members, passwd_entry, replay_postinst};
use units::{exposure, settings, unit_copy, values, verify};

/// A fresh scratch folder under cargo's target/tmp.
fn scratch(name: &str) -> anyhow::Result<PathBuf> {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;
    Ok(dir)
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
