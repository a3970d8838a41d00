"""COCO loading and the RF-DETR augmentation, checked against the json by hand."""
from __future__ import annotations

import json

import pytest
import torch

from edgedet.data.coco import CocoDetection, collate_fn
from edgedet.data.transforms import RandomCropFlip, batch_resize, crop, hflip
from edgedet.errors import ConfigError


def test_boxes_match_the_json(synth_data):
    ds = CocoDetection(synth_data, "valid")
    coco = json.loads((synth_data / "valid" / "_annotations.coco.json").read_text())
    img, t = ds[0]
    h, w = t["orig_size"]
    assert img.shape == (3, h, w) and 0 <= img.min() and img.max() <= 1
    anns = [a for a in coco["annotations"] if a["image_id"] == ds.images[0]["id"]]
    assert len(anns) == len(t["labels"])
    for a, box, lab in zip(anns, t["boxes"], t["labels"]):
        x, y, bw, bh = a["bbox"]
        assert torch.allclose(box, torch.tensor([(x + bw / 2) / w, (y + bh / 2) / h, bw / w, bh / h]), atol=1e-6)
        assert ds.label_to_cat_id[lab] == a["category_id"]


def test_flip_and_crop(synth_data):
    ds = CocoDetection(synth_data, "train")
    img, t = ds[1]
    fi, ft = hflip(img, t)
    assert torch.allclose(ft["boxes"][:, 0], 1 - t["boxes"][:, 0]) and torch.equal(fi[..., 0], img[..., -1])
    ci, ct = crop(img, t, 10, 20, 60, 70)
    assert ci.shape[-2:] == (60, 70)
    assert ((ct["boxes"] >= 0) & (ct["boxes"] <= 1)).all() and len(ct["boxes"]) == len(ct["labels"])
    aug = RandomCropFlip(generator=torch.Generator().manual_seed(0))
    for i in range(4):
        _, at = aug(*ds[i])
        assert ((at["boxes"] >= 0) & (at["boxes"] <= 1 + 1e-6)).all()


def test_batch_resize_and_collate(synth_data):
    ds = CocoDetection(synth_data, "train", transforms=RandomCropFlip())
    images, targets = collate_fn([ds[0], ds[1]])
    x = batch_resize(images, 96)
    assert x.shape == (2, 3, 96, 96) and len(targets) == 2


def test_bad_dataset_errors(tmp_path):
    with pytest.raises(ConfigError, match="no train/_annotations.coco.json"):
        CocoDetection(tmp_path, "train")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "_annotations.coco.json").write_text("{broken")
    with pytest.raises(ConfigError, match="not valid JSON"):
        CocoDetection(tmp_path, "train")


def test_every_image_matches_the_json(synth_data):
    """All images of both splits, converted independently from the json's pixel xywh."""
    from edgedet.data.synthetic import CLASSES

    for split in ("train", "valid"):
        ds = CocoDetection(synth_data, split)
        coco = json.loads(ds.ann_file.read_text())
        assert ds.class_names == list(CLASSES) and ds.label_to_cat_id == list(range(1, len(CLASSES) + 1))
        assert len(ds) == len(coco["images"])
        for i in range(len(ds)):
            img, t = ds[i]
            im = next(m for m in coco["images"] if m["id"] == t["image_id"])
            assert t["orig_size"] == (im["height"], im["width"]) and img.shape == (3, im["height"], im["width"])
            anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
            want = torch.tensor([[(x + w / 2) / im["width"], (y + h / 2) / im["height"], w / im["width"],
                                  h / im["height"]] for x, y, w, h in (a["bbox"] for a in anns)]).reshape(-1, 4)
            assert t["boxes"].dtype == torch.float32 and t["labels"].dtype == torch.int64
            assert torch.allclose(t["boxes"], want, atol=1e-6)
            assert [ds.label_to_cat_id[l] for l in t["labels"].tolist()] == [a["category_id"] for a in anns]


def test_generic_layout_skips_crowd_degenerate_and_roboflow_parent(tmp_path):
    from PIL import Image

    Image.new("RGB", (40, 20), (255, 0, 0)).save(tmp_path / "a.png")
    coco = {"images": [{"id": 7, "file_name": "a.png", "width": 40, "height": 20}],
            "categories": [{"id": 0, "name": "shapes", "supercategory": "none"},
                           {"id": 1, "name": "dog", "supercategory": "shapes"},
                           {"id": 3, "name": "cat", "supercategory": "shapes"}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 3, "bbox": [10, 5, 20, 10], "iscrowd": 0},
                            {"id": 2, "image_id": 7, "category_id": 1, "bbox": [0, 0, 40, 20], "iscrowd": 1},
                            {"id": 3, "image_id": 7, "category_id": 1, "bbox": [5, 5, 0, 4], "iscrowd": 0}]}
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    ds = CocoDetection(images_dir=tmp_path, ann_file=tmp_path / "ann.json")
    assert ds.class_names == ["dog", "cat"] and ds.label_to_cat_id == [1, 3]
    img, t = ds[0]
    assert img.shape == (3, 20, 40) and img.dtype == torch.float32 and torch.allclose(img[0], torch.ones(20, 40))
    assert t["image_id"] == 7 and t["orig_size"] == (20, 40) and t["labels"].tolist() == [1]
    assert torch.allclose(t["boxes"], torch.tensor([[0.5, 0.5, 0.5, 0.5]]))


def test_hflip_maps_cx_and_crop_clips():
    img = torch.rand(3, 100, 200)
    t = {"boxes": torch.tensor([[0.25, 0.5, 0.1, 0.2], [0.9, 0.1, 0.1, 0.1]]), "labels": torch.tensor([0, 1]),
         "image_id": 1, "orig_size": (100, 200)}
    fi, ft = hflip(img, t)
    assert torch.allclose(ft["boxes"], torch.tensor([[0.75, 0.5, 0.1, 0.2], [0.1, 0.1, 0.1, 0.1]]))
    assert torch.equal(fi, img.flip(-1)) and ft["image_id"] == 1 and torch.equal(t["boxes"][0, 0], torch.tensor(0.25))
    # crop x in [40, 140), y in [0, 60): box 0 (x 40..60, y 40..60) stays whole, box 1 (x 170..190) is outside
    ci, ct = crop(img, t, 0, 40, 60, 100)
    assert torch.equal(ci, img[:, :60, 40:140]) and ct["labels"].tolist() == [0]
    assert torch.allclose(ct["boxes"], torch.tensor([[0.1, 50 / 60, 0.2, 20 / 60]]), atol=1e-6)
    # a box cut by the crop (y 40..60, crop from y 45) is clipped to y 45..60
    _, ct = crop(img, t, 45, 0, 55, 200)
    assert torch.allclose(ct["boxes"][0], torch.tensor([0.25, 7.5 / 55, 0.1, 15 / 55]), atol=1e-6)


def test_random_crop_flip_is_seeded(synth_data):
    ds = CocoDetection(synth_data, "train")
    runs = []
    for _ in range(2):
        aug = RandomCropFlip(generator=torch.Generator().manual_seed(5))
        runs.append([aug(*ds[i]) for i in range(6)])
    for (ia, ta), (ib, tb) in zip(*runs):
        assert torch.equal(ia, ib) and torch.equal(ta["boxes"], tb["boxes"])
        assert ((ta["boxes"] >= 0) & (ta["boxes"] <= 1 + 1e-6)).all() and (ta["boxes"][:, 2:] > 0).all()
    assert len({tuple(i.shape) for i, _ in runs[0]}) > 1  # some images were cropped


def test_batch_resize_mixed_sizes():
    x = batch_resize([torch.rand(3, 50, 80), torch.rand(3, 128, 128), torch.rand(3, 64, 32)], 64)
    assert x.shape == (3, 3, 64, 64) and x.dtype == torch.float32
    same = torch.rand(3, 64, 64)
    assert torch.equal(batch_resize([same], 64)[0], same)


def _write(tmp_path, coco) -> "Path":
    ann = tmp_path / "ann.json"
    ann.write_text(json.dumps(coco))
    return ann


def _coco(**kw):
    base = {"images": [{"id": 1, "file_name": "a.png", "width": 40, "height": 20}],
            "categories": [{"id": 5, "name": "dog"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 2, 10, 8]}]}
    base.update(kw)
    return base


@pytest.mark.parametrize("edit,needle", [
    (dict(images=[]), "no images"),
    (dict(images=[{"id": 1, "file_name": "a.png"}, {"id": 1, "file_name": "b.png"}]), "images[1] (id 1): duplicate"),
    (dict(images=[{"id": "1", "file_name": "a.png"}]), "images[0]: 'id' is '1', expected an integer"),
    (dict(images=[{"id": 1, "file_name": "../../etc/passwd"}]), "not a relative path inside"),
    (dict(images=[{"id": 1, "file_name": "/etc/passwd"}]), "not a relative path inside"),
    (dict(categories=[{"id": 5}]), "categories[0] (id 5): 'name' is missing"),
    (dict(annotations=[{"id": 1, "image_id": 1, "category_id": 5, "bbox": [1, 2, float("nan"), 8]}]), "'bbox' is"),
    (dict(annotations=[{"id": 1, "image_id": 9, "category_id": 5, "bbox": [1, 2, 3, 4]}]), "image_id 9 is not"),
    (dict(annotations=[{"id": 1, "image_id": 1, "category_id": 6, "bbox": [1, 2, 3, 4]}]), "category_id 6 is not"),
])
def test_annotation_records_are_checked(tmp_path, edit, needle):
    ann = _write(tmp_path, _coco(**edit))
    with pytest.raises(ConfigError) as e:
        CocoDetection(images_dir=tmp_path, ann_file=ann)
    assert needle in str(e.value) and str(ann) in str(e.value) and "\n" not in str(e.value)


def test_image_symlink_out_of_the_folder_is_refused(tmp_path):
    from PIL import Image

    outside = tmp_path / "outside.png"
    Image.new("RGB", (40, 20)).save(outside)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.png").symlink_to(outside)
    ds = CocoDetection(images_dir=tmp_path / "data", ann_file=_write(tmp_path, _coco()))
    with pytest.raises(ConfigError, match="resolves outside"):
        ds[0]
