"""DETR decoder: self-attention, multi-scale deformable cross-attention on F.grid_sample, FFN (post-norm).

Reference boxes are fixed for all layers (RF-DETR's "lite" refinement): every layer's output is decoded against the
same two-stage reference, which is what lets any prefix of the layers be used at inference.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class MLP(nn.Module):
    def __init__(self, cin: int, hidden: int, cout: int, layers: int):
        super().__init__()
        dims = [cin] + [hidden] * (layers - 1) + [cout]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x) if i == len(self.layers) - 1 else F.relu(layer(x))
        return x


def sine_embed(boxes: torch.Tensor, dim: int = 128, temperature: float = 10000.0) -> torch.Tensor:
    """[B, Q, 4] cxcywh in [0,1] -> [B, Q, 4*dim], blocks ordered (y, x, w, h), interleaved sin/cos."""
    t = torch.arange(dim, dtype=torch.float32, device=boxes.device)
    t = temperature ** (2 * torch.div(t, 2, rounding_mode="floor") / dim)
    parts = []
    for i in (1, 0, 2, 3):
        p = boxes[..., i, None] * (2 * math.pi) / t
        parts.append(torch.stack((p[..., 0::2].sin(), p[..., 1::2].cos()), dim=-1).flatten(-2))
    return torch.cat(parts, dim=-1)


class MultiheadAttention(nn.Module):
    """Plain multi-head attention with nn.MultiheadAttention's parameter names (in_proj_weight, out_proj)."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None):
        b, n, c = q.shape
        wq, wk, wv = self.in_proj_weight.chunk(3)
        bq, bk, bv = self.in_proj_bias.chunk(3)

        def split(x, w, bias):
            return F.linear(x, w, bias).reshape(b, -1, self.heads, c // self.heads).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(q, wq, bq), split(k, wk, bk), split(v, wv, bv), attn_mask=mask)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, c))


class MSDeformAttn(nn.Module):
    """Multi-scale deformable attention (Deformable DETR) on grid_sample.

    query [B, Q, C]; ref [B, Q, 4] cxcywh in [0,1]; value maps: list of [B, C, H_l, W_l].
    Sampling location = ref_xy + offset / n_points * ref_wh * 0.5; softmax over levels x points per head.
    """

    def __init__(self, dim: int, heads: int, levels: int, points: int):
        super().__init__()
        self.dim, self.heads, self.levels, self.points = dim, heads, levels, points
        self.sampling_offsets = nn.Linear(dim, heads * levels * points * 2)
        self.attention_weights = nn.Linear(dim, heads * levels * points)
        self.value_proj = nn.Linear(dim, dim)
        self.output_proj = nn.Linear(dim, dim)
        self._reset()

    def _reset(self) -> None:
        nn.init.zeros_(self.sampling_offsets.weight)
        theta = torch.arange(self.heads, dtype=torch.float32) * (2 * math.pi / self.heads)
        grid = torch.stack([theta.cos(), theta.sin()], -1)
        grid = (grid / grid.abs().max(-1, keepdim=True)[0]).view(self.heads, 1, 1, 2).repeat(1, self.levels,
                                                                                            self.points, 1)
        for i in range(self.points):
            grid[:, :, i, :] *= i + 1
        with torch.no_grad():
            self.sampling_offsets.bias.copy_(grid.flatten())
        nn.init.zeros_(self.attention_weights.weight)
        nn.init.zeros_(self.attention_weights.bias)
        nn.init.xavier_uniform_(self.value_proj.weight)
        nn.init.zeros_(self.value_proj.bias)
        nn.init.xavier_uniform_(self.output_proj.weight)
        nn.init.zeros_(self.output_proj.bias)

    def forward(self, query: torch.Tensor, ref: torch.Tensor, memory: torch.Tensor,
                shapes: list[tuple[int, int]]) -> torch.Tensor:
        b, q, _ = query.shape
        h, lv, pt, hd = self.heads, self.levels, self.points, self.dim // self.heads
        value = self.value_proj(memory)  # [B, sum HW, C]
        off = self.sampling_offsets(query).view(b, q, h, lv, pt, 2)
        attn = self.attention_weights(query).view(b, q, h, lv * pt).softmax(-1).view(b, q, h, lv, pt)
        loc = ref[:, :, None, None, None, :2] + off / pt * ref[:, :, None, None, None, 2:] * 0.5
        grids = 2 * loc - 1
        out, start = 0, 0
        for li, (hh, ww) in enumerate(shapes):
            v = value[:, start:start + hh * ww].transpose(1, 2).reshape(b * h, hd, hh, ww)
            start += hh * ww
            g = grids[:, :, :, li].transpose(1, 2).reshape(b * h, q, pt, 2)
            s = F.grid_sample(v, g, mode="bilinear", padding_mode="zeros", align_corners=False)  # [B*h, hd, Q, P]
            a = attn[:, :, :, li].transpose(1, 2).reshape(b * h, 1, q, pt)
            out = out + (s * a).sum(-1)
        out = out.view(b, h * hd, q).transpose(1, 2)
        return self.output_proj(out)


class DecoderLayer(nn.Module):
    def __init__(self, dim: int, sa_heads: int, ca_heads: int, levels: int, points: int, ffn: int):
        super().__init__()
        self.self_attn = MultiheadAttention(dim, sa_heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = MSDeformAttn(dim, ca_heads, levels, points)
        self.norm2 = nn.LayerNorm(dim)
        self.linear1 = nn.Linear(dim, ffn)
        self.linear2 = nn.Linear(ffn, dim)
        self.norm3 = nn.LayerNorm(dim)

    def forward(self, tgt, query_pos, ref, memory, shapes, self_mask=None):
        """tgt, query_pos: [B, Q, C]; ref: [B, Q, 4]; memory: [B, sum HW, C]. Returns [B, Q, C]."""
        q = tgt + query_pos
        tgt = self.norm1(tgt + self.self_attn(q, q, tgt, self_mask))
        tgt = self.norm2(tgt + self.cross_attn(tgt + query_pos, ref, memory, shapes))
        ffn = self.linear2(F.relu(self.linear1(tgt))).clamp(-65504.0, 65504.0)  # FP16 guard before the norm
        return self.norm3(tgt + ffn)


class Decoder(nn.Module):
    """Runs the first `depth` layers and returns each layer's normalised output: list of [B, Q, C]."""

    def __init__(self, dim: int, layers: int, sa_heads: int, ca_heads: int, levels: int, points: int, ffn: int):
        super().__init__()
        self.dim = dim
        self.layers = nn.ModuleList(DecoderLayer(dim, sa_heads, ca_heads, levels, points, ffn) for _ in range(layers))
        self.norm = nn.LayerNorm(dim)
        self.ref_point_head = MLP(2 * dim, dim, dim, 2)

    def forward(self, tgt, ref, memory, shapes, depth: int, self_mask=None) -> list[torch.Tensor]:
        query_pos = self.ref_point_head(sine_embed(ref, self.dim // 2))
        outs = []
        for layer in self.layers[:depth]:
            tgt = layer(tgt, query_pos, ref, memory, shapes, self_mask)
            outs.append(self.norm(tgt))
        return outs
