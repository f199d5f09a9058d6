// The `ws` package: from node_modules (npm install) or from Debian's node-ws
// (/usr/share/nodejs), which node does not search when it comes from
// elsewhere (NodeSource). Returns null when neither is installed.
'use strict';

module.exports = function findWs() {
  for (const name of ['ws', '/usr/share/nodejs/ws', '/usr/lib/nodejs/ws']) {
    try { return require(name); } catch (e) { if (e.code !== 'MODULE_NOT_FOUND') throw e; }
  }
  return null;
};
