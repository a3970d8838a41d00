"""Set-prediction losses as a name -> function map returning named terms; weights applied in one place.

Every decoder layer and the encoder proposals get the same losses (that is what makes depth truncatable). A loss
whose inputs are absent from a layer's outputs returns no terms: 'fgl' needs pred_corners (FDR layers), 'ddf' a
teacher_corners entry (the criterion adds the last layer's to the earlier ones), 'dsi' a 'dsi' entry (feature
distillation, top level only).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

from ..boxes import box_iou, cxcywh_to_xyxy, generalized_box_iou
from ..model.heads import box_to_distance
from .matcher import HungarianMatcher

DEFAULT_WEIGHTS = {"loss_ce": 1.0, "loss_bbox": 5.0, "loss_giou": 2.0, "loss_fgl": 0.15, "loss_ddf": 1.5,
                   "loss_dsi": 1.0}
DDF_TEMPERATURE = 5.0


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


def bin_targets(d: torch.Tensor, project: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Edge offsets d [...] -> (bin i [...] int64, w_left, w_right) with W_i <= d < W_{i+1} and d = w_left W_i +
    w_right W_{i+1}; d is first clamped to [W_0, W_N] (W = project, [N+1] increasing)."""
    n = project.numel() - 1
    d = d.clamp(project[0].item(), project[-1].item())
    i = (torch.searchsorted(project, d.contiguous(), right=True) - 1).clamp(0, n - 1)
    lo, hi = project[i], project[i + 1]
    wr = (d - lo) / (hi - lo)
    return i, 1 - wr, wr


def fgl_sum(corners: torch.Tensor, d_star: torch.Tensor, project: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Fine-grained localisation, summed: corners [M,4,N+1] logits, target offsets d_star [M,4], weight [M] (IoU).
    Per edge weight * (w_left CE(i) + w_right CE(i+1))."""
    i, wl, wr = bin_targets(d_star, project)
    logp = F.log_softmax(corners, -1)
    ce_l = -logp.gather(-1, i.unsqueeze(-1)).squeeze(-1)
    ce_r = -logp.gather(-1, (i + 1).unsqueeze(-1)).squeeze(-1)
    return (weight[:, None] * (wl * ce_l + wr * ce_r)).sum()


def loss_fgl(outputs: dict, targets: list[dict], indices, num_boxes: float) -> dict:
    """D-FINE FGL on an FDR layer: matched queries' edge distributions against the target offsets d* of the ground
    truth relative to the layer's anchor (ref_points), each edge weighted by the IoU of the predicted box. Sum /
    num_boxes."""
    if "pred_corners" not in outputs:
        return {}
    b, q, _, tboxes = _matched(outputs, targets, indices)
    corners = outputs["pred_corners"][b, q]
    if not len(q):
        return {"loss_fgl": corners.sum() * 0.0}
    tx = cxcywh_to_xyxy(tboxes)
    iou = torch.diag(box_iou(cxcywh_to_xyxy(outputs["pred_boxes"][b, q].detach()), tx)[0])
    d_star = box_to_distance(outputs["ref_points"][b, q], tx, outputs["fdr_reg_scale"])
    return {"loss_fgl": fgl_sum(corners, d_star, outputs["fdr_project"], iou) / num_boxes}


def ddf_loss(corners: torch.Tensor, teacher: torch.Tensor, weight: torch.Tensor, matched: torch.Tensor,
             temperature: float = DDF_TEMPERATURE) -> torch.Tensor:
    """Decoupled distillation focal loss. corners, teacher: [B,Q,4,K] edge logits; weight [B,Q]; matched [B,Q] bool.
    Per edge weight * T^2 KL(softmax(teacher/T) || softmax(corners/T)); the means over matched and unmatched edges are
    combined with weights sqrt(N_matched) and sqrt(N_unmatched)."""
    t = temperature
    p_t = F.softmax(teacher.detach() / t, -1)
    kl = (p_t * (F.log_softmax(teacher.detach() / t, -1) - F.log_softmax(corners / t, -1))).sum(-1)
    loss = weight.detach()[..., None] * t * t * kl  # [B,Q,4]
    pos, neg = loss[matched], loss[~matched]
    wp, wn = math.sqrt(pos.numel()), math.sqrt(neg.numel())
    total = (pos.mean() * wp if pos.numel() else 0.0) + (neg.mean() * wn if neg.numel() else 0.0)
    return total / max(wp + wn, 1e-9)


def loss_ddf(outputs: dict, targets: list[dict], indices, num_boxes: float) -> dict:
    """GO-LSD's DDF of an earlier FDR layer against the last layer (teacher_corners, teacher_logits): matched queries
    weighted by the IoU of their box, the others by the teacher's top class probability."""
    if "teacher_corners" not in outputs:
        return {}
    b, q, _, tboxes = _matched(outputs, targets, indices)
    logits = outputs["teacher_logits"].detach()
    weight = logits.sigmoid().max(-1).values.clone()
    matched = torch.zeros(weight.shape, dtype=torch.bool, device=weight.device)
    if len(q):
        iou = torch.diag(box_iou(cxcywh_to_xyxy(outputs["pred_boxes"][b, q].detach()), cxcywh_to_xyxy(tboxes))[0])
        weight[b, q] = iou.to(weight.dtype)
        matched[b, q] = True
    return {"loss_ddf": ddf_loss(outputs["pred_corners"], outputs["teacher_corners"], weight, matched)}


def loss_dsi(outputs: dict, targets: list[dict], indices, num_boxes: float) -> dict:
    """DSI feature alignment: outputs['dsi'] = {student: [B,T,D] (projected), teacher: [B,T,D]} -> mean(1 - cos)."""
    if "dsi" not in outputs:
        return {}
    from .distill import dsi_loss

    return {"loss_dsi": dsi_loss(outputs["dsi"]["student"], outputs["dsi"]["teacher"])}


LOSSES: dict[str, Callable] = {"labels": loss_labels, "boxes": loss_boxes, "fgl": loss_fgl, "ddf": loss_ddf,
                               "dsi": loss_dsi}


def unite_matches(per_layer: list[list[tuple[torch.Tensor, torch.Tensor]]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """GO-LSD: the union of the matched (query, target) pairs of several layers, per image; a query matched to
    different targets keeps the one it was matched to most often (ties: the lowest target index)."""
    out = []
    for pairs in zip(*per_layer):
        count: dict[int, dict[int, int]] = {}
        for qi, ti in pairs:
            for a, b in zip(qi.tolist(), ti.tolist()):
                count.setdefault(a, {})[b] = count.setdefault(a, {}).get(b, 0) + 1
        qs = sorted(count)
        ts = [min(count[a], key=lambda t: (-count[a][t], t)) for a in qs]
        out.append((torch.as_tensor(qs, dtype=torch.int64), torch.as_tensor(ts, dtype=torch.int64)))
    return out


class SetCriterion(torch.nn.Module):
    """outputs (Supernet.forward in train mode) + targets -> dict of named, unweighted terms with suffixes
    '' (last layer), '_{i}' (earlier layers), '_pre' (FDR anchor box), '_enc' (encoder proposals); `total(terms)`
    applies the weights (set weights['loss_dsi'] to change the distillation weight, e.g. from GAM).

    With FDR outputs and go_lsd=True (D-FINE GO-LSD), the box, FGL and DDF terms of every decoder layer use the union of
    all layers' matches (normalised by its size), and the classification terms each layer's own match."""

    def __init__(self, matcher: HungarianMatcher | None = None, weights: dict | None = None,
                 losses: tuple[str, ...] = ("labels", "boxes", "fgl", "ddf", "dsi"), go_lsd: bool = True):
        super().__init__()
        self.matcher = matcher or HungarianMatcher()
        self.weights = dict(DEFAULT_WEIGHTS, **(weights or {}))
        self.losses = losses
        self.go_lsd = go_lsd

    def _apply(self, outputs, targets, names, own, union, num_boxes, n_union, suffix) -> dict:
        terms = {}
        for name in names:
            ind, nb = (own, num_boxes) if name == "labels" or union is None else (union, n_union)
            for k, v in LOSSES[name](outputs, targets, ind, nb).items():
                terms[k + suffix] = v
        return terms

    def forward(self, outputs: dict, targets: list[dict], groups: int = 1, num_boxes: float | None = None) -> dict:
        if num_boxes is None:
            num_boxes = float(sum(len(t["labels"]) for t in targets))
        num_boxes = max(num_boxes * groups, 1.0)
        dec = [(outputs, "")] + [(aux, f"_{i}") for i, aux in enumerate(outputs.get("aux_outputs", []))]
        others = []
        if "pre_outputs" in outputs:
            others.append((outputs["pre_outputs"], "_pre", ("boxes",)))
        enc = outputs.get("enc_outputs")
        if enc is not None and enc["pred_logits"] is not outputs["pred_logits"]:  # at depth 0 they are one
            others.append((enc, "_enc", self.losses))
        match = {sfx: self.matcher(o, targets, groups) for o, sfx, *_ in dec + others}
        union, n_union = None, num_boxes
        if self.go_lsd and "pred_corners" in outputs:
            union = unite_matches(list(match.values()))
            n_union = max(float(sum(len(q) for q, _ in union)), 1.0)
        terms = {}
        for o, sfx in dec:
            if o is not outputs and "pred_corners" in o:  # GO-LSD: the last layer teaches the earlier ones
                o = dict(o, teacher_corners=outputs["pred_corners"], teacher_logits=outputs["pred_logits"])
            terms.update(self._apply(o, targets, self.losses, match[sfx], union, num_boxes, n_union, sfx))
        for o, sfx, names in others:
            terms.update(self._apply(o, targets, names, match[sfx], None, num_boxes, n_union, sfx))
        return terms

    def total(self, terms: dict) -> torch.Tensor:
        return sum(self.weights["_".join(k.split("_")[:2])] * v for k, v in terms.items())
