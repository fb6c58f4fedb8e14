# cptnb: `make demo` (the main job) and `make test`. Both create .venv on first use.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.cptnb-installed
export HF_HUB_OFFLINE ?= 1
export TOKENIZERS_PARALLELISM ?= false

.PHONY: install demo demo-all test test-fast test-gpu lab lint clean

install: $(STAMP)

$(STAMP): requirements.txt requirements-cpu.txt pyproject.toml scripts/install.sh
	bash scripts/install.sh $(VENV) $(PYTHON)
	touch $@

demo: $(STAMP)
	$(PY) -m cptnb.cli demo --out runs/quickstart

# Every notebook in order on smollm2-135m (2-core CPU: 39 min 28 s measured, see README); executed copies and figures in runs/<name>/
NOTEBOOKS := $(sort $(basename $(notdir $(wildcard notebooks/*.ipynb))))
demo-all: $(STAMP)
	@set -e; for nb in $(NOTEBOOKS); do \
	  echo "[cptnb] running $$nb -> runs/$$nb"; start=$$(date +%s); \
	  $(PY) -m cptnb.cli notebook $$nb --out runs/$$nb; \
	  echo "[cptnb] $$nb done in $$(( $$(date +%s) - start )) s"; \
	done

# The suite is shared among TEST_WORKERS processes (pytest-xdist): most of it is one-threaded Python, so two workers
# use both cores of a small machine. A test file's tests stay together (tests/conftest.py), notebook runs spread.
TEST_WORKERS ?= 2
test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup

# The quick local loop: everything but the tests marked slow (lm-eval parity, resume and launch subprocesses,
# exhaustive sweeps, notebook runs); `make test` still runs them all.
test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadgroup -m "not slow"

test-gpu: $(STAMP)
	$(PY) -m pytest -q -m gpu

# Rules (pyflakes, bugbear, import order, 120-character lines) live in pyproject.toml; notebooks are linted too.
RUFF_VERSION := 0.17.6
lint: $(STAMP)
	@$(VENV)/bin/ruff --version 2>/dev/null | grep -qx "ruff $(RUFF_VERSION)" || $(PY) -m pip install -q ruff==$(RUFF_VERSION)
	$(VENV)/bin/ruff check cptnb tests notebooks

lab: $(STAMP)
	$(VENV)/bin/jupyter lab notebooks/

clean:
	rm -rf runs/ .pytest_cache
