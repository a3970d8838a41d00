"""NSGA-II proposals through Optuna (ask/tell in whole generations, so each generation's new subnets are evaluated
together by the shared evaluator). The study lives in the search's store (an Optuna storage: search/store.py) or in
memory (storage None); a resumed search continues a stored study where it stopped."""
from __future__ import annotations

import logging
from typing import Callable, Sequence

KNOBS = ("patch", "resolution", "windows", "dec_layers", "queries", "precision")


def run_nsga2(storage, study_name: str, choices: dict[str, Sequence], score: Callable[[list[dict]], list],
              generations: int, population: int, seed: int, seeds: Sequence[dict] = (),
              progress: Callable[[int, int], None] | None = None) -> list[dict]:
    """Run (or continue) `generations` x `population` NSGA-II trials over categorical knobs `choices`.

    score(list of param dicts) -> per dict (ap, latency_ms) or None (invalid: the trial is failed and ignored).
    `seeds` are enqueued first when the study is new (e.g. the measured front of the previous round).
    Returns the params of every completed trial of the study, in trial order."""
    import optuna
    from optuna.distributions import CategoricalDistribution
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(logging.WARNING)
    sampler = optuna.samplers.NSGAIISampler(population_size=population, seed=seed)
    study = optuna.create_study(study_name=study_name, storage=storage, directions=["maximize", "minimize"],
                                sampler=sampler, load_if_exists=True)
    dists = {k: CategoricalDistribution(list(v)) for k, v in choices.items()}
    if not study.trials:
        for s in seeds:
            study.enqueue_trial({k: s[k] for k in choices}, skip_if_exists=True)
    total = generations * population
    done = sum(t.state == TrialState.COMPLETE for t in study.trials)
    while done < total:
        trials = [study.ask(dists) for _ in range(min(population, total - done))]
        values = score([t.params for t in trials])
        for t, v in zip(trials, values):
            if v is None:
                study.tell(t, state=TrialState.FAIL)
            else:
                study.tell(t, list(v))
                done += 1
        if all(v is None for v in values):  # nothing valid left to propose
            break
        if progress:
            progress(done, total)
    return completed(study)


def completed(study) -> list[dict]:
    from optuna.trial import TrialState

    trials = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    return [t.params for t in sorted(trials, key=lambda t: t.number)]


def completed_params(storage, study_name: str) -> list[dict]:
    """The params of every completed trial of a stored study (run by another process), in trial order."""
    import optuna

    optuna.logging.set_verbosity(logging.WARNING)
    return completed(optuna.load_study(study_name=study_name, storage=storage))
