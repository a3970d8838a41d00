"""Store fixtures: a real PostgreSQL server for the session (skipped, with the reason, where it cannot be had) and a
fresh database of it per test."""
from __future__ import annotations

import pytest

from .postgres import Postgres, postgres_unavailable


@pytest.fixture(scope="session")
def postgres():
    why = postgres_unavailable()
    if why:
        pytest.skip(why)
    srv = Postgres().start()
    yield srv
    srv.stop()


@pytest.fixture()
def pg_url(postgres) -> str:
    """The URL of a new, empty database on the session's PostgreSQL server."""
    return postgres.new_database()
