# Two commands set up everything on a fresh machine: `make app` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
STAMP := $(VENV)/.installed

.PHONY: app test test-fast lint setup clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	@# torch first, pinned: a bare "torch" requirement would pull a multi-GB CUDA build.
	$(PY) -m pip show torch >/dev/null 2>&1 || $(PY) -m pip install "torch==$(TORCH_VERSION)"
	$(PY) -m pip install -e ".[lab,dev]"
	touch $(STAMP)

setup: $(STAMP)

# Local only (127.0.0.1) and no usage statistics, wherever it is started from: see labkit/cli/app.py.
app: $(STAMP)
	$(VENV)/bin/labkit app

test: $(STAMP)
	$(PY) -m pytest

# Unit tests only (no data, no processes, no browser): under 2 minutes.
test-fast: $(STAMP)
	$(PY) -m pytest tests/unit -q

lint: $(STAMP)
	$(VENV)/bin/ruff check labkit app tests

clean:
	rm -rf $(VENV)
