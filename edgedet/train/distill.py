"""Feature distillation from a frozen teacher (RT-DETRv4 DSI) with gradient-guided weight modulation (GAM).

Everything here is training-only and lives beside the Supernet, never inside it: checkpoints, extract() and ONNX
export see the same modules with or without distillation.

- DSI: a Linear projector maps the student's deepest projector map [B, C, g, g] to the teacher's width; the loss is
  mean over tokens of 1 - cos(proj(student), teacher), teacher features on the same g x g grid.
- GAM: p = 100 * sum|grad| of the module producing the aligned map / sum|grad| of all detector parameters, every
  step, taken after the DDP all-reduce (every rank sees the same gradients, so the same p). At the end of a period
  (an epoch) with mean p_bar, outside [rho - delta, rho + delta]: p* = nearest bound and
  lambda <- lambda * max(0.1, p*(1 - p_bar) / (p_bar (1 - p*))) (p as fractions), clamped to [lambda0/10, 10 lambda0].
  The running sums are all-reduced before the update, so the update is identical on every rank.
- Teacher features come from the teacher on the (augmented) batch resized so the grids match, or from an on-disk cache
  of per-image features of the un-augmented image (key: teacher sha256, input resolution, image id), cropped and
  flipped like the image (target['view']) and bilinearly resampled to the student's grid.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ..checkpoint import atomic_write
from ..data.transforms import IDENTITY_VIEW
from .teachers import Teacher, deepest_level


class DSIProjector(nn.Module):
    """[B, C, h, w] student map -> [B, h*w, teacher_dim] tokens."""

    def __init__(self, student_dim: int, teacher_dim: int):
        super().__init__()
        self.proj = nn.Linear(student_dim, teacher_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x.flatten(2).transpose(1, 2))


def dsi_loss(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """student, teacher [B, T, D] -> mean over B*T tokens of 1 - cos(student, teacher) (teacher detached)."""
    return (1 - F.cosine_similarity(student, teacher.detach().to(student.dtype), dim=-1, eps=1e-8)).mean()


class GAM:
    """Gradient-guided adaptive modulation of the DSI weight lambda (see the module docstring)."""

    def __init__(self, lambda0: float, rho: float = 11.0, delta: float = 1.0, enabled: bool = True):
        self.lambda0, self.lam, self.rho, self.delta, self.enabled = lambda0, lambda0, rho, delta, enabled
        self.p_sum, self.count = 0.0, 0
        self.history: list[dict] = []

    @staticmethod
    def grad_ratio(aligned: list[torch.Tensor], params: list[torch.Tensor]) -> float:
        """100 * sum |grad| over `aligned` / sum |grad| over `params` (parameters without a gradient count 0)."""
        def total(ps):
            gs = [p.grad.detach().abs().sum() for p in ps if p.grad is not None]
            return torch.stack(gs).sum().item() if gs else 0.0

        den = total(params)
        return 100.0 * total(aligned) / den if den > 0 else 0.0

    @staticmethod
    def new_lambda(lam: float, lambda0: float, p_bar: float, rho: float, delta: float) -> float:
        """The epoch-end update for a mean ratio p_bar (percent); unchanged inside [rho - delta, rho + delta]."""
        lo, hi = rho - delta, rho + delta
        if lo <= p_bar <= hi:
            return lam
        p_star = (lo if p_bar < lo else hi) / 100.0
        pb = min(max(p_bar / 100.0, 1e-6), 1 - 1e-6)
        factor = max(0.1, p_star * (1 - pb) / (pb * (1 - p_star)))
        return min(max(lam * factor, lambda0 / 10), 10 * lambda0)

    def observe(self, p: float) -> None:
        self.p_sum += p
        self.count += 1

    def update(self) -> float:
        """End of a period: the new lambda from the mean p (summed over DDP ranks first), then reset the sums."""
        s = torch.tensor([self.p_sum, float(self.count)], dtype=torch.float64)
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(s)
        p_sum, n = s.tolist()
        if n and self.enabled:
            p_bar = p_sum / n
            old = self.lam
            self.lam = self.new_lambda(self.lam, self.lambda0, p_bar, self.rho, self.delta)
            self.history.append({"p_bar": round(p_bar, 4), "lambda_before": old, "lambda": self.lam})
        self.p_sum, self.count = 0.0, 0
        return self.lam

    def state(self) -> dict:
        return {"lambda": self.lam, "p_sum": self.p_sum, "count": self.count, "history": self.history}

    def load(self, st: dict) -> None:
        self.lam, self.p_sum, self.count = st["lambda"], st["p_sum"], st["count"]
        self.history = list(st.get("history", []))


def warp_views(maps: torch.Tensor, views: torch.Tensor, grid: int) -> torch.Tensor:
    """Resample maps [B, D, h, w] of whole images at the regions the augmented images show.
    views [B, 4] = (ax, bx, ay, by): output coordinate u in [0,1] shows original x = ax*u + bx (y likewise), so a flip
    is ax < 0 and a crop |ax| < 1. Returns [B, D, grid, grid] (bilinear, border padding)."""
    u = (torch.arange(grid, dtype=maps.dtype, device=maps.device) + 0.5) / grid
    x = views[:, 0, None] * u + views[:, 1, None]  # [B, g]
    y = views[:, 2, None] * u + views[:, 3, None]
    g = torch.stack([(2 * x - 1)[:, None, :].expand(-1, grid, -1), (2 * y - 1)[:, :, None].expand(-1, -1, grid)], -1)
    return F.grid_sample(maps, g, mode="bilinear", padding_mode="border", align_corners=False)


class TeacherCache:
    """Teacher features of whole, un-augmented images on disk: root/<kind>-<sha16>/r<res>/<image_id>.safetensors
    (fp16 [D, h, w]). `fill` computes what is missing (DDP ranks split the images); `get` reads a batch."""

    def __init__(self, teacher: Teacher, root: Path | str, resolution: int):
        self.teacher, self.resolution = teacher, resolution
        self.dir = Path(root) / f"{teacher.kind}-{teacher.sha[:16]}" / f"r{resolution}"

    def path(self, image_id: int) -> Path:
        return self.dir / f"{int(image_id)}.safetensors"

    def fill(self, dataset, batch_size: int = 8, rank: int = 0, world: int = 1, progress=None) -> int:
        """Compute and write the features of every image of `dataset` (no transforms) not cached yet; returns how
        many were computed here."""
        from safetensors.torch import save_file

        from ..data.transforms import batch_resize

        todo = [i for i in range(len(dataset)) if i % world == rank
                and not self.path(dataset.images[i]["id"]).is_file()]
        done = 0
        for start in range(0, len(todo), batch_size):
            idx = todo[start:start + batch_size]
            images = [dataset.load_image(i) for i in idx]
            feats = self.teacher.features(batch_resize(images, self.resolution)).half()
            for i, f in zip(idx, feats):
                atomic_write(self.path(dataset.images[i]["id"]),
                             lambda tmp, f=f: save_file({"features": f.contiguous()}, str(tmp)))
            done += len(idx)
            if progress:
                progress(done, len(todo))
        return done

    def get(self, image_ids: list[int]) -> torch.Tensor:
        from safetensors.torch import load_file

        return torch.stack([load_file(str(self.path(i)))["features"] for i in image_ids]).float()


class Distiller:
    """DSI for one supernet: the projector (trained with the detector), the frozen teacher, optionally its cache, and
    GAM. `pair(outputs, images, targets)` returns outputs['dsi'] for the criterion's 'dsi' loss."""

    def __init__(self, net, teacher: Teacher, gam: GAM, cache: TeacherCache | None = None):
        self.teacher, self.gam, self.cache = teacher, gam, cache
        self.level = deepest_level(net.cfg.levels)
        self.projector = DSIProjector(net.cfg.hidden_dim, teacher.dim)
        pr = net.projector
        self.aligned = list(pr.stages[self.level].parameters()) + list(pr.stages_sampling[self.level].parameters())

    def teacher_maps(self, images: torch.Tensor, targets: list[dict], grid: int) -> torch.Tensor:
        """Teacher features [B, D, grid, grid] for the batch `images` [B,3,R,R] (RGB in [0,1], augmented)."""
        if self.cache is not None:
            maps = self.cache.get([t["image_id"] for t in targets]).to(images.device)
            views = torch.tensor([list(t.get("view", IDENTITY_VIEW)) for t in targets], dtype=maps.dtype)
            return warp_views(maps, views.to(maps.device), grid)
        size = self.teacher.input_size(grid)
        x = images if images.shape[-1] == size else F.interpolate(images, size=(size, size), mode="bilinear",
                                                                   align_corners=False)
        maps = self.teacher.features(x)
        if maps.shape[-2:] != (grid, grid):
            maps = F.interpolate(maps, size=(grid, grid), mode="bilinear", align_corners=False)
        return maps

    def pair(self, outputs: dict, images: torch.Tensor, targets: list[dict]) -> dict:
        student = outputs["features"][self.level]
        t = self.teacher_maps(images, targets, student.shape[-1])
        return {"student": self.projector(student), "teacher": t.flatten(2).transpose(1, 2)}

    def observe_grads(self, params: list[torch.Tensor]) -> float:
        p = GAM.grad_ratio(self.aligned, params)
        self.gam.observe(p)
        return p
