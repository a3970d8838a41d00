"""Ablation at an equal CPU training budget: baseline vs +DSI/GAM vs +FDR, AP of the largest and smallest subnets.

    nice -n 10 python benchmarks/distill_ablation.py --data runs/data/synth --steps 300

Students: the tiny preset from scratch, trained on the first --train-images images of DATA/train with the same seed,
data order, subnet sequence and number of steps (one arm after the other). Arms:
  baseline  the plain recipe;
  dsi       + DSI with GAM, teacher = an edgedet supernet (default: the bundled demo, the tiny preset trained 12
            epochs on the full synthetic set), its largest subnet's deepest projector map; the teacher's features
            are computed once per image into a cache before training (its cost is reported apart);
  fdr       + the D-FINE FDR head with FGL and GO-LSD/DDF.
AP/AP50 (pycocotools) of the largest and smallest subnets of SPACE on the first --val-images images of DATA/valid.
Writes OUT/results.json and prints a Markdown table.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import torch

ARMS = ("baseline", "dsi", "fdr")


def subset(src: Path, dst: Path, split: str, n: int) -> Path:
    """DST/split: the first n images (by id) of SRC/split, images symlinked, annotations filtered."""
    from edgedet.data.coco import ANN_FILE, read_coco, split_paths

    images_dir, ann = split_paths(src, split)
    coco = read_coco(ann)
    images = sorted(coco["images"], key=lambda im: im["id"])[:n]
    ids = {im["id"] for im in images}
    out = dst / ("valid" if split in ("valid", "val") else split)
    out.mkdir(parents=True, exist_ok=True)
    for im in images:
        link = out / im["file_name"]
        if not link.exists():
            link.symlink_to((images_dir / im["file_name"]).resolve())
    data = dict(coco, images=images, annotations=[a for a in coco["annotations"] if a["image_id"] in ids])
    (out / ANN_FILE).write_text(json.dumps(data))
    return dst


def main() -> None:
    from edgedet.checkpoint import load_supernet
    from edgedet.config import level_grid, load_space
    from edgedet.data.coco import CocoDetection
    from edgedet.data.demo import demo_checkpoint
    from edgedet.evaluate import evaluate_subnets
    from edgedet.train.distill import TeacherCache
    from edgedet.train.engine import TrainConfig, train
    from edgedet.train.teachers import deepest_level, load_teacher

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("runs/data/synth"))
    ap.add_argument("--out", type=Path, default=Path("runs/distill_ablation"))
    ap.add_argument("--space", type=Path, default=Path("search/tiny.yaml"))
    ap.add_argument("--teacher", type=Path, default=None, help="default: the bundled demo supernet")
    ap.add_argument("--train-images", type=int, default=600)
    ap.add_argument("--val-images", type=int, default=100)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    arms = [x for x in a.arms.split(",") if x]
    teacher = a.teacher or demo_checkpoint()
    data = a.out / "data"
    subset(a.data, data, "train", a.train_images)
    subset(a.data, data, "valid", a.val_images)
    results = {"conditions": {
        "data": str(a.data), "train_images": a.train_images, "val_images": a.val_images, "steps": a.steps,
        "batch_size": a.batch_size, "groups": a.groups, "lr": a.lr, "warmup": a.warmup, "seed": a.seed,
        "space": str(a.space), "teacher": str(teacher), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "niceness": os.nice(0)},
        "arms": {}}
    for arm in arms:
        kw = {}
        if arm == "dsi":
            kw = {"teacher": str(teacher), "teacher_cache": str(a.out / "teacher_cache")}
        elif arm == "fdr":
            kw = {"fdr": True}
        elif arm != "baseline":
            raise SystemExit(f"unknown arm {arm!r}; arms are {', '.join(ARMS)}")
        cfg = TrainConfig(data=str(data), out=str(a.out / arm), preset="tiny", space=str(a.space), epochs=10_000,
                          batch_size=a.batch_size, lr=a.lr, warmup_steps=a.warmup, groups=a.groups, seed=a.seed,
                          max_steps=a.steps, workers=1, log_every=10, **kw)
        t0 = time.perf_counter()
        cache_s = 0.0
        if arm == "dsi":  # fill the cache on its own clock (train() finds it full), so the training clocks compare
            t = load_teacher(teacher)
            scfg = load_supernet(teacher).cfg
            lvl = scfg.levels[deepest_level(scfg.levels)]
            grid = max(level_grid(s.resolution // s.patch, lvl) for s in load_space(a.space, scfg).subnets(scfg))
            TeacherCache(t, cfg.teacher_cache, t.input_size(grid)).fill(CocoDetection(data, "train"), a.batch_size)
            cache_s = time.perf_counter() - t0
            t0 = time.perf_counter()
        ck = train(cfg, progress=True)
        train_s = time.perf_counter() - t0
        net = load_supernet(ck)
        big, small = net.cfg.largest(), net.cfg.smallest()  # the trained knob values are the space's
        t1 = time.perf_counter()
        ap_ = evaluate_subnets(net, [big, small], CocoDetection(data, "valid"))
        rows = [json.loads(line) for line in open(a.out / arm / "log.jsonl")]
        tail = rows[-5:]
        results["arms"][arm] = {
            "train_s": round(train_s, 1), "teacher_cache_s": round(cache_s, 1),
            "eval_s": round(time.perf_counter() - t1, 1),
            "final_layer_losses_last50": {k: round(sum(r[k] for r in tail) / len(tail), 4)
                                          for k in ("loss_ce", "loss_bbox", "loss_giou")},
            "dsi_weight": rows[-1].get("dsi_weight"), "gam_p": [r.get("gam_p") for r in rows if "gam_p" in r][-5:],
            "largest": {"id": big.id, **{k: round(ap_[big.id][k], 4) for k in ("AP", "AP50")}},
            "smallest": {"id": small.id, **{k: round(ap_[small.id][k], 4) for k in ("AP", "AP50")}},
        }
        (a.out / "results.json").write_text(json.dumps(results, indent=1))
        print(json.dumps({arm: results["arms"][arm]}), flush=True)
    c = results["conditions"]
    print(f"\n{c['steps']} steps x batch {c['batch_size']} per arm on {c['train_images']} training images, "
          f"AP on {c['val_images']} val images\n")
    print("| arm | train wall s | largest subnet AP | AP50 | smallest subnet AP | AP50 |")
    print("|---|---|---|---|---|---|")
    for arm, r in results["arms"].items():
        extra = f" (+{r['teacher_cache_s']:.0f} s teacher cache)" if r["teacher_cache_s"] else ""
        print(f"| {arm} | {r['train_s']:.0f}{extra} | {r['largest']['AP']:.4f} | {r['largest']['AP50']:.4f} | "
              f"{r['smallest']['AP']:.4f} | {r['smallest']['AP50']:.4f} |")


if __name__ == "__main__":
    main()
