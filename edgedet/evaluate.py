"""COCO box AP of supernet subnets and of compiled artifacts, through one code path.

Pipeline for every model: dataset image (float [3,H,W] RGB in [0,1], original size (H,W)) -> bilinear resize to
the square input R x R (`load_images`, `batch_resize`) -> raw outputs boxes [B,Q,4] normalised cxcywh, logits [B,Q,C] ->
`edgedet.runtime.core.postprocess` (top-k over queries x classes, pixel boxes of the original image) -> COCO
detections (label -> dataset category id through the model's label map, see `label_categories`) -> pycocotools
COCOeval (`coco_ap`).

`evaluate_subnets` shares computation between subnets: one backbone+projector pass per batch and
(patch, resolution, windows), one decoder pass per query count at the deepest depth requested, every shallower
depth read from the same pass (decoder layers and heads do not depend on later layers). It gives exactly the
numbers of evaluating each subnet with its own forward (share=False).

The dataset protocol: `len(dataset)`; `dataset[i] -> (image float [3,H,W], target dict with image_id and
orig_size (H, W))` without augmentation; `dataset.label_to_cat_id` (label -> COCO category id, dict or list, -1 for
a label the dataset does not have) and, for a COCO dataset, `dataset.categories` (its categories, so a model's
labels can be mapped by edgedet.data.coco.label_map); the ground truth is `gt` or, when not given, `dataset.coco`
(the checked COCO dict, or a pycocotools COCO) or `dataset.ann_file` (COCO json path).
"""
from __future__ import annotations

import contextlib
import copy
import io
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import SubnetConfig
from .data.transforms import batch_resize
from .runtime.core import postprocess

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")  # the first six COCOeval.stats
Progress = Callable[[int, int], None]
InferFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


# ------------------------------------------------------------------------------------------------ COCO AP
def load_gt(gt: Any):
    """A pycocotools COCO from a json path, a COCO-format dict (copied) or a COCO object (returned as is)."""
    from pycocotools.coco import COCO

    if isinstance(gt, COCO):
        return gt
    with contextlib.redirect_stdout(io.StringIO()):
        if isinstance(gt, (str, Path)):
            return COCO(str(gt))
        coco = COCO()
        coco.dataset = copy.deepcopy(gt)
        coco.createIndex()
        return coco


def coco_ap(gt: Any, detections: Sequence[dict] | np.ndarray) -> dict[str, float]:
    """COCO bbox AP with pycocotools, its prints silenced.

    gt: COCO json path, dict or pycocotools COCO. detections: list of dict(image_id, category_id, bbox [x,y,w,h]
    pixels, score), or a float array [N,7] (image_id, x, y, w, h, score, category_id). Returns AP, AP50, AP75, APs,
    APm, APl as floats in [0,1]; as in pycocotools, an area range without ground-truth boxes reports -1.
    No detections give 0 (no crash).
    """
    from pycocotools.cocoeval import COCOeval

    coco_gt = load_gt(gt)
    if isinstance(detections, np.ndarray):
        detections = to_coco_dicts(detections)
    with contextlib.redirect_stdout(io.StringIO()):
        if len(detections):
            coco_dt = coco_gt.loadRes(list(detections))
        else:  # loadRes cannot take an empty list; COCOeval handles an empty result set
            coco_dt = load_gt({"images": coco_gt.dataset["images"], "categories": coco_gt.dataset["categories"],
                               "annotations": []})
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: float(v) for k, v in zip(METRICS, ev.stats[:6])}


def to_coco_dicts(dets: np.ndarray) -> list[dict]:
    """[N,7] (image_id, x, y, w, h, score, category_id) -> COCO result dicts."""
    return [{"image_id": int(d[0]), "category_id": int(d[6]), "bbox": [float(v) for v in d[1:5]],
             "score": float(d[5])} for d in np.asarray(dets, dtype=np.float64)]


def detections_array(boxes: np.ndarray, logits: np.ndarray, image_ids: Sequence[int],
                     sizes: Sequence[tuple[int, int]], cat_ids: np.ndarray, topk: int = 100) -> np.ndarray:
    """Raw outputs of one batch (boxes [B,Q,4] cxcywh, logits [B,Q,C]) -> float64 [N,7] COCO rows (image_id,
    x, y, w, h (pixels of the original image), score, category_id); cat_ids int [C] maps label -> category id
    (detections of a label mapped to -1, a class the dataset does not have, are left out)."""
    if logits.shape[-1] != len(cat_ids):
        from .errors import ConfigError

        raise ConfigError(f"the model has {logits.shape[-1]} classes but the dataset's label map has {len(cat_ids)} "
                          "entries: map the model's labels onto the dataset (labels=...)")
    rows = []
    for img_id, det in zip(image_ids, postprocess(boxes, logits, sizes, topk)):
        keep = cat_ids[det["labels"]] >= 0
        b = det["boxes"][keep].astype(np.float64)
        k = len(b)
        rows.append(np.column_stack([np.full(k, img_id, np.float64), b[:, 0], b[:, 1], b[:, 2] - b[:, 0],
                                     b[:, 3] - b[:, 1], det["scores"][keep].astype(np.float64),
                                     cat_ids[det["labels"][keep]].astype(np.float64)]))
    return np.concatenate(rows) if rows else np.zeros((0, 7))


# ------------------------------------------------------------------------------------------------- images
def _gt_of(dataset, gt: Any):
    if gt is not None:
        return gt
    for name in ("coco", "ann_file"):
        if getattr(dataset, name, None) is not None:
            return getattr(dataset, name)
    raise ValueError("no ground truth: pass gt= (COCO json path, dict or COCO) or give the dataset an ann_file")


def label_categories(dataset, labels: Any = None) -> np.ndarray:
    """Model label -> dataset category id as int64 [C] (-1: not in the dataset). With `labels` (a SupernetConfig
    or an artifact's metadata: class_names, category_ids, num_classes) and a dataset that lists its categories,
    edgedet.data.coco.label_map decides (by id, else by name; ConfigError when they do not fit); otherwise the
    dataset's label_to_cat_id (a dict or a list)."""
    cats = getattr(dataset, "categories", None)
    if labels is not None and cats is not None:
        from .data.coco import label_map

        return label_map(cats, labels, str(getattr(dataset, "ann_file", None) or "dataset"))
    m = dataset.label_to_cat_id
    return np.asarray([m[i] for i in range(len(m))], dtype=np.int64)


def batches(n: int, batch_size: int) -> list[list[int]]:
    return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]


def load_images(dataset, indices: Sequence[int]) -> tuple[list[torch.Tensor], list[int], list[tuple[int, int]]]:
    """Dataset items -> (images float [3,H_i,W_i], image ids, original sizes (H, W) from target['orig_size'])."""
    images, ids, sizes = [], [], []
    for i in indices:
        img, tgt = dataset[i]
        images.append(torch.as_tensor(img, dtype=torch.float32))
        ids.append(int(tgt["image_id"]))
        h, w = (int(v) for v in tgt["orig_size"])
        sizes.append((h, w))
    return images, ids, sizes




# ---------------------------------------------------------------------------------------------- evaluation
def evaluate_runner(infer_fn: InferFn, resolution: int, dataset, batch_size: int = 8, gt: Any = None,
                    topk: int = 100, progress: Progress | None = None, labels: Any = None) -> dict[str, float]:
    """AP of any runner: infer_fn(images float32 np [B,3,R,R] RGB in [0,1]) -> (boxes [B,Q,4] normalised cxcywh,
    logits [B,Q,C]) as numpy (an ONNX Runtime session, an OpenVINO model, a torch SubnetModule wrapped).
    labels: the model's label space (an artifact's metadata or a SupernetConfig), mapped onto the dataset's
    categories; without it the dataset's label_to_cat_id is used (a dataset opened with labels=, or one whose
    category order is the model's)."""
    cat_ids, parts = label_categories(dataset, labels), []
    todo = batches(len(dataset), batch_size)
    for n, idx in enumerate(todo, 1):
        images, ids, sizes = load_images(dataset, idx)
        boxes, logits = infer_fn(batch_resize(images, resolution).numpy())
        parts.append(detections_array(np.asarray(boxes), np.asarray(logits), ids, sizes, cat_ids, topk))
        if progress:
            progress(n, len(todo))
    return coco_ap(load_gt(_gt_of(dataset, gt)), np.concatenate(parts) if parts else np.zeros((0, 7)))


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


@torch.no_grad()  # not inference_mode: the supernet caches proposal tensors that training reuses later
def evaluate_subnets(net, subnets: Sequence[SubnetConfig], dataset, batch_size: int = 8, share: bool = True,
                     progress: Progress | None = None, gt: Any = None, topk: int = 100) -> dict[str, dict[str, float]]:
    """COCO AP of each subnet of a Supernet `net` -> {subnet id: {AP, AP50, AP75, APs, APm, APl}}.

    share=True: per batch, `net.memory` once per (patch, resolution, windows) group and `net.decode` once per query
    count at the group's deepest requested depth, every depth read from out["layers"] (layer d = (logits [B,Q,C],
    boxes [B,Q,4])). share=False: one plain forward per subnet and batch (the reference; same numbers).
    progress(done, total) counts (batch, group) steps with sharing and (batch, subnet) steps without.
    `net` runs in eval mode and gets its previous mode back (safe inside a training loop).
    """
    was_training = net.training
    net.eval()
    try:
        return _evaluate_subnets(net, subnets, dataset, batch_size, share, progress, gt, topk)
    finally:
        net.train(was_training)


def _evaluate_subnets(net, subnets: Sequence[SubnetConfig], dataset, batch_size: int, share: bool,
                      progress: Progress | None, gt: Any, topk: int) -> dict[str, dict[str, float]]:
    subs = list({s.id: s.check(net.cfg) for s in subnets}.values())
    device = next(net.parameters()).device
    cat_ids = label_categories(dataset, net.cfg)
    todo = batches(len(dataset), batch_size)
    dets: dict[str, list[np.ndarray]] = defaultdict(list)

    groups: dict[tuple[int, int, int], dict[int, list[int]]] = defaultdict(lambda: defaultdict(list))
    for s in subs:  # (patch, resolution, windows) -> queries -> depths
        groups[(s.patch, s.resolution, s.windows)][s.queries].append(s.dec_layers)
    total, done = len(todo) * (len(groups) if share else len(subs)), 0

    def emit(sub: SubnetConfig, logits: torch.Tensor, boxes: torch.Tensor, ids, sizes) -> None:
        dets[sub.id].append(detections_array(_np(boxes), _np(logits), ids, sizes, cat_ids, topk))

    for idx in todo:
        images, ids, sizes = load_images(dataset, idx)
        if share:
            for (patch, res, win), by_q in groups.items():
                memory, props, shapes = net.memory(batch_resize(images, res).to(device), patch, win)
                for q, depths in by_q.items():
                    layers = net.decode(memory, props, shapes, q, max(depths), all_layers=True)["layers"]
                    for d in sorted(set(depths)):
                        emit(SubnetConfig(patch=patch, resolution=res, windows=win, dec_layers=d, queries=q),
                             *layers[d], ids, sizes)
                done += 1
                if progress:
                    progress(done, total)
        else:
            for s in subs:
                out = net(batch_resize(images, s.resolution).to(device), s)
                emit(s, out["pred_logits"], out["pred_boxes"], ids, sizes)
                done += 1
                if progress:
                    progress(done, total)

    coco_gt = load_gt(_gt_of(dataset, gt))
    return {s.id: coco_ap(coco_gt, np.concatenate(dets[s.id]) if dets[s.id] else np.zeros((0, 7))) for s in subs}


class Subset:
    """Some images of a COCO dataset, with the ground truth restricted to them (quick AP checks, NNCF's
    accuracy-controlled quantization)."""

    def __init__(self, dataset, indices: Sequence[int]):
        self.dataset, self.indices = dataset, [int(i) for i in indices]
        self.label_to_cat_id, self.ann_file = dataset.label_to_cat_id, None
        self.categories = getattr(dataset, "categories", None)
        self.images = [dataset.images[i] for i in self.indices]  # so a Subset of a Subset works
        ids = {im["id"] for im in self.images}
        self.coco = dict(dataset.coco, images=[im for im in dataset.coco["images"] if im["id"] in ids],
                         annotations=[a for a in dataset.coco["annotations"] if a["image_id"] in ids])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]
