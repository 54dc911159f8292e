"""What the bench/ scripts share: finding mpiexec, running ``dnewton`` under it,
reading its log, and the data sets more than one script trains on.

The scripts import it as ``common``: Python puts a script's own folder on sys.path,
bench/ for the benchmarks, and bench/studies/common.py is a link to this file.
"""

import gzip
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

from dnewton.io.data import EMBEDDED_DATA  # the package's data: the MNIST subset
from dnewton.io.run_log import read_log as read_log  # the library's log reader, for the scripts

ROOT = Path(__file__).resolve().parents[1]  # the repository
FASHION = Path("/usr/share/datasets/fashion-mnist")  # Debian's dataset-fashion-mnist
HIDDEN = (300, 300)  # the hidden layers of the comparisons on the suite's sets


# -- running dnewton ---------------------------------------------------------------


def mpiexec():
    """The mpiexec beside this Python (the venv's), else the one on PATH; None if none."""
    beside = Path(sys.executable).parent / "mpiexec"
    return str(beside) if beside.exists() else shutil.which("mpiexec")


def one_thread_environment(**extra):
    """This process's environment with one BLAS thread per process (one rank per
    core), and `extra` variables."""
    return dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
                MKL_NUM_THREADS="1", **extra)


def mpi_command(ranks, args):
    """``mpiexec -n RANKS python ARGS`` as a list (ARGS: a script or ``-m module``
    and its arguments); SystemExit when there is no mpiexec."""
    launcher = mpiexec()
    if launcher is None:
        raise SystemExit("no mpiexec found (pip install mpich, or load your MPI)")
    return [launcher, "-n", str(ranks), sys.executable, *map(str, args)]


def dnewton_command(ranks, args):
    """``mpiexec -n RANKS python -m dnewton ARGS`` as a list."""
    return mpi_command(ranks, ["-m", "dnewton", *args])


# -- the FLOP bound ------------------------------------------------------------------


def gemm_rate(threads, dtype="float64", size=2000, repeat=7):
    """GFLOP/s of NumPy's GEMM in `dtype` on `threads` threads (a fresh process,
    median of `repeat` size^3 products): the machine's rate that a FLOP bound
    divides by."""
    code = (
        "import time, numpy as np\n"
        f"a = np.random.default_rng(0).standard_normal(({size}, {size})).astype('{dtype}')\n"
        "c = a @ a\n"
        "times = []\n"
        f"for _ in range({repeat}):\n"
        "    t = time.perf_counter(); np.matmul(a, a, out=c)\n"
        "    times.append(time.perf_counter() - t)\n"
        f"print(2 * {size}**3 / sorted(times)[len(times) // 2] / 1e9)\n"
    )
    names = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
    env = dict(os.environ, **dict.fromkeys(names, str(threads)))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=True)
    return float(proc.stdout.split()[-1])


def training_flops(records):
    """Median FLOPs of an iteration (all ranks, monitoring excluded), from a log's
    records."""
    return float(np.median([sum(v for k, v in r["flops"].items() if k != "evaluation")
                            for r in records if r["iter"] >= 1]))


# -- data sets ----------------------------------------------------------------------


def idx(path):
    """The array of a gzipped IDX file (Fashion-MNIST's format), uint8."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def fashion_npz(folder):
    """Fashion-MNIST's IDX files as FOLDER/fashion-{train,test}.npz, converted once;
    returns {"train": path, "test": path}. uint8 pixels: dnewton reads any numeric
    X, and uint8 takes an eighth of float64's bytes."""
    folder = Path(folder)
    paths = {part: folder / f"fashion-{part}.npz" for part in ("train", "test")}
    if all(path.exists() for path in paths.values()):
        return paths
    if not FASHION.exists():
        raise SystemExit(f"Fashion-MNIST needs {FASHION} (Debian package "
                         "dataset-fashion-mnist: apt-get install dataset-fashion-mnist)")
    folder.mkdir(parents=True, exist_ok=True)
    for part, prefix in (("train", "train"), ("test", "t10k")):
        X = idx(FASHION / f"{prefix}-images-idx3-ubyte.gz").reshape(-1, 784)
        y = idx(FASHION / f"{prefix}-labels-idx1-ubyte.gz")
        partial = paths[part].with_suffix(".partial")
        with open(partial, "wb") as f:  # a file object: np.savez would append ".npz"
            np.savez(f, X=X, y=y)
        partial.replace(paths[part])  # an interrupted conversion leaves no half file
    return paths


def _split(X, y, seed=0):
    from sklearn.model_selection import train_test_split

    return train_test_split(X, y, test_size=0.25, stratify=y, random_state=seed)


def _sklearn(loader):
    def load():
        data = loader()
        return (*_split(data.data.astype(np.float64), data.target), 1.0)
    return load


def _mnist_subset():
    from sklearn.datasets import load_svmlight_file

    X, y = load_svmlight_file(str(EMBEDDED_DATA / "mnist-demo.svm.gz"), n_features=784)
    Xt, yt = load_svmlight_file(str(EMBEDDED_DATA / "mnist-demo.t.svm.gz"), n_features=784)
    return X.toarray(), Xt.toarray(), y, yt, 255.0


def _fashion(n_train=10000):
    X = idx(FASHION / "train-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float64)
    y = idx(FASHION / "train-labels-idx1-ubyte.gz").astype(np.float64)
    Xt = idx(FASHION / "t10k-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float64)
    yt = idx(FASHION / "t10k-labels-idx1-ubyte.gz").astype(np.float64)
    keep = np.random.default_rng(0).permutation(len(y))[:n_train]
    return X[keep], Xt, y[keep], yt, 255.0


def _synthetic():
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=6000, n_features=40, n_informative=20,
                               n_classes=8, n_clusters_per_class=2, random_state=0)
    return (*_split(X, y.astype(np.float64)), 1.0)


def classification_sets():
    """{name: load} of the suite's sets (those present on this machine); load()
    gives (X, X_test, y, y_test, scale): a stratified 75/25 split with a fixed seed
    where a set has no test part of its own, and the value its features are
    divided by (255 for pixels, else 1)."""
    from sklearn import datasets

    sets = {
        "digits": _sklearn(datasets.load_digits),
        "iris": _sklearn(datasets.load_iris),
        "wine": _sklearn(datasets.load_wine),
        "breast_cancer": _sklearn(datasets.load_breast_cancer),
        "synthetic": _synthetic,
    }
    if (EMBEDDED_DATA / "mnist-demo.svm.gz").exists():
        sets["mnist_subset"] = _mnist_subset
    if FASHION.exists():
        sets["fashion_10k"] = _fashion
    return sets
