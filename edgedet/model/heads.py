"""Two-stage query selection and the prediction heads shared by all decoder layers.

Boxes are normalised cxcywh throughout. Box deltas are re-parametrised against a reference box r:
cxcy = d_xy * r_wh + r_xy, wh = exp(d_wh) * r_wh.
"""
from __future__ import annotations

import torch
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
