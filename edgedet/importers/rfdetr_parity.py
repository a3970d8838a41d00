"""Checking an import against the `rfdetr` package's own forward pass (benchmarks/rfdetr_parity.py and
tests/importers/test_rfdetr_parity.py use it; so can a user with rfdetr installed).

Needs `rfdetr` importable (not an edgedet dependency). Models are built offline: `pretrain_weights=None` makes
rfdetr fetch DINOv2 weights from the Hugging Face hub for the patch-14 models; `offline_rfdetr()` builds those
backbones from their config instead (random weights, which is all a parity check needs).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .rfdetr_config import Layout

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def offline_rfdetr():
    """The rfdetr module, with hub downloads of DINOv2 backbones replaced by building them from their config.
    ImportError (or whatever rfdetr raises on import) when it is not usable."""
    import logging
    import warnings

    import rfdetr
    from rfdetr.models.backbone import dinov2

    warnings.filterwarnings("ignore", module="rfdetr")
    warnings.filterwarnings("ignore", message=".*pretrain_weights=None")  # random models are the point here
    logging.getLogger("rf-detr").setLevel(logging.ERROR)
    backbone = dinov2.WindowedDinov2WithRegistersBackbone
    backbone.from_pretrained = classmethod(lambda cls, name, config=None, **kw: cls(config))
    return rfdetr


def settings(lay: Layout) -> list[tuple[str, dict]]:
    """(subnet id, the rfdetr constructor overrides that build the same network) for a layout: native, a shallower
    decoder with fewer queries, a lower resolution, one window."""
    p, r, w, d = lay.patch, lay.resolution, lay.windows, lay.dec_layers
    low = r - 2 * p * w
    return [(f"p{p}-r{r}-w{w}-d{d}-q300", {}),
            (f"p{p}-r{r}-w{w}-d{d - 1}-q100", {"dec_layers": d - 1, "num_queries": 100}),
            (f"p{p}-r{low}-w{w}-d{d}-q300", {"resolution": low}),
            (f"p{p}-r{r}-w1-d{d}-q300", {"num_windows": 1})]


def _plain(v) -> bool:
    return isinstance(v, (bool, int, float, str, type(None))) or (
        isinstance(v, (list, tuple)) and all(isinstance(x, (bool, int, float, str)) for x in v))


def save_random(model: str, folder: Path, seed: int = 0, noise: float = 0.02) -> tuple[Path, Path]:
    """A random rfdetr `model` (class name, e.g. "RFDETRBase") with every parameter + N(0, noise) (so the
    zero-initialised box heads and reference embeddings are exercised), saved as rfdetr 1.11 saves it
    ({"model", "args": dict, "model_name", "rfdetr_version"}) and as a bare {"model": state_dict}
    -> (with args, bare)."""
    rfdetr = offline_rfdetr()
    torch.manual_seed(seed)
    m = getattr(rfdetr, model)(pretrain_weights=None, device="cpu")
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in m.model.model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * noise)
    sd = m.model.model.state_dict()
    args = {k: v for k, v in vars(m.model.args).items() if _plain(v)}
    folder.mkdir(parents=True, exist_ok=True)
    with_args, bare = folder / f"{model}.pth", folder / f"{model}-bare.pth"
    torch.save({"model": sd, "args": args, "model_name": model, "rfdetr_version": "1.11.2"}, with_args)
    torch.save({"model": sd}, bare)
    return with_args, bare


def compare(rf, module, resolution: int, draws: int = 8, tie: float = 1e-4) -> tuple[float, float, int] | None:
    """rfdetr's model `rf` (eval mode) vs an extracted edgedet subnet `module` on uniform-noise images ->
    (max |d boxes|, max |d logits|, input draws skipped) on the first draw whose top-k query selection is
    unambiguous (queries are matched by position; draws whose encoder scores tie within `tie` at the top-k are
    skipped), or None when every draw tied. AssertionError when the selections differ beyond `tie`."""
    skipped = 0
    for seed in range(draws):
        x = torch.rand(1, 3, resolution, resolution, generator=torch.Generator().manual_seed(seed))
        cap_rf, cap_ed = [], []
        h1 = rf.transformer.enc_out_class_embed[0].register_forward_hook(lambda m, i, o: cap_rf.append(o))
        h2 = module.query_select.class_embed.register_forward_hook(lambda m, i, o: cap_ed.append(o))
        with torch.no_grad():
            out = rf((x - MEAN) / STD)
            boxes, logits = module(x)
        h1.remove()
        h2.remove()
        assert out["pred_boxes"].shape == boxes.shape and out["pred_logits"].shape == logits.shape
        k = boxes.shape[1]
        scores = cap_rf[0].max(-1).values
        i_rf, i_ed = scores.topk(k, 1).indices, cap_ed[0].max(-1).values.topk(k, 1).indices
        if not torch.equal(i_rf, i_ed):
            gap = (scores.gather(1, i_rf) - scores.gather(1, i_ed)).abs()[i_rf != i_ed].max().item()
            assert gap < tie, f"top-k query selection differs beyond float noise (score gap {gap:.2e})"
            skipped += 1
            continue
        return ((boxes - out["pred_boxes"]).abs().max().item(), (logits - out["pred_logits"]).abs().max().item(),
                skipped)
    return None
