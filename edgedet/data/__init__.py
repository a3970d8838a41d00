"""Datasets for edgedet: a deterministic synthetic shapes generator, a COCO-format loader and
RF-DETR-style augmentation.

Tensor contract shared by the loader and the transforms: an image is float32 ``[3, H, W]`` RGB in
``[0, 1]``; a target is ``dict(boxes=float32 [N, 4] normalised cxcywh, labels=int64 [N],
image_id=int, orig_size=(H, W))``.
"""
