// ferrocam web viewer: the camera list and what is being watched. Loaded before app.js, which
// calls these when presence changes.
'use strict';

// The list is updated in place, one item per device, so a presence update arriving while the
// user presses a button does not swap the button out from under the pointer (the click would
// be lost).
function renderDevices() {
  const list = $('devices');
  $('no-devices').hidden = ferrocam.devices.length > 0;
  const existing = new Map([...list.children].map((item) => [item.dataset.device, item]));
  const items = ferrocam.devices.map((d) => {
    const item = existing.get(d.device) || newDeviceItem(d.device);
    updateDeviceItem(item, d);
    return item;
  });
  // Touch the list itself only when devices came, went or moved: detaching a button, even to
  // put it back, would cancel a press in progress.
  const unchanged = items.length === list.children.length
    && items.every((item, i) => list.children[i] === item);
  if (!unchanged) list.replaceChildren(...items);
}

function newDeviceItem(device) {
  const item = document.createElement('li');
  item.dataset.device = device;
  const button = document.createElement('button');
  button.type = 'button';
  button.className = 'device';
  button.dataset.device = device;
  const dot = document.createElement('span');
  const name = document.createElement('span');
  name.className = 'name';
  name.textContent = device;
  const meta = document.createElement('span');
  meta.className = 'meta';
  button.append(dot, name, meta);
  // Clicking the camera already playing (or connecting) keeps it; after an error it retries.
  button.onclick = () => {
    const pc = ferrocam.pc;
    const live = pc && ['new', 'connecting', 'connected'].includes(pc.connectionState);
    if (ferrocam.device === device && live && !ferrocam.lastError) return;
    watch(device).catch(watchFailed);
  };
  // A still picture without watching: the device wakes an idle camera for it, and a picture
  // at most two seconds old is reused rather than waking it again.
  const still = document.createElement('button');
  still.type = 'button';
  still.className = 'still';
  still.textContent = 'Snapshot';
  still.title = `A still picture from ${device}, without watching`;
  const picture = document.createElement('a');
  picture.className = 'still-picture';
  picture.target = '_blank';
  picture.hidden = true;
  picture.append(document.createElement('img'));
  const note = document.createElement('span');
  note.className = 'still-note';
  still.onclick = () => takeStill(device, still, picture, note);
  item.append(button, still, picture, note);
  return item;
}

async function takeStill(device, still, picture, note) {
  still.disabled = true;
  note.textContent = 'Taking a snapshot…';
  try {
    const url = `/api/devices/${encodeURIComponent(device)}/snapshot.jpg?width=640&max_age_ms=2000`;
    const response = await fetch(url);
    if (!response.ok) {
      const body = await response.json().catch(() => ({}));
      const why = body.error && body.error.message ? body.error.message : `HTTP ${response.status}`;
      throw new Error(why);
    }
    const blob = await response.blob();
    if (picture.href) URL.revokeObjectURL(picture.href);
    picture.href = URL.createObjectURL(blob);
    const img = picture.firstElementChild;
    await new Promise((resolve, reject) => {
      img.onload = resolve;
      img.onerror = () => reject(new Error('the picture could not be shown'));
      img.src = picture.href;
    });
    img.alt = `Snapshot of ${device}`;
    picture.hidden = false;
    const taken = response.headers.get('last-modified');
    note.textContent = taken ? `Taken ${new Date(taken).toLocaleTimeString()}` : '';
    ferrocam.lastStill = { device, width: img.naturalWidth, height: img.naturalHeight, bytes: blob.size };
  } catch (e) {
    note.textContent = `No snapshot: ${e.message}`;
  } finally {
    still.disabled = false;
  }
}

function updateDeviceItem(item, d) {
  const button = item.firstElementChild;
  const [dot, , meta] = button.children;
  const video = d.capabilities && d.capabilities.video;
  const camera = d.capabilities && d.capabilities.camera;
  button.disabled = !d.online;
  item.querySelector('.still').disabled = !d.online;
  button.setAttribute('aria-pressed', String(d.device === ferrocam.device));
  dot.className = `dot${d.online ? ' online' : ''}`;
  meta.textContent = !d.online ? 'offline'
    : camera && camera.state === 'unavailable' ? `camera unavailable: ${camera.reason}`
      : (video ? `${video.width}×${video.height} @ ${video.fps} fps · ${video.encoder}` : 'online');
}

function renderNowWatching() {
  const el = $('now-watching');
  if (!ferrocam.device) { el.textContent = 'Not watching'; return; }
  const state = ferrocam.pc ? ferrocam.pc.connectionState : 'closed';
  el.textContent = `${ferrocam.device} · ${state}`;
}
