#!/usr/bin/python3
"""bench/train_cnn: the Fashion-MNIST CNN of examples/fashion_cnn.hmx (conv 3x3
32, relu, max-pool 2, conv 3x3 64, relu, max-pool 2, dense 128 relu, 10) with
Adam (lr 0.001) in Harmonics and in PyTorch (Debian's python3-torch, its
oneDNN/mkldnn convolutions), same thread count, in one run.

Prints training samples/s (steps only: no data loading, no evaluation) at
batch 64 on 1 and 2 threads, PyTorch with denormals flushed and not, the
ratios, and the fraction of the CPU's FMA peak each reaches: training costs
3 x the forward pass's multiply-adds (forward, data gradient, weight
gradient), 2 flops each; the peak is threads x GHz x FMA units x lanes x 2
(the clock from /proc/cpuinfo, the FMA width from its flags: 2 units of 8
floats with AVX2, 16 with AVX-512 — an assumption stated in the output).

    /usr/bin/python3 bench/train_cnn.py [--build build] [--train-samples 12000] [--repeat 2]
"""
import argparse, json, os, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from train_mlp import best_core, run_peer  # noqa: E402  (the OpenBLAS core the CPU plugin would pick; the peer's runs)

# Forward multiply-adds of one image: conv1 26x26x32x9, conv2 11x11x64x(32x9), dense 1600x128 + 128x10.
FORWARD_MACS = 26 * 26 * 32 * 9 + 11 * 11 * 64 * 32 * 9 + 1600 * 128 + 128 * 10


def peak_gflops(threads):
    mhz, flags = 0.0, ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("cpu MHz") and not mhz:
                mhz = float(line.split(":")[1])
            if line.startswith("flags") and not flags:
                flags = " " + line.split(":", 1)[1] + " "
    lanes = 16 if " avx512f " in flags else 8 if " avx2 " in flags else 4
    return threads * mhz / 1000.0 * 2 * lanes * 2, mhz, lanes


def harmonics(build, threads, batch, samples):
    cmd = [os.path.join(build, "bin", "harmonics"), "train", os.path.join(ROOT, "examples", "fashion_cnn.hmx"),
           "--dataset", "fashion-mnist", "--epochs", "1", "--optimizer", "adam", "--lr", "0.001", "--batch", str(batch),
           "--threads", str(threads), "--seed", "0", "--limit-train", str(samples), "--limit-eval", "1000", "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["train_samples_per_s"]


def torch(threads, batch, samples, flush, core):
    cmd = ["/usr/bin/python3", os.path.join(HERE, "torch_mlp.py"), "--model", "cnn", "--threads", str(threads),
           "--batch", str(batch), "--epochs", "1", "--train-samples", str(samples), "--flush-denormal", str(int(flush))]
    return run_peer(cmd, threads, core, "samples_per_s")["samples_per_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--train-samples", type=int, default=12000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeat", type=int, default=2, help="best of N runs per cell")
    a = ap.parse_args()
    core = best_core()
    flops = 3 * 2 * FORWARD_MACS
    print("# bench/train_cnn: examples/fashion_cnn.hmx, Adam lr 0.001, 1 epoch of %d images, batch %d, best of %d;"
          " samples/s of training steps" % (a.train_samples, a.batch, a.repeat))
    print("# %.2f MFLOP per image trained (3 x %d forward multiply-adds x 2)" % (flops / 1e6, FORWARD_MACS))
    print("%7s %10s %13s %15s %9s %11s %12s %12s" % ("threads", "harmonics", "torch(flush)", "torch(noflush)", "x(flush)",
                                                    "x(noflush)", "peak(harm.)", "peak(torch)"))
    for threads in (1, 2):
        peak, mhz, lanes = peak_gflops(threads)
        # Rounds of one run each, interleaved, so that a slow spell of this
        # shared machine falls on all three columns alike.
        runs = {"h": [], "tf": [], "tn": []}
        for _ in range(a.repeat):
            runs["h"].append(harmonics(a.build, threads, a.batch, a.train_samples))
            runs["tf"].append(torch(threads, a.batch, a.train_samples, True, core))
            runs["tn"].append(torch(threads, a.batch, a.train_samples, False, core))
        h, tf, tn = max(runs["h"]), max(runs["tf"]), max(runs["tn"])
        print("# %d thread(s), every run: harmonics %s, torch(flush) %s, torch(noflush) %s" %
              (threads, *(" ".join("%.0f" % v for v in runs[k]) for k in ("h", "tf", "tn"))))
        print("%7d %10.0f %13.0f %15.0f %9.2f %11.2f %11.1f%% %11.1f%%" %
              (threads, h, tf, tn, h / tf, h / tn, 100 * h * flops / 1e9 / peak, 100 * max(tf, tn) * flops / 1e9 / peak))
        sys.stdout.flush()
    print("# peak: threads x %.0f MHz x 2 FMA units x %d lanes x 2 flops" % (mhz, lanes))


if __name__ == "__main__":
    main()
