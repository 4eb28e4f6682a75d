#!/usr/bin/env node
// The VAS reference SFU: a small MediaSoup app that implements the agent's HTTP
// contract (docs/mediasoup-contract.md) and the minimum a WebRTC viewer needs.
// It is an example to run as is or to adapt; read it in one sitting.
//
//   node sfu/server.js [--port 3000] [--host 127.0.0.1] [--rtp-ip 127.0.0.1]
//                      [--webrtc-ip 127.0.0.1] [--announced-ip IP] [--h264-profiles 42e01f,640032]
//
// Run it with node directly (not npm start) so that signals reach it; the agent
// does so when `mediasoup.command` names it. It finds mediasoup through the usual
// resolution (sfu/node_modules) or NODE_PATH. Works with mediasoup 3.8.4 (the
// last gyp release) and current 3.x. The API binds loopback: it has no auth.
//
// Black-box rule: the app never re-encodes or rewrites RTP. A producer is created
// with exactly the codec the agent announces (payload type, SSRC, H.264 profile).
'use strict';
const http = require('http');
const { parseArgs } = require('util');
const mediasoup = require('mediasoup');

const { values: opt } = parseArgs({ options: {
  port: { type: 'string', default: '3000' }, host: { type: 'string', default: '127.0.0.1' },
  'rtp-ip': { type: 'string', default: '127.0.0.1' }, 'webrtc-ip': { type: 'string', default: '127.0.0.1' },
  'announced-ip': { type: 'string' },
  // The router's H.264 entries (profile-level-ids, comma-separated): limit them to what your viewers decode.
  'h264-profiles': { type: 'string', default: '42e01f,42001f,4d001f,640032,f4001f' },
} });
const [major, minor] = mediasoup.version.split('.').map(Number);
const HAS_LISTEN_INFO = major > 3 || (major === 3 && minor >= 13); // 3.13 renamed listenIp(s)
const MAX_BODY = 1 << 20;

// One H.264 entry per profile the router accepts: produce() matches the profile
// (not the level) of the announced profile-level-id against these.
const H264_PROFILES = opt['h264-profiles'].split(',').map((id) => id.trim().toLowerCase()).filter(Boolean);
if (!H264_PROFILES.length || !H264_PROFILES.every((id) => /^[0-9a-f]{6}$/.test(id))) {
  console.error(`--h264-profiles must be comma-separated profile-level-ids (6 hex digits), got ${opt['h264-profiles']}`);
  process.exit(2);
}
const MEDIA_CODECS = H264_PROFILES.map((id) => ({
  kind: 'video', mimeType: 'video/H264', clockRate: 90000,
  parameters: { 'packetization-mode': 1, 'profile-level-id': id, 'level-asymmetry-allowed': 1 },
}));

const producers = new Map(); // producer.id -> {producer, transport, streamId, ssrc, payloadType, epoch, node}
const viewers = new Map();   // webrtc transport.id -> {transport, clientId}
const consumers = new Map(); // consumer.id -> {consumer, viewerId, streamId, clientId, createdAt}
let worker; let router;

class HttpError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

function plainListen(ip) {
  return HAS_LISTEN_INFO ? { listenInfo: { protocol: 'udp', ip } } : { listenIp: { ip } };
}

function webRtcListen() {
  const ip = opt['webrtc-ip']; const announced = opt['announced-ip'];
  if (!HAS_LISTEN_INFO) return { listenIps: [{ ip, announcedIp: announced }] };
  return { listenInfos: ['udp', 'tcp'].map((protocol) => ({ protocol, ip, announcedAddress: announced })) };
}

function need(body, key, check, what) {
  const value = body[key];
  if (!check(value)) throw new HttpError(400, `${key} must be ${what}, got ${JSON.stringify(value)}`);
  return value;
}

const isInt = (lo, hi) => (v) => Number.isInteger(v) && v >= lo && v <= hi;
const isText = (v) => typeof v === 'string' && v.length > 0 && v.length <= 256;
const optional = (check) => (v) => v === undefined || v === null || check(v);

// Every refusal and every close is logged: on a shared SFU it is the record of who closed what.
function refuse(error, what, streamId, epoch) {
  if (!error) return;
  console.log(`refused ${what} of stream ${streamId} with epoch ${epoch ?? 'none'}: ${error.message}`);
  throw error;
}

// The newest epoch among a stream's producers, and whether `epoch` may act on them (the fence).
function fenced(streamId, epoch, only) {
  const mine = only ? [only] : [...producers.values()].filter((p) => p.streamId === streamId);
  const newest = Math.max(0, ...mine.map((p) => p.epoch || 0));
  if (newest === 0) return null;
  if ((epoch || 0) >= newest) return null;
  return new HttpError(409, `stream ${streamId} has a producer of epoch ${newest}`);
}

async function createProducer(body) {
  const streamId = need(body, 'stream_id', isText, 'a non-empty string');
  const ssrc = need(body, 'ssrc', isInt(1, 0xffffffff), 'an integer 1..2^32-1');
  const payloadType = need(body, 'payload_type', isInt(96, 127), 'a dynamic payload type 96..127');
  const epoch = need(body, 'epoch', optional(isInt(0, Number.MAX_SAFE_INTEGER)), 'an integer');
  const node = need(body, 'node', optional(isText), 'a string');
  const profile = need(body, 'profile_level_id', optional((v) => /^[0-9a-f]{6}$/i.test(v)), 'six hex digits');
  // A POST without epoch is not fenced (like a DELETE without ?epoch=): a fleet node warming up
  // for a handback registers its producer so, next to the owner's, and adopts it under its epoch
  // once it owns the stream. It never replaces or closes another producer; viewers get the newest epoch's.
  const fence = (e) => (epoch === undefined || epoch === null ? null : e);
  refuse(fence(fenced(streamId, epoch)), 'create', streamId, epoch);
  const transport = await router.createPlainTransport({ ...plainListen(opt['rtp-ip']), rtcpMux: true, comedia: true });
  const parameters = { 'packetization-mode': 1, 'level-asymmetry-allowed': 1 };
  if (profile) parameters['profile-level-id'] = profile.toLowerCase();
  let producer;
  try {
    producer = await transport.produce({ kind: 'video', rtpParameters: {
      codecs: [{ mimeType: 'video/H264', payloadType, clockRate: 90000, parameters }],
      encodings: [{ ssrc }] } });
  } catch (error) {
    transport.close();
    throw new HttpError(400, `cannot produce: ${error.message}`);
  }
  // A newer owner may have registered while we awaited mediasoup: check the fence again.
  const late = fence(fenced(streamId, epoch));
  if (late) { transport.close(); refuse(late, 'create', streamId, epoch); }
  producers.set(producer.id, { producer, transport, streamId, ssrc, payloadType, epoch, node, profile });
  producer.on('transportclose', () => producers.delete(producer.id));
  return { producer_id: producer.id, rtp_host: transport.tuple.localAddress || transport.tuple.localIp,
    rtp_port: transport.tuple.localPort };
}

async function listProducers() {
  return Promise.all([...producers.values()].map(async (p) => {
    const inbound = (await p.producer.getStats()).find((s) => s.type === 'inbound-rtp') || {};
    const { tuple } = p.transport;
    return { producer_id: p.producer.id, stream_id: p.streamId, ssrc: p.ssrc, payload_type: p.payloadType,
      profile_level_id: p.profile || null, packets: inbound.packetCount || 0, bytes: inbound.byteCount || 0,
      packets_lost: inbound.packetsLost || 0, // mediasoup's count from RTP sequence numbers (RFC 3550)
      score: p.producer.score[0]?.score ?? null, rtp_host: tuple.localAddress || tuple.localIp,
      rtp_port: tuple.localPort, source_port: tuple.remotePort ?? null, epoch: p.epoch ?? null,
      node: p.node ?? null };
  }));
}

function producerOf(id) {
  const p = producers.get(id);
  if (!p) throw new HttpError(404, `no producer ${id}`);
  return p;
}

function deleteProducer(id, query) {
  const p = producerOf(id);
  let epoch = null;
  if (query.has('epoch')) {
    const raw = query.get('epoch');
    if (!/^[0-9]{1,15}$/.test(raw)) throw new HttpError(400, `epoch must be an integer, got ${JSON.stringify(raw)}`);
    epoch = Number(raw);
    refuse(fenced(p.streamId, epoch, p), 'delete', p.streamId, epoch);
  }
  producers.delete(id);
  p.transport.close(); // closes the producer, and with it every consumer of it
  console.log(`closed producer ${id} of stream ${p.streamId} (node ${p.node ?? 'none'}, epoch ${p.epoch ?? 'none'}) `
    + `by DELETE with epoch ${epoch ?? 'none'}`);
}

function adoptProducer(id, body) {
  const p = producerOf(id);
  const epoch = need(body, 'epoch', isInt(0, Number.MAX_SAFE_INTEGER), 'an integer');
  const node = need(body, 'node', optional(isText), 'a string'); // checked before anything changes
  refuse(fenced(p.streamId, epoch, p), 'adopt', p.streamId, epoch);
  p.epoch = epoch;
  p.node = node;
}

// -- viewers: one WebRTC transport each (create, connect, consume, resume) ----------
async function createViewer(body) {
  const clientId = need(body, 'client_id', optional(isText), 'a string') || '';
  const transport = await router.createWebRtcTransport({ ...webRtcListen(), enableUdp: true, enableTcp: true,
    preferUdp: true });
  viewers.set(transport.id, { transport, clientId });
  transport.on('dtlsstatechange', (state) => { if (state === 'closed' || state === 'failed') closeViewer(transport.id); });
  return { viewer_id: transport.id, iceParameters: transport.iceParameters, iceCandidates: transport.iceCandidates,
    dtlsParameters: transport.dtlsParameters, routerRtpCapabilities: router.rtpCapabilities };
}

function viewerOf(id) {
  const v = viewers.get(id);
  if (!v) throw new HttpError(404, `no viewer ${id}`);
  return v;
}

function closeViewer(id) {
  const v = viewers.get(id);
  if (!v) return;
  viewers.delete(id);
  v.transport.close(); // closes its consumers ('transportclose' removes them from the table)
}

async function consume(viewerId, body) {
  const v = viewerOf(viewerId);
  const streamId = need(body, 'stream_id', isText, 'a non-empty string');
  const rtpCapabilities = need(body, 'rtpCapabilities', (x) => x && typeof x === 'object', 'an object');
  // The owner's producer: the newest epoch's (a warming node's has none until it owns the stream).
  const p = [...producers.values()].filter((x) => x.streamId === streamId)
    .reduce((best, x) => (!best || (x.epoch || 0) > (best.epoch || 0) ? x : best), null);
  if (!p) throw new HttpError(404, `stream ${streamId} has no producer`);
  if (!router.canConsume({ producerId: p.producer.id, rtpCapabilities })) {
    throw new HttpError(400, `the viewer cannot decode stream ${streamId}`);
  }
  const consumer = await v.transport.consume({ producerId: p.producer.id, rtpCapabilities, paused: true });
  consumers.set(consumer.id, { consumer, viewerId, streamId, clientId: v.clientId, createdAt: Date.now() / 1000 });
  const forget = () => consumers.delete(consumer.id);
  consumer.on('transportclose', forget);
  consumer.on('producerclose', () => { forget(); closeViewer(viewerId); }); // the viewer reconnects
  return { consumer_id: consumer.id, producer_id: p.producer.id, kind: consumer.kind,
    rtpParameters: consumer.rtpParameters };
}

function consumerOf(id) {
  const c = consumers.get(id);
  if (!c) throw new HttpError(404, `no consumer ${id}`);
  return c;
}

// -- HTTP ---------------------------------------------------------------------------
const routes = [
  ['GET', /^\/health$/, () => ({ ok: true, mediasoup: mediasoup.version, worker_pid: worker.pid })],
  ['POST', /^\/producers$/, (m, body) => createProducer(body), 201],
  ['GET', /^\/producers$/, () => listProducers()],
  ['DELETE', /^\/producers\/([^/]+)$/, (m, body, query) => deleteProducer(m[1], query)],
  ['POST', /^\/producers\/([^/]+)\/adopt$/, (m, body) => adoptProducer(m[1], body)],
  ['GET', /^\/consumers$/, () => [...consumers].map(([id, c]) => ({ consumer_id: id, stream_id: c.streamId,
    client_id: c.clientId, created_at: c.createdAt }))],
  ['DELETE', /^\/consumers\/([^/]+)$/, (m) => closeViewer(consumerOf(m[1]).viewerId)],
  ['POST', /^\/consumers\/([^/]+)\/resume$/, (m) => consumerOf(m[1]).consumer.resume()],
  ['GET', /^\/router\/rtp-capabilities$/, () => router.rtpCapabilities],
  ['POST', /^\/viewers$/, (m, body) => createViewer(body), 201],
  ['POST', /^\/viewers\/([^/]+)\/connect$/, (m, body) => viewerOf(m[1]).transport.connect({
    dtlsParameters: need(body, 'dtlsParameters', (x) => x && typeof x === 'object', 'an object') })],
  ['POST', /^\/viewers\/([^/]+)\/consume$/, (m, body) => consume(m[1], body), 201],
  ['DELETE', /^\/viewers\/([^/]+)$/, (m) => { viewerOf(m[1]); closeViewer(m[1]); }],
];

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = []; let size = 0;
    req.on('data', (chunk) => {
      size += chunk.length;
      if (size > MAX_BODY) { reject(new HttpError(413, 'body over 1 MiB')); req.destroy(); return; }
      chunks.push(chunk);
    });
    req.on('end', () => {
      if (size === 0) { resolve({}); return; }
      try {
        const body = JSON.parse(Buffer.concat(chunks).toString('utf8'));
        if (body && typeof body === 'object' && !Array.isArray(body)) resolve(body);
        else reject(new HttpError(400, 'the body must be a JSON object'));
      } catch (error) { reject(new HttpError(400, `invalid JSON: ${error.message}`)); }
    });
    req.on('error', reject);
  });
}

async function handle(req, res) {
  const url = new URL(req.url, 'http://sfu');
  let status = 200; let answer;
  try {
    const route = routes.find(([method, path]) => method === req.method && path.test(url.pathname));
    if (!route) throw new HttpError(404, `no route ${req.method} ${url.pathname}`);
    const body = await readBody(req);
    answer = await route[2](url.pathname.match(route[1]), body, url.searchParams);
    status = answer === undefined ? 204 : route[3] || 200;
  } catch (error) {
    status = error instanceof HttpError ? error.status : 500;
    answer = { error: error.message };
    if (status === 500) console.error(`${req.method} ${url.pathname}: ${error.stack}`);
  }
  res.writeHead(status, status === 204 ? {} : { 'content-type': 'application/json' });
  res.end(status === 204 ? undefined : JSON.stringify(answer));
}

async function main() {
  worker = await mediasoup.createWorker({ logLevel: 'warn' });
  worker.on('died', () => { console.error('mediasoup worker died: exiting so that the agent restarts us'); process.exit(1); });
  router = await worker.createRouter({ mediaCodecs: MEDIA_CODECS });
  const server = http.createServer((req, res) => { handle(req, res); });
  server.listen(Number(opt.port), opt.host, () => {
    console.log(`vas reference sfu: mediasoup ${mediasoup.version}, worker ${worker.pid}, http://${opt.host}:${opt.port}`);
  });
  const stop = () => { server.close(); worker.close(); process.exit(0); };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}

main().catch((error) => { console.error(`cannot start: ${error.message}`); process.exit(1); });
