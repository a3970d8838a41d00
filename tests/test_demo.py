"""The bundled demo supernet: `edgedet eval` with no arguments reproduces the AP recorded in the README."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from edgedet.data.demo import DEMO_CHECKPOINT, DEMO_TRAIN_COMMAND

ROOT = Path(__file__).resolve().parent.parent


def _readme_largest() -> dict:
    """AP columns of the 'largest' row of the README's AP table (written by benchmarks/ap_table.py)."""
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith("| largest |"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            return {"id": cells[1].strip("`"), **dict(zip(("AP", "AP50", "AP75", "APs", "APm", "APl"),
                                                          map(float, cells[4:10])))}
    raise AssertionError("README has no AP table row '| largest |'")


def test_demo_checkpoint_ships_with_its_training_command():
    from edgedet.checkpoint import read_header

    cfg, groups, meta = read_header(DEMO_CHECKPOINT)
    assert cfg.name == "tiny" and groups == 1 and DEMO_CHECKPOINT.stat().st_size < 8e6
    assert meta["train"]["lr"] == float(re.search(r"--lr (\S+)", DEMO_TRAIN_COMMAND).group(1))
    assert meta["epochs"] == int(re.search(r"--epochs (\d+)", DEMO_TRAIN_COMMAND).group(1))


@pytest.mark.slow
def test_eval_without_arguments_reproduces_the_readme(tmp_path):
    p = subprocess.run([sys.executable, "-m", "edgedet.cli", "eval", "--json"], capture_output=True, text=True,
                       timeout=1800, env={**__import__("os").environ, "EDGEDET_CACHE": str(tmp_path)})
    assert p.returncode == 0, p.stderr[-2000:]
    rep = json.loads(p.stdout)
    want = _readme_largest()
    got = rep["subnets"][want["id"]]
    for k in ("AP", "AP50", "AP75"):
        assert abs(got[k] - want[k]) <= 0.0015, (k, got[k], want[k])  # README rounds to 3 decimals
