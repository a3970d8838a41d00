"""Supernet checkpoints: one safetensors file whose metadata holds the JSON config. Nothing is ever unpickled."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from .config import SupernetConfig
from .errors import CheckpointError

FORMAT = "edgedet-supernet"
VERSION = 1


def check_output_file(path: Path) -> Path:
    """Before any work: `path` can become a file (it is not a folder, and no existing parent is a file).
    EdgedetError naming it otherwise; nothing is created."""
    from .errors import EdgedetError

    path = Path(path)
    if path.is_dir():
        raise EdgedetError(f"{path}: is a folder; give the path of the file to write")
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise EdgedetError(f"{path}: cannot write: {parent} is not a folder")
    return path


def atomic_write(path: Path, write) -> None:
    """Call write(tmp_path) then rename onto `path`, so readers never see a half-written file. A path that cannot
    be written (a folder in the way, no permission, no space) is one EdgedetError naming it; nothing is left."""
    from .errors import EdgedetError

    path = check_output_file(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise EdgedetError(f"{path}: cannot write ({e.strerror or type(e).__name__})") from None
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; outputs are ordinary files
        os.replace(tmp, path)
    except OSError as e:
        raise EdgedetError(f"{path}: cannot write ({e.strerror or type(e).__name__})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_supernet(net, path: Path, meta: dict | None = None, inference: bool = True,
                  dtype: torch.dtype | None = None) -> Path:
    """Write `net` (a Supernet) to `path`. inference=True keeps only query group 0 (what extract/export use);
    dtype=torch.float16 halves the file (loading casts back to the model's float32)."""
    from safetensors.torch import save_file

    sd = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
    if dtype is not None:
        sd = {k: v.to(dtype) if v.is_floating_point() else v for k, v in sd.items()}
    groups = net.groups
    if inference and groups > 1:
        nq = net.cfg.num_queries
        sd = {k: v for k, v in sd.items()
              if not (k.startswith("query_select.") and not k.startswith("query_select.0."))}
        sd["query_feat"] = sd["query_feat"][:nq].clone()
        sd["refpoint_embed"] = sd["refpoint_embed"][:nq].clone()
        groups = 1
    header = {"format": FORMAT, "version": str(VERSION), "config": net.cfg.model_dump_json(), "groups": str(groups),
              "meta": json.dumps(meta or {}, sort_keys=True)}
    atomic_write(Path(path), lambda tmp: save_file(sd, str(tmp), metadata=header))
    return Path(path)


MAX_GROUPS = 64  # Group-DETR query groups a checkpoint may declare (training uses 1..13)


def read_header(path: Path) -> tuple[SupernetConfig, int, dict]:
    """(config, groups, user metadata) of a checkpoint, without loading tensors. The config is validated against
    its limits (config.LIMITS); anything wrong is one CheckpointError line naming the file and the field."""
    from pydantic import ValidationError
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: not a safetensors checkpoint ({_first_line(e)})") from None
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{path}: safetensors file without edgedet supernet metadata "
                              f"(format={str(header.get('format'))[:40]!r}); import foreign weights with "
                              "'edgedet import' or load a backbone with --backbone")
    if "config" not in header:
        raise CheckpointError(f"{path}: no 'config' in the checkpoint metadata")
    try:
        cfg = SupernetConfig.model_validate_json(header["config"], strict=True)  # "128" is not a number here
    except ValidationError as e:
        from .config import _first_error

        raise CheckpointError(f"{path}: invalid config in checkpoint metadata: {_first_error(e)[:200]}") from None
    except ValueError as e:
        raise CheckpointError(f"{path}: invalid config in checkpoint metadata ({_first_line(e)})") from None
    groups = header.get("groups", "1")
    if not (groups.isascii() and groups.isdigit() and 1 <= int(groups) <= MAX_GROUPS):
        raise CheckpointError(f"{path}: metadata 'groups' is {groups[:20]!r}, expected an integer in 1..{MAX_GROUPS}")
    try:
        meta = json.loads(header.get("meta", "{}"))
    except ValueError as e:
        raise CheckpointError(f"{path}: metadata 'meta' is not JSON ({_first_line(e)})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: metadata 'meta' is a {type(meta).__name__}, expected a JSON object")
    return cfg, int(groups), meta


def _first_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return lines[0][:160] if lines else type(e).__name__


def expected_shapes(cfg: SupernetConfig, groups: int = 1) -> dict[str, tuple[int, ...]]:
    """Shapes of a Supernet's state dict for `cfg`, built on the meta device (nothing allocated)."""
    from .model.supernet import Supernet

    with torch.device("meta"):
        net = Supernet(cfg, groups=groups)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def check_file_shapes(path: Path, cfg: SupernetConfig, groups: int) -> None:
    """Compare the tensors a safetensors file declares (its header only) with what `cfg` builds, before the model
    is allocated: a config that does not describe the file is one CheckpointError naming a tensor."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            have = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt checkpoint ({_first_line(e)})") from None
    want = expected_shapes(cfg, groups)
    missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
    if missing or extra:
        parts = [f"{len(missing)} missing tensor(s) (e.g. {missing[0]})"] if missing else []
        parts += [f"{len(extra)} unexpected tensor(s) (e.g. {extra[0][:80]})"] if extra else []
        raise CheckpointError(f"{path}: checkpoint does not match its config: " + ", ".join(parts))
    for k, shape in want.items():
        if have[k] != shape:
            raise CheckpointError(f"{path}: tensor {k} has shape {have[k]}, config expects {shape}")


def load_supernet(path: Path, groups: int | None = None):
    """Load a Supernet (eval mode). groups: build with this many query groups (training); extra groups beyond the
    checkpoint's are initialised from group 0. The header's config and tensor shapes are checked before anything
    is allocated."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from .model.supernet import Supernet

    cfg, ck_groups, meta = read_header(path)
    check_file_shapes(Path(path), cfg, ck_groups)
    try:
        sd = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(f"{path}: corrupt checkpoint ({_first_line(e)})") from None
    net = Supernet(cfg, groups=ck_groups)
    load_state(net, sd, path)
    if groups is not None and groups != ck_groups:
        net = regroup(net, groups)
    net.meta = meta
    return net.eval()


def load_state(net: torch.nn.Module, sd: dict, path: Path | str) -> None:
    own = net.state_dict()
    missing = sorted(set(own) - set(sd))
    extra = sorted(set(sd) - set(own))
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing tensor(s) (e.g. {missing[0]})")
        if extra:
            parts.append(f"{len(extra)} unexpected tensor(s) (e.g. {extra[0]})")
        raise CheckpointError(f"{path}: checkpoint does not match its config: " + ", ".join(parts))
    for k, v in sd.items():
        if tuple(v.shape) != tuple(own[k].shape):
            raise CheckpointError(f"{path}: tensor {k} has shape {tuple(v.shape)}, config expects "
                                  f"{tuple(own[k].shape)}")
    net.load_state_dict(sd, strict=True)


def regroup(net, groups: int):
    """A copy of `net` with `groups` query groups; new groups start as copies of group 0."""
    from .model.supernet import Supernet

    new = Supernet(net.cfg, groups=groups)
    sd = net.state_dict()
    nq = net.cfg.num_queries
    out = {}
    for k, v in new.state_dict().items():
        if k in ("query_feat", "refpoint_embed"):
            out[k] = sd[k][:nq].repeat(groups, 1)
        elif k.startswith("query_select."):
            out[k] = sd["query_select.0." + k.split(".", 2)[2]]
        else:
            out[k] = sd[k]
    new.load_state_dict(out)
    return new
