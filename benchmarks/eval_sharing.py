"""Benchmark: evaluating many subnets with shared computation vs one forward per subnet.

    python benchmarks/eval_sharing.py [--checkpoint CKPT] [--data DIR] [--images 40] [--batch-size 8]

Generates (or reuses) a synthetic validation set under runs/bench/synth, builds the tiny supernet (random weights
unless --checkpoint), evaluates a grid of subnets (patches x resolutions x windows x every depth x query counts)
with evaluate_subnets(share=True) and (share=False), prints subnets evaluated per minute for each, the speed-up and
whether the metrics are identical (exit code 1 if not).
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

from edgedet import evaluate as ev
from edgedet.api import build_supernet, load_supernet
from edgedet.config import SubnetConfig
from edgedet.data.coco import ANN_FILE, CocoDetection
from edgedet.data.synthetic import generate


def open_val(root: Path, images: int, tmp: Path) -> CocoDetection:
    """The first `images` images of root/valid (a trimmed copy of the annotation file when there are more)."""
    ds = CocoDetection(root, "valid")
    if len(ds) <= images:
        return ds
    keep = {im["id"] for im in ds.images[:images]}
    coco = dict(ds.coco, images=[im for im in ds.coco["images"] if im["id"] in keep],
                annotations=[a for a in ds.coco["annotations"] if a["image_id"] in keep])
    ann = tmp / ANN_FILE
    ann.write_text(json.dumps(coco))
    return CocoDetection(images_dir=ds.images_dir, ann_file=ann)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", help="supernet .safetensors (default: tiny preset, random weights)")
    ap.add_argument("--data", type=Path, default=Path("runs/bench/synth"),
                    help="dataset root with valid/_annotations.coco.json (generated here if missing)")
    ap.add_argument("--images", type=int, default=40, help="validation images to evaluate")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--patches", type=int, nargs="+", default=[16, 24])
    ap.add_argument("--resolutions", type=int, nargs="+", default=[192, 288])
    ap.add_argument("--windows", type=int, nargs="+", default=[1])
    ap.add_argument("--queries", type=int, nargs="+", default=[25, 50, 100])
    ap.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    ann = args.data / "valid" / ANN_FILE
    default = args.data == ap.get_default("data")
    if not ann.is_file() or (default and len(json.loads(ann.read_text())["images"]) < args.images):
        print(f"generating {args.images} synthetic validation images (320 px) under {args.data}", flush=True)
        generate(args.data, n_train=0, n_val=args.images, seed=0, image_size=320)
    tmp = tempfile.TemporaryDirectory()
    data = open_val(args.data, args.images, Path(tmp.name))
    net = load_supernet(args.checkpoint) if args.checkpoint else build_supernet("tiny")
    cfg = net.cfg
    subnets = [SubnetConfig(patch=p, resolution=r, windows=w, dec_layers=d, queries=q).check(cfg)
               for p, r, w, d, q in itertools.product(args.patches, args.resolutions, args.windows, cfg.dec_depths,
                                                      args.queries)]
    print(f"{len(subnets)} subnets ({len(args.patches)} patches x {len(args.resolutions)} resolutions x "
          f"{len(args.windows)} windows x {len(cfg.dec_depths)} depths x {len(args.queries)} query counts), "
          f"{len(data)} images, batch {args.batch_size}; supernet {cfg.name} "
          f"({'checkpoint ' + args.checkpoint if args.checkpoint else 'random weights'})")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}, python {platform.python_version()}, load average "
          f"{os.getloadavg()[0]:.2f} (other processes slow both modes)", flush=True)

    coco_s = [0.0]  # time inside COCOeval (the same work in both modes), measured by wrapping coco_ap
    real_ap = ev.coco_ap

    def timed_ap(*a, **k):
        t = time.perf_counter()
        try:
            return real_ap(*a, **k)
        finally:
            coco_s[0] += time.perf_counter() - t

    ev.coco_ap = timed_ap
    results, total, model = {}, {}, {}
    for share in (True, False):
        coco_s[0] = 0.0
        t0 = time.perf_counter()
        results[share] = ev.evaluate_subnets(net, subnets, data, batch_size=args.batch_size, share=share)
        total[share] = time.perf_counter() - t0
        model[share] = total[share] - coco_s[0]
        print(f"share={share!s:5}: {total[share]:6.1f} s = {model[share]:6.1f} s images+model+postprocess "
              f"+ {coco_s[0]:5.1f} s COCOeval; {len(subnets) / total[share] * 60:6.1f} subnets/min "
              f"(without COCOeval {len(subnets) / model[share] * 60:6.1f})", flush=True)
    ev.coco_ap = real_ap
    same = results[True] == results[False]
    best = max(results[True].items(), key=lambda kv: kv[1]["AP"])
    print(f"speed-up {total[False] / total[True]:.1f}x end to end, {model[False] / model[True]:.1f}x without "
          f"COCOeval; metrics identical: {same}; best AP {best[1]['AP']:.4f} ({best[0]})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
