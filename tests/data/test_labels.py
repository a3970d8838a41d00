"""A model's labels mapped onto a dataset's categories (by COCO id, by name), in evaluation: a detector that is
right about every box scores AP 1 only when its labels reach the right categories, whatever its label space is
(RF-DETR's 91-logit COCO head, an edgedet model trained on non-contiguous ids, a model that knows only names)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edgedet import evaluate as ev
from edgedet.config import preset
from edgedet.data.coco import CocoDetection, label_map
from edgedet.errors import ConfigError
from edgedet.importers.rfdetr_config import COCO_CATEGORIES

from ..conftest import with_coco_ids

CATS = [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}, {"id": 18, "name": "dog"}]
COCO_HEAD = {"num_classes": 91, "class_names": [COCO_CATEGORIES.get(i, "N/A") for i in range(91)],
             "category_ids": list(range(91))}


@pytest.fixture(scope="module")
def coco_val(tmp_path_factory):
    from edgedet.data.synthetic import generate

    root = tmp_path_factory.mktemp("cocoids")
    generate(root, 0, 6, seed=5, image_size=96)
    with_coco_ids(root)
    return root


def oracle(ds: CocoDetection, label_of_cat: dict[int, int], num_classes: int):
    """infer_fn of a perfect detector (batch size 1, dataset order) whose label for category c is label_of_cat[c]."""
    coco, state = ds.coco, {"i": 0}

    def infer(x):
        im = ds.images[state["i"]]
        state["i"] += 1
        anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
        q = max(len(anns), 1)
        boxes = np.full((1, q, 4), 0.5, np.float32)
        logits = np.full((1, q, num_classes), -20.0, np.float32)
        for j, a in enumerate(anns):
            x0, y0, w, h = a["bbox"]
            boxes[0, j] = [(x0 + w / 2) / im["width"], (y0 + h / 2) / im["height"], w / im["width"], h / im["height"]]
            logits[0, j, label_of_cat[a["category_id"]]] = 20.0
        return boxes, logits

    return infer


def test_label_map_by_id_by_name_and_in_order():
    assert label_map(CATS, COCO_HEAD, "x")[[1, 3, 18]].tolist() == [1, 3, 18]
    assert (label_map(CATS, COCO_HEAD, "x") >= 0).sum() == 3  # every other COCO logit: not in the dataset
    edgedet_trained = {"num_classes": 3, "class_names": ["person", "car", "dog"], "category_ids": [1, 3, 18]}
    assert label_map(CATS, edgedet_trained, "x").tolist() == [1, 3, 18]
    names_only = {"num_classes": 4, "class_names": ["Dog", "person", "N/A", "car "]}
    assert label_map(CATS, names_only, "x").tolist() == [18, 1, -1, 3]
    assert label_map(CATS, {"num_classes": 3}, "x").tolist() == [1, 3, 18]
    cfg = preset("tiny").model_copy(update={"num_classes": 3, "class_names": ["dog", "car", "person"]})
    assert label_map(CATS, cfg, "x").tolist() == [18, 3, 1]


@pytest.mark.parametrize("labels,needle", [
    ({"num_classes": 3, "class_names": ["person", "truck", "dog"], "category_ids": [1, 3, 18]},
     "category id 3 is 'car' in the dataset but 'truck' in the model"),
    ({"num_classes": 2, "class_names": ["person", "car"], "category_ids": [1, 3]}, "'dog' (id 18) is not among"),
    ({"num_classes": 3, "class_names": ["person", "car", "cat"]}, "categories 'dog' are not among the model's"),
    ({"num_classes": 3, "class_names": ["dog", "dog", "car"]}, "names two labels 'dog'"),
    ({"num_classes": 5}, "5 classes without names or category ids"),
])
def test_label_map_refuses_what_would_compare_the_wrong_classes(labels, needle):
    with pytest.raises(ConfigError) as e:
        label_map(CATS, labels, "ann.json")
    assert needle in str(e.value) and str(e.value).startswith("ann.json: ") and "\n" not in str(e.value)


@pytest.mark.parametrize("kind", ["coco_head", "trained_on_ids", "names_permuted"])
def test_perfect_detector_scores_one_through_the_map(coco_val, kind):
    if kind == "coco_head":
        labels, label_of = COCO_HEAD, {1: 1, 3: 3, 18: 18}
    elif kind == "trained_on_ids":
        labels, label_of = {"num_classes": 3, "class_names": ["person", "car", "dog"], "category_ids": [1, 3, 18]}, \
            {1: 0, 3: 1, 18: 2}
    else:
        labels, label_of = {"num_classes": 3, "class_names": ["car", "dog", "person"]}, {3: 0, 18: 1, 1: 2}
    n = labels["num_classes"]
    ds = CocoDetection(coco_val, "valid", labels=labels)
    assert ev.evaluate_runner(oracle(ds, label_of, n), 96, ds, batch_size=1)["AP"] == pytest.approx(1.0)
    plain = CocoDetection(coco_val, "valid")  # the same model's labels taken as the dataset's order
    ap = ev.evaluate_runner(oracle(plain, label_of, n), 96, plain, batch_size=1, labels=labels)["AP"]
    assert ap == pytest.approx(1.0)
    if n != 3:
        with pytest.raises(ConfigError, match="91 classes but the dataset's label map has 3"):
            ev.evaluate_runner(oracle(plain, label_of, n), 96, plain, batch_size=1)
    elif kind == "names_permuted":  # in the dataset's order the classes would be permuted: AP far from 1
        assert ev.evaluate_runner(oracle(plain, label_of, n), 96, plain, batch_size=1)["AP"] < 0.5


def test_evaluate_subnets_maps_the_supernets_labels(coco_val, tiny_net):
    """evaluate_subnets reads the supernet's labels itself: a tiny net named with the six synthetic classes does not
    fit a dataset of COCO categories, and one named with them does (labels mapped by name)."""
    s = tiny_net.cfg.smallest()
    ds = CocoDetection(coco_val, "valid")
    with pytest.raises(ConfigError, match="not among the model's classes"):
        ev.evaluate_subnets(tiny_net.__class__(tiny_net.cfg.model_copy(update={"class_names": list("abcdef")})).eval(),
                            [s], ds)
    cfg = tiny_net.cfg.model_copy(update={"class_names": ["x", "dog", "y", "person", "z", "car"]})
    net = tiny_net.__class__(cfg).eval()
    net.load_state_dict(tiny_net.state_dict())
    assert set(ev.evaluate_subnets(net, [s], ds)[s.id]) >= {"AP", "AP50"}


def test_dataset_json_is_the_ground_truth(coco_val):
    ds = CocoDetection(coco_val, "valid")
    raw = json.loads(ds.ann_file.read_text())
    assert [c["id"] for c in ds.categories] == [1, 3, 18] and ds.class_names == ["person", "car", "dog"]
    assert len(ds.coco["annotations"]) == len(raw["annotations"])
    assert all(a["area"] == pytest.approx(a["bbox"][2] * a["bbox"][3]) for a in ds.coco["annotations"])
