"""DINOv2-layout ViT with switchable patch size (FlexiViT PI-resize) and switchable attention windows.

Parameter names follow the DINOv2 torch-hub layout (patch_embed.proj, cls_token, pos_embed, blocks.i.{norm1, attn.qkv,
attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}, norm), so official weights load by name.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .pretrained import pi_resize_patch_kernel


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float = 0.1):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale. With `windows_sq` > 1 and `full=True` the B*nw^2 windows of one
    image are joined into one sequence for the attention only (RF-DETR global blocks)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor, windows_sq: int = 1, full: bool = False) -> torch.Tensor:
        h = self.norm1(x)
        if full and windows_sq > 1:
            bw, n, c = h.shape
            h = self.attn(h.reshape(bw // windows_sq, windows_sq * n, c)).reshape(bw, n, c)
        else:
            h = self.attn(h)
        x = x + self.ls1(h)
        return x + self.ls2(self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)


def window_partition(t: torch.Tensor, nw: int) -> torch.Tensor:
    """[B, gh, gw, C] -> [B*nw*nw, (gh/nw)*(gw/nw), C]; windows in row-major order per image."""
    b, gh, gw, c = t.shape
    t = t.reshape(b, nw, gh // nw, nw, gw // nw, c).permute(0, 1, 3, 2, 4, 5)
    return t.reshape(b * nw * nw, (gh // nw) * (gw // nw), c)


def window_merge(t: torch.Tensor, nw: int, gh: int, gw: int) -> torch.Tensor:
    """Inverse of window_partition: [B*nw*nw, (gh/nw)*(gw/nw), C] -> [B, C, gh, gw]."""
    c = t.shape[-1]
    t = t.reshape(-1, nw, nw, gh // nw, gw // nw, c).permute(0, 1, 3, 2, 4, 5)
    return t.reshape(-1, gh, gw, c).permute(0, 3, 1, 2)


class ViT(nn.Module):
    """Input: ImageNet-normalised images [B,3,H,W] with H, W divisible by patch*windows.
    Output: one map per tap, [B, embed_dim, H/patch, W/patch], after the final LayerNorm."""

    def __init__(self, embed_dim: int, depth: int, num_heads: int, mlp_ratio: float, patch_size: int,
                 pos_grid: int, global_blocks: list[int], taps: list[int], pos_antialias: bool = True):
        super().__init__()
        self.embed_dim, self.depth, self.patch_size, self.grid = embed_dim, depth, patch_size, pos_grid
        self.global_blocks, self.taps, self.pos_antialias = set(global_blocks), list(taps), pos_antialias
        self.patch_embed = PatchEmbed(embed_dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pos_grid * pos_grid, embed_dim))
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)

    def patch_kernel(self, patch: int) -> torch.Tensor:
        w = self.patch_embed.proj.weight
        return w if patch == self.patch_size else pi_resize_patch_kernel(w, patch)

    def position_embedding(self, gh: int, gw: int) -> torch.Tensor:
        """[1, 1+gh*gw, D]: the learned grid resized (bicubic) to gh x gw; the CLS position is kept as is."""
        pos = self.pos_embed
        if gh == self.grid and gw == self.grid:
            return pos
        grid = pos[:, 1:].reshape(1, self.grid, self.grid, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False, antialias=self.pos_antialias)
        return torch.cat([pos[:, :1], grid.flatten(2).transpose(1, 2)], dim=1)

    def embed(self, x: torch.Tensor, patch: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """Patch tokens [B, gh, gw, D] and the CLS token [1, 1, D], both with positions added."""
        t = F.conv2d(x, self.patch_kernel(patch), self.patch_embed.proj.bias, stride=patch)
        gh, gw = t.shape[-2:]
        pos = self.position_embedding(gh, gw)
        t = t.flatten(2).transpose(1, 2) + pos[:, 1:]
        return t.reshape(-1, gh, gw, self.embed_dim), self.cls_token + pos[:, :1], gh, gw

    def encode(self, tokens: torch.Tensor, cls: torch.Tensor, gh: int, gw: int, windows: int) -> list[torch.Tensor]:
        b = tokens.shape[0]
        x = window_partition(tokens, windows) if windows > 1 else tokens.reshape(b, gh * gw, -1)
        x = torch.cat([cls.expand(x.shape[0], -1, -1), x], dim=1)
        feats, nw2 = [], windows * windows
        for i, blk in enumerate(self.blocks):
            x = blk(x, nw2, full=i in self.global_blocks)
            if i + 1 in self.taps:
                f = self.norm(x)[:, 1:]
                feats.append(window_merge(f, windows, gh, gw) if windows > 1
                             else f.transpose(1, 2).reshape(b, -1, gh, gw))
            if i + 1 == self.taps[-1]:
                break
        return feats

    def forward(self, x: torch.Tensor, patch: int, windows: int) -> list[torch.Tensor]:
        tokens, cls, gh, gw = self.embed(x, patch)
        return self.encode(tokens, cls, gh, gw, windows)
