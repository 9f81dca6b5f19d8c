// ferrocam recordings and files: the `files` data channel, straight to the camera. Loaded
// before control.js, which calls FerrocamFiles.attach(pc, control) once the control channel is
// open and FerrocamFiles.detach() when the session ends.
//
// Downloads arrive as binary messages (a 16-byte header: request id and offset, big-endian)
// and are checked against the SHA-256 the camera sends. A download cut off (the connection
// dropped, the tab was busy) is kept, and asking for the same file again continues from the
// bytes already here.
'use strict';

const FILE_HEADER = 16;
const FILE_CHUNK = 64 * 1024 - FILE_HEADER; // a message is at most 64 KiB

class FilesClient {
  constructor(channel) {
    this.channel = channel;
    channel.binaryType = 'arraybuffer';
    this.nextId = 1;
    this.pending = new Map(); // id -> { resolve, reject }
    this.download = null; // { id, file, parts, received, bytes, resolve, reject, onProgress }
    this.queue = Promise.resolve(); // the camera sends one file at a time per channel
    this.uploads = new Map(); // put request id -> { resolve, reject }: until the camera checked it
    channel.onmessage = (event) => this.onMessage(event.data);
    channel.onclose = () => {
      const closed = new Error('the files channel closed');
      for (const p of this.pending.values()) p.reject(closed);
      this.pending.clear();
      if (this.download) this.download.reject(closed);
      this.download = null;
      for (const u of this.uploads.values()) u.reject(closed);
      this.uploads.clear();
    };
  }

  request(cmd, args = {}, timeoutMs = 30000) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { this.pending.delete(id); reject(new Error(`${cmd}: no answer`)); }, timeoutMs);
      this.pending.set(id, {
        resolve: (v) => { clearTimeout(timer); resolve(v); },
        reject: (e) => { clearTimeout(timer); reject(e); },
      });
      this.channel.send(JSON.stringify({ v: 1, id, cmd, ...args }));
    });
  }

  onMessage(data) {
    if (data instanceof ArrayBuffer) return this.onChunk(data);
    let msg;
    try { msg = JSON.parse(data); } catch { return; }
    // An upload's outcome, after its last chunk: { id, file, error? } (no `ok`).
    const upload = this.uploads.get(msg.id);
    if (upload && msg.file && msg.ok === undefined) {
      this.uploads.delete(msg.id);
      if (msg.error) upload.reject(new Error(msg.error)); else upload.resolve(msg.file);
      return;
    }
    const p = this.pending.get(msg.id);
    if (!p) return;
    this.pending.delete(msg.id);
    if (msg.error) {
      const err = new Error(msg.error.message);
      err.code = msg.error.code;
      p.reject(err);
    } else {
      p.resolve(msg.ok !== undefined ? msg.ok : msg);
    }
  }

  onChunk(buffer) {
    const d = this.download;
    if (!d || buffer.byteLength < FILE_HEADER) return;
    const view = new DataView(buffer);
    const id = Number(view.getBigUint64(0));
    const offset = Number(view.getBigUint64(8));
    if (id !== d.id || offset !== d.state.received) return d.reject(new Error('a chunk out of order'));
    // Kept in the caller's state as it arrives, so a download cut off can continue from here.
    d.state.parts.push(new Uint8Array(buffer, FILE_HEADER));
    d.state.received += buffer.byteLength - FILE_HEADER;
    if (d.onProgress) d.onProgress(d.state.received, d.bytes);
    if (d.state.received >= d.bytes) d.resolve();
  }

  // Fetches a whole file (or its thumbnail), continuing from `partial` ({ parts, received })
  // when given. Resolves to { blob, sha256, verified, reply }.
  get(file, { part = 'media', partial = null, onProgress = null } = {}) {
    const run = () => this.fetch(file, part, partial, onProgress);
    const result = this.queue.then(run, run);
    this.queue = result.catch(() => {});
    return result;
  }

  // Sends `data` (a Uint8Array) to the camera as `name`, pacing on bufferedAmount; resolves
  // to the file's id once the camera has checked its SHA-256.
  async put(name, data) {
    const sha256 = await digest(new Blob([data]));
    if (!sha256) throw new Error('uploading needs a page served over HTTPS (to checksum the file)');
    const id = this.nextId; // the id `request` will use
    const checked = new Promise((resolve, reject) => this.uploads.set(id, { resolve, reject }));
    checked.catch(() => {});
    try {
      await this.request('files.put', { name, bytes: data.length, sha256 });
    } catch (e) {
      this.uploads.delete(id);
      throw e;
    }
    const channel = this.channel;
    channel.bufferedAmountLowThreshold = 1 << 20;
    for (let offset = 0; offset < data.length; offset += FILE_CHUNK) {
      if (channel.bufferedAmount > 4 << 20) {
        await new Promise((resolve) => channel.addEventListener('bufferedamountlow', resolve, { once: true }));
      }
      const piece = data.subarray(offset, offset + FILE_CHUNK);
      const message = new Uint8Array(FILE_HEADER + piece.length);
      const view = new DataView(message.buffer);
      view.setBigUint64(0, BigInt(id));
      view.setBigUint64(8, BigInt(offset));
      message.set(piece, FILE_HEADER);
      channel.send(message);
    }
    return { file: await checked, sha256 };
  }

  async fetch(file, part, partial, onProgress) {
    const state = partial || { parts: [], received: 0 };
    const id = this.nextId; // the id `request` will use
    const done = new Promise((resolve, reject) => {
      this.download = { id, file, state, bytes: Infinity, resolve, reject, onProgress };
    });
    done.catch(() => {});
    let reply;
    try {
      reply = await this.request('files.get', { file, part, offset: state.received });
    } catch (e) {
      this.download = null;
      throw e;
    }
    const d = this.download;
    if (!d) throw new Error('the files channel closed');
    d.bytes = reply.bytes;
    if (state.received >= d.bytes) d.resolve();
    try {
      await done;
    } finally {
      if (this.download === d) this.download = null;
    }
    const blob = new Blob(state.parts, { type: reply.mime });
    const sha256 = await digest(blob);
    return { blob, sha256, verified: sha256 === null ? null : sha256 === reply.sha256, reply };
  }
}

// SHA-256 (hex) of a Blob; null where the browser offers no hashing (a page not served over
// HTTPS or from localhost has no crypto.subtle).
async function digest(blob) {
  if (!(window.crypto && crypto.subtle)) return null;
  const hash = await crypto.subtle.digest('SHA-256', await blob.arrayBuffer());
  return Array.from(new Uint8Array(hash), (b) => b.toString(16).padStart(2, '0')).join('');
}

// ── the panel ────────────────────────────────────────────────────────────────

const FerrocamFiles = (() => {
  const $ = (id) => document.getElementById(id);
  const state = {
    client: null,
    control: null,
    pc: null,
    role: 'view',
    partial: new Map(), // file id -> { parts, received }: downloads to continue
    thumbs: new Map(), // file id -> object URL
    lastDownload: null, // for tests: { file, bytes, sha256, verified, resumedFrom, ms }
    timer: null,
  };

  const size = (bytes) => bytes >= 1 << 20 ? `${(bytes / (1 << 20)).toFixed(1)} MB` : `${Math.max(1, Math.round(bytes / 1024))} kB`;
  const when = (id) => {
    const m = /^[a-z]+-(\d{4})(\d\d)(\d\d)-(\d\d)(\d\d)(\d\d)-(\d{3})$/.exec(id);
    return m ? new Date(Date.UTC(m[1], m[2] - 1, m[3], m[4], m[5], m[6], m[7])).toLocaleString() : id;
  };
  const say = (text) => { $('transfer').textContent = text; };

  function el(tag, props = {}, children = []) {
    const { dataset = {}, ...rest } = props;
    const node = Object.assign(document.createElement(tag), rest);
    Object.assign(node.dataset, dataset);
    node.append(...children);
    return node;
  }

  // Opens the files channel on a connected session and shows the panel.
  async function attach(pc, control) {
    state.pc = pc;
    state.control = control;
    state.role = await sessionRole();
    open();
    $('files-panel').hidden = false;
    const controls = state.role === 'control';
    for (const id of ['record', 'keep-snapshot']) $(id).hidden = !controls;
    refreshRecordState();
    clearInterval(state.timer);
    state.timer = setInterval(refreshRecordState, 3000);
  }

  function open() {
    const channel = state.pc.createDataChannel('files');
    const client = new FilesClient(channel);
    channel.addEventListener('open', () => {
      if (state.pc && channel === client.channel) { state.client = client; list(); }
    });
  }

  function detach() {
    clearInterval(state.timer);
    if (state.client) state.client.channel.close();
    state.client = null;
    state.pc = null;
    $('files-panel').hidden = true;
    $('recordings').replaceChildren();
    $('gallery').replaceChildren();
  }

  async function list() {
    if (!state.client) return;
    try {
      const { files } = await state.client.request('files.list', { limit: 50 });
      renderList(files);
    } catch (e) {
      say(`Could not list the camera's files: ${e.message}`);
    }
  }

  function renderList(files) {
    const controls = state.role === 'control';
    const rows = files.filter((f) => f.kind === 'recording').map((f) => {
      const thumb = el('img', { alt: '', className: 'thumb' });
      if (f.thumbnail) thumbnail(f.id, thumb);
      const buttons = [
        el('button', { type: 'button', textContent: 'Play', onclick: () => play(f) }),
        el('button', { type: 'button', textContent: 'Download', onclick: () => save(f) }),
      ];
      if (controls) buttons.push(el('button', { type: 'button', textContent: 'Delete', onclick: () => remove(f) }));
      const seconds = Math.round((f.duration_ms || 0) / 1000);
      const label = `${when(f.id)} · ${seconds} s · ${size(f.bytes)}${f.recovered ? ' · cut short' : ''}`;
      return el('li', { className: 'file', dataset: { id: f.id } }, [thumb, el('span', { textContent: label }), ...buttons]);
    });
    $('recordings').replaceChildren(...rows);
    $('no-recordings').hidden = rows.length > 0;
    const shots = files.filter((f) => f.kind === 'snapshot').map((f) => {
      const img = el('img', { alt: when(f.id), title: when(f.id), className: 'thumb' });
      if (f.thumbnail) thumbnail(f.id, img);
      const open = el('button', { type: 'button', className: 'shot', onclick: () => save(f) }, [img]);
      return el('span', { className: 'file', dataset: { id: f.id } }, [open]);
    });
    $('gallery').replaceChildren(...shots);
  }

  async function thumbnail(id, img) {
    if (!state.thumbs.has(id)) {
      const { blob } = await state.client.get(id, { part: 'thumbnail' });
      state.thumbs.set(id, URL.createObjectURL(blob));
    }
    img.src = state.thumbs.get(id);
  }

  // The whole file, continuing a download that was cut off; says so when it does not check out.
  async function fetchWhole(f) {
    const partial = state.partial.get(f.id) || { parts: [], received: 0 };
    state.partial.set(f.id, partial);
    const resumedFrom = partial.received;
    const started = performance.now();
    const result = await state.client.get(f.id, {
      partial,
      onProgress: (got, total) => say(`Fetching ${when(f.id)}: ${size(got)} of ${size(total)}`),
    });
    state.partial.delete(f.id);
    const ms = Math.round(performance.now() - started);
    state.lastDownload = { file: f.id, bytes: result.blob.size, sha256: result.sha256, verified: result.verified, resumedFrom, ms };
    if (result.verified === false) throw new Error('the file arrived damaged (its SHA-256 does not match); try again');
    const check = result.verified ? 'checked' : 'not checked: this page is not served over HTTPS';
    say(`${when(f.id)}: ${size(result.blob.size)} in ${(ms / 1000).toFixed(1)} s (${check}).`);
    return result.blob;
  }

  async function play(f) {
    try {
      const blob = await fetchWhole(f);
      const video = $('playback');
      if (video.src) URL.revokeObjectURL(video.src);
      video.src = URL.createObjectURL(blob);
      video.hidden = false;
      await video.play().catch(() => {});
    } catch (e) { say(`Could not play it: ${e.message}`); }
  }

  async function save(f) {
    try {
      const blob = await fetchWhole(f);
      const ext = f.kind === 'recording' ? 'mp4' : f.kind === 'snapshot' ? 'jpg' : 'bin';
      const a = el('a', { href: URL.createObjectURL(blob), download: `${f.id}.${ext}` });
      document.body.append(a);
      a.click();
      a.remove();
      setTimeout(() => URL.revokeObjectURL(a.href), 60000);
    } catch (e) { say(`Could not download it: ${e.message}`); }
  }

  async function remove(f) {
    try {
      await state.client.request('files.delete', { file: f.id });
      say(`Deleted ${when(f.id)}.`);
      list();
    } catch (e) { say(`Could not delete it: ${e.message}`); }
  }

  async function toggleRecording() {
    const recording = $('record').dataset.recording === 'true';
    try {
      await state.control.request(recording ? 'record.stop' : 'record.start');
    } catch (e) { say(`Recording: ${e.message}`); }
    refreshRecordState();
    if (recording) setTimeout(list, 1500);
  }

  async function keepSnapshot() {
    try {
      await state.client.request('files.snapshot');
      list();
    } catch (e) { say(`Could not keep a snapshot: ${e.message}`); }
  }

  async function refreshRecordState() {
    if (!state.control) return;
    let status;
    try { status = await state.control.request('status'); } catch { return; }
    const rec = status.recording;
    const button = $('record');
    button.disabled = !rec;
    button.dataset.recording = String(Boolean(rec && rec.recording));
    button.textContent = rec && rec.recording ? 'Stop recording' : 'Record';
    $('record-state').textContent = !rec ? 'This camera keeps no recordings.'
      : rec.paused ? `Not recording: ${rec.paused}`
        : rec.recording ? `Recording (${rec.mode === 'continuous' ? 'all the time' : 'on request'})` : '';
  }

  document.addEventListener('DOMContentLoaded', () => {
    $('record').onclick = toggleRecording;
    $('keep-snapshot').onclick = keepSnapshot;
    $('files-refresh').onclick = list;
  });

  return { attach, detach, list, fetchWhole, reopen: open, state };
})();
window.FerrocamFiles = FerrocamFiles;
