"""bench/peers.py is dnewton's algorithm: from the same start, on the same data and
Gauss-Newton subsets, the PyTorch peer's f after every iteration is dnewton's one-rank
f up to summation order (both losses, two activations)."""

import sys
from pathlib import Path

import numpy as np
import pytest
from mpi4py import MPI

from dnewton.app.problem import ModelConfig
from dnewton.app.training import train
from dnewton.io.data import RawData, read_dataset
from dnewton.solvers.newton import NewtonOptions

pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import peers  # noqa: E402

pytestmark = pytest.mark.bench  # a bench/ script: make test-bench


@pytest.mark.parametrize("activation, loss", [("relu", "squared"), ("tanh", "softmax")])
def test_peer_follows_dnewton_on_one_rank(activation, loss):
    digits, _ = read_dataset("digits")
    data = RawData(digits.X[:48], digits.y[:48], "digits, first 48")  # all ten classes
    config = ModelConfig(hidden=(8, 8), activation=activation, loss=loss, C=0.1,
                         feature_scale=16.0, center=True, dtype="float64")  # as the peer
    options = NewtonOptions(iterations=3, gn_size=16, seed=3)

    expected = train(data, None, config, options, comm=MPI.COMM_SELF).history
    got, message = peers.run_peer(data, None, config, options, threads=1)

    assert [r["iter"] for r in got] == [r.iter for r in expected] == [0, 1, 2, 3]
    assert [r.get("cg_iters") for r in got[1:]] == [r.cg_iters for r in expected[1:]]
    np.testing.assert_allclose([r["f"] for r in got], [r.f for r in expected], rtol=1e-6)
    np.testing.assert_allclose([r["lambda"] for r in got[1:]],
                               [r.lambda_ for r in expected[1:]], rtol=1e-12)
    assert got[-1]["f"] < got[0]["f"]
    assert message == "reached the iteration limit"
