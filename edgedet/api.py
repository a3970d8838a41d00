"""The public verbs. Each hides the model internals; the CLI is a thin layer over these."""
from __future__ import annotations

from pathlib import Path

from .config import SubnetConfig, SupernetConfig, preset
from .errors import ConfigError


def build_supernet(name_or_cfg: str | SupernetConfig = "tiny", groups: int = 1, seed: int | None = 0):
    """A randomly initialised Supernet from a preset name or a SupernetConfig (eval mode)."""
    import torch

    from .model.supernet import Supernet

    cfg = preset(name_or_cfg) if isinstance(name_or_cfg, str) else name_or_cfg
    if seed is not None:
        torch.manual_seed(seed)
    return Supernet(cfg, groups=groups).eval()


def load_supernet(checkpoint: str | Path | None = None, preset_name: str | None = None, groups: int | None = None):
    """Load a checkpoint, or build a preset with random weights. Exactly one of the two."""
    from .checkpoint import load_supernet as _load

    if (checkpoint is None) == (preset_name is None):
        raise ConfigError("give exactly one of --checkpoint or --preset")
    if checkpoint is not None:
        return _load(Path(checkpoint), groups=groups)
    return build_supernet(preset_name, groups=groups or 1)


def subnet_cost(cfg: SupernetConfig, subnet: SubnetConfig | str):
    from .model.cost import subnet_cost as _cost

    s = SubnetConfig.parse(subnet, cfg) if isinstance(subnet, str) else subnet.check(cfg)
    return _cost(cfg, s)


def export_onnx(net, subnet: SubnetConfig | str, out: str | Path, check: bool = True, tol: float = 1e-4):
    """Export one subnet of `net` to ONNX (contract in edgedet.model.export), verified with ONNX Runtime."""
    from .model.export import export_onnx as _export

    s = SubnetConfig.parse(subnet, net.cfg) if isinstance(subnet, str) else subnet.check(net.cfg)
    module = net.extract(s)
    return _export(module, Path(out), class_names=net.cfg.class_names, check=check, tol=tol)


def supernet_info(cfg: SupernetConfig) -> dict:
    """Config, knob values, extremes with their FLOPs and params."""
    from .model.cost import subnet_cost as _cost

    small, large = cfg.smallest(), cfg.largest()
    ext = {}
    for tag, s in (("smallest", small), ("largest", large)):
        c = _cost(cfg, s)
        ext[tag] = {"id": s.id, "gflops": round(c.gflops, 3), "params_m": round(c.params / 1e6, 3)}
    return {
        "config": cfg.model_dump(),
        "space": {"patch": cfg.patch_sizes, "resolution": cfg.resolutions, "windows": cfg.windows,
                  "dec_layers": cfg.dec_depths, "queries": cfg.query_counts},
        **ext,
    }


def evaluate(checkpoint: str | Path | None = None, data: str | Path | None = None,
             subnets: list[str] | None = None, split: str = "valid", batch_size: int = 8,
             progress=None) -> dict:
    """AP of subnets of a checkpoint on a COCO split (shared computation across subnets); defaults to the bundled
    demo supernet and its synthetic val set. progress(done, total) is called as batches finish.
    Returns {checkpoint, data, split, images, subnets: {id: metrics + gflops}}."""
    from .data.coco import CocoDetection
    from .data.demo import demo_checkpoint, demo_data
    from .evaluate import evaluate_subnets
    from .model.cost import subnet_cost as _cost

    from .checkpoint import read_header

    if batch_size < 1:
        raise ConfigError(f"--batch-size {batch_size}: must be >= 1")
    ck = Path(checkpoint) if checkpoint else demo_checkpoint()
    cfg = read_header(ck)[0]  # the config alone: subnets and data are checked before the weights are loaded
    subs = [SubnetConfig.parse(s, cfg) for s in subnets] if subnets else [cfg.largest()]
    root = Path(data) if data else demo_data()
    ds = CocoDetection(root, split, labels=cfg)  # refuses a dataset whose categories the model does not have
    net = load_supernet(ck)
    res = evaluate_subnets(net, subs, ds, batch_size=batch_size, progress=progress)
    out = {s.id: dict(res[s.id], gflops=round(_cost(net.cfg, s).gflops, 3)) for s in subs}
    return {"checkpoint": str(ck), "data": str(root), "split": split, "images": len(ds), "subnets": out}
