"""Copy a trained model folder into the package as a packaged model (``default`` or
``default-3d``), with a description of how it was trained in ``extra.training``.

    python scripts/package_model.py training-runs/default-2d-cosine/model default \
        --config "configs/training/default-2d-cosine.yaml (drdm train), ..." \
        --machine "2-vCPU x86_64, torch 2.13.0 CPU, 1 thread" \
        --lineage "gate-mnms-2d step 5100 -> default-2d-from-gate step 15000 -> ..."

The weights are copied byte for byte and checked against the SHA-256 the folder's
``config.json`` records; the folder must load with ``DRDM.from_pretrained``. Both files are
written to temporary names and renamed, so an interrupted run leaves the old model in place.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

from drdm.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from drdm.model import DRDM
from drdm.pretrained import PRETRAINED_NAMES, pretrained_dir


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", type=Path, help="model folder (config.json + model.safetensors)")
    parser.add_argument("name", choices=sorted(PRETRAINED_NAMES), help="packaged model name")
    parser.add_argument("--config", required=True, help="the training config and command")
    parser.add_argument("--machine", required=True, help="where and how fast it was trained")
    parser.add_argument("--lineage", default=None, help="the runs it continues, in order")
    args = parser.parse_args(argv)

    config_path, weights_path = args.source / CONFIG_NAME, args.source / WEIGHTS_NAME
    for path in (config_path, weights_path):
        if not path.is_file():
            print(f"{path}: not found (expected a model folder)", file=sys.stderr)
            return 2
    meta = json.loads(config_path.read_text())
    digest = hashlib.sha256(weights_path.read_bytes()).hexdigest()
    if digest != meta.get("weights_sha256"):
        print(f"{weights_path}: SHA-256 differs from {config_path}", file=sys.stderr)
        return 2
    DRDM.from_pretrained(args.source)  # must load as it is

    training = dict(meta.get("extra", {}).get("training", {}))
    training["config"] = args.config
    training["machine"] = args.machine
    if args.lineage:
        training["lineage"] = args.lineage
    meta.setdefault("extra", {})["training"] = training

    target = pretrained_dir(args.name)
    target.mkdir(parents=True, exist_ok=True)
    tmp_weights, tmp_config = target / (WEIGHTS_NAME + ".tmp"), target / (CONFIG_NAME + ".tmp")
    shutil.copyfile(weights_path, tmp_weights)
    tmp_config.write_text(json.dumps(meta, indent=2) + "\n")
    os.replace(tmp_weights, target / WEIGHTS_NAME)
    os.replace(tmp_config, target / CONFIG_NAME)
    loaded = DRDM.from_pretrained(args.name)
    print(f"{args.name}: {target} ({sum(p.numel() for p in loaded.network.parameters())} params)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
