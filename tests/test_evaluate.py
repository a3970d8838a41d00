"""Evaluation: edgedet's COCO AP against pycocotools run here, post-processing by hand, shared vs per-subnet
evaluation, and the runner path against the supernet path."""
from __future__ import annotations

import contextlib
import copy
import io
import json

import numpy as np
import pytest
import torch

from edgedet import evaluate as ev
from edgedet.config import SubnetConfig
from edgedet.data.coco import CocoDetection
from edgedet.data.synthetic import generate
from edgedet.runtime.core import postprocess
from edgedet.data.transforms import batch_resize

W, H = 96, 64  # non-square originals: x and y scale differently


@pytest.fixture(scope="module")
def val(tmp_path_factory) -> CocoDetection:
    out = tmp_path_factory.mktemp("synth")
    generate(out, n_train=0, n_val=12, seed=3, image_size=(W, H))
    return CocoDetection(out, "valid")


@pytest.fixture(scope="module")
def gt(val) -> dict:
    return json.loads(val.ann_file.read_text())


def reference_ap(gt: dict, dets: list[dict]) -> list[float]:
    """pycocotools used directly, as its README shows."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        cg = COCO()
        cg.dataset = copy.deepcopy(gt)
        cg.createIndex()
        e = COCOeval(cg, cg.loadRes(copy.deepcopy(dets)), "bbox")
        e.evaluate()
        e.accumulate()
        e.summarize()
    return [float(v) for v in e.stats[:6]]


def noisy_dets(gt: dict, seed: int = 0) -> list[dict]:
    """Jittered ground-truth boxes with random scores and classes sometimes wrong, plus false positives."""
    rng = np.random.default_rng(seed)
    dets = []
    for a in gt["annotations"]:
        x, y, w, h = a["bbox"]
        j = rng.normal(0, 0.15, 4) * [w, h, w, h]
        cat = a["category_id"] if rng.random() < 0.8 else int(rng.integers(1, 7))
        dets.append({"image_id": a["image_id"], "category_id": cat, "score": float(rng.random()),
                     "bbox": [x + j[0], y + j[1], max(w + j[2], 1.0), max(h + j[3], 1.0)]})
    for img in gt["images"]:
        for _ in range(3):
            dets.append({"image_id": img["id"], "category_id": int(rng.integers(1, 7)), "score": float(rng.random()),
                         "bbox": (rng.random(4) * [W / 2, H / 2, W / 2, H / 2] + 1).tolist()})
    return dets


def test_coco_ap_equals_pycocotools(gt, val):
    dets = noisy_dets(gt)
    got = ev.coco_ap(gt, copy.deepcopy(dets))
    ref = reference_ap(gt, dets)
    assert list(got) == list(ev.METRICS)
    assert [got[k] for k in ev.METRICS] == ref
    assert 0.05 < got["AP"] < 0.95
    assert ev.coco_ap(val.ann_file, copy.deepcopy(dets)) == got  # json path, dict and array inputs agree
    arr = np.array([[d["image_id"], *d["bbox"], d["score"], d["category_id"]] for d in dets])
    assert ev.coco_ap(gt, arr) == got


def test_perfect_shifted_and_empty(gt):
    perfect = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": list(a["bbox"]), "score": 1.0}
               for a in gt["annotations"]]
    m = ev.coco_ap(gt, perfect)
    assert m["AP"] == m["AP50"] == m["AP75"] == 1.0
    assert all(m[k] in (1.0, -1.0) for k in ("APs", "APm", "APl"))  # -1: no ground truth of that size
    shifted = [dict(d, bbox=[d["bbox"][0] + 0.3 * d["bbox"][2], *d["bbox"][1:]]) for d in perfect]
    s = ev.coco_ap(gt, shifted)
    assert s["AP"] < 0.6 and s["AP50"] == 1.0  # IoU of a box shifted by 30 % of its width: 0.7/1.3 = 0.54
    empty = ev.coco_ap(gt, [])
    assert empty["AP"] == empty["AP50"] == empty["AP75"] == 0.0


def test_postprocess_by_hand():
    logits = np.array([[[0.0, 2.0, -1.0], [3.0, -5.0, 1.0]]], np.float32)  # flat: 0 2 -1 3 -5 1
    boxes = np.array([[[0.5, 0.5, 0.2, 0.4], [0.9, 0.1, 0.4, 0.4]]], np.float32)
    (d,) = postprocess(boxes, logits, [(100, 200)], topk=4)
    np.testing.assert_array_equal(d["queries"], [1, 0, 1, 0])  # flat 3, 1, 5, 0 -> query = flat // 3
    np.testing.assert_array_equal(d["labels"], [0, 1, 2, 0])  # label = flat % 3
    assert d["labels"].dtype == np.int64 and d["boxes"].dtype == np.float32
    np.testing.assert_allclose(d["scores"], 1 / (1 + np.exp(-np.array([3.0, 2.0, 1.0, 0.0]))), rtol=1e-6)
    q0 = [80, 30, 120, 70]  # x by W=200, y by H=100
    q1 = [140, 0, 200, 30]  # (140, -10, 220, 30) clipped to the 200 x 100 image
    np.testing.assert_allclose(d["boxes"], [q1, q0, q1, q0], atol=1e-4)
    (all6,) = postprocess(boxes, logits, [(100, 200)], topk=100)
    assert len(all6["scores"]) == 6 and np.all(np.diff(all6["scores"]) <= 0)
    two = postprocess(np.concatenate([boxes, boxes]), np.concatenate([logits, logits]), [(100, 200), (50, 10)], 1)
    np.testing.assert_allclose(two[1]["boxes"], [[7, 0, 10, 15]], atol=1e-5)



def test_top_order_equals_the_stable_argsort_with_ties_and_nan():
    """core.top_order (partition, then sort only the values at or above the k-th) gives the same indices in the
    same order as the first k of a stable argsort of -row: many ties at the k-th value, NaN, -0.0, k of 0..n, the
    real RF-DETR size (300 queries x 91 classes, top 100)."""
    from edgedet.runtime.core import top_order

    rng = np.random.default_rng(0)
    rows = [rng.standard_normal(27300).astype(np.float32), rng.integers(-3, 3, 5000).astype(np.float32)]
    nan = rng.standard_normal(4000).astype(np.float32)
    nan[rng.random(4000) < 0.3] = np.nan
    mostly_nan = rng.integers(-2, 2, 3000).astype(np.float32)
    mostly_nan[rng.random(3000) < 0.97] = np.nan
    mostly_nan[:7] = -0.0
    rows += [nan, mostly_nan, np.zeros(1000, np.float32)]
    for row in rows:
        for k in (0, 1, 7, 100, 101, len(row) // 9, len(row) // 7, len(row), len(row) + 3):
            got = top_order(row, k)
            assert got.dtype == np.int64
            np.testing.assert_array_equal(got, np.argsort(-row, kind="stable")[:k], err_msg=f"n={len(row)} k={k}")


SUBNETS = [SubnetConfig(patch=p, resolution=192, windows=w, dec_layers=d, queries=q)
           for p, w in ((24, 1), (16, 2)) for d in (0, 2) for q in (25, 50)]


@pytest.fixture(scope="module")
def pseudo_gt(tiny_net, val, gt) -> dict:
    """Ground truth made of the 4 best detections per image of one subnet, so that the random supernet scores
    non-trivial, different APs (on the real labels it scores 0 everywhere and AP equality would prove little)."""
    infer = _infer_fn(tiny_net.extract(SUBNETS[-1]))
    anns = []
    for i in range(len(val)):
        images, ids, sizes = ev.load_images(val, [i])
        rows = ev.detections_array(*infer(batch_resize(images, 192).numpy()), ids, sizes,
                                   np.array(val.label_to_cat_id), topk=4)
        anns += [{"image_id": int(r[0]), "category_id": int(r[6]), "bbox": r[1:5].tolist(),
                  "area": float(r[3] * r[4]), "iscrowd": 0} for r in rows]
    return dict(gt, annotations=[dict(a, id=k) for k, a in enumerate(anns, 1)])


def _infer_fn(module):
    def infer(x: np.ndarray):
        with torch.no_grad():
            b, lg = module(torch.from_numpy(x))
        return b.numpy(), lg.numpy()
    return infer


def _recording(monkeypatch) -> list[np.ndarray]:
    """Record the detection arrays evaluate_subnets hands to coco_ap, one per subnet, in order."""
    seen, real = [], ev.coco_ap

    def spy(gt, dets):
        seen.append(np.array(dets))
        return real(gt, dets)

    monkeypatch.setattr(ev, "coco_ap", spy)
    return seen


def test_shared_equals_unshared(tiny_net, val, pseudo_gt, monkeypatch):
    seen = _recording(monkeypatch)
    calls = []
    shared = ev.evaluate_subnets(tiny_net, SUBNETS, val, batch_size=5, share=True, gt=pseudo_gt,
                                 progress=lambda *a: calls.append(a))
    plain = ev.evaluate_subnets(tiny_net, SUBNETS, val, batch_size=5, share=False, gt=pseudo_gt)
    assert list(shared) == [s.id for s in SUBNETS]
    assert shared == plain
    aps = [m["AP"] for m in shared.values()]
    assert aps[-1] > 0.5 and len(set(aps)) > 3 and sum(a > 0 for a in aps) > 3  # non-trivial, distinct numbers
    assert calls[-1] == (3 * 2, 3 * 2)  # 3 batches x 2 (patch, resolution, windows) groups
    n = len(SUBNETS)
    assert all(np.array_equal(a, b) for a, b in zip(seen[:n], seen[n:]))  # bitwise the same detections
    assert all(len(a) == 12 * 100 for a in seen)
    assert not np.array_equal(seen[0], seen[2])  # depth 0 and 2 differ: the test compares distinct outputs


def test_runner_path_matches_supernet(tiny_net, val, pseudo_gt, monkeypatch):
    s = SUBNETS[-2]  # not the subnet that made the pseudo ground truth
    seen = _recording(monkeypatch)
    via_runner = ev.evaluate_runner(_infer_fn(tiny_net.extract(s)), s.resolution, val, batch_size=5, gt=pseudo_gt)
    via_net = ev.evaluate_subnets(tiny_net, [s], val, batch_size=5, gt=pseudo_gt)[s.id]
    np.testing.assert_allclose(seen[0], seen[1], atol=1e-4)
    assert via_net["AP"] > 0.01
    assert via_runner == pytest.approx(via_net, abs=1e-6)


def test_resize_is_half_pixel_bilinear_without_antialias():
    """batch_resize against bilinear interpolation written out in numpy: source coordinate
    (dst + 0.5) * in / out - 0.5 clamped at 0, no antialias filter when shrinking."""
    rng = np.random.default_rng(0)
    img = rng.random((3, 10, 7)).astype(np.float32)

    def axis(n_in: int, n_out: int) -> np.ndarray:
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        i1, f = np.minimum(i0 + 1, n_in - 1), src - np.floor(src)
        m = np.zeros((n_out, n_in))
        np.add.at(m, (np.arange(n_out), i0), 1 - f)
        np.add.at(m, (np.arange(n_out), i1), f)
        return m

    for r in (4, 13):  # shrink and enlarge, different factors for x and y
        ref = np.einsum("yi,cij,xj->cyx", axis(10, r), img, axis(7, r))
        got = batch_resize([torch.from_numpy(img)], r)
        assert got.shape == (1, 3, r, r)
        np.testing.assert_allclose(got[0].numpy(), ref, atol=1e-5)


def test_training_continues_after_evaluation(val):
    """Evaluation inside a training loop: the net gets its training mode back and its cached tensors still
    work under autograd (no inference-mode tensors left behind)."""
    from edgedet.api import build_supernet

    net = build_supernet("tiny").train()
    s = SUBNETS[0]
    ev.evaluate_subnets(net, [s], val, batch_size=12)
    assert net.training
    out = net(torch.rand(1, 3, s.resolution, s.resolution), s)
    out["pred_boxes"].sum().backward()


def _postprocess_reference(boxes, logits, sizes, topk, threshold):
    """The plain formulation of core.postprocess (full stable argsort, out-of-place float32 steps): the lean code in
    core must give the same arrays bit for bit."""
    b, q, c = logits.shape
    flat = logits.reshape(b, q * c)
    out = []
    for i, (height, width) in enumerate(sizes):
        f = np.argsort(-flat[i], kind="stable")[:min(topk, q * c)]
        with np.errstate(over="ignore"):
            scores = (1.0 / (1.0 + np.exp(-flat[i, f].astype(np.float32)))).astype(np.float32)
        if threshold > 0:
            f, scores = f[scores > threshold], scores[scores > threshold]
        qi, lab = f // c, f % c
        bx = boxes[i, qi].astype(np.float32)
        cx, cy, w, h = bx[:, 0], bx[:, 1], bx[:, 2], bx[:, 3]
        xy = np.stack([(cx - 0.5 * w) * width, (cy - 0.5 * h) * height, (cx + 0.5 * w) * width,
                       (cy + 0.5 * h) * height], -1).astype(np.float32)
        xy[:, 0::2] = np.clip(xy[:, 0::2], 0.0, width)
        xy[:, 1::2] = np.clip(xy[:, 1::2], 0.0, height)
        out.append({"boxes": xy, "scores": scores, "labels": lab, "queries": qi})
    return out


def test_postprocess_equals_the_plain_formulation_bit_for_bit():
    """Random logits with ties, NaN, +-inf and saturating values; boxes crossing every border; batch of 3 with
    different image sizes; thresholds 0 / 0.3 / 0.99; top-k below, at and above Q*C; float64 inputs too."""
    rng = np.random.default_rng(1)
    for q, c in ((25, 6), (300, 91), (3, 1)):
        logits = (rng.standard_normal((3, q, c)) * 6).astype(np.float32)
        logits[0, :2] = np.round(logits[0, :2])  # ties
        logits[1, rng.random((q, c)) < 0.05] = np.nan
        logits[2, 0, 0], logits[2, -1, -1], logits[2, 1 % q, 0] = np.inf, -np.inf, -200.0
        boxes = (rng.random((3, q, 4)) * 1.4 - 0.2).astype(np.float32)
        sizes = [(480, 640), (37, 1001), (1, 1)]
        for topk in (1, 100, q * c, q * c + 5):
            for threshold in (0.0, 0.3, 0.99):
                for dtype in (np.float32, np.float64):
                    got = postprocess(boxes.astype(dtype), logits.astype(dtype), sizes, topk, threshold)
                    exp = _postprocess_reference(boxes.astype(dtype), logits.astype(dtype), sizes, topk, threshold)
                    for g, e in zip(got, exp):
                        for key in ("boxes", "scores", "labels", "queries"):
                            assert g[key].dtype == e[key].dtype, key
                            np.testing.assert_array_equal(g[key], e[key], err_msg=f"{q}x{c} {topk} {threshold} {key}")


def test_sigmoid_in_place_steps_equal_the_plain_formula():
    from edgedet.runtime.core import sigmoid

    x = np.concatenate([np.linspace(-120, 120, 20001), [np.nan, np.inf, -np.inf, -0.0]]).astype(np.float32)
    with np.errstate(over="ignore"):
        exp = (1.0 / (1.0 + np.exp(-x))).astype(np.float32)
    np.testing.assert_array_equal(sigmoid(x), exp)
    np.testing.assert_array_equal(sigmoid(x.astype(np.float64)), exp)
    assert sigmoid(np.float32(0.0)) == np.float32(0.5)
    assert sigmoid(2.0) == np.float32(1.0) / (np.float32(1.0) + np.exp(np.float32(-2.0)))  # 0-d input: a scalar
    assert np.shares_memory(sigmoid(x), x) is False  # the input is never written
