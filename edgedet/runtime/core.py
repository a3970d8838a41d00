"""Pre- and post-processing of edgedet detectors, numpy only. This file is copied verbatim into every generated
runtime module, and edgedet's own evaluator and calibration use it too, so all paths agree.

preprocess: uint8 RGB image [H,W,3] -> float32 [1,3,R,R] in [0,1], stretched (bilinear, half-pixel centres,
no antialias: the same sampling as torch's F.interpolate(mode="bilinear", align_corners=False)).
postprocess: boxes [B,Q,4] normalised cxcywh + logits [B,Q,C] -> per image the top-k over queries x classes by
score (RF-DETR style: no per-query argmax, no NMS), boxes xyxy in pixels of the original image (stretched, not
letterboxed: x scales by its width, y by its height), clipped.
"""
import numpy as np


def _axis_weights(n_out: int, n_in: int):
    x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    x = np.clip(x, 0, None)
    i0 = np.minimum(np.floor(x).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (x - i0).astype(np.float32)
    return i0, i1, 1.0 - w1, w1


def resize_bilinear(img: np.ndarray, out_h: int, out_w: int) -> np.ndarray:
    """float32 [H,W,C] -> [out_h,out_w,C]; matches torch bilinear with align_corners=False, antialias=False."""
    y0, y1, wy0, wy1 = _axis_weights(out_h, img.shape[0])
    x0, x1, wx0, wx1 = _axis_weights(out_w, img.shape[1])
    rows = img[y0] * wy0[:, None, None] + img[y1] * wy1[:, None, None]
    return rows[:, x0] * wx0[None, :, None] + rows[:, x1] * wx1[None, :, None]


def preprocess(rgb: np.ndarray, resolution: int) -> np.ndarray:
    """uint8 (or float in [0,1]) RGB [H,W,3] -> float32 [1,3,R,R] RGB in [0,1]."""
    img = rgb.astype(np.float32) / 255.0 if rgb.dtype == np.uint8 else rgb.astype(np.float32)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected an RGB image [H,W,3], got shape {img.shape}")
    out = resize_bilinear(img, resolution, resolution)
    return np.ascontiguousarray(out.transpose(2, 0, 1)[None], dtype=np.float32)


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


def postprocess(boxes: np.ndarray, logits: np.ndarray, sizes, topk: int = 100,
                threshold: float = 0.0) -> list:
    """Raw outputs -> per-image detections.

    boxes [B,Q,4] normalised cxcywh, logits [B,Q,C], sizes: B original (H, W). For each image, the K = min(topk,
    Q*C) highest (query, class) pairs (those with score > threshold) over the flattened index f = q*C + c, in descending score order (ties: lower f
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
        scores = sigmoid(flat[i, f])
        if threshold > 0:
            f, scores = f[scores > threshold], scores[scores > threshold]
        qi, lab = f // c, f % c
        out.append({"boxes": cxcywh_to_xyxy_pixels(boxes[i, qi], float(height), float(width)),
                    "scores": scores, "labels": lab, "queries": qi})
    return out
