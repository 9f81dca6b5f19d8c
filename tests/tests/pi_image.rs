//! `cross/pi-image` on a synthetic Raspberry Pi OS image: an MBR with a FAT32 boot partition and
//! an ext4 root partition, made here without mounting anything (mkfs.vfat, mkfs.ext4 -d,
//! sfdisk, mtools). The script must put the package, the configuration and the first-boot unit
//! into the root file system with the right owners and modes, SSH / the first user / the Wi-Fi
//! country on the boot partition, and leave the partition table and both file systems intact.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::Context;
use ferrocam_tests::process::{self, workspace_root};

const SECTOR: u64 = 512;
const BOOT_START: u64 = 8192;
const PART_SECTORS: u64 = 131_072; // 64 MiB each
const ROOT_START: u64 = BOOT_START + PART_SECTORS;
const CMDLINE: &str = "console=serial0,115200 console=tty1 root=PARTUUID=5e3da3da-02 rootfstype=ext4 fsck.repair=yes rootwait quiet init=/usr/lib/raspberrypi-sys-mods/firstboot";

/// mtools refuses FAT images whose geometry it finds odd; ours are made by mkfs.vfat.
fn run(command: &mut Command) -> anyhow::Result<Output> {
    process::run(command.env("MTOOLS_SKIP_CHECK", "1"))
}

fn stdout(command: &mut Command) -> anyhow::Result<String> {
    process::stdout(command.env("MTOOLS_SKIP_CHECK", "1"))
}

/// Copies `len` bytes at `offset` of `from` into a new file.
fn cut(from: &Path, offset: u64, len: u64, to: &Path) -> anyhow::Result<()> {
    let mut src = fs::File::open(from)?;
    src.seek(SeekFrom::Start(offset))?;
    let mut dst = fs::File::create(to)?;
    std::io::copy(&mut src.take(len), &mut dst)?;
    Ok(())
}

/// Writes `from` into `to` at `offset`.
fn splice(from: &Path, to: &Path, offset: u64) -> anyhow::Result<()> {
    let mut dst = fs::OpenOptions::new().write(true).open(to)?;
    dst.seek(SeekFrom::Start(offset))?;
    dst.write_all(&fs::read(from)?)?;
    Ok(())
}

/// A Raspberry Pi OS–shaped image: `arch_dir` is the multiarch folder its /usr/lib has.
fn synthetic_image(dir: &Path, arch_dir: &str) -> anyhow::Result<PathBuf> {
    let rootdir = dir.join("rootdir");
    for sub in [
        "etc/systemd/system/multi-user.target.wants",
        "etc/NetworkManager/system-connections",
        "var/lib/dpkg",
        "home/pi",
    ] {
        fs::create_dir_all(rootdir.join(sub))?;
    }
    fs::create_dir_all(rootdir.join("usr/lib").join(arch_dir))?;
    fs::write(
        rootdir.join("etc/os-release"),
        "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nVERSION_CODENAME=bookworm\n",
    )?;
    fs::write(rootdir.join("etc/hostname"), "raspberrypi\n")?;
    let root = dir.join("root.ext4");
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "rootfs", "-d"])
        .arg(&rootdir)
        .arg(&root)
        .arg("64M"))?;

    let boot = dir.join("boot.vfat");
    run(Command::new("mkfs.vfat")
        .args(["-F", "32", "-n", "BOOTFS", "-C"])
        .arg(&boot)
        .arg((PART_SECTORS * SECTOR / 1024).to_string()))?;
    for (name, text) in [
        ("cmdline.txt", format!("{CMDLINE}\n")),
        (
            "config.txt",
            "camera_auto_detect=1\narm_64bit=1\n".to_owned(),
        ),
    ] {
        let path = dir.join(name);
        fs::write(&path, text)?;
        run(Command::new("mcopy")
            .arg("-i")
            .arg(&boot)
            .arg(&path)
            .arg(format!("::{name}")))?;
    }

    let image = dir.join("raspios.img");
    fs::File::create(&image)?.set_len((ROOT_START + PART_SECTORS) * SECTOR)?;
    let mut sfdisk = Command::new("sfdisk")
        .arg("-q")
        .arg(&image)
        .stdin(std::process::Stdio::piped())
        .spawn()?;
    sfdisk.stdin.take().context("stdin")?.write_all(
        format!(
            "label: dos\nlabel-id: 0x5e3da3da\nstart={BOOT_START}, size={PART_SECTORS}, type=c\nstart={ROOT_START}, size={PART_SECTORS}, type=83\n"
        )
        .as_bytes(),
    )?;
    anyhow::ensure!(sfdisk.wait()?.success(), "sfdisk failed");
    splice(&boot, &image, BOOT_START * SECTOR)?;
    splice(&root, &image, ROOT_START * SECTOR)?;
    Ok(image)
}

/// A stand-in ferrocam-device package.
fn dummy_deb(dir: &Path, arch: &str) -> anyhow::Result<PathBuf> {
    let pkg = dir.join(format!("pkg-{arch}"));
    fs::create_dir_all(pkg.join("DEBIAN"))?;
    fs::create_dir_all(pkg.join("usr/bin"))?;
    fs::write(
        pkg.join("DEBIAN/control"),
        format!(
            "Package: ferrocam-device\nVersion: 0.0.0-test\nArchitecture: {arch}\nMaintainer: test <test@example.invalid>\nDescription: stand-in\n"
        ),
    )?;
    fs::write(
        pkg.join("usr/bin/ferrocam-device"),
        "#!/bin/sh\necho stand-in\n",
    )?;
    let deb = dir.join(format!("ferrocam-device_0.0.0-test_{arch}.deb"));
    run(Command::new("dpkg-deb")
        .args(["--root-owner-group", "--build"])
        .arg(&pkg)
        .arg(&deb))?;
    Ok(deb)
}

fn sfdisk_dump(image: &Path) -> anyhow::Result<String> {
    // The dump names the image file; compare the table, not the name.
    Ok(stdout(Command::new("sfdisk").arg("--dump").arg(image))?
        .replace(&image.display().to_string(), "IMAGE"))
}

/// debugfs on the root file system.
struct RootFs(PathBuf);

impl RootFs {
    fn debugfs(&self, request: &str) -> anyhow::Result<Vec<u8>> {
        Ok(run(Command::new("debugfs").arg("-R").arg(request).arg(&self.0))?.stdout)
    }

    fn read(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let stat = String::from_utf8(self.debugfs(&format!("stat {path}"))?)?;
        anyhow::ensure!(stat.starts_with("Inode:"), "{path} is missing");
        self.debugfs(&format!("cat {path}"))
    }

    fn text(&self, path: &str) -> anyhow::Result<String> {
        Ok(String::from_utf8(self.read(path)?)?)
    }

    /// (type, permission bits, uid, gid) of a file.
    fn owner_and_mode(&self, path: &str) -> anyhow::Result<(String, u32, u32, u32)> {
        let stat = String::from_utf8(self.debugfs(&format!("stat {path}"))?)?;
        let word_after = |label: &str| -> anyhow::Result<String> {
            stat.split(label)
                .nth(1)
                .and_then(|rest| rest.split_whitespace().next())
                .map(str::to_owned)
                .with_context(|| format!("no {label} for {path}: {stat}"))
        };
        let mode = u32::from_str_radix(&word_after("Mode:")?, 8)?;
        Ok((
            word_after("Type:")?,
            mode,
            word_after("User:")?.parse()?,
            word_after("Group:")?.parse()?,
        ))
    }
}

fn boot_file(image: &Path, name: &str) -> anyhow::Result<String> {
    stdout(
        Command::new("mtype")
            .arg("-i")
            .arg(format!("{}@@{}", image.display(), BOOT_START * SECTOR))
            .arg(format!("::{name}")),
    )
}

#[test]
fn pi_image_adds_package_config_and_first_boot_unit_and_keeps_the_partition_table()
-> anyhow::Result<()> {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("pi-image-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir)?;

    let image = synthetic_image(&dir, "aarch64-linux-gnu")?;
    let table_before = sfdisk_dump(&image)?;
    let size_before = fs::metadata(&image)?.len();
    // Raspberry Pi OS ships .img.xz; the script takes that directly.
    run(Command::new("xz").args(["-T0", "-0", "-k"]).arg(&image))?;
    let image_xz = dir.join("raspios.img.xz");

    let deb = dummy_deb(&dir, "arm64")?;
    let grant = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80";
    fs::write(dir.join("grant.pub"), format!("{grant}\n"))?;
    // The device's config file, as enrolling it on the gateway writes it.
    run(
        Command::new(ferrocam_tests::process::workspace_bin("ferrocam-gateway")?)
            .args(["device", "add", "camera1"])
            .args(["--broker", "mqtts://broker.example.org:8883"])
            .arg("--devices")
            .arg(dir.join("devices.toml"))
            .arg("--out")
            .arg(dir.join("camera1.env")),
    )?;
    let config = fs::read_to_string(dir.join("camera1.env"))?;
    let enrolled: Vec<&str> = config.lines().filter(|l| !l.starts_with('#')).collect();
    fs::write(dir.join("not-enrolled.env"), "FERROCAM_DEVICE_ID=camera1\n")?;
    fs::write(
        dir.join("ca.pem"),
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    )?;
    fs::write(dir.join("wifi.password"), "correct horse\n")?;
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIFerrocamTestKeyOnly admin@laptop";
    fs::write(dir.join("id.pub"), format!("{key}\n"))?;

    let out = dir.join("camera1.img");
    let script = workspace_root().join("cross/pi-image");
    let started = std::time::Instant::now();
    let output = run(Command::new(&script)
        .arg("--image")
        .arg(&image_xz)
        .arg("--out")
        .arg(&out)
        .arg("--deb")
        .arg(&deb)
        .arg("--device-config")
        .arg(dir.join("camera1.env"))
        .arg("--broker-ca")
        .arg(dir.join("ca.pem"))
        .args(["--env", "FERROCAM_SOURCE=libcamera"])
        .args(["--wifi-ssid", "Home Net", "--wifi-country", "DE"])
        .arg("--wifi-password-file")
        .arg(dir.join("wifi.password"))
        .arg("--ssh-key")
        .arg(dir.join("id.pub"))
        .args(["--user", "admin", "--password-hash", "$6$salt$hash"]))?;
    println!(
        "pi-image took {:?}:\n{}",
        started.elapsed(),
        String::from_utf8_lossy(&output.stdout)
    );

    // The image: same size, same partition table.
    assert_eq!(fs::metadata(&out)?.len(), size_before);
    assert_eq!(sfdisk_dump(&out)?, table_before);

    // The root file system: intact, and carrying the first-boot payload.
    let root = RootFs(dir.join("out-root.ext4"));
    cut(&out, ROOT_START * SECTOR, PART_SECTORS * SECTOR, &root.0)?;
    run(Command::new("e2fsck").arg("-fn").arg(&root.0))?;
    let stage = "/var/lib/ferrocam-firstboot";
    assert_eq!(
        root.owner_and_mode(stage)?,
        ("directory".into(), 0o700, 0, 0)
    );
    assert_eq!(
        root.read(&format!("{stage}/ferrocam-device.deb"))?,
        fs::read(&deb)?
    );
    for file in ["ferrocam-device.deb", "device.env", "firstboot.sh"] {
        assert_eq!(
            root.owner_and_mode(&format!("{stage}/{file}"))?,
            ("regular".into(), 0o600, 0, 0),
            "{file}: root-only"
        );
    }
    assert_eq!(
        root.read(&format!("{stage}/broker-ca.pem"))?,
        fs::read(dir.join("ca.pem"))?
    );
    assert_eq!(
        root.text(&format!("{stage}/authorized_keys"))?,
        format!("{key}\n")
    );
    assert_eq!(root.text(&format!("{stage}/wifi-country"))?, "DE\n");
    let env = root.text(&format!("{stage}/device.env"))?;
    let settings: Vec<&str> = env.lines().filter(|l| !l.starts_with('#')).collect();
    // The enrollment as is (id, broker with the device's user, its password and signing key,
    // the grant key), then what the flags add.
    let added = [
        "FERROCAM_BROKER_CA=/etc/ferrocam/broker-ca.pem",
        "FERROCAM_SOURCE=libcamera",
    ];
    assert_eq!(settings, [enrolled.as_slice(), &added].concat());
    assert!(
        enrolled.contains(&"FERROCAM_BROKER=mqtts://camera1@broker.example.org:8883"),
        "{config}"
    );

    // The first-boot hook: a unit, enabled by the multi-user.target.wants symlink systemctl
    // would make, running a script that installs the package and the configuration.
    let unit_path = "/etc/systemd/system/ferrocam-firstboot.service";
    assert_eq!(
        root.owner_and_mode(unit_path)?,
        ("regular".into(), 0o644, 0, 0)
    );
    let link =
        String::from_utf8(root.debugfs(
            "stat /etc/systemd/system/multi-user.target.wants/ferrocam-firstboot.service",
        )?)?;
    assert!(link.contains("Type: symlink"), "{link}");
    assert!(
        link.contains(&format!("Fast link dest: \"{unit_path}\"")),
        "{link}"
    );
    let unit = root.text(unit_path)?;
    assert!(
        unit.contains(&format!("ExecStart=/bin/sh {stage}/firstboot.sh")),
        "{unit}"
    );
    assert!(unit.contains("Restart=on-failure"), "{unit}");
    assert!(unit.contains("WantedBy=multi-user.target"), "{unit}");
    let unit_copy = dir.join("ferrocam-firstboot.service");
    fs::write(&unit_copy, &unit)?;
    let verify = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit_copy)
        .output()?;
    assert!(
        verify.status.success() && verify.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let firstboot = root.text(&format!("{stage}/firstboot.sh"))?;
    let script_copy = dir.join("firstboot.sh");
    fs::write(&script_copy, &firstboot)?;
    run(Command::new("sh").arg("-n").arg(&script_copy))?;
    for step in [
        "apt-get install -y",
        "\"$dir/ferrocam-device.deb\"",
        "install -m 600 -o root -g root \"$dir/device.env\" /etc/ferrocam/device.env",
        "systemctl enable ferrocam-device.service",
        "systemctl disable ferrocam-firstboot.service",
        "raspi-config nonint do_wifi_country",
    ] {
        assert!(
            firstboot.contains(step),
            "firstboot.sh lacks {step}:\n{firstboot}"
        );
    }

    // Wi-Fi for NetworkManager: root-only (NetworkManager ignores anything else).
    let nm = "/etc/NetworkManager/system-connections/ferrocam-wifi.nmconnection";
    assert_eq!(root.owner_and_mode(nm)?, ("regular".into(), 0o600, 0, 0));
    let wifi = root.text(nm)?;
    for line in [
        "type=wifi",
        "ssid=Home Net",
        "key-mgmt=wpa-psk",
        "psk=correct horse",
    ] {
        assert!(wifi.lines().any(|l| l == line), "{line} in {wifi}");
    }

    // The boot partition: intact, `ssh`, userconf.txt, and the regulatory domain appended to
    // the otherwise unchanged one-line cmdline.txt.
    let boot = dir.join("out-boot.vfat");
    cut(&out, BOOT_START * SECTOR, PART_SECTORS * SECTOR, &boot)?;
    run(Command::new("fsck.vfat").arg("-n").arg(&boot))?;
    assert_eq!(boot_file(&out, "ssh")?, "");
    assert_eq!(boot_file(&out, "userconf.txt")?, "admin:$6$salt$hash\n");
    assert_eq!(
        boot_file(&out, "cmdline.txt")?,
        format!("{CMDLINE} cfg80211.ieee80211_regdom=DE\n")
    );
    assert_eq!(
        boot_file(&out, "config.txt")?,
        "camera_auto_detect=1\narm_64bit=1\n"
    );

    // Refusals leave nothing behind: a 32-bit package for a 64-bit image, a config file that
    // is not an enrollment.
    let armhf = dummy_deb(&dir, "armhf")?;
    let refused = dir.join("refused.img");
    for (deb, config, why) in [
        (
            &armhf,
            dir.join("camera1.env"),
            "is for armhf but the image is arm64",
        ),
        (&deb, dir.join("not-enrolled.env"), "has no FERROCAM_BROKER"),
    ] {
        let output = Command::new(&script)
            .arg("--image")
            .arg(&image)
            .arg("--out")
            .arg(&refused)
            .arg("--deb")
            .arg(deb)
            .arg("--device-config")
            .arg(config)
            .output()?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success() && stderr.contains(why), "{stderr}");
        assert!(!refused.exists());
    }
    let leftovers: Vec<_> = fs::read_dir(&dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".pi-image"))
        .collect();
    assert!(leftovers.is_empty(), "scratch folders left: {leftovers:?}");

    fs::remove_dir_all(&dir)?;
    Ok(())
}
