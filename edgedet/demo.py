"""`make demo`: the main job on this machine's CPU.

Today it runs the export path on the tiny supernet: pick subnets across the space, export each to ONNX, check ONNX
Runtime against torch, and time them on the CPU. The search (hardware-in-the-loop Pareto front) replaces it later.
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

    from .api import build_supernet, export_onnx
    from .config import SubnetConfig
    from .model.cost import subnet_cost

    con = Console(width=120)
    net = build_supernet("tiny", seed=0)
    cfg = net.cfg
    subnets = [cfg.smallest(), SubnetConfig.parse("p16-r288-w2-d2-q50", cfg), cfg.largest()]
    con.print(f"[bold]edgedet demo[/bold]: supernet '{cfg.name}' (random weights until the demo checkpoint ships); "
              f"exporting {len(subnets)} subnets to {out}/")
    t = Table(title="subnets exported to ONNX and checked with ONNX Runtime (CPU, 2 threads, batch 1)")
    for col in ("subnet", "GFLOPs", "params (M)", "ONNX MB", "max |ORT - torch|", "p50 ms"):
        t.add_column(col, justify="right")
    for s in subnets:
        path = out / f"{s.id}.onnx"
        res = export_onnx(net, s, path)
        c = subnet_cost(cfg, s)
        t.add_row(s.id, f"{c.gflops:.2f}", f"{c.params / 1e6:.2f}", f"{res.size_bytes / 1e6:.1f}",
                  f"{max(res.max_abs_diff.values()):.1e}", f"{_p50_ms(path, s.resolution):.1f}")
    con.print(t)


if __name__ == "__main__":
    main()
