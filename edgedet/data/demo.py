"""The bundled demo: a tiny supernet trained here on synthetic data, and its validation set regenerated on demand.

The val set is deterministic (seed 0, 320 px): generating it again gives the same images, so `edgedet eval` with
no arguments reproduces the AP recorded in the README.
"""
from __future__ import annotations

import os
from pathlib import Path

DEMO_CHECKPOINT = Path(__file__).resolve().parent.parent / "assets" / "demo_tiny.safetensors"
DEMO_SEED, DEMO_VAL_IMAGES, DEMO_IMAGE_SIZE = 0, 300, 320
# the exact command that trained the bundled checkpoint (also stored in its metadata)
DEMO_TRAIN_COMMAND = ("edgedet data synth --out runs/data/synth --train 3000 --val 300 --seed 0 --size 320 && "
                      "edgedet train --data runs/data/synth --out runs/train/demo_tiny --preset tiny "
                      "--space search/tiny.yaml --epochs 21 --batch-size 8 --lr 3e-4 --warmup 300 --groups 4 --seed 0")


def cache_dir() -> Path:
    return Path(os.environ.get("EDGEDET_CACHE", Path.home() / ".cache" / "edgedet"))


def demo_checkpoint() -> Path:
    from ..errors import CheckpointError

    if not DEMO_CHECKPOINT.is_file():
        raise CheckpointError(f"{DEMO_CHECKPOINT}: the bundled demo supernet is missing from this install")
    return DEMO_CHECKPOINT


def demo_data(progress=None) -> Path:
    """Folder of the demo's synthetic val set (Roboflow layout, valid/ only), generated on first use."""
    from .coco import ANN_FILE
    from .synthetic import generate

    root = cache_dir() / f"synth-s{DEMO_SEED}-{DEMO_IMAGE_SIZE}px-val{DEMO_VAL_IMAGES}"
    if not (root / "valid" / ANN_FILE).is_file():
        generate(root, 0, DEMO_VAL_IMAGES, seed=DEMO_SEED, image_size=DEMO_IMAGE_SIZE, progress=progress,
                 workers=min(2, os.cpu_count() or 1))
    return root
