"""Candidates of a search: every valid subnet of the space at every precision the target lists; the features the
latency predictor reads."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import SearchSpace, SubnetConfig, SupernetConfig, TargetSpec, level_grid
from ..model.cost import subnet_cost


@dataclass(frozen=True)
class Candidate:
    subnet: SubnetConfig
    precision: str

    @property
    def id(self) -> str:
        """`p16-r384-w2-d3-q100@int8`"""
        return f"{self.subnet.id}@{self.precision}"

    @classmethod
    def parse(cls, text: str, cfg: SupernetConfig | None = None) -> "Candidate":
        sid, _, prec = text.partition("@")
        return cls(SubnetConfig.parse(sid, cfg), prec or "fp32")


def candidates(space: SearchSpace, cfg: SupernetConfig, target: TargetSpec) -> list[Candidate]:
    """Subnets x target precisions, dropping resolutions above the target's max_resolution."""
    subs = [s for s in space.subnets(cfg) if not target.max_resolution or s.resolution <= target.max_resolution]
    return [Candidate(s, p) for s in subs for p in target.precisions]


FEATURES = ("const", "backbone_gflops", "backbone_attn_gflops", "tokens_k", "memory_k", "dec_layers",
            "dec_query_layers_100", "decoder_gflops")
# what the predictor assumes of each term: the constant, compute (GFLOPs, sped up by a precision's kernels), overhead
FEATURE_KINDS = ("const", "compute", "compute", "overhead", "overhead", "overhead", "overhead", "compute")


def features(cfg: SupernetConfig, s: SubnetConfig) -> np.ndarray:
    """Non-negative cost terms whose weighted sum models latency (one weight vector per precision):
    backbone/projector FLOPs without attention, backbone attention FLOPs, ViT tokens, memory positions (the
    encoder heads score each), decoder layers, layers x queries, decoder FLOPs."""
    c = subnet_cost(cfg, s)
    c0 = subnet_cost(cfg, s.model_copy(update={"dec_layers": 0}))
    g = s.resolution // s.patch
    mem = sum(level_grid(g, lv) ** 2 for lv in cfg.levels)
    return np.array([1.0, (c0.flops - c0.attn_flops) / 1e9, c0.attn_flops / 1e9, g * g / 1e3, mem / 1e3,
                     s.dec_layers, s.dec_layers * s.queries / 100, (c.flops - c0.flops) / 1e9])


def d_optimal(rows: np.ndarray, n: int, first: list[int] = (), ridge: float = 1e-3) -> list[int]:
    """Greedy D-optimal design: indices of `n` rows that (with `first`, always kept) make the linear latency model
    best determined. Rows are scaled to relative terms first (each divided by its sum after every column is scaled
    to [0, 1]), as the predictor fits relative error; each step adds the row of largest x^T M^-1 x (Fedorov), so a
    budget of ~2x the model's terms pins every weight instead of spreading all points along FLOPs, where the
    cost terms all grow together."""
    x = np.asarray(rows, dtype=float)
    x = x / np.maximum(x.max(0), 1e-12)
    x = x / np.maximum(x.sum(1, keepdims=True), 1e-12)
    m = ridge * np.eye(x.shape[1])
    chosen = list(dict.fromkeys(first))
    for i in chosen:
        m += np.outer(x[i], x[i])
    while len(chosen) < min(n, len(x)):
        inv = np.linalg.inv(m)
        gain = np.einsum("ij,jk,ik->i", x, inv, x)
        gain[chosen] = -np.inf
        i = int(np.argmax(gain))
        chosen.append(i)
        m += np.outer(x[i], x[i])
    return chosen
