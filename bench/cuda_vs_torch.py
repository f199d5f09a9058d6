#!/usr/bin/env python3
"""bench/cuda_vs_torch: the same MLPs trained in Harmonics (CUDA plugin) and in
PyTorch on the same GPU in one run; prints samples/s and the ratio.

PyTorch runs with the data already on the GPU, Adam (lr 0.001), in two
configurations: eager, and the whole step captured in a CUDA graph
(torch.cuda.graph with capturable Adam) - the strongest configuration. For
the wide MLP also TF32 and bf16 autocast. Harmonics runs `harmonics train
--backend cuda` (one program per step captured into a CUDA graph; its
samples/s cover the update steps only, like PyTorch's).

  python3 bench/cuda_vs_torch.py --harmonics build/bin/harmonics --data DIR [--json OUT]
DIR holds the Fashion-MNIST IDX files (gzip'ed or not).
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

MODELS = [
    # name, hidden widths, batch, epochs for Harmonics (enough steps to time)
    ("784-128-10", [128], 64, 3),
    ("784-512-256-10", [512, 256], 64, 3),
    ("784-4096-4096-10", [4096, 4096], 1024, 6),
]


def read_idx(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def find(data_dir, name):
    for cand in (name + ".gz", name):
        p = os.path.join(data_dir, cand)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(os.path.join(data_dir, name))


def torch_model(widths):
    layers, prev = [], 784
    for w in widths:
        layers += [torch.nn.Linear(prev, w), torch.nn.ReLU()]
        prev = w
    layers.append(torch.nn.Linear(prev, 10))
    return torch.nn.Sequential(*layers).cuda()


def torch_eager(X, Y, widths, batch, steps, autocast=None):
    torch.manual_seed(0)
    model = torch_model(widths)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    lossf = torch.nn.CrossEntropyLoss()
    n = X.shape[0]
    perm = torch.randperm(n, device="cuda")

    def step(i):
        idx = perm[(i * batch) % (n - batch):][:batch]
        x, y = X.index_select(0, idx), Y.index_select(0, idx)
        opt.zero_grad(set_to_none=True)
        if autocast:
            with torch.autocast("cuda", dtype=autocast):
                loss = lossf(model(x), y)
        else:
            loss = lossf(model(x), y)
        loss.backward()
        opt.step()
        return loss

    for i in range(10):
        step(i)
    torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(steps):
        step(i)
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t)


def torch_graph(X, Y, widths, batch, steps, autocast=None):
    torch.manual_seed(0)
    model = torch_model(widths)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, capturable=True)
    lossf = torch.nn.CrossEntropyLoss()
    n = X.shape[0]
    perm = torch.randperm(n, device="cuda")
    idx = perm[:batch].clone()

    def body():
        x, y = X.index_select(0, idx), Y.index_select(0, idx)
        opt.zero_grad(set_to_none=False)
        if autocast:
            with torch.autocast("cuda", dtype=autocast):
                loss = lossf(model(x), y)
        else:
            loss = lossf(model(x), y)
        loss.backward()
        opt.step()
        return loss

    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            body()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        body()
    for i in range(10):
        g.replay()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for i in range(steps):
        idx.copy_(perm[(i * batch) % (n - batch):][:batch])
        g.replay()
    torch.cuda.synchronize()
    return steps * batch / (time.perf_counter() - t)


def harmonics(binary, data_dir, widths, batch, epochs, policy):
    with tempfile.NamedTemporaryFile("w", suffix=".hmx", delete=False) as f:
        names = ["h%d" % i for i in range(len(widths))]
        decl = " ".join("layer %s {%d};" % (h, w) for h, w in zip(names, widths))
        # pixels -(relu)-> h0 -(relu)-> h1 ... -> logits
        path = " -(relu)-> ".join(["pixels"] + names) + " -> logits"
        f.write("producer pixels {784}; producer label {10}; %s layer logits;\n"
                "cycle { %s; logits <-(cross_entropy)- label; }\n" % (decl, path))
        model = f.name
    env = dict(os.environ, HARMONICS_FASHION_MNIST_DIR=data_dir)
    cmd = [binary, "train", model, "--dataset", "fashion-mnist", "--backend", "cuda", "--epochs", str(epochs),
           "--batch", str(batch), "--optimizer", "adam", "--lr", "0.001", "--seed", "0", "--limit-eval", "1000",
           "--policy", policy, "--json"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    os.unlink(model)
    if out.returncode != 0:
        print("harmonics failed:", " ".join(cmd), out.stderr[-2000:], file=sys.stderr)
        return None, None
    j = json.loads(out.stdout.strip().splitlines()[-1])
    return j["train_samples_per_s"], j


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--harmonics", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--json")
    ap.add_argument("--steps", type=int, default=500)
    a = ap.parse_args()
    X = torch.tensor(read_idx(find(a.data, "train-images-idx3-ubyte")).reshape(-1, 784), dtype=torch.float32,
                     device="cuda") / 255.0
    Y = torch.tensor(read_idx(find(a.data, "train-labels-idx1-ubyte")), dtype=torch.long, device="cuda")
    print("GPU: %s; torch %s" % (torch.cuda.get_device_name(0), torch.__version__))
    rows = []
    for name, widths, batch, epochs in MODELS:
        steps = a.steps if batch <= 64 else max(50, a.steps // 5)
        torch.backends.cuda.matmul.allow_tf32 = False
        eager = torch_eager(X, Y, widths, batch, steps)
        graph = torch_graph(X, Y, widths, batch, steps)
        hm, hj = harmonics(a.harmonics, a.data, widths, batch, epochs, "hardware")
        row = {"model": name, "batch": batch, "torch_eager": eager, "torch_graph": graph, "harmonics_f32": hm,
               "harmonics_accuracy": hj and hj["test_accuracy"]}
        if len(widths) > 1 and widths[0] >= 1024:
            torch.backends.cuda.matmul.allow_tf32 = True
            row["torch_graph_tf32"] = torch_graph(X, Y, widths, batch, steps)
            torch.backends.cuda.matmul.allow_tf32 = False
            row["torch_graph_bf16"] = torch_graph(X, Y, widths, batch, steps, torch.bfloat16)
            hm_auto, hj_auto = harmonics(a.harmonics, a.data, widths, batch, epochs, "auto")
            row["harmonics_auto"] = hm_auto
            row["harmonics_auto_layers"] = hj_auto and [l["kernel"] for l in hj_auto["layers"]]
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print("%-18s %5s %12s %12s %12s %9s %9s" % ("model", "batch", "torch eager", "torch graph", "harmonics", "vs eager",
                                                 "vs graph"))
    for r in rows:
        hm = r["harmonics_f32"] or 0
        print("%-18s %5d %12.0f %12.0f %12.0f %8.2fx %8.2fx" % (r["model"], r["batch"], r["torch_eager"], r["torch_graph"],
                                                                 hm, hm / r["torch_eager"], hm / r["torch_graph"]))
        if "harmonics_auto" in r:
            ha = r["harmonics_auto"] or 0
            print("%-18s %5s %12s %12.0f %12.0f %9s %8.2fx  (auto %s vs torch TF32)" % (
                "  auto / TF32", "", "", r["torch_graph_tf32"], ha, "", ha / r["torch_graph_tf32"],
                r["harmonics_auto_layers"]))
            print("%-18s %5s %12s %12.0f" % ("  torch bf16", "", "", r["torch_graph_bf16"]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
