"""Shared fixtures: tiny supernets with every weight non-trivial (no zero-initialised heads hiding mistakes)."""
from __future__ import annotations

import pytest
import torch

from edgedet.config import preset
from edgedet.model.supernet import Supernet


def randomize(net: torch.nn.Module, seed: int = 0, scale: float = 0.05) -> torch.nn.Module:
    """Add seeded noise to every parameter, so zero-initialised box heads and offsets are exercised."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return net


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory):
    """A small synthetic COCO dataset (12 train, 6 valid images at 128 px), made once per session."""
    from edgedet.data.synthetic import generate

    root = tmp_path_factory.mktemp("synth")
    generate(root, 12, 6, seed=0, image_size=128)
    return root


@pytest.fixture(scope="session")
def tiny_cfg():
    return preset("tiny")


@pytest.fixture(scope="session")
def tiny_net(tiny_cfg):
    torch.manual_seed(0)
    return randomize(Supernet(tiny_cfg)).eval()
