// ferrocam web viewer: staying on the picture when the signaling path or the camera changes.
// Loaded before app.js, whose socket handler and device-list handler call these.
//
// The gateway is only needed to set a session up: media and the control channel flow peer to
// peer. When the WebSocket comes back after a drop (a gateway restart or upgrade, or another
// gateway behind the same address), the page resumes its session there. When the path itself
// breaks (a network change), it asks the camera for an ICE restart. When the camera restarted,
// it watches it again as soon as the camera is back online.
'use strict';

// After the socket came back: tell the (possibly new) gateway which session this page is in,
// so its later messages (hang-up, candidates) reach the device again. Media never stopped.
function resumeSession() {
  const pc = ferrocam.pc;
  if (!ferrocam.session || !pc || ferrocam.whep) return;
  if (pc.connectionState === 'failed' || pc.connectionState === 'closed') return;
  ferrocam.resuming = ferrocam.session;
  send({ type: 'resume', device: ferrocam.device, session: ferrocam.session });
}

// Asks the camera for an ICE restart: its new offer, with fresh ICE credentials, arrives as an
// `offer` for the same session and is answered like the first; the picture goes on meanwhile.
// Only for sessions the camera offered (the page's default), at most once every 3 s.
function restartIce() {
  const pc = ferrocam.pc;
  // While resuming, the `resumed` handler asks once the gateway relays for this session.
  if (!ferrocam.session || !pc || ferrocam.whep || ferrocam.resuming) return false;
  if (!pc.remoteDescription || pc.remoteDescription.type !== 'offer') return false;
  const now = performance.now();
  if (ferrocam.lastIceRestart != null && now - ferrocam.lastIceRestart < 3000) return false;
  // Counted only when it went out: with the socket down, `resumed` asks again.
  if (!send({ type: 'restart_ice', session: ferrocam.session })) return false;
  ferrocam.lastIceRestart = now;
  ferrocam.iceRestarts += 1;
  return true;
}
// A network change (Wi-Fi to mobile data, a VPN coming up) moves this end of the path.
window.addEventListener('online', () => restartIce());

// A camera that restarted (a newer presence epoch than the session's) has forgotten the
// session, whatever the peer connection still says: watch it again as soon as it is online.
function watchAgainIfRestarted(status) {
  if (!status.online || ferrocam.watchedEpoch == null || status.epoch <= ferrocam.watchedEpoch) return;
  const device = status.device;
  ferrocam.restarts += 1;
  showNotice(`${device} restarted; watching again.`);
  watch(device, { keepNotice: true }).catch(watchFailed);
}
