"""What rfdetr's own configs say: the layouts rfdetr 1.11 builds, the `args` fields the importer reads (validated
against limits before anything is built), and the COCO label space of its released heads.

Settings come from two places, the checkpoint's `args` (untrusted: checked here, one line naming `args.KEY` and the
value) and the user's command line (`edgedet import rfdetr --resolution 560 --arg KEY=VALUE`: trusted, but checked
the same way so a typo is one line naming the option).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.coco import UNUSED_CLASS  # name of a logit no class is trained on (unused COCO ids, no-object slot)
from ..errors import CheckpointError, ConfigError

__all__ = ["Layout", "LAYOUTS", "ARG_LIMITS", "COCO_CATEGORIES", "UNUSED_CLASS", "check_args", "parse_user_args",
           "match_layout", "setting_name"]


@dataclass(frozen=True)
class Layout:
    """One detection model class of rfdetr 1.11 (rfdetr/config.py) and the defaults it builds with.

    A checkpoint without `args` is recognised by what its tensors show (ViT width, patch kernel, position grid,
    projector levels and width); the defaults below then fill in what the tensors cannot show (resolution, windows,
    feature taps). rfdetr keeps `positional_encoding_size` = resolution / patch when a user changes the resolution of
    the patch-16 models, but not for the patch-14 ones, whose 37 x 37 grid is DINOv2's 518 px grid while they run at
    560 px: for those the resolution cannot be read off the grid.
    """

    model: str  # rfdetr class name
    embed_dim: int
    patch: int
    pos_grid: int
    levels: tuple[str, ...]
    hidden_dim: int
    dec_layers: int
    resolution: int
    windows: int
    taps: tuple[int, ...]
    grid_follows_resolution: bool  # rfdetr re-derives positional_encoding_size from a user-set resolution

    @property
    def name(self) -> str:  # RFDETRLargeDeprecated -> rfdetr-large-deprecated
        import re

        return "-".join(["rfdetr"] + [w.lower() for w in re.findall(r"[A-Z][a-z0-9]*", self.model[len("RFDETR"):])])


_S, _B = 384, 768  # DINOv2 ViT-S / ViT-B widths
LAYOUTS = (
    Layout("RFDETRNano", _S, 16, 24, ("P4",), 256, 2, 384, 2, (3, 6, 9, 12), True),
    Layout("RFDETRSmall", _S, 16, 32, ("P4",), 256, 3, 512, 2, (3, 6, 9, 12), True),
    Layout("RFDETRMedium", _S, 16, 36, ("P4",), 256, 4, 576, 2, (3, 6, 9, 12), True),
    Layout("RFDETRLarge", _S, 16, 44, ("P4",), 256, 4, 704, 2, (3, 6, 9, 12), True),
    Layout("RFDETRBase", _S, 14, 37, ("P4",), 256, 3, 560, 4, (2, 5, 8, 11), False),
    Layout("RFDETRLargeDeprecated", _B, 14, 37, ("P3", "P5"), 384, 3, 560, 4, (2, 5, 8, 11), False),
)


def match_layout(embed_dim: int, patch: int, pos_grid: int, levels: list[str], hidden_dim: int,
                 dec_layers: int, model_name: str | None = None) -> Layout | None:
    """The rfdetr layout a checkpoint was built from, or None. Candidates are the layouts whose ViT width, patch,
    projector levels and width are the checkpoint's; among them the one its recorded model class names, else the one
    with its position grid (and decoder depth), else (a patch-16 model fine-tuned at another resolution, whose grid
    followed the resolution) the one with its decoder depth."""
    key = (embed_dim, patch, tuple(levels), hidden_dim)
    same = [lay for lay in LAYOUTS if (lay.embed_dim, lay.patch, lay.levels, lay.hidden_dim) == key]
    named = [lay for lay in same if lay.model == model_name]
    exact = [lay for lay in same if lay.pos_grid == pos_grid]
    for pool in (named, exact, same):
        if pool:
            return next((lay for lay in pool if lay.dec_layers == dec_layers), pool[0])
    return None


# -------------------------------------------------------------------------------------------- args limits

_INT = "int"
_BOOL = "bool"
_STR = "str"
_INTS = "list of int"
# key -> (kind, lo, hi): the arg fields the importer reads; hi bounds what a hostile file can make it build
ARG_LIMITS: dict[str, tuple[str, int, int]] = {
    "resolution": (_INT, 1, 4096), "num_windows": (_INT, 1, 64), "patch_size": (_INT, 1, 64),
    "positional_encoding_size": (_INT, 1, 512), "dec_layers": (_INT, 0, 32), "sa_nheads": (_INT, 1, 128),
    "ca_nheads": (_INT, 1, 128), "dec_n_points": (_INT, 1, 32), "dim_feedforward": (_INT, 1, 65536),
    "num_queries": (_INT, 1, 10000), "group_detr": (_INT, 1, 1000), "hidden_dim": (_INT, 1, 8192),
    "num_classes": (_INT, 1, 100000), "num_decoder_registers": (_INT, 0, 1024),
    "out_feature_indexes": (_INTS, 0, 1024), "window_block_indexes": (_INTS, 0, 1024),
    "two_stage": (_BOOL, 0, 1), "bbox_reparam": (_BOOL, 0, 1), "lite_refpoint_refine": (_BOOL, 0, 1),
    "layer_norm": (_BOOL, 0, 1), "rms_norm": (_BOOL, 0, 1), "segmentation_head": (_BOOL, 0, 1),
    "use_grouppose_keypoints": (_BOOL, 0, 1), "dual_projector": (_BOOL, 0, 1),
    "decoder_norm": (_STR, 0, 16), "encoder": (_STR, 0, 200),
}
MAX_LIST = 1024  # entries of an int list
MAX_CLASSES = 100000
MAX_NAME = 1000  # characters of one class name


FLAGS = {"resolution": "--resolution", "num_windows": "--num-windows", "num_queries": "--num-queries",
         "group_detr": "--group-detr", "class_names": "--class-names"}  # settings with their own import option


def setting_name(key: str, user: bool) -> str:
    """How a setting is named in a message: the option the user gave it with, or the checkpoint's args.KEY."""
    return FLAGS.get(key, f"--arg {key}") if user else f"args.{key}"


def _bad(source: str, key: str, v: Any, expected: str, user: bool):
    shown = repr(v)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    where = setting_name(key, True) if user else f"{source}: args.{key}"
    err = ConfigError if user else CheckpointError
    return err(f"{where} is {shown}, expected {expected}")


def check_args(opts: dict, source: str, user: bool = False) -> None:
    """Check every field of ARG_LIMITS present in `opts` (and class_names, projector_scale) for type and range:
    one error naming the field and the value, before anything is inferred or built. `source`: the checkpoint path
    (CheckpointError) or, with user=True, the command line (ConfigError naming --arg KEY)."""
    for key, (kind, lo, hi) in ARG_LIMITS.items():
        v = opts.get(key)
        if v is None:
            continue
        if kind == _INT:
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise _bad(source, key, v, f"an integer in {lo}..{hi}", user)
        elif kind == _BOOL:
            if not isinstance(v, bool) and not (isinstance(v, int) and v in (0, 1)):
                raise _bad(source, key, v, "true or false", user)
        elif kind == _STR:
            if not isinstance(v, str) or len(v) > hi:
                raise _bad(source, key, v, f"a string of at most {hi} characters", user)
        elif (not isinstance(v, (list, tuple)) or len(v) > MAX_LIST
              or not all(isinstance(x, int) and not isinstance(x, bool) and lo <= x <= hi for x in v)):
            raise _bad(source, key, v, f"a list of at most {MAX_LIST} integers in {lo}..{hi}", user)
    scale = opts.get("projector_scale")
    if scale is not None and (not isinstance(scale, (list, tuple)) or not 0 < len(scale) <= 3
                              or not all(isinstance(s, str) for s in scale)):
        raise _bad(source, "projector_scale", scale, "a list of P3/P4/P5", user)
    names = opts.get("class_names")
    if names is not None:
        vals = list(names.values()) if isinstance(names, dict) else [names] if isinstance(names, str) else names
        keys = list(names.keys()) if isinstance(names, dict) else []
        if (not isinstance(vals, (list, tuple)) or len(vals) > MAX_CLASSES
                or not all(isinstance(n, str) and len(n) <= MAX_NAME for n in vals)
                or not all(isinstance(k, (int, str)) and not isinstance(k, bool) and _label_key(k) is not None
                           for k in keys)):
            raise _bad(source, "class_names", names, f"a list of at most {MAX_CLASSES} names of at most "
                       f"{MAX_NAME} characters (or a {{label: name}} dict)", user)


def _label_key(k: int | str) -> int | None:
    try:
        i = int(k)
    except ValueError:
        return None
    return i if 0 <= i < MAX_CLASSES else None


def parse_user_args(pairs: list[str] | None = None, **named: Any) -> dict:
    """Command-line settings -> an args dict checked like a checkpoint's. `pairs`: KEY=VALUE strings (VALUE read as
    JSON, else taken as a string); `named`: the dedicated options (resolution=..., num_windows=..., class_names=
    a comma list or a list); None values are left out. Unknown keys are refused with the known ones listed."""
    out: dict = {}
    known = set(ARG_LIMITS) | {"class_names", "projector_scale"}
    for p in pairs or []:
        key, sep, text = p.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--arg {p!r}: expected KEY=VALUE (e.g. --arg num_windows=4)")
        if key not in known:
            raise ConfigError(f"--arg {key}: not an RF-DETR setting the importer reads (known: "
                              f"{', '.join(sorted(known))})")
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text
    for key, v in named.items():
        if v is None:
            continue
        if key == "class_names" and isinstance(v, str):
            v = _read_names(v)
        out[key] = v
    check_args(out, "command line", user=True)
    return out


def _read_names(text: str) -> list[str]:
    """--class-names: a comma list, or @FILE with one name per line (or a JSON list)."""
    if not text.startswith("@"):
        return [n.strip() for n in text.split(",")]
    path = Path(text[1:])
    try:
        body = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--class-names {text}: cannot read the file ({type(e).__name__})") from None
    if body.lstrip().startswith("["):
        try:
            names = json.loads(body)
        except ValueError as e:
            raise ConfigError(f"--class-names {text}: not a JSON list ({e})") from None
        if not isinstance(names, list):
            raise ConfigError(f"--class-names {text}: not a JSON list of names")
        return names
    return [line.strip() for line in body.splitlines() if line.strip()]


# ------------------------------------------------------------------------------------------- COCO label space

COCO_CATEGORIES = {  # COCO 2017 category id -> name (released RF-DETR COCO heads predict these ids)
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train", 8: "truck",
    9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign", 14: "parking meter", 15: "bench",
    16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep", 21: "cow", 22: "elephant", 23: "bear", 24: "zebra",
    25: "giraffe", 27: "backpack", 28: "umbrella", 31: "handbag", 32: "tie", 33: "suitcase", 34: "frisbee",
    35: "skis", 36: "snowboard", 37: "sports ball", 38: "kite", 39: "baseball bat", 40: "baseball glove",
    41: "skateboard", 42: "surfboard", 43: "tennis racket", 44: "bottle", 46: "wine glass", 47: "cup", 48: "fork",
    49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple", 54: "sandwich", 55: "orange", 56: "broccoli",
    57: "carrot", 58: "hot dog", 59: "pizza", 60: "donut", 61: "cake", 62: "chair", 63: "couch",
    64: "potted plant", 65: "bed", 67: "dining table", 70: "toilet", 72: "tv", 73: "laptop", 74: "mouse",
    75: "remote", 76: "keyboard", 77: "cell phone", 78: "microwave", 79: "oven", 80: "toaster", 81: "sink",
    82: "refrigerator", 84: "book", 85: "clock", 86: "vase", 87: "scissors", 88: "teddy bear", 89: "hair drier",
    90: "toothbrush",
}
