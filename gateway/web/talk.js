// ferrocam talkback: the viewer's microphone, played by the camera's speaker.
//
// The microphone rides on the peer connection the picture already uses. When the camera's
// offer says it will receive audio (the session's grant lets this user talk and the camera has a
// speaker), our answer makes the audio section two-way, with no track yet; pressing Talk puts
// the microphone on it (`replaceTrack`) and releasing takes it off, so talking never
// renegotiates. The camera enforces the right itself: a page that sends anyway is not played.
//
// Loaded before app.js, which calls FerrocamTalk.watch(pc) for each connection,
// FerrocamTalk.prepare(pc) before answering the camera's offer and FerrocamTalk.reset() on stop.
// State for tests and people: `window.ferrocam.talk`.
'use strict';

const FerrocamTalk = (() => {
  // How often the page asks the camera who it is playing, while talking is possible.
  const STATUS_EVERY_MS = 1000;
  const state = { pc: null, sender: null, microphone: null, latched: false, pressed: false, poll: null, starting: null };
  const $ = (id) => document.getElementById(id);

  function publish(fields) {
    window.ferrocam.talk = { ...(window.ferrocam.talk || {}), ...fields };
  }

  function say(text, problem = false) {
    const box = $('talk-state');
    box.textContent = text;
    box.className = problem ? 'refused' : 'muted';
  }

  // The audio section of an SDP, and whether its direction lets `who` receive.
  function audioDirection(sdp) {
    const section = (sdp || '').split(/\r?\nm=/).find((s) => s.startsWith('audio') || s.startsWith('m=audio'));
    if (!section) return null;
    const found = /\r?\na=(sendrecv|sendonly|recvonly|inactive)/.exec(section);
    return found ? found[1] : 'sendrecv';
  }

  function audioTransceiver(pc) {
    return pc.getTransceivers().find((t) => t.receiver.track && t.receiver.track.kind === 'audio');
  }

  // Before our answer to the camera's offer: two-way audio if the camera will listen.
  function prepare(pc) {
    const offered = audioDirection(pc.remoteDescription && pc.remoteDescription.sdp);
    const transceiver = audioTransceiver(pc);
    if (!transceiver || !offered) return;
    if (offered === 'sendrecv') transceiver.direction = 'sendrecv';
    else if (offered === 'recvonly') transceiver.direction = 'sendonly';
  }

  // Follows one connection: once it is up, Talk is offered if the negotiation allows it.
  function watch(pc) {
    reset();
    state.pc = pc;
    pc.addEventListener('connectionstatechange', () => {
      if (pc !== state.pc) return;
      if (pc.connectionState === 'connected') offer(pc);
      // A failed path may come back (the page restarts ICE): the connection stays ours, only
      // talking stops until it is connected again.
      if (pc.connectionState === 'failed') suspend();
      if (pc.connectionState === 'closed') reset();
    });
  }

  async function offer(pc) {
    if (state.sender) return; // connected again after an ICE restart: already offered
    const transceiver = audioTransceiver(pc);
    const direction = transceiver && transceiver.currentDirection;
    const canSend = direction === 'sendrecv' || direction === 'sendonly';
    if (!canSend) {
      await sessionRole(); // control.js: loads `/api/me` once
      const me = window.ferrocam.me || {};
      const why = me.talk === false
        ? 'View only: your account may watch this camera, not talk through it.'
        : 'This camera has no speaker, so nobody can talk through it.';
      publish({ available: false, reason: why });
      say(why);
      return;
    }
    state.sender = transceiver.sender;
    publish({ available: true, reason: null, sending: false, heard: false, others: [] });
    $('talk').disabled = false;
    $('talk-latch').disabled = false;
    say('Hold Talk to speak through the camera, or tick “keep talking”.');
    state.poll = setInterval(() => refreshStatus(pc), STATUS_EVERY_MS);
  }

  // What the camera says about its speaker: whether it plays us, and who else talks.
  async function refreshStatus(pc) {
    const control = window.ferrocam.control;
    if (!control || pc !== state.pc) return;
    let status;
    try { status = await control.request('status', {}, 3000); } catch { return; }
    if (pc !== state.pc || !status.speaker) return;
    const talkers = status.speaker.talkers || [];
    const heard = talkers.some((t) => t.you && t.talking);
    const others = talkers.filter((t) => !t.you && t.talking).map((t) => t.user);
    publish({ heard, others, muted: status.speaker.muted, speaker: status.speaker });
    const parts = [];
    if (isSending()) parts.push(heard ? 'The camera is playing you.' : 'Talking… (waiting for the camera)');
    if (status.speaker.muted) parts.push('The camera’s speaker is muted.');
    if (others.length) parts.push(`Also talking: ${others.join(', ')}.`);
    if (parts.length) say(parts.join(' '));
    else if (!window.ferrocam.talk.reason) say('Hold Talk to speak through the camera, or tick “keep talking”.');
  }

  function isSending() {
    return Boolean(state.microphone);
  }

  // Plain words for why the microphone could not be opened.
  function describe(error) {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      return 'Talking needs a secure page (https, or this machine): the browser offers no microphone here. You can still watch.';
    }
    switch (error && error.name) {
      case 'NotAllowedError':
      case 'SecurityError':
        return 'Microphone access was refused. Allow it in the browser’s site settings to talk; you can still watch.';
      case 'NotFoundError':
      case 'OverconstrainedError':
        return 'No microphone was found, so you cannot talk. You can still watch.';
      case 'NotReadableError':
      case 'AbortError':
        return 'The microphone is in use by another program, or would not start. You can still watch.';
      default:
        return `The microphone could not be opened (${(error && error.name) || 'unknown error'}). You can still watch.`;
    }
  }

  async function start() {
    if (!state.sender || state.microphone || state.starting) return;
    const pc = state.pc;
    let track = null;
    const starting = (async () => {
      // Yield first, so `starting` below is assigned before `finally` compares it.
      await null;
      try {
        if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) throw new Error('no mediaDevices');
        const stream = await navigator.mediaDevices.getUserMedia({
          audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true },
          video: false,
        });
        track = stream.getAudioTracks()[0];
        // Released (or the camera changed) while the browser was asking.
        const wanted = () => pc === state.pc && state.sender && (state.pressed || state.latched);
        if (!wanted()) return;
        await state.sender.replaceTrack(track);
        if (!wanted()) {
          // Hung up or released while the sender took it: take it back off.
          if (state.sender) state.sender.replaceTrack(null).catch(() => {});
          return;
        }
        state.microphone = track;
        window.ferrocam.microphone = track; // what is sent, for measurements
        publish({ sending: true, error: null });
        $('talk').classList.add('active');
        say('Talking… (waiting for the camera)');
      } catch (e) {
        if (pc !== state.pc) return; // a refusal for a connection that is gone
        const why = describe(e);
        publish({ sending: false, error: why, errorName: e && e.name });
        state.latched = false;
        $('talk-latch').checked = false;
        say(why, true);
      } finally {
        // A microphone opened here and not adopted is closed at once.
        if (track && state.microphone !== track) track.stop();
        if (state.starting === starting) state.starting = null;
      }
    })();
    state.starting = starting;
    return starting;
  }

  async function stop() {
    if (state.starting) await state.starting;
    if (state.pressed || state.latched) return;
    const track = state.microphone;
    state.microphone = null;
    window.ferrocam.microphone = null;
    $('talk').classList.remove('active');
    publish({ sending: false });
    if (!track) return;
    try { if (state.sender) await state.sender.replaceTrack(null); } catch { /* the connection closed */ }
    // Stopped, not just muted: the browser's microphone light goes out when nobody talks.
    track.stop();
    say('Hold Talk to speak through the camera, or tick “keep talking”.');
  }

  function press() {
    state.pressed = true;
    publish({ pressedAt: performance.timeOrigin + performance.now() });
    start();
  }

  function release() {
    if (!state.pressed) return;
    state.pressed = false;
    stop();
  }

  // Talking stops (the connection failed); it is offered again if the connection comes back.
  function suspend() {
    if (state.poll) clearInterval(state.poll);
    if (state.microphone) state.microphone.stop();
    Object.assign(state, { sender: null, microphone: null, latched: false, pressed: false, poll: null, starting: null });
    window.ferrocam.microphone = null;
    publish({ available: false, sending: false, heard: false });
    $('talk').disabled = true;
    $('talk').classList.remove('active');
    $('talk-latch').disabled = true;
    $('talk-latch').checked = false;
  }

  function reset() {
    if (state.poll) clearInterval(state.poll);
    if (state.microphone) state.microphone.stop();
    Object.assign(state, { pc: null, sender: null, microphone: null, latched: false, pressed: false, poll: null, starting: null });
    window.ferrocam.microphone = null;
    window.ferrocam.talk = { available: false, reason: null, sending: false };
    $('talk').disabled = true;
    $('talk').classList.remove('active');
    $('talk-latch').disabled = true;
    $('talk-latch').checked = false;
    say('');
  }

  document.addEventListener('DOMContentLoaded', () => {
    const button = $('talk');
    button.addEventListener('pointerdown', (e) => { e.preventDefault(); press(); });
    for (const end of ['pointerup', 'pointerleave', 'pointercancel']) button.addEventListener(end, release);
    button.addEventListener('keydown', (e) => { if ((e.key === ' ' || e.key === 'Enter') && !e.repeat) press(); });
    button.addEventListener('keyup', (e) => { if (e.key === ' ' || e.key === 'Enter') release(); });
    $('talk-latch').addEventListener('change', (e) => {
      state.latched = e.target.checked;
      if (state.latched) {
        publish({ pressedAt: performance.timeOrigin + performance.now() });
        start();
      } else {
        stop();
      }
    });
  });

  return { prepare, watch, reset, press, release };
})();
