#!/usr/bin/env bash
# The GPU check: every figure the README's "GPU figures" asks for, in under 8 minutes on one GPU.
#   bash scripts/gpu_check.sh [OUTDIR]          on the GPU (cuda:0); figures in OUTDIR (default: $OUT, else gpu-figures/)
#   bash scripts/gpu_check.sh --cpu [OUTDIR]    the same steps, tiny, on the CPU (checks the script itself, ~5 min)
# Steps (each logged to OUTDIR/<step>.log, its exit code and seconds to OUTDIR/steps.tsv; a failed step does not
# stop the others; each is cut at what is left of the 470 s budget, 900 s with --cpu, or $GPU_CHECK_BUDGET):
#   speed     benchmarks/gpu_check.py speed: lite0 ideal forward+backward at batch 256 in fp32 / TF32 / bf16, NCHW and
#             channels_last (images/s, gradient cosine to fp32), PGD-10 images/s against the ideal
#   eval      advlab eval --preset reliable on lite0, batch 256, 512 made photos (ImageNet synset folders)
#   torchrun  the same under torchrun --nproc_per_node 1 (its robust accuracy must equal the single process's)
#   pytest    tests/test_cuda.py (skips without a GPU)
#   summary   OUTDIR/figures.md (paste into the README) and OUTDIR/env.txt (GPU, driver, torch)
# Python: $ADVLAB_PY, else .venv/bin/python, else python3: the first whose torch imports advlab (and sees a GPU,
# unless --cpu); with none, `bash scripts/bootstrap.sh dev` (needs the network) makes .venv.
set -uo pipefail
cd "$(dirname "$0")/.."
MODE=gpu
if [ "${1:-}" = "--cpu" ]; then MODE=cpu; shift; fi
OUTDIR=${1:-${OUT:-gpu-figures}}
mkdir -p "$OUTDIR" || exit 2
OUTDIR=$(cd "$OUTDIR" && pwd)
BUDGET=${GPU_CHECK_BUDGET:-$([ "$MODE" = gpu ] && echo 470 || echo 900)}
START=$(date +%s)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/advlab-gpu-check.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
: >"$OUTDIR/steps.tsv"

usable() {  # usable PYTHON: imports torch and advlab (and sees a GPU in gpu mode)
  local want='import torch, advlab, safetensors, efficientnet_lite_pytorch'
  [ "$MODE" = gpu ] && want="$want; assert torch.cuda.is_available(), 'no GPU'"
  "$1" -c "$want" >/dev/null 2>&1
}
PY=""
for cand in "${ADVLAB_PY:-}" .venv/bin/python python3; do
  if [ -n "$cand" ] && command -v "$cand" >/dev/null 2>&1 && usable "$cand"; then PY=$cand; break; fi
done
if [ -z "$PY" ]; then
  echo "gpu_check: no Python with torch and advlab (and a GPU in gpu mode); running scripts/bootstrap.sh dev" >&2
  bash scripts/bootstrap.sh dev >"$OUTDIR/bootstrap.log" 2>&1 && usable .venv/bin/python && PY=.venv/bin/python
fi
if [ -z "$PY" ]; then
  echo "gpu_check: no usable Python (see $OUTDIR/bootstrap.log); set ADVLAB_PY to one with a CUDA torch" >&2
  exit 2
fi
if [ "$MODE" = gpu ]; then
  DEV=cuda BATCH=256 PHOTOS=512 STEPS=10 REPEATS=5
else
  DEV=cpu BATCH=4 PHOTOS=8 STEPS=2 REPEATS=1
fi

step() {  # step NAME SECONDS CMD...: run CMD with a time limit, log it, record exit code and seconds
  local name=$1 limit=$2 left t0 rc
  shift 2
  left=$((BUDGET - ($(date +%s) - START)))
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$limit" -le 5 ]; then
    printf '%s\tskipped (budget spent)\t0\n' "$name" >>"$OUTDIR/steps.tsv"
    return
  fi
  echo "== $name (limit ${limit}s): $*"
  t0=$(date +%s)
  timeout --kill-after=10 "$limit" "$@" >"$OUTDIR/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\n' "$name" "$rc" "$(($(date +%s) - t0))" >>"$OUTDIR/steps.tsv"
  tail -n 15 "$OUTDIR/$name.log"
}

{
  echo "mode $MODE, python $PY, $(date -u +%FT%TZ)"
  "$PY" -c 'import torch, advlab; print("torch", torch.__version__, "cuda", torch.version.cuda, "advlab", advlab.__version__)
if torch.cuda.is_available(): print("gpu", torch.cuda.get_device_name(0), torch.cuda.get_device_properties(0).total_memory // 2**20, "MiB")'
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
  git rev-parse HEAD 2>/dev/null && git status --short | head -20
} >"$OUTDIR/env.txt" 2>&1
cat "$OUTDIR/env.txt"

EVAL=(eval --model efficientnet-lite0 --data "folder:$WORK/photos" --preset reliable --eps 8/255 --norm linf
  --batch-size "$BATCH" --device "$DEV" --json)
step speed 150 "$PY" benchmarks/gpu_check.py speed --device "$DEV" --batch "$BATCH" --steps "$STEPS" \
  --repeats "$REPEATS" --json "$OUTDIR/speed.json"
step folder 30 "$PY" benchmarks/gpu_check.py folder "$WORK/photos" --n "$PHOTOS"
step eval 100 "$PY" -m advlab "${EVAL[@]}" --out "$OUTDIR/eval_reliable" --force
step torchrun 100 "$PY" -m torch.distributed.run --nproc_per_node 1 --standalone -m advlab "${EVAL[@]}" \
  --out "$OUTDIR/eval_torchrun" --force
step pytest 180 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py
"$PY" benchmarks/gpu_check.py summary "$OUTDIR"
echo "gpu_check: $(($(date +%s) - START)) s; figures in $OUTDIR/figures.md"
! cut -f2 "$OUTDIR/steps.tsv" | grep -qv '^0$'
