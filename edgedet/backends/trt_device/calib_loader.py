"""Polygraphy data loader (`--data-loader-script calib_loader.py`): the artifact's calibration images, one
{"images": float32 [1,3,R,R]} feed per image, preprocessed on the host exactly like the runtime."""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

CALIB = Path(__file__).resolve().with_name("calib.npz")


def load_data() -> Iterator[dict[str, np.ndarray]]:
    with np.load(CALIB) as z:
        images = z["images"]
    for i in range(images.shape[0]):
        yield {"images": np.ascontiguousarray(images[i : i + 1], dtype=np.float32)}
