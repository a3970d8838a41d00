"""What a new user meets first: help that describes every option and shows flags as flags, defaults that work from
any folder (the bundled demo supernet, shipped targets by name), and no third-party log spam unless --verbose."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgedet.cli import command
from edgedet.config import SHIPPED_DIR, resolve_target
from edgedet.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def run(args, cwd, ok=True):
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="120")
    p = subprocess.run([sys.executable, "-m", "edgedet.cli", *args], cwd=cwd, env=env, capture_output=True,
                       text=True, timeout=600)
    if ok:
        assert p.returncode == 0, p.stderr
    return p


def _commands(c, path=()):
    if hasattr(c, "commands"):
        for name, sub in c.commands.items():
            yield from _commands(sub, path + (name,))
    else:
        yield path, c


def test_every_option_has_a_description_and_flags_show_as_flags():
    cmds = list(_commands(command()))
    assert len(cmds) >= 11
    for path, c in cmds:
        for p in c.params:
            assert (getattr(p, "help", None) or "").strip(), f"edgedet {' '.join(path)}: {p.name} has no help"
    for path in (("compile",), ("search",), ("train",), ("bench",), ("device", "check")):
        out = run([*path, "--help"], ROOT).stdout
        assert "<bool>" not in out, out
        assert "--help" in out and "Show this message" in out
    assert "Compile at int8" in run(["compile", "--help"], ROOT).stdout


def test_shipped_targets_resolve_by_name_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert resolve_target("local_cpu") == SHIPPED_DIR / "targets" / "local_cpu.yaml"
    assert resolve_target("jetson_orin.yaml") == SHIPPED_DIR / "targets" / "jetson_orin.yaml"
    (tmp_path / "targets").mkdir()  # a project's own targets/ folder wins over the shipped one
    (tmp_path / "targets" / "local_cpu.yaml").write_text("name: mine\nbackend: onnxruntime\nprecisions: [fp32]\n")
    assert resolve_target("local_cpu") == Path("targets") / "local_cpu.yaml"
    with pytest.raises(ConfigError, match="no target named 'nosuch'.*local_cpu"):
        resolve_target("nosuch")
    with pytest.raises(ConfigError, match="file not found"):
        resolve_target("some/where.yaml")


def test_info_and_export_default_to_the_demo_supernet_from_another_folder(tmp_path):
    rep = json.loads(run(["info", "--json"], tmp_path).stdout)
    assert rep["config"]["name"] == "tiny" and rep["config"]["class_names"]
    out = run(["export", "-s", "p24-r192-w2-d0-q25", "-o", "m.onnx"], tmp_path).stdout
    assert (tmp_path / "m.onnx").is_file() and "max abs diff" in out
    bad = run(["info", "--preset", "tiny", "-c", "x.safetensors"], tmp_path, ok=False)
    assert bad.returncode == 2 and "at most one of --checkpoint or --preset" in bad.stderr


@pytest.mark.slow
def test_compile_by_target_name_is_quiet_unless_verbose(tmp_path):
    """int8 for the shipped local_cpu target from a folder without targets/: the target, its calibration recipe
    and the demo supernet are found; NNCF/ORT/converter output is hidden unless --verbose."""
    p = run(["compile", "-s", "p24-r192-w2-d0-q25", "-t", "local_cpu", "--int8", "-o", "art"], tmp_path)
    assert p.stderr == ""
    assert [x.split(" (")[0] for x in p.stdout.splitlines()] == ["wrote art", "  python runtime: "
                                                                 "runtime/python/edgedet_runtime"]
    meta = json.loads((tmp_path / "art" / "artifact.json").read_text())
    assert meta["precision"] == "int8" and meta["metadata"]["calibration"]["dataset"] == "demo"
    b = run(["bench", "art", "-t", "local_cpu", "--no-ap", "--json"], tmp_path)
    assert json.loads(b.stdout)[0]["status"] == "ok"
    v = run(["compile", "-s", "p24-r192-w2-d0-q25", "-t", "cpu_openvino", "--int8", "-o", "ov", "--verbose"],
            tmp_path)
    q = run(["compile", "-s", "p24-r192-w2-d0-q25", "-t", "cpu_openvino", "--int8", "-o", "ov2"], tmp_path)
    assert len(v.stdout.splitlines()) > len(q.stdout.splitlines()) + 3  # NNCF's progress and OV's conversion notes
    assert q.stderr == "" and q.stdout.startswith("wrote ov2")
