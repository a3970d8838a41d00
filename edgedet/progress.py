"""Progress of long steps (AP of subnet groups, compiles and their calibration, measurements), reported to whoever
shows it: the CLI draws rich bars (cli.RichProgress); the API's default, SILENT, shows nothing.

    with progress.task("AP p16-r288-w2", total=300, unit="img") as t:
        for ...: t.update(completed=n)
    with progress.task("compile p16-r288-w2-d2-q25@int8") as t:   # no total: a spinner with the elapsed time
        t.update(description="... calibration images 12/64")

Implementations are thread-safe: a device pool reports measurements from its worker threads.
"""
from __future__ import annotations


class Task:
    """One step on screen. The base class shows nothing."""

    def update(self, completed: float | None = None, description: str | None = None) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "Task":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Progress:
    """Hands out Tasks. The base class shows nothing (SILENT)."""

    def task(self, description: str, total: float | None = None, unit: str = "") -> Task:
        return Task()


SILENT = Progress()
