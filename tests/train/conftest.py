"""Fixtures for the training tests: a small random DINOv3-layout teacher file (no weights can be downloaded)."""
from __future__ import annotations

import pytest
import torch


def dinov3_state_dict(dim: int = 64, depth: int = 2, registers: int = 4, patch: int = 16, seed: int = 0) -> dict:
    """Random tensors under the torch-hub DINOv3 names (plain MLP, masked key bias)."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.05):
        return torch.randn(*shape, generator=g) * scale

    sd = {"cls_token": r(1, 1, dim, scale=1.0), "storage_tokens": r(1, registers, dim, scale=1.0),
          "mask_token": torch.zeros(1, dim), "patch_embed.proj.weight": r(dim, 3, patch, patch),
          "patch_embed.proj.bias": r(dim), "norm.weight": 1 + r(dim), "norm.bias": r(dim)}
    for i in range(depth):
        b = f"blocks.{i}."
        sd.update({b + "norm1.weight": 1 + r(dim), b + "norm1.bias": r(dim), b + "attn.qkv.weight": r(3 * dim, dim),
                   b + "attn.qkv.bias": r(3 * dim), b + "attn.qkv.bias_mask": torch.ones(3 * dim),
                   b + "attn.proj.weight": r(dim, dim), b + "attn.proj.bias": r(dim), b + "ls1.gamma": 0.5 + r(dim),
                   b + "norm2.weight": 1 + r(dim), b + "norm2.bias": r(dim), b + "mlp.fc1.weight": r(2 * dim, dim),
                   b + "mlp.fc1.bias": r(2 * dim), b + "mlp.fc2.weight": r(dim, 2 * dim), b + "mlp.fc2.bias": r(dim),
                   b + "ls2.gamma": 0.5 + r(dim)})
        sd[b + "attn.qkv.bias_mask"][dim:2 * dim] = 0
    return sd


@pytest.fixture(scope="session")
def dinov3_file(tmp_path_factory):
    from safetensors.torch import save_file

    path = tmp_path_factory.mktemp("teacher") / "dinov3_tiny.safetensors"
    save_file(dinov3_state_dict(), str(path))
    return path
