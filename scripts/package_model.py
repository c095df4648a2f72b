"""Copy a trained model folder into the package as a packaged model (``default`` or
``default-3d``), with a description of how it was trained in ``extra.training``.

    python scripts/package_model.py training-runs/default-2d-cosine/model default \
        --config "configs/training/default-2d-cosine.yaml (drdm train), ..." \
        --machine "2-vCPU x86_64, torch 2.13.0 CPU, 1 thread" \
        --lineage "gate-mnms-2d step 5100 -> default-2d-from-gate step 15000 -> ..."

The folder must load with ``DRDM.from_pretrained`` (which checks the weights against the
SHA-256 its ``config.json`` records); the weights are copied byte for byte. Both files are
written through ``drdm.io.files.atomic_write``, so an interrupted run leaves no half-written file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from drdm.checkpoint import CONFIG_NAME, WEIGHTS_NAME
from drdm.io.files import atomic_write
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
    DRDM.from_pretrained(args.source)  # must load as it is (weights checked by SHA-256)
    meta = json.loads(config_path.read_text())

    training = dict(meta.get("extra", {}).get("training", {}))
    training["config"] = args.config
    training["machine"] = args.machine
    if args.lineage:
        training["lineage"] = args.lineage
    meta.setdefault("extra", {})["training"] = training

    target = pretrained_dir(args.name)
    target.mkdir(parents=True, exist_ok=True)
    atomic_write(target / WEIGHTS_NAME, weights_path.read_bytes())
    atomic_write(target / CONFIG_NAME, json.dumps(meta, indent=2) + "\n")
    loaded = DRDM.from_pretrained(args.name)
    print(f"{args.name}: {target} ({sum(p.numel() for p in loaded.network.parameters())} params)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
