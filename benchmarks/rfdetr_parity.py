"""Parity of imported RF-DETR checkpoints with the `rfdetr` package's own forward pass (Markdown table).

    PYTHONPATH=benchmarks/rfdetr_env:/tmp/rfenv:. python benchmarks/rfdetr_parity.py [--model RFDETRBase ...]
        [--draws 8] [--threads 1]

Needs `rfdetr` importable next to edgedet (not an edgedet dependency); with the CPU torch, PyPI's torchvision does
not import, so benchmarks/rfdetr_env holds a pure-Python stand-in (its docstring has the install line).

For each detection model rfdetr 1.11 builds (edgedet.importers.rfdetr_config.LAYOUTS), a random model with every
parameter + N(0, 0.02) is saved as rfdetr saves it (with `args`) and as a bare {"model": state_dict}; both files are
imported; for the native subnet and three other knob settings (shallower decoder + fewer queries, lower resolution,
one window) rfdetr builds the same network from the file through its own loader, and boxes and logits are compared
row by row (edgedet.importers.rfdetr_parity.compare: queries matched by position, inputs whose top-k encoder scores
tie within 1e-4 skipped and counted). Prints the CPU (model, flags that change float results) first. Exit code 1 if
any difference exceeds 1e-4.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from edgedet.checkpoint import load_supernet
from edgedet.config import SubnetConfig
from edgedet.importers import import_rfdetr
from edgedet.importers.rfdetr_config import LAYOUTS
from edgedet.importers.rfdetr_parity import compare, offline_rfdetr, save_random, settings


def cpu() -> str:
    """CPU model and the instruction-set flags that decide float kernels (AVX-512, AMX, bf16)."""
    from edgedet.devices.agent import cpu_flags, cpu_model

    keep = sorted(f for f in cpu_flags() if f.startswith(("avx512f", "avx512_bf16", "amx", "avx2", "fma")))
    return f"{cpu_model()} ({', '.join(keep) or 'flags unknown'})"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", action="append", help="rfdetr class (repeatable); default: every layout")
    ap.add_argument("--draws", type=int, default=8, help="input draws to try per subnet")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    try:
        rfdetr = offline_rfdetr()
    except Exception as e:
        print(f"rfdetr is not importable ({type(e).__name__}: {e}); see this script's docstring", file=sys.stderr)
        return 2
    from importlib.metadata import PackageNotFoundError, version

    try:
        rf_version = version("rfdetr")
    except PackageNotFoundError:
        rf_version = "(source checkout)"
    print(f"rfdetr {rf_version}, torch {torch.__version__}, {a.threads} thread(s), cpu {cpu()}; random models, "
          "every parameter + N(0, 0.02); batch 1, uniform RGB noise\n")
    print("| model | subnet | rfdetr built with | import | draws skipped (top-k ties) | max abs diff boxes | "
          "max abs diff logits |")
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    by_name = {lay.model: lay for lay in LAYOUTS}
    for name in a.model or list(by_name):
        lay = by_name[name]
        with tempfile.TemporaryDirectory() as tmp:
            files = dict(zip(("args", "bare"), save_random(name, Path(tmp))))
            nets = {}
            for tag, ck in files.items():
                import_rfdetr(ck, Path(tmp) / f"{tag}.safetensors")
                nets[tag] = load_supernet(Path(tmp) / f"{tag}.safetensors")
            for sid, kw in settings(lay):
                rf = getattr(rfdetr, name)(pretrain_weights=str(files["args"]), device="cpu", **kw).model.model.eval()
                for tag, net in nets.items():
                    s = SubnetConfig.parse(sid, net.cfg)
                    res = compare(rf, net.extract(s), s.resolution, a.draws)
                    db, dl, skipped = res if res else (float("nan"), float("nan"), a.draws)
                    worst = max(worst, db, dl) if res else float("inf")
                    built = ", ".join(f"{k}={v}" for k, v in kw.items()) or "native"
                    print(f"| {name} | {sid} | {built} | {'with args' if tag == 'args' else 'bare'} | {skipped} | "
                          f"{db:.2e} | {dl:.2e} |", flush=True)
    return 0 if worst <= 1e-4 else 1


if __name__ == "__main__":
    sys.exit(main())
