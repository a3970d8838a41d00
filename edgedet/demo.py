"""`make demo`: the main job on this machine's CPU.

Until the search lands it runs the export path on the bundled demo supernet (the tiny preset trained here on
synthetic data; random weights if the file is missing): subnets from the smallest to the largest are exported to
ONNX, checked against torch in ONNX Runtime, timed on the CPU, and their AP measured on the demo val set.
"""
from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np


def _p50_ms(path: Path, res: int, runs: int = 20, threads: int = 2) -> float:
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((1, 3, res, res), dtype=np.float32)
    for _ in range(3):
        sess.run(None, {"images": x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, {"images": x})
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main(out: Path = Path("runs/demo")) -> None:
    from rich.console import Console
    from rich.table import Table

    from .api import build_supernet, export_onnx, load_supernet
    from .config import SubnetConfig
    from .data.coco import CocoDetection
    from .data.demo import DEMO_CHECKPOINT, demo_data
    from .evaluate import evaluate_subnets
    from .model.cost import subnet_cost

    con = Console(width=120)
    trained = DEMO_CHECKPOINT.is_file()
    net = load_supernet(DEMO_CHECKPOINT) if trained else build_supernet("tiny", seed=0)
    cfg = net.cfg
    subnets = [cfg.smallest(), SubnetConfig.parse("p16-r288-w2-d2-q50", cfg), cfg.largest()]
    con.print(f"[bold]edgedet demo[/bold]: supernet '{cfg.name}' "
              f"({'bundled demo checkpoint' if trained else 'random weights: bundled checkpoint missing'}); "
              f"exporting {len(subnets)} subnets to {out}/")
    aps = {}
    if trained:
        con.print("measuring AP on the demo val set (generated on first use) ...")
        aps = evaluate_subnets(net, subnets, CocoDetection(demo_data(), "valid"))
    t = Table(title="subnets exported to ONNX, checked with ONNX Runtime, timed (CPU, 2 threads, batch 1)")
    for col in ("subnet", "GFLOPs", "params (M)", "ONNX MB", "max |ORT - torch|", "p50 ms", "AP50", "AP"):
        t.add_column(col, justify="right")
    for s in subnets:
        path = out / f"{s.id}.onnx"
        res = export_onnx(net, s, path)
        c = subnet_cost(cfg, s)
        m = aps.get(s.id)
        t.add_row(s.id, f"{c.gflops:.2f}", f"{c.params / 1e6:.2f}", f"{res.size_bytes / 1e6:.1f}",
                  f"{max(res.max_abs_diff.values()):.1e}", f"{_p50_ms(path, s.resolution):.1f}",
                  f"{m['AP50']:.3f}" if m else "-", f"{m['AP']:.3f}" if m else "-")
    con.print(t)


if __name__ == "__main__":
    main()
