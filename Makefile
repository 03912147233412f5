# Everything runs from a virtual environment inside the clone (.venv), built from pyproject.toml alone, so a
# missing install step fails here rather than hiding behind a machine's global packages. Compiled DeepSpeed ops and
# the offline tiny model are cached inside the clone too (.cache/), and reused between runs.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.spinegpt-installed

export TORCH_EXTENSIONS_DIR ?= $(CURDIR)/.cache/torch_extensions
export SPINEGPT_CACHE ?= $(CURDIR)/.cache/spinegpt
# DeepSpeed's ops are JIT-compiled on first use (and cached above), never at install time.
export DS_BUILD_OPS := 0

.PHONY: setup smoke test test-fast test-unit check format clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	# torch first and exactly pinned: on a CPU machine this takes the local CPU wheel instead of GBs of CUDA.
	$(BIN)/pip install --quiet "torch==2.13.0"
	$(BIN)/pip install --quiet -e ".[dev]"
	# CPU-only import fixes (a no-op where CUDA is available): see src/spinegpt/testing/cpu_shims.py.
	$(BIN)/python -m spinegpt.testing.cpu_shims install
	touch $(STAMP)

smoke: setup
	$(BIN)/spinegpt run curricula/smoke.yaml --nproc 2 --output-dir outputs/smoke --resume

# Two workers (pytest-xdist): the e2e tier in order on one, unit and integration on the other (tests/conftest.py).
test: setup
	$(BIN)/python -m pytest -v --durations=15 -n 2

# Tiers by folder (tests/conftest.py): unit (in-process, about a minute), integration (the real command line,
# servers, scripts; nothing trains), e2e (the real engine trains: the slow part of `make test`).
test-fast: setup
	$(BIN)/python -m pytest tests/unit tests/integration

test-unit: setup
	$(BIN)/python -m pytest tests/unit

check: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	rm -rf build/typecheck && mkdir -p build/typecheck/spinegpt
	for f in src/spinegpt/* train data_mixes eval_hooks configs launch; do \
		ln -s "$(CURDIR)/$$f" "build/typecheck/spinegpt/$$(basename $$f)"; done
	MYPYPATH=build/typecheck $(BIN)/mypy -p spinegpt

format: setup
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

clean:
	rm -rf outputs .cache .pytest_cache .mypy_cache .ruff_cache
