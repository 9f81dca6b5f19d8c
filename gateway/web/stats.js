// ferrocam web viewer: the live statistics under the picture (resolution, rate, bitrate, loss,
// jitter, path, glass to glass, first frame), from the peer connection's getStats once a second.
// Loaded before app.js, which starts the timer.
'use strict';

let previous = null;
let stalledFor = 0;
async function updateStats() {
  const pc = ferrocam.pc;
  const dl = $('stats');
  if (!pc) { dl.replaceChildren(); previous = null; linkAskedFor = null; ferrocam.link = null; return; }
  const report = await pc.getStats();
  let inbound = null;
  let pair = null;
  report.forEach((s) => {
    if (s.type === 'inbound-rtp' && s.kind === 'video') inbound = s;
    // Chromium names the pair in use on the transport; Firefox marks it `selected`.
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = report.get(s.selectedCandidatePairId);
    if (s.type === 'candidate-pair' && s.selected) pair = s;
  });
  if (!inbound) return;
  ferrocam.path = describePath(report, pair);
  const codec = inbound.codecId && report.get(inbound.codecId);
  const codecName = codec ? codec.mimeType.replace(/^video\//i, '') : '–';
  if (inbound.frameWidth) refreshLink(`${inbound.frameWidth}×${inbound.frameHeight}`);
  ferrocam.rendition = rendition(codecName, inbound.frameWidth);
  const rows = {
    Codec: codecName,
    Resolution: inbound.frameWidth ? `${inbound.frameWidth}×${inbound.frameHeight}` : '–',
    Rendition: ferrocam.rendition ? ferrocam.rendition.text : '–',
    'Frames/s': inbound.framesPerSecond != null ? inbound.framesPerSecond.toFixed(0) : '–',
    Bitrate: '–',
    'Frames decoded': inbound.framesDecoded ?? 0,
    'Packets lost': inbound.packetsLost ?? 0,
    Jitter: inbound.jitter != null ? `${(inbound.jitter * 1000).toFixed(1)} ms` : '–',
    'Jitter buffer': inbound.jitterBufferEmittedCount
      ? `${((1000 * inbound.jitterBufferDelay) / inbound.jitterBufferEmittedCount).toFixed(0)} ms` : '–',
    Path: ferrocam.path ? ferrocam.path.text : '–',
    RTT: pair && pair.currentRoundTripTime != null ? `${(pair.currentRoundTripTime * 1000).toFixed(1)} ms` : '–',
  };
  const meter = ferrocam.meter;
  if (meter && meter.samples.length) {
    const last = meter.samples.slice(-30).sort((a, b) => a - b);
    rows['Glass to glass'] = `${last[last.length >> 1].toFixed(0)} ms (p95 ${meter.percentile(95).toFixed(0)})`;
  }
  if (ferrocam.timing && ferrocam.timing.first_frame != null) {
    rows['First frame'] = `${ferrocam.timing.first_frame.toFixed(0)} ms after the click`;
  }
  // A connected stream whose frame count stops moving has stalled.
  const frames = inbound.framesDecoded || 0;
  if (previous && frames === previous.frames && pc.connectionState === 'connected') {
    stalledFor += 1;
    if (stalledFor === 3) showError('The stream stalled: no new frames for 3 s.', 'stalled');
  } else if (frames !== (previous && previous.frames)) {
    if (stalledFor >= 3 && ferrocam.lastError && ferrocam.lastError.code === 'stalled') clearError();
    stalledFor = 0;
  }
  if (previous && inbound.bytesReceived >= previous.bytes) {
    const kbps = (8 * (inbound.bytesReceived - previous.bytes)) / (inbound.timestamp - previous.t);
    rows.Bitrate = `${kbps.toFixed(0)} kbit/s`;
  }
  previous = { bytes: inbound.bytesReceived, t: inbound.timestamp, frames };
  ferrocam.stats = rows;
  dl.replaceChildren(...Object.entries(rows).flatMap(([k, v]) => {
    const dt = document.createElement('dt'); dt.textContent = k;
    const dd = document.createElement('dd'); dd.textContent = v;
    return [dt, dd];
  }));
}

// Which way the video travels, from the candidate pair in use: through a TURN relay or
// straight from the camera, and over UDP or TCP (TCP when a network drops UDP). For a relayed
// path the protocol is the browser's leg to the relay.
function describePath(report, pair) {
  if (!pair) return null;
  const local = report.get(pair.localCandidateId);
  const remote = report.get(pair.remoteCandidateId);
  if (!local || !remote) return null;
  const relayed = local.candidateType === 'relay' || remote.candidateType === 'relay';
  const protocol = ((local.candidateType === 'relay' && local.relayProtocol) || local.protocol || '').toLowerCase();
  const kind = relayed ? 'relay' : 'direct';
  return {
    kind,
    protocol,
    local: local.candidateType,
    remote: remote.candidateType,
    text: `${relayed ? 'TURN relay' : 'direct'} · ${protocol.toUpperCase()} (camera ${remote.candidateType}, browser ${local.candidateType})`,
  };
}

// What the camera says about this page's own stream (the `status` link marked `you`): which
// stream it is and the size and rate it is sent at. Asked again whenever the received size
// changes, and every few seconds besides: a move between two streams of the same size (the
// main one stepped down, and the low one) changes nothing the page can see.
const LINK_EVERY_MS = 5000;
let linkAskedFor = null;
let linkAskedAt = 0;
async function refreshLink(size) {
  const control = ferrocam.control;
  const due = performance.now() - linkAskedAt >= LINK_EVERY_MS;
  if ((linkAskedFor === size && !due) || !control) return;
  linkAskedFor = size;
  linkAskedAt = performance.now();
  try {
    const status = await control.request('status', {}, 3000);
    ferrocam.link = (status.links || []).find((l) => l.you) || null;
  } catch {
    linkAskedFor = null; // asked again on the next tick
  }
}

// Which of the camera's streams this page receives. The camera sends H.264 at its full size to
// every viewer whose link carries it; steps that stream down (960×540, 640×360, then half the
// frame rate) while the narrowest of its viewers' links cannot carry the full size; and sends a
// separate smaller stream to a viewer whose link is far narrower than the others' (so that one
// viewer does not lower everyone's picture). VP8 is the fallback for browsers without H.264.
// The camera's status tells them apart; without it (an older camera), the size received
// against the camera's.
function rendition(codecName, width) {
  const status = ferrocam.devices && ferrocam.devices.find((d) => d.device === ferrocam.device);
  const video = status && status.capabilities && status.capabilities.video;
  if (!width || !video) return null;
  if (codecName === 'VP8') return { name: 'fallback', text: 'VP8 fallback (this browser has no H.264)' };
  const link = ferrocam.link;
  if (link && link.rendition === 'low') {
    return { name: 'low', text: "low stream: this link is far narrower than other viewers'" };
  }
  if (link && link.width && link.width < video.width) {
    return {
      name: 'stepped',
      text: `stepped down to ${link.width}×${link.height} at ${link.fps} fps: the link carries less than the full picture needs`,
    };
  }
  if (!link && width < video.width) {
    return { name: 'low', text: 'reduced to fit this link' };
  }
  return { name: 'full', text: 'full' };
}
