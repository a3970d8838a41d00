"""The on-device agent without SSH: it and the runner module it ships with stay self-contained (no edgedet import,
Python 3.8 syntax, the agent runs on a bare Python), it runs artifacts with the runner module edgedet's backends use,
and the GPU / Jetson probes parse real tool output (samples below; only a real Jetson or T4 checks them against the
live tools)."""
from __future__ import annotations

import argparse
import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgedet.backends import get_backend
from edgedet.backends.base import sha256
from edgedet.devices import agent
from edgedet.runtime import runners

AGENT = Path(agent.__file__)
SUB = "p24-r192-w2-d1-q25"


@pytest.mark.parametrize("path", [AGENT, Path(runners.__file__)], ids=["agent", "runners"])
def test_agent_and_runners_are_self_contained_and_python38(path):
    tree = ast.parse(path.read_text(), feature_version=(3, 8))
    mods = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(tree))  # no relative imports
    assert "edgedet" not in mods
    third_party = mods - set(sys.stdlib_module_names)
    assert third_party <= {"numpy", "onnxruntime", "openvino", "ai_edge_litert", "tflite_runtime", "tensorflow",
                           "tensorrt"}, third_party


def _run_agent(python, *args, stdin="", cwd=None, env=None):
    p = subprocess.run([str(python), "-I", str(AGENT), *args], input=stdin, capture_output=True, text=True,
                       timeout=120, cwd=cwd, env=env)
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 1, (p.stdout, p.stderr)  # exactly one JSON object on stdout
    return p.returncode, json.loads(lines[0])


def test_agent_runs_on_a_bare_python(tmp_path):
    """No numpy, no runtime, no edgedet (-I: isolated from PYTHONPATH and the user site)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "v")], check=True)
    py = tmp_path / "v" / "bin" / "python"
    code, res = _run_agent(py, "info")
    assert code == 0 and res["status"] == "ok" and res["info"]["cores"] >= 1 and res["runtimes"]["numpy"] is None
    code, res = _run_agent(py, "check")
    assert code == 0 and all(v.startswith("missing: ") for v in res["runtimes"].values())
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "artifact.json").write_text(json.dumps({"backend": "openvino", "precision": "fp32",
                                                              "model_file": "m.xml", "metadata": {"resolution": 8}}))
    (tmp_path / "a" / "m.xml").write_text("<net/>")
    code, res = _run_agent(py, "bench", "--artifact", str(tmp_path / "a"), "--request", "{}")
    assert code == 1 and "artifact.json: files must be an object" in res["status"]
    files = {"m.xml": sha256(tmp_path / "a" / "m.xml")}
    (tmp_path / "a" / "artifact.json").write_text(json.dumps({
        "backend": "openvino", "precision": "fp32", "model_file": "m.xml", "files": files,
        "metadata": {"subnet": "p8-r8-w1-d0-q1", "resolution": 8, "num_classes": 1}}))
    code, res = _run_agent(py, "bench", "--artifact", str(tmp_path / "a"), "--request", "{}")
    assert code == 0 and res["status"].startswith("unsupported: openvino is not installed on the device (python"), res
    code, res = _run_agent(py, "bench", "--artifact", str(tmp_path / "missing"), "--request", "{}")
    assert code == 1 and "not an artifact folder (no artifact.json)" in res["status"] and "traceback" not in res


def test_verify(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.bin").write_bytes(b"a")
    (tmp_path / "sub" / "b.bin").write_bytes(b"b")
    files = {"a.bin": sha256(tmp_path / "a.bin"), "sub/b.bin": "0" * 64, "c.bin": "1" * 64}
    code, res = _run_agent(sys.executable, "verify", "--dir", str(tmp_path), "--request", "-",
                           stdin=json.dumps({"files": files}))
    assert code == 0 and res["missing"] == ["c.bin"] and res["mismatch"] == ["sub/b.bin"]


def test_deadline_kills_the_agent(tmp_path):
    # a lock held elsewhere and a long lock timeout: the alarm ends the wait (and the process) at the deadline
    import fcntl

    lock = tmp_path / ".lock"
    fd = os.open(lock, os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        (tmp_path / "a").mkdir()
        (tmp_path / "a" / "m").write_bytes(b"m")
        (tmp_path / "a" / "artifact.json").write_text(json.dumps({
            "backend": "onnxruntime", "precision": "fp32", "model_file": "m",
            "files": {"m": sha256(tmp_path / "a" / "m")},
            "metadata": {"subnet": "p8-r8-w1-d0-q1", "resolution": 8, "num_classes": 1}}))
        p = subprocess.run([sys.executable, str(AGENT), "bench", "--artifact", str(tmp_path / "a"), "--lock",
                            str(lock), "--deadline-s", "1", "--request", '{"lock_timeout_s": 60}'],
                           capture_output=True, text=True, timeout=30)
        assert p.returncode == -14  # SIGALRM
        p = subprocess.run([sys.executable, str(AGENT), "bench", "--artifact", str(tmp_path / "a"), "--lock",
                            str(lock), "--request", '{"lock_timeout_s": 0.3}'], capture_output=True, text=True,
                           timeout=30)
        assert "device busy" in json.loads(p.stdout)["status"]
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------- runners vs backends
def _agent_bench(art, options):
    args = argparse.Namespace(artifact=str(art.dir), lock=str(art.dir / ".lock"),
                              runners_sha256=sha256(runners.__file__))
    req = {"warmup": 1, "runs": 3, "min_duration_s": 0, "runtime": options}
    return agent.cmd_bench(args, req)["record"]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_agent_runner_reports_what_the_backend_runner_reports(tiny_net, backend, tmp_path):
    from edgedet.config import TargetSpec
    from edgedet.deploy import compile_subnet

    t = TargetSpec(name="t", backend=backend, precisions=["fp32"], runtime={"threads": 1})
    art = compile_subnet(tiny_net, SUB, t, "fp32", tmp_path / "a", runtime=())
    options = t.runtime.model_dump()
    rec = _agent_bench(art, options)
    assert rec["runtime"] == get_backend(backend).load(art, options).info()
    assert rec["runs"] == 3 and rec["device"]["lock"]["waited_s"] < 1


@pytest.mark.slow
def test_agent_tflite_runner_matches_the_backend(tiny_net, tmp_path):
    from edgedet.backends.tflite import BACKEND
    from edgedet.config import SubnetConfig

    if BACKEND.available() is not None:
        pytest.skip(f"LiteRT conversion needs the litert extra: {BACKEND.available()}")
    s = SubnetConfig.parse(SUB, tiny_net.cfg)
    meta = {"subnet": s.id, "resolution": s.resolution, "num_classes": tiny_net.cfg.num_classes}
    art = BACKEND.compile(None, "fp32", tmp_path / "a", None, {"torch_module": tiny_net.extract(s)}, meta)
    rec = _agent_bench(art, {"threads": 1})
    assert rec["runtime"] == BACKEND.load(art, {"threads": 1}).info()
    assert rec["runtime"]["settings"]["boxes_output"].endswith("boxes_output")  # chosen by name


# ---------------------------------------------------------------------------------------- GPU and Jetson probes
T4_SMI = "Tesla T4, 535.104.05, 15360, 585, 1590, 34, 27.53, 70.00, P0\n"
ORIN_TEGRA_RELEASE = "# R36 (release), REVISION: 3.0, GCID: 36923193, BOARD: generic, EABI: aarch64, DATE: Fri Jul 19\n"
ORIN_NVPMODEL = "NVPM WARN: fan mode is not set!\nNV Power Mode: MAXN\n0\n"
ORIN_TEGRASTATS = ("09-06-2024 10:52:11 RAM 4722/62841MB (lfb 11x4MB) SWAP 0/31421MB (cached 0MB) CPU [2%@1728,"
                   "0%@1728,0%@2201,off] EMC_FREQ 0%@2133 GR3D_FREQ 37%@[305,305] VIC_FREQ 729 APE 174 "
                   "CV0@-256C cpu@45.312C gpu@40.75C tj@45.312C VDD_GPU_SOC 3199mW/3199mW VDD_CPU_CV 799mW/799mW "
                   "VIN_SYS_5V0 4426mW/4426mW")
NANO_TEGRASTATS = ("RAM 1234/3964MB (lfb 1x4MB) SWAP 0/1982MB (cached 0MB) CPU [2%@102,1%@102,off,off] EMC_FREQ 0% "
                   "GR3D_FREQ 5%@76 APE 25 PLL@24C CPU@26.5C PMIC@100C GPU@25C AO@33.5C thermal@25.75C "
                   "POM_5V_IN 1234/1234 POM_5V_GPU 0/0 POM_5V_CPU 123/123")


def test_parse_nvidia_smi():
    (g,) = agent.parse_nvidia_smi(T4_SMI)
    assert g == {"name": "Tesla T4", "driver_version": "535.104.05", "memory.total": 15360.0, "clocks.sm": 585.0,
                 "clocks.max.sm": 1590.0, "temperature.gpu": 34.0, "power.draw": 27.53, "power.limit": 70.0,
                 "pstate": "P0"}
    (g,) = agent.parse_nvidia_smi("Orin (nvgpu), 540.3.0, [N/A], [N/A], [N/A], [N/A], [N/A], [N/A], [N/A]")
    assert g["name"] == "Orin (nvgpu)" and g["memory.total"] is None


def test_parse_jetson_facts():
    assert agent.parse_nv_tegra_release(ORIN_TEGRA_RELEASE) == "R36.3.0"
    assert agent.parse_nv_tegra_release("") is None
    assert agent.parse_nvpmodel(ORIN_NVPMODEL) == {"name": "MAXN", "id": 0}
    assert agent.parse_nvpmodel("NV Power Mode: MODE_15W\n2") == {"name": "MODE_15W", "id": 2}
    orin = agent.parse_tegrastats(ORIN_TEGRASTATS)
    assert orin["ram_used_mb"] == 4722 and orin["ram_total_mb"] == 62841
    assert orin["cpu_load_pct"] == [2, 0, 0, None]
    assert orin["gpu_load_pct"] == 37 and orin["gpu_freq_mhz"] == [305, 305]
    assert orin["temperature_c"] == {"cpu": 45.312, "gpu": 40.75, "tj": 45.312}  # CV0@-256C: sensor off
    assert orin["power_mw"] == {"VDD_GPU_SOC": 3199, "VDD_CPU_CV": 799, "VIN_SYS_5V0": 4426}
    nano = agent.parse_tegrastats(NANO_TEGRASTATS)
    assert nano["gpu_load_pct"] == 5 and nano["gpu_freq_mhz"] == [76]
    assert nano["temperature_c"]["GPU"] == 25.0 and nano["power_mw"]["POM_5V_GPU"] == 0


def test_device_info_with_jetson_and_nvidia_tools(tmp_path, monkeypatch):
    """The probes end to end, with stand-ins for the tools (nvidia-smi, nvpmodel, tegrastats) on PATH."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    scripts = {"nvidia-smi": f"printf '{T4_SMI}'", "nvpmodel": f"printf '{ORIN_NVPMODEL}'",
               "tegrastats": f"while true; do echo '{ORIN_TEGRASTATS}'; sleep 0.2; done"}
    for name, body in scripts.items():
        (bin_ / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_ / name).chmod(0o755)
    (tmp_path / "nv_tegra_release").write_text(ORIN_TEGRA_RELEASE)
    (tmp_path / "model").write_bytes(b"NVIDIA Jetson AGX Orin Developer Kit\0")
    monkeypatch.setenv("PATH", f"{bin_}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setattr(agent, "TEGRA_RELEASE", str(tmp_path / "nv_tegra_release"))
    monkeypatch.setattr(agent, "DT_MODEL", str(tmp_path / "model"))
    info = agent.device_info()
    assert info["gpus"][0]["name"] == "Tesla T4"
    j = info["jetson"]
    assert j["l4t"] == "R36.3.0" and j["model"] == "NVIDIA Jetson AGX Orin Developer Kit"
    assert j["power_mode"] == {"name": "MAXN", "id": 0} and j["tegrastats"]["gpu_load_pct"] == 37
    assert info["gpu"] == "Tesla T4" and info["power_mode"] == "MAXN (0)"  # the device kind, in two strings


def test_local_device_check_reports_like_the_agent():
    from edgedet.config import load_target
    from edgedet.devices import check_devices

    root = Path(__file__).resolve().parents[2]
    rep = check_devices(load_target(root / "targets" / "local_cpu.yaml"))
    (d,) = rep["devices"]
    assert d["ok"] and d["error"] is None and d["runtimes"]["onnxruntime"].startswith("ok ")
    assert set(d["runtimes"]) == set(agent.RUNTIME_DISTS) and d["info"]["cores"] >= 1
    rep = check_devices(load_target(root / "targets" / "local_cpu.yaml").model_copy(update={"backend": "tensorrt"}))
    assert not rep["devices"][0]["ok"]  # engines are never run on this machine
