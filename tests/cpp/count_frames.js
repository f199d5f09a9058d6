// Connects to a dashboard's /browser socket, which replays the history of
// trainer frames (32 bytes each: step, gradient norm, loss, learning rate as
// little-endian float64), and prints "frames N last-step S" once nothing has
// arrived for a second.
//   node count_frames.js PORT
'use strict';
const path = require('path');
const WebSocket = require(path.join(__dirname, '../../examples/training_dashboard/find_ws.js'))();
if (!WebSocket) {
  console.log('skipped: no ws package (apt-get install node-ws)');
  process.exit(77);
}
const port = Number(process.argv[2]);
const ws = new WebSocket(`ws://127.0.0.1:${port}/browser`);
let frames = 0, last = -1, idle = null;
const finish = () => { console.log(`frames ${frames} last-step ${last}`); ws.close(); process.exit(0); };
ws.on('message', (data) => {
  const buf = Buffer.isBuffer(data) ? data : Buffer.from(data);
  for (let off = 0; off + 32 <= buf.length; off += 32) { frames++; last = buf.readDoubleLE(off); }
  clearTimeout(idle);
  idle = setTimeout(finish, 1000);
});
ws.on('open', () => { idle = setTimeout(finish, 1000); });
ws.on('error', (e) => { console.log(`error: ${e.message}`); process.exit(1); });
setTimeout(() => { console.log('timed out'); process.exit(1); }, 20000);
