"""Hungarian matching between predictions and ground truth (scipy's linear_sum_assignment).

cost = w_class * focal_cost + w_bbox * L1(cxcywh) + w_giou * (-GIoU); with Group-DETR every group of queries is
matched to the targets on its own.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

from ..boxes import cxcywh_to_xyxy, generalized_box_iou


class HungarianMatcher:
    def __init__(self, cost_class: float = 2.0, cost_bbox: float = 5.0, cost_giou: float = 2.0,
                 alpha: float = 0.25, gamma: float = 2.0):
        self.cost_class, self.cost_bbox, self.cost_giou = cost_class, cost_bbox, cost_giou
        self.alpha, self.gamma = alpha, gamma

    def cost(self, logits: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor, tboxes: torch.Tensor):
        """logits [Q,C], boxes [Q,4] cxcywh; labels [T], tboxes [T,4] cxcywh -> cost [Q,T]."""
        p = logits.sigmoid()[:, labels]
        neg = (1 - self.alpha) * p ** self.gamma * -(1 - p + 1e-8).log()
        pos = self.alpha * (1 - p) ** self.gamma * -(p + 1e-8).log()
        giou = generalized_box_iou(cxcywh_to_xyxy(boxes), cxcywh_to_xyxy(tboxes))
        return self.cost_class * (pos - neg) + self.cost_bbox * torch.cdist(boxes, tboxes, p=1) - self.cost_giou * giou

    @torch.no_grad()
    def __call__(self, outputs: dict, targets: list[dict], groups: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """outputs: pred_logits [B,G*Q,C], pred_boxes [B,G*Q,4]; targets: list of {labels [T], boxes [T,4]}.
        Returns per image (query indices, target indices), int64, queries across all groups."""
        logits, boxes = outputs["pred_logits"].float(), outputs["pred_boxes"].float()
        q = logits.shape[1] // groups
        out = []
        for b, t in enumerate(targets):
            if len(t["labels"]) == 0:
                out.append((torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64)))
                continue
            c = self.cost(logits[b], boxes[b], t["labels"], t["boxes"]).cpu().numpy()
            c = np.nan_to_num(c, nan=1e6, posinf=1e6, neginf=-1e6)
            qi, ti = [], []
            for g in range(groups):
                r, k = linear_sum_assignment(c[g * q:(g + 1) * q])
                qi.append(r + g * q)
                ti.append(k)
            out.append((torch.as_tensor(np.concatenate(qi), dtype=torch.int64),
                        torch.as_tensor(np.concatenate(ti), dtype=torch.int64)))
        return out
