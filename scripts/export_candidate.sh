#!/usr/bin/env bash
# Exports a GAN run into a staging model folder, calibrates its segmentation thresholds and
# evaluates it with the card's protocol, without touching the bundled model:
#   bash scripts/export_candidate.sh RUN OUT [AUX]
# AUX holds classifier/, perceptual/ and template.json (default: a copy of the bundled faces-64).
# Writes OUT (the model), OUT.export.json, OUT.calibration.json, OUT.figures.json and OUT.img/.
set -euo pipefail
RUN=$1; OUT=$2; AUX=${3:-}
D=${DATA:-../shared/datasets/utkface}; S=${LPIPS_DIR:-../shared/weights/lpips}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1} OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
if [[ -z $AUX ]]; then AUX=$(mktemp -d); cp -r src/dhr/assets/models/faces-64/. "$AUX"/; fi
python3 -m dhr.train.export --run "$RUN" --aux "$AUX" --out "$OUT" --template "$AUX/template.json" \
  --card MODEL_CARD.md --data "$D" --labels "$RUN/landmark_labels.npz" --data-cache "$RUN/data_64.npz" \
  --identity-n 60 --landmark-samples "${LANDMARK_SAMPLES:-3000}" > "$OUT.export.json"
python3 -m dhr.train.calibrate --model "$OUT" --data "$D" --n 60 --out "$OUT.calibration.json" --write
python3 -m dhr.train.evaluate --model "$OUT" --data "$D" --lpips-dir "$S" --out "$OUT.figures.json" \
  --grids "$OUT.img" --n-face 500
