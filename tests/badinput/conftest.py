"""Fixtures of the bad-input corpus: one fork server per session, a sandbox and a marker folder per case."""
from __future__ import annotations

import pytest

from .harness import Case, ForkServer, check, run_case


@pytest.fixture(scope="session")
def forkserver():
    srv = ForkServer()
    yield srv
    srv.close()


@pytest.fixture
def bad(tmp_path, forkserver):
    """bad(case, **paths): run one case in a fresh sandbox and assert the contract; returns the Result."""

    def go(case: Case, **paths):
        marker = tmp_path / "marker"
        marker.mkdir(exist_ok=True)
        r = run_case(case, tmp_path / "sb", marker, forkserver, paths)
        check(case, r)
        return r

    return go
