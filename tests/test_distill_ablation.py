"""benchmarks/distill_ablation.py (scheduling, pause/resume of the run's process group, the fixed plan, one resumable
end-to-end run) and benchmarks/distill_ablation_report.py (table and PNG from synthetic evals logs)."""
from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


abl = _load("distill_ablation")
rep = _load("distill_ablation_report")


def _row(epoch: int, big: float, small: float) -> dict:
    sub = lambda sid, v: {"id": sid, "AP": v / 2, "AP50": v, "AP75": v / 3}
    return {"epoch": epoch, "step": 10 * epoch, "largest": sub("p16-r288-w1-d3-q100", big),
            "smallest": sub("p24-r192-w2-d1-q25", small), "train_cpu_s": 360.0}


def _write_run(run: Path, curves: dict[str, list[tuple[float, float]]], target: int) -> None:
    run.mkdir(parents=True, exist_ok=True)
    (run / "plan.json").write_text(json.dumps({"train_images": 80, "batch_size": 8, "val_images": 10,
                                               "space": abl.SPACE}))
    (run / "target.json").write_text(json.dumps({"epochs": target}))
    for arm, pts in curves.items():
        (run / arm).mkdir()
        (run / arm / "evals.jsonl").write_text("".join(json.dumps(_row(i + 1, b, s)) + "\n"
                                                       for i, (b, s) in enumerate(pts)))


SEEDS3 = {"baseline": [(0.1, 0.05), (0.2, 0.10)], "baseline_s1": [(0.1, 0.05), (0.22, 0.12)],
          "baseline_s2": [(0.1, 0.05), (0.18, 0.08)]}


def test_table_marks_arms_against_the_seed_range(tmp_path):
    _write_run(tmp_path, {**SEEDS3, "dsi": [(0.2, 0.2), (0.4, 0.3)], "fdr": [(0.1, 0.1), (0.19, 0.01)],
                          "dsi_fdr": [(0.1, 0.1), (0.1, 0.09)]}, target=2)
    runs = rep.load(tmp_path)
    text = rep.table(runs, 2)
    assert "PARTIAL" not in text and "Epoch 2 (step 20)" in text
    rows = {line.split(" | ")[0][2:]: line.split(" | ")[1:] for line in text.splitlines() if line.startswith("| ")}
    # largest AP50 (column 2): seeds 0.18-0.22
    assert rows["+DSI/GAM"][1] == "0.4000+" and rows["+FDR"][1] == "0.1900" and rows["+DSI/GAM +FDR"][1] == "0.1000-"
    assert rows["baseline seed 0"][1] == "0.2000"  # seeds are never marked
    assert rows["baseline seed range"][1] == "0.1800-0.2200"
    # smallest AP50 (column 5): seeds 0.08-0.12
    assert rows["+DSI/GAM"][4] == "0.3000+" and rows["+FDR"][4] == "0.0100-" and rows["+DSI/GAM +FDR"][4] == "0.0900"
    # mean largest AP50 over epochs 1-2: dsi (0.2 + 0.4) / 2 = 0.3, above the seeds' 0.14-0.16
    assert rows["+DSI/GAM"][6] == "0.3000+" and rows["baseline seed range"][6] == "0.1400-0.1600"
    assert rows["+DSI/GAM"][7].startswith("0.20")  # 2 x 360 CPU s


def test_curves_table_has_a_row_per_epoch_marked_against_the_seeds_of_that_epoch(tmp_path):
    _write_run(tmp_path, {**SEEDS3, "dsi": [(0.2, 0.2), (0.4, 0.3)], "fdr": [(0.1, 0.1), (0.19, 0.01)]}, target=2)
    runs = rep.load(tmp_path)
    big = rep.curves_table(runs, "largest").splitlines()
    assert big[2] == "| epoch | baseline seed 0 | baseline seed 1 | baseline seed 2 | +DSI/GAM | +FDR |"
    rows = [line.split(" | ") for line in big if line.startswith(("| 1 ", "| 2 "))]
    assert [r[0] for r in rows] == ["| 1", "| 2"]
    # epoch 1: every seed at AP50 0.1 -> dsi 0.2 above; epoch 2: seeds 0.18-0.22 -> dsi 0.4 above, fdr 0.19 inside
    assert rows[0][4].startswith("0.2000+ / ") and rows[1][4].startswith("0.4000+ / ")
    assert rows[1][5].startswith("0.1900 / ") and rows[1][1].startswith("0.2000 / ")
    small = rep.curves_table(runs, "smallest")
    assert "Smallest subnet" in small and "| 2 | 0.1000 / " in small


def test_partial_run_is_labelled_with_each_arms_epochs(tmp_path):
    _write_run(tmp_path, {**SEEDS3, "dsi": [(0.2, 0.2)]}, target=15)
    runs = rep.load(tmp_path)
    text = rep.table(runs, 15)
    assert text.startswith("**PARTIAL (target 15 epochs)")
    assert "baseline seed 0 2" in text and "+DSI/GAM 1" in text and "+FDR 0" in text
    assert "Epoch 1 (step 10)" in text  # compared at the last epoch every arm reached


def test_report_writes_a_small_png(tmp_path, capsys):
    _write_run(tmp_path, {**SEEDS3, "dsi": [(0.2, 0.2), (0.4, 0.3)]}, target=2)
    png = tmp_path / "curves.png"
    rep.main(["--out", str(tmp_path), "--png", str(png)])
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and 10_000 < len(data) < 150_000
    out = capsys.readouterr().out
    assert "PARTIAL" in out and "| +DSI/GAM |" in out


def test_tasks_run_epoch_by_epoch_and_dsi_waits_for_the_cache(tmp_path):
    (tmp_path / "baseline").mkdir()
    (tmp_path / "baseline" / "evals.jsonl").write_text('{"epoch": 1}\n')
    todo = abl.tasks(tmp_path, ["baseline", "dsi"], 2)
    assert todo == ["cache", "dsi:0", "baseline:1", "dsi:1"]
    assert not abl.ready("dsi:0", set(), todo) and abl.ready("baseline:1", set(), todo)
    assert not abl.ready("dsi:1", set(), ["dsi:0", "dsi:1"])  # never two epochs of one arm at once
    assert not abl.ready("baseline:2", {"baseline:1"}, ["baseline:2"])
    (tmp_path / "teacher_cache").mkdir()
    (tmp_path / "teacher_cache" / "done.json").write_text("{}")
    assert abl.tasks(tmp_path, ["dsi"], 1) == ["dsi:0"]


def test_changed_plan_is_refused_before_any_work(tmp_path):
    (tmp_path / "plan.json").write_text(json.dumps({"train_images": 10}))
    a = abl.parse(["--out", str(tmp_path), "--train-images", "20"])
    with pytest.raises(SystemExit, match="train_images is 10, this command asks 20"):
        abl.prepare(tmp_path, a)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def _state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


def _wait(cond, timeout: float = 20.0) -> bool:
    """Poll `cond()` until true (signals and exec take effect asynchronously on a loaded machine)."""
    end = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True


def _spawn(argv: list[str]) -> subprocess.Popen:
    p = subprocess.Popen(argv, start_new_session=True)
    assert _wait(lambda: argv[-1].encode() in Path(f"/proc/{p.pid}/cmdline").read_bytes().split(b"\0"))
    return p


def test_pause_and_resume_signal_the_runs_process_group_only(tmp_path, capsys):
    run = [sys.executable, "-c", "import time; time.sleep(30)", "distill_ablation"]  # the name in its cmdline
    p, other = _spawn(run), _spawn(["sleep", "30"])
    try:
        (tmp_path / "driver.pid").write_text(f"{p.pid}\n")
        assert abl.main(["--out", str(tmp_path), "--pause"]) == 0
        assert _wait(lambda: _state(p.pid) == "T") and "paused 1 processes" in capsys.readouterr().out
        abl.main(["--out", str(tmp_path), "--status", "--arms", "baseline"])
        assert "(1 paused)" in capsys.readouterr().out
        assert abl.main(["--out", str(tmp_path), "--resume-paused"]) == 0
        assert _wait(lambda: _state(p.pid) != "T")
        (tmp_path / "driver.pid").write_text(f"{other.pid}\n")  # a group that is not this script's: untouched
        abl.main(["--out", str(tmp_path), "--pause"])
        time.sleep(0.2)
        assert "not running" in capsys.readouterr().out and _state(other.pid) != "T"
    finally:
        for q in (p, other):
            os.killpg(q.pid, signal.SIGKILL)
            q.wait()


@pytest.mark.slow
def test_driver_trains_evaluates_and_continues_without_retraining(tmp_path):
    """Two arms (one with the cached teacher), 1 epoch, then the same command with --epochs 2: only epoch 2 runs."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    base = [sys.executable, str(ROOT / "benchmarks" / "distill_ablation.py"), "--out", str(tmp_path), "--arms",
            "baseline,dsi", "--train-images", "16", "--val-images", "4", "--max-steps", "1", "--warmup", "1"]
    for epochs in (1, 2):
        subprocess.run([*base, "--epochs", str(epochs)], env=env, check=True, capture_output=True, timeout=600)
        for arm in ("baseline", "dsi"):
            rows = [json.loads(x) for x in (tmp_path / arm / "evals.jsonl").read_text().splitlines()]
            assert [(r["epoch"], r["step"]) for r in rows] == [(e + 1, e + 1) for e in range(epochs)]
            assert rows[-1]["largest"]["id"] == "p16-r288-w1-d3-q100" and rows[-1]["threads"] == 1
    assert (tmp_path / "dsi" / "task.log").read_text().count("resumed from") == 1
    assert json.loads((tmp_path / "teacher_cache" / "done.json").read_text())["images"] == 16
    assert os.getpgid(0) != int((tmp_path / "driver.pid").read_text())
