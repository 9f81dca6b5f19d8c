// ferrocam web viewer: can this browser play a camera, and if not, what to tell its user.
// Loaded first, so app.js can ask before it touches any WebRTC object.
//
// Two things decide it: whether the browser has WebRTC at all (WebKitGTK on Linux does not), and
// which video codecs its WebRTC can decode (Debian's Firefox has no H.264 unless its OpenH264
// plugin is turned on). A camera sends H.264, and VP8 to browsers without H.264 when its
// fallback is on (`codecs` in the device's status). Every answer is a sentence for people; no
// JavaScript error text reaches the screen.
'use strict';

const FerrocamSupport = (() => {
  // Script errors anywhere in the page, from the first script on: kept for tests and the
  // console, never put on the screen raw.
  const errors = [];
  window.addEventListener('error', (event) => errors.push(String(event.message)));
  window.addEventListener('unhandledrejection', (event) => errors.push(String(event.reason)));

  const isFirefox = () => /\bFirefox\//.test(navigator.userAgent);
  const isWebKitGtk = () => /\b(Epiphany|WebKitGTK)\b/.test(navigator.userAgent)
    || (/AppleWebKit/.test(navigator.userAgent) && /Linux/.test(navigator.userAgent)
      && !/Chrome|Chromium|Android/.test(navigator.userAgent));

  // What this browser's WebRTC can receive: { webrtc, codecs: Set of 'h264' | 'vp8' | … }.
  function browser() {
    if (typeof window.RTCPeerConnection !== 'function') return { webrtc: false, codecs: new Set() };
    const codecs = new Set();
    try {
      const caps = window.RTCRtpReceiver && RTCRtpReceiver.getCapabilities
        && RTCRtpReceiver.getCapabilities('video');
      if (!caps) return { webrtc: true, codecs: null }; // cannot tell: let negotiation decide
      for (const codec of caps.codecs) codecs.add(codec.mimeType.replace(/^video\//i, '').toLowerCase());
    } catch (e) {
      return { webrtc: true, codecs: null };
    }
    return { webrtc: true, codecs };
  }

  // The codecs a camera announces; cameras from before the fallback send H.264 only.
  function camera(status) {
    const video = status && status.capabilities && status.capabilities.video;
    return video && Array.isArray(video.codecs) && video.codecs.length ? video.codecs : ['h264'];
  }

  const H264_IN_FIREFOX = 'To get the full-quality H.264 stream in Firefox, open about:config, '
    + 'set media.gmp-gmpopenh264.enabled to true, and restart Firefox (it then downloads '
    + "Cisco's OpenH264 plugin).";

  // Whether `status`'s camera can play here: { ok, codec, message, note }. `message` says
  // why not; `note` is advice shown beside a picture that does play.
  function check(status, seen = browser()) {
    if (!seen.webrtc) {
      const which = isWebKitGtk()
        ? 'This browser (WebKitGTK, used by GNOME Web and others on Linux) is built without WebRTC'
        : 'This browser has no WebRTC';
      return {
        ok: false,
        message: `${which}, which live video needs. Open this page in Chrome, Edge, Firefox or Safari.`,
      };
    }
    // Cannot tell (an old browser, or a camera whose status has not arrived): let
    // negotiation decide, and the camera's refusal speak.
    if (seen.codecs === null || !status) return { ok: true, codec: null };
    const offered = camera(status);
    if (seen.codecs.has('h264') && offered.includes('h264')) return { ok: true, codec: 'h264' };
    if (seen.codecs.has('vp8') && offered.includes('vp8')) {
      const size = status.capabilities.video.fallback;
      const smaller = size ? ` at ${size.width}×${size.height}` : '';
      return {
        ok: true,
        codec: 'vp8',
        note: `This browser cannot decode H.264 over WebRTC, so the camera sends VP8${smaller} instead.`
          + (isFirefox() ? ` ${H264_IN_FIREFOX}` : ''),
      };
    }
    const lacks = 'This browser cannot decode H.264 over WebRTC';
    const noFallback = offered.includes('vp8') ? ' or VP8' : ', and this camera has its VP8 fallback turned off (ferrocam-device --vp8)';
    return {
      ok: false,
      message: isFirefox()
        ? `${lacks}${noFallback}. ${H264_IN_FIREFOX}`
        : `${lacks}${noFallback}. Try Chrome, Edge or Safari.`,
    };
  }

  return { browser, check, errors };
})();
window.FerrocamSupport = FerrocamSupport;

// A failure inside the page while watching: details to the console, a sentence on the screen
// (`showError` is app.js's).
function unexpected(error, sentence) {
  console.error(error);
  showError(sentence || 'The viewer hit an unexpected problem. Reload the page to try again; the browser console has the details.', 'client');
}

// For `watch(...).catch(…)`.
function watchFailed(error) {
  unexpected(error);
}
