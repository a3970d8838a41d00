"""A real search on the bundled demo supernet and ONNX Runtime on this CPU: manifest contract, artifacts intact, and
kill -9 + --resume repeating no completed measurement."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgedet.backends.base import sha256
from edgedet.config import load_manifest
from edgedet.search import search
from edgedet.search.pareto import dominates
from tests.search import measurement_rows

SPACE = "patch: [24]\nresolution: [192, 288]\nwindows: [2]\ndec_layers: [1, 3]\nqueries: [25, 50]\n"


@pytest.fixture()
def setup(tmp_path, synth_data):
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "calib.yaml").write_text(f"dataset: {synth_data}\nsplit: train\nimages: 4\n")
    (tmp_path / "target.yaml").write_text(
        "name: test_cpu\ndevice: {type: local}\nbackend: onnxruntime\nprecisions: [fp32, int8]\n"
        "runtime: {threads: 1}\nlatency: {budget_ms: 1000, percentile: 90}\n"
        "benchmark: {warmup: 2, runs: 10, min_duration_s: 0, repeat_cooldown_s: 0.2}\ncalibration: calib.yaml\n")
    return tmp_path


def _args(d: Path, out: Path, budget: int) -> dict:
    return dict(target=d / "target.yaml", space=d / "space.yaml", out=out, max_measurements=budget, val_images=12,
                generations=2, population=6)


def test_search_writes_a_valid_manifest_with_a_measured_front(setup):
    out = setup / "run"
    lines = []
    man = search(**_args(setup, out, 7), say=lines.append)
    first_rounds = sum(ln.startswith("round ") for ln in lines)  # the rounds that measured, as the CLI prints them
    m = load_manifest(out / "manifest.json")  # schema-valid
    assert m.format == "edgedet.manifest" and m.version == 1 and m.target["name"] == "test_cpu"
    assert m.checkpoint["sha256"] and m.dataset["sha256"] and m.software["runtime"]["name"] == "onnxruntime"
    assert m.search["candidates"] == 16 and 0 < m.search["measured"] <= 7
    ok = [p for p in m.points if p.status == "ok"]
    assert ok and all(p.record["runs"] >= 10 and p.record["device"]["cpu"] for p in ok)  # conditions kept
    assert all(p.ap_source == "artifact" for p in ok)
    # the front is the non-dominated set of the measured points (a stable point dominated only by noisy ones kept,
    # with a warning), and every point on it is measured
    pts = {p.id: (p.ap["AP"], p.latency_ms) for p in ok}
    noisy = {p.id: p.record["noisy"] for p in ok}
    fr = {p.id for p in m.front}
    assert fr and fr <= set(pts)
    for pid, v in pts.items():
        doms = [q for q, w in pts.items() if q != pid and dominates(w, v)]
        on = not doms or (not noisy[pid] and all(noisy[q] for q in doms))
        assert (pid in fr) == on or any(w == v for q, w in pts.items() if q != pid)
    assert m.search["noisy"] == sum(noisy.values()) and bool(m.search["warnings"]) == any(noisy.values())
    for p in m.front:  # artifacts intact, runtime written
        d = out / p.artifact.dir
        assert p.artifact.files and all(sha256(d / f) == h for f, h in p.artifact.files.items())
        assert json.loads((d / "artifact.json").read_text())["files"] == p.artifact.files
        assert (out / p.artifact.runtime["python"]).name == "edgedet_runtime"
        assert (out / p.artifact.runtime["python"] / "__main__.py").is_file()
        assert (out / p.artifact.runtime["cpp"]).is_dir()
        assert (out / p.artifact.runtime["cpp"] / "CMakeLists.txt").is_file()
    assert (out / "pareto.png").stat().st_size > 10_000 and "<table>" in (out / "report.html").read_text()
    assert not (out / "work").exists()
    assert man["front"][0]["id"] == m.front[0].id
    # a second search into the same folder needs --resume; with it, nothing is measured again
    from edgedet.errors import ConfigError

    with pytest.raises(ConfigError, match="--resume"):
        search(**_args(setup, out, 7), say=lines.append)
    lines.clear()
    again = search(**_args(setup, out, 7), resume=True, say=lines.append)
    assert not [ln for ln in lines if ln.startswith("compile ") and "again" not in ln]
    assert {p["id"] for p in again["front"]} == fr
    # the resumed run is appended to the history, the first run's record kept as it was
    first, second = again["search"]["history"]
    assert first == man["search"]["history"][0] and first["measurements"] == m.search["measured"] > 0
    assert second["resumed"] and second["measurements"] == 0 and second["rounds"] == 0
    assert first["rounds"] == first_rounds == m.search["rounds"]
    assert again["search"]["wall_s_all_runs"] == pytest.approx(first["wall_s"] + second["wall_s"], abs=0.2)
    assert second["start"] >= first["end"]


@pytest.mark.slow
def test_kill9_midway_then_resume_repeats_no_completed_measurement(setup):
    out = setup / "run"
    cmd = [sys.executable, "-m", "edgedet.cli", "search", "-t", str(setup / "target.yaml"), "--space",
           str(setup / "space.yaml"), "-o", str(out), "--max-measurements", "8", "--val-images", "12",
           "--generations", "2", "--population", "6"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 600
    while len(measurement_rows(out / "search.db")) < 3 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    assert proc.poll() is None, "the search finished before it could be killed: " + proc.stdout.read()[-2000:]
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = measurement_rows(out / "search.db")
    assert len(before) >= 3 and not (out / "manifest.json").exists()
    res = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    after = measurement_rows(out / "search.db")
    for key, created in before.items():  # completed rows untouched: not measured again
        assert after[key] == created
    compiled = {ln.split()[1] for ln in res.stdout.splitlines() if ln.startswith("compile ") and "again" not in ln}
    assert not compiled & {f"{s}@{p}" for s, p in before}
    assert len(after) > len(before) or len(before) >= 8
    assert load_manifest(out / "manifest.json").front
