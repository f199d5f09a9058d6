#!/usr/bin/python3
"""bench/train_mlp: Fashion-MNIST 784-128-10 with Adam (lr 0.001) in Harmonics
and in PyTorch (Debian's python3-torch), same thread count, in one run.

Prints training samples/s (steps only: no data loading, no evaluation) at
batch 64 and 1024 on 1 and 2 threads, PyTorch with denormals flushed and not
(Harmonics' CPU plugin always flushes: FTZ+DAZ), and the ratios. PyTorch gets
the fast OpenBLAS core type for its process (OPENBLAS_CORETYPE, chosen from
the CPU flags as the Harmonics CPU plugin chooses it).

    /usr/bin/python3 bench/train_mlp.py [--build build] [--epochs 1] [--repeat 2]
"""
import argparse, json, os, subprocess, sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

def best_core():
    flags = ""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("flags"):
                flags = " " + line.split(":", 1)[1] + " "
                break
    if all(" %s " % x in flags for x in ("avx512f", "avx512bw", "avx512vl", "avx512dq")):
        return "Cooperlake" if " avx512_bf16 " in flags else "SkylakeX"
    if " avx2 " in flags and " fma " in flags:
        return "Haswell"
    return None

def harmonics(build, threads, batch, epochs):
    cmd = [os.path.join(build, "bin", "harmonics"), "train", os.path.join(ROOT, "examples", "fashion_mnist.hmx"),
           "--dataset", "fashion-mnist", "--epochs", str(epochs), "--optimizer", "adam", "--lr", "0.001",
           "--batch", str(batch), "--threads", str(threads), "--seed", "0", "--json"]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["train_samples_per_s"]

def torch(threads, batch, epochs, flush, core):
    env = dict(os.environ)
    if core:
        env["OPENBLAS_CORETYPE"] = core
    cmd = ["/usr/bin/python3", os.path.join(HERE, "torch_mlp.py"), "--threads", str(threads), "--batch", str(batch),
           "--epochs", str(epochs), "--flush-denormal", str(int(flush))]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])["samples_per_s"]

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=2, help="best of N runs per cell")
    a = ap.parse_args()
    core = best_core()
    print("# bench/train_mlp: Fashion-MNIST 784-128-10, Adam lr 0.001, %d epoch(s), best of %d; samples/s of training steps"
          % (a.epochs, a.repeat))
    print("# PyTorch with OPENBLAS_CORETYPE=%s; OPENBLAS_CORETYPE in this environment: %s"
          % (core, os.environ.get("OPENBLAS_CORETYPE", "unset")))
    print("%7s %6s %12s %14s %14s %10s %10s" % ("threads", "batch", "harmonics", "torch(flush)", "torch(noflush)",
                                                 "x(flush)", "x(noflush)"))
    for threads in (1, 2):
        for batch in (64, 1024):
            h = max(harmonics(a.build, threads, batch, a.epochs) for _ in range(a.repeat))
            tf = max(torch(threads, batch, a.epochs, True, core) for _ in range(a.repeat))
            tn = max(torch(threads, batch, a.epochs, False, core) for _ in range(a.repeat))
            print("%7d %6d %12.0f %14.0f %14.0f %10.2f %10.2f" % (threads, batch, h, tf, tn, h / tf, h / tn))
            sys.stdout.flush()

if __name__ == "__main__":
    main()
