"""Import RF-DETR checkpoints (the `rfdetr` package's `.pth` / Lightning `.ckpt`) as edgedet supernets.

RF-DETR's released models were trained with weight-sharing NAS, so they are edgedet supernets with RF-DETR's
dimensions: a windowed DINOv2 ViT, the C2f LayerNorm projector, two-stage query selection, a deformable decoder with
fixed ("lite") reference boxes and heads shared by all layers. edgedet's model reproduces that computation, so the
import is a key mapping plus a SupernetConfig inferred from the checkpoint.

Reading never executes code from the file: `torch.load(weights_only=True)` with only `argparse.Namespace` and
`types.SimpleNamespace` allowed (what RF-DETR stores its `args` as); everything else a checkpoint holds is tensors,
plain containers, numbers and strings. Only what inference uses is kept: query group 0 of the Group-DETR groups and
encoder heads; training-only tensors (the other groups, DINOv2's mask token, the keypoint mask buffer) are dropped and
reported. Any other key, a missing key or a shape that does not fit is an error, never a silent drop.
"""
from __future__ import annotations

import argparse
import io
import math
import pickle
import re
import types
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..backends.base import sha256
from ..checkpoint import expected_shapes
from ..config import SupernetConfig
from ..errors import CheckpointError
from .rfdetr_config import COCO_CATEGORIES, UNUSED_CLASS, check_args, match_layout, setting_name

__all__ = ["ALLOWED_GLOBALS", "ImportReport", "read_rfdetr_checkpoint", "convert_rfdetr", "import_rfdetr"]

# The only Python classes an RF-DETR checkpoint legitimately pickles (legacy and current `args`).
ALLOWED_GLOBALS = (argparse.Namespace, types.SimpleNamespace)

_VIT = "backbone.0.encoder.encoder."
_PROJ = "backbone.0.projector."
_LORA = "backbone.0.encoder.base_model.model."
_VIT_TOP = {
    "embeddings.cls_token": "backbone.cls_token",
    "embeddings.position_embeddings": "backbone.pos_embed",
    "embeddings.patch_embeddings.projection.weight": "backbone.patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "backbone.patch_embed.proj.bias",
    "layernorm.weight": "backbone.norm.weight",
    "layernorm.bias": "backbone.norm.bias",
}
_VIT_BLOCK = {
    "norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight", "norm2.bias": "norm2.bias",
    "attention.output.dense.weight": "attn.proj.weight", "attention.output.dense.bias": "attn.proj.bias",
    "layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma",
    "mlp.fc1.weight": "mlp.fc1.weight", "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight", "mlp.fc2.bias": "mlp.fc2.bias",
}
# RF-DETR's two-stage encoder heads (one per query group) -> edgedet's QuerySelection of group 0
_ENC_HEADS = {"enc_output": "enc_output", "enc_output_norm": "enc_output_norm",
              "enc_out_class_embed": "class_embed", "enc_out_bbox_embed": "bbox_embed"}
# Settings under which RF-DETR computes something edgedet's model does not (value that is NOT supported)
_UNSUPPORTED = [
    ("two_stage", False, "a model without two-stage query selection"),
    ("bbox_reparam", False, "a model without box re-parametrisation (bbox_reparam=False)"),
    ("lite_refpoint_refine", False, "per-layer reference refinement (lite_refpoint_refine=False)"),
    ("layer_norm", False, "a BatchNorm projector (layer_norm=False)"),
    ("rms_norm", True, "an RMSNorm projector"),
    ("segmentation_head", True, "a segmentation head (RF-DETR Seg)"),
    ("use_grouppose_keypoints", True, "a keypoint head"),
    ("dual_projector", True, "a dual projector"),
]


@dataclass
class ImportReport:
    source: Path
    output: Path | None
    config: SupernetConfig
    sha256: str
    model_name: str | None
    rfdetr_version: str | None
    tensors: int  # tensors written
    dropped: dict[str, int] = field(default_factory=dict)  # training-only tensors left out, by kind
    notes: list[str] = field(default_factory=list)  # what was assumed because the checkpoint did not say

    def summary_lines(self) -> list[str]:
        c = self.config
        lines = [
            f"imported {self.source.name} ({self.model_name or 'RF-DETR'}"
            + (f", rfdetr {self.rfdetr_version}" if self.rfdetr_version else "") + f") as supernet '{c.name}'"
            + (f" -> {self.output}" if self.output else ""),
            f"  ViT {c.embed_dim}d x {c.depth} ({c.num_heads} heads, patch {c.patch_size}, position grid "
            f"{c.pos_grid}), taps {c.taps}, global blocks {c.global_blocks}; projector {c.levels} -> {c.hidden_dim}; "
            f"decoder {c.dec_layers} layers; {c.num_queries} queries; {c.num_classes} logits"
            + (" with class names" if c.class_names else ""),
            f"  knobs: patch {c.patch_sizes}, windows {c.windows}, resolution {c.resolutions}, decoder layers "
            f"0..{c.dec_layers}, queries {c.query_counts}",
            f"  {self.tensors} tensors written; training-only tensors dropped: "
            + (", ".join(f"{k} ({v})" for k, v in self.dropped.items()) or "none"),
        ]
        lines += [f"  note: {n}" for n in self.notes]
        return lines


# ----------------------------------------------------------------------------------------------------- reading


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:160]}" if text else type(e).__name__


def read_rfdetr_checkpoint(path: Path | str) -> dict:
    """Load an RF-DETR checkpoint without executing code from it.

    torch's weights-only unpickler, allowing only ALLOWED_GLOBALS besides tensors and plain containers. A file asking
    for any other Python global (e.g. a pickle whose `__reduce__` calls os.system) is refused before anything runs:
    CheckpointError naming the file and the global. A truncated or non-torch file is a one-line CheckpointError too.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    from ..model.pretrained import check_torch_archive

    check_torch_archive(path)
    try:
        with torch.serialization.safe_globals(list(ALLOWED_GLOBALS)), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol warning for files it may refuse anyway
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        glob = re.search(r"GLOBAL\s+([\w.]+)", msg)
        name = glob.group(1) if glob else next(iter(_foreign_globals(path)), None)
        if name and "." not in name:  # torch prints builtins without their module
            name = f"builtins.{name}"
        if name:
            raise CheckpointError(
                f"{path}: refused: the pickle asks for the Python global '{name}', which an RF-DETR checkpoint "
                f"never holds (allowed: tensors, plain containers, argparse.Namespace, types.SimpleNamespace); "
                f"nothing from the file was executed") from None
        detail = msg.split("WeightsUnpickler error:")[-1].strip().splitlines()
        reason = detail[0].strip() if detail and detail[0].strip() else "unpickling error"
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({reason[:160]})") from None
    except Exception as e:  # truncated zip, garbage bytes, EOF, ...
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({_one_line(e)})") from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: not an RF-DETR checkpoint (top level is a {type(obj).__name__}, not a dict)")
    return obj


_STR_OPS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "SHORT_BINSTRING", "BINSTRING", "STRING"}


def _foreign_globals(path: Path) -> list[str]:
    """Python globals a pickle (or a torch zip's data.pkl) refers to, other than torch's, OrderedDict and
    ALLOWED_GLOBALS, found by reading its opcodes (pickletools; nothing is unpickled). Only used to name what was
    refused when the weights-only loader stopped before reaching a global (e.g. at an opcode it does not support)."""
    import pickletools
    import zipfile

    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as z:
                pkl = next((n for n in z.namelist() if n.endswith("data.pkl")), None)
                data = z.read(pkl) if pkl else b""
        else:
            data = path.read_bytes()
    except (OSError, zipfile.BadZipFile, RuntimeError):
        return []
    allowed = {f"{c.__module__}.{c.__qualname__}" for c in ALLOWED_GLOBALS} | {"collections.OrderedDict"}
    found: list[str] = []
    stream = io.BytesIO(data)
    try:
        while stream.tell() < len(data):  # legacy torch files hold several pickles in a row
            strings: list[str] = []
            memo: dict[int, Any] = {}
            last: Any = None
            for op, arg, _ in pickletools.genops(stream):
                if op.name in _STR_OPS:
                    last = arg if isinstance(arg, str) else arg.decode("latin-1", "replace")
                    strings.append(last)
                elif op.name == "MEMOIZE":
                    memo[len(memo)] = last
                elif op.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                    memo[int(arg)] = last
                elif op.name in ("GET", "BINGET", "LONG_BINGET"):
                    last = memo.get(int(arg))
                    if isinstance(last, str):
                        strings.append(last)
                elif op.name in ("GLOBAL", "INST"):
                    found.append(".".join(str(arg).split(" ", 1)))
                elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(f"{strings[-2]}.{strings[-1]}")
                else:
                    last = None
    except Exception:  # malformed or truncated: report what was seen so far
        pass
    return [g for g in dict.fromkeys(found) if not g.startswith("torch.") and g not in allowed]


def _as_dict(obj: Any) -> dict:
    if isinstance(obj, dict):
        return obj
    if isinstance(obj, ALLOWED_GLOBALS):
        return vars(obj)
    return {}


def _options(ckpt: dict, path: Path, user: dict | None, notes: list[str]) -> dict:
    """Model settings: the checkpoint's args (legacy Namespace, SimpleNamespace or dict; Lightning's
    hyper_parameters), overridden by model_config (the architecture dump of newer checkpoints), then by the user's
    `user` settings (command line; each one that replaces a recorded value is noted). The file's values are checked
    against ARG_LIMITS (CheckpointError naming args.KEY) unless the user replaces them."""
    opts: dict = {}
    for key in ("hyper_parameters", "args", "model_config"):
        opts.update({k: v for k, v in _as_dict(ckpt.get(key)).items() if isinstance(k, str) and v is not None})
    user = user or {}
    check_args({k: v for k, v in opts.items() if k not in user}, str(path))
    for k, v in user.items():
        if k in opts and opts[k] != v:
            notes.append(f"args.{k} is {_short(opts[k])} in the checkpoint; used {_short(v)} as given")
        opts[k] = v
    return opts


def _short(v: Any) -> str:
    r = repr(v)
    return r if len(r) <= 40 else r[:37] + "..."


def _state_dict(ckpt: dict, path: Path, notes: list[str]) -> dict[str, Tensor]:
    if isinstance(ckpt.get("model"), dict):
        sd = ckpt["model"]
    elif isinstance(ckpt.get("state_dict"), dict):  # Lightning .ckpt: "model." (and torch.compile's "_orig_mod.")
        sd = {}
        for k, v in ckpt["state_dict"].items():
            if isinstance(k, str) and k.startswith("model."):
                k = k[len("model."):]
                sd[k[len("_orig_mod."):] if k.startswith("_orig_mod.") else k] = v
        if not sd:
            raise CheckpointError(f"{path}: Lightning checkpoint whose state_dict has no 'model.' keys")
        if len(sd) < len(ckpt["state_dict"]):
            notes.append(f"ignored {len(ckpt['state_dict']) - len(sd)} Lightning state_dict keys outside 'model.'")
    elif ckpt and all(isinstance(v, Tensor) for v in ckpt.values()):
        sd = ckpt  # a bare state dict
    else:
        raise CheckpointError(f"{path}: not an RF-DETR checkpoint (no 'model' or 'state_dict' entry; top-level keys: "
                              f"{sorted(map(str, ckpt))[:6]})")
    bad = [k for k, v in sd.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CheckpointError(f"{path}: the model state dict has {len(bad)} non-tensor entries (e.g. {bad[0]!r})")
    return sd


# -------------------------------------------------------------------------------------------- config inference


def _get(opts: dict, key: str, kind: type, path: Path):
    v = opts.get(key)
    if v is None:
        return None
    if kind is int and isinstance(v, bool) or not isinstance(v, kind if kind is not float else (int, float)):
        raise CheckpointError(f"{path}: args.{key} is {v!r}, expected {kind.__name__}")
    return v


def _int_list(opts: dict, key: str, path: Path) -> list[int] | None:
    v = opts.get(key)
    if v is None:
        return None
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
        raise CheckpointError(f"{path}: args.{key} is {v!r}, expected a list of integers")
    return list(v)


def _indices(sd: dict, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := rx.match(k))})


def _count(sd: dict, pattern: str, what: str, path: Path) -> int:
    idx = _indices(sd, pattern)
    if idx != list(range(len(idx))):
        raise CheckpointError(f"{path}: {what} indices are not contiguous from 0: {idx}")
    return len(idx)


def _need(sd: dict, key: str, path: Path, ndim: int | None = None) -> Tensor:
    if key not in sd:
        raise CheckpointError(f"{path}: not an RF-DETR detection checkpoint: tensor {key!r} is missing")
    if ndim is not None and (sd[key].ndim != ndim or 0 in sd[key].shape):
        raise CheckpointError(f"{path}: tensor {key} has shape {tuple(sd[key].shape)}, expected {ndim} non-empty "
                              "dimensions")
    return sd[key]


def _check_supported(sd: dict, opts: dict, path: Path) -> None:
    for key, bad, what in _UNSUPPORTED:
        if key in opts and bool(opts[key]) == bad:
            raise CheckpointError(f"{path}: unsupported RF-DETR variant: {what} ({key}={opts[key]!r})")
    if (opts.get("num_decoder_registers") or 0) > 0:
        raise CheckpointError(f"{path}: unsupported RF-DETR variant: decoder register tokens "
                              f"(num_decoder_registers={opts['num_decoder_registers']})")
    if opts.get("decoder_norm", "LN") != "LN":
        raise CheckpointError(f"{path}: unsupported RF-DETR variant: decoder_norm={opts['decoder_norm']!r} (only LN)")
    prefixes = {"segmentation_head.": "a segmentation head (RF-DETR Seg)", "keypoint": "a keypoint head",
                _LORA: "LoRA adapters on the backbone (merge them into the encoder first)",
                _VIT + "embeddings.register_tokens": "DINOv2 register tokens"}
    for k in sd:
        for p, what in prefixes.items():
            if k.startswith(p) or (p == "keypoint" and "keypoint" in k):
                raise CheckpointError(f"{path}: unsupported RF-DETR variant: {what} (tensor {k})")


def _levels(sd: dict, opts: dict, n_stages: int, path: Path) -> list[str]:
    scale = opts.get("projector_scale")
    if scale is not None:
        if (not isinstance(scale, (list, tuple)) or not scale or any(s not in ("P3", "P4", "P5") for s in scale)
                or list(scale) != sorted(set(scale))):
            raise CheckpointError(f"{path}: unsupported projector_scale {scale!r} (edgedet has P3, P4, P5)")
        levels = list(scale)
    else:  # from the per-tap resampling ops: P3 = 2x2 transposed conv, P5 = strided 3x3 ConvX, P4 = none
        levels = []
        for s in range(n_stages):
            if f"{_PROJ}stages_sampling.{s}.0.0.weight" in sd:
                levels.append("P3")
            elif f"{_PROJ}stages_sampling.{s}.0.0.conv.weight" in sd:
                levels.append("P5")
            else:
                levels.append("P4")
    if len(levels) != n_stages:
        raise CheckpointError(f"{path}: projector_scale {levels} names {len(levels)} levels but the projector has "
                              f"{n_stages} stages")
    return levels


def _class_names(opts: dict, n_logits: int, notes: list[str]) -> tuple[list[str] | None, list[int] | None]:
    """(name of each logit, COCO category id of each logit or None). Only rfdetr's COCO head (91 logits, logit
    index = COCO category id) carries category ids; other heads are mapped onto a dataset by name."""
    coco_head = ([COCO_CATEGORIES.get(i, UNUSED_CLASS) for i in range(n_logits)], list(range(n_logits)))
    names = opts.get("class_names")
    if isinstance(names, dict):  # {label: name}, keys checked by check_args
        by_label = {int(k): v for k, v in names.items()}
        out = [by_label.get(i, UNUSED_CLASS) for i in range(n_logits)]
        return (coco_head if out == coco_head[0] else (out, None))
    if isinstance(names, str):
        names = [names]
    if isinstance(names, (list, tuple)) and names:
        names = list(names)
        coco = [COCO_CATEGORIES[i] for i in sorted(COCO_CATEGORIES)]
        if names == coco and n_logits > max(COCO_CATEGORIES):  # COCO head: logit index = COCO category id
            return coco_head
        if len(names) > n_logits:
            notes.append(f"args.class_names has {len(names)} names for {n_logits} logits; kept the first {n_logits}")
            return names[:n_logits], None
        if len(names) < n_logits:  # RF-DETR heads have num_classes + 1 logits; label i is class_names[i]
            notes.append(f"{n_logits - len(names)} logit(s) beyond the {len(names)} class names are named "
                         f"'{UNUSED_CLASS}'")
        return names + [UNUSED_CLASS] * (n_logits - len(names)), None
    if n_logits == max(COCO_CATEGORIES) + 1:
        notes.append("no class names in the checkpoint; 91 logits taken as COCO category ids (RF-DETR's COCO head)")
        return coco_head
    notes.append("no class names in the checkpoint (--class-names to give them)")
    return None, None


def _text(v: Any, limit: int = 200) -> str | None:
    """A short string field of the checkpoint (model_name, rfdetr_version), or None if absent or not plain text."""
    return v if isinstance(v, str) and 0 < len(v) <= limit and v.isprintable() else None


def _default_resolution(layout, patch: int, pos_grid: int, step: int, path: Path) -> int:
    """The resolution rfdetr runs a checkpoint without `args` at: its layout's default when the position grid is
    that layout's own (rfdetr keeps the patch-14 models' 37 x 37 DINOv2 grid at 560 px), else grid x patch (what
    rfdetr derives the grid from). CheckpointError naming --resolution when neither fits patch x windows."""
    if layout is not None and layout.pos_grid == pos_grid and layout.resolution % step == 0:
        return layout.resolution
    if layout is None or layout.grid_follows_resolution or layout.pos_grid != pos_grid:
        if (pos_grid * patch) % step == 0:
            return pos_grid * patch
    raise CheckpointError(f"{path}: no resolution in the checkpoint, and the position grid ({pos_grid} x patch "
                          f"{patch} = {pos_grid * patch} px) is not a multiple of patch x windows = {step}: give the "
                          f"resolution the model was trained at with --resolution (a multiple of {step})")


def _infer_config(sd: dict, opts: dict, ckpt: dict, path: Path, notes: list[str],
                  user_keys: frozenset = frozenset()) -> tuple[SupernetConfig, int]:
    """(SupernetConfig, queries per group) from the settings recorded in the checkpoint (or given by the user) and,
    where they say nothing, from tensor shapes and the defaults of the rfdetr layout the shapes match (each such
    default is added to `notes`). A resolution that cannot be inferred is an error naming --resolution."""
    cls = _need(sd, _VIT + "embeddings.cls_token", path, 3)
    embed_dim = int(cls.shape[-1])
    depth = _count(sd, re.escape(_VIT) + r"encoder\.layer\.(\d+)\.", "ViT block", path)
    if depth == 0:
        raise CheckpointError(f"{path}: no ViT blocks ({_VIT}encoder.layer.N.*)")
    if embed_dim % 64:
        raise CheckpointError(f"{path}: ViT width {embed_dim} is not a multiple of DINOv2's head size 64")
    num_heads = embed_dim // 64  # every DINOv2 size (S 6, B 12, L 16, g 24 heads) has 64-dim heads
    fc1 = _need(sd, _VIT + "encoder.layer.0.mlp.fc1.weight", path, 2)
    kernel = _need(sd, _VIT + "embeddings.patch_embeddings.projection.weight", path, 4)
    if kernel.shape[-1] != kernel.shape[-2]:
        raise CheckpointError(f"{path}: patch embedding kernel has shape {tuple(kernel.shape)}, expected square")
    patch = int(kernel.shape[-1])
    pos = _need(sd, _VIT + "embeddings.position_embeddings", path, 3)
    pos_grid = math.isqrt(pos.shape[1] - 1) if pos.shape[1] > 1 else 0
    if not pos_grid or pos_grid * pos_grid != pos.shape[1] - 1:
        raise CheckpointError(f"{path}: position embeddings of shape {tuple(pos.shape)} are not 1 + a square grid")
    if "patch_size" in opts and _get(opts, "patch_size", int, path) != patch:
        raise CheckpointError(f"{path}: args.patch_size {opts['patch_size']} but the patch kernel is {patch}x{patch}")

    n_stages = _count(sd, re.escape(_PROJ) + r"stages\.(\d+)\.", "projector stage", path)
    levels = _levels(sd, opts, n_stages, path)
    projector_blocks = _count(sd, re.escape(_PROJ) + r"stages\.0\.0\.m\.(\d+)\.", "projector bottleneck", path)
    class_w = _need(sd, "class_embed.weight", path, 2)
    n_logits, hidden = int(class_w.shape[0]), int(class_w.shape[1])
    dec_layers = _count(sd, r"transformer\.decoder\.layers\.(\d+)\.", "decoder layer", path)
    model_name = _text(ckpt.get("model_name"))
    layout = match_layout(embed_dim, patch, pos_grid, levels, hidden, dec_layers, model_name)
    known = f"rfdetr's {layout.model}" if layout else "RF-DETR's"

    taps = _int_list(opts, "out_feature_indexes", path)
    if taps is None:
        taps = list(layout.taps) if layout else [2, 5, 8, 11] if patch == 14 else [3, 6, 9, 12]
        notes.append(f"no out_feature_indexes in the checkpoint; assumed {known} {taps}")
    if not taps or taps != sorted(set(taps)) or taps[0] < 1 or taps[-1] > depth:
        raise CheckpointError(f"{path}: out_feature_indexes {taps} are not increasing stage numbers in 1..{depth}")
    # RF-DETR: windowed blocks = {0..last tap} minus the tap numbers used as 0-based block ids; the rest are global
    windowed = _int_list(opts, "window_block_indexes", path)
    if windowed is None:
        windowed = sorted(set(range(taps[-1] + 1)) - set(taps))
    global_blocks = [b for b in range(depth) if b not in set(windowed)]

    if "dec_layers" in opts and _get(opts, "dec_layers", int, path) != dec_layers:
        notes.append(f"args.dec_layers is {opts['dec_layers']} but the checkpoint has {dec_layers} decoder layers; "
                     "imported all of them")
    sa_heads = _get(opts, "sa_nheads", int, path)
    ca_heads = _get(opts, "ca_nheads", int, path)
    if sa_heads is None or ca_heads is None:
        sa_heads, ca_heads = sa_heads or max(1, hidden // 32), ca_heads or max(1, hidden // 16)
        notes.append(f"no sa_nheads/ca_nheads in the checkpoint; assumed RF-DETR's {sa_heads}/{ca_heads}")
    n_points = _get(opts, "dec_n_points", int, path)
    ffn_dim = _get(opts, "dim_feedforward", int, path) or 2048
    if dec_layers:
        aw = _need(sd, "transformer.decoder.layers.0.cross_attn.attention_weights.weight", path, 2).shape[0]
        if n_points is None:
            n_points = aw // (ca_heads * len(levels))
        if not n_points or aw != ca_heads * len(levels) * n_points:
            raise CheckpointError(f"{path}: decoder attention_weights has {aw} rows, expected heads x levels x points "
                                  f"= {ca_heads} x {len(levels)} x {n_points}")
        ffn_dim = int(_need(sd, "transformer.decoder.layers.0.linear1.weight", path, 2).shape[0])
    n_points = n_points or 2

    rows = int(_need(sd, "query_feat.weight", path, 2).shape[0])
    num_queries = _get(opts, "num_queries", int, path)
    groups = _get(opts, "group_detr", int, path)
    if num_queries is None:
        if groups is None:
            groups = 13
            notes.append("no num_queries/group_detr in the checkpoint; assumed RF-DETR's 13 query groups "
                         "(--num-queries or --group-detr to say otherwise)")
        if rows % groups:
            raise CheckpointError(f"{path}: {rows} query rows do not split into group_detr={groups} groups "
                                  "(give --num-queries or --group-detr)")
        num_queries = rows // groups
    if not 0 < num_queries <= rows:
        raise CheckpointError(f"{path}: num_queries {num_queries} but query_feat has {rows} rows")

    windows = _get(opts, "num_windows", int, path)
    if windows is None:
        windows = layout.windows if layout else 4 if patch == 14 else 2
        notes.append(f"no num_windows in the checkpoint; assumed {known} {windows} (--num-windows to say otherwise)")
    step = patch * windows
    resolution = _get(opts, "resolution", int, path)
    if resolution is None:
        resolution = _default_resolution(layout, patch, pos_grid, step, path)
        own_default = layout and layout.pos_grid == pos_grid and not layout.grid_follows_resolution
        how = f"{layout.model}'s default" if own_default else "the position grid's"
        notes.append(f"no resolution in the checkpoint; assumed {how} {resolution} (--resolution to say otherwise)")
    elif resolution % step:
        name = setting_name("resolution", "resolution" in user_keys)
        raise CheckpointError(f"{path}: {name} {resolution} is not a multiple of patch x windows = {patch} x "
                              f"{windows} = {step}")
    grid = resolution // patch
    names, cat_ids = _class_names(opts, n_logits, notes)

    if model_name and model_name.startswith("RFDETR"):  # RFDETRNano -> rfdetr-nano, RFDETRSmall -> rfdetr-small
        name = "-".join(["rfdetr"] + [w.lower() for w in re.findall(r"[A-Z][a-z0-9]*", model_name[len("RFDETR"):])])
    elif model_name:
        name = re.sub(r"[^\w.-]+", "-", model_name).strip("-").lower() or "rfdetr"
    elif layout and layout.pos_grid == pos_grid and layout.dec_layers == dec_layers:
        name = layout.name
    else:
        name = "rfdetr-custom"
    try:
        cfg = SupernetConfig(
            name=name, embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=fc1.shape[0] / embed_dim,
            patch_size=patch, pos_grid=pos_grid, global_blocks=global_blocks, taps=taps, pos_antialias=True,
            levels=levels, hidden_dim=hidden, projector_blocks=projector_blocks, dec_layers=dec_layers,
            sa_heads=sa_heads, ca_heads=ca_heads, n_points=n_points, ffn_dim=ffn_dim, num_queries=num_queries,
            num_classes=n_logits, class_names=names, category_ids=cat_ids, patch_sizes=[patch],
            windows=sorted({w for w in (1, 2, 4) if grid % w == 0} | {windows}),
            resolutions=[r for r in ((resolution // step + k) * step for k in range(-5, 6)) if r > 0],
            query_counts=sorted({q for q in (50, 100, 200, 300) if q < num_queries} | {num_queries}),
            max_resolution=max(1280, resolution + 5 * step),
        )
    except ValueError as e:  # pydantic ValidationError
        raise CheckpointError(f"{path}: the inferred supernet config is invalid ({_one_line(e)})") from None
    return cfg, num_queries


# ---------------------------------------------------------------------------------------------------- mapping


def _map_key(k: str) -> tuple[str | None, str | None]:
    """(edgedet key, None) for a tensor inference uses; (None, kind) for a training-only one; (None, None) if
    unknown. Keys that need more than a rename (q/k/v, query rows) are handled by the caller."""
    if k.startswith(_VIT):
        r = k[len(_VIT):]
        if r in _VIT_TOP:
            return _VIT_TOP[r], None
        if r == "embeddings.mask_token":
            return None, "mask_token"
        if m := re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)", r):
            if m.group(2) in _VIT_BLOCK:
                return f"backbone.blocks.{m.group(1)}.{_VIT_BLOCK[m.group(2)]}", None
        return None, None
    if k.startswith(_PROJ):
        r = k[len(_PROJ):]
        # RF-DETR wraps each tap's resampling op in a Sequential: stages_sampling.{level}.{tap}.0.* -> .{tap}.*
        if m := re.fullmatch(r"stages_sampling\.(\d+)\.(\d+)\.0\.(.+)", r):
            return f"projector.stages_sampling.{m.group(1)}.{m.group(2)}.{m.group(3)}", None
        if r.startswith("stages."):
            return "projector." + r, None
        return None, None
    if k.startswith("transformer.decoder."):
        r = k[len("transformer.decoder."):]
        if r.startswith(("layers.", "norm.", "ref_point_head.")):
            return "decoder." + r, None
        return None, None
    if m := re.fullmatch(r"transformer\.(enc_output|enc_output_norm|enc_out_class_embed|enc_out_bbox_embed)"
                         r"\.(\d+)\.(.+)", k):
        if int(m.group(2)) == 0:
            return f"query_select.0.{_ENC_HEADS[m.group(1)]}.{m.group(3)}", None
        return None, "encoder heads of query groups 1+"
    if k.startswith(("class_embed.", "bbox_embed.")):
        return k, None
    if k == "_kp_active_mask":
        return None, "_kp_active_mask"
    return None, None


def convert_rfdetr(ckpt: dict, path: Path | str = "checkpoint", args: dict | None = None
                   ) -> tuple[SupernetConfig, dict[str, Tensor], dict[str, int], list[str]]:
    """RF-DETR checkpoint dict -> (SupernetConfig, edgedet state dict (query group 0, float32), dropped training-only
    tensors by kind, notes). `args`: settings the user states (rfdetr's arg names, checked by
    rfdetr_config.parse_user_args), replacing or completing the checkpoint's. Unknown keys, missing keys, shape
    mismatches and settings outside rfdetr_config.ARG_LIMITS raise CheckpointError."""
    path = Path(path)
    notes: list[str] = []
    sd = _state_dict(ckpt, path, notes)
    opts = _options(ckpt, path, args, notes)
    _check_supported(sd, opts, path)
    cfg, nq = _infer_config(sd, opts, ckpt, path, notes, frozenset(args or ()))

    out: dict[str, Tensor] = {}
    source: dict[str, str] = {}  # edgedet key -> RF-DETR key, for error messages
    qkv: dict[tuple[int, str], dict[str, Tensor]] = {}
    dropped: dict[str, int] = {}
    unknown: list[str] = []
    for k, v in sd.items():
        if m := re.fullmatch(re.escape(_VIT) + r"encoder\.layer\.(\d+)\.attention\.attention\.(query|key|value)\."
                             r"(weight|bias)", k):
            qkv.setdefault((int(m.group(1)), m.group(3)), {})[m.group(2)] = v
            continue
        if k in ("query_feat.weight", "refpoint_embed.weight"):
            new = k[: -len(".weight")]
            out[new], source[new] = v[:nq], k
            if v.shape[0] > nq:
                dropped[f"{new} rows of groups 1+"] = v.shape[0] - nq
            continue
        new, kind = _map_key(k)
        if new is not None:
            out[new], source[new] = v, k
        elif kind is not None:
            dropped[kind] = dropped.get(kind, 0) + 1
        else:
            unknown.append(k)
    if unknown:
        raise CheckpointError(f"{path}: {len(unknown)} tensor(s) edgedet cannot map (e.g. {', '.join(unknown[:4])})")
    for (i, kind), parts in sorted(qkv.items()):
        if set(parts) != {"query", "key", "value"}:
            raise CheckpointError(f"{path}: ViT block {i}: incomplete query/key/value {kind} (have {sorted(parts)})")
        new = f"backbone.blocks.{i}.attn.qkv.{kind}"
        out[new] = torch.cat([parts["query"], parts["key"], parts["value"]], 0)
        source[new] = f"{_VIT}encoder.layer.{i}.attention.attention.{{query,key,value}}.{kind}"

    own = expected_shapes(cfg)
    missing = [k for k in own if k not in out]
    extra = [source[k] for k in out if k not in own]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensor(s) missing for edgedet's {', '.join(missing[:4])}")
        if extra:
            parts.append(f"{len(extra)} tensor(s) without a place in edgedet's model: {', '.join(extra[:4])}")
        raise CheckpointError(f"{path}: checkpoint does not fit the inferred config: " + "; ".join(parts))
    bad = [f"{source[k]} {tuple(out[k].shape)} vs {tuple(shape)}" for k, shape in own.items()
           if tuple(out[k].shape) != tuple(shape)]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} shape mismatch(es) with the inferred config: {'; '.join(bad[:3])}")
    out = {k: (v.float() if v.is_floating_point() else v).contiguous() for k, v in out.items()}
    return cfg, out, dropped, notes


def import_rfdetr(checkpoint: Path | str, output: Path | str | None = None,
                  args: dict | None = None) -> tuple[Any, ImportReport]:
    """Read an RF-DETR checkpoint and return (edgedet Supernet in eval mode, report); with `output`, also write it
    (atomically) as an edgedet safetensors checkpoint (metadata: source file name and sha256, rfdetr version, model
    name). `args`: settings the checkpoint lacks, or replacements, by rfdetr's arg names (see convert_rfdetr)."""
    from ..checkpoint import load_state, save_supernet
    from ..model.supernet import Supernet

    path = Path(checkpoint)
    ckpt = read_rfdetr_checkpoint(path)
    cfg, sd, dropped, notes = convert_rfdetr(ckpt, path, args)
    net = Supernet(cfg)
    load_state(net, sd, path)
    net.eval()
    version, model_name = _text(ckpt.get("rfdetr_version")), _text(ckpt.get("model_name"))
    rep = ImportReport(source=path, output=Path(output) if output else None, config=cfg, sha256=sha256(path),
                       model_name=model_name, rfdetr_version=version, tensors=len(sd), dropped=dropped, notes=notes)
    net.meta = {"source": "rfdetr", "source_file": path.name, "source_sha256": rep.sha256,
                "rfdetr_version": version, "model_name": model_name, "dropped": dropped, "notes": notes}
    if output:
        save_supernet(net, Path(output), meta=net.meta)
    return net, rep
