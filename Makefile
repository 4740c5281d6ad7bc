# Every target sets up what it needs: a fresh clone runs `make demo` or `make test` as is.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PEERS := .venv-peers

.PHONY: demo test suite lint typecheck bench clean

$(VENV)/.installed-base: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[cli,progress]'
	touch $@

$(VENV)/.installed-dev: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(VENV)/.installed-base $@

demo: $(VENV)/.installed-base
	$(VENV)/bin/hypernodes run hypernodes.demo:pipeline --inputs '{"user_id": 42}' --node-executor async --output-name report

test: $(VENV)/.installed-dev
	$(PY) -m pytest
	$(VENV)/bin/ruff check hypernodes tests benchmarks
	$(VENV)/bin/ruff format --check hypernodes tests benchmarks
	$(VENV)/bin/mypy

# The test suite alone (CI runs it on every other Python: make suite PYTHON=... VENV=...).
suite: $(VENV)/.installed-dev
	$(PY) -m pytest

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check hypernodes tests benchmarks
	$(VENV)/bin/ruff format --check hypernodes tests benchmarks

typecheck: $(VENV)/.installed-dev
	$(VENV)/bin/mypy

$(PEERS)/.installed: benchmarks/peers-requirements.txt
	$(PYTHON) -m venv $(PEERS)
	$(PEERS)/bin/python -m pip install --quiet --upgrade pip
	$(PEERS)/bin/python -m pip install --quiet -r benchmarks/peers-requirements.txt
	touch $@

bench: $(VENV)/.installed-dev $(PEERS)/.installed
	$(PY) -m benchmarks.run --peers-python $(PEERS)/bin/python

clean:
	rm -rf $(VENV) .venv-3.* $(PEERS) .pytest_cache .mypy_cache .ruff_cache
