"""A pure-Python stand-in for the few torchvision names the `rfdetr` package imports, enough to build RF-DETR models
and run their forward pass offline with the CPU torch (PyPI's torchvision is a CUDA build that does not import with
it). Not a torchvision: anything else raises NotImplementedError when called. Used only by the parity checks
(benchmarks/rfdetr_parity.py, tests/importers/test_rfdetr_parity.py):

    pip install --no-deps --target /tmp/rfenv rfdetr==1.11.2 supervision pyDeprecate opencv-python-headless
    PYTHONPATH=benchmarks/rfdetr_env:/tmp/rfenv:. python -m pytest tests/importers/test_rfdetr_parity.py
"""
from __future__ import annotations

import enum
import sys
import types

import torch

__version__ = "0.0.0+edgedet-standin"


class _Placeholder:
    """Any torchvision class rfdetr names at import time but the forward pass never uses."""

    def __init__(self, *a, **k):
        self.args, self.kwargs = a, k

    def __call__(self, *a, **k):
        raise NotImplementedError("torchvision stand-in: only model building and forward are supported")

    def __class_getitem__(cls, item):
        return cls


def _module(name: str, **attrs) -> types.ModuleType:
    m = types.ModuleType(name)
    m.__dict__.update(attrs)

    def missing(attr: str):
        if attr.startswith("__"):
            raise AttributeError(attr)
        return _Placeholder

    m.__getattr__ = missing
    sys.modules[name] = m
    return m


def _is_tracing() -> bool:
    return torch._C._get_tracing_state() is not None


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def box_iou(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    lt = torch.max(a[:, None, :2], b[:, :2])
    rb = torch.min(a[:, None, 2:], b[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[..., 0] * wh[..., 1]
    return inter / (box_area(a)[:, None] + box_area(b) - inter)


def _normalize(t: torch.Tensor, mean, std, inplace: bool = False) -> torch.Tensor:
    mean = torch.as_tensor(mean, dtype=t.dtype).view(-1, 1, 1)
    std = torch.as_tensor(std, dtype=t.dtype).view(-1, 1, 1)
    return (t - mean) / std


_functional = _module("torchvision.transforms.functional", normalize=_normalize, InterpolationMode=InterpolationMode)
_v2 = _module("torchvision.transforms.v2", functional=_module("torchvision.transforms.v2.functional"))
transforms = _module("torchvision.transforms", functional=_functional, v2=_v2, InterpolationMode=InterpolationMode)
ops = _module("torchvision.ops", box_area=box_area, box_iou=box_iou,
              boxes=_module("torchvision.ops.boxes", box_area=box_area, box_iou=box_iou))
datasets = _module("torchvision.datasets", VisionDataset=type("VisionDataset", (), {}))
tv_tensors = _module("torchvision.tv_tensors")
io = _module("torchvision.io")
