#!/usr/bin/env bash
# SHA-256 of the files a fixed set of seeded commands writes, and of the seeded benchmark tables
# (issue 18: a restructuring must leave every output byte-identical). Run it before and after a
# change and compare:
#
#   bash scripts/output_digests.sh /tmp/before > /tmp/before.sha
#   ... change the code ...
#   bash scripts/output_digests.sh /tmp/after > /tmp/after.sha && diff /tmp/before.sha /tmp/after.sha
#
# Lines are "digest  path" with paths relative to the output folder; files that record times
# (run.json, *.log, the tables' header lines) are left out, and the output folder's own path
# is replaced by OUT in text files. One
# thread (OMP_WAIT_POLICY=PASSIVE), CPU; about 3 minutes on a 2-vCPU machine.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:?usage: output_digests.sh OUT_DIR}"
rm -rf "$out" && mkdir -p "$out"
export OMP_WAIT_POLICY=PASSIVE OMP_NUM_THREADS=1
sample="$here/../shared/data/samples/mnms_OpenDataset_162867.nii.gz"
run() { "$@" > /dev/null 2>&1 || { echo "failed: $*" >&2; exit 1; }; }
run python3 -m drdm demo --out "$out/demo" --device cpu
run python3 -m drdm diffuse --help
if [ -f "$sample" ]; then
  run python3 -m drdm generate "$sample" --level 40 --n 3 --seed 5 --out "$out/generate" --device cpu
  run python3 -m drdm augment --image "$sample" --levels 30,50 --per-level 2 --seed 3 \
    --out "$out/augment_bigaug" --device cpu --threads 1
  run python3 -m drdm augment --image "$sample" --method bigaug --per-level 3 --seed 3 \
    --out "$out/augment_baseline" --device cpu --threads 1
  run python3 -m drdm synth --image "$sample" --level-pairs 20:40 --per-pair 2 --seed 4 \
    --out "$out/synth" --device cpu --threads 1
  python3 "$here/benchmarks/quality.py" --samples 4 --levels 30 70 --threads 1 \
    | grep '^|' > "$out/quality.md"
  python3 "$here/benchmarks/recovery_eval.py" --draws 1 --threads 1 | grep '^|' > "$out/recovery_eval.md"
fi
python3 "$here/benchmarks/recovery_eval.py" --phantoms 4 --draws 1 --threads 1 \
  | grep '^|' > "$out/recovery_eval_phantoms.md"
cd "$out"
# text files may name the output folder: digest them with it replaced by OUT
find . -type f ! -name run.json ! -name '*.log' -print0 | sort -z | while IFS= read -r -d '' f; do
  case "$f" in
    *.csv | *.json | *.md | *.txt) digest=$(sed "s|$out|OUT|g" "$f" | sha256sum) ;;
    *) digest=$(sha256sum < "$f") ;;
  esac
  echo "${digest%% *}  $f"
done
