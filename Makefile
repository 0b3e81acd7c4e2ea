# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
# Both create/refresh the project virtual environment first (.venv).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
# torch is pinned where a later stage needs it (see README); ingest/probe need none.
STAMP := $(VENV)/.installed

.PHONY: setup demo test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/curate demo --workdir runs/demo

test: $(STAMP)
	$(BIN)/python -m pytest -q -ra

bench: $(STAMP)
	$(BIN)/python bench/bench_koala_ingest.py
	$(BIN)/python bench/bench_probe.py
	$(BIN)/python bench/bench_duckdb_manifest.py

clean:
	rm -rf runs/demo
