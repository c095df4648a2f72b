#!/usr/bin/env bash
# Redraws docs/figures/diagnosis_u_cpu.png from the committed curves and the gate runs' logs,
# and docs/figures/candidates_u_cpu.png from the logs of the packaged-2D candidate runs. The runs
# whose weights shipped (or lost) keep their recovery.csv in docs/results/runs/; the runs still
# resumable live in training-runs/.
set -euo pipefail
cd "$(dirname "$0")/.."
D=docs/results/diag
python3 docs/plot_diagnosis.py --out docs/figures/diagnosis_u_cpu.png \
  --curve "fixed draw, t=40=$D/fixed.json" \
  --curve "fresh draws, t=40=$D/fresh.json" \
  --curve "fresh, t=40, lr 1e-3=$D/fresh_lr1e-3.json" \
  --curve "fresh, t=40, given I_0 (K=1)=$D/fresh_template.json" \
  --curve "fresh, t=40, authors' process=$D/fresh_official.json" \
  --curve "fresh, t=40, residual loss=$D/fresh_residual.json" \
  --curve "fresh, t=40, space-to-depth 256=$D/fresh_s2d.json" \
  --curve "fresh, t=40, strided stem 256=$D/fresh_strided.json" \
  --run "gate: all t, slice alone (band 21-40)=${GATE_RUN:-docs/results/runs/gate-mnms-2d}" \
  --run "gate, space-to-depth 256 (band 21-40)=${GATE_S2D_RUN:-training-runs/gate-mnms-2d-s2d}"
python3 docs/plot_diagnosis.py --out docs/figures/candidates_u_cpu.png --band 21-40 \
  --target 0.5 --target-label "target U = 0.5" \
  --title "Packaged-2D candidates: U (t 21-40) on the slice + 8 held-out phantoms" \
  --run "from the step-5500 weights=${ACCUMULATE_RUN:-docs/results/runs/default-2d-accumulate}" \
  --run "from the gate network, rate 3e-4=${FROM_GATE_RUN:-docs/results/runs/default-2d-from-gate}" \
  --run "then the rate along a cosine to 1e-5 (shipped)=${COSINE_RUN:-docs/results/runs/default-2d-cosine}@124.6" \
  --run "from the space-to-depth gate, at 256=${S2D_FROM_GATE_RUN:-training-runs/default-2d-s2d-from-gate}"
