"""Synthetic generator: determinism, COCO validity, content statistics, and a pin of the demo data."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgedet.data.synthetic import ANN_FILE, CLASSES, generate, image_rng, render_image


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def big(tmp_path_factory) -> tuple[Path, dict, dict]:
    """50 train images at 320 px (the statistics tests need enough objects)."""
    root = tmp_path_factory.mktemp("synth50")
    summary = generate(root, 50, 0, seed=1, image_size=320)
    return root, summary, json.loads((root / "train" / ANN_FILE).read_text())


def test_same_seed_same_bytes_and_workers_do_not_matter(tmp_path):
    a = generate(tmp_path / "a", 4, 2, seed=3, image_size=96)
    b = generate(tmp_path / "b", 4, 2, seed=3, image_size=96, workers=2)
    assert a["splits"] == b["splits"]
    fa, fb = files(tmp_path / "a"), files(tmp_path / "b")
    assert len(fa) == 4 + 2 + 2 and fa == fb
    generate(tmp_path / "c", 4, 2, seed=4, image_size=96)
    c = files(tmp_path / "c")
    assert fa.keys() == c.keys()
    for name in fa:
        assert fa[name] != c[name], name  # every image and both jsons change with the seed
    assert fa["train/000000.jpg"] != fa["valid/000000.jpg"]  # splits never share an image


def test_demo_data_is_pinned(tmp_path):
    """The demo's val set (seed 0, 320 px) is regenerated on demand and its AP is in the README: the
    annotations must not change, nor the pixels beyond rounding (a 4x4 thumbnail within 1 grey level)."""
    generate(tmp_path, 0, 3, seed=0, image_size=320)
    digest = hashlib.sha256((tmp_path / "valid" / ANN_FILE).read_bytes()).hexdigest()
    assert digest == "c557bada16721389049ffa2fbc28837c41fdcc5546b767f5757936abe4633437"
    img, anns = render_image(image_rng(0, "valid", 0), 320, 320)
    assert anns == [(4, [242, 232, 35, 41]), (3, [68, 187, 58, 76]), (3, [252, 212, 17, 16])]
    thumb = [[[138.9, 113.1, 124.1], [139.6, 169.9, 161.3], [149.4, 119.7, 127.9], [118.0, 112.1, 100.7]],
             [[173.1, 118.3, 140.8], [179.6, 152.3, 168.6], [161.4, 145.5, 156.7], [129.4, 133.1, 133.9]],
             [[181.8, 132.7, 145.9], [161.7, 140.9, 147.3], [182.1, 144.1, 147.6], [143.7, 127.0, 128.9]],
             [[156.9, 117.1, 134.8], [135.4, 111.9, 134.6], [159.4, 126.8, 125.2], [119.1, 110.4, 105.6]]]
    np.testing.assert_allclose(img.reshape(4, 80, 4, 80, 3).mean((1, 3)), thumb, atol=1.0)


def test_coco_json_is_valid(big):
    root, summary, coco = big
    assert coco["categories"] == [{"id": i + 1, "name": n, "supercategory": "shape"} for i, n in enumerate(CLASSES)]
    assert [im["id"] for im in coco["images"]] == list(range(50))
    assert [a["id"] for a in coco["annotations"]] == list(range(1, len(coco["annotations"]) + 1))
    sizes = {}
    for im in coco["images"]:
        with Image.open(root / "train" / im["file_name"]) as f:
            assert f.format == "JPEG" and f.mode == "RGB" and f.size == (im["width"], im["height"]) == (320, 320)
        sizes[im["id"]] = (im["width"], im["height"])
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        W, H = sizes[a["image_id"]]
        assert 0 <= x and 0 <= y and x + w <= W and y + h <= H, a
        assert w >= 2 and h >= 2 and a["area"] == w * h and a["iscrowd"] == 0
        assert 1 <= a["category_id"] <= len(CLASSES)
    per_image = np.bincount([a["image_id"] for a in coco["annotations"]], minlength=50)
    assert per_image.max() <= 8 and per_image.mean() > 2
    assert summary["splits"]["train"]["annotations"] == len(coco["annotations"])
    assert sum(summary["splits"]["train"]["per_class"].values()) == len(coco["annotations"])


def test_content_statistics(big):
    _, _, coco = big
    assert {a["category_id"] for a in coco["annotations"]} == set(range(1, len(CLASSES) + 1))
    sides = np.array([max(a["bbox"][2:]) for a in coco["annotations"]])
    assert sides.min() < 20 and sides.max() > 100
    boxes: dict[int, list] = {}
    for a in coco["annotations"]:
        boxes.setdefault(a["image_id"], []).append(a["bbox"])
    overlapping = sum(  # occlusion happens: some boxes in the same image intersect
        1 for bs in boxes.values() for i, (x, y, w, h) in enumerate(bs) for (u, v, p, q) in bs[i + 1:]
        if x < u + p and u < x + w and y < v + q and v < y + h)
    assert overlapping > 0


def test_boxes_are_tight_visible_extents(monkeypatch):
    """White objects on black, no lighting: every box edge row/column touches the object's pixels, and
    no object pixel lies outside all boxes (boxes dilated by 1 px for anti-aliased overlaps)."""
    from edgedet.data import synthetic

    monkeypatch.setattr(synthetic, "_background", lambda h, w, rng: np.zeros((h, w, 3), np.float32))
    monkeypatch.setattr(synthetic, "_lighting", lambda img, rng: img)
    monkeypatch.setattr(synthetic, "_texture", lambda h, w, rng: np.ones((h, w, 3), np.float32))
    n_boxes = 0
    for i in range(20):
        img, anns = synthetic.render_image(image_rng(9, "train", i), 160, 120)
        on = img[..., 0] >= 128
        covered = np.zeros_like(on)
        for _, (x, y, w, h) in anns:
            box = on[y:y + h, x:x + w]
            assert box[0].any() and box[-1].any() and box[:, 0].any() and box[:, -1].any()
            covered[max(y - 1, 0):y + h + 1, max(x - 1, 0):x + w + 1] = True
        assert not (on & ~covered).any()
        n_boxes += len(anns)
    assert n_boxes > 40


def test_non_square_and_progress(tmp_path):
    calls = []
    s = generate(tmp_path, 2, 1, seed=0, image_size=(96, 64), progress=lambda d, t: calls.append((d, t)))
    assert calls == [(1, 3), (2, 3), (3, 3)] and s["image_size"] == [96, 64]
    coco = json.loads((tmp_path / "valid" / ANN_FILE).read_text())
    assert coco["images"][0]["width"] == 96 and coco["images"][0]["height"] == 64
    with Image.open(tmp_path / "valid" / "000000.jpg") as f:
        assert f.size == (96, 64)
    assert not list(tmp_path.rglob("*.tmp"))  # json written atomically, no temp left behind


def test_bad_arguments_write_nothing(tmp_path):
    from edgedet.errors import ConfigError

    with pytest.raises(ConfigError, match="--train"):
        generate(tmp_path / "a", -1, 0)
    with pytest.raises(ConfigError, match="--size 16"):
        generate(tmp_path / "a", 1, 0, image_size=16)
    with pytest.raises(ConfigError, match="--size 100000"):
        generate(tmp_path / "a", 1, 0, image_size=100000)
    assert not list(tmp_path.iterdir())


def test_never_overwrites_a_foreign_dataset_and_leaves_no_half_output(tmp_path):
    from edgedet.errors import ConfigError

    (tmp_path / "mine" / "train").mkdir(parents=True)
    (tmp_path / "mine" / "train" / "cat.jpg").write_bytes(b"x")
    with pytest.raises(ConfigError, match="not an edgedet synthetic dataset"):
        generate(tmp_path / "mine", 2, 1, image_size=64)
    assert sorted(p.name for p in (tmp_path / "mine").rglob("*")) == ["cat.jpg", "train"]
    generate(tmp_path / "again", 2, 1, image_size=64)
    generate(tmp_path / "again", 1, 1, image_size=64)  # an earlier synthetic output is replaced
    assert len(list((tmp_path / "again" / "train").glob("*.jpg"))) == 1

    def boom(done, total):
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate(tmp_path / "killed", 3, 1, image_size=64, progress=boom)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again", "mine"]
