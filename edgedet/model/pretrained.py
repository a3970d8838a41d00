"""Loading DINOv2 checkpoints (torch-hub or Hugging Face layout) into edgedet's ViT.

edgedet's ViT uses the DINOv2 torch-hub parameter names, without mask token and
register tokens.  This module reads a checkpoint file safely (safetensors, or
``torch.load(weights_only=True)`` -- never full unpickling), converts it to that
layout, and adapts it to the target model: position-grid resize (bicubic), patch
kernel resize (FlexiViT PI-resize) and block truncation.
"""

from __future__ import annotations

import functools
import math
import pickle
import re
from pathlib import Path
from typing import Literal, TypedDict

import torch
import torch.nn.functional as F
from torch import Tensor

from edgedet.errors import CheckpointError

__all__ = [
    "PretrainedError",
    "ConversionReport",
    "read_state_dict",
    "detect_layout",
    "convert_dinov2",
    "pi_resize_patch_kernel",
    "resize_pos_embed",
    "load_dinov2_into",
]

Layout = Literal["torchhub", "hf"]

_TORCH_SUFFIXES = {".pth", ".pt", ".bin", ".ckpt"}
_CONTAINER_KEYS = ("model", "state_dict", "teacher")
_VIT_NAMES = {384: "ViT-S", 768: "ViT-B", 1024: "ViT-L", 1536: "ViT-g"}
_BLOCK_PARAMS = (
    "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias",
    "attn.proj.weight", "attn.proj.bias", "ls1.gamma", "norm2.weight", "norm2.bias",
    "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias", "ls2.gamma",
)
_TOP_PARAMS = (
    "cls_token", "pos_embed", "patch_embed.proj.weight", "patch_embed.proj.bias",
    "norm.weight", "norm.bias",
)
# Hugging Face -> torch-hub names (block-relative and top-level); q/k/v handled apart.
_HF_BLOCK_MAP = {
    "norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight", "norm2.bias": "norm2.bias",
    "attention.output.dense.weight": "attn.proj.weight",
    "attention.output.dense.bias": "attn.proj.bias",
    "attention.o_proj.weight": "attn.proj.weight",
    "attention.o_proj.bias": "attn.proj.bias",
    "layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma",
    "mlp.fc1.weight": "mlp.fc1.weight", "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight", "mlp.fc2.bias": "mlp.fc2.bias",
}
_HF_TOP_MAP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_HF_DROP = {"embeddings.mask_token", "embeddings.register_tokens"}
_HUB_DROP = {"mask_token", "register_tokens"}


class PretrainedError(CheckpointError, ValueError):
    """A checkpoint cannot be read, converted or loaded (message: one line, naming the file)."""


class ConversionReport(TypedDict):
    layout: Layout
    prefix: str  # stripped key prefix, e.g. "backbone." or "dinov2."
    embed_dim: int
    dropped: list[str]  # source keys not carried over (mask/register tokens, heads, ...)
    num_register_tokens: int
    source_grid: int
    grid: int
    grid_resized: bool
    source_patch_size: int
    patch_size: int
    patch_resized: bool
    source_depth: int
    depth: int
    depth_truncated: bool


# --------------------------------------------------------------------------- reading


def read_state_dict(path: Path) -> dict[str, Tensor]:
    """Read a flat ``name -> tensor`` dict from ``.safetensors`` or ``.pth/.pt/.bin/.ckpt``.

    Torch files are read with ``weights_only=True`` only; files holding arbitrary Python
    objects are refused.  ``{"model": sd}``, ``{"state_dict": sd}`` and ``{"teacher": sd}``
    wrappers (possibly nested) are unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise PretrainedError(f"{path}: no such checkpoint file")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            obj: object = load_file(str(path), device="cpu")
        except Exception as e:  # SafetensorError, OSError, ...
            raise PretrainedError(f"{path}: corrupt or unreadable safetensors file ({_one_line(e)})") from None
    elif suffix in _TORCH_SUFFIXES:
        obj = _torch_load_safe(path)
    else:
        raise PretrainedError(
            f"{path}: unsupported checkpoint extension {suffix!r} (expected .safetensors, .pth, .pt, .bin, .ckpt)"
        )
    return _unwrap(obj, path)


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}" if text else type(e).__name__


def check_torch_archive(path: Path) -> None:
    """Refuse a torch zip archive that could expand past its own size before torch.load reads it: torch.save
    stores every record uncompressed, so a compressed record (a zip bomb) or records whose sizes add up to more than
    the file are refused (PretrainedError naming the record). Legacy (non-zip) files are left to torch.load."""
    import zipfile

    try:
        if not zipfile.is_zipfile(path):
            return
        with zipfile.ZipFile(path) as z:
            infos = z.infolist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return  # not a readable zip: torch.load reports it
    bad = next((i for i in infos if i.compress_type != zipfile.ZIP_STORED), None)
    if bad is not None:
        raise PretrainedError(f"{path}: refused: record {bad.filename[:80]!r} is compressed (method "
                              f"{bad.compress_type}); torch.save never compresses, and such a record can expand to "
                              "any size")
    total, size = sum(i.file_size for i in infos), path.stat().st_size
    if total > size:
        raise PretrainedError(f"{path}: refused: its records claim {total} bytes in a {size}-byte file")


def _torch_load_safe(path: Path) -> object:
    import warnings

    check_torch_archive(path)
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols of files it then refuses anyway
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        msg = str(e)
        glob = re.search(r"GLOBAL\s+([\w.]+)", msg)
        if glob:
            raise PretrainedError(
                f"{path}: unpickling refused, the file holds non-tensor Python objects ({glob.group(1)}); "
                "re-save it as a plain dict of tensors or as .safetensors"
            ) from None
        detail = msg.split("WeightsUnpickler error:")[-1].strip().splitlines()
        reason = detail[0].strip() if detail and detail[0].strip() else "unpickling error"
        raise PretrainedError(
            f"{path}: corrupt file or pickle content refused by the weights-only loader ({reason})"
        ) from None
    except Exception as e:  # RuntimeError (bad zip), EOFError, KeyError, ...
        raise PretrainedError(f"{path}: corrupt or unreadable checkpoint ({_one_line(e)})") from None


def _unwrap(obj: object, path: Path) -> dict[str, Tensor]:
    for _ in range(4):
        if not isinstance(obj, dict):
            break
        inner = next((obj[k] for k in _CONTAINER_KEYS if isinstance(obj.get(k), dict)), None)
        if inner is None or all(isinstance(v, Tensor) for v in obj.values()):
            break
        obj = inner
    if not isinstance(obj, dict) or not obj:
        raise PretrainedError(f"{path}: not a state dict (got {type(obj).__name__})")
    bad = [k for k, v in obj.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise PretrainedError(
            f"{path}: not a state dict ({len(bad)} non-tensor entries, e.g. {bad[0]!r} of type {type(obj[bad[0]]).__name__})"
        )
    return dict(obj)


# ----------------------------------------------------------------------- conversion


def _locate(sd: dict[str, Tensor]) -> tuple[Layout, str]:
    """Find the backbone: its layout and key prefix (via the CLS token key)."""
    found: list[tuple[Layout, str]] = []
    for k in sd:
        if k.endswith("embeddings.cls_token"):
            found.append(("hf", k[: -len("embeddings.cls_token")]))
        elif k.endswith("cls_token"):
            found.append(("torchhub", k[: -len("cls_token")]))
    found = [(lay, p) for lay, p in found if p == "" or p.endswith(".")]
    if not found:
        raise PretrainedError("not a DINOv2 state dict: no 'cls_token' / 'embeddings.cls_token' key")
    if len(found) > 1:  # e.g. training checkpoint with student.* and teacher.*
        teacher = [f for f in found if "teacher" in f[1]]
        found = teacher or sorted(found, key=lambda f: len(f[1]))
    return found[0]


VIT_LIMITS = dict(dim=8192, depth=64, patch=64, grid=512, registers=64, mlp_hidden=65536)


def check_vit_tensor(t: Tensor, name: str, ndim: int, empty_ok: bool = False) -> Tensor:
    """`t` with `ndim` non-empty dimensions (empty ones allowed with empty_ok: e.g. zero register tokens), else
    PretrainedError naming it (a file's shapes decide what is built)."""
    if not isinstance(t, Tensor) or t.ndim != ndim or (0 in t.shape and not empty_ok):
        shape = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise PretrainedError(f"tensor {name} has shape {shape}, expected {ndim} non-empty dimensions")
    return t


def check_vit_dims(**dims: int) -> None:
    """Each of dim, depth, patch, grid, registers, mlp_hidden given within VIT_LIMITS, else PretrainedError: what a
    file's shapes make the reader build is bounded."""
    for k, v in dims.items():
        lo = 0 if k == "registers" else 1
        if not lo <= int(v) <= VIT_LIMITS[k]:
            raise PretrainedError(f"ViT {k} {int(v)} read from the file's shapes is outside {lo}..{VIT_LIMITS[k]}")


def detect_layout(sd: dict[str, Tensor]) -> Layout:
    """``"torchhub"`` (``cls_token``, ``blocks.N...``) or ``"hf"`` (``embeddings.cls_token``, ``encoder.layer.N...``)."""
    return _locate(sd)[0]


def _hub_from_hf(sd: dict[str, Tensor], dropped: list[str]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    qkv: dict[tuple[int, str], dict[str, Tensor]] = {}
    unknown: list[str] = []
    for k, v in sd.items():
        if k in _HF_TOP_MAP:
            out[_HF_TOP_MAP[k]] = v
        elif k in _HF_DROP:
            dropped.append(k)
        elif m := re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)", k):
            i, rest = int(m.group(1)), m.group(2)
            # files on the Hub: attention.attention.{query,key,value}; transformers >= 5 in memory: attention.{q,k,v}_proj
            if a := re.fullmatch(r"attention\.(?:attention\.(query|key|value)|(q|k|v)_proj)\.(weight|bias)", rest):
                part = a.group(1) or {"q": "query", "k": "key", "v": "value"}[a.group(2)]
                qkv.setdefault((i, a.group(3)), {})[part] = v
            elif rest in _HF_BLOCK_MAP:
                out[f"blocks.{i}.{_HF_BLOCK_MAP[rest]}"] = v
            elif rest.startswith("mlp.weights_"):
                raise PretrainedError(f"SwiGLU MLP ({k}) is not supported: edgedet's ViT uses a plain GELU MLP")
            else:
                unknown.append(k)
        else:
            unknown.append(k)
    if unknown:
        raise PretrainedError(f"unrecognised Hugging Face DINOv2 keys: {unknown[:5]}")
    for (i, kind), parts in qkv.items():
        if set(parts) != {"query", "key", "value"}:
            raise PretrainedError(f"encoder.layer.{i}: incomplete query/key/value {kind} (have {sorted(parts)})")
        out[f"blocks.{i}.attn.qkv.{kind}"] = torch.cat([parts["query"], parts["key"], parts["value"]], 0)
    return out


def _hub_clean(sd: dict[str, Tensor], dropped: list[str]) -> dict[str, Tensor]:
    out: dict[str, Tensor] = {}
    for k, v in sd.items():
        if k in _HUB_DROP or k.startswith("head."):
            dropped.append(k)
            continue
        if m := re.fullmatch(r"blocks\.\d+\.(\d+)\.(.+)", k):  # chunked blocks (training ckpts)
            k = f"blocks.{m.group(1)}.{m.group(2)}"
        if re.fullmatch(r"blocks\.\d+\.mlp\.w(12|3)\.(weight|bias)", k):
            raise PretrainedError(f"SwiGLU MLP ({k}) is not supported: edgedet's ViT uses a plain GELU MLP")
        out[k] = v
    return out


def _count_blocks(sd: dict[str, Tensor]) -> int:
    idx = {int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))}
    if idx != set(range(len(idx))):
        raise PretrainedError(f"block indices are not contiguous from 0: {sorted(idx)}")
    return len(idx)


def resize_pos_embed(pos_embed: Tensor, grid: int) -> Tensor:
    """Resize ``[1, 1+g*g, D]`` position embeddings to ``[1, 1+grid*grid, D]``.

    The CLS position is kept as is; the patch grid is resized bicubically
    (``align_corners=False``, antialiased when downsampling).
    """
    n = pos_embed.shape[1] - 1
    g = math.isqrt(n)
    if g * g != n:
        raise PretrainedError(f"pos_embed has {n} patch positions, not a square grid")
    if g == grid:
        return pos_embed
    cls, patch = pos_embed[:, :1], pos_embed[:, 1:]
    d = patch.shape[-1]
    x = patch.float().reshape(1, g, g, d).permute(0, 3, 1, 2)
    x = F.interpolate(x, size=(grid, grid), mode="bicubic", align_corners=False, antialias=grid < g)
    x = x.permute(0, 2, 3, 1).reshape(1, grid * grid, d).to(pos_embed.dtype)
    return torch.cat([cls, x], 1)


@functools.lru_cache(maxsize=64)
def _pi_matrix(p: int, new_p: int, device: torch.device, dtype: torch.dtype) -> Tensor:
    """``pinv(B^T)`` [new_p^2, p^2], B = bilinear resize p x p -> new_p x new_p (computed in float64 on CPU)."""
    basis = torch.eye(p * p, dtype=torch.float64).reshape(p * p, 1, p, p)
    bt = F.interpolate(basis, size=(new_p, new_p), mode="bilinear", align_corners=False, antialias=False)
    pinv = torch.linalg.pinv(bt.reshape(p * p, new_p * new_p))  # rows of bt = columns of B
    return pinv.to(device=device, dtype=dtype)


def pi_resize_patch_kernel(weight: Tensor, new_size: int) -> Tensor:
    """Resize a patch-embedding kernel ``[..., p, p]`` to ``[..., new_size, new_size]`` (FlexiViT PI-resize).

    With ``B`` the bilinear resize (``F.interpolate``, ``align_corners=False``, no antialias)
    of a p x p patch to p' x p', the new kernel is ``w' = pinv(B^T) w`` per (out, in) channel.
    Property: for upsampled patches ``x' = resize(x)``, ``<x', w'> == <x, w>`` exactly (up to
    float error) when ``p' >= p``; for ``p' < p`` it is the least-squares solution.

    The matrix is computed once per ``(p, p', device)`` (cached); the resize is one matmul and is
    differentiable w.r.t. ``weight``.  Works in float64 (float32 on MPS), returns ``weight.dtype``.
    """
    p = weight.shape[-1]
    if weight.ndim < 2 or weight.shape[-2] != p:
        raise ValueError(f"expected a square kernel [..., p, p], got {tuple(weight.shape)}")
    if new_size == p:
        return weight
    work = torch.float32 if weight.device.type == "mps" else torch.float64
    mat = _pi_matrix(p, new_size, weight.device, work)
    flat = weight.reshape(-1, p * p).to(work) @ mat.T
    return flat.reshape(*weight.shape[:-2], new_size, new_size).to(weight.dtype)


def convert_dinov2(
    sd: dict[str, Tensor], *, patch_size: int, grid: int, depth: int | None = None
) -> tuple[dict[str, Tensor], ConversionReport]:
    """Convert a DINOv2 state dict (torch-hub or HF layout, any prefix) to edgedet's ViT layout.

    Drops mask/register tokens and non-backbone keys, resizes the position grid to
    ``grid`` and the patch kernel to ``patch_size`` if needed, and keeps the first
    ``depth`` blocks if given.
    """
    layout, prefix = _locate(sd)
    dropped = [k for k in sd if not k.startswith(prefix)]
    inner = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    reg = inner.get("embeddings.register_tokens" if layout == "hf" else "register_tokens")
    inner_dropped: list[str] = []
    out = _hub_from_hf(inner, inner_dropped) if layout == "hf" else _hub_clean(inner, inner_dropped)
    dropped += [prefix + k for k in inner_dropped]

    src_depth = _count_blocks(out)
    keep = src_depth if depth is None else depth
    if keep > src_depth:
        raise PretrainedError(f"checkpoint has {src_depth} blocks but depth={depth} was requested")
    if keep < src_depth:
        out = {k: v for k, v in out.items() if not (m := re.match(r"blocks\.(\d+)\.", k)) or int(m.group(1)) < keep}

    expected = set(_TOP_PARAMS) | {f"blocks.{i}.{n}" for i in range(keep) for n in _BLOCK_PARAMS}
    missing, extra = sorted(expected - out.keys()), sorted(out.keys() - expected)
    if missing or extra:
        raise PretrainedError(f"unexpected DINOv2 {layout} checkpoint: missing {missing[:5]}, unrecognised {extra[:5]}")

    embed_dim = check_vit_tensor(out["cls_token"], prefix + "cls_token", 3).shape[-1]
    pos = check_vit_tensor(out["pos_embed"], prefix + "pos_embed", 3)
    kernel = check_vit_tensor(out["patch_embed.proj.weight"], prefix + "patch_embed.proj.weight", 4)
    if kernel.shape[-1] != kernel.shape[-2]:
        raise PretrainedError(f"patch kernel of shape {tuple(kernel.shape)} is not square")
    check_vit_dims(dim=embed_dim, depth=src_depth, patch=kernel.shape[-1], grid=math.isqrt(max(0, pos.shape[1] - 1)))
    src_grid = math.isqrt(pos.shape[1] - 1)
    out["pos_embed"] = resize_pos_embed(out["pos_embed"], grid)
    src_patch = out["patch_embed.proj.weight"].shape[-1]
    out["patch_embed.proj.weight"] = pi_resize_patch_kernel(out["patch_embed.proj.weight"], patch_size)

    report = ConversionReport(
        layout=layout, prefix=prefix, embed_dim=embed_dim, dropped=sorted(dropped),
        num_register_tokens=0 if reg is None else reg.shape[1],
        source_grid=src_grid, grid=grid, grid_resized=src_grid != grid,
        source_patch_size=src_patch, patch_size=patch_size, patch_resized=src_patch != patch_size,
        source_depth=src_depth, depth=keep, depth_truncated=keep < src_depth,
    )
    return out, report


# -------------------------------------------------------------------------- loading


def load_dinov2_into(
    vit_module: torch.nn.Module,
    path: Path,
    *,
    patch_size: int | None = None,
    grid: int | None = None,
    depth: int | None = None,
    embed_dim: int | None = None,
) -> ConversionReport:
    """Read a DINOv2 checkpoint, convert it for ``vit_module`` and load it with ``strict=True``.

    ``patch_size``/``grid``/``depth``/``embed_dim`` default to the module's attributes of
    the same names.  Any shape or key mismatch raises :class:`PretrainedError`.
    """
    path = Path(path)

    def attr(name: str, given: int | None) -> int:
        if given is not None:
            return given
        if not hasattr(vit_module, name):
            raise PretrainedError(f"{type(vit_module).__name__} has no attribute {name!r}; pass {name}=...")
        return int(getattr(vit_module, name))

    p, g, d, dim = attr("patch_size", patch_size), attr("grid", grid), attr("depth", depth), attr("embed_dim", embed_dim)
    try:
        sd, report = convert_dinov2(read_state_dict(path), patch_size=p, grid=g, depth=d)
    except PretrainedError as e:
        msg = str(e)
        raise PretrainedError(msg if msg.startswith(str(path)) else f"{path}: {msg}") from None
    except (KeyError, IndexError, ValueError, RuntimeError, TypeError) as e:  # a layout the checks missed
        raise PretrainedError(f"{path}: unexpected DINOv2 tensor layout ({_one_line(e)})") from None

    src_dim = report["embed_dim"]
    if src_dim != dim:
        raise PretrainedError(
            f"{path}: file is {_VIT_NAMES.get(src_dim, 'ViT')} (embed dim {src_dim}) but the model's embed_dim is {dim}"
        )
    target = vit_module.state_dict()
    missing, extra = sorted(target.keys() - sd.keys()), sorted(sd.keys() - target.keys())
    if missing or extra:
        raise PretrainedError(f"{path}: key mismatch with the model: missing {missing[:5]}, unexpected {extra[:5]}")
    for k, v in sd.items():
        if v.shape != target[k].shape:
            raise PretrainedError(
                f"{path}: shape mismatch for {k!r}: checkpoint {tuple(v.shape)} vs model {tuple(target[k].shape)}"
            )
    vit_module.load_state_dict(sd, strict=True)
    return report
