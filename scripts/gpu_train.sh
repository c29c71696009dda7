#!/usr/bin/env bash
# One training burst on a lent GPU (the `device` tool), resuming a CPU run and bringing the
# checkpoint back. Run from the repository root on the GPU machine, with the run folder carried:
#   bash scripts/gpu_train.sh RUN MINUTES [extra dhr.train.gan options...]
# RUN must hold ckpt.pt and data_64.npz (the prepared crops, so the dataset folder is not needed)
# and train.args (the options the run was started with, one line). The updated RUN (ckpt.pt,
# log.jsonl, milestones/, samples/) is copied to $OUT/RUN when $OUT is set.
# Not exercised by the suite (no GPU in CI); checkpoints stay portable (they load on the CPU).
set -euo pipefail
RUN=$1; MIN=$2; shift 2
[[ -f $RUN/ckpt.pt && -f $RUN/data_64.npz && -f $RUN/train.args ]] || {
  echo "$RUN needs ckpt.pt, data_64.npz and train.args" >&2; exit 2; }
python3 -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())"
# shellcheck disable=SC2046
python3 -m dhr.train.gan $(cat "$RUN/train.args") --out "$RUN" --device cuda --max-minutes "$MIN" --kimg 100000 "$@"
if [[ -n ${OUT:-} ]]; then mkdir -p "$OUT/$RUN"; cp -r "$RUN"/ckpt.pt "$RUN"/log.jsonl "$RUN"/milestones "$RUN"/samples "$OUT/$RUN"/ 2>/dev/null || true; fi
