"""Bad command lines and missing/unreadable files given on the command line."""
from __future__ import annotations

import pytest

from .harness import Case

CASES = [
    Case("export-bad-subnet-token", ["export", "--preset", "tiny", "-s", "p16-r384-x2", "-o", "m.onnx"],
         expect_stderr="subnet id"),
    Case("export-subnet-not-in-supernet", ["export", "--preset", "tiny", "-s", "p7-r384-w2-d3-q100", "-o", "m.onnx"],
         expect_stderr="patch size 7"),
    Case("info-missing-checkpoint", ["info", "-c", "nope.safetensors"], expect_stderr="nope.safetensors"),
    Case("info-checkpoint-is-dir", ["info", "-c", "{sandbox}"]),
    Case("info-checkpoint-not-safetensors", ["info", "-c", "junk.safetensors"],
         setup=lambda sb, s: (sb / "junk.safetensors").write_bytes(b"\x00" * 64), expect_stderr="junk.safetensors"),
    Case("compile-missing-target", ["compile", "-s", "p24-r192-w2-d0-q25", "-t", "nope.yaml", "-o", "art"],
         expect_stderr="nope.yaml"),
    Case("eval-missing-data", ["eval", "--data", "nodata", "-s", "p24-r192-w2-d0-q25"], expect_stderr="nodata"),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_cli(bad, case):
    bad(case)
