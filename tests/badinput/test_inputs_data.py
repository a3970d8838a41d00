"""Bad-input corpus: COCO datasets. One missing or ill-typed key per record type (generated from a valid two-image
dataset), broken top levels, duplicate ids, file names that leave the folder, images that lie, and datasets whose
categories do not match the model's classes. Read through `edgedet eval` (the bundled demo supernet) and
`edgedet train` (which must not create its run folder). Every case: exit 2, one line naming the file and the
record, nothing written."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from .harness import Case

NAMES = ["circle", "square", "triangle", "star", "ring", "cross"]  # the demo supernet's classes


def base_coco() -> dict:
    return {"info": {"description": "corpus"},
            "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
                       {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48}],
            "categories": [{"id": i + 1, "name": n} for i, n in enumerate(NAMES)],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [4, 4, 20, 16], "area": 320,
                             "iscrowd": 0},
                            {"id": 2, "image_id": 2, "category_id": 3, "bbox": [10, 8, 30, 20], "area": 600,
                             "iscrowd": 0}]}


def write_dataset(root: Path, coco=None, raw: bytes | None = None, splits=("train", "valid")) -> None:
    """Roboflow layout with two small JPEGs per split; the annotation file from `coco` (a dict) or `raw` bytes."""
    from PIL import Image

    for split in splits:
        d = root / split
        d.mkdir(parents=True, exist_ok=True)
        for name in ("a.jpg", "b.jpg"):
            Image.new("RGB", (64, 48), (200, 30, 30)).save(d / name)
        data = raw if raw is not None else json.dumps(coco if coco is not None else base_coco()).encode()
        (d / "_annotations.coco.json").write_bytes(data)


def _case(name: str, edit, needle: str, cmd: str = "eval", raw: bytes | None = None, after=None) -> Case:
    def setup(sb, s):
        coco = base_coco()
        if edit is not None:
            edit(coco)
        write_dataset(sb / "ds", coco, raw)
        if after is not None:
            after(sb / "ds", s)

    argv = {"eval": ["eval", "-c", "{demo_ckpt}", "--data", "ds", "--json"],
            "train": ["train", "--data", "ds", "--out", "run", "--epochs", "1", "--batch-size", "1"]}[cmd]
    return Case(f"coco-{name}-{cmd}", argv, setup=setup, timeout=90, expect_stderr=needle)


def _set(kind: str, key: str, value, index: int = 0):
    def edit(coco):
        coco[kind][index][key] = value
    return edit


def _drop(kind: str, key: str):
    def edit(coco):
        del coco[kind][0][key]
    return edit


ANN = r"_annotations\.coco\.json: "
REQUIRED = {"images": ["id", "file_name"], "annotations": ["id", "image_id", "category_id", "bbox"],
            "categories": ["id", "name"]}
MISSING_CASES = [_case(f"{kind}-no-{key}", _drop(kind, key), ANN + rf"{kind}\[0\].*'{key}' is missing",
                       cmd="train" if i % 2 else "eval")
                 for kind, keys in REQUIRED.items() for i, key in enumerate(keys)]

ILL_TYPED = {  # (record kind, key) -> values that must be refused
    ("images", "id"): ["1", 1.0, True, -1, 2**70, None, [1]],
    ("images", "file_name"): [5, "", "/etc/passwd", "../../outside.jpg", "a\u0000b.jpg", "C:\\img.jpg", "x" * 2000,
                              None],
    ("images", "width"): ["64", 0], ("images", "height"): [-1, 4.5],
    ("annotations", "id"): ["1", None], ("annotations", "image_id"): ["1", 999],
    ("annotations", "category_id"): ["1", 99, True],
    ("annotations", "bbox"): ["1,2,3,4", [1, 2, 3], [1, 2, 3, "4"], [1, 2, -3, 4], [1, 2, float("nan"), 4],
                              [1, 2, 3, float("inf")], {}, None, [True, 2, 3, 4]],
    ("annotations", "iscrowd"): [2, "0", 0.5], ("annotations", "area"): [-5, "big", float("nan")],
    ("categories", "id"): ["1", 1.5, -2], ("categories", "name"): [5, "", None, "x" * 2000, "a\u0000"],
}
ILL_TYPED_CASES = [_case(f"{kind}-{key}-{i}", _set(kind, key, v), ANN + rf"{kind}\[0\]", cmd="train" if i % 3 == 2
                         else "eval")
                   for (kind, key), vals in ILL_TYPED.items() for i, v in enumerate(vals)]


def _top(key, value):
    def edit(coco):
        if value is KeyError:
            del coco[key]
        else:
            coco[key] = value
    return edit


def _dup(kind: str):
    def edit(coco):
        coco[kind].append(dict(coco[kind][0]))
    return edit


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


TOP_CASES = [
    _case("top-a-list", None, ANN + r"expected a JSON object", raw=b"[1, 2, 3]"),
    _case("top-not-json", None, ANN + r"not valid JSON", raw=b"{images: oops"),
    _case("top-not-utf8", None, ANN + r"not valid JSON", raw=b"{\"images\": \"\xff\xfe\"}"),
    _case("top-deep-nesting", None, ANN + r"(not valid JSON|expected a JSON object)", raw=_nested(200000)),
    _case("top-nan-literal", None, ANN + r"annotations\[0\].*bbox",
          raw=json.dumps(base_coco()).replace("[4, 4, 20, 16]", "[4, 4, NaN, 16]").encode()),
    _case("images-missing", _top("images", KeyError), ANN + r"field 'images' missing or not a list"),
    _case("images-a-dict", _top("images", {"1": {}}), ANN + r"field 'images' missing or not a list"),
    _case("annotations-null", _top("annotations", None), ANN + r"field 'annotations' missing or not a list"),
    _case("categories-missing", _top("categories", KeyError), ANN + r"field 'categories' missing"),
    _case("images-empty", _top("images", []), ANN + r"no images", cmd="train"),
    _case("images-empty", _top("images", []), ANN + r"no images"),
    _case("categories-empty", _top("categories", []), ANN + r"no categories"),
    _case("images-record-a-string", _top("images", ["a.jpg"]), ANN + r"images\[0\]: expected an object"),
    _case("duplicate-image-id", _dup("images"), ANN + r"images\[2\] \(id 1\): duplicate image id 1"),
    _case("duplicate-image-id", _dup("images"), ANN + r".*duplicate image id 1", cmd="train"),
    _case("duplicate-category-id", _dup("categories"), ANN + r".*duplicate category id 1"),
    _case("duplicate-annotation-id", _dup("annotations"), ANN + r".*duplicate annotation id 1"),
]


def _names(names):
    def edit(coco):
        coco["categories"] = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    return edit


def _symlink_out(ds: Path, s) -> None:
    outside = ds.parent / "outside.jpg"
    (ds / "valid" / "a.jpg").rename(outside)
    (ds / "valid" / "a.jpg").symlink_to(outside)


def _image(name: str, content) -> callable:
    def after(ds: Path, s):
        p = ds / "valid" / name
        p.unlink()
        if content is None:
            p.mkdir()
        elif callable(content):
            content(p)
        else:
            p.write_bytes(content)
    return after


def _bomb(p: Path) -> None:
    """A PNG whose header claims 60000 x 60000 pixels: PIL refuses it as a decompression bomb."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 60000, 60000, 8, 2, 0, 0, 0)
    p.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
                  + chunk(b"IEND", b""))


MAPPING_CASES = [
    _case("names-differ", _names(["cat", "dog", "fox", "owl", "emu", "yak"]),
          ANN + r"categories 'cat', 'dog', .* are not among the model's classes"),
    _case("extra-category", _names(NAMES + ["hexagon"]),
          ANN + r"categories 'hexagon' are not among the model's classes"),
    _case("names-case-only-one-missing", _names(["Circle", "SQUARE", "triangle", "star", "ring", "crosses"]),
          ANN + r"categories 'crosses' are not among"),
]
IMAGE_CASES = [
    _case("image-symlink-outside", None, r"resolves outside", after=_symlink_out),
    _case("image-missing", None, r"a\.jpg: image file not found", after=_image("a.jpg", lambda p: None)),
    _case("image-garbage", None, r"a\.jpg: cannot read image", after=_image("a.jpg", bytes(range(256)))),
    _case("image-empty", None, r"a\.jpg: cannot read image", after=_image("a.jpg", b"")),
    _case("image-truncated-png", None, r"a\.jpg: cannot read image",
          after=_image("a.jpg", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00")),
    _case("image-decompression-bomb", None, r"a\.jpg: cannot read image \(DecompressionBomb",
          after=_image("a.jpg", _bomb)),
    _case("image-a-folder", None, r"a\.jpg: cannot read image", after=_image("a.jpg", None)),
]


def _trained_with_ids(sb: Path, s) -> None:
    """A checkpoint whose labels carry category ids 1..6 (as edgedet training records them), and a dataset whose
    id 2 is another class: the ids say it is the same class, the names say it is not."""
    from edgedet.api import build_supernet
    from edgedet.checkpoint import save_supernet
    from edgedet.config import preset

    cfg = preset("tiny").model_copy(update={"class_names": NAMES, "category_ids": [1, 2, 3, 4, 5, 6]})
    save_supernet(build_supernet(cfg), sb / "ids.safetensors")
    coco = base_coco()
    coco["categories"][1]["name"] = "hexagon"
    write_dataset(sb / "ds", coco)


ID_CASE = Case("coco-id-names-disagree-eval", ["eval", "-c", "ids.safetensors", "--data", "ds", "-s",
                                                "p24-r192-w2-d0-q25"], setup=_trained_with_ids, timeout=90,
               expect_stderr=ANN + r"category id 2 is 'hexagon' in the dataset but 'square' in the model")

CASES = MISSING_CASES + ILL_TYPED_CASES + TOP_CASES + MAPPING_CASES + IMAGE_CASES + [ID_CASE]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_data_inputs(bad, case):
    from edgedet.data.demo import demo_checkpoint

    bad(case, demo_ckpt=demo_checkpoint())
