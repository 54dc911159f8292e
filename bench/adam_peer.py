"""dnewton's Adam against PyTorch's torch.optim.Adam: seconds per epoch.

    python bench/adam_peer.py                       # full Fashion-MNIST, float64 and float32
    python bench/adam_peer.py --instances 10000 --epochs 2 --dtypes float32   # quicker

The same problem on the same cores: the 784-300-300-10 ReLU network, softmax
cross-entropy plus dnewton's theta'theta / (2 C l) (C = 1), pixels / 255 centred,
mini-batches of 128 drawn in a fresh random order every epoch, Adam's default
betas and eps, eta = 0.001. dnewton runs ``mpiexec -n R dnewton train --solver
adam`` (one BLAS thread per rank) and its epoch is the log's training seconds;
PyTorch runs in one process with R intra-op threads, its epoch timed around the
loop of steps (no scoring in either). Prints per precision the median seconds per
epoch (min-max over epochs 2 onwards) and their ratio. Time on an idle machine,
with R no more than the cores.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import experiment  # bench/ is on sys.path when this runs as a script
import numpy as np

from dnewton.io.run_log import read_log

ROOT = Path(__file__).resolve().parents[1]
HIDDEN = (300, 300)


def load(instances, out):
    """Fashion-MNIST's training set (the first `instances`), as dnewton reads it and as
    PyTorch gets it: the .npz path, and X / 255 centred, y."""
    path = experiment.fashion_npz(Path(out))["train"]
    with np.load(path) as archive:
        X, y = archive["X"][:instances], archive["y"][:instances]
    if len(y) < 60000:  # dnewton reads the same first instances from a file of their own
        path = Path(out) / f"fashion-{len(y)}.npz"
        if not path.exists():
            np.savez(path, X=X, y=y)
    X = X.astype(np.float64) / 255.0
    return str(path), X - X.mean(axis=0), y.astype(np.int64)


def torch_epochs(X, y, dtype, epochs, threads, batch=128, rate=1e-3, C=1.0, seed=0):
    """Seconds of each PyTorch Adam epoch on the same objective."""
    import torch

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    kind = {"float64": torch.float64, "float32": torch.float32}[dtype]
    X, y = torch.tensor(X, dtype=kind), torch.tensor(y)
    widths = (X.shape[1], *HIDDEN, int(y.max()) + 1)
    layers = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [torch.nn.Linear(a, b, dtype=kind), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers[:-1])
    # weight_decay adds theta / (C l) to the gradient: dnewton's regularization term
    optimizer = torch.optim.Adam(model.parameters(), lr=rate, weight_decay=1.0 / (C * len(y)))
    rng = np.random.default_rng(seed)
    seconds = []
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(y)))
        began = time.perf_counter()
        for start in range(0, len(y), batch):
            rows = order[start:start + batch]
            optimizer.zero_grad(set_to_none=True)
            loss = torch.nn.functional.cross_entropy(model(X[rows]), y[rows])
            loss.backward()
            optimizer.step()
        seconds.append(time.perf_counter() - began)
    return seconds


def dnewton_epochs(path, dtype, epochs, ranks):
    """Seconds of each dnewton Adam epoch (the log's training seconds)."""
    with tempfile.TemporaryDirectory() as folder:
        log = Path(folder) / "adam.jsonl"
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                   MPIEXEC_TIMEOUT="3600")
        subprocess.run([experiment.mpiexec(), "-n", str(ranks), sys.executable, "-m", "dnewton",
                        "train", path, "--hidden", ",".join(map(str, HIDDEN)),
                        "--feature-scale", "255", "--center", "--solver", "adam",
                        "--learning-rate", "0.001", "--mini-batch", "128", "--epochs",
                        str(epochs), "--dtype", dtype, "--quiet", "--log", str(log)],
                       check=True, env=env)
        return [record["iteration_time"] for record in read_log(log)[1:]]


def steady(seconds):
    """Median and range of epochs 2 onwards (the first pays for warming up)."""
    rest = seconds[1:] or seconds
    return float(np.median(rest)), min(rest), max(rest)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=60000)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--ranks", type=int, default=2,
                        help="dnewton's ranks, and PyTorch's threads")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--data", type=Path, default=ROOT / "docs" / "time-to-accuracy" / "data")
    args = parser.parse_args(argv)
    path, X, y = load(args.instances, args.data)
    print(f"| precision | dnewton {args.ranks} ranks, s/epoch | PyTorch {args.ranks} threads, "
          "s/epoch | ratio |\n| --- | --- | --- | --- |")
    for dtype in args.dtypes.split(","):
        ours = steady(dnewton_epochs(path, dtype, args.epochs, args.ranks))
        peer = steady(torch_epochs(X, y, dtype, args.epochs, args.ranks))
        print(f"| {dtype} | {ours[0]:.3f} ({ours[1]:.3f}-{ours[2]:.3f}) | {peer[0]:.3f} "
              f"({peer[1]:.3f}-{peer[2]:.3f}) | {ours[0] / peer[0]:.2f} |", flush=True)


if __name__ == "__main__":
    main()
