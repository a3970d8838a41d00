"""`edgedet search`: AP x latency on a target's devices, predict then verify, compiled Pareto front.

1. everything is validated first (target, checkpoint, space, dataset, store, devices); the output folder is created
   only then, so a failed start leaves nothing behind.
2. candidates = subnets of the space x the target's precisions; AP of subnets from the shared evaluator (cached in
   the store, torch fp32); latency from measurements (store) or the predictor; search/explore.py chooses what to
   measure, search/measure.py measures it on the target's devices.
3. the front of the measured points (under the latency budget) is kept: artifacts, runtime modules, manifest.json,
   pareto.png, report.html (search/report.py).

Several searches (on one machine or many) and workers (`serve`: `edgedet search --worker`) may share one store
(`--storage`): each candidate, AP group and round of proposals is claimed by one of them (search/claims.py), and as
the explorer makes the same choices from the same store, every search of the same settings ends with the same
measurements and the same front.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..backends.base import sha256
from ..config import SearchSpace, TargetSpec, load_space, load_target, resolve_target
from ..errors import ConfigError
from ..progress import SILENT, Progress
from .claims import Claims, run_claimed
from .explore import Explorer
from .measure import CAND, SEARCH, DeviceMeasurer, TorchAP, shared_propose
from .space import Candidate, candidates
from .store import Store, parse_url, sqlite_url

Say = Callable[[str], None]
WORKER_WAIT_S = 600.0  # a worker that has seen no search for this long stops


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(p.name.encode())
        h.update(bytes.fromhex(sha256(p)))
    return h.hexdigest()


def _dataset_sha(ds) -> str:
    base = getattr(ds, "dataset", ds)
    names = {im["file_name"] for im in ds.images}
    files = [base.root / base.split / n for n in names] if hasattr(base, "root") else []
    ann = [Path(base.ann_file)] if getattr(base, "ann_file", None) else []
    return _digest(ann + files)


def fingerprint(t: TargetSpec, info: dict, runtime_version: str) -> str:
    """Same device kind + runtime + settings -> same fingerprint (host names left out: a pool shares it)."""
    dev = {k: info.get(k) for k in ("cpu", "cores", "machine", "memory_gb", "gpu", "power_mode")}
    bench = t.benchmark.model_dump(exclude={"max_other_cores", "repeat_noisy", "repeat_cooldown_s"})  # noise handling
    key = {"backend": t.backend, "runtime": t.runtime.model_dump(), "benchmark": bench,
           "device": dev, "runtime_version": runtime_version}
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]


def _space_key(sp: SearchSpace, t: TargetSpec) -> str:
    return hashlib.sha256(json.dumps([sp.model_dump(), t.precisions], sort_keys=True).encode()).hexdigest()[:8]


@dataclass
class Inputs:
    target: TargetSpec
    target_path: Path
    checkpoint: Path
    net: object
    data_root: Path
    dataset: object


@dataclass
class Setup:
    """The validated inputs of a search or a worker, with the store and the devices open."""

    inputs: Inputs
    checkpoint_sha: str
    dataset_sha: str
    store: Store
    devices: list
    device_info: dict
    runtime_version: str
    fp: str
    acc_key: str

    @property
    def scope(self) -> str:
        """The claims of every process measuring the same target, runtime, checkpoint and dataset."""
        return hashlib.sha256(f"{self.fp}:{self.runtime_version}:{self.acc_key}".encode()).hexdigest()[:32]

    def measurer(self, work: Path, claims: Claims, say: Say, progress: Progress = SILENT) -> DeviceMeasurer:
        i = self.inputs
        return DeviceMeasurer(i.net, i.target, i.target_path, i.dataset, self.store, self.fp, self.runtime_version,
                              work, self.devices, claims, say, progress)

    def close(self) -> None:
        for d in self.devices:
            d.close()
        self.store.close()


def _inputs(target, checkpoint, data, val_images) -> Inputs:
    """Target, supernet and dataset, loaded and checked (EdgedetError otherwise); nothing is created."""
    from ..api import load_supernet
    from ..data.coco import CocoDetection
    from ..data.demo import demo_checkpoint, demo_data
    from ..evaluate import Subset

    tpath = resolve_target(target)
    t = load_target(tpath)
    ck = Path(checkpoint) if checkpoint else demo_checkpoint()
    net = load_supernet(ck)
    root = Path(data) if data else demo_data()
    ds = CocoDetection(root, "valid", labels=net.cfg)  # the model's labels mapped onto the categories
    if val_images:
        ds = Subset(ds, range(min(val_images, len(ds))))
    return Inputs(t, tpath, ck, net, root, ds)


def _open(i: Inputs, storage: str | None, default_db: Path | None,
          before_store: Callable[[], None] = lambda: None) -> Setup:
    """Open the target's devices and check the first, then the store (`storage`, else the SQLite file
    `default_db`, created after before_store() ran). Raises EdgedetError; nothing is left open then."""
    from ..devices import open_devices

    t = i.target
    url = storage if storage is not None else sqlite_url(default_db.resolve())
    parse_url(url)
    devices = open_devices(t)
    store = None
    try:
        chk = devices[0].check(t)
        rt = chk.get("runtime_version") or chk["runtimes"].get(t.backend, "")  # "1.31.1", or why it is missing
        if not chk.get("backend_ok"):
            raise ConfigError(f"{i.target_path}: backend {t.backend} cannot run on {devices[0].name}: {rt}")
        if storage is None and not default_db.exists():
            before_store()
        store = Store(url)
        store.optuna_storage()
        ck_sha, ds_sha = sha256(i.checkpoint), _dataset_sha(i.dataset)
        return Setup(inputs=i, checkpoint_sha=ck_sha, dataset_sha=ds_sha, store=store, devices=devices,
                     device_info=chk["info"], runtime_version=rt, fp=fingerprint(t, chk["info"], rt),
                     acc_key=hashlib.sha256(f"{ck_sha}:{ds_sha}:{len(i.dataset)}".encode()).hexdigest()[:32])
    except BaseException:
        for d in devices:
            d.close()
        if store is not None:
            store.close()
        raise


def _check_settings(**values: tuple[int | None, int]) -> None:
    """name=(value, minimum): each value None or an integer >= its minimum (ConfigError naming the option)."""
    for name, (v, lo) in values.items():
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < lo):
            raise ConfigError(f"--{name.replace('_', '-')} {v!r}: must be an integer >= {lo}")


class _FolderLock:
    """OUT/.search.lock held (flock) for the run: two searches never write one output folder."""

    def __init__(self, out: Path):
        self.out, self.fd = out, None

    def __enter__(self):
        self.fd = os.open(self.out / ".search.lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self.fd)
            raise ConfigError(f"{self.out}: another search is running in this folder (give each search its own "
                              "-o; they share work through --storage)") from None
        return self

    def __exit__(self, *exc):
        os.close(self.fd)


# ------------------------------------------------------------------------------------------------- search
def search(target: str | Path, checkpoint: str | Path | None = None, data: str | Path | None = None,
           space: str | Path | None = None, out: str | Path = "runs/search/run", max_measurements: int | None = None,
           resume: bool = False, storage: str | None = None, val_images: int | None = None,
           generations: int = 6, population: int = 24, seed: int = 0, runtime: tuple[str, ...] = ("python", "cpp"),
           say: Say = print, progress: Progress = SILENT) -> dict:
    """Run a search; returns the manifest (also written to OUT/manifest.json). See the module docstring.
    `say` gets the log lines; `progress` (edgedet.progress) the bars of long steps (AP, compiles, measurements)."""
    from ..deploy import check_runtimes
    from .report import SearchRun, finish

    started = time.time()
    _check_settings(max_measurements=(max_measurements, 1), val_images=(val_images, 1),
                    generations=(generations, 1), population=(population, 2))
    runtime = check_runtimes(runtime)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{out}: exists and is not a folder")
    db = out / "search.db"
    if not resume and (db.exists() or (out / "manifest.json").exists()):
        raise ConfigError(f"{out}: a search is already there; pass --resume to continue it, or choose another -o")
    i = _inputs(target, checkpoint, data, val_images)
    t = i.target
    sp = load_space(space, i.net.cfg)
    cands = candidates(sp, i.net.cfg, t)
    if not cands:
        raise ConfigError(f"{space or 'space'}: no subnet fits target {t.name} (max_resolution {t.max_resolution})")
    budget = max_measurements or max(10, math.ceil(0.05 * len(cands)))
    created = not out.exists()
    try:
        s = _open(i, storage, db, before_store=lambda: out.mkdir(parents=True, exist_ok=True))
    except BaseException:
        if created:  # validated first, created nothing: leave nothing behind
            shutil.rmtree(out, ignore_errors=True)
        raise
    claims = None
    try:
        out.mkdir(parents=True, exist_ok=True)
        with _FolderLock(out):
            claims = Claims(s.store, s.scope)
            claims.hold(SEARCH + claims.owner)  # workers of this target see a live search
            measurer = s.measurer(out / "work", claims, say, progress)
            subnets = list({c.subnet.id: c.subnet for c in cands}.values())
            tap = TorchAP(i.net, i.dataset, s.store, s.acc_key, subnets, claims, say, progress)
            explorer = Explorer(i.net.cfg, t, measurer, tap, shared_propose(s.store, claims, say),
                                f"{s.fp}-{s.acc_key[:8]}-{_space_key(sp, t)}", say)
            n_dev = len(s.devices)
            say(f"search: {len(cands)} candidates ({len(cands) // len(t.precisions)} subnets x "
                f"{', '.join(t.precisions)}) on {t.name} [{s.devices[0].name}{f' +{n_dev - 1}' if n_dev > 1 else ''}"
                f", {t.backend} {s.runtime_version}], budget {budget} measurements, AP on {len(i.dataset)} images")
            prior = measurer.measured()
            measurer.measure([c for c in cands if c.id in prior])  # rows a killed run measured but did not score
            if prior:
                say(f"store: {len(prior)} measurements of this target already done (not repeated)")
            found = explorer.run(sp, cands, budget, generations, population, seed)
            run = SearchRun(net=i.net, target=t, target_path=i.target_path, fingerprint=s.fp,
                            runtime_version=s.runtime_version, device=s.device_info, checkpoint=i.checkpoint,
                            checkpoint_sha=s.checkpoint_sha, dataset_root=i.data_root, dataset_sha=s.dataset_sha,
                            dataset_images=len(i.dataset), space=sp, candidates=cands, budget=budget,
                            generations=generations, population=population, seed=seed, runtime=runtime,
                            store="search.db" if storage is None else s.store.shown, out=out, started=started,
                            resumed=resume)
            ids = {c.id for c in cands}
            measured = {k: m for k, m in measurer.measured().items() if k in ids}
            return finish(run, found, measured, tap([c.subnet for c in cands if c.id in measured]), say)
    finally:
        if claims is not None:
            claims.close(done=[SEARCH + claims.owner])  # this search has ended: its workers may stop
        s.close()


# ------------------------------------------------------------------------------------------------- worker
def serve(target: str | Path, storage: str | None, checkpoint: str | Path | None = None,
          data: str | Path | None = None, out: str | Path = "runs/search/worker", val_images: int | None = None,
          say: Say = print, wait_s: float = WORKER_WAIT_S, poll_s: float = 0.5,
          progress: Progress = SILENT) -> int:
    """A worker: measure the candidates that searches sharing `storage` queued for this target (same device kind,
    runtime, checkpoint, dataset and --val-images as theirs), one claim per device at a time, until the searches it
    served have ended (or none appeared for `wait_s` seconds). -> how many candidates it measured."""
    if storage is None:
        raise ConfigError("--worker needs --storage: the store of the searches it serves")
    _check_settings(val_images=(val_images, 1))
    s = _open(_inputs(target, checkpoint, data, val_images), storage, None)
    work = Path(out) / "work"
    claims = Claims(s.store, s.scope)
    measurer = s.measurer(work, claims, say, progress)
    say(f"worker for target {s.inputs.target.name} [{s.devices[0].name}, {s.inputs.target.backend} "
        f"{s.runtime_version}] on store {s.store.shown}: waiting for candidates")
    n, served, idle_since = 0, False, time.time()
    try:
        while True:
            mine = claims.take(None, len(s.devices), prefix=CAND)
            if mine:
                cands = {}
                for item in mine:
                    try:
                        cands[item] = Candidate.parse(item[len(CAND):], s.inputs.net.cfg)
                    except ConfigError as e:  # not a candidate of this supernet (a malformed row): skipped
                        say(f"  skipped {item!r}: {e}")
                        claims.finish(item)
                run_claimed(claims, list(cands), measurer.done, lambda items: measurer.work([cands[k] for k in items]))
                n += len(cands)
                idle_since = time.time()
                continue
            if claims.alive(SEARCH):
                served, idle_since = True, time.time()
            elif served or time.time() - idle_since > wait_s:
                break
            time.sleep(poll_s)
    finally:
        claims.close()
        s.close()
        shutil.rmtree(work, ignore_errors=True)
    say(f"worker: measured {n} candidates; no search of this target is running")
    return n
