#!/usr/bin/python3
"""The PyTorch peer of bench/train_mlp and bench/train_cnn: the same model and
loop as `harmonics train examples/fashion_mnist.hmx` (784-128 relu-10) or
examples/fashion_cnn.hmx (--model cnn: conv 3x3 32, relu, max-pool 2, conv
3x3 64, relu, max-pool 2, dense 128 relu, 10), cross-entropy, Adam lr 0.001,
shuffled mini-batches from data already in memory, timing only the training
steps. Prints one JSON line.

    torch_mlp.py --threads N --batch B --epochs E [--flush-denormal 0|1] [--model mlp|cnn] [--train-samples N]

Run with /usr/bin/python3 (Debian's python3-torch). The caller sets
OPENBLAS_CORETYPE for this process only.
"""
import argparse, contextlib, gzip, json, os, struct, sys, time

import numpy as np
import torch

def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = struct.unpack(">" + "I" * ndim, data[4:4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--flush-denormal", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--model", choices=("mlp", "cnn"), default="mlp")
    ap.add_argument("--hidden", default="128", help="the MLP's hidden widths, e.g. 512,256")
    ap.add_argument("--autocast", choices=("none", "bf16"), default="none",
                    help="bf16: the steps under torch.autocast('cpu', dtype=torch.bfloat16)")
    ap.add_argument("--train-samples", type=int, default=0, help="the first N training images (0: all)")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    flushed = torch.set_flush_denormal(bool(a.flush_denormal))
    torch.manual_seed(a.seed)
    x = torch.from_numpy(idx(os.path.join(a.data, "train-images-idx3-ubyte.gz")).reshape(-1, 784).astype(np.float32) / 255.0)
    y = torch.from_numpy(idx(os.path.join(a.data, "train-labels-idx1-ubyte.gz")).astype(np.int64))
    tx = torch.from_numpy(idx(os.path.join(a.data, "t10k-images-idx3-ubyte.gz")).reshape(-1, 784).astype(np.float32) / 255.0)
    ty = torch.from_numpy(idx(os.path.join(a.data, "t10k-labels-idx1-ubyte.gz")).astype(np.int64))
    if a.train_samples:
        x, y = x[:a.train_samples], y[:a.train_samples]
    if a.model == "cnn":
        x, tx = x.reshape(-1, 1, 28, 28), tx.reshape(-1, 1, 28, 28)
        nn = torch.nn
        model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                              nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1600, 128), nn.ReLU(), nn.Linear(128, 10))
    else:
        widths, layers = [784] + [int(w) for w in a.hidden.split(",")], []
        for i in range(len(widths) - 1):
            layers += [torch.nn.Linear(widths[i], widths[i + 1]), torch.nn.ReLU()]
        model = torch.nn.Sequential(*layers, torch.nn.Linear(widths[-1], 10))
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if a.autocast == "bf16" else contextlib.nullcontext
    opt = torch.optim.Adam(model.parameters(), lr=0.001)
    loss_fn = torch.nn.CrossEntropyLoss()
    n = x.shape[0]
    train_s = 0.0
    samples = 0
    for epoch in range(a.epochs):
        perm = torch.randperm(n)
        for i in range(0, n, a.batch):
            idx_b = perm[i:i + a.batch]
            xb, yb = x[idx_b], y[idx_b]
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            with autocast():
                loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            train_s += time.perf_counter() - t0
            samples += xb.shape[0]
    with torch.no_grad():
        acc = (model(tx).argmax(1) == ty).float().mean().item()
    print(json.dumps({"samples_per_s": samples / train_s, "test_accuracy": acc, "threads": a.threads, "model": a.model,
                      "hidden": a.hidden, "autocast": a.autocast,
                      "batch": a.batch, "epochs": a.epochs, "flush_denormal": bool(flushed and a.flush_denormal),
                      "torch": torch.__version__, "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE")}))

if __name__ == "__main__":
    sys.exit(main())
