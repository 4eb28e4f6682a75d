// The VAS console: every camera of this node (live and recorded) in one page.
//
// Plain ES module, no build step and no framework: read it as it is served.  The HTTP contract it
// speaks is the exporter's (docs/api.md): status from /v2/console/streams (open, polled every 2 s),
// video from the viewer-scope routes with the token as a bearer header (never in a URL, so it stays
// out of logs and history).  Everything from the node is shown with textContent, never as HTML.

const STATUS_URL = '/v2/console/streams';
const POLL_MS = 2000;            // a camera in error shows within 5 s: one poll plus the node's own lag
const STATUS_TIMEOUT_MS = 1800;  // a hung node is reported, not waited for
const THUMB_EVERY_MS = 10000;    // thumbnails of tiles that are not playing live
const LIVE_RETRY_MS = 10000;     // after a live view failed
const MAX_LIVE = 16;             // decoders are the browser's scarce resource: 100 cameras, 16 live
const TOKEN_KEY = 'vas.viewer-token';

const $ = (id) => document.getElementById(id);
const grid = $('grid');
const tiles = new Map();         // stream id -> Tile, in the node's order
let node = { name: '', fleet: false };
let token = sessionStorage.getItem(TOKEN_KEY) || '';
let authBlocked = false;         // a 401/403 stops video requests until a new token is given

// ---------------------------------------------------------------- formatting (pure)

/** "1 h 02 m", "35 s"; an em dash for unknown. */
export function duration(seconds) {
  if (seconds == null || !Number.isFinite(seconds)) return '–';
  const s = Math.max(0, Math.floor(seconds));
  const d = Math.floor(s / 86400), h = Math.floor(s / 3600) % 24, m = Math.floor(s / 60) % 60;
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${String(m).padStart(2, '0')} m`;
  if (m) return `${m} m ${String(s % 60).padStart(2, '0')} s`;
  return `${s} s`;
}

/** "12.3 MiB" */
export function bytes(n) {
  if (n == null || !Number.isFinite(n)) return '–';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/** Local wall-clock time "2026-11-28 14:02:11" of a unix time (what the range inputs show). */
export function clock(unix) {
  const t = new Date(unix * 1000);
  const p = (v) => String(v).padStart(2, '0');
  return `${t.getFullYear()}-${p(t.getMonth() + 1)}-${p(t.getDate())} ${p(t.getHours())}:${p(t.getMinutes())}:${p(t.getSeconds())}`;
}

/** Unix seconds from what an operator typed: unix seconds, local "YYYY-MM-DD HH:MM:SS" or ISO 8601. */
export function parseTime(text) {
  const v = text.trim();
  if (/^\d+(\.\d+)?$/.test(v)) return Number(v);
  const ms = Date.parse(v.replace(' ', 'T'));
  return Number.isNaN(ms) ? null : ms / 1000;
}

/** Restarts after a failure (exit or stall), when the node says; else every restart. */
function failures(s) {
  return s.failures ?? s.restarts ?? 0;
}

/**
 * The state a tile shows.  A camera that is down cycles error -> initializing (the retry) -> error;
 * a poll that lands in the retry must still say error, or a 2 s poll can alias with the backoff
 * and show a dead camera as starting for as long as it likes.  So: initializing after a failure
 * since the last poll, or after error, is shown as error until the stream is up again.
 */
export function shownState(s, last) {
  if (s.state !== 'initializing' || !last) return s.state;
  return last.state === 'error' || failures(s) > last.failures ? 'error' : s.state;
}

/** An http(s) URL as a link target; anything else (javascript:, data:, garbage) is no link at all. */
export function safeHref(text) {
  try {
    const url = new URL(text);
    return url.protocol === 'http:' || url.protocol === 'https:' ? url.href : '';
  } catch {
    return '';
  }
}

function video(s) {
  const size = s.width && s.height ? `${s.width}×${s.height}` : '';
  return [s.codec, size].filter(Boolean).join(' ') || '–';
}

function bitrate(kbps) {
  if (kbps == null) return '–';
  return kbps >= 1000 ? `${(kbps / 1000).toFixed(1)} Mb/s` : `${Math.round(kbps)} kb/s`;
}

/** The text of an error answer: its JSON "error", else its status line. */
async function errorText(resp) {
  try {
    const body = await resp.json();
    if (body && typeof body.error === 'string') return body.error;
  } catch { /* not JSON: fall through */ }
  return `HTTP ${resp.status} ${resp.statusText}`.trim();
}

const enc = encodeURIComponent;

// ---------------------------------------------------------------- token and auth

function bearer() { return { Authorization: `Bearer ${token}` }; }

/** fetch() for the viewer routes; a 401/403 is shown once for the page and thrown. */
async function viewerFetch(url) {
  if (!token) { showAuth(0, 'no token was given'); throw new Error('no viewer token'); }
  if (authBlocked) throw new Error('the node refused the token');
  const resp = await fetch(url, { headers: bearer(), cache: 'no-store' });
  if (resp.status === 401 || resp.status === 403) {
    showAuth(resp.status, await errorText(resp));
    throw new Error(`HTTP ${resp.status}`);
  }
  return resp;
}

/** Why video is not shown, and how to get a token; stops every video request until a new token. */
function showAuth(status, why) {
  const what = status === 403
    ? `This token may not view video (403: ${why}). It needs the viewer scope.`
    : status === 401
      ? `The node refused the token (401: ${why}). Live views, thumbnails and recordings need a viewer token.`
      : `No viewer token: live views, thumbnails and recordings need one (${why}).`;
  $('auth-why').textContent = what;
  $('auth').hidden = false;
  if (status) authBlocked = true;
  for (const tile of tiles.values()) tile.stopLive();
  if ($('recordings').hidden) $('token-form').hidden = false;
}

function askToken() {
  $('token-form').hidden = false;
  $('token-input').value = '';
  $('token-input').focus();
}

function useToken(value) {
  token = value.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  authBlocked = false;
  $('auth').hidden = true;
  $('token-form').hidden = true;
  for (const tile of tiles.values()) tile.thumbAt = 0;
  schedule();
}

// ---------------------------------------------------------------- one tile

class Tile {
  constructor(id) {
    this.id = id;
    this.el = $('tile-template').content.firstElementChild.cloneNode(true);
    this.el.dataset.stream = id;
    this.f = {};
    for (const key of ['name', 'state', 'uptime', 'restarts', 'fps', 'bitrate', 'video', 'recorded', 'oldest',
      'viewers', 'error', 'owner', 'picture', 'thumb', 'live', 'nopic']) this.f[key] = this.el.querySelector(`[data-f="${key}"]`);
    this.f.ownerLink = this.el.querySelector('[data-f="owner-link"]');
    this.f.ownerLink.addEventListener('click', (ev) => ev.stopPropagation());
    this.el.setAttribute('aria-label', `camera ${id}: open its recordings`);
    this.el.addEventListener('click', () => openRecordings(this.id));
    this.el.addEventListener('keydown', (ev) => {
      // preventDefault: the keypress would otherwise reach the dialog's focused Close button and click it
      if (ev.key === 'Enter' && ev.target === this.el) { ev.preventDefault(); openRecordings(this.id); }
    });
    this.f.live.addEventListener('playing', () => this.f.picture.classList.add('playing'));
    this.visible = false; this.near = false; this.remote = false; this.canLive = false; this.hasVideo = false;
    this.hls = null; this.thumbAt = 0; this.thumbUrl = null; this.liveFailedAt = 0;
  }

  set(key, text) {
    if (this.f[key].textContent !== text) this.f[key].textContent = text;
  }

  update(s) {
    this.set('name', s.name || s.id);
    const state = shownState(s, this.last);
    this.last = { state, failures: failures(s) };
    this.set('state', state);
    this.f.state.className = `state ${String(state).replace(/[^a-z]/g, '')}`;
    this.f.state.title = state === s.state ? '' : `failed, retrying (the node says ${s.state})`;
    this.el.classList.toggle('failing', state === 'error');
    this.set('uptime', duration(s.uptime_seconds));
    this.set('restarts', String(s.restarts ?? '–'));
    this.set('fps', s.fps == null ? '–' : Number(s.fps).toFixed(1));
    this.set('bitrate', bitrate(s.bitrate_kbps));
    this.set('video', video(s));
    const rec = s.recording || {};
    this.set('recorded', bytes(rec.bytes));
    this.set('oldest', rec.oldest_at ? `${duration(Date.now() / 1000 - rec.oldest_at)} ago` : '–');
    this.f.oldest.title = rec.oldest_at ? clock(rec.oldest_at) : '';
    this.set('viewers', String(s.viewers ?? '–'));
    this.set('error', s.last_error || '');
    this.f.error.title = s.last_error || '';
    this.owner(s.owner);
    this.canLive = !this.remote && (s.state === 'live' || s.state === 'ready');
    this.hasVideo = this.canLive || (!this.remote && rec.newest_at != null);
  }

  /** Fleet mode: where the stream runs, linked to that node's console (http(s) links only). */
  owner(owner) {
    this.remote = Boolean(owner && owner.node !== node.name);
    this.f.owner.hidden = !(node.fleet && owner);
    if (!owner) return;
    this.f.ownerLink.textContent = owner.node;
    const href = safeHref(owner.console_url);
    if (href) this.f.ownerLink.href = href; else this.f.ownerLink.removeAttribute('href');
  }

  wantsLive() {
    return this.visible && this.canLive && token && !authBlocked && window.Hls && window.Hls.isSupported()
      && Date.now() - this.liveFailedAt > LIVE_RETRY_MS;
  }

  startLive() {
    if (this.hls) return;
    const Hls = window.Hls;
    const hls = new Hls({
      xhrSetup: (xhr) => xhr.setRequestHeader('Authorization', `Bearer ${token}`),
      maxBufferLength: 8, backBufferLength: 4, liveSyncDurationCount: 2,
    });
    hls.on(Hls.Events.ERROR, (_ev, data) => {
      const code = data.response && data.response.code;
      if (code === 401 || code === 403) showAuth(code, 'while loading the live view');
      if (data.fatal) { this.liveFailedAt = Date.now(); this.stopLive(); }
    });
    hls.on(Hls.Events.MANIFEST_PARSED, () => this.f.live.play().catch(() => {}));
    hls.loadSource(`/v2/streams/${enc(this.id)}/live.m3u8`);
    hls.attachMedia(this.f.live);
    this.hls = hls;
  }

  stopLive() {
    if (!this.hls) return;
    this.hls.destroy();
    this.hls = null;
    this.thumbAt = 0;  // the picture where the live view was: a fresh thumbnail now
    this.f.picture.classList.remove('playing');
    this.f.live.removeAttribute('src');
    this.f.live.load();
  }

  /** The newest keyframe as a thumbnail, fetched with the token as a blob (an <img src> cannot send it). */
  async refreshThumb() {
    this.thumbAt = Date.now();
    try {
      const resp = await viewerFetch(`/v2/streams/${enc(this.id)}/snapshot.jpg`);
      if (!resp.ok) { this.f.nopic.textContent = resp.status === 404 ? 'no picture yet' : await errorText(resp); return; }
      const url = URL.createObjectURL(await resp.blob());
      this.f.thumb.src = url;
      this.f.nopic.hidden = true;
      if (this.thumbUrl) URL.revokeObjectURL(this.thumbUrl);
      this.thumbUrl = url;
    } catch { /* shown by viewerFetch (auth) or kept as it was (network) */ }
  }
}

// ---------------------------------------------------------------- the grid

const seen = new IntersectionObserver((entries) => {
  for (const e of entries) tileOf(e.target).visible = e.isIntersecting;
  schedule();
});
const nearby = new IntersectionObserver((entries) => {
  for (const e of entries) tileOf(e.target).near = e.isIntersecting;
  schedule();
}, { rootMargin: '100% 0px' });

function tileOf(el) { return tiles.get(el.dataset.stream); }

/** Live views for on-screen tiles (at most MAX_LIVE), thumbnails for the tiles around them. */
function schedule() {
  let live = 0;
  for (const tile of tiles.values()) {
    if (tile.wantsLive() && live < MAX_LIVE) { tile.startLive(); live += 1; } else tile.stopLive();
  }
  const now = Date.now();
  for (const tile of tiles.values()) {
    if (tile.near && tile.hasVideo && !tile.hls && token && !authBlocked && now - tile.thumbAt > THUMB_EVERY_MS) {
      tile.refreshThumb();
    }
  }
}

function render(data) {
  node = data.node || node;
  $('node-name').textContent = node.name ? `· ${node.name}${node.fleet ? ' (fleet)' : ''}` : '';
  const ids = data.streams.map((s) => s.id);
  for (const [id, tile] of tiles) {
    if (!ids.includes(id)) { tile.stopLive(); seen.unobserve(tile.el); nearby.unobserve(tile.el); tile.el.remove(); tiles.delete(id); }
  }
  let reorder = false;
  for (const s of data.streams) {
    let tile = tiles.get(s.id);
    if (!tile) { tile = new Tile(s.id); tiles.set(s.id, tile); reorder = true; }
    tile.update(s);
  }
  if (reorder) {
    grid.append(...data.streams.map((s) => tiles.get(s.id).el));
    for (const tile of tiles.values()) { seen.observe(tile.el); nearby.observe(tile.el); }
  }
  const count = (state) => data.streams.filter((s) => s.state === state).length;
  if (!performance.getEntriesByName('vas-first-render').length) {
    performance.mark('vas-first-render');  // bench/console_page.py reads it
    loadHls();
  }
  $('summary').textContent = `${ids.length} cameras: ${count('live')} live, ${count('error')} in error`
    + ` · updated ${clock(data.generated_at || Date.now() / 1000).slice(11)}`;
  schedule();
}

let statusFailedSince = null;

async function poll() {
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), STATUS_TIMEOUT_MS);
  try {
    const resp = await fetch(STATUS_URL, { signal: ctl.signal, cache: 'no-store', headers: token ? bearer() : {} });
    if (!resp.ok) throw new Error(`HTTP ${resp.status}: ${await errorText(resp)}`);
    const data = await resp.json();
    render(data);
    statusFailedSince = null;
    $('status-error').hidden = !data.stale;
    if (data.stale) $('status-error').textContent = "The agent has not reported recently: the tiles show its last word.";
  } catch (err) {
    statusFailedSince = statusFailedSince || Date.now() / 1000;
    $('status-error').textContent = `Cannot read the node's status since ${clock(statusFailedSince).slice(11)}`
      + ` (${err.name === 'AbortError' ? 'no answer' : err.message}): the tiles show the last known state.`;
    $('status-error').hidden = false;
  } finally {
    clearTimeout(timer);
    setTimeout(poll, POLL_MS);
  }
}

// ---------------------------------------------------------------- recordings of one camera

const rec = { id: null, hls: null, timeline: null, from: 0, to: 0, sel: null, clipUrl: null, back: null };

async function openRecordings(id) {
  rec.id = id; rec.back = document.activeElement; rec.timeline = null; rec.sel = null;
  $('rec-title').textContent = `Recordings of ${id}`;
  $('recordings').hidden = false;
  grid.inert = true;
  $('rec-close').focus();
  message('Loading the timeline…');
  drawTimeline();
  try {
    const resp = await viewerFetch(`/v2/recordings/${enc(id)}/timeline`);
    if (!resp.ok) { message(await errorText(resp), true); return; }
    const t = await resp.json();
    if (rec.id !== id) return;
    rec.timeline = t;
    const first = t.ranges.length ? t.ranges[0][0] : t.start;
    rec.from = first; rec.to = Math.max(t.end, first + 1);
    const last = t.ranges.length ? t.ranges[t.ranges.length - 1][1] : t.end;
    select(Math.max(first, last - 60), last);
    describeTimeline(t);
    message('');
  } catch (err) { message(err.message, true); }
}

function closeRecordings() {
  stopVod();
  $('recordings').hidden = true;
  grid.inert = false;
  rec.id = null;
  if (rec.clipUrl) { URL.revokeObjectURL(rec.clipUrl); rec.clipUrl = null; $('clip-link').hidden = true; }
  if (rec.back && rec.back.isConnected) rec.back.focus();
}

function message(text, bad = false) {
  $('rec-message').textContent = text;
  $('rec-message').classList.toggle('bad', bad);
}

function describeTimeline(t) {
  const recorded = t.ranges.reduce((sum, [a, b]) => sum + (b - a), 0);
  const longest = t.gaps.reduce((m, [a, b]) => Math.max(m, b - a), 0);
  $('timeline-text').textContent = t.ranges.length
    ? `${duration(recorded)} recorded from ${clock(t.ranges[0][0])} in ${t.ranges.length} range(s);`
      + ` ${t.gaps.length} gap(s)${t.gaps.length ? `, the longest ${duration(longest)}` : ''}`
    : 'Nothing recorded in this period.';
}

function select(a, b) {
  rec.sel = [Math.min(a, b), Math.max(a, b)];
  $('range-start').value = clock(rec.sel[0]);
  $('range-end').value = clock(rec.sel[1]);
  drawTimeline();
}

function drawTimeline() {
  const canvas = $('timeline');
  const ctx = canvas.getContext('2d');
  const w = canvas.width, h = canvas.height;
  ctx.fillStyle = '#000'; ctx.fillRect(0, 0, w, h);
  const t = rec.timeline;
  if (!t) return;
  const x = (u) => ((u - rec.from) / (rec.to - rec.from)) * w;
  ctx.fillStyle = '#5a1e1e';
  for (const [a, b] of t.gaps) ctx.fillRect(x(a), 14, Math.max(1, x(b) - x(a)), h - 28);
  ctx.fillStyle = '#2f8f46';
  for (const [a, b] of t.ranges) ctx.fillRect(x(a), 10, Math.max(1, x(b) - x(a)), h - 20);
  if (rec.sel) {
    ctx.fillStyle = 'rgba(255, 211, 61, 0.35)';
    ctx.fillRect(x(rec.sel[0]), 0, Math.max(2, x(rec.sel[1]) - x(rec.sel[0])), h);
  }
  ctx.fillStyle = '#8b95a3'; ctx.font = '11px sans-serif';
  ctx.fillText(clock(rec.from).slice(11), 4, h - 1);
  ctx.fillText(clock(rec.to).slice(11), w - 54, h - 1);
}

function timeAt(ev) {
  const box = $('timeline').getBoundingClientRect();
  const f = Math.min(1, Math.max(0, (ev.clientX - box.left) / box.width));
  return rec.from + f * (rec.to - rec.from);
}

/** The range in the inputs as unix seconds, or null after saying what is wrong. */
function range() {
  const a = parseTime($('range-start').value), b = parseTime($('range-end').value);
  if (a == null || b == null) { message('From and To: a time like 2026-11-28 14:02:00, or unix seconds.', true); return null; }
  if (b <= a) { message('To must be after From.', true); return null; }
  return [a, b];
}

function stopVod() {
  if (rec.hls) { rec.hls.destroy(); rec.hls = null; }
  $('rec-video').removeAttribute('src');
  $('rec-video').load();
}

async function playRange() {
  const r = range();
  if (!r) return;
  select(r[0], r[1]);
  stopVod();
  const url = `/v2/recordings/${enc(rec.id)}/playlist.m3u8?start=${r[0]}&end=${r[1]}`;
  if (!window.Hls) { message('The player is still loading; try again in a moment.', true); return; }
  try {  // asked once first: a 400 or 404 is shown in the node's own words, not as an hls.js code
    const resp = await viewerFetch(url);
    if (!resp.ok) { message(await errorText(resp), true); return; }
  } catch (err) { message(err.message, true); return; }
  const Hls = window.Hls;
  const hls = new Hls({ xhrSetup: (xhr) => xhr.setRequestHeader('Authorization', `Bearer ${token}`) });
  hls.on(Hls.Events.ERROR, (_ev, data) => { if (data.fatal) message(`Playback failed: ${data.details}`, true); });
  hls.on(Hls.Events.MANIFEST_PARSED, () => $('rec-video').play().catch(() => {}));
  hls.loadSource(url);
  hls.attachMedia($('rec-video'));
  rec.hls = hls;
  message(`Playing ${clock(r[0])} – ${clock(r[1])}`);
}

async function downloadRange() {
  const r = range();
  if (!r) return;
  const name = `${rec.id}-${clock(r[0]).replace(/[: ]/g, '')}-${Math.round(r[1] - r[0])}s.mp4`;
  message('Exporting the clip…');
  try {
    const resp = await viewerFetch(`/v2/recordings/${enc(rec.id)}/clip.mp4?start=${r[0]}&end=${r[1]}`);
    if (!resp.ok) { message(await errorText(resp), true); return; }
    const blob = await resp.blob();
    if (rec.clipUrl) URL.revokeObjectURL(rec.clipUrl);
    rec.clipUrl = URL.createObjectURL(blob);
    const link = $('clip-link');
    link.href = rec.clipUrl; link.download = name; link.hidden = false;
    link.textContent = `Save ${name} (${bytes(blob.size)})`;
    link.click();
    message(`Clip ready: ${name}, ${bytes(blob.size)}`);
  } catch (err) { message(err.message, true); }
}

// ---------------------------------------------------------------- wiring

/** hls.js (600 kB) after the first status is drawn: names and states must not wait for a player. */
function loadHls() {
  if (document.getElementById('hls-js')) return;
  const script = document.createElement('script');
  script.id = 'hls-js';
  script.src = '/console/hls.min.js';
  script.addEventListener('load', schedule);
  document.head.append(script);
}

function wire() {
  $('token-button').addEventListener('click', askToken);
  $('token-cancel').addEventListener('click', () => { $('token-form').hidden = true; });
  $('token-form').addEventListener('submit', (ev) => { ev.preventDefault(); useToken($('token-input').value); });
  $('rec-close').addEventListener('click', closeRecordings);
  $('range').addEventListener('submit', (ev) => { ev.preventDefault(); playRange(); });
  $('range-download').addEventListener('click', downloadRange);
  document.addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && !$('recordings').hidden) closeRecordings();
  });
  const canvas = $('timeline');
  let dragFrom = null;
  canvas.addEventListener('pointerdown', (ev) => { if (rec.timeline) { dragFrom = timeAt(ev); canvas.setPointerCapture(ev.pointerId); } });
  canvas.addEventListener('pointermove', (ev) => { if (dragFrom != null) select(dragFrom, timeAt(ev)); });
  canvas.addEventListener('pointerup', (ev) => {
    if (dragFrom == null) return;
    const to = timeAt(ev);
    select(dragFrom, Math.abs(to - dragFrom) < 1 ? dragFrom + 60 : to);  // a click: the minute from there
    dragFrom = null;
  });
  setInterval(schedule, THUMB_EVERY_MS / 2);  // thumbnails age even when nothing moves
}

wire();
if (!token) { showAuth(0, 'none given yet'); askToken(); }
poll();
