"""Set-prediction losses as a name -> function map returning named terms; weights applied in one place.

Every decoder layer and the encoder proposals get the same losses (that is what makes depth truncatable).
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..boxes import box_iou, cxcywh_to_xyxy, generalized_box_iou
from .matcher import HungarianMatcher

DEFAULT_WEIGHTS = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0}


def _matched(outputs: dict, targets: list[dict], indices):
    b = torch.cat([torch.full_like(q, i) for i, (q, _) in enumerate(indices)])
    q = torch.cat([q for q, _ in indices])
    labels = torch.cat([t["labels"][k] for t, (_, k) in zip(targets, indices)])
    tboxes = torch.cat([t["boxes"][k] for t, (_, k) in zip(targets, indices)])
    return b, q, labels, tboxes


def loss_labels(outputs: dict, targets: list[dict], indices, num_boxes: float, gamma: float = 2.0) -> dict:
    """IA-BCE: a matched (query, class) gets the soft target t = max(p^0.25 * IoU^0.75, 0.01) (detached) in a BCE;
    every other entry -p^gamma log(1-p). Sum / num_boxes."""
    logits = outputs["pred_logits"]
    b, q, labels, tboxes = _matched(outputs, targets, indices)
    p = logits.sigmoid()
    pos_w = torch.zeros_like(logits)
    neg_w = p.detach() ** gamma
    if len(q):
        iou = torch.diag(box_iou(cxcywh_to_xyxy(outputs["pred_boxes"][b, q].detach()), cxcywh_to_xyxy(tboxes))[0])
        t = (p[b, q, labels].detach() ** 0.25 * iou ** 0.75).clamp(min=0.01)
        pos_w[b, q, labels] = t
        neg_w[b, q, labels] = 1 - t
    loss = -(pos_w * F.logsigmoid(logits) + neg_w * F.logsigmoid(-logits))
    return {"loss_ce": loss.sum() / num_boxes}


def loss_boxes(outputs: dict, targets: list[dict], indices, num_boxes: float) -> dict:
    """L1 on normalised cxcywh and 1 - GIoU of matched pairs, each summed / num_boxes."""
    b, q, _, tboxes = _matched(outputs, targets, indices)
    src = outputs["pred_boxes"][b, q]
    l1 = F.l1_loss(src, tboxes, reduction="sum")
    giou = 1 - torch.diag(generalized_box_iou(cxcywh_to_xyxy(src), cxcywh_to_xyxy(tboxes)))
    return {"loss_bbox": l1 / num_boxes, "loss_giou": giou.sum() / num_boxes}


LOSSES: dict[str, Callable] = {"labels": loss_labels, "boxes": loss_boxes}


class SetCriterion(torch.nn.Module):
    """outputs (Supernet.forward in train mode) + targets -> dict of named, unweighted terms with suffixes
    '' (last layer), '_{i}' (earlier layers), '_enc' (encoder proposals); `total(terms)` applies the weights."""

    def __init__(self, matcher: HungarianMatcher | None = None, weights: dict | None = None,
                 losses: tuple[str, ...] = ("labels", "boxes")):
        super().__init__()
        self.matcher = matcher or HungarianMatcher()
        self.weights = dict(DEFAULT_WEIGHTS, **(weights or {}))
        self.losses = losses

    def _terms(self, outputs, targets, groups, num_boxes, suffix) -> dict:
        indices = self.matcher(outputs, targets, groups)
        terms = {}
        for name in self.losses:
            for k, v in LOSSES[name](outputs, targets, indices, num_boxes).items():
                terms[k + suffix] = v
        return terms

    def forward(self, outputs: dict, targets: list[dict], groups: int = 1, num_boxes: float | None = None) -> dict:
        if num_boxes is None:
            num_boxes = float(sum(len(t["labels"]) for t in targets))
        num_boxes = max(num_boxes * groups, 1.0)
        terms = self._terms(outputs, targets, groups, num_boxes, "")
        for i, aux in enumerate(outputs.get("aux_outputs", [])):
            terms.update(self._terms(aux, targets, groups, num_boxes, f"_{i}"))
        enc = outputs.get("enc_outputs")
        if enc is not None and enc["pred_logits"] is not outputs["pred_logits"]:  # at depth 0 they are one
            terms.update(self._terms(outputs["enc_outputs"], targets, groups, num_boxes, "_enc"))
        return terms

    def total(self, terms: dict) -> torch.Tensor:
        return sum(self.weights["_".join(k.split("_")[:2])] * v for k, v in terms.items())
