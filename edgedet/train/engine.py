"""The training loop: weight-sharing NAS (one uniformly sampled subnet per step), Group-DETR, AdamW with backbone
layer decay, warm-up then constant LR, EMA, gradient accumulation, safetensors checkpoints with resume, DDP; optional
feature distillation from a frozen teacher (DSI + GAM, train/distill.py) and the D-FINE FDR head (fdr=True).

DDP: run under torchrun (gloo works on CPU). Ranks start from rank 0's weights, sample the same subnet each step
(the sampler is seeded by the step), and average gradients with one all-reduce, so weights stay identical.
"""
from __future__ import annotations

import json
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.distributed as dist

from ..checkpoint import atomic_write, save_supernet
from ..config import SubnetConfig, SupernetConfig
from ..errors import CheckpointError, ConfigError
from .criterion import SetCriterion


@dataclass
class TrainConfig:
    data: str
    out: str
    preset: str = "tiny"
    space: str | None = None
    epochs: int = 10
    batch_size: int = 8
    accum: int = 1
    lr: float = 2e-4
    lr_backbone: float | None = None  # default 1.5 x lr (RF-DETR's ratio)
    layer_decay: float = 0.8
    weight_decay: float = 1e-4
    warmup_steps: int = 200
    ema_decay: float = 0.993
    ema_tau: int = 100
    groups: int = 4
    clip: float = 0.1
    seed: int = 0
    workers: int = 1
    max_steps: int | None = None
    resume: bool = False
    backbone: str | None = None  # DINOv2 weights file to start the ViT from
    log_every: int = 20
    save_rank_states: bool = False  # each DDP rank writes its final weights (to check they are identical)
    # distillation: DSI from a frozen teacher with GAM, and the D-FINE FDR head
    teacher: str | None = None  # DINOv2/DINOv3 file, edgedet checkpoint, or timm:NAME[=FILE]
    teacher_type: str = "auto"
    teacher_cache: str | None = None  # folder for per-image teacher features (computed once, before training)
    dsi_weight: float = 20.0  # lambda0 (RT-DETRv4-S)
    gam: bool = True
    gam_rho: float = 11.0
    gam_delta: float = 1.0
    gam_every: int | None = None  # steps between GAM updates; default: one epoch
    fdr: bool = False
    extra: dict = field(default_factory=dict)


class EMA:
    """Exponential moving average of a model's parameters and buffers; decay ramps up as d * (1 - exp(-n/tau))."""

    def __init__(self, model: torch.nn.Module, decay: float, tau: int):
        import copy

        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, 0

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        for e, m in zip(self.module.state_dict().values(), model.state_dict().values()):
            if e.dtype.is_floating_point:
                e.mul_(d).add_(m.detach(), alpha=1 - d)


def sample_subnet(subnets: list[SubnetConfig], step: int, seed: int) -> SubnetConfig:
    """Uniform over the valid subnets, identical on every rank (seeded by step)."""
    return subnets[random.Random(seed * 1_000_003 + step).randrange(len(subnets))]


def param_groups(net, lr: float, lr_backbone: float, layer_decay: float, wd: float) -> list[dict]:
    """Backbone block i gets lr_backbone * decay^(depth - i); embeddings decay^(depth + 1); 1-D tensors no wd."""
    depth = net.cfg.depth
    groups: dict[tuple[float, float], list] = {}
    for name, p in net.named_parameters():
        if not p.requires_grad:
            continue
        if name.startswith("backbone."):
            if name.startswith("backbone.blocks."):
                scale = layer_decay ** (depth - int(name.split(".")[2]))
            elif name.startswith("backbone.norm."):
                scale = 1.0
            else:
                scale = layer_decay ** (depth + 1)
            plr = lr_backbone * scale
        else:
            plr = lr
        pwd = 0.0 if p.ndim <= 1 or name.endswith(("pos_embed", "cls_token", "query_feat", "refpoint_embed")) else wd
        groups.setdefault((plr, pwd), []).append(p)
    return [{"params": ps, "lr": plr, "base_lr": plr, "weight_decay": pwd} for (plr, pwd), ps in groups.items()]


def _dist() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("gloo")
    return (dist.get_rank(), dist.get_world_size()) if world > 1 else (0, 1)


def _allreduce_grads(params: list[torch.nn.Parameter], world: int) -> None:
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    i = 0
    for p, g in zip(params, grads):
        n = g.numel()
        p.grad = flat[i:i + n].view_as(p).clone()
        i += n


def _state_path(out: Path) -> Path:
    return out / "last.safetensors"


def save_state(out: Path, net, ema: EMA, opt: torch.optim.Optimizer, meta: dict, distiller=None) -> None:
    """Training state in one safetensors file: model (all groups), EMA, AdamW moments, the DSI projector; scalars
    (GAM state included) in JSON metadata."""
    from safetensors.torch import save_file

    sd = {f"model.{k}": v.detach().contiguous() for k, v in net.state_dict().items()}
    if distiller is not None:
        sd.update({f"dsi.{k}": v.detach().contiguous() for k, v in distiller.projector.state_dict().items()})
        meta = dict(meta, gam=distiller.gam.state())
    sd.update({f"ema.{k}": v.detach().contiguous() for k, v in ema.module.state_dict().items()})
    steps = {}
    for i, (p, st) in enumerate(((p, opt.state.get(p, {})) for g in opt.param_groups for p in g["params"])):
        for k in ("exp_avg", "exp_avg_sq"):
            if k in st:
                sd[f"optim.{i}.{k}"] = st[k].contiguous()
        if "step" in st:
            steps[i] = float(st["step"])
    header = {"format": "edgedet-train-state", "config": net.cfg.model_dump_json(),
              "meta": json.dumps(dict(meta, optim_steps=steps, ema_updates=ema.updates))}
    atomic_write(_state_path(out), lambda tmp: save_file(sd, str(tmp), metadata=header))


def load_state(out: Path, net, ema: EMA, opt: torch.optim.Optimizer, distiller=None) -> dict:
    from safetensors import SafetensorError, safe_open

    path = _state_path(out)
    try:
        with safe_open(str(path), "pt") as f:
            header = f.metadata() or {}
            if header.get("format") != "edgedet-train-state":
                raise CheckpointError(f"{path}: not an edgedet training state")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise CheckpointError(f"{path}: cannot resume ({str(e).splitlines()[0][:120]})") from None
    try:
        return _restore(path, header, tensors, net, ema, opt, distiller)
    except (KeyError, ValueError, RuntimeError, TypeError) as e:  # a damaged or foreign state file
        raise CheckpointError(f"{path}: cannot resume ({type(e).__name__}: {' '.join(str(e).split())[:120]}); "
                              "use a new --out or drop --resume") from None


def _restore(path: Path, header: dict, tensors: dict, net, ema: EMA, opt, distiller) -> dict:
    if SupernetConfig.model_validate_json(header["config"]) != net.cfg:
        raise CheckpointError(f"{path}: saved for a different supernet config; use a new --out or drop --resume")
    meta = json.loads(header["meta"])
    dsi = {k[4:]: v for k, v in tensors.items() if k.startswith("dsi.")}
    if bool(dsi) != (distiller is not None):
        raise CheckpointError(f"{path}: saved {'with' if dsi else 'without'} a teacher, resumed "
                              f"{'with' if distiller is not None else 'without'}; use a new --out or drop --resume")
    if distiller is not None:
        distiller.projector.load_state_dict(dsi)
        distiller.gam.load(meta.pop("gam"))
    net.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model.")})
    ema.module.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")})
    ema.updates = meta.pop("ema_updates")
    steps = meta.pop("optim_steps")
    for i, p in enumerate(p for g in opt.param_groups for p in g["params"]):
        if f"optim.{i}.exp_avg" in tensors:
            opt.state[p] = {"step": torch.tensor(steps[str(i)]), "exp_avg": tensors[f"optim.{i}.exp_avg"],
                            "exp_avg_sq": tensors[f"optim.{i}.exp_avg_sq"]}
    return meta


_RANGES = {  # TrainConfig field -> (lowest, highest) accepted
    "epochs": (1, 100000), "batch_size": (1, 4096), "accum": (1, 1024), "groups": (1, 64), "warmup_steps": (0, 10**9),
    "workers": (0, 256), "log_every": (1, 10**9), "max_steps": (1, 10**12), "gam_every": (1, 10**12),
    "seed": (0, 2**63 - 1), "lr": (0.0, 10.0), "lr_backbone": (0.0, 10.0), "layer_decay": (0.0, 1.0),
    "weight_decay": (0.0, 10.0), "ema_decay": (0.0, 1.0), "ema_tau": (0, 10**9), "clip": (0.0, 10**6),
    "dsi_weight": (0.0, 10**6), "gam_rho": (0.0, 100.0), "gam_delta": (0.0, 100.0),
}


def check_config(cfg: TrainConfig) -> None:
    """Every number of `cfg` finite and in range (ConfigError naming the option and the value), before anything
    is read, built or written."""
    import math

    for key, (lo, hi) in _RANGES.items():
        v = getattr(cfg, key)
        if v is None and key in ("max_steps", "gam_every", "lr_backbone"):
            continue
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi
        if not ok or (key in ("lr", "layer_decay") and v == 0):
            flag = "--" + {"warmup_steps": "warmup", "gam_rho": "gam-target", "gam_delta": "gam-band"}.get(
                key, key).replace("_", "-")
            low = f"> {lo}" if key in ("lr", "layer_decay") else f">= {lo}"
            raise ConfigError(f"{flag} is {v!r}, expected a number {low} and <= {hi}")
    from .teachers import TEACHER_TYPES

    if cfg.teacher_type not in TEACHER_TYPES:
        raise ConfigError(f"--teacher-type: unknown teacher type {cfg.teacher_type!r}; types are "
                          f"{', '.join(TEACHER_TYPES)}")


def _targets(batch_targets: list[dict]) -> list[dict]:
    return [{"labels": t["labels"], "boxes": t["boxes"]} for t in batch_targets]


def train(cfg: TrainConfig, progress: bool = True) -> Path:
    """Train a supernet; returns the path of the EMA inference checkpoint (out/model.safetensors)."""
    from ..api import build_supernet
    from ..config import load_space, preset
    from ..data.coco import CocoDetection, collate_fn
    from ..data.transforms import RandomCropFlip, batch_resize

    rank, world = _dist()
    check_config(cfg)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: --out is a file, not a folder")
    teacher = None
    if cfg.teacher:  # first, so a bad teacher file fails before any work
        from .teachers import load_teacher

        teacher = load_teacher(cfg.teacher, cfg.teacher_type)
    scfg = preset(cfg.preset)
    if cfg.fdr:
        scfg = scfg.model_copy(update={"fdr": True})
    train_set = CocoDetection(Path(cfg.data), "train", transforms=RandomCropFlip())
    # labels are the training set's categories in id order; their ids travel with the model (evaluation maps by id)
    scfg = scfg.model_copy(update={"num_classes": len(train_set.class_names),
                                   "class_names": list(train_set.class_names),
                                   "category_ids": list(train_set.category_ids)})
    space = load_space(cfg.space, scfg)
    subnets = space.subnets(scfg)
    if not subnets:
        raise ConfigError(f"{cfg.space}: empty search space")
    n = len(train_set)
    per_rank = n // world
    steps_per_epoch = per_rank // (cfg.batch_size * cfg.accum)
    if steps_per_epoch == 0:
        raise ConfigError(f"{cfg.data}: {n} training images are fewer than one step "
                          f"(batch {cfg.batch_size} x accum {cfg.accum} x ranks {world})")
    scfg = scfg.model_copy(update={"patch_sizes": sorted(set(space.patch)),
                                   "windows": sorted(set(space.windows)), "resolutions": sorted(set(space.resolution)),
                                   "query_counts": sorted(set(space.queries))})
    net = build_supernet(scfg, groups=cfg.groups, seed=cfg.seed).train()
    if cfg.backbone:
        from ..model.pretrained import load_dinov2_into

        load_dinov2_into(net.backbone, Path(cfg.backbone))
    distiller = _distiller(cfg, net, teacher, subnets, rank, world) if teacher is not None else None
    if world > 1:
        for t in net.state_dict().values():
            dist.broadcast(t, 0)
        for t in (distiller.projector.state_dict().values() if distiller else ()):
            dist.broadcast(t, 0)
    lr_bb = cfg.lr_backbone if cfg.lr_backbone is not None else 1.5 * cfg.lr
    groups = param_groups(net, cfg.lr, lr_bb, cfg.layer_decay, cfg.weight_decay)
    if distiller is not None:  # training-only: the optimizer holds it, the supernet does not
        pw, pb = distiller.projector.proj.weight, distiller.projector.proj.bias
        groups += [{"params": [pw], "lr": cfg.lr, "base_lr": cfg.lr, "weight_decay": cfg.weight_decay},
                   {"params": [pb], "lr": cfg.lr, "base_lr": cfg.lr, "weight_decay": 0.0}]
    opt = torch.optim.AdamW(groups, lr=cfg.lr)
    ema = EMA(net, cfg.ema_decay, cfg.ema_tau)
    crit = SetCriterion()
    params = [p for g in opt.param_groups for p in g["params"]]
    net_params = [p for p in net.parameters() if p.requires_grad]
    start_epoch, step = 0, 0
    if cfg.resume and _state_path(out).exists():
        meta = load_state(out, net, ema, opt, distiller)
        start_epoch, step = meta["epoch"], meta["step"]
        if rank == 0:
            print(f"resumed from {_state_path(out)} at epoch {start_epoch}, step {step}", flush=True)
    elif cfg.resume and rank == 0:
        print(f"no training state in {out}; starting fresh", flush=True)
    if rank == 0:  # everything above is checked: only now does OUT get files
        out.mkdir(parents=True, exist_ok=True)
        atomic_write(out / "train_config.json", lambda tmp: tmp.write_text(json.dumps(asdict(cfg), indent=1)))
    log = open(out / "log.jsonl", "a") if rank == 0 else None
    total_steps = cfg.max_steps or cfg.epochs * steps_per_epoch
    bar = _Progress(total_steps, step, enabled=progress and rank == 0)
    gam_p = None
    if distiller is not None:
        crit.weights["loss_dsi"] = distiller.gam.lam
    for epoch in range(start_epoch, cfg.epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 7919 + epoch)).tolist()
        mine = order[rank * per_rank:(rank + 1) * per_rank][: steps_per_epoch * cfg.batch_size * cfg.accum]
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(train_set, mine), batch_size=cfg.batch_size, shuffle=False,
            num_workers=cfg.workers, collate_fn=collate_fn, persistent_workers=False,
            worker_init_fn=_seed_worker, generator=torch.Generator().manual_seed(cfg.seed + 31 * epoch + rank))
        it = iter(loader)
        for _ in range(steps_per_epoch):
            if cfg.max_steps and step >= cfg.max_steps:
                break
            s = sample_subnet(subnets, step, cfg.seed)
            t0 = time.perf_counter()
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * min(1.0, (step + 1) / max(cfg.warmup_steps, 1))
            terms_sum: dict[str, float] = {}
            n_img = 0
            for _ in range(cfg.accum):
                images, targets = next(it)
                x = batch_resize(images, s.resolution)
                outputs = net(x, s, features=distiller is not None)
                if distiller is not None:
                    outputs["dsi"] = distiller.pair(outputs, x, targets)
                nb = float(sum(len(t["labels"]) for t in targets))
                if world > 1:
                    nbt = torch.tensor([nb])
                    dist.all_reduce(nbt)
                    nb = nbt.item() / world
                terms = crit(outputs, _targets(targets), groups=cfg.groups, num_boxes=nb)
                loss = crit.total(terms) / cfg.accum
                loss.backward()
                n_img += len(images)
                for k, v in terms.items():
                    terms_sum[k] = terms_sum.get(k, 0.0) + v.item() / cfg.accum
            if world > 1:
                _allreduce_grads(params, world)
            if distiller is not None:  # after the all-reduce: the same gradients, so the same p, on every rank
                gam_p = distiller.observe_grads(net_params)
            if cfg.clip:
                torch.nn.utils.clip_grad_norm_(params, cfg.clip)
            opt.step()
            opt.zero_grad(set_to_none=True)
            ema.update(net)
            step += 1
            total = float(crit.total(terms_sum))
            ips = n_img * world / (time.perf_counter() - t0)
            bar.update(step, epoch, total, ips, s.id)
            extra = {}
            if distiller is not None:
                extra = {"dsi_weight": round(crit.weights["loss_dsi"], 4), "gam_p": round(gam_p, 4)}
                if cfg.gam_every and step % cfg.gam_every == 0:
                    crit.weights["loss_dsi"] = distiller.gam.update()
            if log and (step % cfg.log_every == 0 or step == 1):
                log.write(json.dumps({"step": step, "epoch": epoch, "subnet": s.id, "loss": round(total, 4),
                                      "img_s": round(ips, 2), **{k: round(v, 4) for k, v in terms_sum.items()
                                                                  if "_" not in k[5:]}, **extra}) + "\n")
                log.flush()
        if distiller is not None and not cfg.gam_every:  # GAM's period: one epoch
            crit.weights["loss_dsi"] = distiller.gam.update()
        if rank == 0:
            save_state(out, net, ema, opt, {"epoch": epoch + 1, "step": step}, distiller)
            meta = {"epochs": epoch + 1, "steps": step, "train": asdict(cfg)}
            if distiller is not None:
                meta["distill"] = dict(distiller.teacher.describe(), dsi_weight=distiller.gam.lam,
                                       gam=distiller.gam.history)
            save_supernet(ema.module, out / "model.safetensors", meta=meta)
        if world > 1:
            dist.barrier()
        if cfg.max_steps and step >= cfg.max_steps:
            break
    bar.close()
    if cfg.save_rank_states:
        save_supernet(net, out / f"rank{rank}.safetensors", inference=False,
                      meta={"dsi_weight": distiller.gam.lam, "gam": distiller.gam.history} if distiller else None)
        if distiller is not None:
            from safetensors.torch import save_file

            save_file({k: v.contiguous() for k, v in distiller.projector.state_dict().items()},
                      str(out / f"rank{rank}-dsi.safetensors"))
    if log:
        log.close()
    return out / "model.safetensors"


def _distiller(cfg: TrainConfig, net, teacher, subnets: list[SubnetConfig], rank: int, world: int):
    """The DSI projector, GAM and (with teacher_cache) the per-image teacher features, filled before training."""
    from ..config import level_grid
    from ..data.coco import CocoDetection
    from .distill import GAM, Distiller, TeacherCache
    from .teachers import deepest_level

    cache = None
    if cfg.teacher_cache:
        lvl = net.cfg.levels[deepest_level(net.cfg.levels)]
        grid = max(level_grid(s.resolution // s.patch, lvl) for s in subnets)
        cache = TeacherCache(teacher, cfg.teacher_cache, teacher.input_size(grid))
        plain = CocoDetection(Path(cfg.data), "train")
        t0 = time.perf_counter()
        n = cache.fill(plain, cfg.batch_size, rank, world)
        if world > 1:
            dist.barrier()
        if rank == 0 and n:
            print(f"teacher features of {n} images cached in {cache.dir} ({time.perf_counter() - t0:.0f} s)",
                  flush=True)
    return Distiller(net, teacher, GAM(cfg.dsi_weight, cfg.gam_rho, cfg.gam_delta, enabled=cfg.gam), cache)


def _seed_worker(worker_id: int) -> None:
    seed = torch.initial_seed() % 2**32
    random.seed(seed)


class _Progress:
    """A rich progress bar on a terminal; a plain line every ~30 s otherwise (CI logs)."""

    def __init__(self, total: int, done: int, enabled: bool):
        self.enabled, self.total, self.last = enabled, total, 0.0
        self.bar = None
        if enabled and sys.stderr.isatty():
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("[bold]train[/bold] {task.description}"), BarColumn(),
                                TextColumn("{task.completed}/{task.total}"), TimeRemainingColumn())
            self.task = self.bar.add_task("", total=total, completed=done)
            self.bar.start()

    def update(self, step: int, epoch: int, loss: float, ips: float, sid: str) -> None:
        if not self.enabled:
            return
        desc = f"epoch {epoch} loss {loss:.3f} {ips:.1f} img/s {sid}"
        if self.bar is not None:
            self.bar.update(self.task, completed=step, description=desc)
        elif time.time() - self.last > 30 or step == self.total:
            self.last = time.time()
            print(f"step {step}/{self.total} {desc}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
