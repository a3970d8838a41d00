"""AP across the knob extremes of a supernet (the accuracy/cost trade-off the search uses), as a Markdown table.

    python benchmarks/ap_table.py [--checkpoint CKPT] [--data DIR]      (defaults: the bundled demo supernet, its val set)

Each row changes one knob of the largest subnet to its other extreme; all rows come from one shared-computation
evaluation (pycocotools AP on the val split).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from edgedet.checkpoint import load_supernet
from edgedet.config import SearchSpace
from edgedet.data.coco import CocoDetection
from edgedet.data.demo import demo_checkpoint, demo_data
from edgedet.evaluate import evaluate_subnets
from edgedet.model.cost import subnet_cost


def rows(cfg, space: SearchSpace):
    big = cfg.largest()
    out = [("largest", big)]
    for knob, vals in (("dec_layers", space.dec_layers), ("resolution", space.resolution),
                       ("patch", space.patch), ("queries", space.queries), ("windows", space.windows)):
        for v in vals:
            s = big.model_copy(update={knob: v})
            if v != getattr(big, knob) and not cfg.subnet_ok(s):
                out.append((f"{knob} {v}", s))
    out.append(("smallest", cfg.smallest()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", type=Path, default=None)
    ap.add_argument("--data", type=Path, default=None)
    a = ap.parse_args()
    ck = a.checkpoint or demo_checkpoint()
    net = load_supernet(ck)
    cfg = net.cfg
    ds = CocoDetection(a.data or demo_data(), "valid")
    table = rows(cfg, SearchSpace.of(cfg))
    t0 = time.perf_counter()
    res = evaluate_subnets(net, [s for _, s in table], ds)
    print(f"AP on {len(ds)} val images of {a.data or 'the demo val set'} ({ck.name}; {time.perf_counter() - t0:.0f} s)\n")
    print("| change from largest | subnet | GFLOPs | params (M) | AP | AP50 | AP75 | APs | APm | APl |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, s in table:
        m, c = res[s.id], subnet_cost(cfg, s)
        print(f"| {name} | `{s.id}` | {c.gflops:.2f} | {c.params / 1e6:.2f} | "
              + " | ".join(f"{m[k]:.3f}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")) + " |")


if __name__ == "__main__":
    main()
