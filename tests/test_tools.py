"""The tool around training: embedded data sets, compressed LIBSVM and .npz input,
the live progress line, and figures of run logs."""

import bz2
import gzip
import io
import json
import sys

import numpy as np
import pytest
from shared_runs import SharedRuns

from dnewton.app.monitor import Monitor
from dnewton.app.plot import plot_logs
from dnewton.errors import InputError
from dnewton.io.data import DATASETS, read_dataset
from dnewton.run_records import IterationRecord

SMALL = ["--hidden", "8", "--iterations", "2", "--quiet"]
LINES = [f"{i % 3} 1:{i / 40:.3f} 2:{(i * 7 % 11) / 11:.3f} 4:0.5" for i in range(40)]
TEXT = "\n".join(LINES) + "\n"


COMPRESSED = ("train.svm", "train.svm.gz", "train.svm.bz2")


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every run of this module, in one shared job per rank count (shared_runs.py);
    the 3-rank job first: it writes the model that a 2-rank run predicts with."""
    runs = SharedRuns(tmp_path_factory.mktemp("tools"))
    tmp = runs.scratch
    (tmp / "train.svm").write_text(TEXT)
    npz = write_npz(tmp / "train.npz", *dense())
    for train in (tmp / "train.svm", npz):
        runs.add(("npz", train.name), 3, ["train", train, "--test", npz, *SMALL, "--log",
                                          runs.log_path(("npz", train.name)), "--model",
                                          tmp / "model.npz"])
    runs.add("npz predict", 2, ["predict", tmp / "model.npz", npz])
    (tmp / "train.svm.gz").write_bytes(gzip.compress(TEXT.encode()))
    (tmp / "train.svm.bz2").write_bytes(bz2.compress(TEXT.encode()))
    for name in COMPRESSED:
        runs.add(name, 2, ["train", tmp / name, "--test", tmp / "train.svm", *SMALL, "--log",
                           runs.log_path(name)])
    runs.add("datasets", 1, ["datasets"])
    log = runs.log_path("plotted")
    runs.add("plotted", 1, ["train", "digits", *SMALL, "--log", log])
    runs.add("plot", 1, ["plot", log, "--vs", log, "-o", tmp / "fig.png"])
    (tmp / "bad.jsonl").write_text('{"iter": 0}\n')
    runs.add("plot bad log", 1, ["plot", tmp / "bad.jsonl", "-o", tmp / "x.png"])
    runs.add("plot bad format", 1, ["plot", log, "-o", tmp / "x.nosuchformat"])
    return runs.run()


@pytest.mark.mpi
def test_datasets_lists_the_embedded_sets(runs):
    proc = runs.checked("datasets")
    assert [line.split(":")[0] for line in proc.stdout.splitlines()] == list(DATASETS)
    assert "1,347 train / 450 test" in proc.stdout


@pytest.mark.mpi
def test_compressed_libsvm_files_train_to_the_same_log(runs):
    logs = [[(r["f"], r["test_accuracy"]) for r in runs.log(name)] for name in COMPRESSED]
    np.testing.assert_allclose(logs[0], logs[1], rtol=1e-9)
    np.testing.assert_allclose(logs[0], logs[2], rtol=1e-9)


def write_npz(path, X, y):
    np.savez(path, X=X, y=y)
    return path


def dense(lines=LINES):
    X = np.zeros((len(lines), 4))
    y = np.zeros(len(lines))
    for i, line in enumerate(lines):
        label, *pairs = line.split()
        y[i] = float(label)
        for pair in pairs:
            j, value = pair.split(":")
            X[i, int(j) - 1] = float(value)
    return X, y


@pytest.mark.mpi
def test_npz_input_trains_like_the_same_libsvm_data(runs):
    logs = [[(r["f"], r["test_accuracy"]) for r in runs.log(("npz", name))]
            for name in ("train.svm", "train.npz")]
    # The LIBSVM file stays sparse (layer 1 on CSR blocks), the .npz is dense: their
    # sums run in another order, so the runs agree to rounding.
    np.testing.assert_allclose(logs[0], logs[1], rtol=1e-9)
    proc = runs.checked("npz predict")
    assert f"accuracy {100 * logs[1][-1][1]:.2f}%" in proc.stdout


@pytest.mark.parametrize("arrays, message", [
    ({"X": np.zeros((3, 2))}, "needs arrays X (instances x features) and y"),
    ({"X": np.zeros(3), "y": np.zeros(3)}, "need (l, n) and (l,)"),
    ({"X": np.zeros((3, 2)), "y": np.zeros(2)}, "need (l, n) and (l,)"),
    ({"X": np.zeros((0, 2)), "y": np.zeros(0)}, "holds no instances"),
    ({"X": np.zeros((2, 2)), "y": np.array(["a", "b"])}, "must be numeric"),
    ({"X": np.array([[0, np.inf]]), "y": np.zeros(1)}, "not finite"),
])
def test_bad_npz_data_is_refused_with_a_reason(tmp_path, arrays, message):
    path = tmp_path / "data.npz"
    np.savez(path, **arrays)
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_dataset(path)


def test_npz_test_set_must_have_the_model_features(tmp_path):
    path = write_npz(tmp_path / "test.npz", np.zeros((2, 3)), np.zeros(2))
    with pytest.raises(InputError, match="X has 3 features, the model 4"):
        read_dataset(path, n_features=4)
    (tmp_path / "junk.npz").write_text("junk")
    with pytest.raises(InputError, match="not a readable .npz"):
        read_dataset(tmp_path / "junk.npz")


class Terminal(io.StringIO):
    def isatty(self):
        return True


def record(k, seconds):
    return IterationRecord(k, 1.0 / (k + 1), 0.1, cg_iters=3, alpha=1.0, lambda_=1.0,
                           rho=0.9, time=seconds, iteration_time=0.5, test_accuracy=0.5)


def test_progress_is_one_live_line_on_a_terminal_and_plain_lines_in_a_pipe():
    screen, pipe = Terminal(), io.StringIO()
    for stream in (screen, pipe):
        monitor = Monitor(0, stream=stream, iterations=4)
        monitor.message("dnewton: start")
        for k in range(5):
            monitor(record(k, 0.5 * k))
        monitor.message("dnewton: stopped")
        monitor.close()
    # The terminal: each iteration rewrites the same line; it ends before the message.
    text = screen.getvalue()
    assert text.startswith("dnewton: start\n\riter 0/4  f 1.000000e+00")
    assert text.count("\r") == 5 and text.count("\x1b[K") == 5
    assert "iter 2/4" in text and "0.5 s/iter  left 0:00:01" in text
    assert text.endswith("acc  50.00%  0.5 s/iter  left 0:00:00\x1b[K\ndnewton: stopped\n")
    # The pipe: one plain line per iteration, no control characters.
    lines = pipe.getvalue().splitlines()
    assert len(lines) == 7 and lines[1].startswith("iter    0  f 1.000000e+00")
    assert "\r" not in pipe.getvalue() and "\x1b" not in pipe.getvalue()


def test_sgd_epochs_are_shown_as_epochs_with_their_learning_rate():
    screen, pipe = Terminal(), io.StringIO()
    for stream in (screen, pipe):
        monitor = Monitor(0, stream=stream, iterations=3)
        for k in range(3):
            monitor(IterationRecord(k, 2.0 - k, 0.1, alpha=None if k == 0 else 0.05,
                                    time=0.25 * k, iteration_time=0.25, test_accuracy=0.5))
        monitor.close()
    assert "\repoch 1/3  f 1.000000e+00" in screen.getvalue()
    assert "\repoch 2/3  f 0.000000e+00" in screen.getvalue()
    assert "0.25 s/epoch" in screen.getvalue()
    lines = pipe.getvalue().splitlines()
    assert lines[0].startswith("iter    0  f 2.000000e+00")
    assert lines[1] == "epoch    1  f 1.000000e+00  |g| 1.000e-01  lr 0.05   0.250s  acc  50.00%"


def test_quiet_and_other_ranks_print_nothing():
    for monitor in (Monitor(0, quiet=True, stream=Terminal()), Monitor(1, stream=Terminal())):
        monitor(record(0, 0.0))
        monitor.message("hello")
        monitor.close()
        assert monitor.stream.getvalue() == ""


def test_plot_draws_every_quantity_of_every_run(tmp_path):
    logs, f_values = [], []
    for name, scale in (("a.jsonl", 1.0), ("b.jsonl", 2.0)):
        path = tmp_path / name
        f_values.append([scale / (k + 1) for k in range(6)])
        path.write_text("".join(
            json.dumps(dict(record(k, 0.3 * k).as_dict(), f=scale / (k + 1))) + "\n"
            for k in range(6)))
        logs.append(path)
    output = tmp_path / "fig.png"
    figure = plot_logs(logs, output)
    axes = figure.axes
    assert len(axes) == 6  # f, ||g||, accuracy; against iterations and against time
    for ax, xlabel in zip(axes, ["Newton iteration"] * 3 + ["time (s)"] * 3):
        assert ax.get_xlabel() == xlabel
        assert [line.get_label() for line in ax.get_lines()] == ["a.jsonl", "b.jsonl"]
    f_by_iteration, f_by_time = axes[0], axes[3]
    for line, want in zip(f_by_iteration.get_lines(), f_values):
        np.testing.assert_array_equal(line.get_xdata(), range(6))
        np.testing.assert_allclose(line.get_ydata(), want)
    np.testing.assert_allclose(f_by_time.get_lines()[0].get_xdata(), [0.3 * k for k in range(6)])
    assert f_by_iteration.get_yscale() == "log" and axes[2].get_yscale() == "linear"
    from matplotlib.image import imread

    image = imread(output)
    assert image.shape[:2] == (700, 1300)  # 13 x 7 inches at 100 dpi
    assert (image[..., :3] < 0.5).any()  # something was drawn


@pytest.mark.mpi
def test_plot_command_and_its_errors(runs):
    runs.checked("plotted")
    runs.checked("plot")
    assert (runs.scratch / "fig.png").stat().st_size > 10_000
    proc = runs["plot bad log"]
    assert proc.returncode == 2 and "line 1 is not a dnewton log record" in proc.stderr
    proc = runs["plot bad format"]
    assert proc.returncode == 2 and "cannot write the figure" in proc.stderr


def test_plot_without_matplotlib_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import fails
    with pytest.raises(InputError, match=r"pip install 'dnewton\[plot\]'"):
        plot_logs([tmp_path / "run.jsonl"], tmp_path / "fig.png")
