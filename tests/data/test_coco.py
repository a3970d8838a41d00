"""COCO loading and the RF-DETR augmentation, checked against the json by hand."""
from __future__ import annotations

import json

import pytest
import torch

from edgedet.data.coco import CocoDetection, collate_fn
from edgedet.data.transforms import RandomCropFlip, batch_resize, crop, hflip
from edgedet.errors import ConfigError


def test_boxes_match_the_json(synth_data):
    ds = CocoDetection(synth_data, "valid")
    coco = json.loads((synth_data / "valid" / "_annotations.coco.json").read_text())
    img, t = ds[0]
    h, w = t["orig_size"]
    assert img.shape == (3, h, w) and 0 <= img.min() and img.max() <= 1
    anns = [a for a in coco["annotations"] if a["image_id"] == ds.images[0]["id"]]
    assert len(anns) == len(t["labels"])
    for a, box, lab in zip(anns, t["boxes"], t["labels"]):
        x, y, bw, bh = a["bbox"]
        assert torch.allclose(box, torch.tensor([(x + bw / 2) / w, (y + bh / 2) / h, bw / w, bh / h]), atol=1e-6)
        assert ds.label_to_cat_id[lab] == a["category_id"]


def test_flip_and_crop(synth_data):
    ds = CocoDetection(synth_data, "train")
    img, t = ds[1]
    fi, ft = hflip(img, t)
    assert torch.allclose(ft["boxes"][:, 0], 1 - t["boxes"][:, 0]) and torch.equal(fi[..., 0], img[..., -1])
    ci, ct = crop(img, t, 10, 20, 60, 70)
    assert ci.shape[-2:] == (60, 70)
    assert ((ct["boxes"] >= 0) & (ct["boxes"] <= 1)).all() and len(ct["boxes"]) == len(ct["labels"])
    aug = RandomCropFlip(generator=torch.Generator().manual_seed(0))
    for i in range(4):
        _, at = aug(*ds[i])
        assert ((at["boxes"] >= 0) & (at["boxes"] <= 1 + 1e-6)).all()


def test_batch_resize_and_collate(synth_data):
    ds = CocoDetection(synth_data, "train", transforms=RandomCropFlip())
    images, targets = collate_fn([ds[0], ds[1]])
    x = batch_resize(images, 96)
    assert x.shape == (2, 3, 96, 96) and len(targets) == 2


def test_bad_dataset_errors(tmp_path):
    with pytest.raises(ConfigError, match="no train/_annotations.coco.json"):
        CocoDetection(tmp_path, "train")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "_annotations.coco.json").write_text("{broken")
    with pytest.raises(ConfigError, match="not valid JSON"):
        CocoDetection(tmp_path, "train")
