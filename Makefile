# Entry points for a fresh machine (see README):
#   make demo   -- build into .venv and train on the embedded MNIST subset with 2 ranks
#   make test   -- build into .venv and run the test suite (what CI runs)
#   make test-bench -- the tests of the bench/ scripts
#   make fuzz   -- the readers' fuzz tests on ten times the inputs
# Everything needed is created on first use; nothing outside this folder is touched.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
NP     ?= 2
# Newton iterations of make demo
ITERATIONS ?= 30
# Last resort against a hung job: MPICH's mpiexec kills the job after this many seconds.
export MPIEXEC_TIMEOUT ?= 900

.PHONY: demo test test-bench fuzz bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# An editable build: meson rebuilds the extension on import when a source changed.
$(VENV)/.installed: $(BIN)/python pyproject.toml meson.build
	$(BIN)/python -m pip install -q meson-python meson ninja cython numpy scipy
	$(BIN)/python -m pip install -q --no-build-isolation -e '.[mpich,test]'
	$(BIN)/python -c "import dnewton._kernels"
	touch $@

demo: $(VENV)/.installed
	$(BIN)/python -c "import dnewton._kernels"
	$(BIN)/mpiexec -n $(NP) $(BIN)/dnewton train mnist-demo --hidden 300,300 --feature-scale 255 \
	    --center --iterations $(ITERATIONS)

# The suite on one process (it starts mpiexec itself where a test needs a whole
# run), then its in-process tests again on 3 ranks, as mpi4py's own suite runs:
# every collective path of the library under several ranks, and the first
# failure on any rank aborts the job. The lint comes first; the tests of the
# bench/ scripts (marker bench) are make test-bench's.
test: $(VENV)/.installed
	$(BIN)/ruff check .
	$(BIN)/python -c "import dnewton._kernels"
	$(BIN)/python -m pytest -q -m "not bench" tests
	OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 $(BIN)/mpiexec -n 3 \
	    $(BIN)/python -m pytest -q -p no:cacheprovider -m "not mpi and not bench" tests

# The readers' fuzz tests with ten times make test's inputs (after a reader change).
fuzz: $(VENV)/.installed
	DNEWTON_FUZZ_EXAMPLES=5000 $(BIN)/python -m pytest -q tests/test_fuzz_readers.py

test-bench: $(VENV)/.installed
	$(BIN)/python -c "import dnewton._kernels"
	$(BIN)/python -m pytest -q -m bench tests

bench: $(VENV)/.installed
	$(BIN)/python bench/bench_kernels.py

clean:
	rm -rf build $(VENV)
