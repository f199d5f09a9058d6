// The training dashboard server: serves the page in ./public and relays the
// frames a trainer sends on ws://HOST:PORT/trainer to every browser on
// ws://HOST:PORT/browser. Trainer and browsers are told apart by path, so
// either may connect first, and several runs may follow one another. The
// server keeps the frames it has seen (up to --history) and replays them to
// each browser that connects, so a page opened mid-run shows the whole run.
//
//   node server.js [--port 8080] [--host 0.0.0.0] [--history 1000000]
// It needs the ws package: Debian's node-ws (scripts/install-deps) or npm install.
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const ws = require('./find_ws')();
if (!ws) {
  console.error('server.js needs the ws package: apt-get install node-ws (or npm install here)');
  process.exit(1);
}
const { WebSocketServer } = ws;

const FRAME = 32;

function parseArgs(argv) {
  const o = { port: 8080, host: '0.0.0.0', history: 1000000 };
  for (let i = 2; i < argv.length; i += 2) {
    const k = argv[i], v = argv[i + 1];
    if (k === '--port') o.port = Number(v);
    else if (k === '--host') o.host = v;
    else if (k === '--history') o.history = Number(v);
    else { console.error(`usage: node server.js [--port N] [--host ADDR] [--history FRAMES] (unknown ${k})`); process.exit(2); }
    if ((k === '--port' && !(o.port > 0 && o.port < 65536)) || (k === '--history' && !(o.history >= 1))) {
      console.error(`server.js: bad value for ${k}: ${v}`); process.exit(2);
    }
  }
  return o;
}

const opts = parseArgs(process.argv);
const publicDir = path.join(__dirname, 'public');
const types = { '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.css': 'text/css; charset=utf-8' };

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  const name = url.pathname === '/' ? 'index.html' : url.pathname.slice(1);
  // Only the page's own files: no directories, no traversal.
  if (!/^[a-z_]+\.(html|js|css)$/.test(name)) { res.writeHead(404); res.end('not found\n'); return; }
  fs.readFile(path.join(publicDir, name), (err, data) => {
    if (err) { res.writeHead(404); res.end('not found\n'); return; }
    res.writeHead(200, { 'Content-Type': types[path.extname(name)], 'Cache-Control': 'no-store' });
    res.end(data);
  });
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

const wss = new WebSocketServer({ noServer: true });
server.on('upgrade', (req, socket, head) => {
  const p = new URL(req.url, 'http://x').pathname;
  if (p !== '/trainer' && p !== '/browser') { socket.destroy(); return; }
  wss.handleUpgrade(req, socket, head, (ws) => (p === '/trainer' ? onTrainer(ws) : onBrowser(ws)));
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
    for (const b of browsers) if (b.readyState === b.OPEN) b.send(chunk, { binary: true });
  });
  ws.on('close', () => { trainers--; });
  ws.on('error', () => {});
}

function onBrowser(ws) {
  browsers.add(ws);
  // Replay the history in chunks of up to 64 KiB.
  let batch = [], bytes = 0;
  for (const c of history) {
    batch.push(c); bytes += c.length;
    if (bytes >= 65536) { ws.send(Buffer.concat(batch), { binary: true }); batch = []; bytes = 0; }
  }
  if (batch.length) ws.send(Buffer.concat(batch), { binary: true });
  ws.on('close', () => browsers.delete(ws));
  ws.on('error', () => {});
}

server.on('error', (e) => { console.error(`server.js: ${e.message}`); process.exit(1); });
server.listen(opts.port, opts.host, () => {
  console.log(`dashboard: http://${opts.host === '0.0.0.0' ? 'localhost' : opts.host}:${opts.port}/ ` +
              `(trainers send to ws://HOST:${opts.port}/trainer)`);
});

// Status for tests and operators.
process.on('SIGUSR2', () => console.log(`frames=${received} trainers=${trainers} browsers=${browsers.size}`));
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => { server.close(); process.exit(0); });
