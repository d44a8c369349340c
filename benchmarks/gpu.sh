#!/usr/bin/env bash
# GPU checks of the galmass data path and training step on ONE H100/H200, in about 4 minutes, offline.
#
#   bash benchmarks/gpu.sh            # from anywhere: paths are resolved from this file
#   bash benchmarks/gpu.sh --checks device,train_bf16     # a subset (names: python3 benchmarks/gpu_check.py -h)
#
# Needs: python3 with torch (CUDA build), numpy and h5py. Does NOT need DALI, network access, or galmass's other
# dependencies: wheels (*.whl, e.g. zuko-*.whl) lying next to this script are installed offline (--no-index
# --no-deps) into a throw-away target directory; without zuko/yaml the real model is replaced by a stand-in of the
# same convolutional size, and checks whose packages are missing report "skipped: <reason>".
#
# Every check runs in its own process with its own time limit and its line is appended to
# benchmarks/results/gpu.md (and shown here) as soon as it finishes, so a failing check never stops the others and
# a run stopped by the overall limit still leaves the finished lines. Checks: device; 1-rank NCCL (free port);
# synthetic HDF5 data + exact-rows reader; which model runs and the bf16 split (flow in fp32); training steps fp32
# and bf16; torch loader ÷ in-memory samples/s (0/4/8 workers); DALI .gpu() (skipped without DALI); a 1-epoch bf16
# `galmass train` smoke run on a tiny mock data set (skipped without galmass's dependencies).
#
# Exit status: 0 all checks passed or were skipped; 1 some check failed or timed out; 124 stopped by the overall
# limit; 3 no usable GPU/Python here (then nothing is written).
set -u -o pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PY="${PYTHON:-python3}"
OUT="${GALMASS_GPU_REPORT:-$HERE/results/gpu.md}"   # the report (override: for tests of this script)
BUDGET="${GALMASS_GPU_BUDGET:-215}"   # seconds for all checks; the hard limit below adds a margin

if ! command -v "$PY" >/dev/null 2>&1; then
    echo "gpu.sh: no '$PY' on PATH; nothing measured. HINT: PYTHON=/path/to/python bash benchmarks/gpu.sh" >&2
    exit 3
fi
if ! "$PY" -c "import torch, numpy, h5py" 2>/dev/null; then
    echo "gpu.sh: '$PY' lacks torch, numpy or h5py; nothing measured." \
         "HINT: use the Python environment with CUDA torch." >&2
    exit 3
fi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    smi="$(command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>&1 | head -n 1 || echo 'not found')"
    echo "gpu.sh: no CUDA GPU visible to torch (torch.cuda.is_available() is False; nvidia-smi: $smi);" \
         "nothing measured, $OUT left as it was. HINT: run this on a node with one H100/H200." >&2
    exit 3
fi

WORK="${GALMASS_GPU_WORK:-$(mktemp -d)}"
[ -z "${GALMASS_GPU_WORK:-}" ] && trap 'rm -rf "$WORK"' EXIT
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
notes=()
for wheel in "$HERE"/*.whl; do
    [ -e "$wheel" ] || continue
    if "$PY" -m pip install -q --no-index --no-deps --target "$WORK/site" "$wheel" >"$WORK/pip.log" 2>&1; then
        notes+=("installed $(basename "$wheel") offline")
    else
        notes+=("could not install $(basename "$wheel"): $(tail -n 1 "$WORK/pip.log")")
    fi
done
[ -d "$WORK/site" ] && export PYTHONPATH="$PYTHONPATH:$WORK/site"
"$PY" -c "import zuko" 2>/dev/null || notes+=("zuko not importable (no zuko-*.whl next to gpu.sh): stand-in model")

mkdir -p "$(dirname "$OUT")"
start=$(date +%s)
gpu="$(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1)"
versions="$("$PY" -c 'import sys, torch; print(f"Python {sys.version.split()[0]}, torch {torch.__version__}, '\
'CUDA {torch.version.cuda}")' 2>&1)"
{
    echo "# GPU checks (benchmarks/gpu.sh)"
    echo
    echo "Run $(date -u +%Y-%m-%dT%H:%MZ) on $(hostname): ${gpu:-nvidia-smi unavailable}; $versions."
    for n in "${notes[@]+"${notes[@]}"}"; do echo "gpu.sh: $n."; done
} | tee "$OUT"
# The checks append their own lines to $OUT (flushed as each finishes); stdout shows the same lines.
timeout -k 10 "$(( BUDGET + 20 ))" \
    "$PY" "$HERE/gpu_check.py" --report "$OUT" --work "$WORK/checks" --budget "$BUDGET" "$@"
rc=$?
case $rc in
    0) verdict="all checks passed or were skipped" ;;
    1) verdict="some checks FAILED or timed out (see the table)" ;;
    124) verdict="stopped by the overall time limit; the table holds the checks that finished" ;;
    137) verdict="killed by the overall time limit; the table holds the checks that finished" ;;
    *) verdict="gpu_check.py ended abnormally" ;;
esac
printf '\nExit status %s (%s), %s s in all.\n' "$rc" "$verdict" "$(( $(date +%s) - start ))" | tee -a "$OUT"
echo "gpu.sh: written $OUT"
exit "$rc"
