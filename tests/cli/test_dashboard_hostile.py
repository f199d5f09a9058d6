#!/usr/bin/env python3
"""Hostile clients against a dashboard server (issue: security and robustness).

    test_dashboard_hostile.py c BIN/harmonics
    test_dashboard_hostile.py node NODE examples/training_dashboard/server.js

Loopback only, ephemeral ports, every socket with a timeout. Checks:
  - by default it listens on 127.0.0.1 only (read from /proc/net/tcp{,6});
  - a malformed request line or upgrade URL gets an answer, and the server lives;
  - WebSocket upgrades from a foreign Origin, or naming a foreign Host, are refused;
  - plain HTTP for a foreign Host is refused (DNS rebinding);
  - trainer frames sent to /metrics (the seed's path) reach a browser;
  - beyond loopback, a trainer needs the printed token;
  - (node) an oversized message closes only that trainer, and a browser that never
    reads is closed instead of growing the server's memory without bound.
Exit 0 = passed, 1 = failed.
"""
import base64
import os
import re
import socket
import struct
import subprocess
import sys
import time

failures = 0


def check(cond, what):
    global failures
    print(("ok: " if cond else "FAIL: ") + what)
    if not cond:
        failures += 1


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def start(kind, argv, port, extra=()):
    if kind == "c":
        cmd = [argv[0], "dashboard", "--port", str(port), *extra]
    else:
        cmd = [argv[0], argv[1], "--port", str(port), *extra]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = p.stdout.readline()  # the "dashboard: http://..." line, printed once listening
    return p, line


def stop(p):
    p.kill()
    p.wait(timeout=10)


def listening_addresses(port):
    """Local addresses of LISTEN sockets on |port| (hex from /proc/net)."""
    found = []
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = open(name).read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            f = row.split()
            addr, p = f[1].split(":")
            if int(p, 16) == port and f[3] == "0A":
                found.append(addr)
    return found


def request(port, data, timeout=3.0):
    """Sends raw bytes, returns what comes back until close or timeout."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(data)
    out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b:
                break
            out += b
            if b"\r\n\r\n" in out and not out.startswith(b"HTTP/1.1 200"):
                break
    except socket.timeout:
        pass
    s.close()
    return out


def alive(port):
    r = request(port, b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
    return r.startswith(b"HTTP/1.1 200")


def upgrade(port, path, origin=None, host=None, timeout=3.0):
    """Opens a WebSocket; returns (socket or None, status line)."""
    key = base64.b64encode(os.urandom(16)).decode()
    hdr = "GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" \
          "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n" % (path, host or "127.0.0.1:%d" % port, key)
    if origin:
        hdr += "Origin: %s\r\n" % origin
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall((hdr + "\r\n").encode())
    resp = b""
    try:
        while b"\r\n\r\n" not in resp:
            b = s.recv(1)
            if not b:
                break
            resp += b
    except (socket.timeout, ConnectionResetError):
        pass
    status = resp.split(b"\r\n", 1)[0].decode(errors="replace")
    if " 101 " in status + " ":
        return s, status
    s.close()
    return None, status or "(connection closed)"


def send_binary(s, payload):
    mask = os.urandom(4)
    n = len(payload)
    head = bytes([0x82])
    if n < 126:
        head += bytes([0x80 | n])
    elif n < 65536:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    # XOR with the repeated mask as one big integer: fast for MiB payloads.
    key = (mask * (n // 4 + 1))[:n]
    masked = (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(n, "little")
    s.sendall(head + mask + masked)


def recv_frame(s, timeout=5.0):
    s.settimeout(timeout)
    def exact(n):
        b = b""
        while len(b) < n:
            c = s.recv(n - len(b))
            if not c:
                raise ConnectionError("closed")
            b += c
        return b
    h = exact(2)
    n = h[1] & 0x7F
    if n == 126:
        n = struct.unpack(">H", exact(2))[0]
    elif n == 127:
        n = struct.unpack(">Q", exact(8))[0]
    return h[0] & 0x0F, exact(n)


def frame(step, loss):
    return struct.pack("<dddd", step, 1.0, loss, 0.01)


def rss_kb(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main():
    kind, argv = sys.argv[1], sys.argv[2:]
    port = free_port()
    p, line = start(kind, argv, port)
    try:
        check(line.startswith("dashboard: http://127.0.0.1:%d/" % port), "it says where it listens: %r" % line)
        addrs = listening_addresses(port)
        check(addrs == ["0100007F"], "by default only 127.0.0.1 listens (found %s)" % addrs)

        r = request(port, b"GET //[ HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % port)
        check(r.startswith(b"HTTP/1.1 4"), "a malformed URL gets a 4xx: %r" % r[:40])
        s, st = upgrade(port, "//a:99999/trainer")
        check(s is None, "an upgrade to //a:99999/trainer is refused (%s)" % st)
        check(alive(port), "the server survives both")

        r = request(port, b"GET / HTTP/1.1\r\nHost: evil.example:%d\r\n\r\n" % port)
        check(not r.startswith(b"HTTP/1.1 200"), "a foreign Host gets no page (DNS rebinding): %r" % r[:30])
        for path in ("/trainer", "/browser", "/metrics"):
            s, st = upgrade(port, path, origin="http://evil.example")
            check(s is None, "%s from Origin http://evil.example is refused (%s)" % (path, st))
        s, st = upgrade(port, "/browser", origin="http://evil.example:%d" % port, host="evil.example:%d" % port)
        check(s is None, "a rebound name with a matching Origin is refused too (%s)" % st)

        # Our own page may connect; a trainer on /metrics reaches it.
        b, st = upgrade(port, "/browser", origin="http://127.0.0.1:%d" % port)
        check(b is not None, "our own page's Origin is accepted (%s)" % st)
        t, st = upgrade(port, "/metrics")
        check(t is not None, "a trainer connects to /metrics (%s)" % st)
        if b and t:
            send_binary(t, frame(1, 123.5))
            try:
                op, data = recv_frame(b)
                check(op == 2 and data == frame(1, 123.5), "the browser receives the /metrics frame")
            except Exception as e:  # noqa: BLE001 - report any failure as a check
                check(False, "the browser receives the /metrics frame (%s)" % e)
        for c in (b, t):
            if c:
                c.close()

        if kind == "node":
            # An oversized message closes that trainer; the server lives.
            t, st = upgrade(port, "/trainer")
            if t:
                try:
                    send_binary(t, b"\0" * (2 << 20))
                    op, _ = recv_frame(t)
                    check(op == 8, "a 2 MiB trainer message is answered with a close")
                except Exception:  # noqa: BLE001 - a reset is a close too
                    check(True, "a 2 MiB trainer message closes the connection")
                t.close()
            check(alive(port), "the server survives an oversized message")
    finally:
        stop(p)

    if kind == "node":
        # A browser that never reads: bounded memory (small history, so only queues could grow).
        port = free_port()
        p, line = start(kind, argv, port, ("--history", "1000"))
        try:
            b, _ = upgrade(port, "/browser")
            b.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            t, _ = upgrade(port, "/trainer")
            before = rss_kb(p.pid)
            chunk = frame(1, 1.0) * 8192  # 256 KiB
            for _ in range(512):  # 128 MiB
                send_binary(t, chunk)
            time.sleep(0.5)
            grown = (rss_kb(p.pid) - before) / 1024
            check(grown < 64, "128 MiB to a browser that never reads grows the server by %.0f MiB (< 64)" % grown)
            check(alive(port), "the server still serves")
            t.close()
            b.close()
        finally:
            stop(p)

    # Beyond loopback: a token is printed and required.
    port = free_port()
    p, line = start(kind, argv, port, ("--host", "0.0.0.0"))
    try:
        m = re.search(r"/trainer\?token=([0-9a-f]+)", line)
        check(m is not None, "beyond loopback it prints a trainer token: %r" % line)
        s, st = upgrade(port, "/trainer")
        check(s is None, "a trainer without the token is refused (%s)" % st)
        if m:
            s, st = upgrade(port, "/trainer?token=" + m.group(1))
            check(s is not None, "a trainer with the token connects (%s)" % st)
            if s:
                s.close()
    finally:
        stop(p)
    print("%d check(s) failed" % failures if failures else "all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
