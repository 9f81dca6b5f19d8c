//! Command-line and environment configuration of the device agent.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use ferrocam_protocol::DeviceId;

use crate::control::PtzSpec;
use crate::media::{CaptureFormat, Source};

mod network;
mod record;
mod streams;

pub use network::IceTcp;
use network::{parse_ice_tcp, parse_on_off};
pub use record::RecordFlags;
pub use streams::{Fallback, LowBox};
use streams::{parse_box, parse_fallback};

/// ferrocam device agent: streams this board's camera to browsers over WebRTC.
#[derive(Debug, Clone, Parser)]
#[command(name = "ferrocam-device", version)]
pub struct Config {
    /// This device's id: 1–64 of A-Z a-z 0-9 _ . -
    #[arg(long, env = "FERROCAM_DEVICE_ID", default_value = "demo")]
    pub id: DeviceId,

    /// MQTT broker: `mqtt://[user[:password]@]host[:port]` or `mqtts://…` (TLS). Several,
    /// comma-separated, for the nodes of a clustered broker: a lost connection moves to the next.
    /// The broker username should be this device's id (ACL templates key on it).
    #[arg(long, env = "FERROCAM_BROKER", default_value = "mqtt://127.0.0.1:1883")]
    pub broker: String,

    /// PEM file with the CA certificate(s) that signed the broker's TLS certificate
    /// (`mqtts://`); without it the system's roots are trusted.
    #[arg(long, env = "FERROCAM_BROKER_CA")]
    pub broker_ca: Option<PathBuf>,

    /// File holding the broker password (instead of putting it in the URL).
    #[arg(long, env = "FERROCAM_BROKER_PASSWORD_FILE")]
    pub broker_password_file: Option<PathBuf>,

    /// The broker password itself, as `ferrocam-gateway device add` writes it into the
    /// device's config file (a password file, if given, wins).
    #[arg(long, env = "FERROCAM_BROKER_PASSWORD", hide_env_values = true)]
    pub broker_password: Option<String>,

    /// File with the gateway's grant public key (`grant.pub` from `ferrocam-gateway init`).
    /// The device believes only requests the gateway signed with the matching private key.
    #[arg(long, env = "FERROCAM_GRANT_KEY", conflicts_with = "grant_public_key")]
    pub grant_key: Option<PathBuf>,

    /// The gateway's grant public key itself (base64url), as enrollment writes it.
    #[arg(long, env = "FERROCAM_GRANT_PUBLIC_KEY")]
    pub grant_public_key: Option<String>,

    /// This device's own Ed25519 signing key (a base64url seed): everything the device
    /// publishes is signed with it, and gateways believe nothing on its topics that is not.
    /// `ferrocam-gateway device add <id>` makes it and enrolls its public half.
    #[arg(long, env = "FERROCAM_SIGNING_KEY", hide_env_values = true)]
    pub signing_key: Option<String>,

    /// Paint each frame's capture time into its top-left corner as a strip of blocks, for the
    /// glass-to-glass meter in the web viewer (and `make bench`). Raw and MJPEG capture only.
    #[arg(long, env = "FERROCAM_LATENCY_STAMP")]
    pub latency_stamp: bool,

    /// Check the configuration (broker URLs, password file, CA, grant key, source and capture
    /// format, PTZ), print a summary and exit without touching the camera or the network.
    #[arg(long)]
    pub check_config: bool,

    /// Video source: `auto` (first V4L2 camera, else the test pattern), `test`, `libcamera`
    /// (Pi CSI cameras), a V4L2 device path such as `/dev/video0`, or `pipeline:<gst fragment>`.
    #[arg(long, env = "FERROCAM_SOURCE", default_value = "auto")]
    pub source: String,

    /// What to capture from a V4L2 camera: `auto`, `raw`, `mjpeg`, or `h264` (the camera's own
    /// H.264, passed through without re-encoding).
    #[arg(long, env = "FERROCAM_CAPTURE_FORMAT", default_value = "auto")]
    pub capture_format: String,

    /// H.264 encoder element to use instead of probing (`v4l2h264enc`, `x264enc`, `openh264enc`…).
    #[arg(long, env = "FERROCAM_ENCODER")]
    pub encoder: Option<String>,

    /// Audio: `auto` (test tone with the test pattern, else the default ALSA microphone if there
    /// is one), `off`, `test`, or `alsa:<device>` such as `alsa:hw:1,0`.
    #[arg(long, env = "FERROCAM_AUDIO", default_value = "auto")]
    pub audio: String,

    /// Where viewers who may talk are heard: `auto` (the default ALSA playback device if there
    /// is one), `off`, `alsa:<device>`, `file:<path>` (raw s16le 48 kHz mono) or
    /// `pipeline:<gstreamer description>`.
    #[arg(long, env = "FERROCAM_SPEAKER", default_value = "auto")]
    pub speaker: String,

    /// The microphone while a viewer talks: `off` (both at once), `duck` (down 20 dB) or
    /// `mute`; for a speaker next to the microphone.
    #[arg(long, env = "FERROCAM_HALF_DUPLEX", default_value = "off")]
    pub half_duplex: String,

    #[command(flatten)]
    pub record: RecordFlags,

    /// Seconds the pipeline keeps running after the last viewer leaves.
    #[arg(long, env = "FERROCAM_IDLE_TIMEOUT", default_value_t = 10)]
    pub idle_timeout_secs: u64,

    /// Frames a snapshot skips after waking an idle camera, while its auto exposure settles.
    #[arg(long, env = "FERROCAM_SNAPSHOT_SETTLE_FRAMES", default_value_t = 5)]
    pub snapshot_settle_frames: u32,

    /// Minimum milliseconds between keyframes forced by viewers' loss reports (PLI/FIR).
    #[arg(long, env = "FERROCAM_KEYFRAME_MIN_INTERVAL_MS", default_value_t = 500)]
    pub keyframe_min_interval_ms: u64,

    /// Frame width in pixels.
    #[arg(long, env = "FERROCAM_WIDTH", default_value_t = 1280, value_parser = at_least_one)]
    pub width: u32,

    /// Frame height in pixels.
    #[arg(long, env = "FERROCAM_HEIGHT", default_value_t = 720, value_parser = at_least_one)]
    pub height: u32,

    /// Frames per second.
    #[arg(long, env = "FERROCAM_FPS", default_value_t = 30, value_parser = at_least_one)]
    pub fps: u32,

    /// Target video bitrate in kbit/s.
    #[arg(long, env = "FERROCAM_BITRATE_KBPS", default_value_t = 2000, value_parser = at_least_one)]
    pub bitrate_kbps: u32,

    /// Follow each viewer's path: the encoder's bitrate drops to what the narrowest viewer's
    /// path carries (estimated from its congestion feedback) and climbs back when it widens.
    /// `--bitrate-kbps` (and `video.set`) is the ceiling. `off`: always the set bitrate.
    #[arg(long, env = "FERROCAM_ADAPTIVE", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub adaptive: bool,

    /// Ask viewers to show each frame as soon as it is decoded (the playout-delay RTP extension
    /// at 0 ms, which Chromium honours): the lowest glass to glass, but no jitter buffer to
    /// hide a late retransmission on a lossy link. `off`: the viewer's player decides.
    #[arg(long, env = "FERROCAM_ZERO_PLAYOUT_DELAY", default_value = "on", value_parser = parse_on_off, action = clap::ArgAction::Set)]
    pub zero_playout_delay: bool,

    /// The lowest bitrate adaptation goes to, in kbit/s.
    #[arg(long, env = "FERROCAM_MIN_BITRATE_KBPS", default_value_t = 150, value_parser = at_least_one)]
    pub min_bitrate_kbps: u32,

    /// The highest a viewer's path estimate goes, in kbit/s; the encoder never exceeds
    /// `--bitrate-kbps` either.
    #[arg(long, env = "FERROCAM_MAX_BITRATE_KBPS", default_value_t = 8000, value_parser = at_least_one)]
    pub max_bitrate_kbps: u32,

    /// Frames between periodic keyframes (joining viewers get one at once regardless); 0 for
    /// keyframes only when something asks: a viewer joins or reports loss (PLI/FIR), a
    /// recording's segment or pre-roll begins, a snapshot is taken.
    #[arg(long, env = "FERROCAM_KEYFRAME_INTERVAL", default_value_t = 60)]
    pub keyframe_interval: u32,

    /// The VP8 fallback for viewers that cannot decode H.264 (Firefox without OpenH264, VP8-only
    /// players): `WIDTHxHEIGHT` (the box it fits in, keeping the main stream's shape; never
    /// larger than the main stream), `full` for the main stream's size, or `off`. Encoded only while such a viewer watches; 640x360 keeps a Pi's
    /// CPU cost low (see BENCHMARKS.md). Not available when the camera's own H.264 passes
    /// through.
    #[arg(long, env = "FERROCAM_VP8", default_value = "640x360", value_parser = parse_fallback)]
    pub vp8: Fallback,

    /// A second, smaller H.264 stream for viewers whose path carries less than half of what the
    /// others get (with `--adaptive on`), so they do not drag everyone down: `WIDTHxHEIGHT`, the
    /// box it fits in (keeping the main stream's shape), or `off`. Encoded only while such a
    /// viewer watches.
    #[arg(long, env = "FERROCAM_LOW_RENDITION", default_value = "640x360", value_parser = parse_box)]
    pub low_rendition: LowBox,

    /// Local UDP addresses ICE binds to (repeatable). `0.0.0.0:0` covers every IPv4 interface
    /// except loopback, which browsers on this machine reach too. Loopback (`127.0.0.1:0`) is
    /// used only when it is the only address given: Firefox ignores loopback candidates.
    #[arg(
        long = "ice-udp",
        env = "FERROCAM_ICE_UDP",
        value_delimiter = ',',
        default_value = "0.0.0.0:0"
    )]
    pub ice_udp: Vec<SocketAddr>,

    /// ICE over TCP (RFC 6544) for viewers behind networks that block UDP: `auto` listens on
    /// the addresses `--ice-udp` uses, with a fresh port per viewer; `off`; or a comma-separated
    /// list of addresses. Browsers prefer UDP whenever it works, so TCP carries the video only
    /// when it is the one way through.
    #[arg(long = "ice-tcp", env = "FERROCAM_ICE_TCP", default_value = "auto", value_parser = parse_ice_tcp)]
    pub ice_tcp: IceTcp,

    /// STUN/TURN server URLs for NAT traversal (repeatable), e.g. `stun:stun.example.org:3478`.
    #[arg(
        long = "ice-server",
        env = "FERROCAM_ICE_SERVERS",
        value_delimiter = ','
    )]
    pub ice_servers: Vec<String>,

    /// Most viewers served at once; more are refused with a `busy` error.
    #[arg(long, env = "FERROCAM_MAX_VIEWERS", default_value_t = 32)]
    pub max_viewers: usize,

    /// A GPIO line the control protocol may use (repeatable):
    /// `name=lamp,chip=gpiochip0,line=17,direction=output`. Lines not listed are off limits.
    #[arg(long = "gpio-line", env = "FERROCAM_GPIO_LINES", value_delimiter = ';')]
    pub gpio_lines: Vec<crate::control::gpio::LineConfig>,

    /// Drive the configured GPIO lines on an in-memory chip instead of the kernel's (boards
    /// without GPIO, demos, tests): `--gpio-fake` alone, or `--gpio-fake=state.json` to also
    /// write the lines' state there as JSON.
    #[arg(
        long,
        env = "FERROCAM_GPIO_FAKE",
        value_name = "STATE_JSON",
        num_args = 0..=1,
        default_missing_value = ""
    )]
    pub gpio_fake: Option<String>,

    /// Pan/tilt/zoom: `off`, `v4l2` (the camera's PTZ controls),
    /// `gpio:left=<line>,right=<line>,up=…,down=…,zoom_in=…,zoom_out=…,pulse_ms=200`, or
    /// `servo:pan=pwmchip0/0,tilt=pwmchip0/1,step=10` (hobby servos on sysfs PWM).
    #[arg(long, env = "FERROCAM_PTZ", default_value = "off")]
    pub ptz: String,

    /// Serve Prometheus metrics and a health check on this address (e.g. `127.0.0.1:9464`).
    #[arg(long, env = "FERROCAM_METRICS_LISTEN")]
    pub metrics_listen: Option<std::net::SocketAddr>,

    /// Seconds a session may take from offer to connected before it is dropped.
    #[arg(long, env = "FERROCAM_SESSION_TIMEOUT", default_value_t = 30)]
    pub session_timeout_secs: u64,
}

/// Which chips the configured GPIO lines are on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GpioChips {
    /// The kernel's (`/dev/gpiochip*`).
    Kernel,
    /// An in-memory chip (`--gpio-fake`), writing its state to `state` if given.
    Fake { state: Option<PathBuf> },
}

/// A number that must not be 0 (a picture 0 pixels wide, 0 frames per second…).
fn at_least_one(s: &str) -> Result<u32, String> {
    match s.parse::<u32>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

impl Config {
    /// Where the GPIO lines are. `--gpio-fake` without a value (or `FERROCAM_GPIO_FAKE=true`)
    /// keeps the fake chip's state in memory.
    pub fn gpio_chips(&self) -> GpioChips {
        match self.gpio_fake.as_deref() {
            None => GpioChips::Kernel,
            Some("" | "true") => GpioChips::Fake { state: None },
            Some(path) => GpioChips::Fake {
                state: Some(path.into()),
            },
        }
    }

    /// The media and control settings, judged without opening the camera, GPIO or PWM: the
    /// source and the capture format forced on it, and `--ptz` (whose GPIO actions must name
    /// configured output lines).
    pub fn check_media(&self) -> anyhow::Result<()> {
        let format = CaptureFormat::parse(&self.capture_format)?;
        Source::check_setting(&self.source, format)?;
        if let PtzSpec::Gpio { lines, .. } = PtzSpec::parse(&self.ptz)? {
            for (action, line) in lines {
                let configured = self.gpio_lines.iter().find(|l| l.name == line);
                anyhow::ensure!(
                    configured.is_some_and(|l| l.output),
                    "--ptz gpio: {action}={line} names no output line of --gpio-line"
                );
            }
        }
        Ok(())
    }

    /// The broker settings, or why the URLs are unusable.
    pub fn broker_settings(&self) -> anyhow::Result<ferrocam_mqtt::BrokerSettings> {
        Ok(ferrocam_mqtt::BrokerSettings {
            urls: ferrocam_mqtt::BrokerAddr::parse_list(&self.broker)?,
            ca_file: self.broker_ca.clone(),
            password_file: self.broker_password_file.clone(),
            password: self.broker_password.clone(),
        })
    }

    /// The gateway's grant public key (base64url), inline or from its file.
    pub fn grant_public_key(&self) -> anyhow::Result<String> {
        match (&self.grant_public_key, &self.grant_key) {
            (Some(key), _) => Ok(key.trim().to_owned()),
            (None, Some(path)) => std::fs::read_to_string(path)
                .map(|text| text.trim().to_owned())
                .with_context(|| format!("reading the gateway's grant key {}", path.display())),
            (None, None) => anyhow::bail!(
                "no --grant-public-key or --grant-key (FERROCAM_GRANT_PUBLIC_KEY, \
                 FERROCAM_GRANT_KEY): the device believes no request without the gateway's \
                 public grant key; enroll it with `ferrocam-gateway device add <id>` and use \
                 the config file that writes"
            ),
        }
    }

    /// The grant verifier, or why there is none.
    pub fn grant_verifier(&self) -> anyhow::Result<crate::grant::GrantVerifier> {
        crate::grant::GrantVerifier::new(self.id.clone(), &self.grant_public_key()?)
            .context("the gateway's grant key")
    }

    /// The key that checks the gateway's signature on requests (the grant key).
    pub fn request_verifier(&self) -> anyhow::Result<ferrocam_protocol::signed::Verifier> {
        ferrocam_protocol::signed::Verifier::from_base64(&self.grant_public_key()?)
            .map_err(|e| anyhow::anyhow!("the gateway's grant key: {e}"))
    }

    /// This device's signing key, or why there is none.
    pub fn signer(&self) -> anyhow::Result<ferrocam_protocol::signed::Signer> {
        let Some(seed) = &self.signing_key else {
            anyhow::bail!(
                "no --signing-key (FERROCAM_SIGNING_KEY): gateways drop every message of a \
                 device that does not sign them. Enroll this device on the gateway with \
                 `ferrocam-gateway device add {}` and use the config file that writes",
                self.id
            );
        };
        ferrocam_protocol::signed::Signer::from_seed_base64(seed)
            .map_err(|e| anyhow::anyhow!("--signing-key: {e}"))
    }

    /// Everything that can be checked without the camera or the network.
    pub fn check(&self) -> anyhow::Result<String> {
        let broker = self.broker_settings()?;
        // Building the connection settings reads the password file and the CA.
        broker.connect("check", |_| {})?;
        self.grant_verifier()?;
        let signer = self.signer()?;
        self.check_media()?;
        let urls: Vec<String> = broker.urls.iter().map(ToString::to_string).collect();
        Ok(format!(
            "device {} · broker {} · grant key {} · signing key {} · source {}",
            self.id,
            urls.join(", "),
            self.grant_public_key()?,
            signer.public_key(),
            self.source
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        Config::try_parse_from(std::iter::once("ferrocam-device").chain(args.iter().copied()))
    }

    #[test]
    fn the_vp8_flag_reads_a_size_full_or_off() {
        let vp8 = |args: &[&str]| parse(args).map(|c| c.vp8.plan());
        use crate::media::Vp8Size;
        assert_eq!(vp8(&[]).unwrap(), Some(Vp8Size::Within(640, 360)));
        assert_eq!(vp8(&["--vp8", "off"]).unwrap(), None);
        assert_eq!(vp8(&["--vp8", "full"]).unwrap(), Some(Vp8Size::Full));
        assert_eq!(
            vp8(&["--vp8", "320x240"]).unwrap(),
            Some(Vp8Size::Within(320, 240))
        );
        for bad in ["640", "0x360", "x", "99999x2", "big"] {
            assert!(parse(&["--vp8", bad]).is_err(), "{bad}");
        }
    }

    /// Once `--adaptive off` was refused ("unexpected argument 'off'"): clap takes a `bool`
    /// field for a switch without a value unless told otherwise.
    #[test]
    fn on_off_switches_take_a_value() {
        let on = parse(&[]).unwrap();
        assert!(on.adaptive && on.zero_playout_delay);
        let off = parse(&["--adaptive", "off", "--zero-playout-delay", "off"]).unwrap();
        assert!(!off.adaptive && !off.zero_playout_delay);
        assert!(parse(&["--adaptive", "on"]).unwrap().adaptive);
        assert!(parse(&["--adaptive", "sometimes"]).is_err());
    }

    #[test]
    fn ice_tcp_follows_the_udp_addresses_unless_told_otherwise() {
        let addrs = |list: &[&str]| -> Vec<SocketAddr> {
            list.iter().map(|a| a.parse().unwrap()).collect()
        };
        let udp = addrs(&["10.0.0.2:5000", "10.0.0.2:0"]);
        let auto = parse(&[]).unwrap().ice_tcp;
        assert_eq!(auto.addrs(&udp), addrs(&["10.0.0.2:0"]));
        let off = parse(&["--ice-tcp", "off"]).unwrap().ice_tcp;
        assert!(off.addrs(&udp).is_empty());
        let listed = parse(&["--ice-tcp", "127.0.0.1:7000, 10.0.0.3:0"]).unwrap();
        assert_eq!(
            listed.ice_tcp.addrs(&udp),
            addrs(&["127.0.0.1:7000", "10.0.0.3:0"])
        );
        assert!(parse(&["--ice-tcp", "nowhere"]).is_err());
    }

    #[test]
    fn gpio_fake_takes_an_optional_state_file() {
        let chips = |args: &[&str]| parse(args).unwrap().gpio_chips();
        assert_eq!(chips(&[]), GpioChips::Kernel);
        assert_eq!(chips(&["--gpio-fake"]), GpioChips::Fake { state: None });
        let state = GpioChips::Fake {
            state: Some("s.json".into()),
        };
        assert_eq!(chips(&["--gpio-fake=s.json"]), state);
        assert_eq!(chips(&["--gpio-fake", "s.json"]), state);
        // Without a value it does not swallow the next flag.
        let config = parse(&["--gpio-fake", "--id", "cam"]).unwrap();
        assert_eq!(config.gpio_chips(), GpioChips::Fake { state: None });
        assert_eq!(config.id.as_str(), "cam");
    }

    #[test]
    fn pictures_and_rates_of_zero_are_refused() {
        for flag in ["--width", "--height", "--fps", "--bitrate-kbps"] {
            let error = parse(&[flag, "0"]).unwrap_err().to_string();
            assert!(error.contains("must be at least 1"), "{flag}: {error}");
            assert!(parse(&[flag, "2"]).is_ok(), "{flag}");
        }
        // 0 is meaningful there: keyframes only when asked.
        assert_eq!(
            parse(&["--keyframe-interval", "0"])
                .unwrap()
                .keyframe_interval,
            0
        );
    }

    #[test]
    fn check_config_judges_source_format_and_ptz() {
        let error = |args: &[&str]| {
            parse(args)
                .unwrap()
                .check_media()
                .err()
                .map(|e| e.to_string())
        };
        assert_eq!(error(&[]), None, "the defaults are fine");
        assert!(
            error(&["--ptz", "bogus"])
                .unwrap()
                .contains("use off, v4l2")
        );
        assert!(
            error(&["--source", "/dev/video-ferrocam-none"])
                .unwrap()
                .contains("no such device")
        );
        assert!(
            error(&["--source", "test", "--capture-format", "mjpeg"])
                .unwrap()
                .contains("raw video only")
        );
        assert!(
            error(&["--capture-format", "yuv"])
                .unwrap()
                .contains("unknown capture format")
        );
        // PTZ over GPIO needs the lines it pulses to be configured outputs.
        let line = "name=pan_l,chip=gpiochip0,line=5,direction=output";
        let door = "name=door,chip=gpiochip0,line=6,direction=input";
        assert_eq!(
            error(&["--gpio-line", line, "--ptz", "gpio:left=pan_l"]),
            None
        );
        assert!(
            error(&["--ptz", "gpio:left=pan_l"])
                .unwrap()
                .contains("left=pan_l")
        );
        assert!(error(&["--gpio-line", door, "--ptz", "gpio:left=door"]).is_some());
    }
}
