"""Pre- and post-processing of edgedet detectors, numpy only. This file is copied verbatim into every artifact's
Python runtime, and edgedet's own evaluator and calibration use it too, so all paths agree.

preprocess: uint8 RGB image [H,W,3] -> float32 [1,3,R,R] in [0,1], stretched (bilinear, half-pixel centres, no
antialias: the sampling of torch's F.interpolate(mode="bilinear", align_corners=False), within 1e-4).
postprocess: boxes [B,Q,4] normalised cxcywh + logits [B,Q,C] -> per image the top-k over queries x classes by
score (RF-DETR style: no per-query argmax, no NMS), boxes xyxy in pixels of the original image (stretched, not
letterboxed: x scales by its width, y by its height), clipped.
"""
import numpy as np

_TABLES: dict = {}  # (H, W, R, uint8?) -> resize tables; the last few sizes only


def _axis_weights(n_out: int, n_in: int):
    """Source indices (i0, i1) and float32 weights (w0, w1) of one axis: half-pixel centres, clamped at the border."""
    x = (np.arange(n_out, dtype=np.float64) + 0.5) * (n_in / n_out) - 0.5
    x = np.clip(x, 0, None)
    i0 = np.minimum(np.floor(x).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    w1 = (x - i0).astype(np.float32)
    return i0, i1, 1.0 - w1, w1


def _tables(h: int, w: int, r: int, scale_255: bool):
    key = (h, w, r, scale_255)
    if key not in _TABLES:
        if len(_TABLES) >= 8:
            _TABLES.pop(next(iter(_TABLES)))
        y0, y1, wy0, wy1 = _axis_weights(r, h)
        x0, x1, wx0, wx1 = _axis_weights(r, w)
        if scale_255:  # uint8 input: the division by 255 is folded into the column weights
            wx0, wx1 = wx0 / np.float32(255), wx1 / np.float32(255)
        rgb = np.arange(3)  # columns as offsets into an interleaved RGB row, weights repeated per channel
        _TABLES[key] = (y0, y1, wy0[:, None], wy1[:, None], (x0[:, None] * 3 + rgb).ravel(),
                        (x1[:, None] * 3 + rgb).ravel(), np.repeat(wx0, 3), np.repeat(wx1, 3))
    return _TABLES[key]


def preprocess(rgb: np.ndarray, resolution: int, out=None) -> np.ndarray:
    """uint8 (or float in [0,1]) RGB [H,W,3] -> float32 [1,3,R,R] RGB in [0,1] (written into `out` when given: a
    C-contiguous float32 [1,3,R,R] array the caller reuses, as the Python runtime's Detector does).

    The arithmetic, in float32 and in this order (the C++ runtime's detector.cpp does the same, so both give the
    same tensor bit for bit): rows  r = v[y0] * wy0 + v[y1] * wy1   (v: the pixel as float, 0..255 for uint8),
    then  out = r[x0] * wx0' + r[x1] * wx1'  with wx' = wx / 255 for uint8 input (wx for float input). The index and
    weight tables are computed once per input size. Rows are gathered as uint8 and blended on interleaved RGB rows,
    columns gathered on those rows, and the last addition writes the channel-first tensor directly (the fastest of
    the bit-exact orderings tried: README, "C++ runtime")."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"expected an RGB image [H,W,3], got shape {rgb.shape}")
    if rgb.dtype != np.uint8 and not np.issubdtype(rgb.dtype, np.floating):
        raise ValueError(f"expected a uint8 (0..255) or float ([0,1]) image, got {rgb.dtype}")
    r = int(resolution)
    h, w = rgb.shape[:2]
    u8 = rgb.dtype == np.uint8
    y0, y1, wy0, wy1, x0, x1, wx0, wx1 = _tables(h, w, r, u8)
    flat = np.ascontiguousarray(rgb).reshape(h, w * 3)
    rows = flat.take(y0, axis=0).astype(np.float32)  # [R, 3W]
    rows *= wy0
    other = flat.take(y1, axis=0).astype(np.float32)
    other *= wy1
    rows += other
    left = rows.take(x0, axis=1, mode="clip")  # [R, 3R] interleaved; the indices are in range by construction
    left *= wx0
    right = rows.take(x1, axis=1, mode="clip")
    right *= wx1
    if out is None:
        out = np.empty((1, 3, r, r), np.float32)
    elif not (isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (1, 3, r, r)):
        raise ValueError(f"out: expected a float32 array [1,3,{r},{r}]")
    np.add(left.reshape(r, r, 3).transpose(2, 0, 1), right.reshape(r, r, 3).transpose(2, 0, 1), out=out[0])
    return out


def sigmoid(x: np.ndarray) -> np.ndarray:
    """Elementwise logistic function in float32, without overflow warnings for large |x|."""
    x = np.asarray(x, dtype=np.float32)
    if x.ndim == 0:
        x = x.reshape(1)
        return sigmoid(x)[0]
    e = np.negative(x)  # 1 / (1 + exp(-x)), each step in float32, in place on one new array
    with np.errstate(over="ignore"):
        np.exp(e, out=e)
    e += np.float32(1)
    return np.divide(np.float32(1), e, out=e)


def cxcywh_to_xyxy_pixels(boxes: np.ndarray, height: float, width: float) -> np.ndarray:
    """boxes [..., 4] normalised cxcywh -> float32 [..., 4] xyxy in pixels of a (height, width) image, clipped.
    In float32: x1 = (cx - 0.5 * w) * width, x2 = (cx + 0.5 * w) * width (y likewise), then clipped to [0, width]."""
    b = np.asarray(boxes, dtype=np.float32)
    half = b[..., 2:] * np.float32(0.5)
    out = np.empty(b.shape, np.float32)
    np.subtract(b[..., :2], half, out=out[..., :2])
    np.add(b[..., :2], half, out=out[..., 2:])
    scale = np.array([width, height, width, height], np.float32)
    out *= scale
    return np.clip(out, np.float32(0), scale, out=out)


def top_order(row: np.ndarray, k: int) -> np.ndarray:
    """int64 indices of the k highest values of a 1-D array, descending, ties by lower index first, NaN last: the
    first k of np.argsort(-row, kind="stable"). When k is small against the row (300 queries x 91 classes, top 100)
    the k-th value is found by partitioning and only the values at or above it are sorted (O(n), not O(n log n));
    the same indices in the same order."""
    neg = -np.asarray(row)
    n = neg.shape[0]
    if 0 < k and 8 * k < n:
        kth = np.partition(neg, k - 1)[k - 1]
        if kth == kth:  # not NaN: at least k values are <= kth, and NaN never is
            cand = np.flatnonzero(neg <= kth)  # every tie at the k-th value, in index order
            return cand[np.argsort(neg[cand], kind="stable")[:k]].astype(np.int64, copy=False)
    return np.argsort(neg, kind="stable")[:k].astype(np.int64, copy=False)


def postprocess(boxes: np.ndarray, logits: np.ndarray, sizes, topk: int = 100,
                threshold: float = 0.0) -> list:
    """Raw outputs -> per-image detections.

    boxes [B,Q,4] normalised cxcywh, logits [B,Q,C], sizes: B original (H, W). For each image, the K = min(topk,
    Q*C) highest (query, class) pairs (those with score > threshold) over the flattened index f = q*C + c, in
    descending score order (ties: lower f first; ranking is done on the logits, so saturated sigmoids do not tie).
    Returns B dicts:
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
    out = []
    for i, (height, width) in enumerate(sizes):
        f = top_order(flat[i], k)
        scores = sigmoid(flat[i].take(f))
        if threshold > 0:
            keep = np.flatnonzero(scores > threshold)
            f, scores = f.take(keep), scores.take(keep)
        qi, lab = np.divmod(f, c)
        out.append({"boxes": cxcywh_to_xyxy_pixels(boxes[i].take(qi, axis=0), float(height), float(width)),
                    "scores": scores, "labels": lab, "queries": qi})
    return out
