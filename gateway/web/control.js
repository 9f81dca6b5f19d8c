// ferrocam control panel: the `control` data channel, and the panel built from what the
// camera advertises. Loaded before app.js; app.js calls attachControl(pc, device) per session.
'use strict';

// Requests over the data channel, matched to responses by id. A snapshot's response is
// followed by base64 chunks, reassembled into a Blob.
class ControlClient {
  constructor(channel) {
    this.channel = channel;
    this.nextId = 1;
    this.pending = new Map(); // id -> { resolve, reject, snapshot? }
    channel.onmessage = (event) => this.onMessage(event.data);
    channel.onclose = () => {
      for (const p of this.pending.values()) p.reject(new Error('control channel closed'));
      this.pending.clear();
    };
  }

  request(cmd, args = {}, timeoutMs = 10000) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`${cmd}: no answer`));
      }, timeoutMs);
      this.pending.set(id, {
        resolve: (v) => { clearTimeout(timer); resolve(v); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      this.channel.send(JSON.stringify({ v: 1, id, cmd, ...args }));
    });
  }

  onMessage(text) {
    let msg;
    try { msg = JSON.parse(text); } catch { return; }
    const p = this.pending.get(msg.id);
    if (!p) return;
    if (msg.chunk !== undefined) {
      p.snapshot.parts[msg.chunk] = Uint8Array.from(atob(msg.data), (c) => c.charCodeAt(0));
      if (p.snapshot.parts.filter(Boolean).length === msg.chunks) {
        this.pending.delete(msg.id);
        p.resolve({ ...p.snapshot.reply, blob: new Blob(p.snapshot.parts, { type: 'image/jpeg' }) });
      }
      return;
    }
    if (msg.error) {
      this.pending.delete(msg.id);
      const err = new Error(`${msg.error.code}: ${msg.error.message}`);
      err.code = msg.error.code;
      p.reject(err);
    } else if (msg.ok && msg.ok.mime === 'image/jpeg' && msg.ok.chunks > 0) {
      p.snapshot = { reply: msg.ok, parts: new Array(msg.ok.chunks) };
    } else {
      this.pending.delete(msg.id);
      p.resolve(msg.ok);
    }
  }
}

// ── Panel ────────────────────────────────────────────────────────────────────

const BITRATES = [300, 800, 2000, 4000];
const SIZES = [[640, 360], [1280, 720], [1920, 1080]];
const PTZ_PAD = [['up', '▲'], ['left', '◀'], ['right', '▶'], ['down', '▼'], ['zoom_in', '+'], ['zoom_out', '−']];

// The role this page's sessions get (`/api/me`: the user's, capped by the gateway's --role).
// A `view` session may watch and read but not change anything, so it gets no widgets that
// would only be refused. Unknown counts as `view`: the device enforces the role anyway.
async function sessionRole() {
  if (!window.ferrocam.me) {
    try {
      // Bounded, like every other request the panel waits on.
      const signal = AbortSignal.timeout ? AbortSignal.timeout(5000) : undefined;
      const response = await fetch('/api/me', { signal });
      if (response.ok) window.ferrocam.me = await response.json();
    } catch { /* the gateway is restarting */ }
  }
  return (window.ferrocam.me && window.ferrocam.me.role) || 'view';
}

// The PTZ directions the device maps. Devices that list them (`ptz_actions`) get only those;
// older ones say only `ptz: true`, which means some of the six.
function ptzActions(capabilities) {
  if (!capabilities || !capabilities.ptz) return [];
  const mapped = capabilities.ptz_actions;
  return PTZ_PAD.filter(([action]) => !Array.isArray(mapped) || mapped.includes(action));
}

function el(tag, props = {}, ...children) {
  const node = Object.assign(document.createElement(tag), props);
  node.append(...children);
  return node;
}

function panelMessage(text, refused) {
  const box = document.getElementById('panel-message');
  box.textContent = text;
  box.className = refused ? 'refused' : 'muted';
  if (refused) window.ferrocam.lastRefusal = text;
}

// Runs a command from a panel control and reports the outcome next to the panel.
async function act(label, cmd, args) {
  try {
    await window.ferrocam.control.request(cmd, args);
    panelMessage(`${label}: done`, false);
    return true;
  } catch (e) {
    panelMessage(`${label} refused — ${e.message}`, true);
    return false;
  }
}

async function takeSnapshot() {
  const control = window.ferrocam.control;
  if (!control) return;
  try {
    const shot = await control.request('snapshot');
    const bytes = new Uint8Array(await shot.blob.arrayBuffer());
    window.ferrocam.lastSnapshot = { width: shot.width, height: shot.height, bytes: bytes.length, magic: [bytes[0], bytes[1]] };
    const url = URL.createObjectURL(shot.blob);
    const link = document.getElementById('snapshot-link');
    link.href = url;
    link.download = `${window.ferrocam.device}-${new Date().toISOString().replace(/[:.]/g, '-')}.jpg`;
    link.hidden = false;
    document.getElementById('snapshot-img').src = url;
    panelMessage(`Snapshot ${shot.width}×${shot.height}, ${Math.round(bytes.length / 1024)} KiB`, false);
  } catch (e) {
    panelMessage(`Snapshot refused — ${e.message}`, true);
  }
}

function select(id, options, current, onChange) {
  const s = el('select', { id });
  for (const [value, label] of options) s.append(el('option', { value, textContent: label }));
  if (current !== undefined) s.value = String(current);
  s.onchange = () => onChange(s.value);
  return s;
}

async function buildPanel(capabilities) {
  const panel = document.getElementById('panel');
  const control = window.ferrocam.control;
  // Asked all at once: each answer may take up to its timeout, and one slow answer must not
  // hold the others' sections back. (Caught here so that a refusal is not "unhandled" before
  // its turn below comes.)
  const role = sessionRole();
  const controlsAsked = control.request('controls.list');
  const gpioAsked = control.request('gpio.list');
  controlsAsked.catch(() => {});
  gpioAsked.catch(() => {});
  const canControl = (await role) === 'control';
  panel.replaceChildren();
  panel.hidden = false;
  const video = (capabilities && capabilities.video) || {};

  const stream = el('fieldset', {}, el('legend', { textContent: 'Stream' }));
  if (canControl) {
    stream.append(el('label', {}, 'Bitrate ', select('bitrate', BITRATES.map((b) => [b, `${b} kbit/s`]), video.bitrate_kbps,
      (v) => act('Bitrate', 'video.set', { bitrate_kbps: Number(v) }))));
    stream.append(el('label', {}, 'Size ', select('size', SIZES.map(([w, h]) => [`${w}x${h}`, `${w}×${h}`]), `${video.width}x${video.height}`,
      (v) => { const [w, h] = v.split('x').map(Number); act('Size', 'video.set', { width: w, height: h }); })));
  } else {
    stream.append(el('span', { className: 'muted', textContent: `${video.bitrate_kbps} kbit/s · ${video.width}×${video.height}` }));
  }
  stream.append(el('button', { type: 'button', id: 'snapshot', textContent: 'Snapshot', onclick: takeSnapshot }));
  stream.append(el('a', { id: 'snapshot-link', hidden: true, textContent: 'Download' }));
  panel.append(stream);

  try {
    const controls = await controlsAsked;
    if (controls.length) {
      const box = el('fieldset', {}, el('legend', { textContent: 'Camera' }));
      // A view session sees the settings but cannot move them.
      const disabled = !canControl;
      for (const c of controls) {
        if (c.kind === 'boolean') {
          const input = el('input', { type: 'checkbox', checked: c.value !== 0, disabled });
          input.onchange = () => act(c.name, 'controls.set', { control: c.id, value: input.checked ? 1 : 0 });
          box.append(el('label', {}, input, ` ${c.name}`));
        } else if (c.menu && c.menu.length) {
          const input = select(`control-${c.id}`, c.menu.map((m) => [m.value, m.name]), c.value,
            (v) => act(c.name, 'controls.set', { control: c.id, value: Number(v) }));
          input.disabled = disabled;
          box.append(el('label', {}, `${c.name} `, input));
        } else if (c.kind === 'integer') {
          const input = el('input', { type: 'range', min: c.minimum, max: c.maximum, step: Math.max(1, c.step), value: c.value, disabled });
          input.onchange = () => act(c.name, 'controls.set', { control: c.id, value: Number(input.value) });
          box.append(el('label', { className: 'slider' }, `${c.name} `, input));
        }
      }
      panel.append(box);
    }
  } catch (e) { panelMessage(`Camera controls unavailable — ${e.message}`, false); }

  try {
    const lines = await gpioAsked;
    if (lines.length) {
      const box = el('fieldset', {}, el('legend', { textContent: 'GPIO' }));
      for (const line of lines) {
        const input = el('input', { type: 'checkbox', checked: line.value, disabled: !canControl || line.direction !== 'output' });
        input.dataset.gpio = line.name;
        input.onchange = async () => {
          if (!(await act(line.name, 'gpio.set', { name: line.name, value: input.checked }))) input.checked = !input.checked;
        };
        box.append(el('label', {}, input, ` ${line.name} (${line.direction})`));
      }
      panel.append(box);
    }
  } catch (e) { panelMessage(`GPIO unavailable — ${e.message}`, false); }

  const ptz = canControl ? ptzActions(capabilities) : [];
  if (ptz.length) {
    const pad = el('fieldset', { className: 'ptz' }, el('legend', { textContent: 'Pan / tilt / zoom' }));
    for (const [action, label] of ptz) {
      pad.append(el('button', { type: 'button', textContent: label, title: action, onclick: () => act(action, 'ptz', { action }) }));
    }
    panel.append(pad);
  }
  panel.append(el('p', {
    id: 'panel-message',
    className: 'muted',
    textContent: canControl ? '' : 'View only: this session can watch and take snapshots, not change settings.',
  }));
  panel.append(el('img', { id: 'snapshot-img', alt: '' }));
}

// Opens the control channel on a new peer connection (before the offer, so it is negotiated).
// `channel` is the device's, when the device made the offer; otherwise the page opens one.
function attachControl(pc, device, channel = pc.createDataChannel('control')) {
  const client = new ControlClient(channel);
  let ready = false;
  const onOpen = () => {
    if (ready || window.ferrocam.pc !== pc) return;
    ready = true;
    window.ferrocam.control = client;
    const status = window.ferrocam.devices.find((d) => d.device === device);
    buildPanel(status && status.capabilities).catch(() => {});
    FerrocamFiles.attach(pc, client).catch(() => {});
  };
  // A channel announced by the other side may already be open when it reaches us.
  channel.addEventListener('open', onOpen);
  if (channel.readyState === 'open') onOpen();
}

function detachControl() {
  window.ferrocam.control = null;
  FerrocamFiles.detach();
  const panel = document.getElementById('panel');
  panel.replaceChildren();
  panel.hidden = true;
}
