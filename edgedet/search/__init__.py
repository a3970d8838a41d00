"""Hardware-in-the-loop search: candidates (subnet x precision) -> AP (shared evaluator, cached) and latency
(measured on the target's devices, predicted for the rest) -> NSGA-II proposals -> predict, then verify -> the
Pareto front of measured points, each compiled and its AP taken from the artifact itself -> manifest.json."""
from .run import search

__all__ = ["search"]
