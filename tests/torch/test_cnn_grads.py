#!/usr/bin/python3
"""Gradients of every window op against PyTorch in float64.

Runs tests/torch/cnn_grads (the trainer's loss and gradients of one batch of
tests/torch/cnn_grads.hmx), rebuilds the same network in PyTorch at float64
from the same f32 inputs and weights, draws dropout's mask from the ABI's
definition (SPEC.md 7.5, written here independently), and compares the loss
and every gradient. Exit 77 (skip) when torch or numpy is missing.

    test_cnn_grads.py CNN_GRADS_BINARY MODEL.hmx WORK_DIR
"""
import json
import os
import struct
import subprocess
import sys

try:
    import numpy as np
    import torch
    import torch.nn.functional as F
except ImportError as e:  # Debian's python3-torch is a benchmark/test extra
    print("skip: %s" % e)
    sys.exit(77)

DTYPES = {"F32": np.float32, "I32": np.int32}


def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    base = 8 + n
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        a, b = t["data_offsets"]
        arr = np.frombuffer(blob[base + a:base + b], dtype=DTYPES[t["dtype"]])
        out[name] = arr.reshape(t["shape"]).copy()
    return out


def hash32(x):
    x = np.uint32(x) if np.isscalar(x) else x.astype(np.uint32)
    with np.errstate(over="ignore"):
        x = x ^ (x >> np.uint32(16))
        x = (x * np.uint32(0x7feb352d)).astype(np.uint32)
        x = x ^ (x >> np.uint32(15))
        x = (x * np.uint32(0x846ca68b)).astype(np.uint32)
        x = x ^ (x >> np.uint32(16))
    return x


def dropout_mask(seed, step, n, rate):
    lo, hi = np.uint32(seed & 0xffffffff), np.uint32(seed >> 32)
    key = hash32(lo ^ hash32(hi ^ np.uint32(0x9e3779b9)))
    base = hash32(key ^ np.uint32(step))
    h = hash32(base ^ np.arange(n, dtype=np.uint32))
    threshold = np.uint32(int(np.float32(rate) * np.float32(16777216.0)))
    return (h >> np.uint32(8)) >= threshold


def main():
    binary, model, work = sys.argv[1:4]
    os.makedirs(work, exist_ok=True)
    out = subprocess.run([binary, model, work], capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stdout + out.stderr)
        return 1
    lines = out.stdout.split("\n")
    loss_h = float(lines[0].split()[1])
    seeds = {}
    for line in lines[1:]:
        if line.startswith("dropout"):
            parts = line.split()
            seeds[parts[1]] = (int(parts[3]), int(parts[5]))
    w = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True)
         for k, v in read_safetensors(os.path.join(work, "weights.safetensors")).items()}
    data = read_safetensors(os.path.join(work, "data.safetensors"))
    grads_h = read_safetensors(os.path.join(work, "grads.safetensors"))
    x = torch.tensor(data["x"], dtype=torch.float64)
    y = torch.tensor(data["y"], dtype=torch.int64)
    n = x.shape[0]

    a = F.relu(F.conv2d(x, w["x->a.weight"], w["x->a.bias"], stride=2, padding=1))
    b = torch.tanh(F.conv2d(a, w["a->b.weight"], w["a->b.bias"], padding=1, groups=2))
    b = b + F.conv2d(x, w["x->b.weight"], None, stride=2, padding=1, dilation=2)
    c = F.max_pool2d(b, 3, stride=2, padding=1)
    d = F.avg_pool2d(b, 2, stride=1, padding=1, count_include_pad=True)
    seed, step = seeds["c->e"]
    mask = dropout_mask(seed, step, c.numel(), 0.3)
    scale = float(np.float32(1.0) / (np.float32(1.0) - np.float32(0.3)))
    e = c * torch.tensor(mask.reshape(c.shape), dtype=torch.float64) * scale
    h = F.relu(F.linear(e.reshape(n, -1), w["e->h.weight"], w["e->h.bias"]))
    rm = w["d->dn.running_mean"].detach().clone()
    rv = w["d->dn.running_var"].detach().clone()
    dn = F.relu(F.batch_norm(d, rm, rv, w["d->dn.weight"], w["d->dn.bias"], training=True, momentum=0.2, eps=1e-5))
    h = h + torch.sigmoid(F.linear(dn.reshape(n, -1), w["dn->h.weight"], w["dn->h.bias"]))
    hn = torch.tanh(F.layer_norm(h, (7,), w["h->hn.weight"], w["h->hn.bias"], eps=1e-3))
    logits = F.linear(hn, w["hn->out.weight"], w["hn->out.bias"])
    loss = F.cross_entropy(logits, y)
    loss.backward()

    failures = 0
    rel = abs(loss.item() - loss_h) / abs(loss.item())
    print("loss: harmonics %.9g torch %.9g (relative error %.2e)" % (loss_h, loss.item(), rel))
    if not rel <= 1e-5:
        failures += 1
    dropped = int((~mask).sum())
    print("dropout c->e: %d of %d dropped" % (dropped, mask.size))
    if not 0 < dropped < mask.size:
        failures += 1
    after = read_safetensors(os.path.join(work, "after.safetensors"))
    for name, ref in (("d->dn.running_mean", rm), ("d->dn.running_var", rv)):
        got = after[name].astype(np.float64)
        err = float(np.abs(got - ref.numpy()).max())
        ok = err <= 1e-5
        failures += not ok
        print("%s %-22s running statistic after one batch: max error %.2e" % ("ok  " if ok else "FAIL", name, err))
    trained = sorted(k for k in w if not k.endswith(("running_mean", "running_var")))
    if sorted(grads_h) != trained:
        print("FAIL: gradient names %s, parameters %s" % (sorted(grads_h), trained))
        return 1
    for name in trained:
        ref = w[name].grad.numpy()
        got = grads_h[name].astype(np.float64)
        nmse = float(((ref - got) ** 2).sum() / max((ref ** 2).sum(), 1e-300))
        ok = nmse <= 1e-9
        failures += not ok
        print("%s %-14s %-16s NMSE %.2e (|ref| %.3g)" % ("ok  " if ok else "FAIL", name, str(list(ref.shape)), nmse,
                                                       float(np.abs(ref).max())))
    print("%d failure(s)" % failures)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
