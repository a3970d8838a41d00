"""End to end without the rfdetr package: an RF-DETR-Nano-layout checkpoint with random weights, saved as rfdetr
1.11 saves it ({"model", "args": dict, "model_name"}: COCO head of 91 logits, no class names), imported by the CLI,
then `edgedet search` on a COCO folder whose categories are COCO's with non-contiguous ids (person 1, car 3, dog 18):
the imported labels keep COCO ids, AP maps them onto the dataset's categories, and every front artifact carries
class names and category ids that name the dataset's categories."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from edgedet.config import preset
from edgedet.model.supernet import Supernet

from ..conftest import COCO_SUBSET, randomize, with_coco_ids
from .test_rfdetr import rf_args, to_rfdetr

SPACE = "patch: [16]\nresolution: [128, 192]\nwindows: [2]\ndec_layers: [1, 2]\nqueries: [50]\n"
TARGET = ("name: e2e_cpu\ndevice: {type: local}\nbackend: onnxruntime\nprecisions: [fp32]\nruntime: {threads: 1}\n"
          "latency: {budget_ms: 100000, percentile: 90}\nbenchmark: {warmup: 1, runs: 3, min_duration_s: 0}\n")


def _cli(*args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgedet.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.slow
def test_rfdetr_nano_checkpoint_imported_and_searched_on_coco_ids(tmp_path):
    from edgedet.data.synthetic import generate

    torch.manual_seed(0)
    src = randomize(Supernet(preset("nano")), seed=1, scale=0.02).eval()  # RF-DETR-N dimensions, 91 logits
    args = vars(rf_args(src.cfg))  # num_classes 90 (+1 logit), resolution 384, num_windows 2; no class_names
    ck = tmp_path / "rf-detr-nano-finetuned.pth"
    torch.save({"model": to_rfdetr(src), "args": args, "model_name": "RFDETRNano", "rfdetr_version": "1.11.2"}, ck)
    del src

    out = tmp_path / "nano.safetensors"
    p = _cli("import", "rfdetr", str(ck), "-o", str(out))
    assert p.returncode == 0, p.stderr
    assert "as supernet 'rfdetr-nano'" in p.stdout and "91 logits with class names" in p.stdout

    data = tmp_path / "coco"
    generate(data, 0, 8, seed=4, image_size=128)
    with_coco_ids(data)  # categories person (1), car (3), dog (18)
    (tmp_path / "space.yaml").write_text(SPACE)
    (tmp_path / "target.yaml").write_text(TARGET)

    p = _cli("eval", "-c", str(out), "--data", str(data), "-s", "p16-r128-w2-d1-q50", "--json")
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["images"] == 8

    run = tmp_path / "search"
    p = _cli("search", "-t", str(tmp_path / "target.yaml"), "-c", str(out), "--data", str(data), "--space",
             str(tmp_path / "space.yaml"), "--max-measurements", "3", "--val-images", "4", "--generations", "1",
             "--population", "4", "--runtime", "python", "-o", str(run), timeout=1800)
    assert p.returncode == 0, p.stderr[-3000:]
    man = json.loads((run / "manifest.json").read_text())
    assert man["front"] and all(pt["ap"] is not None for pt in man["points"] if pt["status"] == "ok")
    wanted = {cid: name for cid, name in COCO_SUBSET.values()}
    for pt in man["front"]:
        meta = json.loads((run / pt["artifact"]["dir"] / "artifact.json").read_text())["metadata"]
        names, ids = meta["class_names"], meta["category_ids"]
        assert len(names) == len(ids) == 91 and ids == list(range(91))  # label index = COCO category id
        for cid, name in wanted.items():
            assert names[ids.index(cid)] == name, (cid, names[ids.index(cid)])
