#!/usr/bin/env bash
# GPU checks of the galmass data path on ONE H100/H200, in under 10 minutes, offline.
#
#   bash benchmarks/gpu.sh            # from the repository root (or anywhere: paths are resolved from this file)
#
# Needs: python3 with torch (CUDA build), numpy and h5py. Does NOT need DALI, network access, or galmass's other
# dependencies: if zuko is missing and a zuko wheel (zuko-*.whl) lies next to this script, it is installed offline
# (--no-index --no-deps) into a throw-away target directory; without zuko/yaml the real model is replaced by a
# stand-in of the same convolutional size (the output says which model ran).
#
# Checks: 1-rank NCCL init + all_reduce; CUDA training steps fp32 and bf16 autocast; torch-loader ÷ in-memory
# training samples/s (0/4/8 DataLoader workers). Output goes to the terminal and to benchmarks/results/gpu.md.
# On a machine without a usable GPU it stops at once with exit status 3 and a message saying so.
set -u -o pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(dirname "$HERE")"
PY="${PYTHON:-python3}"
OUT="$HERE/results/gpu.md"
WORK="${GALMASS_GPU_WORK:-$(mktemp -d)}"

if ! command -v "$PY" >/dev/null 2>&1; then
    echo "gpu.sh: no '$PY' on PATH. HINT: PYTHON=/path/to/python bash benchmarks/gpu.sh" >&2
    exit 3
fi
if ! "$PY" -c "import torch, numpy, h5py" 2>/dev/null; then
    echo "gpu.sh: '$PY' lacks torch, numpy or h5py; nothing measured. HINT: use the Python environment with CUDA torch." >&2
    exit 3
fi
if ! "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "gpu.sh: no CUDA GPU visible to torch (torch.cuda.is_available() is False; nvidia-smi: $(command -v nvidia-smi >/dev/null && nvidia-smi -L 2>&1 | head -n 1 || echo 'not found')); nothing measured. HINT: run this on a node with one H100/H200." >&2
    exit 3
fi

export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
if ! "$PY" -c "import zuko" 2>/dev/null; then
    wheel="$(ls "$HERE"/zuko-*.whl 2>/dev/null | head -n 1 || true)"
    if [ -n "$wheel" ]; then
        "$PY" -m pip install -q --no-index --no-deps --target "$WORK/site" "$wheel" \
            && export PYTHONPATH="$PYTHONPATH:$WORK/site" && echo "gpu.sh: installed $(basename "$wheel") offline"
    else
        echo "gpu.sh: zuko not installed and no zuko-*.whl next to this script: the stand-in model will be used"
    fi
fi

mkdir -p "$HERE/results"
start=$(date +%s)
{
    echo "# GPU checks (benchmarks/gpu.sh)"
    echo
    echo "Run $(date -u +%Y-%m-%dT%H:%MZ) on $(hostname): $(nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null | head -n 1)"
    echo
    echo '```'
    timeout 540 "$PY" "$HERE/gpu_check.py" --work "$WORK/data" "$@" 2>&1
    rc=$?
    echo '```'
    echo
    echo "exit status $rc, $(( $(date +%s) - start )) s"
} | tee "$OUT.tmp"
mv "$OUT.tmp" "$OUT"
echo "gpu.sh: written $OUT"
[ -z "${GALMASS_GPU_WORK:-}" ] && rm -rf "$WORK"
grep -q "^exit status 0," "$OUT"
