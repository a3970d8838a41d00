"""COCO-format detection datasets (a Roboflow COCO export works as is).

An item is (image float32 [3,H,W] RGB in [0,1], target dict(boxes float32 [N,4] normalised cxcywh,
labels int64 [N] contiguous 0..C-1 in the dataset's category order, image_id int, orig_size (H, W))).

Annotation files are untrusted: `read_coco` checks every record (ids, names, boxes, file names) and refuses the
file with one line naming it and the record; image file names stay inside the images folder. A dataset opened
with `labels=` (a model's SupernetConfig or an artifact's metadata) maps the model's label indices onto the
dataset's categories (`label_map`: by category id where the model records them, else by name) and refuses a
dataset whose categories the model does not have.
"""
from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from ..boxes import xyxy_to_cxcywh
from ..errors import ConfigError

ANN_FILE = "_annotations.coco.json"
UNUSED_CLASS = "N/A"  # a logit no class was trained on (RF-DETR's unused COCO ids); never mapped by name
MAX_ID = 2**63 - 1
MAX_NAME = 1000


def split_paths(root: Path, split: str) -> tuple[Path, Path]:
    """(images dir, annotation file) of a Roboflow-layout split; 'val' is accepted for 'valid'."""
    root = Path(root)
    for name in ([split, "valid", "val"] if split in ("valid", "val") else [split]):
        ann = root / name / ANN_FILE
        if ann.is_file():
            return ann.parent, ann
    raise ConfigError(f"{root}: no {split}/{ANN_FILE} (expected a COCO dataset in Roboflow layout: "
                      f"train/ and valid/ folders, each with images and {ANN_FILE})")


# ------------------------------------------------------------------------------------------------ validation

class _Check:
    """Field checks of one annotation file; every failure is one ConfigError naming the file and the record."""

    def __init__(self, ann_file: Path):
        self.ann_file = ann_file

    def fail(self, where: str, msg: str) -> ConfigError:
        return ConfigError(f"{self.ann_file}: {where}: {msg}")

    def record(self, rec: Any, where: str) -> dict:
        if not isinstance(rec, dict):
            raise self.fail(where, f"expected an object, got {type(rec).__name__}")
        return rec

    def integer(self, rec: dict, key: str, where: str, lo: int = 0, required: bool = True) -> int | None:
        if key not in rec:
            if required:
                raise self.fail(where, f"'{key}' is missing")
            return None
        v = rec[key]
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= MAX_ID:
            raise self.fail(where, f"'{key}' is {_shown(v)}, expected an integer in {lo}..2**63-1")
        return v

    def text(self, rec: dict, key: str, where: str) -> str:
        v = rec.get(key)
        if key not in rec:
            raise self.fail(where, f"'{key}' is missing")
        if not isinstance(v, str) or not v or len(v) > MAX_NAME or "\x00" in v:
            raise self.fail(where, f"'{key}' is {_shown(v)}, expected a non-empty string of at most {MAX_NAME} "
                                   "characters")
        return v

    def number(self, v: Any) -> bool:
        return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)


def _shown(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 60 else r[:57] + "..."


def _where(kind: str, i: int, rec: Any) -> str:
    rid = rec.get("id") if isinstance(rec, dict) else None
    return f"{kind}[{i}]" + (f" (id {rid})" if isinstance(rid, int) and not isinstance(rid, bool) else "")


def _safe_file_name(name: str) -> bool:
    """A relative POSIX path without '..', backslashes or a drive letter: it cannot leave the images folder
    lexically (symlinks are checked when the image is opened)."""
    p = PurePosixPath(name)
    return bool(p.parts) and not (p.is_absolute() or ".." in p.parts or "\\" in name
                                  or (len(name) > 1 and name[1] == ":" and name[0].isalpha()))


def read_coco(ann_file: Path) -> dict:
    """Read and check a COCO annotation file -> a normalised copy (annotations get 'area' = w x h and 'iscrowd' 0
    when absent, as pycocotools needs). Refused, with one line naming the file and the record: non-JSON; missing or
    ill-typed keys; non-integer or duplicate ids; empty or non-string names and file names; file names that leave
    the folder; boxes that are not 4 finite numbers with w, h >= 0; annotations whose image or category is not in
    the file; an empty image list."""
    ann_file = Path(ann_file)
    try:
        data = json.loads(ann_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{ann_file}: annotation file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{ann_file}: is a folder, not an annotation file") from None
    except (ValueError, UnicodeDecodeError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise ConfigError(f"{ann_file}: not valid JSON ({' '.join(str(e).split())[:120]})") from None
    except OSError as e:
        raise ConfigError(f"{ann_file}: cannot read ({e.strerror or type(e).__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{ann_file}: expected a JSON object with images, annotations and categories, got "
                          f"{type(data).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            raise ConfigError(f"{ann_file}: field '{key}' missing or not a list")
    c = _Check(ann_file)

    def records(kind: str, what: str):  # (where, record) with an integer id that no earlier record has
        seen: set[int] = set()
        for i, rec in enumerate(data[kind]):
            where = _where(kind, i, rec)
            rid = c.integer(c.record(rec, where), "id", where)
            if rid in seen:
                raise c.fail(where, f"duplicate {what} id {rid}")
            seen.add(rid)
            yield where, rec

    images = []
    for where, rec in records("images", "image"):
        name = c.text(rec, "file_name", where)
        if not _safe_file_name(name):
            raise c.fail(where, f"file_name {_shown(name)} is not a relative path inside the images folder")
        for key in ("width", "height"):
            c.integer(rec, key, where, lo=1, required=False)
        images.append(dict(rec))
    if not images:
        raise ConfigError(f"{ann_file}: no images (the 'images' list is empty)")
    cats = []
    for where, rec in records("categories", "category"):
        c.text(rec, "name", where)
        cats.append(dict(rec))
    if not cats:
        raise ConfigError(f"{ann_file}: no categories (the 'categories' list is empty)")
    image_ids, cat_ids = {im["id"] for im in images}, {cat["id"] for cat in cats}
    anns = []
    for where, rec in records("annotations", "annotation"):
        if c.integer(rec, "image_id", where) not in image_ids:
            raise c.fail(where, f"image_id {rec['image_id']} is not among the images")
        if c.integer(rec, "category_id", where) not in cat_ids:
            raise c.fail(where, f"category_id {rec['category_id']} is not among the categories")
        box = rec.get("bbox")
        if "bbox" not in rec:
            raise c.fail(where, "'bbox' is missing")
        if not isinstance(box, list) or len(box) != 4 or not all(map(c.number, box)) or box[2] < 0 or box[3] < 0:
            raise c.fail(where, f"'bbox' is {_shown(box)}, expected [x, y, width, height]: 4 finite numbers, "
                                "width and height >= 0")
        crowd = rec.get("iscrowd", 0)
        if crowd not in (0, 1) or isinstance(crowd, float):
            raise c.fail(where, f"'iscrowd' is {_shown(crowd)}, expected 0 or 1")
        if "area" in rec and not (c.number(rec["area"]) and rec["area"] >= 0):
            raise c.fail(where, f"'area' is {_shown(rec['area'])}, expected a finite number >= 0")
        anns.append(dict(rec, bbox=[float(v) for v in box], iscrowd=int(crowd),
                         area=float(rec.get("area", box[2] * box[3]))))
    return dict(data, images=images, annotations=anns, categories=cats)


# --------------------------------------------------------------------------------------------- label mapping

def model_labels(labels: Any) -> tuple[int, list[str] | None, list[int] | None]:
    """(num_classes, class_names, category_ids) of a model: a SupernetConfig, or a mapping with those keys (an
    artifact's metadata)."""
    get = labels.get if isinstance(labels, Mapping) else lambda k, d=None: getattr(labels, k, d)
    names, ids = get("class_names"), get("category_ids")
    n = get("num_classes") or len(names or ids or [])
    return int(n), (list(names) if names else None), (list(ids) if ids else None)


def _norm(name: str) -> str:
    return " ".join(str(name).split()).casefold()


def label_map(categories: list[dict], labels: Any, where: str) -> np.ndarray:
    """Dataset category id of each of a model's labels (int64 [num_classes], -1 for a label the dataset does not
    have, e.g. RF-DETR's unused 'N/A' COCO ids): by the model's category_ids when it records them, with the names
    required to agree; else by class name (case and spacing ignored); else, for a model without names or ids,
    the dataset's own order when the counts match. Every dataset category must be one of the model's labels.
    ConfigError (one line naming `where`) for anything that would compare the wrong classes."""
    n, names, ids = model_labels(labels)
    out = np.full(n, -1, dtype=np.int64)
    if ids is not None:
        by_id = {cid: i for i, cid in enumerate(ids) if not (names and names[i] == UNUSED_CLASS)}
        for cat in categories:
            i = by_id.get(cat["id"])
            if i is None:
                raise ConfigError(f"{where}: category {cat['name']!r} (id {cat['id']}) is not among the model's "
                                  f"labels (its category ids: {_ids_shown(ids)})")
            if names and _norm(names[i]) != _norm(cat["name"]):
                raise ConfigError(f"{where}: category id {cat['id']} is {cat['name']!r} in the dataset but "
                                  f"{names[i]!r} in the model: refused rather than compare different classes")
            out[i] = cat["id"]
        return out
    if names is not None:
        index: dict[str, int] = {}
        for i, name in enumerate(names):
            if name != UNUSED_CLASS:
                if _norm(name) in index:
                    raise ConfigError(f"{where}: the model names two labels {name!r}: its labels cannot be mapped "
                                      "onto the dataset's categories by name")
                index[_norm(name)] = i
        missing = [cat["name"] for cat in categories if _norm(cat["name"]) not in index]
        if missing:
            raise ConfigError(f"{where}: categories {_names_shown(missing)} are not among the model's classes "
                              f"({_names_shown([x for x in names if x != UNUSED_CLASS])})")
        for cat in categories:
            out[index[_norm(cat["name"])]] = cat["id"]
        return out
    if n != len(categories):
        raise ConfigError(f"{where}: the model has {n} classes without names or category ids, the dataset "
                          f"{len(categories)} categories: cannot tell which label is which category")
    return np.asarray([cat["id"] for cat in categories], dtype=np.int64)


def _names_shown(names: list[str], k: int = 6) -> str:
    shown = ", ".join(repr(x[:40]) for x in names[:k])
    return shown + (f", ... ({len(names)} in all)" if len(names) > k else "")


def _ids_shown(ids: list[int], k: int = 8) -> str:
    return ", ".join(map(str, ids[:k])) + (", ..." if len(ids) > k else "")


# ----------------------------------------------------------------------------------------------------- dataset

class CocoDetection(torch.utils.data.Dataset):
    """root + split in Roboflow layout, or explicit images_dir + ann_file.

    Training labels are the dataset's categories in id order (`class_names`, `category_ids`). `label_to_cat_id`
    maps the labels of the model that evaluates: the dataset's own order by default, or, with `labels` (a model's
    SupernetConfig or an artifact's metadata), the model's labels mapped by `label_map` (-1: not in the dataset).
    """

    def __init__(self, root: Path | None = None, split: str = "train", transforms: Callable | None = None,
                 images_dir: Path | None = None, ann_file: Path | None = None, labels: Any = None):
        if ann_file is None:
            images_dir, ann_file = split_paths(Path(root), split)
        self.images_dir, self.ann_file, self.transforms = Path(images_dir), Path(ann_file), transforms
        self.coco = read_coco(self.ann_file)
        cats = sorted(self.coco["categories"], key=lambda c: c["id"])
        # Roboflow exports carry a super-category with id 0 that no annotation uses: drop unused categories
        used = {a["category_id"] for a in self.coco["annotations"]}
        if len(cats) > 1 and cats[0]["id"] == 0 and 0 not in used:
            cats = cats[1:]
        self.categories = cats
        self.class_names = [c["name"] for c in cats]
        self.category_ids = [c["id"] for c in cats]
        self.label_to_cat_id = list(self.category_ids)
        if labels is not None:
            self.label_to_cat_id = label_map(cats, labels, str(self.ann_file)).tolist()
        cat_to_label = {c: i for i, c in enumerate(self.category_ids)}
        self.images = sorted(self.coco["images"], key=lambda im: im["id"])
        self.anns: dict[int, list] = {im["id"]: [] for im in self.images}
        for a in self.coco["annotations"]:
            if a["iscrowd"] or a["category_id"] not in cat_to_label:
                continue
            x, y, w, h = a["bbox"]
            if w > 1 and h > 1:
                self.anns[a["image_id"]].append((cat_to_label[a["category_id"]], (x, y, w, h)))

    def __len__(self) -> int:
        return len(self.images)

    def image_path(self, i: int) -> Path:
        """The image file of item i, resolved; ConfigError if it leaves the images folder (e.g. through a
        symlink)."""
        info = self.images[i]
        root = self.images_dir.resolve()
        path = (root / info["file_name"]).resolve()
        if not path.is_relative_to(root):
            raise ConfigError(f"{self.ann_file}: image id {info['id']}: file_name {_shown(info['file_name'])} "
                              f"resolves outside {self.images_dir}")
        return path

    def load_image(self, i: int) -> torch.Tensor:
        path = self.image_path(i)
        try:
            with Image.open(path) as im:
                arr = np.array(im.convert("RGB"), dtype=np.uint8)
        except FileNotFoundError:
            raise ConfigError(f"{path}: image file not found (image id {self.images[i]['id']} of "
                              f"{self.ann_file})") from None
        except Exception as e:  # OSError, PIL's DecompressionBombError, truncated or foreign data
            raise ConfigError(f"{path}: cannot read image ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:120]})") from None
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
