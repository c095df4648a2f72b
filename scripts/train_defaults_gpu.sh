#!/usr/bin/env bash
# Train the shipped default models and the 2D validation/ablation runs side by side on one
# GPU, each for LIMIT seconds of training (drdm train --time-limit), from the repository root:
#
#   LIMIT=400 bash scripts/train_defaults_gpu.sh
#
# Writes runs/<name>/ (model/, loss.csv, loss.png, summary.json) and runs/<name>.log. The
# 2D runs read the real sample and the authors' checkpoint from ../shared/data (see
# configs/default-2d.yaml). Copy runs/default-2d/model and runs/default-3d/model into
# src/drdm/pretrained/ to ship them.
set -u
cd "$(dirname "$0")/.."
LIMIT=${LIMIT:-400}
DEVICE=${DEVICE:-cuda}
mkdir -p runs
pids=()
for config in configs/default-2d.yaml configs/training/default-2d-eq14.yaml \
    configs/training/default-2d-heldout.yaml configs/default-3d.yaml; do
    name=$(basename "$config" .yaml)
    python3 -m drdm.cli.main train --config "$config" --device "$DEVICE" \
        --time-limit "$LIMIT" >"runs/$name.log" 2>&1 &
    pids+=($!)
done
status=0
for pid in "${pids[@]}"; do wait "$pid" || status=1; done
tail -n 3 runs/*.log
exit $status
