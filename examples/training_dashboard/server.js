// The training dashboard server: serves the page in ./public and relays the
// frames a trainer sends on ws://HOST:PORT/trainer to every browser on
// ws://HOST:PORT/browser. Trainer and browsers are told apart by path, so
// either may connect first, and several runs may follow one another. The
// server keeps the frames it has seen (up to --history) and replays them to
// each browser that connects, so a page opened mid-run shows the whole run.
//
//   node server.js [--port 8080] [--host 127.0.0.1] [--history 1000000] [--token T]
// It listens on loopback unless --host says otherwise; beyond loopback trainers
// need the token it prints. Pages may connect only from its own origin.
// It needs the ws package: Debian's node-ws (scripts/install-deps) or npm install.
'use strict';

const crypto = require('crypto');
const fs = require('fs');
const http = require('http');
const os = require('os');
const path = require('path');
const ws = require('./find_ws')();
if (!ws) {
  console.error('server.js needs the ws package: apt-get install node-ws (or npm install here)');
  process.exit(1);
}
const { WebSocketServer } = ws;

const FRAME = 32;
const MAX_MESSAGE = 1 << 20;          // a trainer message (frames are 32 bytes each)
const MAX_BROWSER_BACKLOG = 8 << 20;  // bytes queued for one browser before it is closed as too slow

function parseArgs(argv) {
  const o = { port: 8080, host: '127.0.0.1', history: 1000000, token: null };
  for (let i = 2; i < argv.length; i += 2) {
    const k = argv[i], v = argv[i + 1];
    if (k === '--port') o.port = Number(v);
    else if (k === '--host') o.host = v;
    else if (k === '--history') o.history = Number(v);
    else if (k === '--token') o.token = v;
    else {
      console.error(`usage: node server.js [--port N] [--host ADDR|NAME] [--history FRAMES] [--token T] (unknown ${k})`);
      process.exit(2);
    }
    if (v === undefined || (k === '--port' && !(Number.isInteger(o.port) && o.port > 0 && o.port < 65536)) ||
        (k === '--history' && !(o.history >= 1)) || (k === '--token' && !/^[A-Za-z0-9_-]{8,128}$/.test(v))) {
      console.error(`server.js: bad value for ${k}: ${v}`); process.exit(2);
    }
  }
  return o;
}

const opts = parseArgs(process.argv);
const publicDir = path.join(__dirname, 'public');
const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };
const LOOPBACK = new Set(['127.0.0.1', '::1', 'localhost']);

// The names a request may use for this server (Host header): a page served
// under another name (DNS rebinding) gets nothing.
let hostNames = new Set();
function allowHosts(address) {
  const names = ['localhost', '127.0.0.1', '[::1]', opts.host, address.includes(':') ? `[${address}]` : address];
  if (!LOOPBACK.has(opts.host) && !LOOPBACK.has(address)) names.push(os.hostname());
  hostNames = new Set(names.flatMap((n) => [n.toLowerCase(), `${n}:${opts.port}`.toLowerCase()]));
}

function pathOf(req) {
  try { return new URL(req.url, 'http://x').pathname; } catch (e) { return null; }
}
function hostOk(req) { return hostNames.has(String(req.headers.host || '').toLowerCase()); }
// A browser always sends Origin; only our own page may open a socket. A
// trainer (not a browser) sends none.
function originOk(req) {
  const o = req.headers.origin;
  return o === undefined || o === `http://${String(req.headers.host || '').toLowerCase()}`;
}
function tokenOk(req) {
  if (!opts.token) return true;
  try { return new URL(req.url, 'http://x').searchParams.get('token') === opts.token; } catch (e) { return false; }
}

const server = http.createServer((req, res) => {
  const p = pathOf(req);
  if (p === null) { res.writeHead(400); res.end('bad request\n'); return; }
  if (!hostOk(req)) { res.writeHead(403); res.end('unknown host\n'); return; }
  const name = p === '/' ? 'index.html' : p.slice(1);
  // Only the page's own files: no directories, no traversal.
  if (!/^[a-z_]+\.(html|js|css)$/.test(name)) { res.writeHead(404); res.end('not found\n'); return; }
  fs.readFile(path.join(publicDir, name), (err, data) => {
    if (err) { res.writeHead(404); res.end('not found\n'); return; }
    res.writeHead(200, { 'Content-Type': types[path.extname(name)], 'Cache-Control': 'no-store',
      'Content-Security-Policy': "default-src 'self'; connect-src 'self' ws: wss:", 'X-Content-Type-Options': 'nosniff' });
    res.end(data);
  });
});
server.on('clientError', (err, socket) => {
  if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
  else socket.destroy();
});

// History: a list of frame chunks (Buffers holding whole frames).
let history = [], historyFrames = 0;
const browsers = new Set();
let trainers = 0, received = 0;

function remember(chunk) {
  history.push(chunk);
  historyFrames += chunk.length / FRAME;
  while (historyFrames > opts.history && history.length > 1) historyFrames -= history.shift().length / FRAME;
}

const wss = new WebSocketServer({ noServer: true, maxPayload: MAX_MESSAGE });
function refuse(socket, code, why) {
  socket.end(`HTTP/1.1 ${code} ${why}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
}
server.on('upgrade', (req, socket, head) => {
  socket.on('error', () => {});
  const p = pathOf(req);
  if (p === null) return refuse(socket, 400, 'Bad Request');
  // /metrics is the seed's own path for trainer frames.
  const trainer = p === '/trainer' || p === '/metrics';
  if (!trainer && p !== '/browser') return refuse(socket, 404, 'Not Found');
  // A browser (it sends Origin) must use one of our names and be our page;
  // a trainer is not a browser and sends neither check's header necessarily.
  if (req.headers.origin !== undefined && (!hostOk(req) || !originOk(req))) return refuse(socket, 403, 'Forbidden');
  if (trainer && !tokenOk(req)) return refuse(socket, 401, 'Unauthorized');
  wss.handleUpgrade(req, socket, head, (ws) => (trainer ? onTrainer(ws) : onBrowser(ws)));
});

function onTrainer(ws) {
  trainers++;
  let partial = Buffer.alloc(0);
  ws.on('message', (data, isBinary) => {
    if (!isBinary) return;
    // Frames are 32 bytes; keep any remainder for the next message.
    const buf = partial.length ? Buffer.concat([partial, data]) : data;
    const whole = buf.length - (buf.length % FRAME);
    partial = Buffer.from(buf.subarray(whole));
    if (!whole) return;
    const chunk = Buffer.from(buf.subarray(0, whole));
    received += whole / FRAME;
    remember(chunk);
    for (const b of browsers) sendTo(b, chunk);
  });
  ws.on('close', () => { trainers--; });
  ws.on('error', () => {});
}

// A browser that does not keep up is closed (it reconnects and gets the
// history), so one stuck page cannot make the server hold unbounded memory.
function sendTo(b, chunk) {
  if (b.readyState !== b.OPEN) return;
  if (b.bufferedAmount + chunk.length > MAX_BROWSER_BACKLOG) {
    browsers.delete(b);
    b.terminate();
    return;
  }
  b.send(chunk, { binary: true });
}

function onBrowser(ws) {
  browsers.add(ws);
  // Replay the history in chunks of up to 64 KiB.
  let batch = [], bytes = 0;
  for (const c of history) {
    batch.push(c); bytes += c.length;
    if (bytes >= 65536) { sendTo(ws, Buffer.concat(batch)); batch = []; bytes = 0; }
  }
  if (batch.length) sendTo(ws, Buffer.concat(batch));
  ws.on('close', () => browsers.delete(ws));
  ws.on('error', () => {});
}

server.on('error', (e) => { console.error(`server.js: ${opts.host}:${opts.port}: ${e.message}`); process.exit(1); });
// Beyond loopback anyone on the network can reach /trainer: require a token.
if (!opts.token && !LOOPBACK.has(opts.host)) opts.token = crypto.randomBytes(16).toString('hex');
server.listen(opts.port, opts.host, () => {
  const a = server.address();
  allowHosts(a.address);
  const shown = a.family === 'IPv6' ? `[${a.address}]` : a.address;
  const q = opts.token ? `?token=${opts.token}` : '';
  console.log(`dashboard: http://${shown}:${a.port}/ (listening on ${shown}:${a.port}; trainers send to ` +
              `ws://${shown}:${a.port}/trainer${q})`);
});

// Status for tests and operators.
process.on('SIGUSR2', () => console.log(`frames=${received} trainers=${trainers} browsers=${browsers.size}`));
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { server.close(); process.exit(0); });
