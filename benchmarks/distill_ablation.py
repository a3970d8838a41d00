"""Does DSI/GAM (RT-DETRv4) or FDR (D-FINE) pay? Learning curves of six arms at an equal CPU budget, resumable.

    nice -n 19 python benchmarks/distill_ablation.py --detach    # start (or continue) in the background
    python benchmarks/distill_ablation.py --status                # epochs done per arm, latest AP
    python benchmarks/distill_ablation.py --pause                 # SIGSTOP every process of the run
    python benchmarks/distill_ablation.py --resume-paused         # SIGCONT
    python benchmarks/distill_ablation_report.py                  # PNG + Markdown table from RUN/*/evals.jsonl

Arms (the tiny preset from scratch on the first --train-images images of the demo's synthetic training set, all
with the space SPACE below, batch 8, the demo's optimiser settings):
  baseline, baseline_s1, baseline_s2   the plain recipe with seeds 0, 1, 2 (seed = init, data order, subnet order);
  dsi       seed 0 + DSI with GAM; teacher: the bundled demo supernet (edgedet/assets/demo_tiny.safetensors), its
            largest subnet's deepest projector map, cached per image before training (its own task, own clock);
  fdr       seed 0 + the D-FINE FDR head (FGL, GO-LSD, DDF);
  dsi_fdr   seed 0 + both.
Every arm trains one epoch per task (`train(..., resume=True)` on RUN/ARM), then its EMA weights are evaluated with
pycocotools at the largest and smallest subnets of SPACE on the demo val set (300 images); one JSON line per epoch
goes to RUN/ARM/evals.jsonl (AP, AP50, AP75, APs/m/l, CPU and wall seconds, load average).

Scheduling: tasks run in epoch order across arms (all arms reach epoch e before any starts e+2), --jobs at a time,
each a subprocess with --threads torch threads, niceness 19, all in one process group whose id is in RUN/driver.pid
(--pause / --resume-paused signal that group). Re-running continues: a finished epoch is never retrained; an epoch
killed half-way restarts from the last finished epoch's state; an arm folder is locked while a task uses it.
Progress: `tail -f RUN/progress.log`; a task's own output: RUN/ARM/task.log.
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ARMS = {"baseline": (0, False, False), "baseline_s1": (1, False, False), "baseline_s2": (2, False, False),
        "dsi": (0, True, False), "fdr": (0, False, True), "dsi_fdr": (0, True, True)}  # seed, DSI, FDR
SPACE = {"patch": [16, 24], "resolution": [192, 288], "windows": [1, 2], "dec_layers": [1, 2, 3],
         "queries": [25, 50, 100]}
PLAN_KEYS = ("train_images", "batch_size", "lr", "warmup", "groups", "teacher")  # fixed for the life of a run
BUSY = 75  # exit code of a task whose arm folder is locked by another process


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("runs/distill_ablation"), help="the run folder (RUN)")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated subset of {','.join(ARMS)}")
    ap.add_argument("--epochs", type=int, default=15, help="epochs per arm (raising it later extends the run)")
    ap.add_argument("--train-images", type=int, default=1500)
    ap.add_argument("--val-images", type=int, default=300, help="first N images of the demo val set")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--groups", type=int, default=4)
    ap.add_argument("--teacher", default=None, help="default: the bundled demo supernet")
    ap.add_argument("--jobs", type=int, default=2, help="tasks at a time")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per task")
    ap.add_argument("--max-steps", type=int, default=None, help="smoke tests: cap the steps of each epoch")
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--detach", action="store_true", help="run the driver in the background and return")
    mode.add_argument("--pause", action="store_true")
    mode.add_argument("--resume-paused", action="store_true")
    mode.add_argument("--status", action="store_true")
    mode.add_argument("--task", default=None, help=argparse.SUPPRESS)  # internal: ARM:EPOCH or 'cache'
    a = ap.parse_args(argv)
    for arm in a.arms.split(","):
        if arm not in ARMS:
            ap.error(f"--arms: unknown arm {arm!r}; arms are {', '.join(ARMS)}")
    return a


def log(run: Path, msg: str) -> None:
    line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {msg}"
    with open(run / "progress.log", "a") as f:
        f.write(line + "\n")
    print(line, flush=True)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def epochs_done(run: Path, arm: str) -> int:
    """Epochs of ARM trained AND evaluated (the number of lines of RUN/ARM/evals.jsonl)."""
    return len(read_jsonl(run / arm / "evals.jsonl"))


# ---------------------------------------------------------------------------------------------------------------
# process group: pause / resume / one driver at a time

def group_members(pgid: int) -> list[int]:
    """Live pids in process group `pgid` whose command line names this script (so a reused pgid is not hit)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[2]) == pgid and b"distill_ablation" in cmd:
            pids.append(int(d.name))
    return pids


def _state(pid: int) -> str:
    """One-letter process state from /proc (R, S, T, ...; '?' when gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "?"
    return stat[stat.rindex(")") + 2]


def signal_run(run: Path, sig: int) -> int:
    """Send `sig` to the run's process group; returns how many processes it reached (0: not running)."""
    pid_file = run / "driver.pid"
    if not pid_file.is_file():
        return 0
    pgid = int(pid_file.read_text().split()[0])
    members = group_members(pgid)
    if members:
        os.killpg(pgid, sig)
    return len(members)


# ---------------------------------------------------------------------------------------------------------------
# data, plan and one task (one epoch of one arm, or the teacher cache)

def prepare(run: Path, a: argparse.Namespace) -> dict:
    """RUN/data (train: the demo training set's first N images, generated; valid: the demo val set) and
    RUN/plan.json, which later invocations must match (only --epochs, --jobs, --threads, --arms may change)."""
    from edgedet.data.coco import ANN_FILE, read_coco
    from edgedet.data.demo import DEMO_IMAGE_SIZE, DEMO_SEED, demo_checkpoint, demo_data
    from edgedet.data.synthetic import generate

    plan = {"train_images": a.train_images, "batch_size": a.batch_size, "lr": a.lr, "warmup": a.warmup,
            "groups": a.groups, "teacher": str(a.teacher or demo_checkpoint()), "space": SPACE,
            "val_images": a.val_images, "max_steps": a.max_steps}
    pf = run / "plan.json"
    if pf.is_file():
        old = json.loads(pf.read_text())
        for k in (*PLAN_KEYS, "space", "val_images", "max_steps"):
            if old.get(k) != plan[k]:
                raise SystemExit(f"error: {pf}: {k} is {old.get(k)!r}, this command asks {plan[k]!r}; "
                                 "use another --out or the same settings")
    run.mkdir(parents=True, exist_ok=True)
    data = run / "data"
    train_ann = data / "train" / ANN_FILE
    if not train_ann.is_file() or len(read_coco(train_ann)["images"]) != a.train_images:
        log(run, f"generating the first {a.train_images} images of the demo training set in {data}/train")
        generate(data, a.train_images, 0, seed=DEMO_SEED, image_size=DEMO_IMAGE_SIZE)
    valid = data / "valid"
    if not valid.is_symlink():  # generate() wrote an empty valid/: use the demo val set instead
        if valid.exists():
            import shutil

            shutil.rmtree(valid)
        valid.symlink_to(demo_data() / "valid", target_is_directory=True)
    (run / "space.yaml").write_text("".join(f"{k}: {v}\n" for k, v in SPACE.items()))
    pf.write_text(json.dumps(plan, indent=1))
    return plan


def train_config(run: Path, plan: dict, arm: str, epochs: int):
    from edgedet.train.engine import TrainConfig

    seed, dsi, fdr = ARMS[arm]
    kw = {"teacher": plan["teacher"], "teacher_cache": str(run / "teacher_cache")} if dsi else {}
    return TrainConfig(data=str(run / "data"), out=str(run / arm), preset="tiny", space=str(run / "space.yaml"),
                       epochs=epochs, batch_size=plan["batch_size"], lr=plan["lr"], warmup_steps=plan["warmup"],
                       groups=plan["groups"], seed=seed, workers=1, resume=True, log_every=25, fdr=fdr,
                       max_steps=plan["max_steps"] and plan["max_steps"] * epochs, **kw)


def state_epoch(arm_dir: Path) -> int:
    """Epochs in the arm's training state (0 without one)."""
    from safetensors import safe_open

    path = arm_dir / "last.safetensors"
    if not path.is_file():
        return 0
    with safe_open(str(path), "pt") as f:
        return int(json.loads(f.metadata()["meta"])["epoch"])


def space_extremes(cfg):
    """(largest, smallest) subnet of SPACE: the costliest and cheapest value of every knob."""
    from edgedet.config import SubnetConfig

    big = SubnetConfig(patch=min(SPACE["patch"]), resolution=max(SPACE["resolution"]), windows=min(SPACE["windows"]),
                       dec_layers=max(SPACE["dec_layers"]), queries=max(SPACE["queries"]))
    small = SubnetConfig(patch=max(SPACE["patch"]), resolution=min(SPACE["resolution"]),
                         windows=max(SPACE["windows"]), dec_layers=min(SPACE["dec_layers"]),
                         queries=min(SPACE["queries"]))
    return big.check(cfg), small.check(cfg)


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_task(run: Path, plan: dict, task: str) -> int:
    """One task in this process: 'cache' fills the teacher cache; 'ARM:E' trains epoch E (0-based) of ARM unless
    its state already has it, then evaluates and appends RUN/ARM/evals.jsonl."""
    import torch

    from edgedet.checkpoint import load_supernet, read_header
    from edgedet.data.coco import CocoDetection
    from edgedet.evaluate import evaluate_subnets
    from edgedet.train.engine import train

    if task == "cache":  # before any DSI epoch, on its own clock: the teacher once per training image
        from edgedet.config import level_grid, load_space, preset
        from edgedet.train.distill import TeacherCache
        from edgedet.train.teachers import deepest_level, load_teacher

        t0, c0 = time.perf_counter(), cpu_seconds()
        teacher, scfg = load_teacher(plan["teacher"]), preset("tiny")
        lvl = scfg.levels[deepest_level(scfg.levels)]
        grid = max(level_grid(s.resolution // s.patch, lvl) for s in load_space(run / "space.yaml", scfg).subnets(scfg))
        n = TeacherCache(teacher, run / "teacher_cache", teacher.input_size(grid)).fill(
            CocoDetection(run / "data", "train"), plan["batch_size"])
        row = {"images": n, "cpu_s": round(cpu_seconds() - c0, 1), "wall_s": round(time.perf_counter() - t0, 1)}
        (run / "teacher_cache" / "done.json").write_text(json.dumps(row))
        return 0
    arm, e = task.split(":")
    e = int(e)
    arm_dir = run / arm
    arm_dir.mkdir(parents=True, exist_ok=True)
    lock = open(arm_dir / "lock", "w")  # noqa: SIM115 (held until the task exits)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"{arm_dir} is in use by another process", flush=True)
        return BUSY
    if epochs_done(run, arm) > e:
        return 0
    t0, c0, load0 = time.perf_counter(), cpu_seconds(), os.getloadavg()
    have = state_epoch(arm_dir)
    if have == e:
        train(train_config(run, plan, arm, e + 1), progress=True)
    elif have != e + 1:
        raise SystemExit(f"error: {arm_dir}: training state has {have} epochs, task is epoch {e + 1}")
    train_cpu, train_wall = cpu_seconds() - c0, time.perf_counter() - t0
    ck = arm_dir / "model.safetensors"
    if read_header(ck)[2].get("epochs") != e + 1:
        raise SystemExit(f"error: {ck}: not the EMA of epoch {e + 1} (killed between two writes?); "
                         f"delete {arm_dir / 'last.safetensors'} to redo that arm from the start")
    net = load_supernet(ck)
    big, small = space_extremes(net.cfg)
    val = CocoDetection(run / "data", "valid")
    val.images = val.images[:plan["val_images"]]  # and the ground truth of those images only
    ids = {im["id"] for im in val.images}
    gt = dict(val.coco, images=val.images, annotations=[x for x in val.coco["annotations"] if x["image_id"] in ids])
    t1, c1 = time.perf_counter(), cpu_seconds()
    ap = evaluate_subnets(net, [big, small], val, gt=gt)
    logged = [r for r in read_jsonl(arm_dir / "log.jsonl") if r["epoch"] == e]  # this epoch's logged steps
    means = {k: round(sum(r[k] for r in logged) / len(logged), 4) for k in ("loss", "loss_dsi", "dsi_weight")
             if logged and all(k in r for r in logged)}
    row = {"epoch": e + 1, "step": read_header(ck)[2].get("steps"),
           "largest": {"id": big.id, **{k: round(v, 4) for k, v in ap[big.id].items()}},
           "smallest": {"id": small.id, **{k: round(v, 4) for k, v in ap[small.id].items()}},
           "train_cpu_s": round(train_cpu, 1), "train_wall_s": round(train_wall, 1),
           "eval_cpu_s": round(cpu_seconds() - c1, 1), "eval_wall_s": round(time.perf_counter() - t1, 1),
           "task_cpu_s": round(cpu_seconds(), 1), "loadavg": [round(load0[0], 2), round(os.getloadavg()[0], 2)],
           "threads": torch.get_num_threads(), "nice": os.nice(0), **means}
    with open(arm_dir / "evals.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    return 0


# ---------------------------------------------------------------------------------------------------------------
# the driver

def tasks(run: Path, arms: list[str], epochs: int) -> list[str]:
    """What is left, in run order: the teacher cache (when a DSI arm is asked and it is not done), then epoch by
    epoch over the arms."""
    out = [] if not any(ARMS[a][1] for a in arms) or (run / "teacher_cache" / "done.json").is_file() else ["cache"]
    done = {a: epochs_done(run, a) for a in arms}
    return out + [f"{a}:{e}" for e in range(epochs) for a in arms if e >= done[a]]


def ready(task: str, running: set[str], pending: list[str]) -> bool:
    """A task may start when no task of its arm runs or waits before it, and (DSI arms) the cache is done."""
    if task == "cache":
        return True
    arm = task.split(":")[0]
    if ARMS[arm][1] and ("cache" in pending or "cache" in running):
        return False
    earlier = pending[:pending.index(task)]
    return not any(t.split(":")[0] == arm for t in (*running, *earlier))


def drive(run: Path, a: argparse.Namespace) -> int:
    if os.getpgrp() != os.getpid():
        os.setpgid(0, 0)  # the run is one process group: --pause reaches every task and DataLoader worker
    os.nice(max(0, 19 - os.nice(0)))
    run.mkdir(parents=True, exist_ok=True)
    lock = open(run / "driver.lock", "w")  # noqa: SIM115 (held until the driver exits)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise SystemExit(f"error: {run}: another driver is running (pid {(run / 'driver.pid').read_text().strip()})")
    (run / "driver.pid").write_text(f"{os.getpid()}\n")
    prepare(run, a)
    arms = a.arms.split(",")
    (run / "target.json").write_text(json.dumps({"epochs": a.epochs, "arms": arms}))  # for the report
    pending = tasks(run, arms, a.epochs)
    log(run, f"driver {os.getpid()}: {len(pending)} tasks left ({a.epochs} epochs x {len(arms)} arms), "
             f"{a.jobs} at a time, {a.threads} thread(s) each, nice {os.nice(0)}")
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), MKL_NUM_THREADS=str(a.threads))
    running: dict[str, tuple[subprocess.Popen, float]] = {}
    failed: set[str] = set()
    while pending or running:
        for t in list(pending):
            if len(running) >= a.jobs:
                break
            arm = t.split(":")[0]
            if arm in failed or not ready(t, set(running), pending):
                continue
            pending.remove(t)
            out_dir = run / ("teacher_cache" if t == "cache" else arm)
            out_dir.mkdir(parents=True, exist_ok=True)
            with open(out_dir / "task.log", "a") as f:
                p = subprocess.Popen([sys.executable, __file__, "--out", str(run), "--threads", str(a.threads),
                                      "--task", t], stdout=f, stderr=subprocess.STDOUT, env=env)
            running[t] = (p, time.perf_counter())
            log(run, f"start {t} (pid {p.pid})")
        time.sleep(2)
        for t, (p, t0) in list(running.items()):
            if p.poll() is None:
                continue
            del running[t]
            arm = t.split(":")[0]
            if p.returncode == 0:
                rows = read_jsonl(run / arm / "evals.jsonl")
                r = rows[-1] if rows and t != "cache" else {}
                ap = (f": largest AP50 {r['largest']['AP50']:.4f} AP75 {r['largest']['AP75']:.4f}, smallest AP50 "
                      f"{r['smallest']['AP50']:.4f}, train cpu {r['train_cpu_s']:.0f} s" if r else "")
                log(run, f"done {t} in {time.perf_counter() - t0:.0f} s{ap}")
            elif p.returncode == BUSY:
                pending.insert(0, t)
                log(run, f"{t}: arm folder busy (an earlier task still running?); retrying in 60 s")
                time.sleep(60)
            else:
                failed.add("cache" if t == "cache" else arm)
                if t == "cache":
                    failed.update(x for x in ARMS if ARMS[x][1])
                log(run, f"FAILED {t} (exit {p.returncode}); see {run / ('teacher_cache' if t == 'cache' else arm)}"
                         "/task.log; its arm stops, the others go on")
    log(run, f"driver {os.getpid()} finished" + (f"; failed: {', '.join(sorted(failed))}" if failed else ""))
    return 1 if failed else 0


def status(run: Path, arms: list[str]) -> None:
    pid = (run / "driver.pid").read_text().split()[0] if (run / "driver.pid").is_file() else None
    members = group_members(int(pid)) if pid else []
    stopped = [p for p in members if _state(p) == "T"]
    print(f"{run}: " + (f"running, {len(members)} processes" + (f" ({len(stopped)} paused)" if stopped else "")
                        if members else "not running"))
    for arm in arms:
        rows = read_jsonl(run / arm / "evals.jsonl")
        r = rows[-1] if rows else None
        print(f"  {arm:12s} {len(rows):3d} epochs" + (f"  largest AP50 {r['largest']['AP50']:.4f} AP75 "
              f"{r['largest']['AP75']:.4f}  smallest AP50 {r['smallest']['AP50']:.4f}" if r else ""))


def main(argv=None) -> int:
    a = parse(argv)
    run = a.out
    if a.pause or a.resume_paused:
        n = signal_run(run, signal.SIGSTOP if a.pause else signal.SIGCONT)
        print(f"{'paused' if a.pause else 'resumed'} {n} processes" if n else f"{run}: not running")
        return 0
    if a.status:
        status(run, a.arms.split(","))
        return 0
    if a.task:
        import torch

        torch.set_num_threads(a.threads)
        return run_task(run, json.loads((run / "plan.json").read_text()), a.task)
    if a.detach:
        run.mkdir(parents=True, exist_ok=True)
        argv = [x for x in (sys.argv[1:] if argv is None else argv) if x != "--detach"]
        with open(run / "driver.log", "a") as f:
            p = subprocess.Popen(["nice", "-n", "19", sys.executable, __file__, *argv], stdout=f,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        print(f"driver started (pid {p.pid}); progress: tail -f {run / 'progress.log'}")
        return 0
    return drive(run, a)


if __name__ == "__main__":
    sys.exit(main())
