# Two commands on a fresh clone: `make demo` and `make test`. Everything else follows from them.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEMO := demo
export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONHASHSEED ?= 0

.PHONY: install demo test test-fast bench bench-quick lint imports clean

install: $(STAMP)

# Reinstalls only when the package metadata changes; the editable install picks up code edits.
$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,export]'
	touch $(STAMP)

demo: install
	$(BIN)/python -m skinzoo_cli.demo --out $(DEMO)

test: install
	$(BIN)/python -m pytest -q

test-fast: install
	$(BIN)/python -m pytest -q -m "not slow"

bench: install
	$(BIN)/python -m bench.run

bench-quick: install
	$(BIN)/python -m bench.run --quick

lint: install
	$(BIN)/ruff check skinzoo cli tests bench tools

# Layers, import cycles and imports that run up a layer (stdlib only: reads the sources with ast).
imports:
	$(PYTHON) -m tools.import_graph

clean:
	rm -rf $(DEMO) runs .pytest_cache build *.egg-info
