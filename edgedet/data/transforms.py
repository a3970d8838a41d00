"""RF-DETR augmentation only: horizontal flip and random crop; then one resize for the whole batch (no padding).

Operate on (image float32 [3,H,W], target with boxes normalised cxcywh [N,4]). Each keeps target['view'] =
(ax, bx, ay, by), the part of the original image the output shows: output coordinate u in [0,1] is original
x = ax*u + bx (y likewise); feature distillation uses it to crop and flip cached teacher features.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..boxes import cxcywh_to_xyxy, xyxy_to_cxcywh


IDENTITY_VIEW = (1.0, 0.0, 1.0, 0.0)


def hflip(img: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
    b = target["boxes"].clone()
    b[:, 0] = 1 - b[:, 0]
    ax, bx, ay, by = target.get("view", IDENTITY_VIEW)
    return img.flip(-1), dict(target, boxes=b, view=(-ax, ax + bx, ay, by))


def crop(img: torch.Tensor, target: dict, top: int, left: int, h: int, w: int) -> tuple[torch.Tensor, dict]:
    """Crop to [top:top+h, left:left+w]; boxes are clipped to the crop, those under 1 px wide or high dropped."""
    H, W = img.shape[-2:]
    xyxy = cxcywh_to_xyxy(target["boxes"]) * torch.tensor([W, H, W, H])
    xyxy = xyxy - torch.tensor([left, top, left, top])
    xyxy = torch.min(xyxy.clamp(min=0), torch.tensor([w, h, w, h], dtype=xyxy.dtype))
    keep = ((xyxy[:, 2] - xyxy[:, 0]) >= 1) & ((xyxy[:, 3] - xyxy[:, 1]) >= 1)
    boxes = xyxy_to_cxcywh(xyxy[keep] / torch.tensor([w, h, w, h]))
    ax, bx, ay, by = target.get("view", IDENTITY_VIEW)
    view = (ax * w / W, ax * left / W + bx, ay * h / H, ay * top / H + by)
    return img[:, top:top + h, left:left + w], dict(target, boxes=boxes, labels=target["labels"][keep], view=view)


class RandomCropFlip:
    """p_flip: horizontal flip; p_crop: crop a random region with each side in [min_frac, 1] of the image."""

    def __init__(self, p_flip: float = 0.5, p_crop: float = 0.5, min_frac: float = 0.5,
                 generator: torch.Generator | None = None):
        self.p_flip, self.p_crop, self.min_frac, self.g = p_flip, p_crop, min_frac, generator

    def _u(self) -> float:
        return torch.rand((), generator=self.g).item()

    def __call__(self, img: torch.Tensor, target: dict) -> tuple[torch.Tensor, dict]:
        if self._u() < self.p_flip:
            img, target = hflip(img, target)
        if self._u() < self.p_crop:
            H, W = img.shape[-2:]
            h = int(H * (self.min_frac + (1 - self.min_frac) * self._u()))
            w = int(W * (self.min_frac + (1 - self.min_frac) * self._u()))
            top, left = int((H - h) * self._u()), int((W - w) * self._u())
            img, target = crop(img, target, top, left, h, w)
        return img, target


def batch_resize(images: list[torch.Tensor], size: int) -> torch.Tensor:
    """Stretch every image to size x size (bilinear, no antialias) -> [B,3,size,size]. Normalised boxes are
    unchanged by a stretch, and this is exactly the runtime's preprocessing."""
    return torch.cat([F.interpolate(im[None], size=(size, size), mode="bilinear", align_corners=False)
                      for im in images])
