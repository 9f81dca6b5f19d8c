// ferrocam glass-to-glass meter. A device started with --latency-stamp paints each frame's
// capture time (wall clock, ms) into the frame's top-left corner as a row of 64 black/white
// cells (format: protocol/src/stamp.rs). This reads the row back from every frame the browser
// presents (requestVideoFrameCallback + a canvas) and reports "presented at − captured at".
// On one machine both clocks are the same clock, so the difference is the whole pipeline:
// capture, encode, send, jitter buffer, decode, display.
'use strict';

class FerrocamMeter {
  // `onSample(ms)` gets each latency; `onFirstFrame(presentedAtPerfNow)` the first frame.
  constructor(video, { onSample = () => {}, onFirstFrame = () => {} } = {}) {
    this.video = video;
    this.onSample = onSample;
    this.onFirstFrame = onFirstFrame;
    this.samples = [];
    this.frames = 0;
    this.misses = 0;
    // Capture stamp minus RTP time (ms) of recent frames, and frames skipped as read ahead.
    this.offsets = [];
    this.lastRtp = null;
    this.readAhead = 0;
    this.running = false;
    this.canvas = document.createElement('canvas');
    this.ctx = this.canvas.getContext('2d', { willReadFrequently: true });
  }

  start() {
    if (this.running || !this.video.requestVideoFrameCallback) return;
    this.running = true;
    this.video.requestVideoFrameCallback((now, meta) => this.onFrame(now, meta));
  }

  stop() { this.running = false; }

  onFrame(now, meta) {
    if (!this.running) return;
    this.frames += 1;
    // When the frame is on screen, on the performance clock. Chromium's expectedDisplayTime is
    // the refresh it aims for, and under load it can name a refresh that began before the frame
    // was handed to the compositor (measured: samples of -7 ms in a debug build on a busy
    // machine); a frame is visible no earlier than its presentationTime.
    const shown = Math.max(meta.expectedDisplayTime || now, meta.presentationTime || 0);
    if (this.frames === 1) this.onFirstFrame(shown);
    // Under load the element can show the next frame already when this callback runs: the
    // canvas would then read the next frame's capture time, one frame interval later than
    // this frame's (measured: samples of -7 ms, 33 ms below their neighbours). Such a frame
    // is skipped; the element's clock says which frame it shows.

    // Give up reading after 60 frames without a stamp: this stream has none.
    if (this.samples.length > 0 || this.misses < 60) {
      const captured = this.read(meta.width || this.video.videoWidth);
      if (captured != null) {
        // Date.now() is the system clock the device stamps with; performance.timeOrigin can be
        // a few ms off it. Map the frame's display time (performance clock) onto Date.now().
        const presented = Date.now() - performance.now() + shown;
        const ms = presented - captured;
        if (this.readThisFrame(captured, meta.rtpTimestamp)) {
          this.samples.push(ms);
          if (this.samples.length > 100000) this.samples.shift();
          this.onSample(ms);
        }
      } else {
        this.misses += 1;
      }
    }
    this.video.requestVideoFrameCallback((n, m) => this.onFrame(n, m));
  }

  // Whether the canvas read the frame this callback is about. Under load the element can show
  // the next frame already when the callback runs, and the canvas then reads the next frame's
  // capture time: a sample one frame interval too short (measured: -7 ms between neighbours of
  // 26 ms). The callback's RTP timestamp names its frame: for frames read right, the capture
  // stamp minus the RTP time is the same up to capture jitter (a few ms); a frame read ahead
  // sits a whole frame interval above the lowest recent value. Without RTP timestamps (not a
  // WebRTC stream) every read counts.
  readThisFrame(captured, rtp) {
    if (rtp == null) return true;
    const step = this.lastRtp == null ? null : (rtp - this.lastRtp) / 90;
    this.lastRtp = rtp;
    const offset = captured - rtp / 90;
    // A wrapped RTP clock (every 13 h) or a new stream starts the comparison afresh.
    if (this.offsets.length && Math.abs(offset - this.offsets[this.offsets.length - 1]) > 10000) {
      this.offsets = [];
    }
    this.offsets.push(offset);
    if (this.offsets.length > 90) this.offsets.shift();
    // The first few frames only set the baseline.
    if (this.offsets.length < 5) return false;
    const frame = step > 0 && step < 1000 ? step : 33;
    const ahead = offset - Math.min(...this.offsets) > frame / 2;
    if (ahead) this.readAhead += 1;
    return !ahead;
  }

  // The capture time in the presented frame, or null. The strip's cells are sized for the
  // encoded width (protocol/src/stamp.rs); a sender that scales frames after stamping them
  // (libwebrtc lowering the resolution of a 1280-wide canvas) shrinks them with the frame, so
  // that size is tried second.
  read(width) {
    if (!width) return null;
    const cell = width >= 1024 ? 16 : width >= 512 ? 8 : 4;
    const scaled = (16 * width) / 1280;
    const captured = this.readCells(cell);
    if (captured != null || Math.abs(scaled - cell) < 0.5) return captured;
    return this.readCells(scaled);
  }

  // Reads 64 cells of `cell` px (fractional when scaled) from the top-left corner.
  readCells(cell) {
    const w = Math.ceil(64 * cell);
    const h = Math.max(1, Math.ceil(cell));
    if (this.canvas.width !== w || this.canvas.height !== h) {
      this.canvas.width = w;
      this.canvas.height = h;
    }
    this.ctx.drawImage(this.video, 0, 0, w, h, 0, 0, w, h);
    const px = this.ctx.getImageData(0, 0, w, h).data;
    const y = Math.floor(cell / 2);
    const bits = [];
    for (let i = 0; i < 64; i++) {
      const at = (y * w + Math.floor((i + 0.5) * cell)) * 4;
      const luma = 0.299 * px[at] + 0.587 * px[at + 1] + 0.114 * px[at + 2];
      bits.push(luma > 128 ? 1 : 0);
    }
    return FerrocamMeter.decode(bits);
  }

  // Markers 1011 … 0101, 48-bit ms, 8-bit XOR checksum of the ms bytes.
  static decode(bits) {
    const marks = bits.slice(0, 4).join('') + bits.slice(60).join('');
    if (marks !== '10110101') return null;
    let ms = 0;
    for (let i = 4; i < 52; i++) ms = ms * 2 + bits[i];
    let checksum = 0;
    for (let i = 52; i < 60; i++) checksum = (checksum << 1) | bits[i];
    let x = 0;
    let rest = ms;
    for (let b = 0; b < 6; b++) { x ^= rest % 256; rest = Math.floor(rest / 256); }
    return x === checksum ? ms : null;
  }

  // The p-th percentile (0–100) of the samples so far.
  percentile(p) {
    if (!this.samples.length) return null;
    const sorted = [...this.samples].sort((a, b) => a - b);
    return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
  }
}
window.FerrocamMeter = FerrocamMeter;
