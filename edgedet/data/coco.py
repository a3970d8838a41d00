"""COCO-format detection datasets (a Roboflow COCO export works as is).

An item is (image float32 [3,H,W] RGB in [0,1], target dict(boxes float32 [N,4] normalised cxcywh,
labels int64 [N] contiguous 0..C-1, image_id int, orig_size (H, W))).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image

from ..boxes import xyxy_to_cxcywh
from ..errors import ConfigError

ANN_FILE = "_annotations.coco.json"


def split_paths(root: Path, split: str) -> tuple[Path, Path]:
    """(images dir, annotation file) of a Roboflow-layout split; 'val' is accepted for 'valid'."""
    root = Path(root)
    for name in ([split, "valid", "val"] if split in ("valid", "val") else [split]):
        ann = root / name / ANN_FILE
        if ann.is_file():
            return ann.parent, ann
    raise ConfigError(f"{root}: no {split}/{ANN_FILE} (expected a COCO dataset in Roboflow layout: "
                      f"train/ and valid/ folders, each with images and {ANN_FILE})")


def read_coco(ann_file: Path) -> dict:
    try:
        data = json.loads(Path(ann_file).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{ann_file}: annotation file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{ann_file}: not valid JSON ({e})") from None
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ConfigError(f"{ann_file}: field '{key}' missing or not a list")
    return data


class CocoDetection(torch.utils.data.Dataset):
    """root + split in Roboflow layout, or explicit images_dir + ann_file."""

    def __init__(self, root: Path | None = None, split: str = "train", transforms: Callable | None = None,
                 images_dir: Path | None = None, ann_file: Path | None = None):
        if ann_file is None:
            images_dir, ann_file = split_paths(Path(root), split)
        self.images_dir, self.ann_file, self.transforms = Path(images_dir), Path(ann_file), transforms
        self.coco = read_coco(self.ann_file)
        cats = sorted(self.coco["categories"], key=lambda c: c["id"])
        # Roboflow exports carry a super-category with id 0 that no annotation uses: drop unused categories
        used = {a["category_id"] for a in self.coco["annotations"]}
        if len(cats) > 1 and cats[0]["id"] == 0 and 0 not in used:
            cats = cats[1:]
        self.class_names = [c["name"] for c in cats]
        self.label_to_cat_id = [c["id"] for c in cats]
        cat_to_label = {c: i for i, c in enumerate(self.label_to_cat_id)}
        self.images = sorted(self.coco["images"], key=lambda im: im["id"])
        self.anns: dict[int, list] = {im["id"]: [] for im in self.images}
        for a in self.coco["annotations"]:
            if a.get("iscrowd", 0) or a["image_id"] not in self.anns or a["category_id"] not in cat_to_label:
                continue
            x, y, w, h = a["bbox"]
            if w > 1 and h > 1:
                self.anns[a["image_id"]].append((cat_to_label[a["category_id"]], (x, y, w, h)))

    def __len__(self) -> int:
        return len(self.images)

    def load_image(self, i: int) -> torch.Tensor:
        info = self.images[i]
        path = self.images_dir / info["file_name"]
        try:
            with Image.open(path) as im:
                arr = np.array(im.convert("RGB"), dtype=np.uint8)
        except (FileNotFoundError, OSError) as e:
            raise ConfigError(f"{path}: cannot read image ({e})") from None
        return torch.from_numpy(arr).permute(2, 0, 1).float().div_(255.0)

    def target(self, i: int, h: int, w: int) -> dict:
        info = self.images[i]
        anns = self.anns[info["id"]]
        xyxy = torch.tensor([[x, y, x + bw, y + bh] for _, (x, y, bw, bh) in anns], dtype=torch.float32)
        xyxy = (xyxy.reshape(-1, 4) / torch.tensor([w, h, w, h])).clamp(0, 1)  # clip to the image, then convert
        labels = torch.tensor([c for c, _ in anns], dtype=torch.int64)
        return {"boxes": xyxy_to_cxcywh(xyxy), "labels": labels, "image_id": info["id"], "orig_size": (h, w)}

    def __getitem__(self, i: int):
        img = self.load_image(i)
        target = self.target(i, img.shape[1], img.shape[2])
        if self.transforms is not None:
            img, target = self.transforms(img, target)
        return img, target


def collate_fn(batch):
    """Images differ in size until the batch-level resize: keep lists."""
    images, targets = zip(*batch)
    return list(images), list(targets)
