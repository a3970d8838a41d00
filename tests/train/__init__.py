import os
import subprocess
import sys
from pathlib import Path


def torchrun_train(tmp_path: Path, data: Path, port: int, *extra: str, timeout: int = 600) -> Path:
    """`edgedet train` in two CPU processes through torch.distributed.run on a small space, 3 steps, each rank
    saving its state; asserts it exits 0 and returns the output folder."""
    space = tmp_path / "space.yaml"
    space.write_text("patch: [16, 24]\nresolution: [96, 192]\nwindows: [1, 2]\ndec_layers: [0, 2]\nqueries: [25]\n")
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", str(port),
           "-m", "edgedet.cli", "train", "--data", str(data), "--out", str(out), "--space", str(space),
           "--epochs", "1", "--batch-size", "2", "--groups", "2", "--workers", "0", "--max-steps", "3",
           "--save-rank-states", "--log-every", "1", *extra]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    assert p.returncode == 0, p.stderr[-3000:]
    return out
