"""Progress of long steps: compile steps (calibration images counted), AP of subnet groups (images counted, one
bar per group), measurements and artifact AP in a search, and the CLI's bars on a terminal."""
from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edgedet.deploy import compile_subnet
from edgedet.progress import Progress, Task

ROOT = Path(__file__).resolve().parents[1]


class Recorder(Progress):
    """Keeps every task: its descriptions, totals and last completed count."""

    def __init__(self):
        self.tasks, self.lock = [], threading.Lock()

    def task(self, description, total=None, unit=""):
        rec = {"descriptions": [description], "total": total, "unit": unit, "completed": 0, "closed": False}
        with self.lock:
            self.tasks.append(rec)

        class T(Task):
            def update(self, completed=None, description=None):
                if completed is not None:
                    rec["completed"] = completed
                if description is not None:
                    rec["descriptions"].append(description)

            def close(self):
                rec["closed"] = True

        return T()

    def named(self, prefix):
        return [t for t in self.tasks if t["descriptions"][0].startswith(prefix)]


def test_compile_reports_its_steps_and_counts_calibration_images(tmp_path, synth_data, tiny_net):
    (tmp_path / "calib.yaml").write_text(f"dataset: {synth_data}\nsplit: train\nimages: 4\n")
    (tmp_path / "t.yaml").write_text("name: t\nbackend: onnxruntime\nprecisions: [fp32, int8]\n"
                                     "runtime: {threads: 1}\ncalibration: calib.yaml\n")
    steps = []
    compile_subnet(tiny_net, "p24-r192-w2-d0-q25", tmp_path / "t.yaml", "int8", tmp_path / "a", step=steps.append)
    assert steps == ["export ONNX", "onnxruntime int8 (calibrating)", *[f"calibration images {i}/4" for i in
                                                                       range(1, 5)], "runtimes python"]
    steps.clear()
    compile_subnet(tiny_net, "p24-r192-w2-d0-q25", tmp_path / "t.yaml", "fp32", tmp_path / "b", step=steps.append)
    assert steps == ["export ONNX", "onnxruntime fp32", "runtimes python", "check against torch"]


@pytest.mark.slow
def test_a_search_shows_ap_groups_compiles_measurements_and_artifact_ap(tmp_path, synth_data):
    from edgedet.search import search

    (tmp_path / "space.yaml").write_text("patch: [24]\nresolution: [192, 288]\nwindows: [2]\ndec_layers: [1]\n"
                                         "queries: [25]\n")
    (tmp_path / "calib.yaml").write_text(f"dataset: {synth_data}\nsplit: train\nimages: 4\n")
    (tmp_path / "target.yaml").write_text(
        "name: test_cpu\ndevice: {type: local}\nbackend: onnxruntime\nprecisions: [fp32]\nruntime: {threads: 1}\n"
        "benchmark: {warmup: 2, runs: 10, min_duration_s: 0, repeat_cooldown_s: 0.1}\ncalibration: calib.yaml\n")
    rec = Recorder()
    search(tmp_path / "target.yaml", space=tmp_path / "space.yaml", out=tmp_path / "run", max_measurements=2,
           val_images=6, generations=1, population=4, say=lambda m: None, progress=rec)
    ap = rec.named("AP p24-")
    assert sorted(t["descriptions"][0] for t in ap) == ["AP p24-r192-w2 (1 subnets)", "AP p24-r288-w2 (1 subnets)"]
    assert all(t["total"] == 6 and t["completed"] == 6 and t["unit"] == "img" and t["closed"] for t in ap)
    comp = rec.named("compile ")
    assert len(comp) == 2 and all(t["closed"] and any("export ONNX" in d for d in t["descriptions"]) for t in comp)
    meas = rec.named("measure ")
    assert len(meas) == 2 and all(t["descriptions"][0].endswith("on local") and t["closed"] for t in meas)
    art = rec.named("AP of the artifact")
    assert len(art) == 2 and all(t["completed"] == t["total"] == 6 for t in art)


@pytest.mark.slow
def test_compile_on_a_terminal_draws_a_progress_line_and_keeps_stdout_clean(tmp_path):
    master, slave = pty.openpty()
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="120", TERM="xterm")
    p = subprocess.Popen([sys.executable, "-m", "edgedet.cli", "compile", "-s", "p24-r192-w2-d0-q25", "-o", "art"],
                         cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=slave)
    os.close(slave)
    seen = b""
    while True:
        r, _, _ = select.select([master], [], [], 120)
        if not r:
            break
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        seen += chunk
    out = p.stdout.read().decode()
    assert p.wait(120) == 0
    os.close(master)
    assert b"compile p24-r192-w2-d0-q25" in seen  # the bar, on the terminal (stderr)
    assert out.startswith("wrote art") and "\x1b" not in out  # stdout: edgedet's own lines only
