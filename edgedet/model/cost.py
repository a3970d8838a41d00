"""Analytic FLOPs and parameter counts of a subnet (batch 1), instant for any subnet of any supernet.

FLOPs count 2 x multiply-accumulates of convolutions, linear layers and attention matmuls (what trained eyes read
as "GFLOPs" in detector tables); norms, activations, softmax and grid_sample are left out.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import SubnetConfig, SupernetConfig, level_grid


@dataclass(frozen=True)
class Cost:
    flops: int
    params: int
    attn_flops: int  # the part of `flops` spent in attention matmuls (QK^T and AV)

    @property
    def gflops(self) -> float:
        return self.flops / 1e9


def _lin(n: int, cin: int, cout: int) -> tuple[int, int]:
    """(flops, params) of a Linear applied to n vectors."""
    return 2 * n * cin * cout, cin * cout + cout


def subnet_cost(cfg: SupernetConfig, s: SubnetConfig) -> Cost:
    d, g, p, nw = cfg.embed_dim, s.resolution // s.patch, s.patch, s.windows
    n = g * g
    flops = params = attn = 0

    def add(fp):
        nonlocal flops, params
        flops += fp[0]
        params += fp[1]

    # backbone
    add((2 * n * d * 3 * p * p, d * 3 * p * p + d))
    params += (n + 1) * d  # position embedding resized to the grid, CLS (with its position) included
    tokens = n + nw * nw  # one CLS per window
    hid = int(d * cfg.mlp_ratio)
    per_win = n // (nw * nw) + 1
    for i in range(cfg.taps[-1]):
        for cin, cout in ((d, 3 * d), (d, d), (d, hid), (hid, d)):
            add(_lin(tokens, cin, cout))
        params += 6 * d  # two norms + two layer scales
        seq = tokens if (i in cfg.global_blocks and nw > 1) else per_win
        attn += 4 * seq * seq * d * (tokens // seq)
    params += 2 * d  # final norm
    # projector
    c = cfg.hidden_dim
    mem = 0
    for lv in cfg.levels:
        h = level_grid(g, lv)
        mem += h * h
        width = 0
        for _ in cfg.taps:
            if lv == "P3":
                add((2 * g * g * d * (d // 2) * 4, d * (d // 2) * 4 + d // 2))
                width += d // 2
            elif lv == "P5":
                add((2 * h * h * d * d * 9, d * d * 9 + 2 * d))
                width += d
            else:
                width += d
        half = c // 2
        add((2 * h * h * width * 2 * half, width * 2 * half + 4 * half))
        for _ in range(cfg.projector_blocks):
            add((2 * 2 * h * h * half * half * 9, 2 * (half * half * 9 + 2 * half)))
        add((2 * h * h * (2 + cfg.projector_blocks) * half * c, (2 + cfg.projector_blocks) * half * c + 2 * c))
        params += 2 * c
    # two-stage query selection (scored on every memory position)
    k, q = cfg.num_classes, s.queries
    add(_lin(mem, c, c))
    params += 2 * c
    add(_lin(mem, c, k))
    for cin, cout in ((c, c), (c, c), (c, 4)):
        add(_lin(mem, cin, cout))
    if s.dec_layers:
        params += q * (c + 4)
        for cin, cout in ((2 * c, c), (c, c)):
            add(_lin(q, cin, cout))
        pts = cfg.ca_heads * len(cfg.levels) * cfg.n_points
        for _ in range(s.dec_layers):
            add(_lin(q, c, 3 * c))
            add(_lin(q, c, c))
            attn += 4 * q * q * c
            add(_lin(mem, c, c))
            add(_lin(q, c, 2 * pts))
            add(_lin(q, c, pts))
            add(_lin(q, c, c))
            add(_lin(q, c, cfg.ffn_dim))
            add(_lin(q, cfg.ffn_dim, c))
            params += 6 * c
        params += 2 * c
        add(_lin(q, c, k))
        for cin, cout in ((c, c), (c, c), (c, 4)):  # with fdr: the first layer's box, the anchor
            add(_lin(q, cin, cout))
        if cfg.fdr:  # one distribution head per layer (residual logits), the expectation over W(n) at the last
            nb = cfg.fdr_bins + 1
            for _ in range(s.dec_layers):
                for cin, cout in ((c, c), (c, c), (c, 4 * nb)):
                    add(_lin(q, cin, cout))
            flops += 2 * q * 4 * nb
    return Cost(flops=flops + attn, params=params, attn_flops=attn)
