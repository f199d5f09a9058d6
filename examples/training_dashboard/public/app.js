// The training dashboard page: receives frames of four little-endian float64
// (step, gradient L2 norm, loss, learning rate) on ws://<this host>/browser and
// draws loss, learning rate and gradient norm with its 10-step moving average.
// The server replays its history to every browser that connects, so a reload
// or a reconnect rebuilds the whole chart. A step that goes backwards starts a
// new run (the chart restarts). While paused, frames are kept and the view is
// held; resume shows them.
'use strict';

const FRAME = 32;
const MA = 10;

const run = { steps: [], norms: [], losses: [], lrs: [], avg: [] };
let pending = [];       // frames received while paused
let paused = false;
let dirty = true;
let socket = null;
let retryMs = 250;

const $ = (id) => document.getElementById(id);

function resetRun() {
  run.steps = []; run.norms = []; run.losses = []; run.lrs = []; run.avg = [];
  dirty = true;
}

function addFrame(step, norm, loss, lr) {
  const n = run.steps.length;
  if (n > 0 && step <= run.steps[n - 1]) resetRun(); // a new run
  run.steps.push(step); run.norms.push(norm); run.losses.push(loss); run.lrs.push(lr);
  const m = run.norms.length, from = Math.max(0, m - MA);
  let s = 0;
  for (let i = from; i < m; i++) s += run.norms[i];
  run.avg.push(s / (m - from));
  dirty = true;
}

function onFrames(buf) {
  const view = new DataView(buf);
  for (let off = 0; off + FRAME <= buf.byteLength; off += FRAME) {
    const f = [view.getFloat64(off, true), view.getFloat64(off + 8, true),
               view.getFloat64(off + 16, true), view.getFloat64(off + 24, true)];
    if (paused) pending.push(f); else addFrame(f[0], f[1], f[2], f[3]);
  }
  updateStatus();
}

function fmt(v) {
  if (v === undefined || !Number.isFinite(v)) return '–';
  const a = Math.abs(v);
  return a !== 0 && (a < 1e-3 || a >= 1e5) ? v.toExponential(3) : v.toPrecision(4);
}

function updateStatus() {
  const n = run.steps.length;
  $('points').textContent = String(n);
  $('step').textContent = n ? String(run.steps[n - 1]) : '–';
  $('loss').textContent = fmt(run.losses[n - 1]);
  $('norm').textContent = fmt(run.norms[n - 1]);
  $('lr').textContent = fmt(run.lrs[n - 1]);
  $('pending').textContent = String(pending.length);
  $('paused-box').hidden = !paused;
}

function setState(text, cls) {
  const s = $('state');
  s.textContent = text;
  s.className = cls || '';
}

function connect() {
  setState('connecting');
  const ws = new WebSocket(`ws://${location.host}/browser`);
  ws.binaryType = 'arraybuffer';
  socket = ws;
  ws.onopen = () => {
    retryMs = 250;
    // The server replays its whole history: start from nothing.
    resetRun();
    pending = [];
    updateStatus();
    setState('live', 'live');
  };
  ws.onmessage = (ev) => { if (ev.data instanceof ArrayBuffer) onFrames(ev.data); };
  ws.onclose = () => {
    if (socket !== ws) return;
    setState(`disconnected, retrying in ${(retryMs / 1000).toFixed(1)} s`, 'down');
    setTimeout(connect, retryMs);
    retryMs = Math.min(retryMs * 2, 4000);
  };
}

// ===== Drawing =====

const COLORS = { loss: '#cf222e', lr: '#8250df', norm: '#9aa4b1', avg: '#0969da' };

function niceTicks(lo, hi, count) {
  if (!(hi > lo)) { hi = lo + 1; }
  const span = hi - lo, step0 = span / count, mag = Math.pow(10, Math.floor(Math.log10(step0)));
  const norm = step0 / mag, step = (norm < 1.5 ? 1 : norm < 3 ? 2 : norm < 7 ? 5 : 10) * mag;
  const ticks = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(t);
  return ticks;
}

// Points to draw for one series: every point, or the min and max per pixel
// column when there are many more points than pixels.
function decimate(xs, ys, x0, x1, width) {
  const n = xs.length;
  if (n <= width * 2) return xs.map((x, i) => [x, ys[i]]);
  const out = [];
  let col = -1, lo = null, hi = null;
  for (let i = 0; i < n; i++) {
    const c = Math.floor((xs[i] - x0) / (x1 - x0 || 1) * width);
    if (c !== col) {
      if (lo) { out.push(lo); if (hi !== lo) out.push(hi); }
      col = c; lo = hi = [xs[i], ys[i]];
    } else {
      if (ys[i] < lo[1]) lo = [xs[i], ys[i]];
      if (ys[i] > hi[1]) hi = [xs[i], ys[i]];
    }
  }
  if (lo) { out.push(lo); if (hi !== lo) out.push(hi); }
  return out.sort((a, b) => a[0] - b[0]);
}

function drawPanel(ctx, box, title, series, x0, x1) {
  const { x, y, w, h } = box;
  let lo = Infinity, hi = -Infinity;
  for (const s of series)
    for (const v of s.ys)
      if (Number.isFinite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
  if (lo > hi) { lo = 0; hi = 1; }
  if (lo === hi) { lo -= Math.abs(lo) * 0.1 || 1; hi += Math.abs(hi) * 0.1 || 1; }
  const pad = (hi - lo) * 0.06;
  lo -= pad; hi += pad;
  const px = (v) => x + (v - x0) / (x1 - x0 || 1) * w, py = (v) => y + h - (v - lo) / (hi - lo) * h;
  ctx.strokeStyle = '#d0d7de'; ctx.lineWidth = 1; ctx.fillStyle = '#57606a'; ctx.font = '11px system-ui, sans-serif';
  ctx.textAlign = 'right'; ctx.textBaseline = 'middle';
  for (const t of niceTicks(lo, hi, 4)) {
    const yy = Math.round(py(t)) + 0.5;
    ctx.beginPath(); ctx.moveTo(x, yy); ctx.lineTo(x + w, yy); ctx.stroke();
    ctx.fillText(String(Number(t.toPrecision(6))), x - 6, yy);
  }
  ctx.strokeRect(x + 0.5, y + 0.5, w, h);
  ctx.save();
  ctx.beginPath(); ctx.rect(x, y, w, h); ctx.clip();
  for (const s of series) {
    const pts = decimate(run.steps, s.ys, x0, x1, w);
    ctx.strokeStyle = s.color; ctx.lineWidth = s.width || 1.5;
    ctx.beginPath();
    let started = false;
    for (const [sx, sy] of pts) {
      if (!Number.isFinite(sy)) { started = false; continue; }
      if (!started) { ctx.moveTo(px(sx), py(sy)); started = true; } else ctx.lineTo(px(sx), py(sy));
    }
    if (pts.length === 1) ctx.arc(px(pts[0][0]), py(pts[0][1]), 2, 0, 2 * Math.PI);
    ctx.stroke();
  }
  ctx.restore();
  ctx.textAlign = 'left'; ctx.textBaseline = 'bottom'; ctx.font = '600 12px system-ui, sans-serif';
  let lx = x;
  for (const s of series) {
    ctx.fillStyle = s.color; ctx.fillRect(lx, y - 11, 10, 3);
    ctx.fillStyle = '#1f2328'; ctx.fillText(s.label, lx + 14, y - 4);
    lx += ctx.measureText(s.label).width + 34;
  }
  if (title) { ctx.textAlign = 'right'; ctx.fillStyle = '#57606a'; ctx.fillText(title, x + w, y - 4); }
}

function draw() {
  requestAnimationFrame(draw);
  if (!dirty) return;
  dirty = false;
  const canvas = $('chart'), ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const n = run.steps.length;
  const x0 = n ? run.steps[0] : 0, x1 = n > 1 ? run.steps[n - 1] : x0 + 1;
  const left = 70, right = 16, top = 24, gap = 34, bottom = 30;
  const w = canvas.width - left - right, h = (canvas.height - top - bottom - 2 * gap) / 3;
  const box = (i) => ({ x: left, y: top + i * (h + gap), w, h });
  drawPanel(ctx, box(0), '', [{ label: 'loss', ys: run.losses, color: COLORS.loss }], x0, x1);
  drawPanel(ctx, box(1), '', [{ label: 'learning rate', ys: run.lrs, color: COLORS.lr }], x0, x1);
  drawPanel(ctx, box(2), '', [{ label: 'gradient L2 norm', ys: run.norms, color: COLORS.norm, width: 1 },
                              { label: `${MA}-step moving average`, ys: run.avg, color: COLORS.avg, width: 2 }], x0, x1);
  ctx.fillStyle = '#57606a'; ctx.font = '11px system-ui, sans-serif'; ctx.textAlign = 'center'; ctx.textBaseline = 'top';
  for (const t of niceTicks(x0, x1, 8)) {
    const xx = left + (t - x0) / (x1 - x0 || 1) * w;
    if (xx >= left - 1 && xx <= left + w + 1) ctx.fillText(String(Math.round(t)), xx, canvas.height - bottom + 8);
  }
  ctx.fillText('step', left + w / 2, canvas.height - 12);
}

// ===== Controls =====

$('pause').addEventListener('click', () => {
  paused = !paused;
  $('pause').textContent = paused ? 'Resume' : 'Pause';
  $('pause').classList.toggle('on', paused);
  if (!paused) {
    for (const f of pending) addFrame(f[0], f[1], f[2], f[3]);
    pending = [];
  }
  updateStatus();
});

$('clear').addEventListener('click', () => {
  resetRun();
  pending = [];
  updateStatus();
});

// For tests and the console: what the chart holds.
window.dashboard = {
  points: () => run.steps.length,
  lastStep: () => (run.steps.length ? run.steps[run.steps.length - 1] : 0),
  pending: () => pending.length,
  paused: () => paused,
  series: () => ({ steps: run.steps.slice(), losses: run.losses.slice(), avg: run.avg.slice() }),
};

connect();
requestAnimationFrame(draw);
