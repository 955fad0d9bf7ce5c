# Two entry points for a fresh clone: `make demo` and `make test`. Both create .venv first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test test-fast check contract install proto constraints clean

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, pinned: this takes the CPU wheel; an unpinned torch pulls gigabytes of CUDA.
	$(PY) -m pip install -q torch==2.13.0
	# constraints.txt pins every dependency to the versions the suite last passed with.
	$(PY) -m pip install -q -e '.[dev]' -c constraints.txt
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/convergent demo $(DEMO_ARGS)

# Two pytest-xdist workers (most tests wait on servers and subprocesses); TEST_WORKERS=0: one process.
TEST_WORKERS ?= 2

test: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) $(PYTEST_ARGS)

# The edit loop: everything but the tests marked slow.
test-fast: $(STAMP)
	$(PY) -m pytest -n $(TEST_WORKERS) -m "not slow" $(PYTEST_ARGS)

# Lint and types (ruff and mypy, configured in pyproject.toml); CI runs it before the tests.
check: $(STAMP) contract
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

# The contract: buf lint, and buf breaking against every released contract (proto/released/).
contract: $(STAMP)
	BUF=$(VENV)/bin/buf bash proto/check.sh

proto: $(STAMP)
	PYTHON=$(PY) proto/gen.sh

# Re-resolve the newest versions the project's ranges allow into constraints.txt (then run make test).
constraints:
	rm -rf .venv-constraints
	$(PYTHON) -m venv .venv-constraints
	.venv-constraints/bin/pip install -q torch==2.13.0
	.venv-constraints/bin/pip install -q -e '.[dev]'
	(echo "# Versions CI and 'make install' use (pip -c): what the suite was last run with. Refresh: make constraints"; \
	 .venv-constraints/bin/pip freeze --exclude-editable | sed 's/^torch==\([0-9.]*\)+cpu$$/torch==\1/') > constraints.txt
	rm -rf .venv-constraints

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache convergent-report
