"""What edgedet search measures with, on real devices, shared through the store with every other search and worker
of the same target (search/claims.py):

- DeviceMeasurer (the explorer's Measurer): compile each claimed candidate here, measure it on the target's devices
  (in parallel over a pool), take the AP of the compiled artifact after the pool is done, store each result as it
  completes; wait for the candidates other processes hold.
- TorchAP: AP of torch subnets from the store's cache, or the shared evaluator (one group of the space per claim).
- shared_propose: a round's NSGA-II study run once, in the store, by whichever process claims it; the others read
  its trials.
- serve(): a worker that only measures candidates other searches queued.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..backends.base import Artifact, Unsupported
from ..config import SubnetConfig, TargetSpec
from ..errors import EdgedetError
from ..progress import SILENT, Progress
from .claims import Claims, share
from .space import Candidate
from .store import Measurement, Store

Say = Callable[[str], None]
PENDING = "pending"  # ap_source of a measured row whose artifact AP is not taken yet
CAND, AP_GROUP, STUDY, SEARCH = "cand:", "ap:", "study:", "search:"  # claim item prefixes


class SearchStopped(EdgedetError):
    """The search could not go on (every device lost); what completed is in the store: --resume continues."""


@dataclass
class DeviceMeasurer:
    net: object
    target: TargetSpec
    target_path: Path
    dataset: object
    store: Store
    fp: str
    runtime_version: str
    work_dir: Path  # compiled candidates go to WORK_DIR/<candidate id>
    devices: list
    claims: Claims
    say: Say = print
    progress: Progress = SILENT

    def measured(self) -> dict[str, Measurement]:
        return {m.id: m for m in self.store.measurements(self.fp, self.runtime_version)}

    def done(self, items: list[str]) -> set[str]:
        fin = {CAND + k for k, m in self.measured().items() if m.final}
        return {i for i in items if i in fin}

    def measure(self, cands: list[Candidate]) -> dict[str, Measurement]:
        by_item = {CAND + c.id: c for c in cands}
        share(self.claims, list(by_item), self.done, lambda items: self.work([by_item[i] for i in items]),
              limit=len(self.devices), say=self.say, what="candidates")
        got = self.measured()
        return {c.id: got[c.id] for c in cands if c.id in got}

    def _put(self, c: Candidate, status: str, **kw) -> None:
        self.store.put_measurement(self.fp, c.subnet.id, c.precision, self.runtime_version, status, **kw)

    def work(self, cands: list[Candidate]) -> None:
        """Compile each candidate (here, one at a time), measure it on the devices (in parallel over the pool),
        store every result as it completes, then take the AP of each compiled artifact. A candidate whose
        latency is already stored (a claim taken over from a process killed before its AP) is only scored."""
        from ..backends import get_backend
        from ..deploy import compile_subnet
        from ..devices import DeviceError, DevicePool

        arts: dict[str, Artifact] = {}
        for i, c in enumerate(cands):
            m = self.store.measurement(self.fp, c.subnet.id, c.precision, self.runtime_version)
            if m is not None:
                continue  # final (nothing to do) or pending (scored below)
            self.say(f"compile {c.id} ({i + 1}/{len(cands)})")
            t0 = time.perf_counter()
            try:
                with self.progress.task(f"compile {c.id}") as bar:
                    arts[c.id] = compile_subnet(self.net, c.subnet, self.target_path, c.precision,
                                                self.work_dir / c.id, runtime=(),
                                                step=lambda text: bar.update(description=f"compile {c.id}: {text}"))
            except Unsupported as e:
                self._put(c, str(e))
                self.say(f"  {c.id}: {e}")
            except (RuntimeError, ValueError) as e:  # a runtime's own failure: recorded, the search goes on
                msg = f"error: compile failed: {_line(e)}"
                self._put(c, msg)
                self.say(f"  {c.id}: {msg}")
            else:
                arts[c.id].metadata["compile_wall_s"] = round(time.perf_counter() - t0, 2)
        by_id = {c.id: c for c in cands}
        lost, pool = None, DevicePool(self.devices)
        if arts:
            def job(dev, cid):
                with self.progress.task(f"measure {cid} on {dev.name}"):
                    return measure_until_stable(dev, dev.prepare(arts[cid], self.target), self.target, self.say)

            pct = self.target.latency.percentile
            backend = get_backend(self.target.backend)
            local_ok = backend.caps.runs_on_host and backend.available() is None
            for cid, res, dev in pool.run(list(arts), job):
                c = by_id[cid]
                if isinstance(res, DeviceError):
                    lost = res  # not stored: its claim goes back to the queue
                    self.say(f"  {cid}: device {dev} lost ({res})")
                elif isinstance(res, Unsupported):
                    self._put(c, str(res), device=dev)
                    self.say(f"  {cid}: {res}")
                elif isinstance(res, BaseException):
                    msg = f"error: {type(res).__name__}: {_line(res, '')}"
                    self._put(c, msg, device=dev)
                    self.say(f"  {cid}: {msg}")
                else:  # latency first (nothing else runs here while a local device measures); AP after the pool
                    res, tries = res
                    self._put(c, "ok", latency_ms=res.percentile(pct), record=dict(res.to_dict(), attempts=tries),
                              ap_source=PENDING if local_ok else "torch", device=dev,
                              compile_s=arts[cid].metadata.get("compile_wall_s"))
                    self.say(f"  {cid}: p{pct} {res.percentile(pct):.2f} ms [{dev}]"
                             + (f" NOISY ({res.note or f'spread {res.spread:.0%}'})" if res.noisy else ""))
        self.fill_artifact_ap(cands)
        if lost is not None and len(pool.dead) == len(self.devices):
            raise SearchStopped(f"every device of target {self.target.name} was lost ({lost}); completed "
                                f"measurements are kept in {self.store.shown}: run the same command with --resume")

    def fill_artifact_ap(self, cands: list[Candidate]) -> None:
        """AP of the compiled artifact for each measured row of `cands` still pending (after a kill, the artifact
        is compiled again when its work folder is gone: compiling is deterministic, and the latency is not
        measured again)."""
        from ..backends import get_backend
        from ..deploy import compile_subnet, runtime_options
        from ..evaluate import evaluate_runner

        got = self.measured()
        for c in cands:
            m = got.get(c.id)
            if m is None or m.final:
                continue
            work = self.work_dir / c.id
            art = Artifact.open(work) if (work / "artifact.json").is_file() else None
            if art is None or art.verify():
                art = compile_subnet(self.net, m.subnet, self.target_path, m.precision, work, runtime=())
            runner = get_backend(art.backend).load(art, runtime_options(self.target))
            with self.progress.task(f"AP of the artifact {c.id}", total=len(self.dataset), unit="img") as bar:
                ap = evaluate_runner(runner.infer, art.resolution, self.dataset, batch_size=1,
                                     progress=lambda n, total: bar.update(completed=n))
            self.store.set_ap(self.fp, m.subnet, m.precision, self.runtime_version, ap, "artifact")
            self.say(f"  {c.id}: AP {ap['AP']:.3f} (from the artifact)")


def measure_until_stable(dev, art: Artifact, target: TargetSpec, say: Say = print):
    """Measure on `dev`; while the record is noisy (spread, throttling, other processes busy: devices/load.py),
    wait the target's repeat_cooldown_s and measure again, at most repeat_noisy more times. -> (the first stable
    record, else the least spread one, still flagged noisy; a summary of every attempt)."""
    from ..devices.load import judge

    b = target.benchmark
    recs = []
    while True:
        rec = dev.measure(art, target)
        judge(rec, b.max_other_cores)
        recs.append(rec)
        if not rec.noisy or len(recs) > b.repeat_noisy:
            break
        say(f"  {art.dir.name}: noisy ({rec.note or f'spread {rec.spread:.0%}'}); measuring again in "
            f"{b.repeat_cooldown_s:g} s ({len(recs)}/{b.repeat_noisy})")
        time.sleep(b.repeat_cooldown_s)
    best = recs[-1] if not recs[-1].noisy else min(recs, key=lambda r: r.spread)
    tries = [{"p50_ms": r.p50_ms, "p90_ms": r.p90_ms, "spread": r.spread, "noisy": r.noisy, "note": r.note,
              "others_cores": (r.device.get("load") or {}).get("others_cores")} for r in recs]
    return best, tries


def _line(e: BaseException, default: str | None = None) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else (type(e).__name__ if default is None else default)


# -------------------------------------------------------------------------------------------------- accuracy
@dataclass
class TorchAP:
    """AP metrics of torch (fp32) subnets, from the store or the shared evaluator. A (patch, resolution, windows)
    group costs one backbone pass whatever its depths and query counts, so the whole group of the space is
    evaluated the first time any of it is asked for; each group is one claim."""

    net: object
    dataset: object
    store: Store
    acc_key: str
    space_subnets: list
    claims: Claims
    say: Say = print
    progress: Progress = SILENT

    def __call__(self, subnets: list[SubnetConfig]) -> dict[str, dict]:
        have = self.store.accuracy(self.acc_key)
        groups: dict[str, dict[str, SubnetConfig]] = {}
        for s in subnets:
            if s.id not in have:
                groups.setdefault(_group(s), {})[s.id] = s
        for s in self.space_subnets:
            if _group(s) in groups and s.id not in have:
                groups[_group(s)][s.id] = s
        if groups:
            def done(items: list[str]) -> set[str]:
                cache = self.store.accuracy(self.acc_key)
                return {g for g in items if all(sid in cache for sid in groups[g])}

            share(self.claims, list(groups), done, self._evaluate(groups), say=self.say, what="AP groups")
            have = self.store.accuracy(self.acc_key)
        return {s.id: have[s.id] for s in subnets}

    def _evaluate(self, groups: dict[str, dict[str, SubnetConfig]]):
        from ..evaluate import evaluate_subnets

        def work(items: list[str]) -> None:
            for g in items:  # one backbone pass per group and batch; each group stored as soon as it is done
                todo, n, batch = list(groups[g].values()), len(self.dataset), 8
                t0 = time.perf_counter()
                with self.progress.task(f"AP {g[len(AP_GROUP):]} ({len(todo)} subnets)", total=n, unit="img") as bar:
                    res = evaluate_subnets(self.net, todo, self.dataset, batch_size=batch,
                                           progress=lambda done, total: bar.update(completed=min(n, done * batch)))
                self.store.put_accuracy(self.acc_key, res)
                self.say(f"AP of {len(todo)} subnets ({g[len(AP_GROUP):]}) on {n} images in "
                         f"{time.perf_counter() - t0:.0f} s")

        return work


def _group(s: SubnetConfig) -> str:
    return f"{AP_GROUP}p{s.patch}-r{s.resolution}-w{s.windows}"


# -------------------------------------------------------------------------------------------------- proposals
def shared_propose(store: Store, claims: Claims, say: Say = print):
    """A Propose (search/explore.py) whose studies live in the store: a round's study is run by the process that
    claims it (continued where it stopped when its owner died), and read by the others."""
    from .strategy import completed_params, run_nsga2

    storage = store.optuna_storage()

    def done(items: list[str]) -> set[str]:
        import optuna

        out = set()
        for i in items:
            try:
                if optuna.load_study(study_name=i[len(STUDY):], storage=storage).user_attrs.get("edgedet_done"):
                    out.add(i)
            except KeyError:  # not created yet
                pass
        return out

    def propose(name, choices, score, generations, population, seed, seeds) -> list[dict]:
        def work(items: list[str]) -> None:
            import optuna

            run_nsga2(storage, name, choices, score, generations, population, seed, seeds)
            optuna.load_study(study_name=name, storage=storage).set_user_attr("edgedet_done", True)

        share(claims, [STUDY + name], done, work, say=say, what="rounds of proposals")
        return completed_params(storage, name)

    return propose
