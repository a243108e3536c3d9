#!/usr/bin/env bash
# Check the sweep engine on a machine with one CUDA GPU. The stage time limits add up to
# 260 s (plus 5 s each to stop a stage), so the script ends within 5 minutes.
# The stages:
#   1. the engine tests, including the CUDA ones (engine on CUDA against the CPU baseline,
#      and no synchronising call inside a training step),
#   2. the default sweep on CUDA,
#   3. the benchmark on CUDA (baseline on ranks 1..16 only, on the CPU).
#
# Needs python3 with torch (a CUDA build), numpy, scipy, sympy, matplotlib, tqdm, pytest
# and hypothesis. Nothing is installed: the repository is put on PYTHONPATH.
# Outputs go to $OUT (default: runs/gpu-check-<timestamp>). Exits non-zero if a stage failed.
set -uo pipefail
cd "$(dirname "$0")/.."

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
OUT="${OUT:-runs/gpu-check-$(date +%Y%m%d-%H%M%S)}"
mkdir -p "$OUT"
PYTHON="${PYTHON:-python3}"
failed=()

run_stage() {
    # run_stage NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, record failures.
    local name="$1" limit="$2"
    shift 2
    echo "== $name (limit ${limit}s): $*"
    local started=$SECONDS
    timeout --signal=INT --kill-after=5 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
    local status=${PIPESTATUS[0]}
    echo "== $name: exit status $status after $((SECONDS - started))s"
    if [ "$status" -ne 0 ]; then
        failed+=("$name")
    fi
}

if ! "$PYTHON" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    echo "error: this torch build sees no CUDA device; run the script on a machine with one CUDA GPU" >&2
    exit 2
fi
{
    "$PYTHON" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name(0))"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || true
} | tee "$OUT/device.txt"

run_stage tests 80 "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_engine.py tests/test_benchmark.py
run_stage sweep 60 "$PYTHON" -m stability.simulate --device cuda --quiet --no-figures --force --out "$OUT/sweep"
run_stage benchmark 120 "$PYTHON" -m stability.benchmark --device cuda --repeats 2 --baseline-ranks 1..16 \
    --quiet --out "$OUT/benchmark.json"

if [ "${#failed[@]}" -ne 0 ]; then
    echo "failed stages: ${failed[*]} (logs in $OUT)" >&2
    exit 1
fi
echo "all stages passed; outputs in $OUT"
