"""Two-stage query selection, the prediction heads shared by all decoder layers, and the optional D-FINE FDR head.

Boxes are normalised cxcywh throughout. Box deltas are re-parametrised against a reference box r:
cxcy = d_xy * r_wh + r_xy, wh = exp(d_wh) * r_wh.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .decoder import MLP


def apply_delta(delta: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    return torch.cat([delta[..., :2] * ref[..., 2:] + ref[..., :2], delta[..., 2:].exp() * ref[..., 2:]], -1)


def make_proposals(shapes: list[tuple[int, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """One proposal per memory position: centre ((i+0.5)/W, (j+0.5)/H), size 0.05 * 2^level.

    Returns proposals [1, S, 4] and a validity mask [1, S, 1] (1.0 where every coordinate is in (0.01, 0.99));
    invalid positions get a zero box, and zero memory where the encoder heads score them (the decoder still
    attends to all of memory), as in RF-DETR.
    """
    props = []
    for lvl, (h, w) in enumerate(shapes):
        ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float32), torch.arange(w, dtype=torch.float32),
                                indexing="ij")
        xy = torch.stack([(xs + 0.5) / w, (ys + 0.5) / h], -1).reshape(-1, 2)
        props.append(torch.cat([xy, torch.full_like(xy, 0.05 * 2.0 ** lvl)], -1))
    p = torch.cat(props, 0)[None]
    valid = ((p > 0.01) & (p < 0.99)).all(-1, keepdim=True).float()
    return p * valid, valid


class QuerySelection(nn.Module):
    """Encoder head of one query group: scores every memory position and keeps the top-k as queries.

    memory [B, S, C] (zeroed where the proposal is invalid) -> (logits [B, k, classes], boxes [B, k, 4] (with grad),
    reference [B, k, 4] (detached)). Query content is learned (query_feat), not the selected memory.
    """

    def __init__(self, dim: int, num_classes: int):
        super().__init__()
        self.enc_output = nn.Linear(dim, dim)
        self.enc_output_norm = nn.LayerNorm(dim)
        self.class_embed = nn.Linear(dim, num_classes)
        self.bbox_embed = MLP(dim, dim, 4, 3)

    def forward(self, memory: torch.Tensor, proposals: torch.Tensor, k: int):
        mem = self.enc_output_norm(self.enc_output(memory))
        logits = self.class_embed(mem)
        boxes = apply_delta(self.bbox_embed(mem), proposals)
        idx = torch.topk(logits.max(-1).values, k, dim=1).indices  # [B, k]
        pick = lambda t: torch.gather(t, 1, idx.unsqueeze(-1).expand(-1, -1, t.shape[-1]))  # noqa: E731
        sel_boxes = pick(boxes)
        return pick(logits), sel_boxes, sel_boxes.detach()


# ---------------------------------------------------------------------------------------------------------------
# D-FINE fine-grained distribution refinement (FDR)

def fdr_weights(bins: int, up: float = 0.5, reg_scale: float = 4.0) -> torch.Tensor:
    """W(n), n = 0..bins: the N+1 edge offsets a distribution is spread over, dense near 0.

    s = (up * reg_scale + 1)^(2 / (N - 2)); W = [-2 up c, -(s^k - 1) for k = N/2-1..1, 0, s^k - 1 for k = 1..N/2-1,
    +2 up c] (c = reg_scale). In units of anchor size / c, so the ends are +-2 up anchor sizes (+-1 with up = 0.5).
    """
    if bins < 4 or bins % 2:
        raise ValueError(f"bins must be even and >= 4, got {bins}")
    s = (up * reg_scale + 1) ** (2 / (bins - 2))
    right = [s ** k - 1 for k in range(1, bins // 2)]
    ends = 2 * up * reg_scale
    return torch.tensor([-ends] + [-v for v in reversed(right)] + [0.0] + right + [ends], dtype=torch.float32)


def distance_to_box(anchor: torch.Tensor, dist: torch.Tensor, reg_scale: float) -> torch.Tensor:
    """Anchor boxes [..., 4] cxcywh + edge offsets [..., 4] (left, top, right, bottom) -> boxes [..., 4] cxcywh.

    x1 = cx - (c/2 + d_left) w / c, x2 = cx + (c/2 + d_right) w / c (y likewise): offset 0 keeps the anchor's edge.
    """
    c = reg_scale
    cx, cy, w, h = anchor.unbind(-1)
    dl, dt, dr, db = dist.unbind(-1)
    x1, x2 = cx - (0.5 * c + dl) * w / c, cx + (0.5 * c + dr) * w / c
    y1, y2 = cy - (0.5 * c + dt) * h / c, cy + (0.5 * c + db) * h / c
    return torch.stack([(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1], -1)


def box_to_distance(anchor: torch.Tensor, boxes_xyxy: torch.Tensor, reg_scale: float) -> torch.Tensor:
    """Inverse of distance_to_box: the offsets d* (left, top, right, bottom) [..., 4] that turn the cxcywh anchor
    into the xyxy boxes, e.g. d*_left = (cx - x1) / (w / c) - c / 2."""
    c = reg_scale
    cx, cy, w, h = anchor.unbind(-1)
    x1, y1, x2, y2 = boxes_xyxy.unbind(-1)
    sw, sh = (w / c).clamp(min=1e-9), (h / c).clamp(min=1e-9)
    return torch.stack([(cx - x1) / sw, (cy - y1) / sh, (x2 - cx) / sw, (y2 - cy) / sh], -1) - 0.5 * c


class FDRHead(nn.Module):
    """Per-layer distribution heads over the decoder outputs (D-FINE FDR).

    Layer l (1-based) predicts logits over the N+1 offsets W(n) for each of the 4 edges:
    L_l = MLP_l(h_l + h_{l-1}.detach()) + L_{l-1} (h_0 = 0, L_0 = 0); offset = sum_n softmax(L_l)_n W(n); box =
    distance_to_box(anchor, offset) with the anchor the detached box the first decoder layer predicts with the ordinary
    box head. Every layer is supervised, so any prefix of the layers is a working head (decoder-depth truncation).
    """

    def __init__(self, dim: int, layers: int, bins: int = 32, reg_scale: float = 4.0, up: float = 0.5):
        super().__init__()
        self.bins, self.reg_scale = bins, reg_scale
        self.layers = nn.ModuleList(MLP(dim, dim, 4 * (bins + 1), 3) for _ in range(layers))
        for mlp in self.layers:  # start as the anchor: uniform distribution, mean offset 0
            nn.init.zeros_(mlp.layers[-1].weight)
            nn.init.zeros_(mlp.layers[-1].bias)
        self.register_buffer("project", fdr_weights(bins, up, reg_scale), persistent=False)

    def corners(self, hs: list[torch.Tensor]) -> list[torch.Tensor]:
        """Decoder outputs [B,Q,C] of layers 1..d -> edge logits [B,Q,4,N+1] of each (residual over layers)."""
        out: list[torch.Tensor] = []
        prev = None
        for mlp, h in zip(self.layers, hs):
            x = h if prev is None else h + prev.detach()
            logits = mlp(x).unflatten(-1, (4, self.bins + 1))
            out.append(logits if not out else logits + out[-1])
            prev = h
        return out

    def boxes(self, corners: torch.Tensor, anchor: torch.Tensor) -> torch.Tensor:
        """Edge logits [B,Q,4,N+1] + anchor [B,Q,4] cxcywh -> boxes [B,Q,4] cxcywh."""
        offsets = F.linear(corners.softmax(-1), self.project[None]).squeeze(-1)
        return distance_to_box(anchor, offsets, self.reg_scale)
