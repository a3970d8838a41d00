"""INT8 calibration data from a recipe (calibration/*.yaml), identical for every backend: the recipe's images,
stretched to the subnet's resolution exactly as the runtime does, as float32 [1,3,R,R] RGB in [0,1]."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .config import CalibrationRecipe


def recipe_dataset(recipe: CalibrationRecipe, base: Path | None = None):
    from .data.coco import CocoDetection

    if recipe.dataset == "demo":
        from .data.demo import DEMO_IMAGE_SIZE, DEMO_SEED, cache_dir
        from .data.synthetic import generate

        root = cache_dir() / f"synth-s{DEMO_SEED}-{DEMO_IMAGE_SIZE}px-calib{recipe.images}"
        if not (root / "train" / "_annotations.coco.json").is_file():
            generate(root, recipe.images, 0, seed=DEMO_SEED, image_size=DEMO_IMAGE_SIZE,
                     workers=min(2, os.cpu_count() or 1))
        return CocoDetection(root, "train")
    root = Path(recipe.dataset)
    if not root.is_absolute() and base is not None:
        root = base / root
    return CocoDetection(root, recipe.split)


def calibration_fn(recipe: CalibrationRecipe, base: Path | None = None, on_image=None):
    """resolution -> list of float32 [1,3,R,R] batches (the recipe's images, sampled with its seed).
    on_image(done, total) is called as each image is read and preprocessed."""
    from .runtime.core import preprocess

    ds = recipe_dataset(recipe, base)
    rng = np.random.default_rng(recipe.seed)
    idx = rng.permutation(len(ds))[: recipe.images]

    def batches(resolution: int) -> list[np.ndarray]:
        out = []
        for n, i in enumerate(idx, 1):
            img = (ds.load_image(int(i)).permute(1, 2, 0).numpy() * 255.0).round().astype(np.uint8)
            out.append(preprocess(img, resolution))
            if on_image is not None:
                on_image(n, len(idx))
        return out

    return batches
