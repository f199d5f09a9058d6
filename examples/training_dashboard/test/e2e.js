// End-to-end test of a training dashboard in headless Chromium:
//   1. a real `harmonics train --dashboard` run: the chart holds one point per
//      step sent (and, with --screenshot, the page is saved as a PNG);
//   2. pause holds the view while frames keep arriving; resume catches up;
//   3. the server is killed mid-run and restarted: training finishes, the
//      trainer reconnects and delivers every update, the page reconnects.
//
//   node test/e2e.js --server node|c --harmonics BIN --model MODEL.hmx [--screenshot OUT.png]
// Chromium is driven over the DevTools protocol (test/cdp.js): Node.js >= 18
// and the ws package (Debian's node-ws) are all it needs.
// Exit status 0 = passed, 1 = failed, 77 = Chromium or ws missing.
'use strict';

const { spawn } = require('child_process');
const fs = require('fs');
const http = require('http');
const net = require('net');
const os = require('os');
const path = require('path');
const cdp = require('./cdp');

const args = {};
for (let i = 2; i < process.argv.length; i += 2) args[process.argv[i].replace(/^--/, '')] = process.argv[i + 1];
const CHROMIUM = process.env.HARMONICS_CHROMIUM || '/usr/bin/chromium';
const WebSocket = cdp.requireWs();
if (!WebSocket) { console.log('the ws package is missing (scripts/install-deps installs node-ws)'); process.exit(77); }
if (!fs.existsSync(CHROMIUM)) { console.log(`no Chromium at ${CHROMIUM}`); process.exit(77); }
const FMNIST = process.env.HARMONICS_FASHION_MNIST_DIR || '/usr/share/datasets/fashion-mnist';
if (!fs.existsSync(path.join(FMNIST, 'train-images-idx3-ubyte.gz'))) {
  console.log(`Fashion-MNIST is not installed in ${FMNIST}`); process.exit(77);
}
if (!args.server || !args.harmonics || !args.model) {
  console.error('usage: node test/e2e.js --server node|c --harmonics BIN --model MODEL.hmx [--screenshot OUT.png]');
  process.exit(2);
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const children = new Set();
let failures = 0;

function check(cond, what) {
  if (cond) console.log(`ok: ${what}`);
  else { console.log(`FAIL: ${what}`); failures++; }
}

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => { const p = s.address().port; s.close(() => resolve(p)); });
    s.on('error', reject);
  });
}

function run(cmd, argv, opts = {}) {
  const child = spawn(cmd, argv, { stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  children.add(child);
  child.out = ''; child.err = '';
  child.stdout.on('data', (d) => { child.out += d; });
  child.stderr.on('data', (d) => { child.err += d; });
  child.done = new Promise((resolve) => child.on('exit', (code, sig) => { children.delete(child); resolve({ code, sig }); }));
  return child;
}

function httpOk(port) {
  return new Promise((resolve) => {
    const req = http.get({ host: '127.0.0.1', port, path: '/' }, (res) => { res.resume(); resolve(res.statusCode === 200); });
    req.on('error', () => resolve(false));
    req.setTimeout(1000, () => { req.destroy(); resolve(false); });
  });
}

async function startServer(port) {
  const dir = path.join(__dirname, '..');
  const child = args.server === 'node'
    ? run(process.execPath, [path.join(dir, 'server.js'), '--port', String(port), '--host', '127.0.0.1'])
    : run(args.harmonics, ['dashboard', '--port', String(port), '--host', '127.0.0.1']);
  for (let i = 0; i < 100; i++) {
    if (await httpOk(port)) return child;
    if (child.exitCode !== null) break;
    await sleep(100);
  }
  throw new Error(`the ${args.server} server did not come up on port ${port}: ${child.err}`);
}

async function stopServer(child) {
  child.kill('SIGKILL'); // as abrupt as a crash
  await child.done;
}

async function waitFor(page, fn, arg, what, timeout = 20000) {
  if (await page.waitForFunction(fn, arg, { timeout, polling: 50 })) return true;
  const state = await page.evaluate(() => ({ points: window.dashboard.points(), pending: window.dashboard.pending(),
    state: document.getElementById('state').textContent }));
  console.log(`timed out waiting for ${what}: ${JSON.stringify(state)}`);
  return false;
}

function train(port, extra) {
  return run(args.harmonics, ['train', args.model, '--dataset', 'fashion-mnist', '--optimizer', 'adam', '--lr', '0.002',
    '--seed', '1', '--threads', '1', '--json', '--dashboard', `ws://127.0.0.1:${port}/trainer`, ...extra]);
}

function trainerSummary(child) {
  const m = /dashboard: (\d+) updates, (\d+) written to the socket \(delivery is not acknowledged\), (\d+) dropped, (\d+) not written, (\d+) connection/.exec(child.err);
  return m ? { updates: +m[1], written: +m[2], dropped: +m[3], pending: +m[4], connects: +m[5] } : null;
}

async function main() {
  const port = await freePort();
  let server = await startServer(port);
  const browser = await cdp.launch(CHROMIUM, ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
    '--disable-background-networking', '--disable-component-update', '--disable-sync', '--hide-scrollbars',
    '--mute-audio']);
  try {
    const page = await browser.newPage({ width: 1160, height: 740 });
    page.onError = (text) => { console.log(`page error: ${text}`); failures++; };
    await page.goto(`http://127.0.0.1:${port}/`);
    check(await waitFor(page, () => document.getElementById('state').textContent === 'live', null, 'the page to connect'),
          'the page connects to /browser');

    // 1. A real training run: one point per step.
    const t1 = train(port, ['--limit-train', '10000', '--limit-eval', '1000', '--epochs', '2', '--batch', '32',
                            '--lr-decay', '0.6:100']);
    const r1 = await t1.done;
    check(r1.code === 0, `training exits 0 (${r1.code}): ${t1.err.slice(-300)}`);
    const j1 = JSON.parse(t1.out.trim().split('\n').pop());
    const steps = j1.steps;
    check(steps === 2 * Math.ceil(10000 / 32), `training ran ${steps} steps`);
    const s1 = trainerSummary(t1);
    check(s1 && s1.updates === steps && s1.written === steps && s1.dropped === 0 && s1.pending === 0,
          `the trainer sent every update: ${JSON.stringify(s1)}`);
    check(await waitFor(page, (n) => window.dashboard.points() === n && window.dashboard.lastStep() === n, steps,
                        `${steps} points`), `the chart holds ${steps} points, one per step`);
    const series = await page.evaluate(() => window.dashboard.series());
    check(series.steps.every((s, i) => s === i + 1), 'points are steps 1..N in order');
    check(Math.abs(series.losses[steps - 1] - j1.final_loss) < 1e-5 * Math.max(1, Math.abs(j1.final_loss)),
          `the last loss shown is the run's final loss (${series.losses[steps - 1]} vs ${j1.final_loss})`);
    await sleep(300); // let a frame render
    if (args.screenshot) {
      await page.screenshot(args.screenshot);
      check(fs.statSync(args.screenshot).size > 10000, `screenshot saved to ${args.screenshot}`);
    }

    // 2. Pause holds the view; resume catches up. A test trainer sends a new run.
    const ws = new WebSocket(`ws://127.0.0.1:${port}/trainer`);
    await new Promise((resolve, reject) => { ws.on('open', resolve); ws.on('error', reject); });
    const frame = (step) => {
      const b = Buffer.alloc(32);
      b.writeDoubleLE(step, 0); b.writeDoubleLE(1 + 1 / step, 8); b.writeDoubleLE(2 / step, 16); b.writeDoubleLE(0.01, 24);
      return b;
    };
    for (let s = 1; s <= 50; s++) ws.send(frame(s));
    check(await waitFor(page, () => window.dashboard.points() === 50, null, '50 points of the new run'),
          'a new run (step back to 1) restarts the chart: 50 points');
    await page.click('#pause');
    for (let s = 51; s <= 80; s++) ws.send(frame(s));
    check(await waitFor(page, () => window.dashboard.pending() === 30, null, '30 pending frames'),
          'while paused, 30 new frames are kept');
    await sleep(300);
    check(await page.evaluate(() => window.dashboard.points()) === 50, 'while paused, the view holds 50 points');
    check(await page.isVisible('#paused-box'), 'the page says it is paused');
    await page.click('#pause');
    check(await waitFor(page, () => window.dashboard.points() === 80 && window.dashboard.pending() === 0, null, '80 points'),
          'resume shows the 30 kept frames: 80 points');
    ws.close();

    // 3. Kill the server mid-run and restart it.
    const big = path.join(os.tmpdir(), `hm_e2e_${process.pid}.hmx`);
    fs.writeFileSync(big, 'producer pixels {784}; producer labels {10}; layer hidden {1024}; layer logits;\n' +
      'cycle { pixels -(relu)-> hidden -> logits; logits <-(cross_entropy)- labels; }\n');
    const t3 = run(args.harmonics, ['train', big, '--dataset', 'fashion-mnist', '--limit-train', '30000', '--limit-eval',
      '1000', '--epochs', '4', '--batch', '64', '--optimizer', 'adam', '--lr', '0.001', '--threads', '1', '--json',
      '--dashboard', `ws://127.0.0.1:${port}/trainer`]);
    const steps3 = 4 * Math.ceil(30000 / 64);
    check(await waitFor(page, () => window.dashboard.points() >= 100 && window.dashboard.lastStep() >= 100, null,
                        'the third run to reach 100 steps', 60000), 'the third run is on the chart');
    await stopServer(server);
    const killedAt = await page.evaluate(() => window.dashboard.lastStep());
    check(await waitFor(page, () => document.getElementById('state').textContent.startsWith('disconnected'), null,
                        'the page to notice'), 'the page shows the connection is down');
    await sleep(400);
    server = await startServer(port);
    const r3 = await t3.done;
    fs.unlinkSync(big);
    check(r3.code === 0, `training survives the server's death (exit ${r3.code}): ${t3.err.slice(-300)}`);
    const j3 = JSON.parse(t3.out.trim().split('\n').pop());
    check(j3.steps === steps3 && j3.test_accuracy > 0.7, `training finished all ${j3.steps} steps, accuracy ${j3.test_accuracy}`);
    const s3 = trainerSummary(t3);
    check(s3 && s3.updates === steps3 && s3.pending === 0 && s3.dropped === 0 && s3.connects >= 2,
          `the trainer reconnected and delivered everything: ${JSON.stringify(s3)} (killed near step ${killedAt})`);
    check(await waitFor(page, () => document.getElementById('state').textContent === 'live', null, 'the page to reconnect'),
          'the page reconnects to the restarted server');
    check(await waitFor(page, (n) => window.dashboard.lastStep() === n, steps3, `step ${steps3}`),
          `the page shows the run to its last step ${steps3} after the restart`);
  } finally {
    await browser.close();
    for (const c of children) c.kill('SIGKILL');
  }
  console.log(failures ? `${failures} check(s) failed` : 'all checks passed');
  process.exit(failures ? 1 : 0);
}

main().catch((e) => {
  console.log(`FAIL: ${e.stack || e}`);
  for (const c of children) c.kill('SIGKILL');
  process.exit(1);
});
