"""Bad-input corpus: command lines of train, eval, import, export, data synth and info. Out-of-range or ill-typed
numbers, unknown options, outputs that cannot be written (a folder where a file goes, a file where a folder goes),
missing inputs. Every case: exit 2, one line naming the option or file, and nothing written: train checks its data,
config and teacher before its run folder exists, data synth never half-writes or overwrites a foreign dataset."""
from __future__ import annotations

import pytest

from .harness import Case
from .test_inputs_checkpoints import synth  # noqa: F401  (the fixture: a small synthetic dataset)

TRAIN = ["train", "--data", "{synth}", "--out", "run"]


def _mkfile(name: str, content: bytes = b"x"):
    def setup(sb, s):
        (sb / name).parent.mkdir(parents=True, exist_ok=True)
        (sb / name).write_bytes(content)
    return setup


def _mkdir(name: str):
    return lambda sb, s: (sb / name).mkdir(parents=True)


def _state_without_config(sb, s):
    import torch
    from safetensors.torch import save_file

    (sb / "run").mkdir()
    save_file({"x": torch.zeros(1)}, str(sb / "run" / "last.safetensors"), metadata={"format": "edgedet-train-state"})


def _train(name: str, extra: list[str], needle: str, setup=None, argv: list[str] | None = None) -> Case:
    return Case(f"train-{name}", (argv or TRAIN) + extra, setup=setup, timeout=90, expect_stderr=needle)


TRAIN_CASES = [
    _train("epochs-zero", ["--epochs", "0"], r"--epochs is 0, expected a number >= 1"),
    _train("epochs-negative", ["--epochs", "-3"], r"--epochs is -3"),
    _train("epochs-text", ["--epochs", "ten"], r"Invalid value for '--epochs'"),
    _train("batch-zero", ["--batch-size", "0"], r"--batch-size is 0"),
    _train("batch-huge", ["--batch-size", "100000"], r"--batch-size is 100000"),
    _train("accum-zero", ["--accum", "0"], r"--accum is 0"),
    _train("lr-nan", ["--lr", "nan"], r"--lr is nan"),
    _train("lr-inf", ["--lr", "inf"], r"--lr is inf"),
    _train("lr-zero", ["--lr", "0"], r"--lr is 0.0, expected a number > 0"),
    _train("lr-negative", ["--lr", "-1e-4"], r"--lr is -0.0001"),
    _train("groups-zero", ["--groups", "0"], r"--groups is 0"),
    _train("groups-huge", ["--groups", "100000"], r"--groups is 100000"),
    _train("warmup-negative", ["--warmup", "-1"], r"--warmup is -1"),
    _train("workers-negative", ["--workers", "-2"], r"--workers is -2"),
    _train("layer-decay-zero", ["--layer-decay", "0"], r"--layer-decay is 0.0"),
    _train("layer-decay-two", ["--layer-decay", "2"], r"--layer-decay is 2.0"),
    _train("max-steps-zero", ["--max-steps", "0"], r"--max-steps is 0"),
    _train("log-every-zero", ["--log-every", "0"], r"--log-every is 0"),
    _train("gam-every-zero", ["--gam-every", "0"], r"--gam-every is 0"),
    _train("gam-target-200", ["--gam-target", "200"], r"--gam-target is 200.0"),
    _train("gam-band-negative", ["--gam-band", "-1"], r"--gam-band is -1.0"),
    _train("dsi-weight-negative", ["--dsi-weight", "-5"], r"--dsi-weight is -5.0"),
    _train("teacher-type-unknown", ["--teacher-type", "dinov9"], r"unknown teacher type 'dinov9'"),
    _train("unknown-option", ["--epochz", "3"], r"No such option: --epochz"),
    _train("preset-unknown", ["--preset", "gigantic"], r"unknown preset 'gigantic'"),
    _train("out-is-a-file", [], r"run: --out is a file", setup=_mkfile("run")),
    _train("data-missing", [], r"nodata: no train/_annotations\.coco\.json",
           argv=["train", "--data", "nodata", "--out", "run"]),
    _train("data-is-a-file", [], r"afile: no train/", setup=_mkfile("afile"),
           argv=["train", "--data", "afile", "--out", "run"]),
    _train("space-missing", ["--space", "nospace.yaml"], r"nospace\.yaml: file not found"),
    _train("space-bad-yaml", ["--space", "s.yaml"], r"s\.yaml: not valid YAML",
           setup=_mkfile("s.yaml", b"a: [")),
    _train("space-wrong-field", ["--space", "s.yaml"], r"s\.yaml: patch: required field is missing",
           setup=_mkfile("s.yaml", b"resolution: [192]\nwindows: [1]\ndec_layers: [1]\nqueries: [25]\n")),
    _train("space-fits-nothing", ["--space", "s.yaml"], r"s\.yaml: no combination fits supernet",
           setup=_mkfile("s.yaml", b"patch: [7]\nresolution: [100]\nwindows: [1]\ndec_layers: [1]\n"
                         b"queries: [25]\n")),
    _train("fewer-images-than-a-step", ["--batch-size", "64"], r"training images are fewer than one step"),
    _train("teacher-missing", ["--teacher", "nofile.pth"], r"nofile\.pth: teacher file not found"),
    _train("backbone-missing", ["--backbone", "nofile.pth", "--batch-size", "1"],
           r"nofile\.pth: no such checkpoint file"),
    _train("backbone-garbage", ["--backbone", "bb.pth", "--batch-size", "1"], r"bb\.pth: corrupt",
           setup=_mkfile("bb.pth", b"\x00" * 99)),
    _train("resume-damaged-state", ["--resume", "--batch-size", "1"], r"last\.safetensors: not an edgedet training",
           setup=_mkfile("run/last.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + b" " * 14)),
    _train("resume-state-without-config", ["--resume", "--batch-size", "1"],
           r"last\.safetensors: cannot resume \(KeyError", setup=_state_without_config),
]


def _cmd(name: str, argv: list[str], needle: str, setup=None) -> Case:
    return Case(name, argv, setup=setup, timeout=90, expect_stderr=needle)


def _rf_ok(sb, s):
    """A valid small RF-DETR checkpoint (the import options are what is wrong)."""
    import torch

    from .test_inputs_checkpoints import _rfdetr_parts

    sd, args = _rfdetr_parts()
    torch.save({"model": sd, "args": args}, sb / "rf.pth")


IMPORT = ["import", "rfdetr", "rf.pth", "-o", "out.safetensors"]
EXPORT = ["export", "--preset", "tiny", "-s", "p24-r192-w2-d0-q25"]
OTHER_CASES = [
    _cmd("eval-batch-zero", ["eval", "--batch-size", "0", "--data", "{synth}"], r"--batch-size 0: must be >= 1"),
    _cmd("eval-subnet-garbage", ["eval", "-s", "p16;rm -rf", "--data", "{synth}"], r"invalid subnet id"),
    _cmd("eval-subnet-not-in-supernet", ["eval", "-s", "p99-r384-w2-d1-q25", "--data", "{synth}"], r"patch size 99"),
    _cmd("eval-split-missing", ["eval", "--split", "test", "--data", "{synth}"], r"no test/_annotations"),
    _cmd("eval-checkpoint-missing", ["eval", "-c", "none.safetensors", "--data", "{synth}"],
         r"none\.safetensors: checkpoint not found"),
    _cmd("import-out-is-a-folder", IMPORT, r"out\.safetensors: is a folder", setup=_mkdir("out.safetensors")),
    _cmd("import-out-under-a-file", ["import", "rfdetr", "rf.pth", "-o", "f/out.safetensors"],
         r"f/out\.safetensors: cannot write: f is not a folder", setup=_mkfile("f")),
    _cmd("import-checkpoint-missing", IMPORT, r"rf\.pth: checkpoint not found"),
    _cmd("import-checkpoint-a-folder", IMPORT, r"rf\.pth: checkpoint not found", setup=_mkdir("rf.pth")),
    _cmd("import-resolution-text", IMPORT + ["--resolution", "big"], r"Invalid value for '--resolution'"),
    _cmd("import-resolution-zero", IMPORT + ["--resolution", "0"], r"--resolution is 0, expected an integer"),
    _cmd("import-windows-negative", IMPORT + ["--num-windows", "-1"], r"--num-windows is -1"),
    _cmd("import-queries-zero", IMPORT + ["--num-queries", "0"], r"--num-queries is 0"),
    _cmd("import-groups-zero", IMPORT + ["--group-detr", "0"], r"--group-detr is 0"),
    _cmd("import-groups-not-dividing", IMPORT + ["--group-detr", "7", "--arg", "num_queries=null"],
         r"do not split into group_detr=7",
         setup=_rf_ok),
    _cmd("import-windows-off-grid", IMPORT + ["--num-windows", "3"], r"not a multiple of patch x windows",
         setup=_rf_ok),
    _cmd("import-arg-bad-json-type", IMPORT + ["--arg", "out_feature_indexes=[1,2,\"x\"]"],
         r"--arg out_feature_indexes is \[1, 2, 'x'\]"),
    _cmd("import-class-names-a-folder", IMPORT + ["--class-names", "@adir"], r"--class-names @adir: cannot read",
         setup=_mkdir("adir")),
    _cmd("import-class-names-bad-json", IMPORT + ["--class-names", "@n.json"], r"--class-names @n\.json: not a JSON",
         setup=_mkfile("n.json", b"[1, 2")),
    _cmd("export-out-is-a-folder", EXPORT + ["-o", "adir"], r"adir: is a folder", setup=_mkdir("adir")),
    _cmd("export-out-under-a-file", EXPORT + ["-o", "f/m.onnx"], r"cannot write: f is not a folder",
         setup=_mkfile("f")),
    _cmd("export-subnet-garbage", ["export", "--preset", "tiny", "-s", "$(touch x)", "-o", "m.onnx"],
         r"invalid subnet id"),
    _cmd("export-preset-unknown", ["export", "--preset", "huge", "-s", "p16-r192-w1-d1-q25", "-o", "m.onnx"],
         r"unknown preset 'huge'"),
    _cmd("export-both-sources", ["export", "--preset", "tiny", "-c", "x.safetensors", "-s", "p16-r192-w1-d1-q25",
                                 "-o", "m.onnx"], r"give at most one of --checkpoint or --preset"),
    _cmd("export-missing-subnet", ["export", "--preset", "tiny", "-o", "m.onnx"], r"Missing option '--subnet'"),
    _cmd("synth-size-tiny", ["data", "synth", "--out", "d", "--size", "5"], r"--size 5 must be in"),
    _cmd("synth-size-huge", ["data", "synth", "--out", "d", "--size", "99999"], r"--size 99999 must be in"),
    _cmd("synth-train-negative", ["data", "synth", "--out", "d", "--train", "-1"], r"--train, --val"),
    _cmd("synth-val-huge", ["data", "synth", "--out", "d", "--val", "10000000"], r"--train, --val"),
    _cmd("synth-seed-negative", ["data", "synth", "--out", "d", "--seed", "-1"], r"--seed >= 0"),
    _cmd("synth-out-is-a-file", ["data", "synth", "--out", "d", "--train", "1", "--val", "1"],
         r"d: --out is a file", setup=_mkfile("d")),
    _cmd("synth-out-is-a-foreign-dataset", ["data", "synth", "--out", "d", "--train", "1", "--val", "1"],
         r"d/train: already exists and is not an edgedet synthetic dataset", setup=_mkfile("d/train/cat.jpg")),
    _cmd("info-preset-unknown", ["info", "--preset", "giant"], r"unknown preset 'giant'"),
    _cmd("info-both", ["info", "--preset", "tiny", "-c", "x.safetensors"],
         r"give at most one of --checkpoint or --preset"),
    _cmd("command-unknown", ["trian"], r"No such command 'trian'"),
]

CASES = TRAIN_CASES + OTHER_CASES


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_cli_inputs(bad, case, synth):
    bad(case, synth=synth)
