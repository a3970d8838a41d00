"""Shared fixtures: tiny supernets with every weight non-trivial (no zero-initialised heads hiding mistakes)."""
from __future__ import annotations

import pytest
import torch

from edgedet.config import preset
from edgedet.model.supernet import Supernet


def randomize(net: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Add seeded noise to every parameter, so zero-initialised box heads and offsets are exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return net


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """A small synthetic COCO dataset (12 train, 6 valid images at 128 px), made once per session."""
    from edgedet.data.synthetic import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, 12, 6, seed=0, image_size=128)
    return root


@pytest.fixture(scope="session")
def tiny_cfg():
    return preset("tiny")


@pytest.fixture(scope="session")
def tiny_net(tiny_cfg):
    torch.manual_seed(0)
    return randomize(Supernet(tiny_cfg)).eval()


COCO_SUBSET = {1: (1, "person"), 2: (3, "car"), 3: (18, "dog")}  # synthetic class id -> (COCO id, COCO name)


def with_coco_ids(root, mapping: dict = COCO_SUBSET) -> None:
    """Rewrite a synthetic dataset's annotation files in place so its categories are COCO's, with non-contiguous ids:
    synthetic classes in `mapping` get (COCO id, name), the others and their boxes are dropped."""
    import json
    from pathlib import Path

    from edgedet.data.coco import ANN_FILE

    for ann in Path(root).glob(f"*/{ANN_FILE}"):
        coco = json.loads(ann.read_text())
        coco["categories"] = [{"id": cid, "name": name, "supercategory": "coco"} for cid, name in mapping.values()]
        coco["annotations"] = [dict(a, category_id=mapping[a["category_id"]][0]) for a in coco["annotations"]
                               if a["category_id"] in mapping]
        ann.write_text(json.dumps(coco))
