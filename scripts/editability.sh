#!/usr/bin/env bash
# Issue #15 end to end, re-runnable on any model folder (default: the bundled faces-64):
#   bash scripts/editability.sh [MODEL] [OUT]
# 1. calibrates the segmentation (thresholds, clean-up) on TRAINING crops at the benchmark's
#    coarse budget and writes them into MODEL/model.json (CALIBRATE=0 skips; WRITE=0 only reports);
# 2. sweeps DHR's refinement settings on TRAINING crops (dhr.bench.sweep: Pareto front, rule, pick);
# 3. benchmarks encoder/pti/feature/dhr on the first N HELD-OUT crops with seeded occluders at the
#    full budgets (paired bootstrap verdicts), and draws one editability plot per method.
# Knobs: N (held-out faces spread over the names, 10), SWEEP_N (training faces, 6), SWEEP_SCALE (sweep budget factor,
# 0.5), CAL_N (calibration crops, 24), DATA, DHR_WEIGHTS_PATH. Outputs: OUT/calibration.json,
# OUT/sweep/, OUT/bench/ and OUT/img/*.png. One CPU thread per process, one job at a time.
set -euo pipefail
MODEL=${1:-src/dhr/assets/models/faces-64}; OUT=${2:-editability-run}
D=${DATA:-../shared/datasets/utkface}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
export DHR_WEIGHTS_PATH=${DHR_WEIGHTS_PATH:-../shared/weights}
mkdir -p "$OUT"
if [[ ${CALIBRATE:-1} == 1 ]]; then
  python3 -m dhr.train.calibrate --model "$MODEL" --data "$D" --n "${CAL_N:-24}" --out "$OUT/calibration.json" \
    $([[ ${WRITE:-1} == 1 ]] && echo --write)
fi
python3 -m dhr.bench.sweep --model "$MODEL" --data "$D" --n "${SWEEP_N:-6}" --steps-scale "${SWEEP_SCALE:-0.5}" \
  -o "$OUT/sweep"
python3 -m dhr.train.data held-out "$D" "$OUT/held-out"
python3 -c 'import sys; from dhr.cli import main; sys.argv[0] = "dhr"; main()' bench --data "$OUT/held-out" \
  --model "$MODEL" --methods encoder,pti,feature,dhr --n "${N:-10}" --spread --occlusion -o "$OUT/bench"
python3 -m dhr.bench.report "$OUT/bench/results.json" -o "$OUT/img"
