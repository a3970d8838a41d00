"""Learning curves (PNG) and a Markdown table from a benchmarks/distill_ablation.py run folder.

    python benchmarks/distill_ablation_report.py [--out RUN] [--png benchmarks/distill_ablation.png]

Reads RUN/ARM/evals.jsonl (one line per epoch), RUN/plan.json and RUN/target.json. The table compares every arm at
the last epoch all arms reached with the range of the baseline seeds (baseline, baseline_s1, baseline_s2): a value
above the highest seed is marked `+`, below the lowest `-`; two more tables give the learning curves (AP50 / AP75
per epoch and arm, marked the same way) at the largest and the smallest subnet. A run that has not reached its
target epochs is labelled PARTIAL in the table and in the figure, with the epochs each arm reached.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

ARM_ORDER = ("baseline", "baseline_s1", "baseline_s2", "dsi", "fdr", "dsi_fdr")
SEEDS = ("baseline", "baseline_s1", "baseline_s2")
LABELS = {"baseline": "baseline seed 0", "baseline_s1": "baseline seed 1", "baseline_s2": "baseline seed 2",
          "dsi": "+DSI/GAM", "fdr": "+FDR", "dsi_fdr": "+DSI/GAM +FDR"}
COLORS = {"dsi": "tab:blue", "fdr": "tab:red", "dsi_fdr": "tab:purple"}
METRICS = ("AP", "AP50", "AP75")


def load(run: Path) -> dict[str, list[dict]]:
    """{arm: its evals.jsonl rows by epoch} for the arms that have any."""
    out = {}
    for arm in ARM_ORDER:
        f = run / arm / "evals.jsonl"
        rows = [json.loads(x) for x in f.read_text().splitlines() if x.strip()] if f.is_file() else []
        if rows:
            out[arm] = sorted(rows, key=lambda r: r["epoch"])
    return out


def progress_note(runs: dict[str, list[dict]], target: int | None) -> str | None:
    """None when every arm reached `target` epochs, else 'PARTIAL: ...' naming how far each arm got."""
    done = {arm: len(rows) for arm, rows in runs.items()}
    if target is not None and done and min(done.values()) >= target and len(done) == len(ARM_ORDER):
        return None
    got = ", ".join(f"{LABELS[a]} {done.get(a, 0)}" for a in ARM_ORDER)
    return f"PARTIAL (target {target} epochs): epochs done per arm: {got}"


def seed_range(runs: dict[str, list[dict]], epoch: int, sub: str, metric: str) -> tuple[float, float] | None:
    vals = [runs[a][epoch - 1][sub][metric] for a in SEEDS if a in runs and len(runs[a]) >= epoch]
    return (min(vals), max(vals)) if len(vals) >= 2 else None


def _mark(v: float, rng: tuple[float, float] | None, arm: str) -> str:
    if arm in SEEDS or rng is None:
        return f"{v:.4f}"
    return f"{v:.4f}" + ("+" if v > rng[1] else "-" if v < rng[0] else "")


def table(runs: dict[str, list[dict]], target: int | None = None, costs: dict | None = None) -> str:
    """Markdown: per arm, AP/AP50/AP75 of the largest and smallest subnets at the last common epoch, the mean AP50
    of the largest subnet over epochs 1..that epoch (convergence), and the training CPU hours."""
    if not runs:
        return "no epochs evaluated yet"
    epoch = min(len(rows) for rows in runs.values())
    any_rows = next(iter(runs.values()))
    big, small = any_rows[0]["largest"]["id"], any_rows[0]["smallest"]["id"]
    lines = []
    note = progress_note(runs, target)
    if note:
        lines += [f"**{note}**", ""]
    lines += [f"Epoch {epoch} (step {any_rows[epoch - 1]['step']}); `+`/`-`: above/below all baseline seeds.", "",
              (f"| arm | largest `{big}` AP | AP50 | AP75 | smallest `{small}` AP | AP50 | AP75 | "
               f"largest AP50, mean of epochs 1-{epoch} | train CPU h |"),
              "|---|---|---|---|---|---|---|---|---|"]
    auc = {a: sum(r["largest"]["AP50"] for r in rows[:epoch]) / epoch for a, rows in runs.items()}
    auc_seeds = [auc[a] for a in SEEDS if a in auc]
    auc_rng = (min(auc_seeds), max(auc_seeds)) if len(auc_seeds) >= 2 else None
    for arm, rows in runs.items():
        r = rows[epoch - 1]
        cells = [_mark(r[sub][m], seed_range(runs, epoch, sub, m), arm) for sub in ("largest", "smallest")
                 for m in METRICS]
        cpu = sum(x["train_cpu_s"] for x in rows[:epoch]) / 3600
        lines.append(f"| {LABELS[arm]} | {' | '.join(cells)} | {_mark(auc[arm], auc_rng, arm)} | {cpu:.2f} |")
    rngs = [seed_range(runs, epoch, sub, m) for sub in ("largest", "smallest") for m in METRICS] + [auc_rng]
    if all(rngs):
        lines.append("| baseline seed range | " + " | ".join(f"{lo:.4f}-{hi:.4f}" for lo, hi in rngs) + " | |")
    if costs:
        lines += ["", "Inference cost (analytic, batch 1): " + "; ".join(
            f"{name} {sub} {c['gflops']:.2f} GFLOPs, {c['params_m']:.2f} M params" for name, subs in costs.items()
            for sub, c in subs.items())]
    return "\n".join(lines)


def curves_table(runs: dict[str, list[dict]], sub: str) -> str:
    """Markdown learning curves of one subnet ("largest" or "smallest"): a row per epoch that every arm reached,
    a column per arm with AP50 / AP75, arms marked +/- against the baseline seeds' range at that epoch."""
    if not runs:
        return ""
    n = min(len(rows) for rows in runs.values())
    arms = list(runs)
    sid = next(iter(runs.values()))[0][sub]["id"]
    lines = [f"{sub.capitalize()} subnet `{sid}`, AP50 / AP75 per epoch:", "",
             "| epoch | " + " | ".join(LABELS[a] for a in arms) + " |", "|---" * (len(arms) + 1) + "|"]
    for e in range(1, n + 1):
        cells = [" / ".join(_mark(runs[a][e - 1][sub][m], seed_range(runs, e, sub, m), a) for m in ("AP50", "AP75"))
                 for a in arms]
        lines.append(f"| {e} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(runs: dict[str, list[dict]], path: Path, title: str, note: str | None = None) -> None:
    """2 x 2 learning curves (largest/smallest subnet x AP50/AP75): the baseline seeds as grey lines over their
    min-max band, the other arms in colour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(2, 2, figsize=(8.4, 5.8), sharex=True)
    for i, sub in enumerate(("largest", "smallest")):
        for j, m in enumerate(("AP50", "AP75")):
            ax = axes[i][j]
            seeds = [runs[a] for a in SEEDS if a in runs]
            if len(seeds) >= 2:
                n = min(len(s) for s in seeds)
                xs = list(range(1, n + 1))
                ax.fill_between(xs, [min(s[k][sub][m] for s in seeds) for k in range(n)],
                                [max(s[k][sub][m] for s in seeds) for k in range(n)], color="0.85", lw=0,
                                label="baseline seed range")
            for a in SEEDS:
                if a in runs:
                    ax.plot([r["epoch"] for r in runs[a]], [r[sub][m] for r in runs[a]], color="0.45", lw=1,
                            ls="-" if a == "baseline" else ":", label=LABELS[a])
            for a, c in COLORS.items():
                if a in runs:
                    ax.plot([r["epoch"] for r in runs[a]], [r[sub][m] for r in runs[a]], color=c, lw=1.6,
                            marker="o", ms=2.5, label=LABELS[a])
            rid = next(iter(runs.values()))[0][sub]["id"] if runs else sub
            ax.set_title(f"{sub} subnet {rid}: {m}", fontsize=9)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=8)
            ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
            if i == 1:
                ax.set_xlabel("epoch", fontsize=8)
    axes[0][0].legend(fontsize=7, loc="upper left")
    import textwrap

    text = "\n".join(textwrap.fill(t, 130) for t in [title] + ([note] if note else []))
    fig.suptitle(text, fontsize=8.5, color="black" if not note else "darkred")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def inference_costs(run: Path, runs: dict[str, list[dict]]) -> dict:
    """{'plain'|'FDR': {'largest'|'smallest': {gflops, params_m}}} from the arms' checkpoint headers."""
    from edgedet.checkpoint import read_header
    from edgedet.config import SubnetConfig
    from edgedet.model.cost import subnet_cost

    out = {}
    for name, arm in (("plain", "baseline"), ("FDR", "fdr")):
        ck = run / arm / "model.safetensors"
        if arm not in runs or not ck.is_file():
            continue
        cfg = read_header(ck)[0]
        subs = {}
        for sub in ("largest", "smallest"):
            p, r, w, d, q = runs[arm][0][sub]["id"].split("-")
            s = SubnetConfig(patch=int(p[1:]), resolution=int(r[1:]), windows=int(w[1:]), dec_layers=int(d[1:]),
                             queries=int(q[1:]))
            c = subnet_cost(cfg, s)
            subs[sub] = {"gflops": c.gflops, "params_m": c.params / 1e6}
        out[name] = subs
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/distill_ablation"), help="the run folder")
    ap.add_argument("--png", type=Path, default=Path("benchmarks/distill_ablation.png"))
    a = ap.parse_args(argv)
    runs = load(a.out)
    plan = json.loads((a.out / "plan.json").read_text())
    tf = a.out / "target.json"
    target = json.loads(tf.read_text())["epochs"] if tf.is_file() else None
    steps, sp = plan["train_images"] // plan["batch_size"], plan["space"]
    title = (f"tiny preset from scratch, {plan['train_images']} synthetic train images, batch {plan['batch_size']}, "
             f"{steps} steps/epoch, space p{'/'.join(map(str, sp['patch']))} r{'/'.join(map(str, sp['resolution']))}; "
             f"AP (pycocotools) on {plan['val_images']} val images")
    note = progress_note(runs, target)
    plot(runs, a.png, title, note)
    print(table(runs, target, inference_costs(a.out, runs)))
    for sub in ("largest", "smallest"):
        print("\n" + curves_table(runs, sub))
    print(f"\nwrote {a.png} ({a.png.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
