"""Frozen teachers for feature distillation (DSI): DINOv2 / DINOv3 ViTs from local files (torch-hub or Hugging Face
layouts), an edgedet supernet checkpoint, or a timm model when timm is installed.

A teacher maps images [B,3,H,W] RGB in [0,1] to patch features [B, dim, H/patch, W/patch] (normalisation inside).
`input_size(grid)` is the square input side whose feature grid is `grid` (a VFM's grid is matched to the student's,
as in RT-DETRv4); a teacher with `fixed_size` always sees that input, and its map is resized to the student's grid.
Files are read without unpickling anything (safetensors, or torch.load(weights_only=True)).
"""
from __future__ import annotations

import math
import re
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, ConfigError, MissingExtraError
from ..model.pretrained import (PretrainedError, _locate, check_vit_dims, check_vit_tensor, convert_dinov2,
                                read_state_dict)
from ..model.supernet import IMAGENET_MEAN, IMAGENET_STD
from ..model.vit import Block

TEACHER_TYPES = ("auto", "dinov2", "dinov3", "edgedet", "timm")


class Teacher(nn.Module):
    """Base: frozen, eval mode, no gradients. Subclasses set kind, dim, patch and implement _features."""

    kind = "teacher"
    fixed_size: int | None = None

    def __init__(self, dim: int, patch: int, source: str, sha: str,
                 mean: tuple = IMAGENET_MEAN, std: tuple = IMAGENET_STD):
        super().__init__()
        self.dim, self.patch, self.source, self.sha = dim, patch, source, sha
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def input_size(self, grid: int) -> int:
        return self.fixed_size or grid * self.patch

    def freeze(self) -> "Teacher":
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)
        return self

    def train(self, mode: bool = True) -> "Teacher":  # a teacher never leaves eval mode
        return super().train(False)

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images [B,3,H,W] RGB in [0,1] -> [B, dim, h, w] float32."""
        return self._features((images - self.mean) / self.std).float()

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def describe(self) -> dict:
        return {"kind": self.kind, "source": self.source, "sha256": self.sha, "dim": self.dim, "patch": self.patch}


# ------------------------------------------------------------------------------------------------- ViT teachers

def rope_tables(gh: int, gw: int, periods: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """DINOv3 axial RoPE for a gh x gw patch grid -> (sin, cos) [gh*gw, head_dim]: patch centres normalised to
    [-1, 1] per axis, angle = 2 pi coord / period for (y, x) x periods, the half repeated twice."""
    dev = periods.device
    ys = (torch.arange(gh, device=dev, dtype=torch.float32) + 0.5) / gh * 2 - 1
    xs = (torch.arange(gw, device=dev, dtype=torch.float32) + 0.5) / gw * 2 - 1
    coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2)
    angles = (2 * math.pi * coords[:, :, None] / periods.float()[None, None]).flatten(1)
    angles = torch.cat([angles, angles], -1)
    return angles.sin(), angles.cos()


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, -1)
    return torch.cat([-b, a], -1)


class TeacherBlock(Block):
    """edgedet's ViT block (DINOv2 names) with optional RoPE on the patch tokens (the last n of the sequence)."""

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        b, n, c = x.shape
        heads = self.attn.heads
        q, k, v = self.attn.qkv(self.norm1(x)).reshape(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
        if rope is not None:
            sin, cos = rope
            p = n - sin.shape[0]
            q = torch.cat([q[:, :, :p], q[:, :, p:] * cos + _rotate_half(q[:, :, p:]) * sin], 2)
            k = torch.cat([k[:, :, :p], k[:, :, p:] * cos + _rotate_half(k[:, :, p:]) * sin], 2)
        h = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        x = x + self.ls1(self.attn.proj(h))
        return x + self.ls2(self.mlp(self.norm2(x)))


class ViTTeacher(Teacher):
    """DINOv2 (learned position grid, bicubic-resized) or DINOv3 (RoPE) ViT with CLS + register tokens; the features
    are the final-norm patch tokens of the last block. Parameter names: torch-hub DINOv2 layout."""

    def __init__(self, kind: str, dim: int, depth: int, heads: int, mlp_hidden: int, patch: int, registers: int,
                 pos_grid: int | None, eps: float, source: str, sha: str):
        super().__init__(dim, patch, source, sha)
        self.kind, self.heads, self.registers, self.pos_grid = kind, heads, registers, pos_grid
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, dim, patch, patch)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.register_tokens = nn.Parameter(torch.zeros(1, registers, dim))
        if pos_grid is not None:
            self.pos_embed = nn.Parameter(torch.zeros(1, 1 + pos_grid * pos_grid, dim))
        else:
            hd = dim // heads
            self.register_buffer("periods", 100.0 ** (2 * torch.arange(hd // 4, dtype=torch.float32) / (hd // 2)))
        self.blocks = nn.ModuleList(TeacherBlock(dim, heads, mlp_hidden / dim) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=eps)
        for m in self.modules():
            if isinstance(m, nn.LayerNorm):
                m.eps = eps

    def _pos(self, gh: int, gw: int) -> torch.Tensor:
        pos = self.pos_embed
        if gh == gw == self.pos_grid:
            return pos
        g = pos[:, 1:].reshape(1, self.pos_grid, self.pos_grid, -1).permute(0, 3, 1, 2)
        g = F.interpolate(g, size=(gh, gw), mode="bicubic", align_corners=False)
        return torch.cat([pos[:, :1], g.flatten(2).transpose(1, 2)], 1)

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch_embed.proj(x)
        b, _, gh, gw = t.shape
        t = t.flatten(2).transpose(1, 2)
        cls = self.cls_token.expand(b, -1, -1)
        rope = None
        if self.pos_grid is not None:
            pos = self._pos(gh, gw)
            t, cls = t + pos[:, 1:], cls + pos[:, :1]
        else:
            rope = rope_tables(gh, gw, self.periods)
        x = torch.cat([cls, self.register_tokens.expand(b, -1, -1), t], 1)
        for blk in self.blocks:
            x = blk(x, rope)
        x = self.norm(x)[:, 1 + self.registers:]
        return x.transpose(1, 2).reshape(b, -1, gh, gw)


def _shape_info(sd: dict) -> tuple[int, int]:
    """(depth, MLP hidden width) of a state dict in this module's names."""
    depth = len({int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k))})
    if "blocks.0.mlp.fc1.weight" not in sd:
        raise PretrainedError("no blocks.0.mlp.fc1.weight: not a ViT state dict")
    hidden = check_vit_tensor(sd["blocks.0.mlp.fc1.weight"], "blocks.0.mlp.fc1.weight", 2).shape[0]
    check_vit_dims(depth=depth, mlp_hidden=hidden)
    return depth, hidden


def _heads(dim: int, heads: int | None, rope: bool) -> int:
    """Attention heads: given, or DINO's 64-dim heads (ViT-S 6, B 12, L 16, g 24); PretrainedError when they do not
    divide the width (or, with RoPE, give heads whose width is not a multiple of 4)."""
    h = heads or max(1, dim // 64)
    if dim % h or (rope and (dim // h) % 4):
        raise PretrainedError(f"width {dim} does not split into {h} heads" + (" of a multiple of 4" if rope else ""))
    return h


def dinov2_teacher(sd: dict, source: str, sha: str, heads: int | None = None) -> ViTTeacher:
    layout, prefix = _locate(sd)
    inner = {k[len(prefix):]: v for k, v in sd.items() if k.startswith(prefix)}
    reg = inner.get("embeddings.register_tokens" if layout == "hf" else "register_tokens")
    patch_key = "embeddings.patch_embeddings.projection.weight" if layout == "hf" else "patch_embed.proj.weight"
    pos_key = "embeddings.position_embeddings" if layout == "hf" else "pos_embed"
    if patch_key not in inner or pos_key not in inner:
        raise PretrainedError(f"not a DINOv2 state dict (no {patch_key} / {pos_key})")
    patch = check_vit_tensor(inner[patch_key], prefix + patch_key, 4).shape[-1]
    grid = math.isqrt(max(0, check_vit_tensor(inner[pos_key], prefix + pos_key, 3).shape[1] - 1))
    check_vit_dims(patch=patch, grid=grid)
    hub, _ = convert_dinov2(sd, patch_size=patch, grid=grid)
    dim = hub["cls_token"].shape[-1]
    depth, hidden = _shape_info(hub)
    regs = 0 if reg is None else check_vit_tensor(reg, prefix + "register_tokens", 3, empty_ok=True).shape[1]
    check_vit_dims(registers=regs)
    t = ViTTeacher("dinov2", dim, depth, _heads(dim, heads, False), hidden, patch, regs, grid, 1e-6, source, sha)
    hub["register_tokens"] = reg if regs else t.register_tokens.detach()
    _load(t, hub)
    return t


_V3_HF_BLOCK = {"norm1": "norm1", "norm2": "norm2", "attention.o_proj": "attn.proj", "mlp.up_proj": "mlp.fc1",
                "mlp.down_proj": "mlp.fc2"}


def convert_dinov3(sd: dict) -> tuple[dict, int]:
    """DINOv3 state dict (torch-hub: storage_tokens, blocks.N.attn.qkv (+ bias_mask), rope_embed.periods; or Hugging
    Face: embeddings.register_tokens, layer.N.attention.{q,k,v,o}_proj, layer_scale*.lambda1, mlp.{up,down}_proj),
    any key prefix -> (this module's names, number of register tokens). Masked (absent) key biases become zeros."""
    hf = next((k[:-len("embeddings.cls_token")] for k in sd if k.endswith("embeddings.cls_token")), None)
    if hf is not None:
        inner = {k[len(hf):]: v for k, v in sd.items() if k.startswith(hf)}
        inner = {k.removeprefix("model."): v for k, v in inner.items()}  # transformers >= 5: model.layer.N
        out: dict[str, torch.Tensor] = {}
        qkv: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
        for k, v in inner.items():
            if k in ("embeddings.cls_token", "embeddings.register_tokens"):
                out[{"embeddings.cls_token": "cls_token"}.get(k, "register_tokens")] = v
            elif k.startswith("embeddings.patch_embeddings."):
                out["patch_embed.proj." + k.rsplit(".", 1)[1]] = v
            elif k.startswith("norm."):
                out[k] = v
            elif m := re.fullmatch(r"layer\.(\d+)\.(.+)\.(weight|bias|lambda1)", k):
                i, mod, kind = int(m.group(1)), m.group(2), m.group(3)
                if a := re.fullmatch(r"attention\.(q|k|v)_proj", mod):
                    qkv.setdefault((i, kind), {})[a.group(1)] = v
                elif mod in ("layer_scale1", "layer_scale2"):
                    out[f"blocks.{i}.ls{mod[-1]}.gamma"] = v
                elif mod == "mlp.gate_proj":
                    raise PretrainedError(f"SwiGLU MLP ({k}) is not supported: only plain-MLP DINOv3 ViTs (S/B/L)")
                elif mod in _V3_HF_BLOCK:
                    out[f"blocks.{i}.{_V3_HF_BLOCK[mod]}.{kind}"] = v
                else:
                    raise PretrainedError(f"unrecognised DINOv3 key {k!r}")
            elif k not in ("embeddings.mask_token",) and not k.startswith("rope_embeddings."):
                raise PretrainedError(f"unrecognised DINOv3 key {k!r}")
        for (i, kind), parts in sorted(qkv.items()):
            if kind == "weight":
                if set(parts) != {"q", "k", "v"}:
                    raise PretrainedError(f"layer.{i}: incomplete q/k/v projections (have {sorted(parts)})")
                out[f"blocks.{i}.attn.qkv.weight"] = torch.cat([parts["q"], parts["k"], parts["v"]], 0)
        for i in sorted({i for i, _ in qkv}):
            w = out[f"blocks.{i}.attn.qkv.weight"]
            d = w.shape[1]
            bias = qkv.get((i, "bias"), {})
            out[f"blocks.{i}.attn.qkv.bias"] = torch.cat([bias.get(n, w.new_zeros(d)) for n in "qkv"])
    else:
        pre = next((k[:-len("storage_tokens")] for k in sd if k.endswith("storage_tokens")), None)
        if pre is None:
            pre = next((k[:-len("cls_token")] for k in sd if k.endswith("cls_token")), None)
        if pre is None:
            raise PretrainedError("not a DINOv3 state dict: no cls_token / embeddings.cls_token key")
        inner = {k[len(pre):]: v for k, v in sd.items() if k.startswith(pre)}
        out = {}
        for k, v in inner.items():
            if k == "storage_tokens":
                out["register_tokens"] = v
            elif k == "rope_embed.periods":
                out["periods"] = v
            elif k.endswith("attn.qkv.bias_mask") or k in ("mask_token",) or k.startswith(("head.", "local_cls_norm")):
                continue
            elif re.fullmatch(r"blocks\.\d+\.mlp\.w(12|1|2|3)\.(weight|bias)", k):
                raise PretrainedError(f"SwiGLU MLP ({k}) is not supported: only plain-MLP DINOv3 ViTs (S/B/L)")
            else:
                out[k] = v
        for k, v in inner.items():
            if k.endswith("attn.qkv.bias_mask"):  # masked entries (the key bias) may hold anything, even NaN
                b = k[:-len("_mask")]
                out[b] = torch.where(v > 0, out[b], torch.zeros_like(out[b]))
        for k in [k for k in out if k.endswith("attn.qkv.weight")]:
            out.setdefault(k[:-len("weight")] + "bias", out[k].new_zeros(out[k].shape[0]))
    reg = out.get("register_tokens")
    regs = 0 if reg is None else check_vit_tensor(reg, "register_tokens", 3, empty_ok=True).shape[1]
    return out, regs


def dinov3_teacher(sd: dict, source: str, sha: str, heads: int | None = None) -> ViTTeacher:
    out, regs = convert_dinov3(sd)
    for need in ("cls_token", "patch_embed.proj.weight", "norm.weight", "blocks.0.attn.qkv.weight"):
        if need not in out:
            raise PretrainedError(f"not a DINOv3 state dict (missing {need})")
    dim = check_vit_tensor(out["cls_token"], "cls_token", 3).shape[-1]
    depth, hidden = _shape_info(out)
    kernel = check_vit_tensor(out["patch_embed.proj.weight"], "patch_embed.proj.weight", 4)
    patch = kernel.shape[-1]
    if kernel.shape[-2] != patch:
        raise PretrainedError(f"patch kernel of shape {tuple(kernel.shape)} is not square")
    check_vit_dims(dim=dim, patch=patch, registers=regs)
    t = ViTTeacher("dinov3", dim, depth, _heads(dim, heads, True), hidden, patch, regs, None, 1e-5, source, sha)
    if "periods" in out and out["periods"].shape != t.periods.shape:
        raise PretrainedError(f"rope periods {tuple(out['periods'].shape)} do not fit {dim // t.heads}-dim heads")
    out.setdefault("periods", t.periods)
    if not regs:
        out["register_tokens"] = t.register_tokens.detach()
    _load(t, out)
    return t


def _load(t: nn.Module, sd: dict) -> None:
    own = t.state_dict()
    missing, extra = sorted(set(own) - set(sd)), sorted(set(sd) - set(own))
    if missing or extra:
        raise PretrainedError(f"unexpected layout: missing {missing[:4]}, unrecognised {extra[:4]}")
    for k, v in sd.items():
        if v.shape != own[k].shape:
            raise PretrainedError(f"shape of {k} is {tuple(v.shape)}, expected {tuple(own[k].shape)}")
    t.load_state_dict({k: v.float() for k, v in sd.items()})


# ------------------------------------------------------------------------------------------- edgedet and timm

class SupernetTeacher(Teacher):
    """An edgedet supernet (e.g. a larger or longer-trained one): its largest subnet's deepest projector map, with the
    input stretched to that subnet's resolution (the map is then resized to the student's grid)."""

    kind = "edgedet"

    def __init__(self, net, source: str, sha: str):
        s = net.cfg.largest()
        super().__init__(net.cfg.hidden_dim, s.patch, source, sha, mean=(0.0,) * 3, std=(1.0,) * 3)
        self.net, self.subnet, self.fixed_size = net, s, s.resolution
        self.level = deepest_level(net.cfg.levels)

    def _features(self, x: torch.Tensor) -> torch.Tensor:  # the supernet normalises its own input
        return self.net.feature_maps(x, self.subnet.patch, self.subnet.windows)[self.level]

    def describe(self) -> dict:
        return dict(super().describe(), subnet=self.subnet.id)


def deepest_level(levels: list[str]) -> int:
    """Index of the coarsest projector level (P5 > P4 > P3): the student's 'deepest feature map'."""
    return max(range(len(levels)), key=lambda i: int(levels[i][1:]))


class TimmTeacher(Teacher):
    """A timm model's forward_features: ViT tokens (prefix tokens dropped, reshaped to the patch grid) or a CNN map."""

    kind = "timm"

    def __init__(self, model: nn.Module, source: str, sha: str):
        cfg = getattr(model, "pretrained_cfg", None) or {}
        pe = getattr(model, "patch_embed", None)
        patch = pe.patch_size if pe is not None else model.feature_info[-1]["reduction"]
        patch = patch[0] if isinstance(patch, (tuple, list)) else int(patch)
        dim = getattr(model, "num_features", None) or model.embed_dim
        super().__init__(int(dim), patch, source, sha, mean=tuple(cfg.get("mean", IMAGENET_MEAN)),
                         std=tuple(cfg.get("std", IMAGENET_STD)))
        self.model = model

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        f = self.model.forward_features(x)
        if f.ndim == 4:
            return f
        gh, gw = x.shape[-2] // self.patch, x.shape[-1] // self.patch
        f = f[:, getattr(self.model, "num_prefix_tokens", f.shape[1] - gh * gw):]
        return f.transpose(1, 2).reshape(f.shape[0], -1, gh, gw)


def timm_teacher(spec: str) -> TimmTeacher:
    """spec 'NAME' (weights from timm's own cache) or 'NAME=FILE' (local weights)."""
    try:
        import timm
    except ImportError:
        raise MissingExtraError("timm", "timm", "a timm teacher") from None
    from ..backends.base import sha256

    name, _, file = spec.partition("=")
    kw = {"num_classes": 0}
    if file:
        if not Path(file).is_file():
            raise CheckpointError(f"{file}: timm teacher weights not found")
        kw["pretrained_cfg_overlay"] = {"file": str(file)}
    try:
        try:
            model = timm.create_model(name, pretrained=True, dynamic_img_size=True, **kw)
        except TypeError:  # not a ViT: no dynamic_img_size
            model = timm.create_model(name, pretrained=True, **kw)
    except Exception as e:  # unknown model, weights not found offline, ...
        raise CheckpointError(f"timm teacher {spec!r}: {type(e).__name__}: {' '.join(str(e).split())[:160]}") from None
    sha = sha256(Path(file)) if file else f"timm:{name}"
    return TimmTeacher(model, f"timm:{spec}", sha).freeze()


# ------------------------------------------------------------------------------------------------------ loading

def _is_edgedet(path: Path) -> bool:
    if path.suffix.lower() != ".safetensors":
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format") == "edgedet-supernet"
    except Exception:
        return False


def _is_dinov3(sd: dict) -> bool:
    keys = list(sd)
    if any(k.endswith(("storage_tokens", "rope_embed.periods")) for k in keys):
        return True
    has_cls = any(k.endswith("cls_token") for k in keys)
    has_pos = any(k.endswith(("pos_embed", "position_embeddings")) for k in keys)
    return has_cls and not has_pos


def load_teacher(spec: str | Path, kind: str = "auto", heads: int | None = None) -> Teacher:
    """A frozen teacher from a file (or 'timm:NAME[=FILE]'). kind: auto, dinov2, dinov3, edgedet, timm.
    Bad files raise CheckpointError with one line naming the file."""
    from ..backends.base import sha256

    if kind not in TEACHER_TYPES:
        raise ConfigError(f"unknown teacher type {kind!r}; types are {', '.join(TEACHER_TYPES)}")
    spec = str(spec)
    if kind == "timm" or spec.startswith("timm:"):
        return timm_teacher(spec.removeprefix("timm:"))
    path = Path(spec)
    if not path.is_file():
        raise CheckpointError(f"{path}: teacher file not found")
    if kind == "edgedet" or (kind == "auto" and _is_edgedet(path)):
        from ..checkpoint import load_supernet

        return SupernetTeacher(load_supernet(path), str(path), sha256(path)).freeze()
    try:
        sd = read_state_dict(path)
        if kind == "auto":
            kind = "dinov3" if _is_dinov3(sd) else "dinov2"
        make = dinov3_teacher if kind == "dinov3" else dinov2_teacher
        return make(sd, str(path), sha256(path), heads).freeze()
    except PretrainedError as e:
        msg = str(e)
        raise CheckpointError(msg if msg.startswith(str(path)) else f"{path}: {kind} teacher: {msg}") from None
    except (KeyError, IndexError, ValueError, RuntimeError, TypeError) as e:  # a layout the checks above missed
        raise CheckpointError(f"{path}: {kind} teacher: unexpected tensor layout ({type(e).__name__}: "
                              f"{' '.join(str(e).split())[:120]})") from None
