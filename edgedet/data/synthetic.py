"""Deterministic synthetic detection dataset of textured shapes, written in Roboflow's COCO layout.

Layout::

    out_dir/train/_annotations.coco.json   out_dir/train/000000.jpg ...
    out_dir/valid/_annotations.coco.json   out_dir/valid/000000.jpg ...

Six classes (``CLASSES``) that differ only by shape: every object gets a random colour and one of
four textures (flat, stripes, checker, noisy gradient), so colour alone never identifies a class.
Each image holds 1..8 objects of 12 px up to 45 % of the short image side, on a cluttered
background (gradient, smooth and fine noise, distractor lines, scribbles and soft blobs that belong
to no class), followed by global lighting (channel gain, contrast, brightness, gamma, vignette,
soft shadow) and sensor noise. Later objects are drawn over earlier ones; a placement that would
leave an earlier object less than ``MIN_VISIBLE_FRAC`` visible is rejected, so every drawn object
is annotated, and each box is the extent of the object's *visible* pixels (coverage >= 0.5).

Every image is rendered from its own ``numpy.random.Generator`` seeded with ``(seed, split, index)``:
the output does not depend on generation order or worker count, and train/valid never coincide.
Same seed and parameters give a byte-identical JSON and identical JPEG bytes (same Pillow/libjpeg).
"""
from __future__ import annotations

import colorsys
import json
import math
import os
import tempfile
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES: tuple[str, ...] = ("circle", "square", "triangle", "star", "ring", "cross")
TEXTURES: tuple[str, ...] = ("flat", "stripes", "checker", "noise_gradient")
SPLITS: tuple[str, ...] = ("train", "valid")
ANN_FILE = "_annotations.coco.json"
JPEG_QUALITY = 92
MIN_OBJECT_PX = 12.0
MAX_OBJECT_FRAC = 0.45
MAX_OBJECTS = 8
MIN_VISIBLE_FRAC = 0.3  # objects more than 70 % occluded or truncated are never kept
_SS = 4  # supersampling factor of shape masks (anti-aliased edges)
_PLACEMENT_TRIES = 10

Annotation = tuple[int, list[int]]  # (category_id starting at 1, [x, y, w, h] in pixels)


# ----------------------------------------------------------------------------------------- colours
def _colour(rng: np.random.Generator, max_sat: float = 1.0) -> np.ndarray:
    """Random RGB colour, float32 [3] in [0, 1]."""
    h, s, v = rng.random(), rng.uniform(0.1, max_sat), rng.uniform(0.15, 1.0)
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32)


def _distinct_colour(ref: np.ndarray, rng: np.random.Generator, min_dist: float = 0.35) -> np.ndarray:
    """Random colour at least ``min_dist`` (RGB L2) from ``ref`` when found within a few tries."""
    c = _colour(rng)
    for _ in range(6):
        if float(np.linalg.norm(c - ref)) >= min_dist:
            break
        c = _colour(rng)
    return c


def _interp_weights(n_out: int, n_in: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Linear upsampling of n_in >= 2 grid nodes to n_out samples: (i0 int64 [n_out], weight of node
    i0 float32 [n_out], weight of node i0 + 1 float32 [n_out])."""
    pos = np.linspace(0.0, n_in - 1.0, n_out)
    i0 = np.clip(np.floor(pos).astype(np.int64), 0, n_in - 2)
    f = (pos - i0).astype(np.float32)
    return i0, 1.0 - f, f


def _smooth_noise(h: int, w: int, cells: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """Low-frequency noise float32 [h, w, channels], roughly N(0, 1) at the grid nodes.

    Bilinear interpolation of a (cells+1)^2 grid, summed in the order of the original
    ``einsum("yi,ijc,xj->yxc", Ay, g, Ax)`` (bit-identical output, ~8x faster), so datasets
    generated before this optimisation are reproduced exactly.
    """
    g = rng.standard_normal((cells + 1, cells + 1, channels)).astype(np.float32)
    iy, ay0, ay1 = _interp_weights(h, cells + 1)
    ix, ax0, ax1 = _interp_weights(w, cells + 1)
    ay0, ay1, ax0, ax1 = ay0[:, None, None], ay1[:, None, None], ax0[None, :, None], ax1[None, :, None]
    r0, r1 = ay0 * g[iy], ay1 * g[iy + 1]  # [h, cells + 1, channels]
    out = r0[:, ix] * ax0
    out += r0[:, ix + 1] * ax1
    out += r1[:, ix] * ax0
    out += r1[:, ix + 1] * ax1
    return out


def _coords(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (yy float32 [h, 1], xx float32 [1, w]), broadcastable to [h, w]."""
    return np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]


# ------------------------------------------------------------------------------------------- shapes
def _outline(cls: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Polygons [K, 2] (x, y) of class ``cls`` around the origin, radius ~1; polygons after the
    first are holes."""
    name = CLASSES[cls]
    circle = np.linspace(0.0, 2 * math.pi, 48, endpoint=False)
    if name in ("circle", "ring"):
        polys = [np.stack([np.cos(circle), np.sin(circle)], 1)]
        if name == "ring":
            polys.append(polys[0] * rng.uniform(0.45, 0.65))
        return polys
    if name == "square":
        a = math.pi / 4 + np.arange(4) * math.pi / 2
        return [np.stack([np.cos(a), np.sin(a)], 1)]
    if name == "triangle":
        a = -math.pi / 2 + np.arange(3) * 2 * math.pi / 3
        return [np.stack([np.cos(a), np.sin(a)], 1) + rng.normal(0.0, 0.04, (3, 2))]
    if name == "star":
        a = -math.pi / 2 + np.arange(10) * math.pi / 5
        r = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.5))
        return [np.stack([r * np.cos(a), r * np.sin(a)], 1)]
    if name == "cross":
        t = rng.uniform(0.25, 0.36)
        q = [(t, 1), (t, t), (1, t), (1, -t), (t, -t), (t, -1),
             (-t, -1), (-t, -t), (-1, -t), (-1, t), (-t, t), (-t, 1)]
        return [np.array(q, dtype=np.float64)]
    raise AssertionError(name)


def _shape_alpha(cls: int, size: float, rng: np.random.Generator) -> np.ndarray:
    """Anti-aliased coverage mask float32 [h, w] in [0, 1] of one randomly rotated/stretched shape
    whose longer bounding-box side is ~``size`` px (plus a 1 px empty margin)."""
    polys = _outline(cls, rng)
    theta = rng.uniform(0.0, 2 * math.pi)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    aff = rot @ np.diag([1.0, rng.uniform(0.8, 1.0)])
    polys = [p @ aff.T for p in polys]
    lo, hi = polys[0].min(0), polys[0].max(0)
    scale = size / float((hi - lo).max())
    w, h = (np.ceil((hi - lo) * scale).astype(int) + 2).tolist()
    canvas = Image.new("L", (w * _SS, h * _SS), 0)
    draw = ImageDraw.Draw(canvas)
    for i, p in enumerate(polys):
        q = ((p - lo) * scale + 1.0) * _SS
        draw.polygon([tuple(v) for v in q.tolist()], fill=255 if i == 0 else 0)
    return np.asarray(canvas.reduce(_SS), dtype=np.float32) / 255.0


def _texture(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Random-colour texture float32 [h, w, 3] in [0, 1]: flat, stripes, checker or noisy gradient."""
    kind = TEXTURES[int(rng.integers(len(TEXTURES)))]
    c1 = _colour(rng)
    c2 = _distinct_colour(c1, rng)
    if kind == "flat":
        return np.broadcast_to(c1, (h, w, 3)).copy()
    yy, xx = _coords(h, w)
    theta = rng.uniform(0.0, math.pi)
    u = xx * math.cos(theta) + yy * math.sin(theta)
    v = yy * math.cos(theta) - xx * math.sin(theta)
    small = min(h, w)
    if kind == "stripes":
        period = rng.uniform(3.0, max(4.0, small / 3))
        sel = (u / period + rng.random()) % 1.0 < 0.5
    elif kind == "checker":
        cell = rng.uniform(2.5, max(3.5, small / 4))
        sel = (np.floor(u / cell) + np.floor(v / cell)) % 2 == 0
    else:
        t = ((u - u.min()) / max(float(np.ptp(u)), 1e-6))[..., None]
        noise = rng.normal(0.0, rng.uniform(0.03, 0.1), (h, w, 3)).astype(np.float32)
        return np.clip(c1 * (1 - t) + c2 * t + noise, 0.0, 1.0)
    return np.where(sel[..., None], c1, c2).astype(np.float32)


# --------------------------------------------------------------------------------------- background
def _composite(img: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> np.ndarray:
    """Alpha-blend a colour [3] or image [h, w, 3] over ``img`` [h, w, 3] with ``alpha`` [h, w]."""
    a = alpha[..., None]
    return img * (1.0 - a) + colour * a


def _background(h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    """Cluttered background float32 [h, w, 3]: gradient + smooth/fine noise + distractors."""
    c1, c2 = _colour(rng, 0.7), _colour(rng, 0.7)
    yy, xx = _coords(h, w)
    if rng.random() < 0.6:
        theta = rng.uniform(0.0, 2 * math.pi)
        t = xx * math.cos(theta) + yy * math.sin(theta)
    else:
        t = np.hypot(xx - rng.uniform(0, w), yy - rng.uniform(0, h))
    t = ((t - t.min()) / max(float(np.ptp(t)), 1e-6))[..., None]
    img = c1 * (1 - t) + c2 * t
    img = img + _smooth_noise(h, w, int(rng.integers(2, 8)), 3, rng) * rng.uniform(0.03, 0.15)
    img = img + rng.normal(0.0, rng.uniform(0.0, 0.04), (h, w, 3)).astype(np.float32)
    side = min(h, w)
    for _ in range(int(rng.integers(2, 12))):
        mask = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(mask)
        kind = int(rng.integers(3))
        if kind == 0:  # straight line, possibly crossing the whole image
            p = rng.uniform(-0.2, 1.2, 4) * [w, h, w, h]
            draw.line([tuple(p[:2]), tuple(p[2:])], fill=255, width=int(rng.integers(1, 5)))
        elif kind == 1:  # scribble: random-walk polyline
            steps = rng.normal(0.0, rng.uniform(0.03, 0.15) * side, (int(rng.integers(3, 10)), 2))
            pts = np.cumsum(steps, 0) + rng.uniform(0, 1, 2) * [w, h]
            draw.line([tuple(q) for q in pts.tolist()], fill=255, width=int(rng.integers(1, 4)), joint="curve")
        else:  # soft blob: blurred ellipse, never has the hard edge of a class object
            c, r = rng.uniform(0, 1, 2) * [w, h], rng.uniform(0.03, 0.2, 2) * side
            draw.ellipse([c[0] - r[0], c[1] - r[1], c[0] + r[0], c[1] + r[1]], fill=255)
            mask = mask.filter(ImageFilter.GaussianBlur(float(r.mean() * rng.uniform(0.3, 0.6))))
        strength, colour = rng.uniform(0.4, 1.0), _colour(rng)
        box = mask.getbbox()  # blend only where the mask is non-zero (alpha 0 leaves pixels exactly as they are)
        if box is not None:
            x0, y0, x1, y1 = box
            alpha = np.asarray(mask.crop(box), dtype=np.float32) / 255.0 * strength
            img[y0:y1, x0:x1] = _composite(img[y0:y1, x0:x1], alpha, colour)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


def _lighting(img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Global photometric jitter of an image float32 [h, w, 3]; returns float32 in [0, 1]."""
    h, w, _ = img.shape
    img = img * rng.uniform(0.85, 1.15, 3).astype(np.float32)  # white balance
    mean = img.mean()
    img = (img - mean) * rng.uniform(0.6, 1.3) + mean + rng.uniform(-0.15, 0.15)
    img = np.clip(img, 0.0, 1.0) ** math.exp(rng.uniform(math.log(0.6), math.log(1.6)))
    yy, xx = _coords(h, w)
    if rng.random() < 0.5:  # vignette
        r2 = ((xx - w / 2) / (w / 2)) ** 2 + ((yy - h / 2) / (h / 2)) ** 2
        img = img * (1.0 - rng.uniform(0.1, 0.45) * np.clip(r2 / 2, 0, 1))[..., None]
    if rng.random() < 0.5:  # soft shadow: blurred ellipse drawn at 1/8 resolution
        sw, sh = max(w // 8, 2), max(h // 8, 2)
        m = Image.new("L", (sw, sh), 0)
        c, r = rng.uniform(0, 1, 2) * [sw, sh], rng.uniform(0.2, 0.6, 2) * [sw, sh]
        ImageDraw.Draw(m).ellipse([c[0] - r[0], c[1] - r[1], c[0] + r[0], c[1] + r[1]], fill=255)
        m = m.filter(ImageFilter.GaussianBlur(float(rng.uniform(1.0, 3.0)))).resize((w, h), Image.BILINEAR)
        img = img * (1.0 - rng.uniform(0.2, 0.55) * np.asarray(m, dtype=np.float32) / 255.0)[..., None]
    img = img + rng.normal(0.0, rng.uniform(0.0, 0.02), img.shape).astype(np.float32)
    return np.clip(img, 0.0, 1.0).astype(np.float32)


# ------------------------------------------------------------------------------------------- images
def render_image(rng: np.random.Generator, width: int, height: int) -> tuple[np.ndarray, list[Annotation]]:
    """Render one image: uint8 [height, width, 3] RGB and its annotations
    ``[(category_id >= 1, [x, y, w, h] int pixels of the visible extent)]`` in drawing order."""
    img = _background(height, width, rng)
    idmap = np.full((height, width), -1, dtype=np.int16)  # topmost object per pixel
    objs: list[tuple[int, int, int, int, int]] = []  # (cls, iy0, iy1, ix0, ix1) in-image region
    full: list[int] = []  # solid pixels of the whole shape (incl. any part outside the image)
    visible: list[int] = []
    max_size = max(MIN_OBJECT_PX, MAX_OBJECT_FRAC * min(width, height))
    for _ in range(int(rng.integers(1, MAX_OBJECTS + 1))):
        cls = int(rng.integers(len(CLASSES)))
        size = math.exp(rng.uniform(math.log(MIN_OBJECT_PX), math.log(max_size)))
        alpha = _shape_alpha(cls, size, rng)
        solid = alpha >= 0.5
        n_full, (ah, aw) = int(solid.sum()), alpha.shape
        for _ in range(_PLACEMENT_TRIES):
            x0 = int(rng.integers(-(aw // 6), max(width - aw + aw // 6, -(aw // 6)) + 1))
            y0 = int(rng.integers(-(ah // 6), max(height - ah + ah // 6, -(ah // 6)) + 1))
            ix0, iy0, ix1, iy1 = max(x0, 0), max(y0, 0), min(x0 + aw, width), min(y0 + ah, height)
            if ix1 <= ix0 or iy1 <= iy0:
                continue
            sub = solid[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
            n_vis = int(sub.sum())
            if n_vis < (1.0 - MIN_VISIBLE_FRAC) * n_full:  # too truncated by the image border
                continue
            covered = idmap[iy0:iy1, ix0:ix1][sub]
            lost = np.bincount(covered[covered >= 0], minlength=len(objs))
            if any(visible[j] - lost[j] < MIN_VISIBLE_FRAC * full[j] for j in range(len(objs))):
                continue  # would hide an earlier object
            break
        else:
            continue
        region = img[iy0:iy1, ix0:ix1]
        a = alpha[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
        bg_mean = region[sub].mean(0)
        for _ in range(4):  # keep the object distinguishable from what lies under it
            tex = _texture(ah, aw, rng)[iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]
            if float(np.linalg.norm(tex[sub].mean(0) - bg_mean)) >= 0.2:
                break
        img[iy0:iy1, ix0:ix1] = _composite(region, a, tex)
        for j in range(len(objs)):
            visible[j] -= int(lost[j])
        idmap[iy0:iy1, ix0:ix1][sub] = len(objs)
        objs.append((cls, iy0, iy1, ix0, ix1))
        full.append(n_full)
        visible.append(n_vis)
    anns: list[Annotation] = []
    for k, (cls, iy0, iy1, ix0, ix1) in enumerate(objs):
        ys, xs = np.nonzero(idmap[iy0:iy1, ix0:ix1] == k)
        if len(ys) < MIN_VISIBLE_FRAC * full[k]:
            continue  # unreachable given the placement test; kept as a guard
        bx, by = ix0 + int(xs.min()), iy0 + int(ys.min())
        bw, bh = int(xs.max() - xs.min()) + 1, int(ys.max() - ys.min()) + 1
        if bw >= 2 and bh >= 2:
            anns.append((cls + 1, [bx, by, bw, bh]))
    out = _lighting(img, rng)
    return (out * 255.0 + 0.5).astype(np.uint8), anns


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The generator that renders image ``index`` of ``split``; independent of all other images."""
    return np.random.default_rng([seed, SPLITS.index(split), index])


def _render_and_save(job: tuple[Path, int, str, int, int, int]) -> list[Annotation]:
    """Worker: render one image, write it as JPEG, return its annotations."""
    path, seed, split, index, width, height = job
    pixels, anns = render_image(image_rng(seed, split, index), width, height)
    Image.fromarray(pixels, "RGB").save(path, "JPEG", quality=JPEG_QUALITY, subsampling="4:2:0", optimize=False)
    return anns


def _write_json_atomic(path: Path, obj: Any) -> None:
    """Write ``obj`` as compact JSON to ``path`` via a temp file in the same folder and os.replace."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(obj, f, separators=(",", ":"))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


MAX_IMAGES = 1_000_000  # per split
MAX_SIDE = 4096


def _check_out(out_dir: Path) -> None:
    """OUT may be new, or hold earlier output of this generator (its splits are replaced); anything else in the way
    of train/ or valid/ is refused (ConfigError), so a user's own dataset is never overwritten."""
    from ..errors import ConfigError

    if out_dir.exists() and not out_dir.is_dir():
        raise ConfigError(f"{out_dir}: --out is a file, not a folder")
    for split in SPLITS:
        d = out_dir / split
        if not d.exists() or (d.is_dir() and not any(d.iterdir())):
            continue
        try:
            info = json.loads((d / ANN_FILE).read_text(encoding="utf-8")).get("info", {})
        except (OSError, ValueError, AttributeError):
            info = {}
        if not isinstance(info, dict) or info.get("description") != _DESCRIPTION:
            raise ConfigError(f"{d}: already exists and is not an edgedet synthetic dataset; choose another --out")


_DESCRIPTION = "edgedet synthetic shapes"


def generate(
    out_dir: Path,
    n_train: int,
    n_val: int,
    seed: int = 0,
    image_size: int | tuple[int, int] = 320,
    progress: Callable[[int, int], None] | None = None,
    workers: int = 1,
) -> dict[str, Any]:
    """Write the synthetic dataset under ``out_dir`` (``train/`` and ``valid/`` in Roboflow COCO layout).

    ``image_size`` is a side length or ``(width, height)``; ``progress(done, total)`` is called after
    each image; ``workers > 1`` renders in that many processes (same output as ``workers=1``).
    COCO ids: image ids = file index (from 0), annotation ids from 1, category ids 1..len(CLASSES).
    Everything is rendered into a hidden folder next to ``out_dir`` and moved into place at the end: a failed or
    interrupted run leaves no half dataset. Bad arguments, or a ``train/``/``valid/`` in ``out_dir`` that this
    generator did not write, raise ConfigError before anything is written.
    Returns ``{"out_dir", "seed", "image_size": [w, h], "classes", "splits": {split: {"images",
    "annotations", "per_class": {name: count}}}}``.
    """
    import shutil

    from ..errors import ConfigError

    width, height = (image_size, image_size) if isinstance(image_size, int) else image_size
    if not (0 <= n_train <= MAX_IMAGES and 0 <= n_val <= MAX_IMAGES and seed >= 0):
        raise ConfigError(f"--train, --val must be in 0..{MAX_IMAGES} and --seed >= 0 (got {n_train}, {n_val}, "
                          f"{seed})")
    if not 2 * MIN_OBJECT_PX <= min(width, height) or max(width, height) > MAX_SIDE:
        raise ConfigError(f"--size {image_size} must be in {2 * MIN_OBJECT_PX:g}..{MAX_SIDE} px")
    out_dir = Path(out_dir)
    _check_out(out_dir)
    counts = {"train": n_train, "valid": n_val}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    try:
        summary = _render_splits(stage, counts, seed, width, height, progress, workers)
        out_dir.mkdir(exist_ok=True)
        for split in SPLITS:  # earlier synthetic splits (checked by _check_out) are replaced
            if (out_dir / split).exists():
                shutil.rmtree(out_dir / split)
            os.replace(stage / split, out_dir / split)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return dict(summary, out_dir=str(out_dir))


def _render_splits(out_dir: Path, counts: dict[str, int], seed: int, width: int, height: int,
                   progress: Callable[[int, int], None] | None, workers: int) -> dict[str, Any]:
    jobs = []
    for split in SPLITS:
        (out_dir / split).mkdir(parents=True, exist_ok=True)
        jobs += [(out_dir / split / f"{i:06d}.jpg", seed, split, i, width, height) for i in range(counts[split])]
    total = len(jobs)
    results: list[list[Annotation]] = []
    pool = ProcessPoolExecutor(workers) if workers > 1 and total > 1 else None
    try:
        it = pool.map(_render_and_save, jobs, chunksize=8) if pool else map(_render_and_save, jobs)
        for anns in it:
            results.append(anns)
            if progress is not None:
                progress(len(results), total)
    finally:
        if pool:
            pool.shutdown(cancel_futures=True)
    categories = [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASSES)]
    summary: dict[str, Any] = {"seed": seed, "image_size": [width, height], "classes": list(CLASSES), "splits": {}}
    start = 0
    for split in SPLITS:
        images, annotations = [], []
        for i in range(counts[split]):
            images.append({"id": i, "file_name": f"{i:06d}.jpg", "width": width, "height": height})
            for cat, box in results[start + i]:
                annotations.append({"id": len(annotations) + 1, "image_id": i, "category_id": cat, "bbox": box,
                                    "area": box[2] * box[3], "segmentation": [], "iscrowd": 0})
        start += counts[split]
        coco = {"info": {"description": _DESCRIPTION, "version": "1", "seed": seed},
                "images": images, "annotations": annotations, "categories": categories}
        _write_json_atomic(out_dir / split / ANN_FILE, coco)
        per_class = {n: sum(a["category_id"] == i + 1 for a in annotations) for i, n in enumerate(CLASSES)}
        summary["splits"][split] = {"images": len(images), "annotations": len(annotations), "per_class": per_class}
    return summary
