"""The measurement store: every latency measurement and every AP evaluation a search has made, in one SQL database
(SQLite by default; any SQLAlchemy URL, so several machines can share one search with the Optuna study).

Measurements are keyed by (target fingerprint, subnet, precision, runtime version): a later search of the same
target on the same runtime reuses them. Each row is written in its own transaction, so a search killed at any point
(kill -9) loses at most the measurement in progress, and `--resume` re-measures nothing that completed.
"""
from __future__ import annotations

import json
import time

import sqlalchemy as sa

_meta = sa.MetaData()
MEASUREMENTS = sa.Table(
    "edgedet_measurements", _meta,
    sa.Column("target_fp", sa.String(64), primary_key=True),
    sa.Column("subnet", sa.String(64), primary_key=True),
    sa.Column("precision", sa.String(8), primary_key=True),
    sa.Column("runtime_version", sa.String(64), primary_key=True),
    sa.Column("status", sa.Text, nullable=False),  # "ok", "unsupported: ...", "error: ..."
    sa.Column("latency_ms", sa.Float),  # at the target's percentile
    sa.Column("record", sa.Text),  # LatencyRecord as JSON (conditions included)
    sa.Column("ap", sa.Text),  # AP metrics of the compiled artifact itself, JSON (or null)
    sa.Column("ap_source", sa.String(16)),  # "artifact" or "torch" (runtime not available here)
    sa.Column("device", sa.String(255)),
    sa.Column("compile_s", sa.Float),
    sa.Column("created", sa.Float, nullable=False),
)
ACCURACY = sa.Table(
    "edgedet_accuracy", _meta,
    sa.Column("key", sa.String(64), primary_key=True),  # checkpoint sha + dataset sha + images
    sa.Column("subnet", sa.String(64), primary_key=True),
    sa.Column("metrics", sa.Text, nullable=False),
    sa.Column("created", sa.Float, nullable=False),
)


def sqlite_url(path) -> str:
    return f"sqlite:///{path}"


class Store:
    def __init__(self, url: str):
        self.url = url
        kw = {"connect_args": {"timeout": 60, "check_same_thread": False}} if url.startswith("sqlite") else {}
        self.engine = sa.create_engine(url, **kw)
        if url.startswith("sqlite"):
            @sa.event.listens_for(self.engine, "connect")
            def _wal(conn, _):
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
        _meta.create_all(self.engine)

    # latency measurements
    def measurement(self, target_fp: str, subnet: str, precision: str, runtime_version: str) -> dict | None:
        t = MEASUREMENTS.c
        with self.engine.connect() as c:
            row = c.execute(sa.select(MEASUREMENTS).where(
                t.target_fp == target_fp, t.subnet == subnet, t.precision == precision,
                t.runtime_version == runtime_version)).mappings().first()
        return _row(row) if row else None

    def measurements(self, target_fp: str, runtime_version: str) -> list[dict]:
        t = MEASUREMENTS.c
        with self.engine.connect() as c:
            rows = c.execute(sa.select(MEASUREMENTS).where(t.target_fp == target_fp,
                                                           t.runtime_version == runtime_version)
                             .order_by(t.created)).mappings().all()
        return [_row(r) for r in rows]

    def put_measurement(self, target_fp: str, subnet: str, precision: str, runtime_version: str, status: str,
                        latency_ms: float | None = None, record: dict | None = None, ap: dict | None = None,
                        ap_source: str | None = None, device: str = "", compile_s: float | None = None) -> None:
        vals = dict(target_fp=target_fp, subnet=subnet, precision=precision, runtime_version=runtime_version,
                    status=status, latency_ms=latency_ms, record=json.dumps(record) if record else None,
                    ap=json.dumps(ap) if ap else None, ap_source=ap_source, device=device, compile_s=compile_s,
                    created=time.time())
        t = MEASUREMENTS.c
        with self.engine.begin() as c:
            c.execute(sa.delete(MEASUREMENTS).where(t.target_fp == target_fp, t.subnet == subnet,
                                                    t.precision == precision, t.runtime_version == runtime_version))
            c.execute(sa.insert(MEASUREMENTS).values(**vals))

    def set_ap(self, target_fp: str, subnet: str, precision: str, runtime_version: str, ap: dict,
               ap_source: str) -> None:
        """Add the artifact's AP to a measured row (its latency and timestamp untouched)."""
        t = MEASUREMENTS.c
        with self.engine.begin() as c:
            c.execute(sa.update(MEASUREMENTS).where(
                t.target_fp == target_fp, t.subnet == subnet, t.precision == precision,
                t.runtime_version == runtime_version).values(ap=json.dumps(ap), ap_source=ap_source))

    # accuracy cache
    def accuracy(self, key: str) -> dict[str, dict]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(ACCURACY).where(ACCURACY.c.key == key)).mappings().all()
        return {r["subnet"]: json.loads(r["metrics"]) for r in rows}

    def put_accuracy(self, key: str, results: dict[str, dict]) -> None:
        if not results:
            return
        with self.engine.begin() as c:
            c.execute(sa.delete(ACCURACY).where(ACCURACY.c.key == key, ACCURACY.c.subnet.in_(list(results))))
            c.execute(sa.insert(ACCURACY), [dict(key=key, subnet=s, metrics=json.dumps(m), created=time.time())
                                            for s, m in results.items()])

    def close(self) -> None:
        self.engine.dispose()


def _row(r) -> dict:
    d = dict(r)
    for k in ("record", "ap"):
        d[k] = json.loads(d[k]) if d[k] else None
    return d
