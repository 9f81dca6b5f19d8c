// make bench-peers: what janus.html and aiortc.html share. `makeBench()` returns the object a
// page exposes as `window.bench`: `begin()` makes a receive-only peer connection whose steps are
// marked in `timing` (ms since begin, the names ferrocam's page uses in `ferrocam.timing`) and
// whose video is read by ferrocam's glass-to-glass meter (`meter`, from meter.js).
'use strict';

// Resolves when `pc` has gathered all its candidates (or after 5 s): for pages whose SDP is
// carried whole, without trickle (make bench-network's sender and viewer).
function iceGathered(pc) {
  return new Promise((resolve) => {
    if (pc.iceGatheringState === 'complete') return resolve();
    pc.addEventListener('icegatheringstatechange', () => {
      if (pc.iceGatheringState === 'complete') resolve();
    });
    setTimeout(resolve, 5000);
  });
}

function makeBench() {
  const bench = { timing: {}, meter: null, pc: null, error: null, setup_ms: null };
  bench.begin = function begin() {
    const t0 = performance.now();
    const timing = {};
    bench.timing = timing;
    bench.error = null;
    const mark = (name) => { if (timing[name] == null) timing[name] = performance.now() - t0; };
    const pc = new RTCPeerConnection({ iceServers: [] });
    bench.pc = pc;
    pc.oniceconnectionstatechange = () => {
      const s = pc.iceConnectionState;
      if (s === 'connected' || s === 'completed') mark('ice_connected');
      if (s === 'failed') bench.error = 'ICE failed';
    };
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'connected') mark('dtls_connected');
      if (pc.connectionState === 'failed') bench.error = 'connection failed';
    };
    pc.ontrack = (event) => {
      // The same receiver setting as ferrocam's page, so every peer gets Chromium's smallest
      // jitter buffer (ferrocam without it: ~54 ms glass to glass instead of ~24).
      if ('jitterBufferTarget' in event.receiver) event.receiver.jitterBufferTarget = 0;
      if (event.track.kind !== 'video') return;
      const video = document.getElementById('video');
      event.track.onunmute = () => mark('first_packet');
      if (bench.meter) bench.meter.stop();
      bench.meter = new FerrocamMeter(video, { onFirstFrame: () => mark('first_frame') });
      bench.meter.start();
      video.srcObject = new MediaStream([event.track]);
      video.play().catch(() => {});
    };
    return { mark, pc };
  };
  bench.end = function end() {
    if (bench.meter) bench.meter.stop();
    if (bench.pc) bench.pc.close();
    bench.pc = null;
    const video = document.getElementById('video');
    if (video) video.srcObject = null;
  };
  return bench;
}
