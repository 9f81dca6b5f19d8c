//! The audio pipeline: microphone (ALSA) or a test tone → Opus packets.
//!
//! Audio is a separate pipeline from video on purpose: a USB microphone that vanishes or an ALSA
//! device another program holds must cost the viewer its sound, never its picture.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use bytes::Bytes;
use gstreamer as gst;
use gstreamer::prelude::*;
use gstreamer_app as gst_app;
use tokio::sync::broadcast;

use super::pipeline::BusWatch;

/// Opus frame length; 20 ms is what browsers send and expect.
pub const OPUS_FRAME: Duration = Duration::from_millis(20);

/// One Opus packet.
#[derive(Debug, Clone)]
pub struct AudioUnit {
    pub data: Bytes,
    pub duration: Duration,
    pub encoded_at: Instant,
}

/// Where sound comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AudioSource {
    /// A quiet 440 Hz sine, for the test pattern.
    TestTone,
    /// An ALSA capture device (`default`, `hw:1,0`, `plughw:CARD=Mic`).
    Alsa(String),
}

impl AudioSource {
    /// Parses `--audio`: `off`, `auto`, `test` or `alsa:<device>`. `auto` means the test tone
    /// with the test pattern, the default ALSA capture device when the board has one, else off.
    pub fn resolve(setting: &str, test_pattern: bool) -> anyhow::Result<Option<Self>> {
        Ok(match setting {
            "off" | "false" | "none" => None,
            "test" => Some(Self::TestTone),
            "auto" if test_pattern => Some(Self::TestTone),
            "auto" => has_alsa_capture().then(|| Self::Alsa("default".into())),
            other => match other.strip_prefix("alsa:") {
                Some(device) if !device.is_empty() => Some(Self::Alsa(device.to_owned())),
                _ => anyhow::bail!(
                    "unknown audio setting {other:?}: use auto, off, test or alsa:<device>"
                ),
            },
        })
    }

    pub fn describe(&self) -> String {
        match self {
            Self::TestTone => "test tone".to_owned(),
            Self::Alsa(device) => format!("alsa:{device}"),
        }
    }

    fn launch(&self) -> String {
        let head = match self {
            Self::TestTone => "audiotestsrc is-live=true wave=sine freq=440 volume=0.05".to_owned(),
            Self::Alsa(device) => format!("alsasrc device=\"{device}\""),
        };
        format!(
            "{head} ! volume name=gain ! audioconvert ! audioresample ! audio/x-raw,rate=48000,channels=2 \
             ! opusenc bitrate=32000 frame-size=20 \
             ! appsink name=opus sync=false max-buffers=16 drop=true"
        )
    }
}

/// Whether any ALSA capture device exists (`/dev/snd/pcmC*D*c`).
fn has_alsa_capture() -> bool {
    has_alsa_pcm('c')
}

/// Whether any ALSA PCM device of the kind exists: `c` capture, `p` playback
/// (`/dev/snd/pcmC<card>D<device><kind>`).
pub fn has_alsa_pcm(kind: char) -> bool {
    std::fs::read_dir("/dev/snd")
        .map(|d| {
            d.filter_map(|e| e.ok()).any(|e| {
                e.file_name()
                    .to_str()
                    .is_some_and(|n| n.starts_with("pcmC") && n.ends_with(kind))
            })
        })
        .unwrap_or(false)
}

/// The microphone's gain, settable from any thread: half-duplex turns it down while the
/// device's speaker plays. Kept across pipeline restarts.
pub struct MicrophoneGain {
    state: Mutex<(f64, Option<gst::Element>)>,
}

impl Default for MicrophoneGain {
    fn default() -> Self {
        Self {
            state: Mutex::new((1.0, None)),
        }
    }
}

impl MicrophoneGain {
    /// Sets the gain (1.0: as captured, 0.0: silent); takes effect at once if audio runs.
    pub fn set(&self, gain: f64) {
        let mut state = self.state.lock().expect("gain lock");
        state.0 = gain;
        if let Some(volume) = &state.1 {
            volume.set_property("volume", gain);
        }
    }

    fn attach(&self, volume: Option<gst::Element>) {
        let mut state = self.state.lock().expect("gain lock");
        if let Some(volume) = &volume {
            volume.set_property("volume", state.0);
        }
        state.1 = volume;
    }
}

/// A playing audio pipeline. Dropping it stops it.
pub struct AudioPipeline {
    pipeline: gst::Pipeline,
    gain: Arc<MicrophoneGain>,
    _bus: BusWatch,
}

impl AudioPipeline {
    /// Starts the pipeline and waits until it produces its first packet or fails, so a missing
    /// or busy device is reported here rather than as silence.
    pub fn start(
        source: &AudioSource,
        units: broadcast::Sender<AudioUnit>,
        gain: Arc<MicrophoneGain>,
        on_fault: Arc<dyn Fn(String) + Send + Sync>,
    ) -> anyhow::Result<Self> {
        let pipeline = gst::parse::launch(&source.launch())
            .context("building the audio pipeline")?
            .downcast::<gst::Pipeline>()
            .map_err(|_| anyhow!("audio description did not produce a pipeline"))?;
        let appsink = pipeline
            .by_name("opus")
            .and_then(|e| e.downcast::<gst_app::AppSink>().ok())
            .context("audio pipeline has no appsink")?;
        let (first_tx, first_rx) = std::sync::mpsc::sync_channel::<()>(1);
        appsink.set_callbacks(
            gst_app::AppSinkCallbacks::builder()
                .new_sample(move |sink| {
                    let sample = sink.pull_sample().map_err(|_| gst::FlowError::Eos)?;
                    if let Some(buffer) = sample.buffer()
                        && let Ok(map) = buffer.map_readable()
                    {
                        let _ = first_tx.try_send(());
                        let _ = units.send(AudioUnit {
                            data: Bytes::copy_from_slice(map.as_slice()),
                            duration: buffer
                                .duration()
                                .map(|d| Duration::from_nanos(d.nseconds()))
                                .filter(|d| !d.is_zero())
                                .unwrap_or(OPUS_FRAME),
                            encoded_at: Instant::now(),
                        });
                    }
                    Ok(gst::FlowSuccess::Ok)
                })
                .build(),
        );
        let (fault_tx, fault_rx) = std::sync::mpsc::sync_channel::<String>(1);
        let bus = BusWatch::start(
            &pipeline,
            Arc::new(move |fault: String| {
                let _ = fault_tx.try_send(fault.clone());
                on_fault(fault);
            }),
        )?;
        gain.attach(pipeline.by_name("gain"));
        let running = Self {
            pipeline,
            gain,
            _bus: bus,
        };
        running
            .pipeline
            .set_state(gst::State::Playing)
            .map_err(|_| anyhow!("{} cannot be opened (missing or busy?)", source.describe()))?;
        // First packet or first fault, whichever comes first.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            if first_rx.try_recv().is_ok() {
                return Ok(running);
            }
            if let Ok(fault) = fault_rx.try_recv() {
                return Err(anyhow!("{} failed: {fault}", source.describe()));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(anyhow!(
            "{} produced no audio within 2 s",
            source.describe()
        ))
    }
}

impl Drop for AudioPipeline {
    fn drop(&mut self) {
        self.gain.attach(None);
        let _ = self.pipeline.set_state(gst::State::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_resolve() {
        assert_eq!(AudioSource::resolve("off", true).unwrap(), None);
        assert_eq!(
            AudioSource::resolve("auto", true).unwrap(),
            Some(AudioSource::TestTone)
        );
        assert_eq!(
            AudioSource::resolve("alsa:hw:1,0", false).unwrap(),
            Some(AudioSource::Alsa("hw:1,0".into()))
        );
        assert!(AudioSource::resolve("alsa:", false).is_err());
        assert!(AudioSource::resolve("loud", false).is_err());
    }

    #[test]
    fn the_test_tone_produces_opus_packets() {
        gst::init().unwrap();
        let (tx, mut rx) = broadcast::channel(64);
        let gain = Arc::new(MicrophoneGain::default());
        let _audio =
            AudioPipeline::start(&AudioSource::TestTone, tx, gain, Arc::new(|_| {})).unwrap();
        // The first packet is shortened by the encoder's pre-skip; steady state is 20 ms frames.
        let units: Vec<_> = (0..5).map(|_| rx.blocking_recv().unwrap()).collect();
        for unit in &units {
            assert!(
                !unit.data.is_empty() && unit.data.len() < 400,
                "{} bytes",
                unit.data.len()
            );
        }
        assert_eq!(units[4].duration, OPUS_FRAME);
    }

    #[test]
    fn the_microphone_gain_reaches_the_running_pipeline_and_outlives_it() {
        gst::init().unwrap();
        let (tx, _rx) = broadcast::channel(64);
        let gain = Arc::new(MicrophoneGain::default());
        gain.set(0.1);
        let audio = AudioPipeline::start(
            &AudioSource::TestTone,
            tx.clone(),
            Arc::clone(&gain),
            Arc::new(|_| {}),
        )
        .unwrap();
        let volume = || {
            audio
                .pipeline
                .by_name("gain")
                .unwrap()
                .property::<f64>("volume")
        };
        assert!(
            (volume() - 0.1).abs() < 1e-6,
            "set before the start: {}",
            volume()
        );
        gain.set(0.0);
        assert_eq!(volume(), 0.0, "set while running");
        drop(audio);
        gain.set(1.0);
        let again =
            AudioPipeline::start(&AudioSource::TestTone, tx, gain, Arc::new(|_| {})).unwrap();
        assert_eq!(
            again
                .pipeline
                .by_name("gain")
                .unwrap()
                .property::<f64>("volume"),
            1.0
        );
    }

    #[test]
    fn a_missing_alsa_device_is_an_error_not_a_hang_or_crash() {
        gst::init().unwrap();
        let (tx, _rx) = broadcast::channel(4);
        let started = Instant::now();
        let gain = Arc::new(MicrophoneGain::default());
        let err = AudioPipeline::start(
            &AudioSource::Alsa("hw:97,0".into()),
            tx,
            gain,
            Arc::new(|_| {}),
        )
        .err()
        .expect("no such device here");
        assert!(err.to_string().contains("alsa:hw:97,0"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(3));
    }
}
