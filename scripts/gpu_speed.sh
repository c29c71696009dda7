#!/usr/bin/env bash
# The GPU speed check of docs/performance.md, in one prepared run: `dhr bench-speed` at 1024 px on a
# random config-f generator (speed does not depend on trained weights), the paper's budget (40 coarse
# steps, 100 refinement iterations, 50 of them tuning θ), batch 1 and 8, fp32 and bf16 autocast.
#
#   B=1 fp32: faithful loop and fast path (the ratio; default kernels, 2 alternating repeats);
#   B=1 fp32 --deterministic: the loss parity (on CUDA two runs of one path differ with the default
#       kernels, so parity is checked with deterministic ones; written as gpu-1024-b1-fp32-parity);
#   B=1 bf16, B=2/4/8 fp32, B=8 bf16: fast path only (B>1 refines the batch together, --vectorize);
#   B=8 bf16 --bench-threads 8: the batch's segmentations (CPU SLIC, ~1 s per image at 1024) overlap in
#       8 threads (dhr.engine.for_each_image; with one thread they run one after the other).
# bf16 is InvertConfig.precision="bf16" (autocast, fused Adam).
# Then scripts/cuda_graph_probe.py (B=1 fp32, B=1 bf16, B=8 bf16): one refinement iteration captured
# in a CUDA graph and replayed, against the eager loop (whether graphs are worth building in).
# Every measurement first runs once, untimed, at a tiny budget (bench-speed's CUDA warm-up).
#
# Each report lands in $OUT (default docs/speed) as gpu-1024-b<B>-<dtype>.json next to its printed
# table (.txt). Needs a CUDA device; exits 3 without one and never runs in the test suite.
# Budget: about 8 minutes on one H200 (measured 2026-11-29: ~9 s per image per faithful run, process
# starts ~10 s each).
#
# Usage: scripts/gpu_speed.sh            (OUT=dir, STEPS="40 100 50" to change the budget)
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
OUT=${OUT:-docs/speed}
read -r COARSE REFINE WEIGHT <<<"${STEPS:-40 100 50}"
mkdir -p "$OUT"
if ! python3 -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "gpu_speed.sh: no CUDA device here; nothing was run" >&2
    exit 3
fi
python3 -c 'import torch; print("device:", torch.cuda.get_device_name(0), "| torch", torch.__version__)'
dhr() { python3 -c 'import sys; from dhr.cli import main; sys.argv[0] = "dhr"; main()' "$@"; }
run() {  # run BATCH DTYPE PATHS STEM_SUFFIX [extra options]
    local b=$1 dt=$2 paths=$3 suffix=$4; shift 4
    local stem="$OUT/gpu-1024-b${b//,/-}-$dt$suffix"
    echo "== batch $b, $dt, paths $paths"
    dhr bench-speed --cases random-1024 --device cuda --batch "$b" --autocast "$dt" --paths "$paths" \
        --coarse-steps "$COARSE" --refine-steps "$REFINE" --weight-steps "$WEIGHT" \
        --timeout 240 --json "$stem.json" "$@" | tee "$stem.txt" || echo "(exit $? for batch $b $dt)"
}
run 1 fp32 faithful,fast "" --repeats 2
run 1 fp32 faithful,fast -parity --repeats 1 --deterministic
run 1 bf16 fast "" --repeats 1
run 2,4,8 fp32 fast "" --repeats 1 --vectorize
run 8 bf16 fast "" --repeats 1 --vectorize
run 8 bf16 fast -threads8 --repeats 1 --vectorize --bench-threads 8
for spec in "1 fp32" "1 bf16" "8 bf16"; do
    read -r b dt <<<"$spec"
    echo "== CUDA graph probe, batch $b, $dt"
    python3 scripts/cuda_graph_probe.py --case random-1024 --device cuda --batch "$b" --precision "$dt" \
        --json "$OUT/gpu-1024-graph-b$b-$dt.json" | tail -n 40 || echo "(graph probe exit $? for batch $b $dt)"
done
echo "reports in $OUT/gpu-1024-*.json"
