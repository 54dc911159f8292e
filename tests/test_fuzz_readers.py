"""Readers that survive any bytes: every reader, fed generated and mutated inputs
(Hypothesis), either loads what the input says or raises InputError (status 2 on
the command line); never another exception, a hang, or silently different data.

The mutations start from the real-format files of tests/corpus (README there).
Each property runs `EXAMPLES` inputs, the same ones every run (derandomized): 500
in `make test`, as many as DNEWTON_FUZZ_EXAMPLES says otherwise (`make fuzz`: 5000,
a deeper search for a reader change); an input that takes longer than `HANG`
seconds fails as a hang. The readers of rank 0 do not communicate (the collective
ones run on ``MPI.COMM_SELF`` here), so these tests run in the one-process suite
only: under ``mpiexec -n 3`` every rank would repeat the same inputs.
"""

import bz2
import functools
import gzip
import json
import math
import os
import shutil
import signal
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mpi4py import MPI

from dnewton.errors import InputError
from dnewton.io import cache, libsvm
from dnewton.io.checkpoint import NAME, Checkpoint
from dnewton.io.data import read_npz
from dnewton.io.model_file import Model, read_arrays
from dnewton.planning.machine import Machine

pytestmark = pytest.mark.skipif(MPI.COMM_WORLD.size > 1,
                                reason="readers of one rank: the one-process suite runs them")

CORPUS = Path(__file__).parent / "corpus"
EXAMPLES = int(os.environ.get("DNEWTON_FUZZ_EXAMPLES", "500"))
HANG = 5  # seconds: a reader that takes longer on a small input hangs

FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))


@contextmanager
def no_hang(seconds=HANG):
    """Fail (TimeoutError) if the block takes more than `seconds`."""
    def hang(number, frame):
        raise TimeoutError(f"a reader took more than {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def loads_or_refuses(read):
    """`read()`'s result, or None if it raised InputError; anything else fails."""
    with no_hang():
        try:
            return read()
        except InputError:
            return None


# -- mutations of real files --------------------------------------------------------------

EDITS = st.lists(st.tuples(st.sampled_from(["flip", "set", "insert", "delete", "cut"]),
                           st.integers(0, 2**31), st.integers(0, 255)),
                 min_size=1, max_size=4)


def mutate(data, edits):
    data = bytearray(data)
    for kind, where, byte in edits:
        at = where % (len(data) + 1)
        if kind == "flip" and data:
            data[at % len(data)] ^= 1 << (byte % 8)
        elif kind == "set" and data:
            data[at % len(data)] = byte
        elif kind == "insert":
            data[at:at] = bytes([byte])
        elif kind == "delete" and data:
            del data[at % len(data)]
        elif kind == "cut":
            del data[at:]
    return bytes(data)


# -- an independent reading of LIBSVM text, the oracle ------------------------------------


def reference(data):
    """(rows of {index: value}, labels) of LIBSVM bytes as the format defines them, or
    None if any line breaks its rules: ``label index:value ...`` separated by ASCII
    white space, indices from 1 strictly increasing, finite numbers in decimal
    notation, ``#`` comments (of any bytes), ``qid:N`` after the label ignored,
    >= 1 instance."""
    def number(token):
        if not token or any(c not in b"0123456789+-.eE" for c in token):
            return None
        try:
            value = float(token)
        except ValueError:
            return None
        return value if math.isfinite(value) else None

    rows, labels = [], []
    for line in data.split(b"\n"):
        tokens = line.partition(b"#")[0].split()  # bytes split: ASCII white space only
        if not tokens:
            continue
        label = number(tokens[0])
        if label is None:
            return None
        row, previous = {}, 0
        features = tokens[1:]
        if features and features[0].startswith(b"qid:"):  # only right after the label
            if not features[0][4:].isdigit():
                return None
            features = features[1:]
        for token in features:
            index, sep, value = token.partition(b":")
            if not sep or not index.lstrip(b"+").isdigit() or index.startswith(b"++") \
                    or int(index) <= previous:
                return None
            value = number(value)
            if value is None:
                return None
            row[int(index)] = value
            previous = int(index)
        rows.append(row)
        labels.append(label)
    return (rows, labels) if rows else None


def same_as_reference(loaded, expected):
    X, y, _ = loaded
    rows, labels = expected
    np.testing.assert_array_equal(y, labels)
    dense = X.toarray()
    for i, row in enumerate(rows):
        want = np.zeros(dense.shape[1])
        for index, value in row.items():
            want[index - 1] = value
        np.testing.assert_array_equal(dense[i], want)


def write(path, data):
    Path(path).write_bytes(data)
    return path


# -- LIBSVM text ----------------------------------------------------------------------------

TOKENS = st.sampled_from(["1", "2", "0", "-1", "+1", "3.5", "1e3", "1e400", "nan", "inf",
                          "-0", ".5", "5.", "1:", ":1", "1:2", "2:0.5", "3:-1", "10:1",
                          "qid:1", "#", " ", "  ", "\t", "\n", "\r\n", "e", "-", "x", "1:1:1",
                          "0:1", "01:2", "1:1e-300", "2:1E5", "\x00", "é"])
ROW = st.tuples(st.integers(0, 3),
                st.lists(st.tuples(st.integers(1, 12),
                                   st.floats(allow_nan=False, allow_infinity=False,
                                             width=32)),
                         max_size=6, unique_by=lambda p: p[0]))


@FUZZ
@given(st.lists(ROW, min_size=1, max_size=8))
def test_well_formed_libsvm_loads_exactly(tmp_path_factory, rows):
    path = tmp_path_factory.getbasetemp() / "well.svm"
    lines = [" ".join([str(label), *(f"{i}:{v!r}" for i, v in sorted(features))])
             for label, features in rows]
    text = "\n".join(lines) + "\n"
    loaded = loads_or_refuses(lambda: libsvm.load(write(path, text.encode())))
    assert loaded is not None, text
    same_as_reference(loaded, reference(text.encode()))


@FUZZ
@given(st.lists(TOKENS, max_size=30))
def test_any_libsvm_text_loads_as_the_format_says_or_is_refused(tmp_path_factory, tokens):
    path = tmp_path_factory.getbasetemp() / "any.svm"
    text = "".join(token if token.isspace() else " " + token for token in tokens)
    loaded = loads_or_refuses(lambda: libsvm.load(write(path, text.encode())))
    expected = reference(text.encode())
    if expected is None:
        assert loaded is None, f"loaded what the format refuses: {text!r}"
    else:
        assert loaded is not None, f"refused a well-formed file: {text!r}"
        same_as_reference(loaded, expected)


ORIGINAL = {}


def original(name):
    """The corpus file `name` as the readers load it unchanged (the comparison for a
    mutated copy that still loads)."""
    if name not in ORIGINAL:
        ORIGINAL[name] = libsvm.load(CORPUS / name)
    return ORIGINAL[name]


CORPUS_ARRAYS = {}


def corpus_arrays(name):
    """A fresh dict of the arrays of the corpus file `name` (.npz), read once: the
    properties that build on it would read it for each of their inputs."""
    if name not in CORPUS_ARRAYS:
        with np.load(CORPUS / name) as a:
            CORPUS_ARRAYS[name] = {k: a[k] for k in a.files}
    return dict(CORPUS_ARRAYS[name])


def same_data(a, b):
    np.testing.assert_array_equal(a[0].toarray(), b[0].toarray())
    np.testing.assert_array_equal(a[1], b[1])


@FUZZ
@given(EDITS)
def test_mutated_libsvm_text_loads_as_the_format_says_or_is_refused(tmp_path_factory, edits):
    path = tmp_path_factory.getbasetemp() / "mutated.svm"
    data = mutate((CORPUS / "small.svm").read_bytes(), edits)
    loaded = loads_or_refuses(lambda: libsvm.load(write(path, data)))
    expected = reference(data)
    if loaded is None and b"\0" in data:
        return  # a NUL byte: not text, whatever the format says around it
    if expected is None:
        assert loaded is None, f"loaded what the format refuses: {data!r}"
    else:
        assert loaded is not None, f"refused a well-formed file: {data!r}"
        same_as_reference(loaded, expected)


@FUZZ
@pytest.mark.parametrize("suffix", [".gz", ".bz2"])
@given(edits=EDITS)
def test_mutated_compressed_libsvm_loads_the_same_data_or_is_refused(tmp_path_factory,
                                                                     suffix, edits):
    path = tmp_path_factory.getbasetemp() / f"mutated.svm{suffix}"
    data = mutate((CORPUS / f"small.svm{suffix}").read_bytes(), edits)
    loaded = loads_or_refuses(lambda: libsvm.load(write(path, data)))
    if loaded is not None:  # the checksums let no change of content through
        same_data(loaded, original("small.svm"))


# -- .npz data sets -----------------------------------------------------------------------

ARRAYS = st.one_of(
    st.builds(np.array, st.lists(st.floats(), max_size=6)),
    st.builds(lambda n, m: np.ones((n, m)), st.integers(0, 3), st.integers(0, 3)),
    st.builds(lambda n: np.arange(n).astype(np.int8), st.integers(0, 4)),
    st.just(np.array("text")), st.just(np.array(3.0)), st.just(np.zeros((2, 2, 2))),
    st.just(np.array([True, False])), st.just(np.array([1 + 2j, 3j])),
)


@FUZZ
@given(st.dictionaries(st.sampled_from(["X", "y", "z"]), ARRAYS, max_size=3))
def test_any_npz_data_set_loads_as_given_or_is_refused(tmp_path_factory, arrays):
    path = tmp_path_factory.getbasetemp() / "any.npz"
    np.savez(path, **arrays)
    loaded = loads_or_refuses(lambda: read_npz(path))
    if loaded is not None:
        np.testing.assert_array_equal(loaded.X, arrays["X"])
        np.testing.assert_array_equal(loaded.y, arrays["y"])
        assert np.isfinite(loaded.X).all() and len(loaded.y) == len(loaded.X) > 0


@FUZZ
@given(EDITS)
def test_mutated_npz_data_set_loads_the_same_data_or_is_refused(tmp_path_factory, edits):
    path = tmp_path_factory.getbasetemp() / "mutated.npz"
    loaded = loads_or_refuses(lambda: read_npz(write(path, mutate(
        (CORPUS / "data.npz").read_bytes(), edits))))
    if loaded is not None:
        with np.load(CORPUS / "data.npz") as a:
            np.testing.assert_array_equal(loaded.X, a["X"])
            np.testing.assert_array_equal(loaded.y, a["y"])


# -- cache entries ----------------------------------------------------------------------------


def _cache_setup(base):
    folder, text = base / "cache", base / "cached.svm"
    shutil.copy(CORPUS / "small.svm", text)
    key = cache.Key(text)
    where = cache.entry(folder, text.name, key.digest)
    folder.mkdir(exist_ok=True)
    return key, where


@FUZZ
@given(EDITS)
def test_a_mutated_cache_entry_serves_the_same_data_or_misses(tmp_path_factory, edits):
    key, where = _cache_setup(tmp_path_factory.getbasetemp())
    with no_hang():
        write(where, mutate((CORPUS / "cache-entry.npz").read_bytes(), edits))
        served = cache.load(where.parent, key)
    if served is not None:
        same_data(served, original("small.svm"))


INDEX_ARRAYS = st.builds(np.array, st.lists(st.integers(-3, 20), max_size=8))


@FUZZ
@given(st.fixed_dictionaries({
    "data": st.builds(np.array, st.lists(st.floats(width=64), max_size=8)),
    "indices": INDEX_ARRAYS, "indptr": INDEX_ARRAYS,
    "shape": st.builds(np.array, st.lists(st.integers(-1, 12), min_size=1, max_size=3)),
    "y": st.builds(np.array, st.lists(st.floats(width=64), max_size=6)),
}))
def test_a_crafted_cache_entry_is_served_only_if_a_parse_could_give_it(tmp_path_factory,
                                                                        arrays):
    key, where = _cache_setup(tmp_path_factory.getbasetemp())
    np.savez(where, digest=np.array(key.digest), **arrays)
    with no_hang():
        served = cache.load(where.parent, key)
    if served is not None:  # then it is a CSR matrix as the LIBSVM reader makes them
        X, y = served
        rows, columns = X.shape
        assert rows == len(y) >= 1 and np.isfinite(X.data).all() and np.isfinite(y).all()
        for i in range(rows):
            cols = X.indices[X.indptr[i]:X.indptr[i + 1]]
            assert (np.diff(cols) > 0).all() and (cols >= 0).all() and (cols < columns).all()
        X.toarray()  # it describes a matrix


# -- model files, checkpoints, machine files ----------------------------------------------------


def _model(arrays, source):
    return Model.from_arrays(arrays, source)


def same_model(a, b):
    for key in ("widths", "activation", "loss", "feature_scale", "classes", "dtype"):
        np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
    for x, y in zip([*a.weights, *a.biases], [*b.weights, *b.biases]):
        np.testing.assert_array_equal(x, y)


@functools.cache
def corpus_model():
    """The corpus model file as loaded unchanged (the comparison for a mutated copy)."""
    return _model(read_arrays(CORPUS / "model.npz", "model file"), "corpus")


@FUZZ
@given(EDITS)
def test_a_mutated_model_file_loads_the_same_model_or_is_refused(tmp_path_factory, edits):
    path = tmp_path_factory.getbasetemp() / "mutated-model.npz"
    write(path, mutate((CORPUS / "model.npz").read_bytes(), edits))
    model = loads_or_refuses(lambda: _model(read_arrays(path, "model file"), path))
    if model is not None:
        same_model(model, corpus_model())


@FUZZ
@given(st.sets(st.sampled_from(sorted(np.load(CORPUS / "model.npz").files))),
       st.dictionaries(st.sampled_from(sorted(np.load(CORPUS / "model.npz").files)), ARRAYS,
                       max_size=2))
def test_a_model_file_with_arrays_missing_or_replaced_is_refused_or_loads(
        tmp_path_factory, dropped, replaced):
    path = tmp_path_factory.getbasetemp() / "crafted-model.npz"
    arrays = {k: v for k, v in corpus_arrays("model.npz").items() if k not in dropped}
    arrays.update(replaced)
    np.savez(path, **arrays)
    model = loads_or_refuses(lambda: _model(read_arrays(path, "model file"), path))
    if model is not None:  # what loads is a network that predicts
        widths = [int(w) for w in model.widths]
        assert [W.shape for W in model.weights] == list(zip(widths[:-1], widths[1:]))
        assert all(np.isfinite(W).all() for W in model.weights)


@pytest.fixture(scope="module")
def corpus_checkpoint():
    return Checkpoint.load(MPI.COMM_SELF, CORPUS)


@FUZZ
@given(edits=EDITS)
def test_a_mutated_checkpoint_loads_the_same_state_or_is_refused(tmp_path_factory,
                                                                 corpus_checkpoint, edits):
    folder = tmp_path_factory.getbasetemp() / "mutated-ck"
    folder.mkdir(exist_ok=True)
    write(folder / NAME, mutate((CORPUS / NAME).read_bytes(), edits))
    loaded = loads_or_refuses(lambda: Checkpoint.load(MPI.COMM_SELF, folder))
    if loaded is not None:
        same_model(loaded.model, corpus_checkpoint.model)
        assert (loaded.iteration, loaded.history, loaded.settings, loaded.generator) == (
            corpus_checkpoint.iteration, corpus_checkpoint.history,
            corpus_checkpoint.settings, corpus_checkpoint.generator)


@FUZZ
@given(EDITS)
def test_a_mutated_machine_file_loads_or_is_refused(tmp_path_factory, edits):
    path = tmp_path_factory.getbasetemp() / "mutated-machine.json"
    data = mutate((CORPUS / "machine.json").read_bytes(), edits)
    machine = loads_or_refuses(lambda: Machine.load(write(path, data)))
    if machine is not None:  # then the file said exactly this machine
        record = json.loads(data.decode("utf-8"))
        record["source"] = machine.source
        assert Machine.from_json(record) == machine


def test_the_corpus_loads():
    X, y, n = original("small.svm")
    assert X.shape == (12, 5) and n == 5 and sorted(set(y)) == [1, 2, 3]
    for suffix in (".gz", ".bz2"):
        same_data(libsvm.load(CORPUS / f"small.svm{suffix}"), (X, y))
    assert gzip.decompress((CORPUS / "small.svm.gz").read_bytes()) == bz2.decompress(
        (CORPUS / "small.svm.bz2").read_bytes()) == (CORPUS / "small.svm").read_bytes()
    np.testing.assert_array_equal(read_npz(CORPUS / "data.npz").X, X.toarray())
    model = _model(read_arrays(CORPUS / "model.npz", "model file"), "corpus")
    assert list(model.widths) == [5, 3, 3]
    assert Checkpoint.load(MPI.COMM_SELF, CORPUS).iteration == 2
    assert Machine.load(CORPUS / "machine.json").cores_per_node >= 1
    key, where = _cache_setup(Path(tempfile.mkdtemp()))
    shutil.copy(CORPUS / "cache-entry.npz", where)
    same_data(cache.load(where.parent, key), (X, y))


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.sampled_from(["iter", "f", "gnorm", "lambda", "x"]),
                                      inner, max_size=4),
                    max_leaves=8)


@FUZZ
@given(st.sampled_from(["generator", "scalars", "history", "settings"]), JSON,
       st.sampled_from([None, np.array(-1), np.array(2.5), np.array([2]), np.array(7)]))
def test_a_checkpoint_with_crafted_state_is_refused_or_resumable(tmp_path_factory,
                                                                 corpus_checkpoint, field,
                                                                 value, iteration):
    folder = tmp_path_factory.getbasetemp() / "crafted-ck"
    folder.mkdir(exist_ok=True)
    arrays = corpus_arrays(NAME)
    arrays[field] = np.array(json.dumps(value))
    if iteration is not None:
        arrays["iteration"] = iteration
    np.savez(folder / NAME, **arrays)
    loaded = loads_or_refuses(lambda: Checkpoint.load(MPI.COMM_SELF, folder))
    if loaded is not None:  # what a resumption reads of it works
        assert loaded.records()[-1].iter == loaded.iteration
        np.random.Generator(getattr(np.random, loaded.generator["bit_generator"])()
                            ).bit_generator.state = loaded.generator
