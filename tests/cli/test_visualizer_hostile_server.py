#!/usr/bin/env python3
"""A hostile dashboard server cannot make training read what it streams.

    test_visualizer_hostile_server.py BIN/harmonics MODEL.hmx

The server completes the WebSocket handshake, then streams an endless binary
frame at the trainer while `harmonics train --dashboard` runs. The trainer
only sends: the first data it receives closes that connection (it retries
with backoff), so the bytes the server manages to push are bounded by the
sockets' buffers per connection (a client that reads and parses all of it
takes ~80 MiB in the same run), and training still finishes with every
update written. Loopback only; exit 0 = passed, 1 = failed.
"""
import base64
import hashlib
import os
import select
import socket
import subprocess
import sys
import time

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def main():
    harmonics, model = sys.argv[1], sys.argv[2]
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    port = srv.getsockname()[1]
    train = subprocess.Popen(
        [harmonics, "train", model, "--dataset", "fashion-mnist", "--limit-train", "20000", "--limit-eval", "500",
         "--epochs", "8", "--batch", "32", "--threads", "1", "--dashboard", "ws://127.0.0.1:%d/trainer" % port],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ, HARMONICS_DEBUG=os.environ.get("T_DEBUG", "")))
    srv.settimeout(30)
    srv.setblocking(False)
    zeros = b"\0" * 65536
    pushed = received = connections = 0
    conns = []  # [socket, bytes still to send before the zeros, time the flood starts]
    started = time.time()
    deadline = started + 120
    while train.poll() is None and time.time() < deadline:
        r, w, _ = select.select([srv] + [c[0] for c in conns], [c[0] for c in conns if time.time() >= c[2]], [], 0.05)
        if srv in r:
            conn, _ = srv.accept()
            conn.settimeout(10)
            req = b""
            while b"\r\n\r\n" not in req:
                req += conn.recv(4096)
            key = [l.split(b":", 1)[1].strip() for l in req.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key:")][0]
            accept = base64.b64encode(hashlib.sha1(key + GUID.encode()).digest())
            conn.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                         b"Sec-WebSocket-Accept: " + accept + b"\r\n\r\n")
            conn.setblocking(False)
            connections += 1
            # Then an endless binary frame (a 2^62-byte length and zeros for as
            # long as the socket takes them), once the trainer has settled.
            conns.append([conn, b"\x82\x7f" + (1 << 62).to_bytes(8, "big"), time.time() + 0.05])
        for c in list(conns):
            try:
                if c[0] in r:
                    d = c[0].recv(65536)
                    if not d:
                        conns.remove(c)
                        continue
                    received += len(d)
                if c[0] in w:
                    n = c[0].send(c[1] or zeros)
                    pushed += n
                    c[1] = c[1][n:]
            except BlockingIOError:
                pass
            except (BrokenPipeError, ConnectionResetError):
                conns.remove(c)
    elapsed = time.time() - started
    try:
        out, err = train.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        train.kill()
        out, err = train.communicate()
    for c in conns:
        c[0].close()
    srv.close()
    failures = 0

    def check(cond, what):
        nonlocal failures
        print(("ok: " if cond else "FAIL: ") + what)
        failures += not cond

    if os.environ.get("T_DEBUG"):
        print(err)
    check(train.returncode == 0, "training finishes (exit %s): %s" % (train.returncode, err[-300:]))
    steps = 8 * ((20000 + 31) // 32)
    check("dashboard: %d updates, %d written" % (steps, steps) in err,
          "every update is written: %s" % [l for l in err.splitlines() if l.startswith("dashboard:")])
    check(received >= steps * 32, "the server read %d bytes of frames (>= %d)" % (received, steps * 32))
    check(connections >= 1, "the trainer connected (%d connections: it closes on the first data and retries)"
          % connections)
    # Each connection can absorb the sockets' buffers (a few MiB) before the
    # trainer reads and closes; a client that parses everything took ~80 MiB
    # on one connection.
    per = pushed / max(connections, 1) / 2**20
    check(per < 16, "the trainer took %.1f MiB of the stream per connection (< 16; %.1f MiB in all)" %
          (per, pushed / 2**20))
    # Backoff 0.1, 0.2, ... 2 s (the default maximum), never reset by a violating server.
    check(connections <= 7 + elapsed / 2, "its reconnections back off (%d connections in %.1f s)" %
          (connections, elapsed))
    print("%d check(s) failed" % failures if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
