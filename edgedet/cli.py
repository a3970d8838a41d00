"""The `edgedet` command. Each command is a thin call into the API; user errors print one line and exit 2."""
from __future__ import annotations

import contextlib
import functools
import json
import os
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Optional

import typer
import typer.main

app = typer.Typer(help="edgedet: weight-sharing DETR supernets, hardware-in-the-loop search, compiled edge fronts.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")
import_app = typer.Typer(help="Import foreign checkpoints as edgedet supernets.", no_args_is_help=True)
app.add_typer(import_app, name="import")
device_app = typer.Typer(help="The devices of a target (this machine, or hosts over SSH).", no_args_is_help=True)
app.add_typer(device_app, name="device")
runtime_app = typer.Typer(help="The runtimes written next to compiled artifacts.", no_args_is_help=True)
app.add_typer(runtime_app, name="runtime")


def one_line(msg: str, limit: int = 2000) -> str:
    """`msg` as one printable line: names and keys taken from untrusted files may hold newlines or terminal
    escapes, which are shown escaped; very long messages are cut."""
    out = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(msg))
    return out if len(out) <= limit else out[:limit - 3] + "..."


def _fail(msg: str) -> None:
    typer.echo(f"error: {one_line(msg)}", err=True)
    raise typer.Exit(2)


def user_errors(fn):
    """Turn EdgedetError (bad input: file, field, value) into one line on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*a, **kw):
        from .errors import EdgedetError

        try:
            return fn(*a, **kw)
        except EdgedetError as e:
            _fail(str(e))
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130)

    return wrapper


CheckpointOpt = typer.Option(None, "--checkpoint", "-c", help="Supernet checkpoint (.safetensors); default: the "
                             "bundled demo supernet.")
PresetOpt = typer.Option(None, "--preset", help="Randomly initialised preset instead: tiny, nano, small, medium.")
TargetOpt = typer.Option("local_cpu", "--target", "-t", help="Target: a YAML file, or the name of a shipped target "
                         "(local_cpu, cpu_openvino, t4, jetson_orin, mobile_tflite), found from any folder. "
                         "Default: local_cpu (ONNX Runtime on this machine's CPU).")
VerboseOpt = typer.Option(False, "--verbose", "-v", help="Show what the runtimes and converters print (absl, oneDNN, "
                          "XNNPACK, NNCF, torchao, Python warnings); hidden by default.")
SeedOpt = typer.Option(0, "--seed", help="Random seed.")


@contextlib.contextmanager
def quiet_runtimes(verbose: bool = False):
    """While compiling or searching, send everything the runtimes and converters print to the process's stdout and
    stderr (C++ libraries write straight to file descriptors 1 and 2: absl, oneDNN, XNNPACK, the LiteRT converter;
    Python warnings, tqdm bars, torchao and pytree notices) to a scratch file that is dropped, unless `verbose`.
    Yields (out, err): text streams on the real stdout and stderr for edgedet's own lines and progress."""
    if verbose:
        yield sys.stdout, sys.stderr
        return
    for s in (sys.stdout, sys.stderr):
        s.flush()
    saved = {fd: os.dup(fd) for fd in (1, 2)}
    real = {fd: os.fdopen(os.dup(saved[fd]), "w", buffering=1) for fd in (1, 2)}
    with tempfile.TemporaryFile() as scratch:
        for fd in (1, 2):
            os.dup2(scratch.fileno(), fd)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                yield real[1], real[2]
        finally:
            for fd in (1, 2):
                with contextlib.suppress(Exception):
                    (sys.stdout if fd == 1 else sys.stderr).flush()
                os.dup2(saved[fd], fd)
                os.close(saved[fd])
                real[fd].close()


class RichProgress:
    """edgedet.progress on a rich console: counted steps as a bar with done/total, rate and elapsed time, the others
    as a spinner with the elapsed time; finished steps disappear (their result is a log line). Nothing is drawn
    when the console is not a terminal."""

    def __init__(self, console):
        from rich.progress import BarColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.text import Text

        class Count(ProgressColumn):
            def render(self, task):
                if task.total is None:
                    return Text("")
                unit = task.fields.get("unit") or ""
                rate = f", {task.speed:.1f} {unit}/s" if task.speed and unit else ""
                return Text(f"{task.completed:.0f}/{task.total:.0f}{' ' + unit if unit else ''}{rate}")

        self.shown = console.is_terminal  # elsewhere (a pipe, a log file, CI) not even a blank line
        self.bars = Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(bar_width=24), Count(),
                             TimeElapsedColumn(), console=console, transient=True, redirect_stdout=False,
                             redirect_stderr=False)

    def __enter__(self) -> "RichProgress":
        if self.shown:
            self.bars.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.shown:
            self.bars.stop()

    def task(self, description: str, total: float | None = None, unit: str = ""):
        from .progress import Task

        if not self.shown:
            return Task()
        bars, tid = self.bars, self.bars.add_task(description, total=total, unit=unit)

        class Shown(Task):
            def update(self, completed=None, description=None):
                bars.update(tid, **{k: v for k, v in (("completed", completed), ("description", description))
                                    if v is not None})

            def close(self):
                bars.remove_task(tid)

        return Shown()


def _supernet_source(checkpoint: Optional[Path], preset: Optional[str]):
    """(checkpoint path or None, preset name or None): the bundled demo supernet when neither is given."""
    from .data.demo import demo_checkpoint
    from .errors import ConfigError

    if checkpoint is not None and preset is not None:
        raise ConfigError("give at most one of --checkpoint or --preset")
    if checkpoint is None and preset is None:
        return demo_checkpoint(), None
    return checkpoint, preset


@app.command()
@user_errors
def info(checkpoint: Optional[Path] = CheckpointOpt, preset: Optional[str] = PresetOpt,
         as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Supernet config, its search space, and FLOPs/params of the smallest and largest subnets (default: the
    bundled demo supernet)."""
    from .api import supernet_info
    from .checkpoint import read_header
    from .config import preset as get_preset

    checkpoint, preset = _supernet_source(checkpoint, preset)
    cfg = read_header(checkpoint)[0] if checkpoint else get_preset(preset)
    rep = supernet_info(cfg)
    if as_json:
        typer.echo(json.dumps(rep, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    con = Console()
    c = rep["config"]
    con.print(f"[bold]supernet[/bold] {c['name']}: ViT {c['embed_dim']}d x {c['depth']} blocks "
              f"({c['num_heads']} heads, native patch {c['patch_size']}), taps {c['taps']}, global blocks "
              f"{c['global_blocks']}, projector {c['levels']} -> {c['hidden_dim']}, decoder {c['dec_layers']} layers, "
              f"{c['num_queries']} queries, {c['num_classes']} classes")
    t = Table(title="search space (knob values)")
    t.add_column("knob")
    t.add_column("values")
    for k, v in rep["space"].items():
        t.add_row(k, ", ".join(map(str, v)))
    con.print(t)
    t = Table(title="extremes")
    for col in ("", "subnet", "GFLOPs", "params (M)"):
        t.add_column(col)
    for tag in ("smallest", "largest"):
        e = rep[tag]
        t.add_row(tag, e["id"], f"{e['gflops']:.2f}", f"{e['params_m']:.2f}")
    con.print(t)


@app.command()
@user_errors
def export(subnet: str = typer.Option(..., "--subnet", "-s", help="Subnet id, e.g. p16-r384-w2-d3-q100."),
           output: Path = typer.Option(..., "-o", "--output", help="Output .onnx path."),
           checkpoint: Optional[Path] = CheckpointOpt, preset: Optional[str] = PresetOpt,
           no_check: bool = typer.Option(False, "--no-check", help="Skip the ONNX Runtime vs torch check.")):
    """Export one subnet to ONNX (images [B,3,R,R] RGB 0..1 -> boxes cxcywh, logits), checked with ONNX Runtime
    (default supernet: the bundled demo)."""
    from .api import export_onnx, load_supernet
    from .checkpoint import check_output_file, read_header
    from .config import SubnetConfig
    from .config import preset as get_preset

    check_output_file(output)
    checkpoint, preset = _supernet_source(checkpoint, preset)
    cfg = read_header(checkpoint)[0] if checkpoint else get_preset(preset)
    SubnetConfig.parse(subnet, cfg)  # fail fast, before loading weights
    net = load_supernet(checkpoint, preset)
    res = export_onnx(net, subnet, output, check=not no_check)
    diffs = ", ".join(f"{k} {v:.1e}" for k, v in res.max_abs_diff.items()) or "not checked"
    typer.echo(f"wrote {res.path} ({res.size_bytes / 1e6:.1f} MB, opset {res.opset}, subnet {res.subnet}; "
               f"ONNX Runtime vs torch max abs diff: {diffs})")


@data_app.command("synth")
@user_errors
def data_synth(out: Path = typer.Option(..., "--out", "-o", help="Output folder (Roboflow COCO layout)."),
               train: int = typer.Option(2000, "--train", help="Training images."),
               val: int = typer.Option(200, "--val", help="Validation images."),
               seed: int = SeedOpt,
               size: int = typer.Option(320, "--size", help="Image side in pixels.")):
    """Write a deterministic synthetic COCO dataset (shapes, textures, clutter, occlusion, lighting)."""
    from rich.progress import Progress

    from .data.synthetic import generate

    with Progress(transient=True) as bar:
        task = bar.add_task("rendering", total=train + val)
        info = generate(out, train, val, seed=seed, image_size=size,
                        progress=lambda done, total: bar.update(task, completed=done, total=total))
    typer.echo(f"wrote {out}: {json.dumps(info)}")


@app.command()
@user_errors
def train(data: Path = typer.Option(..., "--data", help="COCO dataset folder (train/ and valid/ with "
                                                      "_annotations.coco.json)."),
          out: Path = typer.Option(..., "--out", "-o", help="Run folder, e.g. runs/train/NAME."),
          preset: str = typer.Option("tiny", "--preset", help="Architecture preset to train: tiny, nano, small, "
                                     "medium."),
          space: Optional[Path] = typer.Option(None, "--space", help="Search space YAML the steps sample from."),
          epochs: int = typer.Option(10, "--epochs", help="Passes over the training set."),
          batch_size: int = typer.Option(8, "--batch-size", help="Images per step."),
          accum: int = typer.Option(1, "--accum", help="Gradient accumulation steps."),
          lr: float = typer.Option(2e-4, "--lr", help="AdamW learning rate (the backbone's is scaled by "
                                   "--layer-decay)."),
          layer_decay: float = typer.Option(0.8, "--layer-decay", help="Backbone LR decay per block towards the "
                                            "input (1.0 for a backbone trained from scratch)."),
          groups: int = typer.Option(4, "--groups", help="Group-DETR query groups in training."),
          warmup: int = typer.Option(200, "--warmup", help="Linear warm-up steps."),
          workers: int = typer.Option(1, "--workers", help="Data-loading worker processes."),
          seed: int = SeedOpt,
          max_steps: Optional[int] = typer.Option(None, "--max-steps", help="Stop after this many steps (default: "
                                                  "--epochs)."),
          backbone: Optional[Path] = typer.Option(None, "--backbone", help="DINOv2 weights for the ViT (torch-hub "
                                                                        "or Hugging Face file)."),
          resume: bool = typer.Option(False, "--resume", help="Continue from OUT/last.safetensors."),
          log_every: int = typer.Option(20, "--log-every", help="Steps between lines of OUT/log.jsonl."),
          teacher: Optional[str] = typer.Option(None, "--teacher", help="Distil (DSI + GAM) from a frozen teacher: "
                                                "a DINOv2/DINOv3 weights file (torch-hub or Hugging Face), an edgedet "
                                                "checkpoint, or timm:NAME[=FILE]. Training-only: the exported model "
                                                "is the same."),
          teacher_type: str = typer.Option("auto", "--teacher-type", help="auto, dinov2, dinov3, edgedet or timm."),
          teacher_cache: Optional[Path] = typer.Option(None, "--teacher-cache", help="Folder for per-image teacher "
                                                       "features, computed once before training (the teacher then "
                                                       "never runs in the loop)."),
          dsi_weight: float = typer.Option(20.0, "--dsi-weight", help="Initial DSI loss weight lambda0."),
          gam: bool = typer.Option(True, "--gam/--no-gam", help="Gradient-guided modulation of the DSI weight."),
          gam_target: float = typer.Option(11.0, "--gam-target", help="GAM: target share (%) of the gradient of the "
                                           "module producing the aligned map (rho)."),
          gam_band: float = typer.Option(1.0, "--gam-band", help="GAM: tolerated deviation from the target (delta)."),
          gam_every: Optional[int] = typer.Option(None, "--gam-every", help="Steps between GAM updates "
                                                  "(default: one epoch)."),
          fdr: bool = typer.Option(False, "--fdr", help="D-FINE FDR box head with FGL and GO-LSD (DDF) losses."),
          save_rank_states: bool = typer.Option(False, "--save-rank-states", hidden=True,
                                                help="Tests: save every DDP rank's final state.")):
    """Train a weight-sharing supernet: every step samples one subnet of the space uniformly."""
    from .train.engine import TrainConfig, train as run_train

    cfg = TrainConfig(data=str(data), out=str(out), preset=preset, space=str(space) if space else None,
                      epochs=epochs, batch_size=batch_size, accum=accum, lr=lr, layer_decay=layer_decay,
                      groups=groups, warmup_steps=warmup,
                      workers=workers, seed=seed, max_steps=max_steps, backbone=str(backbone) if backbone else None,
                      resume=resume, log_every=log_every, save_rank_states=save_rank_states,
                      teacher=teacher, teacher_type=teacher_type,
                      teacher_cache=str(teacher_cache) if teacher_cache else None, dsi_weight=dsi_weight, gam=gam,
                      gam_rho=gam_target, gam_delta=gam_band, gam_every=gam_every, fdr=fdr)
    path = run_train(cfg)
    typer.echo(f"wrote {path}")


@app.command("eval")
@user_errors
def eval_cmd(subnet: Optional[list[str]] = typer.Option(None, "--subnet", "-s", help="Subnet id (repeatable); "
                                                        "default: the largest."),
             checkpoint: Optional[Path] = CheckpointOpt,
             data: Optional[Path] = typer.Option(None, "--data", help="COCO dataset folder (its valid/ split); "
                                                 "default: the demo's synthetic val set."),
             split: str = typer.Option("valid", "--split", help="Split folder of the dataset to evaluate on."),
             batch_size: int = typer.Option(8, "--batch-size", help="Images per forward pass."),
             as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """COCO AP (pycocotools) of subnets; with no checkpoint/data, the bundled demo supernet on its val set."""
    from .api import evaluate

    if as_json or not sys.stderr.isatty():
        rep = evaluate(checkpoint, data, subnet or None, split=split, batch_size=batch_size)
    else:
        from rich.progress import Progress

        with Progress(transient=True) as bar:
            task = bar.add_task("evaluating", total=None)
            rep = evaluate(checkpoint, data, subnet or None, split=split, batch_size=batch_size,
                           progress=lambda d, t: bar.update(task, completed=d, total=t))
    if as_json:
        typer.echo(json.dumps(rep, indent=1))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"COCO AP on {rep['data']} ({rep['images']} images)")
    for col in ("subnet", "GFLOPs", "AP", "AP50", "AP75", "APs", "APm", "APl"):
        t.add_column(col, justify="right")
    for sid, m in rep["subnets"].items():
        t.add_row(sid, f"{m['gflops']:.2f}", *(f"{m[k]:.3f}" for k in ("AP", "AP50", "AP75", "APs", "APm", "APl")))
    Console(width=120).print(t)


@app.command("compile")
@user_errors
def compile_cmd(subnet: str = typer.Option(..., "--subnet", "-s", help="Subnet id."),
                target: str = TargetOpt,
                output: Path = typer.Option(..., "-o", "--output", help="Artifact folder to write."),
                checkpoint: Optional[Path] = CheckpointOpt, preset: Optional[str] = PresetOpt,
                fp16: bool = typer.Option(False, "--fp16", help="Compile at fp16 (the target must list it; "
                                          "default precision: fp32)."),
                int8: bool = typer.Option(False, "--int8", help="Compile at int8, calibrated on the calibration "
                                          "recipe's images (post-training quantization)."),
                bf16: bool = typer.Option(False, "--bf16", help="Compile at bf16 (OpenVINO on CPUs with native bf16, "
                                          "e.g. AVX512-BF16 / AMX)."),
                calibration: Optional[Path] = typer.Option(None, "--calibration", help="Calibration recipe YAML "
                                                           "(default: the target's)."),
                runtime: list[str] = typer.Option(["python"], "--runtime", help="Runtimes to write into the artifact: "
                                                  "python, cpp (repeatable or a comma list)."),
                max_ap_drop: Optional[float] = typer.Option(None, "--max-ap-drop", help="OpenVINO int8 with accuracy "
                                                            "control: revert layers to float until AP drops at "
                                                            "most this much (absolute) on the val set."),
                data: Optional[Path] = typer.Option(None, "--data", help="COCO dataset whose valid/ split is the "
                                                    "accuracy-control val set (default: demo val set)."),
                overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUTPUT whatever it holds (without "
                                               "it, OUTPUT must be absent, empty or an earlier artifact of this "
                                               "same compile)."),
                verbose: bool = VerboseOpt):
    """Compile one subnet for a target (fp32 by default) into a sealed artifact folder with its runtime module."""
    from .api import load_supernet
    from .data.demo import demo_checkpoint
    from .deploy import check_runtimes, compile_subnet

    if sum((fp16, int8, bf16)) > 1:
        _fail("give at most one of --fp16, --int8, --bf16")
    precision = "fp16" if fp16 else "int8" if int8 else "bf16" if bf16 else "fp32"
    runtimes = check_runtimes(runtime)
    net = load_supernet(checkpoint or (None if preset else demo_checkpoint()), preset)
    options = None
    if max_ap_drop is not None:
        from .backends import BACKEND_NAMES, capabilities
        from .config import load_target
        from .data.coco import CocoDetection
        from .data.demo import demo_data
        from .errors import ConfigError

        backend = load_target(target).backend
        if not capabilities(backend).accuracy_control or precision != "int8":
            able = ", ".join(b for b in BACKEND_NAMES if capabilities(b).accuracy_control)
            raise ConfigError(f"--max-ap-drop is accuracy-controlled int8 (use with --int8) for backends {able}; "
                              f"this target runs {backend}")
        options = {"accuracy_control": {"dataset": CocoDetection(data or demo_data(), "valid", labels=net.cfg),
                                        "max_ap_drop": max_ap_drop}}
    with quiet_runtimes(verbose) as (_, err):
        from rich.console import Console

        with RichProgress(Console(file=err)) as bars, bars.task(f"compile {subnet} for {target} ({precision})") as t:
            art = compile_subnet(net, subnet, target, precision, output, calibration=calibration, runtime=runtimes,
                                 options=options, overwrite=overwrite,
                                 step=lambda text: t.update(description=f"compile {subnet} ({precision}): {text}"))
    diff = art.metadata.get("max_abs_diff_vs_torch")
    extra = f"; vs torch max abs diff {max(diff.values()):.1e}" if diff else ""
    typer.echo(f"wrote {art.dir} ({art.backend} {art.precision}, {len(art.files)} files sealed{extra})")
    for name, where in art.metadata.get("runtimes", {}).items():
        typer.echo(f"  {name} runtime: {where}")


@runtime_app.command("build")
@user_errors
def runtime_build(artifact: Path = typer.Argument(..., help="Artifact folder (or its runtime/cpp project)."),
                  build_dir: Optional[Path] = typer.Option(None, "--build-dir", help="Default: PROJECT/build."),
                  jobs: Optional[int] = typer.Option(None, "--jobs", "-j", help="Parallel compile jobs."),
                  debug: bool = typer.Option(False, "--debug", help="Debug build instead of Release."),
                  preprocess_only: bool = typer.Option(False, "--preprocess-only", help="Build only "
                                                       "libedgedet_preprocess (the compiled pre-processing the Python "
                                                       "runtime can load; needs no backend SDK).")):
    """Configure and build an artifact's C++ runtime with CMake (needs cmake, a C++17 compiler and the backend's
    SDK; says which is missing)."""
    from .runtime.cpp import build_cpp, example_path, preprocess_library_path

    build = build_cpp(artifact, build_dir, jobs, "Debug" if debug else "Release", preprocess_only)
    if not preprocess_only:
        typer.echo(f"built {build}: example {example_path(build)} (run it with an image.ppm; --time 200 for "
                   "p50/p90)")
    typer.echo(f"built {preprocess_library_path(build)}: compiled pre-processing for the Python runtime "
               "(Detector(preprocess_library=...), or --preprocess-library)")


@app.command()
@user_errors
def search(target: str = TargetOpt,
           output: Path = typer.Option(Path("runs/search/local_cpu"), "-o", "--output", help="Search folder."),
           checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c", help="Supernet checkpoint "
                                                     "(default: the bundled demo supernet)."),
           data: Optional[Path] = typer.Option(None, "--data", help="COCO dataset folder whose valid/ split "
                                               "measures AP (default: the demo's synthetic val set)."),
           space: Optional[Path] = typer.Option(None, "--space", help="Search space YAML (default: the space the "
                                                "supernet was trained for)."),
           max_measurements: Optional[int] = typer.Option(None, "--max-measurements", help="Latency "
                                                          "measurement budget (default: 5% of the candidates, >= 10)."),
           resume: bool = typer.Option(False, "--resume", help="Continue the search in OUTPUT; nothing completed "
                                       "is measured again."),
           storage: Optional[str] = typer.Option(None, "--storage", help="SQLAlchemy URL of the study + store "
                                                 "(default: sqlite OUTPUT/search.db); share it between machines."),
           val_images: Optional[int] = typer.Option(None, "--val-images", help="AP on the first N val "
                                                    "images only (faster, noisier)."),
           generations: int = typer.Option(6, "--generations", help="NSGA-II generations per round."),
           population: int = typer.Option(24, "--population", help="NSGA-II population."),
           seed: int = typer.Option(0, "--seed", help="Seed of NSGA-II and of the initial design's tie-breaks."),
           runtime: list[str] = typer.Option(["python", "cpp"], "--runtime", help="Runtimes written for front "
                                             "points (python, cpp; repeatable or comma list)."),
           worker: bool = typer.Option(False, "--worker", help="Only measure candidates that searches sharing "
                                       "--storage queued for this target (same checkpoint, data and --val-images); "
                                       "stops when they have ended."),
           verbose: bool = VerboseOpt):
    """Hardware-in-the-loop search: AP x measured latency on the target, Pareto front compiled with its runtime."""
    from rich.console import Console

    with quiet_runtimes(verbose) as (out, _):
        con = Console(width=140, file=out)
        say = lambda m: con.print(m, highlight=False, markup=False)  # noqa: E731
        with RichProgress(con) as bars:
            if worker:
                from .search.run import serve

                serve(target, storage, checkpoint=checkpoint, data=data, out=output, val_images=val_images, say=say,
                      progress=bars)
                return
            from .search import search as run_search
            from .search.report import front_table, history_line

            man = run_search(target, checkpoint=checkpoint, data=data, space=space, out=output,
                             max_measurements=max_measurements, resume=resume, storage=storage,
                             val_images=val_images, generations=generations, population=population, seed=seed,
                             runtime=tuple(runtime), say=say, progress=bars)
    con = Console(width=140)
    say = lambda m: con.print(m, highlight=False, markup=False)  # noqa: E731
    con.print(front_table(man))
    say(history_line(man))
    for w in man["search"]["warnings"]:
        typer.echo(f"warning: {w}", err=True)
    con.print(f"wrote {output}/manifest.json, pareto.png, report.html")


@app.command()
@user_errors
def bench(artifacts: list[Path] = typer.Argument(..., help="Artifact folder(s) from edgedet compile."),
          target: str = TargetOpt,
          data: Optional[Path] = typer.Option(None, "--data", help="COCO dataset for AP (default: demo val set)."),
          no_ap: bool = typer.Option(False, "--no-ap", help="Latency only."),
          as_json: bool = typer.Option(False, "--json", help="Print JSON (every record with its conditions).")):
    """Benchmark artifacts on a target: format, precision, status, size, AP, p50/p90 ms (with their conditions).
    Exit 2 for a bad target or artifact (checked before anything is measured), 1 when a device failed."""
    from .backends.base import Artifact
    from .config import load_target
    from .deploy import benchmark_artifact
    from .errors import ConfigError

    t = load_target(target)
    arts = [Artifact.open(a) for a in artifacts]
    for a in arts:
        changed = a.verify()
        if changed:
            raise ConfigError(f"artifact {a.dir}: files changed since compile: {', '.join(changed[:5])}")
        if a.backend != t.backend:
            raise ConfigError(f"artifact {a.dir} is for {a.backend}, target {t.name} runs {t.backend}")
    rows = [benchmark_artifact(a, t, data, with_ap=not no_ap) for a in arts]
    failed = [r for r in rows if r["status"].startswith("error: ")]
    if as_json:
        typer.echo(json.dumps(rows, indent=1))
        _device_failures(failed)
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=f"benchmark on {escape(str(target))}")
    for col in ("artifact", "format", "precision", "status", "size MB", "AP", "AP50", "p50 ms", "p90 ms"):
        table.add_column(col)
    for r in rows:  # device answers are plain text: no Rich markup from them
        lat, ap = r["latency"] or {}, r["ap"] or {}
        table.add_row(escape(Path(r["artifact"]).name), r["format"], r["precision"], escape(r["status"]),
                      f"{r['size_mb']:.1f}", f"{ap['AP']:.3f}" if ap else "-", f"{ap['AP50']:.3f}" if ap else "-",
                      f"{lat['p50_ms']:.2f}" if lat else "-", f"{lat['p90_ms']:.2f}" if lat else "-")
    con = Console(width=140)
    con.print(table)
    for r in rows:
        if r["latency"]:
            lat = r["latency"]
            rt = lat["runtime"]
            con.print(f"{Path(r['artifact']).name}: {rt.get('runtime')} {rt.get('runtime_version')}, precision in "
                      f"effect {rt.get('inference_precision', rt.get('precision'))}, threads {rt.get('threads')}, "
                      f"batch {lat['batch']}, warm-up {lat['warmup']}, runs {lat['runs']}, spread {lat['spread']:.2f}"
                      + (" [NOISY]" if lat["noisy"] else "") + f", cpu {lat['device'].get('cpu')}",
                      markup=False, highlight=False)
    _device_failures(failed)


def _device_failures(rows: list[dict]) -> None:
    """One stderr line per artifact whose device failed (at most 3), then exit code 1."""
    for r in rows[:3]:
        typer.echo(f"error: {Path(r['artifact']).name}: {r['status'].removeprefix('error: ')}", err=True)
    if rows:
        raise typer.Exit(1)


@import_app.command("rfdetr")
@user_errors
def import_rfdetr_cmd(checkpoint: Path = typer.Argument(..., help="RF-DETR checkpoint (.pth or Lightning .ckpt "
                                                                "from the rfdetr package)."),
                      output: Path = typer.Option(..., "-o", "--output", help="Output supernet (.safetensors)."),
                      resolution: Optional[int] = typer.Option(None, "--resolution", help="Input side the model was "
                                                               "trained at, when the checkpoint has no args (default: "
                                                               "rfdetr's for the recognised model, e.g. 560 for "
                                                               "RF-DETR Base)."),
                      num_windows: Optional[int] = typer.Option(None, "--num-windows", help="Attention windows per "
                                                                "side (rfdetr's num_windows)."),
                      num_queries: Optional[int] = typer.Option(None, "--num-queries", help="Queries per group "
                                                                "(rfdetr's num_queries)."),
                      group_detr: Optional[int] = typer.Option(None, "--group-detr", help="Query groups the "
                                                               "checkpoint was trained with (default 13)."),
                      class_names: Optional[str] = typer.Option(None, "--class-names", help="Class name of each "
                                                                "label: a comma list, or @FILE (one per line or a "
                                                                "JSON list)."),
                      arg: Optional[list[str]] = typer.Option(None, "--arg", help="Any other rfdetr setting the "
                                                              "checkpoint lacks, KEY=VALUE (VALUE as JSON), e.g. "
                                                              "--arg out_feature_indexes=[2,5,8,11] (repeatable).")):
    """RF-DETR checkpoint -> edgedet supernet (read without executing code; query group 0 only). Settings the
    file lacks come from rfdetr's defaults for the recognised model; state them with the options above."""
    from .checkpoint import check_output_file
    from .importers.rfdetr import import_rfdetr
    from .importers.rfdetr_config import parse_user_args

    user = parse_user_args(arg, resolution=resolution, num_windows=num_windows, num_queries=num_queries,
                           group_detr=group_detr, class_names=class_names)
    check_output_file(output)
    for line in import_rfdetr(checkpoint, output, args=user)[1].summary_lines():
        typer.echo(line)


@device_app.command("check")
@user_errors
def device_check(target: str = typer.Argument(..., help="Target YAML or shipped target name, e.g. "
                                              "targets/my_orin.yaml or jetson_orin."),
                 as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Reach every device of a target: connection, device info, runtimes available, whether the target's backend
    can run there. Exit 1 when a device is unreachable or cannot run the backend."""
    from .config import load_target
    from .devices import check_devices

    rep = check_devices(load_target(target))
    if as_json:
        typer.echo(json.dumps(rep, indent=1))
    else:
        for line in device_report_lines(rep):
            typer.echo(line)
    if not all(d["ok"] for d in rep["devices"]):
        raise typer.Exit(1)


def device_report_lines(rep: dict) -> list[str]:
    out = [f"target {rep['target']} (backend {rep['backend']})"]
    for d in rep["devices"]:
        if d["error"]:
            err = d["error"].removeprefix(f"{d['address']}: ")
            out.append(f"  {d['address']}: error: {err}")
            continue
        i = d["info"]
        where = f" (workdir {d['workdir']}, python {d['python']})" if "workdir" in d else ""
        out.append(f"  {d['address']}{where}: {'ok' if d['ok'] else 'cannot run ' + rep['backend']}")
        out.append(f"    {i.get('hostname')}: {i.get('cpu')}, {i.get('cores')} cores, {i.get('memory_gb')} GB, "
                   f"{i.get('os')} {i.get('machine')}, python {i.get('python')}")
        for g in i.get("gpus") or []:
            out.append(f"    gpu: {g.get('name')}, driver {g.get('driver_version')}, {g.get('memory.total')} MiB, "
                       f"sm clock {g.get('clocks.sm')}/{g.get('clocks.max.sm')} MHz, {g.get('temperature.gpu')} C")
        j = i.get("jetson")
        if j:
            mode = j.get("power_mode") or {}
            out.append(f"    jetson: {j.get('model')}, L4T {j.get('l4t')}, power mode "
                       f"{mode.get('name', 'unknown')} ({mode.get('id')})")
        for name, state in d["runtimes"].items():
            mark = "*" if name == rep["backend"] else " "
            out.append(f"   {mark}{name}: {state}")
    out += [f"  warning: {w}" for w in rep["warnings"]]
    return out


def command():
    """The click command behind `edgedet`, with on/off options shown as flags (no `<bool>` type column)."""
    cmd = typer.main.get_command(app)

    def flag(p):
        if p is not None and getattr(p, "is_flag", False) and p.metavar is None:
            p.metavar = ""
        return p

    def polish(c):
        for p in c.params:
            flag(p)
        get_help = c.get_help_option
        c.get_help_option = lambda ctx: flag(get_help(ctx))
        for sub in getattr(c, "commands", {}).values():
            polish(sub)

    polish(cmd)
    return cmd


def main() -> None:
    """The console script. A command-line mistake (unknown option, a value of the wrong type, a missing argument)
    is one line on stderr and exit code 2, like every other user error; help prints as usual."""
    try:
        code = command()(prog_name="edgedet", standalone_mode=False)
    except typer.Abort:
        typer.echo("interrupted", err=True)
        sys.exit(130)
    except typer.TyperException as e:  # typer's usage errors (its vendored click's UsageError, BadParameter, ...)
        ctx = getattr(e, "ctx", None)
        if type(e).__name__ == "NoArgsIsHelpError" and ctx is not None:
            typer.echo(ctx.get_help(), err=True)
            sys.exit(2)
        msg = e.format_message() if hasattr(e, "format_message") else str(e)
        where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        typer.echo(f"error: {one_line(' '.join(msg.split()))}{where}", err=True)
        sys.exit(getattr(e, "exit_code", 2))
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    sys.exit(main())
