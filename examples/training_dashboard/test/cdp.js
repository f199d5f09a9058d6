// A small Chrome DevTools Protocol client for the end-to-end tests: launches
// headless Chromium, opens one page and drives it (navigate, evaluate, wait,
// click with real mouse events, screenshot). It needs only Node.js >= 18 and
// the `ws` package (Debian's node-ws, or node_modules), so the browser tests
// run on Debian 12's own packages.
//
// Evaluation goes through Runtime.evaluate, which the page's Content Security
// Policy does not govern (it is the debugger, not page script), so the tests
// work against a server that forbids eval without weakening its policy.
'use strict';

const { spawn } = require('child_process');
const fs = require('fs');
const os = require('os');
const path = require('path');

const requireWs = require('../find_ws');

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

class Page {
  constructor(browser, sessionId) {
    this.browser = browser;
    this.sessionId = sessionId;
    this.errors = [];
  }

  send(method, params = {}, timeout) { return this.browser.send(method, params, this.sessionId, timeout); }

  async goto(url, timeout = 30000) {
    const loaded = this.browser.once('Page.loadEventFired', this.sessionId, timeout);
    const r = await this.send('Page.navigate', { url });
    if (r.errorText) throw new Error(`navigate ${url}: ${r.errorText}`);
    await loaded;
  }

  // Runs fn(arg) in the page and returns its (JSON) value; a throw in the page
  // becomes a throw here.
  async evaluate(fn, arg) {
    const expression = `(${fn.toString()})(${arg === undefined ? '' : JSON.stringify(arg)})`;
    const r = await this.send('Runtime.evaluate', { expression, returnByValue: true, awaitPromise: true });
    if (r.exceptionDetails) {
      const d = r.exceptionDetails;
      throw new Error(`evaluate: ${(d.exception && d.exception.description) || d.text}`);
    }
    return r.result.value;
  }

  // Polls fn(arg) every |polling| ms until it is truthy; false on timeout.
  async waitForFunction(fn, arg, { timeout = 20000, polling = 50 } = {}) {
    const end = Date.now() + timeout;
    for (;;) {
      if (await this.evaluate(fn, arg)) return true;
      if (Date.now() > end) return false;
      await sleep(polling);
    }
  }

  // Visible as a user would see it: in the layout with a non-empty box and
  // not visibility:hidden.
  isVisible(selector) {
    return this.evaluate((sel) => {
      const el = document.querySelector(sel);
      if (!el) return false;
      const r = el.getBoundingClientRect();
      return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== 'hidden';
    }, selector);
  }

  // A real left click at the element's centre (mouse events through the
  // input pipeline, so hit testing and overlays count).
  async click(selector) {
    const at = await this.evaluate((sel) => {
      const el = document.querySelector(sel);
      if (!el) return null;
      el.scrollIntoView({ block: 'center', inline: 'center' });
      const r = el.getBoundingClientRect();
      return { x: r.left + r.width / 2, y: r.top + r.height / 2, w: r.width, h: r.height };
    }, selector);
    if (!at || !(at.w > 0 && at.h > 0)) throw new Error(`click: ${selector} is not visible`);
    const hit = await this.evaluate(([sel, x, y]) => {
      const el = document.querySelector(sel), top = document.elementFromPoint(x, y);
      return el === top || el.contains(top);
    }, [selector, at.x, at.y]);
    if (!hit) throw new Error(`click: another element covers ${selector}`);
    const base = { x: at.x, y: at.y, button: 'left', clickCount: 1 };
    await this.send('Input.dispatchMouseEvent', { type: 'mouseMoved', x: at.x, y: at.y });
    await this.send('Input.dispatchMouseEvent', { type: 'mousePressed', ...base });
    await this.send('Input.dispatchMouseEvent', { type: 'mouseReleased', ...base });
  }

  async screenshot(file) {
    const r = await this.send('Page.captureScreenshot', { format: 'png' });
    fs.writeFileSync(file, Buffer.from(r.data, 'base64'));
  }
}

class Browser {
  constructor(child, ws, dir) {
    this.child = child;
    this.ws = ws;
    this.dir = dir;
    this.nextId = 1;
    this.calls = new Map();
    this.listeners = [];
    this.pages = new Map();
    ws.on('message', (data) => this.onMessage(JSON.parse(data.toString())));
    ws.on('close', () => {
      for (const c of this.calls.values()) c.reject(new Error('the DevTools connection closed'));
      this.calls.clear();
    });
  }

  onMessage(m) {
    if (m.id !== undefined) {
      const c = this.calls.get(m.id);
      if (!c) return;
      this.calls.delete(m.id);
      clearTimeout(c.timer);
      if (m.error) c.reject(new Error(`${c.method}: ${m.error.message}`));
      else c.resolve(m.result);
      return;
    }
    const page = m.sessionId && this.pages.get(m.sessionId);
    if (page && m.method === 'Runtime.exceptionThrown') {
      const d = m.params.exceptionDetails;
      const text = (d.exception && d.exception.description) || d.text;
      page.errors.push(text);
      if (page.onError) page.onError(text);
    }
    for (const l of this.listeners.slice()) {
      if (l.method === m.method && l.sessionId === m.sessionId) l.fire(m.params);
    }
  }

  send(method, params = {}, sessionId, timeout = 30000) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.calls.delete(id);
        reject(new Error(`${method}: no answer from Chromium in ${timeout} ms`));
      }, timeout);
      this.calls.set(id, { resolve, reject, timer, method });
      const msg = { id, method, params };
      if (sessionId) msg.sessionId = sessionId;
      this.ws.send(JSON.stringify(msg));
    });
  }

  // The next |method| event of |sessionId|.
  once(method, sessionId, timeout) {
    return new Promise((resolve, reject) => {
      const l = { method, sessionId };
      const timer = setTimeout(() => { drop(); reject(new Error(`no ${method} in ${timeout} ms`)); }, timeout);
      const drop = () => { this.listeners = this.listeners.filter((x) => x !== l); clearTimeout(timer); };
      l.fire = (params) => { drop(); resolve(params); };
      this.listeners.push(l);
    });
  }

  async newPage({ width, height }) {
    const { targetId } = await this.send('Target.createTarget', { url: 'about:blank' });
    const { sessionId } = await this.send('Target.attachToTarget', { targetId, flatten: true });
    const page = new Page(this, sessionId);
    this.pages.set(sessionId, page);
    await page.send('Page.enable');
    await page.send('Runtime.enable');
    await page.send('Emulation.setDeviceMetricsOverride', { width, height, deviceScaleFactor: 1, mobile: false });
    return page;
  }

  async close() {
    try { await this.send('Browser.close', {}, undefined, 5000); } catch (e) { /* killed below */ }
    this.ws.close();
    if (this.child.exitCode === null) {
      const exited = new Promise((r) => this.child.once('exit', r));
      await Promise.race([exited, sleep(5000)]);
      if (this.child.exitCode === null) this.child.kill('SIGKILL');
    }
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}

// Starts |executable| headless on an ephemeral DevTools port and connects.
async function launch(executable, extraArgs = [], timeout = 30000) {
  const WebSocket = requireWs();
  if (!WebSocket) throw new Error('the ws package is missing (apt-get install node-ws)');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hm-chromium-'));
  const child = spawn(executable, ['--headless=new', '--remote-debugging-port=0', '--remote-debugging-address=127.0.0.1',
    `--user-data-dir=${dir}`, ...extraArgs, 'about:blank'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const endpoint = await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`Chromium printed no DevTools endpoint in ${timeout} ms: ${err}`)),
                             timeout);
    child.stderr.on('data', (d) => {
      err += d;
      const m = /DevTools listening on (ws:\/\/\S+)/.exec(err);
      if (m) { clearTimeout(timer); resolve(m[1]); }
    });
    child.on('exit', (code, sig) => {
      clearTimeout(timer);
      reject(new Error(`Chromium exited (${code === null ? sig : code}) before it listened: ${err.slice(-500)}`));
    });
  });
  child.stderr.removeAllListeners('data');
  child.stderr.resume(); // keep draining so Chromium never blocks on a full pipe
  const ws = new WebSocket(endpoint, { perMessageDeflate: false, maxPayload: 256 * 1024 * 1024 });
  await new Promise((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject); });
  return new Browser(child, ws, dir);
}

module.exports = { launch, requireWs };
