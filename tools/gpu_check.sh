#!/usr/bin/env bash
# The CUDA path on a GPU machine, from a fresh checkout, in one go (about 10 minutes at most):
#
#   1. the venv (.venv; built with pip when it is missing, as README says), and a check that
#      torch sees a CUDA device;
#   2. the tests marked gpu (tests/test_gpu.py: each shipped student in fp16 and bf16 against
#      the CPU float reference; bench on cuda);
#   3. sharpkd bench on cuda of every shipped student and of a teacher (the params.yaml teacher,
#      untrained weights: timing only), at 1920x1080 and 3840x2160, bf16 and fp16, writing JSON
#      to metrics/photos/bench/gpu/<what>-<size>-cuda-<precision>.json;
#   4. a tiny pipeline on cuda: `dvc exp run` of the default profile on the test params
#      (tests/e2e.py tiny_params) in a temporary copy of the repository, with
#      -S teacher.device=cuda -S train.device=cuda -S evaluate.device=cuda.
#
# Usage: tools/gpu_check.sh [--dry-run] [--skip-pipeline]
#   --dry-run        print the steps and exit (nothing runs, no GPU needed)
#   --skip-pipeline  steps 1-3 only
# Exit status: 0 when every step passed, else the number of failed steps (each named on stderr).
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
PIPELINE=1
for arg in "$@"; do
  case "$arg" in
    --dry-run) DRY=1 ;;
    --skip-pipeline) PIPELINE=0 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "error: unknown option $arg (see tools/gpu_check.sh --help)" >&2; exit 2 ;;
  esac
done

PY=.venv/bin/python
OUT=metrics/photos/bench/gpu
# every shipped student (sharpkd.app.shipped.SHIPPED; that module imports nothing heavy)
STUDENTS=$(python3 -c "import sys; sys.path.insert(0, '.'); from sharpkd.app.shipped import SHIPPED; print(' '.join(SHIPPED))") \
  || { echo "error: cannot read the shipped students from sharpkd/app/shipped.py" >&2; exit 2; }
SIZES="1920x1080 3840x2160"
PRECISIONS=${PRECISIONS:-"fp16 bf16"}  # autocast dtypes to bench (sharpen runs bf16)
FAILED=0
SECONDS=0
if [ "$DRY" = 1 ]; then WORK=/tmp/sharpkd-gpu-check.XXXXXX; else WORK=$(mktemp -d); fi  # teacher weights, pipeline copy

step() {  # step NAME TIMEOUT_S COMMAND...: run (or print) one step, bounded in time
  local name=$1 limit=$2
  shift 2
  if [ "$DRY" = 1 ]; then
    printf '%s (at most %ss): %s\n' "$name" "$limit" "$*"
    return 0
  fi
  echo "== $name (${SECONDS}s so far)" >&2
  if ! timeout "$limit" "$@"; then
    echo "FAILED: $name" >&2
    FAILED=$((FAILED + 1))
    return 1
  fi
}

if [ ! -x "$PY" ] || ! "$PY" -c "import sharpkd, torch" 2>/dev/null; then
  step "venv" 420 bash -c "python3 -m venv .venv && .venv/bin/pip install -q -e '.[dev]'"
fi
step "cuda visible" 60 "$PY" -c "import torch, sys; ok = torch.cuda.is_available(); print('cuda:', ok and torch.cuda.get_device_name(0), 'torch', torch.__version__); sys.exit(0 if ok else 1)" \
  || { [ "$DRY" = 1 ] || { echo "error: no CUDA device visible to torch; nothing else to check" >&2; exit 1; }; }

step "gpu tests" 180 "$PY" -m pytest -q -m gpu tests/test_gpu.py

step "output folder" 10 mkdir -p "$OUT"
TEACHER=$WORK/teacher.safetensors
step "teacher weights" 120 "$PY" -c "
import sys, yaml
from sharpkd.training.teacher import build_teacher, save_teacher
params = yaml.safe_load(open('params.yaml'))['teacher']
save_teacher(build_teacher(params), sys.argv[1], params)" "$TEACHER"

for size in $SIZES; do
  w=${size%x*}
  h=${size#*x}
  for precision in $PRECISIONS; do
    for s in $STUDENTS; do
      step "bench $s $size $precision" 60 "$PY" -m sharpkd.app.cli bench --student "$s" --device cuda \
        --precision "$precision" --width "$w" --height "$h" --runs 20 --warmup 5 \
        --out "$OUT/student-$s-$size-cuda-$precision.json"
    done
    step "bench teacher $size $precision" 120 "$PY" -m sharpkd.app.cli bench --teacher "$TEACHER" --device cuda \
      --precision "$precision" --width "$w" --height "$h" --runs 3 --warmup 1 \
      --out "$OUT/teacher-$size-cuda-$precision.json"
  done
done

if [ "$PIPELINE" = 1 ]; then
  REPO=$WORK/repo
  step "tiny pipeline copy" 60 "$PY" -c "
import sys
from pathlib import Path
from tests.e2e import make_repo
Path(sys.argv[1]).mkdir(parents=True, exist_ok=True)
make_repo(Path(sys.argv[1]), profile='default')" "$REPO"
  step "tiny pipeline on cuda" 300 bash -c "cd '$REPO' && PATH='$PWD/.venv/bin':\$PATH PYTHONPATH='$REPO' \
    dvc exp run -S teacher.device=cuda -S train.device=cuda -S evaluate.device=cuda"
fi

[ "$DRY" = 1 ] && exit 0
echo "gpu check: $FAILED failed step(s) in ${SECONDS}s; JSON in $OUT" >&2
exit "$FAILED"
