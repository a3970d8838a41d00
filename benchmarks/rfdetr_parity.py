"""Parity of imported RF-DETR weights with the `rfdetr` package's own forward pass (Markdown table).

    python benchmarks/rfdetr_parity.py [--subnet ID ...] [--draws 8] [--threads 1]

Needs `rfdetr` importable next to edgedet (it is not an edgedet dependency). With the CPU torch, PyPI's torchvision
(a CUDA build) does not import; a stub `torchvision` package on PYTHONPATH providing the few names rfdetr imports
(transforms.functional resize/normalize/to_tensor/pil_to_tensor, InterpolationMode, ops.boxes.box_area,
_is_tracing, placeholder dataset/transform classes) is enough for building and running models offline.

Builds a random RF-DETR-N (`RFDETRNano(pretrain_weights=None)`), adds seeded noise to every parameter (so the
zero-initialised box heads and refpoint_embed are non-zero), saves it in rfdetr's format ({"model", "args":
argparse.Namespace}), imports it with `edgedet.importers.import_rfdetr`, and for each subnet builds rfdetr with the
same configuration (dec_layers / num_queries / resolution / num_windows) from that file through rfdetr's own loader,
then compares boxes and logits row by row (queries matched by position) on ImageNet-normalised images (edgedet gets
RGB in [0,1] and normalises inside). Inputs whose encoder scores are tied within 1e-4 at the top-k (where the query
order is float noise and rows cannot be matched by position) are skipped and counted; a selection that differs by
more than that is an error. Exit code 1 if any subnet differs by more than 1e-4.
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import torch

from edgedet.checkpoint import load_supernet
from edgedet.config import SubnetConfig
from edgedet.importers import import_rfdetr

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
NATIVE = {"dec_layers": 2, "num_queries": 300, "resolution": 384, "num_windows": 2}
DEFAULT = ["p16-r384-w2-d2-q300", "p16-r384-w2-d1-q300", "p16-r384-w2-d0-q300", "p16-r384-w2-d2-q100",
           "p16-r384-w2-d2-q50", "p16-r512-w2-d2-q300", "p16-r320-w2-d2-q300", "p16-r320-w2-d1-q100",
           "p16-r384-w1-d2-q300", "p16-r384-w4-d2-q300", "p16-r768-w2-d2-q300", "p16-r800-w2-d2-q300"]


def rf_overrides(s: SubnetConfig) -> dict:
    want = {"dec_layers": s.dec_layers, "num_queries": s.queries, "resolution": s.resolution, "num_windows": s.windows}
    return {k: v for k, v in want.items() if v != NATIVE[k]}


def make_checkpoint(RFDETRNano, folder: Path) -> Path:
    torch.manual_seed(0)
    m = RFDETRNano(pretrain_weights=None, device="cpu")
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in m.model.model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    ck = folder / "rand_nano.pth"
    args = argparse.Namespace(**vars(m.model.args))
    torch.save({"model": m.model.model.state_dict(), "args": args, "model_name": "RFDETRNano"}, ck)
    return ck


def compare(rf, module, res: int, draws: int, tie: float = 1e-4):
    """(max |d boxes|, max |d logits|, skipped draws) on the first input whose top-k order is unambiguous."""
    skipped = 0
    for seed in range(draws):
        x = torch.rand(1, 3, res, res, generator=torch.Generator().manual_seed(seed))
        cap_rf, cap_ed = [], []
        h1 = rf.transformer.enc_out_class_embed[0].register_forward_hook(lambda m, i, o: cap_rf.append(o))
        h2 = module.query_select.class_embed.register_forward_hook(lambda m, i, o: cap_ed.append(o))
        with torch.no_grad():
            out = rf((x - MEAN) / STD)
            boxes, logits = module(x)
        h1.remove()
        h2.remove()
        k = boxes.shape[1]
        scores = cap_rf[0].max(-1).values
        i_rf, i_ed = scores.topk(k, 1).indices, cap_ed[0].max(-1).values.topk(k, 1).indices
        if not torch.equal(i_rf, i_ed):
            gap = (scores.gather(1, i_rf) - scores.gather(1, i_ed)).abs()[i_rf != i_ed].max().item()
            if gap >= tie:
                raise AssertionError(f"top-k query selection differs beyond float noise (score gap {gap:.2e})")
            skipped += 1
            continue
        return ((boxes - out["pred_boxes"]).abs().max().item(), (logits - out["pred_logits"]).abs().max().item(),
                skipped)
    return float("nan"), float("nan"), skipped


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--subnet", action="append", help="subnet id (repeatable); default: a spread of knob values")
    ap.add_argument("--draws", type=int, default=8, help="input draws to try per subnet")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    try:
        from rfdetr import RFDETRNano
    except Exception as e:
        print(f"rfdetr is not importable ({type(e).__name__}: {e}); see this script's docstring", file=sys.stderr)
        return 2
    try:
        from importlib.metadata import version

        rf_version = version("rfdetr")
    except Exception:
        rf_version = "(source checkout)"

    with tempfile.TemporaryDirectory() as tmp:
        ck = make_checkpoint(RFDETRNano, Path(tmp))
        import_rfdetr(ck, Path(tmp) / "nano.safetensors")
        net = load_supernet(Path(tmp) / "nano.safetensors")
        print(f"rfdetr {rf_version}, torch {torch.__version__}, {a.threads} thread(s); "
              "random RF-DETR-N, every parameter + N(0, 0.02); batch 1, uniform RGB noise\n")
        print("| subnet | rfdetr built with | inputs skipped (top-k ties) | max abs diff boxes | max abs diff logits |")
        print("|---|---|---|---|---|")
        worst = 0.0
        for sid in a.subnet or DEFAULT:
            s = SubnetConfig.parse(sid, net.cfg)
            kw = rf_overrides(s)
            rf = RFDETRNano(pretrain_weights=str(ck), device="cpu", **kw).model.model.eval()
            db, dl, skipped = compare(rf, net.extract(s), s.resolution, a.draws)
            worst = max(worst, db, dl) if db == db else float("inf")
            built = ", ".join(f"{k}={v}" for k, v in kw.items()) or "native"
            print(f"| {sid} | {built} | {skipped} | {db:.2e} | {dl:.2e} |", flush=True)
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
