"""Detection post-processing in pure numpy: the reference the runtime stubs reproduce.

Raw model outputs (the ONNX contract): boxes [B,Q,4] normalised cxcywh in the network's square input, logits
[B,Q,C] (before sigmoid). RF-DETR style: score = sigmoid(logit), the top-k is taken over all Q x C (query, class)
pairs of an image (a query may appear once per class; no per-query argmax, no NMS), and boxes are mapped to
pixels of the ORIGINAL image, which was stretched (not letterboxed) to the square input: x scales by the original
width W, y by the original height H.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Elementwise logistic function in float32, without overflow warnings for large |x|."""
    x = np.asarray(x, dtype=np.float32)
    with np.errstate(over="ignore"):
        return (1.0 / (1.0 + np.exp(-x))).astype(np.float32)


def cxcywh_to_xyxy_pixels(boxes: np.ndarray, height: float, width: float) -> np.ndarray:
    """boxes [..., 4] normalised cxcywh -> float32 [..., 4] xyxy in pixels of a (height, width) image, clipped."""
    b = np.asarray(boxes, dtype=np.float32)
    cx, cy, w, h = b[..., 0], b[..., 1], b[..., 2], b[..., 3]
    out = np.stack([(cx - 0.5 * w) * width, (cy - 0.5 * h) * height,
                    (cx + 0.5 * w) * width, (cy + 0.5 * h) * height], -1).astype(np.float32)
    np.clip(out[..., 0::2], 0.0, width, out=out[..., 0::2])
    np.clip(out[..., 1::2], 0.0, height, out=out[..., 1::2])
    return out


def postprocess(boxes: np.ndarray, logits: np.ndarray, sizes: Sequence[tuple[int, int]],
                topk: int = 100) -> list[dict[str, np.ndarray]]:
    """Raw outputs -> per-image detections.

    boxes [B,Q,4] normalised cxcywh, logits [B,Q,C], sizes: B original (H, W). For each image, the K = min(topk,
    Q*C) highest (query, class) pairs over the flattened index f = q*C + c, in descending score order (ties: lower f
    first; ranking is done on the logits, so saturated sigmoids do not tie). Returns B dicts:
    boxes float32 [K,4] xyxy pixels clipped to the image, scores float32 [K] in (0,1), labels int64 [K] (= f % C),
    queries int64 [K] (= f // C, the query each detection came from).
    """
    boxes, logits = np.asarray(boxes), np.asarray(logits)
    if boxes.ndim != 3 or logits.ndim != 3 or boxes.shape[:2] != logits.shape[:2] or boxes.shape[2] != 4:
        raise ValueError(f"expected boxes [B,Q,4] and logits [B,Q,C], got {boxes.shape} and {logits.shape}")
    if len(sizes) != boxes.shape[0]:
        raise ValueError(f"{len(sizes)} sizes for a batch of {boxes.shape[0]}")
    b, q, c = logits.shape
    k = min(topk, q * c)
    flat = logits.reshape(b, q * c)
    order = np.argsort(-flat, axis=1, kind="stable")[:, :k]  # [B,K]
    out = []
    for i, (height, width) in enumerate(sizes):
        f = order[i].astype(np.int64)
        qi, lab = f // c, f % c
        out.append({"boxes": cxcywh_to_xyxy_pixels(boxes[i, qi], float(height), float(width)),
                    "scores": sigmoid(flat[i, f]), "labels": lab, "queries": qi})
    return out
