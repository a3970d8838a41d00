"""Multi-scale projector: ViT taps -> `hidden_dim` maps at P3/P4/P5 through a C2f block with LayerNorm (RF-DETR).

LayerNorm over channels is written as permute + F.layer_norm + permute: TensorRT recognises that pattern and keeps it
accurate in FP16, and it does not depend on the batch size the way BatchNorm does.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..config import LEVEL_SCALE


class ChannelLayerNorm(nn.Module):
    """LayerNorm over C of a [B, C, H, W] map."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps, self.channels = eps, channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)
        x = F.layer_norm(x, (self.channels,), self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)


class ConvNormAct(nn.Module):
    def __init__(self, cin: int, cout: int, k: int = 1, stride: int = 1, act: str = "silu"):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, padding=k // 2, bias=False)
        self.bn = ChannelLayerNorm(cout)  # named bn as in the YOLO-family block it replaces
        self.act = F.silu if act == "silu" else F.relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x.contiguous())))  # same conv kernel choice as RF-DETR


class Bottleneck(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.cv1 = ConvNormAct(c, c, 3)
        self.cv2 = ConvNormAct(c, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cv2(self.cv1(x))


class C2f(nn.Module):
    """Split into two halves, chain `n` bottlenecks on the second, concatenate all, fuse with a 1x1 conv."""

    def __init__(self, cin: int, cout: int, n: int):
        super().__init__()
        self.c = cout // 2
        self.cv1 = ConvNormAct(cin, 2 * self.c)
        self.cv2 = ConvNormAct((2 + n) * self.c, cout)
        self.m = nn.ModuleList(Bottleneck(self.c) for _ in range(n))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = list(self.cv1(x).split((self.c, self.c), 1))
        for m in self.m:
            y.append(m(y[-1]))
        return self.cv2(torch.cat(y, 1))


def _sampler(scale: float, c: int) -> tuple[nn.Module, int]:
    if scale == 1.0:
        return nn.Identity(), c
    if scale == 2.0:
        return nn.ConvTranspose2d(c, c // 2, kernel_size=2, stride=2), c // 2
    if scale == 0.5:
        return ConvNormAct(c, c, 3, stride=2, act="relu"), c
    raise ValueError(f"unsupported projector scale {scale}")


class Projector(nn.Module):
    """Input: tap maps, each [B, in_dim, h, w]. Output: one [B, hidden_dim, h*s, w*s] map per level (s = 2, 1, 0.5
    for P3, P4, P5), in the order of `levels`."""

    def __init__(self, in_dim: int, n_taps: int, hidden_dim: int, levels: list[str], n_blocks: int):
        super().__init__()
        self.levels = list(levels)
        self.stages_sampling = nn.ModuleList()
        self.stages = nn.ModuleList()
        for lvl in self.levels:
            samplers, width = nn.ModuleList(), 0
            for _ in range(n_taps):
                s, c = _sampler(LEVEL_SCALE[lvl], in_dim)
                samplers.append(s)
                width += c
            self.stages_sampling.append(samplers)
            self.stages.append(nn.Sequential(C2f(width, hidden_dim, n_blocks), ChannelLayerNorm(hidden_dim)))

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        out = []
        for samplers, stage in zip(self.stages_sampling, self.stages):
            x = [s(f) for s, f in zip(samplers, feats)]
            out.append(stage(torch.cat(x, 1) if len(x) > 1 else x[0]))
        return out
