// ferrocam web viewer: lists cameras and plays one over WebRTC.
//
// Signaling runs over one WebSocket to the gateway (/ws). The page asks to watch a camera; the
// gateway relays that to the device over MQTT, and the device makes the offer (send-only video,
// audio if it has a microphone, and the `control` data channel); the page answers. The offerer
// controls ICE, so the device nominates the first working path at once instead of waiting for
// the browser's next check (first frame in about half the time). ICE candidates trickle both ways,
// tagged with the session id the gateway minted. The page can also offer itself
// (`watch(device, { offerer: 'browser' })`), and WHEP always has the player offer.
//
// The gateway is only needed to set a session up: media and the control channel flow peer to
// peer. When the WebSocket drops (a gateway restart or upgrade), the picture keeps playing and
// the page resumes its session on the new socket; when the camera itself restarts, the page
// starts a new session as soon as the camera is back online (reconnect.js).
'use strict';

const $ = (id) => document.getElementById(id);

const ferrocam = {
  ws: null,
  iceServers: [],
  devices: [],
  transport: 'ws', // 'ws' (WebSocket signaling) or 'whep'
  whep: null, // { url, etag } of the current WHEP session
  pc: null,
  device: null,
  session: null,
  pendingCandidates: [], // local candidates gathered before the session id arrived
  lastError: null,
  control: null, // ControlClient once the data channel is open
  lastSnapshot: null,
  lastStill: null,
  lastRefusal: null,
  watchedEpoch: null, // the camera run (presence epoch) the current session is with
  resuming: null, // the session a `resume` was sent for, until the gateway answers
  resumed: 0, // sessions resumed on a new socket (tests read it)
  restarts: 0, // sessions started again because the camera restarted (tests read it)
  iceRestarts: 0, // ICE restarts asked for (tests read it)
  lastIceRestart: null,
  watch,
  restartIce,
  hangUp,
  get pageErrors() { return FerrocamSupport.errors; },
};
window.ferrocam = ferrocam;

// ── WebSocket ────────────────────────────────────────────────────────────────

function connect() {
  const proto = location.protocol === 'https:' ? 'wss' : 'ws';
  const ws = new WebSocket(`${proto}://${location.host}/ws`);
  ferrocam.ws = ws;
  ws.onopen = () => {
    setLinkState('connected', true);
    resumeSession();
  };
  ws.onclose = async () => {
    setLinkState('reconnecting…', false);
    // A socket refused for an expired or revoked login looks like any other close: ask.
    if (!(await checkLogin())) return;
    // The session lives on without the socket (media is peer to peer); it is resumed once
    // the socket is back. Soon: a restarting gateway is back within a second or two.
    setTimeout(connect, 500);
  };
  ws.onmessage = (event) => {
    let msg;
    try { msg = JSON.parse(event.data); } catch { return; }
    onServerMessage(msg);
  };
}

// Sends `msg` if the socket is open; says whether it went out.
function send(msg) {
  if (!ferrocam.ws || ferrocam.ws.readyState !== WebSocket.OPEN) return false;
  ferrocam.ws.send(JSON.stringify(msg));
  return true;
}

function onServerMessage(msg) {
  switch (msg.type) {
    case 'hello':
      ferrocam.iceServers = msg.ice_servers;
      break;
    case 'devices': {
      ferrocam.devices = msg.devices;
      renderDevices();
      const watched = msg.devices.find((d) => d.device === ferrocam.device);
      if (ferrocam.pc && watched && !watched.online) showError(`${watched.device} went offline.`, 'offline');
      if (watched) watchAgainIfRestarted(watched);
      break;
    }
    case 'resumed': {
      if (msg.session !== ferrocam.session) return;
      ferrocam.resuming = null;
      ferrocam.resumed += 1;
      // The path may have broken while the socket was down (a network change takes both):
      // now the camera can be asked for a new one.
      const ice = ferrocam.pc && ferrocam.pc.iceConnectionState;
      if (ice === 'disconnected' || ice === 'failed') restartIce();
      break;
    }
    case 'session':
      // A session for a camera the user has since left (or a second one for the same click):
      // end it at once instead of leaving the device holding it until its timeout.
      if (msg.device !== ferrocam.device || ferrocam.session) {
        send({ type: 'hang_up', session: msg.session });
        return;
      }
      ferrocam.session = msg.session;
      for (const candidate of ferrocam.pendingCandidates) sendCandidate(candidate);
      ferrocam.pendingCandidates = [];
      break;
    case 'answer':
      if (msg.session !== ferrocam.session || !ferrocam.pc) return;
      if (ferrocam.mark) ferrocam.mark('answer');
      ferrocam.pc.setRemoteDescription({ type: 'answer', sdp: msg.sdp })
        .catch((e) => unexpected(e, "This browser could not use the camera's answer. Try again, or try another browser."));
      break;
    case 'offer': {
      if (msg.session !== ferrocam.session || !ferrocam.pc) return;
      // The step is "the camera's description arrived", whichever side offered.
      if (ferrocam.mark) ferrocam.mark('answer');
      const pc = ferrocam.pc;
      answerCamera(pc, msg.session, msg.sdp).catch((e) => {
        if (pc === ferrocam.pc) unexpected(e, "This browser could not answer the camera. Try again, or try another browser.");
      });
      break;
    }
    case 'candidate':
      if (msg.session !== ferrocam.session || !ferrocam.pc) return;
      ferrocam.pc.addIceCandidate(msg.candidate).catch(() => {});
      break;
    case 'end_of_candidates':
      if (msg.session !== ferrocam.session || !ferrocam.pc) return;
      ferrocam.pc.addIceCandidate(null).catch(() => {});
      break;
    case 'hang_up':
      if (msg.session !== ferrocam.session) return;
      stopPeer();
      showError(`The camera ended the stream (${msg.reason}).`);
      break;
    case 'error':
      // An expired or revoked login: back to the login page.
      if (msg.code === 'unauthorized') { checkLogin(); }
      if (msg.session && msg.session !== ferrocam.session) return;
      if (msg.session && msg.session === ferrocam.resuming) {
        // The session ended while the socket was down: start a fresh one.
        ferrocam.resuming = null;
        const device = ferrocam.device;
        showNotice(`Reconnected to ${device}.`);
        watch(device, { keepNotice: true }).catch(watchFailed);
        return;
      }
      if (!msg.session && !ferrocam.device) return;
      // Tell the gateway too when the error did not come from the device (then the session
      // is already gone there, and this is answered with an error the page ignores).
      if (msg.session) send({ type: 'hang_up', session: msg.session });
      stopPeer();
      showError(`${describeError(msg.code)} ${msg.message}`, msg.code);
      break;
  }
}

function describeError(code) {
  return {
    no_common_codec: 'This browser cannot decode any video format this camera sends (H.264, or VP8 where the camera has it).',
    unknown_device: 'Unknown or offline camera.',
    busy: 'The camera is serving as many viewers as it can.',
    rate_limited: 'Too many requests; wait a moment.',
    too_large: 'The request was too large.',
    unknown_session: 'The session is gone.',
    timeout: 'The camera did not respond in time.',
    bad_request: 'The request was refused.',
  }[code] || 'Error:';
}

// ── Watching a camera ────────────────────────────────────────────────────────

// `options.codecs` restricts the video codecs this browser accepts (MIME types); used to check
// how the product reacts to a browser that cannot do H.264. `options.transport` picks WebSocket
// signaling ('ws') or WHEP ('whep'); the page's selector sets the default. `options.offerer`
// ('device', the default, or 'browser') picks who writes the offer over the WebSocket.
// `options.iceServers` and `options.iceTransportPolicy` override the gateway's ICE servers and
// the policy ('relay' forces TURN).
async function watch(device, options = {}) {
  // Time to first frame, split into its steps (ms since the click; `make bench` reads these).
  const t0 = performance.now();
  const timing = { transport: options.transport || ferrocam.transport };
  const mark = (name) => { if (timing[name] == null) timing[name] = performance.now() - t0; };
  ferrocam.timing = timing;
  ferrocam.mark = mark;
  hangUp();
  clearError();
  if (!options.keepNotice) clearNotice();
  ferrocam.device = device;
  const status = ferrocam.devices.find((d) => d.device === device);
  ferrocam.watchedEpoch = status ? status.epoch : null;
  // Before any WebRTC object: a browser that cannot play gets a sentence, not an exception.
  const support = FerrocamSupport.check(status);
  ferrocam.support = support;
  if (!support.ok) {
    showError(support.message, 'unsupported');
    renderDevices();
    return;
  }
  if (support.note) showNotice(support.note);
  const transport = options.transport || ferrocam.transport;
  const pc = new RTCPeerConnection({
    iceServers: options.iceServers || ferrocam.iceServers,
    iceTransportPolicy: options.iceTransportPolicy || 'all',
  });
  ferrocam.pc = pc;
  FerrocamTalk.watch(pc);
  ferrocam.codecs = options.codecs || null;
  const browserOffers = transport === 'whep' || options.offerer === 'browser';

  if (browserOffers) {
    const transceiver = pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'sendrecv' });
    attachControl(pc, device);
    restrictCodecs(transceiver);
  } else {
    // The device's offer brings the control channel.
    pc.ondatachannel = (event) => {
      if (event.channel.label === 'control') attachControl(pc, device, event.channel);
    };
  }
  pc.oniceconnectionstatechange = () => {
    if (pc.iceConnectionState === 'connected' || pc.iceConnectionState === 'completed') mark('ice_connected');
    // The path stopped answering (a network change, a NAT binding gone): find a new one
    // before the camera gives the session up.
    if (pc.iceConnectionState === 'disconnected' && pc === ferrocam.pc) restartIce();
  };
  pc.ontrack = (event) => {
    const video = $('video');
    // One stream of our own for every track: the device's audio and video may arrive in
    // different streams (or none), and the <video> element must show both.
    if (!ferrocam.stream) ferrocam.stream = new MediaStream();
    const stream = ferrocam.stream;
    stream.getTracks().filter((t) => t.kind === event.track.kind).forEach((t) => stream.removeTrack(t));
    stream.addTrack(event.track);
    lowLatency(event.receiver);
    if (event.track.kind === 'video') {
      event.track.onunmute = () => mark('first_packet');
      startMeter(video, mark);
    }
    if (video.srcObject !== stream) video.srcObject = stream;
    $('placeholder').hidden = true;
    if (event.track.kind === 'audio') $('unmute').disabled = false;
  };
  pc.onconnectionstatechange = () => {
    if (pc.connectionState === 'connected') {
      mark('dtls_connected');
      // Once more now that media flows: a target set earlier (in `ontrack`, while the
      // descriptions were still being applied) does not always hold — measured 52 instead of
      // 25 ms glass to glass in some sessions, whichever side offered.
      for (const receiver of pc.getReceivers()) lowLatency(receiver);
    }
    renderNowWatching();
    if (pc.connectionState === 'failed') showError('The connection to the camera failed.');
  };
  for (const id of ['hangup', 'fullscreen']) $(id).disabled = false;
  renderDevices();
  renderNowWatching();
  if (transport === 'whep') return watchOverWhep(pc, device);

  pc.onicecandidate = (event) => {
    if (event.candidate) {
      const c = event.candidate.toJSON();
      if (ferrocam.session) sendCandidate(c); else ferrocam.pendingCandidates.push(c);
    } else if (ferrocam.session) {
      send({ type: 'end_of_candidates', session: ferrocam.session });
    }
  };

  if (!browserOffers) {
    // The step is "our request went out", whichever side offers.
    mark('offer_sent');
    send({ type: 'watch', device });
    return;
  }
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  mark('offer_sent');
  send({ type: 'offer', device, sdp: offer.sdp });
}

// Applies the device's offer and sends our answer.
async function answerCamera(pc, session, sdp) {
  await pc.setRemoteDescription({ type: 'offer', sdp });
  if (pc !== ferrocam.pc) return;
  FerrocamTalk.prepare(pc);
  const video = pc.getTransceivers().find((t) => t.receiver.track.kind === 'video');
  if (video) restrictCodecs(video);
  let answer;
  try {
    answer = await pc.createAnswer();
  } catch (e) {
    if (pc !== ferrocam.pc) return; // the user moved on meanwhile
    // Nothing both sides can do: tell the device, and say why here.
    send({ type: 'hang_up', session });
    stopPeer();
    console.warn('no common codec with the camera', e);
    showError(describeError('no_common_codec'), 'no_common_codec');
    return;
  }
  if (pc !== ferrocam.pc) return;
  // Sent before applying it here: applying it starts our ICE checks, and a check that reaches
  // the device before our answer does is dropped and only repeated ~50 ms later.
  send({ type: 'answer', session, sdp: answer.sdp });
  try {
    await pc.setLocalDescription(answer);
  } catch (e) {
    if (pc !== ferrocam.pc) return;
    send({ type: 'hang_up', session });
    stopPeer();
    unexpected(e, 'This browser could not set up the connection to the camera. Try again, or try another browser.');
    return;
  }
}

// A live camera wants the smallest jitter buffer the network allows: Chrome otherwise holds
// ~30 ms more video than it needs on loopback (measured with the meter); it still grows the
// buffer on jitter.
function lowLatency(receiver) {
  if ('jitterBufferTarget' in receiver) receiver.jitterBufferTarget = 0;
  else if ('playoutDelayHint' in receiver) receiver.playoutDelayHint = 0;
}

// Limits the video codecs this browser takes to `options.codecs` of the current watch.
function restrictCodecs(transceiver) {
  if (!ferrocam.codecs || !transceiver.setCodecPreferences) return;
  const wanted = RTCRtpReceiver.getCapabilities('video').codecs
    .filter((c) => ferrocam.codecs.includes(c.mimeType));
  transceiver.setCodecPreferences(wanted);
}

// The glass-to-glass meter (meter.js): live latency when the device stamps its frames, and the
// first presented frame for the time-to-first-frame breakdown.
function startMeter(video, mark) {
  if (ferrocam.meter) ferrocam.meter.stop();
  const meter = new FerrocamMeter(video, {
    onFirstFrame: () => mark('first_frame'),
  });
  ferrocam.meter = meter;
  meter.start();
}

// WHEP (draft-ietf-wish-whep): POST the offer, get the answer with the camera's candidates,
// then trickle our own candidates with PATCH (buffered until the session URL is known).
async function watchOverWhep(pc, device) {
  const pending = [];
  let flush = null;
  pc.onicecandidate = (event) => {
    pending.push(event.candidate ? `a=${event.candidate.candidate}` : 'a=end-of-candidates');
    if (flush) flush();
  };
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  if (ferrocam.mark) ferrocam.mark('offer_sent');
  const response = await fetch(`/whep/${encodeURIComponent(device)}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/sdp' },
    body: offer.sdp,
  });
  if (pc !== ferrocam.pc) return;
  if (response.status !== 201) {
    const text = (await response.text()).trim();
    stopPeer();
    const code = { 404: 'unknown_device', 406: 'no_common_codec', 409: 'unknown_device', 503: 'busy', 504: 'timeout' }[response.status];
    showError(`${describeError(code)} ${text} (HTTP ${response.status})`, code || 'whep');
    return;
  }
  const session = { url: new URL(response.headers.get('Location'), location.href).href, etag: response.headers.get('ETag') };
  ferrocam.whep = session;
  const answerSdp = await response.text();
  if (ferrocam.mark) ferrocam.mark('answer');
  await pc.setRemoteDescription({ type: 'answer', sdp: answerSdp });
  const ufrag = /a=ice-ufrag:(.*)/.exec(offer.sdp);
  const mid = pc.getTransceivers()[0].mid;
  flush = () => {
    if (!pending.length || ferrocam.whep !== session) return;
    const lines = pending.splice(0);
    const head = ufrag ? [`a=ice-ufrag:${ufrag[1].trim()}`] : [];
    const body = `${[...head, `a=mid:${mid}`, ...lines].join('\r\n')}\r\n`;
    fetch(session.url, {
      method: 'PATCH',
      headers: { 'Content-Type': 'application/trickle-ice-sdpfrag', 'If-Match': session.etag },
      body,
    }).catch(() => {});
  };
  flush();
}

function sendCandidate(candidate) {
  send({ type: 'candidate', session: ferrocam.session, candidate });
}

function hangUp() {
  if (ferrocam.session) send({ type: 'hang_up', session: ferrocam.session });
  if (ferrocam.whep) fetch(ferrocam.whep.url, { method: 'DELETE' }).catch(() => {});
  stopPeer();
  ferrocam.device = null;
  ferrocam.watchedEpoch = null;
  renderDevices();
  renderNowWatching();
}

function stopPeer() {
  if (ferrocam.pc) ferrocam.pc.close();
  ferrocam.pc = null;
  ferrocam.stats = null;
  ferrocam.path = null;
  detachControl();
  ferrocam.session = null;
  ferrocam.resuming = null;
  ferrocam.whep = null;
  ferrocam.pendingCandidates = [];
  $('video').srcObject = null;
  ferrocam.stream = null;
  if (ferrocam.meter) ferrocam.meter.stop();
  $('placeholder').hidden = false;
  for (const id of ['hangup', 'fullscreen', 'unmute']) $(id).disabled = true;
  FerrocamTalk.reset();
  setMuted(true);
}

// Browsers only autoplay muted video; sound is one click away.
function setMuted(muted) {
  $('video').muted = muted;
  $('unmute').textContent = muted ? 'Unmute' : 'Mute';
}

// ── login ────────────────────────────────────────────────────────────────────

// Resolves true while logged in; otherwise goes to the login page.
async function checkLogin() {
  try {
    const response = await fetch('/api/me');
    if (response.status === 401) {
      location.replace('/login');
      return false;
    }
    if (response.ok) {
      const me = await response.json();
      ferrocam.me = me;
      $('who').textContent = `${me.user} · ${me.role}`;
    }
  } catch { /* the gateway is restarting; the socket retries */ }
  return true;
}

$('logout').addEventListener('click', async () => {
  await fetch('/api/logout', { method: 'POST' }).catch(() => {});
  location.replace('/login');
});
checkLogin();

function setLinkState(text, ok) {
  const el = $('link-state');
  el.textContent = text;
  el.classList.toggle('ok', ok);
}

function showError(text, code) {
  ferrocam.lastError = { code: code || 'client', message: text };
  const el = $('error');
  el.textContent = text;
  el.hidden = false;
}

function clearError() {
  ferrocam.lastError = null;
  $('error').hidden = true;
}

// Something happened that needs no action (the page recovered by itself).
function showNotice(text) {
  ferrocam.lastNotice = text;
  const el = $('notice');
  el.textContent = text;
  el.hidden = false;
}

function clearNotice() {
  $('notice').hidden = true;
}

// Say it at once, not on the first click: this browser will not play any camera (snapshots
// still work).
if (!FerrocamSupport.browser().webrtc) {
  showError(`${FerrocamSupport.check(null).message} Snapshots still work here.`, 'unsupported');
}

$('hangup').onclick = hangUp;
$('unmute').onclick = () => setMuted(!$('video').muted);
$('transport').onchange = (e) => { ferrocam.transport = e.target.value; };
$('fullscreen').onclick = () => $('video').requestFullscreen().catch(() => {});
setInterval(() => { updateStats().catch(() => {}); }, 1000);
connect();
