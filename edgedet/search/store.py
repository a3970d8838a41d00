"""The measurement store: every latency measurement and every AP evaluation a search has made, the claims that
share work between processes (search/claims.py) and the Optuna studies, in one SQL database: SQLite (a file; the
default OUT/search.db) or PostgreSQL (`pip install 'edgedet[postgres]'`), so several searches, workers and machines
can share one search.

Measurements are keyed by (target fingerprint, subnet, precision, runtime version): a later search of the same
target on the same runtime reuses them. Each row is written in its own transaction, so a search killed at any point
(kill -9) loses at most the measurement in progress, and `--resume` re-measures nothing that completed.

Opening a store is safe under concurrency and idempotent: the schema (and Optuna's) is created once, under the
database's own lock (a PostgreSQL advisory lock, an flock on a SQLite file's folder). A store is untrusted input: a
corrupt or foreign database, an unknown URL or a missing driver is one StoreError line, and every row read back is
validated (a NaN, infinite or negative latency, a malformed record or name never reaches the search).
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import re
import time
from dataclasses import dataclass
from typing import Iterator

import sqlalchemy as sa

from ..errors import EdgedetError

FORMAT, SCHEMA_VERSION = "edgedet.store", 2
_meta = sa.MetaData()
INFO = sa.Table(  # format and schema version of the store
    "edgedet_store", _meta,
    sa.Column("key", sa.String(32), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)
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
    sa.Column("ap_source", sa.String(16)),  # "artifact", "torch" (runtime not available here) or "pending"
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
CLAIMS = sa.Table(  # work shared between processes: see search/claims.py
    "edgedet_claims", _meta,
    sa.Column("scope", sa.String(64), primary_key=True),
    sa.Column("item", sa.String(160), primary_key=True),
    sa.Column("state", sa.String(8), nullable=False),  # queued | claimed | done
    sa.Column("owner", sa.String(160)),
    sa.Column("lease_until", sa.Float),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("updated", sa.Float, nullable=False),
)
TABLES = {t.name: t for t in (INFO, MEASUREMENTS, ACCURACY, CLAIMS)}
OPTUNA_TABLES = {"studies", "trials", "version_info", "alembic_version"}
PRECISIONS = ("fp32", "fp16", "bf16", "int8")
AP_SOURCES = (None, "artifact", "torch", "pending")
_SUBNET = re.compile(r"^p\d{1,4}-r\d{1,5}-w\d{1,3}-d\d{1,3}-q\d{1,5}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_URL_HELP = "sqlite:///PATH or postgresql://USER[:PASSWORD]@HOST[:PORT]/DATABASE"


class StoreError(EdgedetError):
    """The store cannot be used: a bad URL, a missing driver, a corrupt or foreign database, or a malformed row."""


@dataclass(frozen=True)
class Measurement:
    """One validated row: a candidate measured (or found unsupported / failed) on a target."""

    subnet: str
    precision: str
    status: str  # "ok", "unsupported: ...", "error: ..."
    latency_ms: float | None  # at the target's percentile; a finite positive number when ok
    record: dict | None  # LatencyRecord.to_dict() (conditions)
    ap: dict[str, float] | None  # AP metrics of the compiled artifact (or torch, see ap_source)
    ap_source: str | None
    device: str
    compile_s: float | None
    created: float

    @property
    def id(self) -> str:
        return f"{self.subnet}@{self.precision}"

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def final(self) -> bool:
        """Nothing left to do for this candidate (an ok row still waiting for its artifact AP is not final)."""
        return not self.ok or self.ap_source != "pending"


def sqlite_url(path) -> str:
    return f"sqlite:///{path}"


def shown(url: str | sa.URL) -> str:
    """A URL as it may be printed (password hidden)."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL is shown as a repr, cut short
        return repr(str(url)[:120])


def parse_url(url: str) -> sa.URL:
    """Check a store URL before anything connects: sqlite:///FILE or postgresql[+driver]://...; a plain
    postgresql:// gets the installed driver (psycopg 3, else psycopg2). Raises StoreError naming the problem."""
    if not isinstance(url, str) or not url.strip() or _CONTROL.search(url):
        raise StoreError(f"--storage {shown(str(url))}: not a database URL ({_URL_HELP})")
    try:
        u = sa.make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        raise StoreError(f"--storage {shown(url)}: not a database URL ({_URL_HELP})") from None
    backend, driver = u.get_backend_name(), u.get_driver_name() if "+" in u.drivername else None
    if backend == "sqlite":
        if not u.database or u.database == ":memory:" or u.query:
            raise StoreError(f"--storage {shown(u)}: a SQLite store must be a file (sqlite:///PATH), so that it "
                             "can be resumed and shared")
        return u
    if backend not in ("postgresql", "postgres"):
        raise StoreError(f"--storage {shown(u)}: unsupported database {backend!r} (SQLite or PostgreSQL: {_URL_HELP})")
    if not u.host or not u.database:
        raise StoreError(f"--storage {shown(u)}: a PostgreSQL URL needs a host and a database ({_URL_HELP})")
    drivers = {"psycopg": "psycopg", "psycopg2": "psycopg2"}
    if driver is None:
        driver = next((d for d in drivers if _importable(d)), None)
        if driver is None:
            raise StoreError(f"--storage {shown(u)}: no PostgreSQL driver installed: pip install 'edgedet[postgres]'")
    elif driver not in drivers:
        raise StoreError(f"--storage {shown(u)}: unsupported PostgreSQL driver {driver!r} (psycopg or psycopg2)")
    elif not _importable(driver):
        raise StoreError(f"--storage {shown(u)}: the PostgreSQL driver {driver} is not installed: "
                         "pip install 'edgedet[postgres]'")
    return u.set(drivername=f"postgresql+{driver}")


def _importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _first_line(e: BaseException) -> str:
    msg = str(getattr(e, "orig", None) or e).strip().splitlines()
    return _CONTROL.sub("?", msg[0] if msg else type(e).__name__)[:300]


class Store:
    """An open, validated store. `Store(url)` connects, checks the schema (creating what is missing, once, under the
    database's lock) and validates every row; errors are StoreError lines."""

    def __init__(self, url: str):
        self.u = parse_url(url)
        self.url = self.u.render_as_string(hide_password=False)
        self.shown = shown(self.u)
        self.sqlite = self.u.get_backend_name() == "sqlite"
        if self.sqlite:
            kw = {"connect_args": {"timeout": 60, "check_same_thread": False}}
        else:
            kw = {"connect_args": {"connect_timeout": 10}, "pool_pre_ping": True}
        self.engine = sa.create_engine(self.u, **kw)
        if self.sqlite:
            @sa.event.listens_for(self.engine, "connect")
            def _sync(conn, _):
                conn.execute("PRAGMA synchronous=FULL")
        self._optuna = None
        try:
            self._open()
        except StoreError:
            self.engine.dispose()
            raise
        except (sa.exc.SQLAlchemyError, OSError) as e:
            self.engine.dispose()
            raise StoreError(f"store {self.shown}: {_first_line(e)}") from None

    # ------------------------------------------------------------------------------------------------ schema
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """A cross-process lock on the store's schema: a PostgreSQL advisory lock, or an flock on the SQLite file's
        folder (no lock file is left behind). Held while tables are created, here and by Optuna."""
        if not self.sqlite:
            with self.engine.connect() as c:
                c.execute(sa.text("SELECT pg_advisory_lock(7133007)"))
                try:
                    yield
                finally:
                    c.execute(sa.text("SELECT pg_advisory_unlock(7133007)"))
                    c.commit()
            return
        import fcntl

        fd = os.open(os.path.dirname(os.path.abspath(self.u.database)), os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _open(self) -> None:
        """Check what is there (read only), validate its rows, and only then create what is missing (under the
        lock): a foreign, corrupt or hostile database is refused as it was found."""
        if self.sqlite:
            db = self.u.database
            if os.path.isdir(db):
                raise StoreError(f"store {db}: is a folder, not a SQLite database file")
            if not os.path.isdir(os.path.dirname(os.path.abspath(db))):
                raise StoreError(f"store {db}: folder {os.path.dirname(os.path.abspath(db))} does not exist")
        have = self._check_schema()
        self.validate(have)
        if have != set(TABLES):
            with self.lock():
                self._check_schema()  # again under the lock: another process may have created it meanwhile
                _meta.create_all(self.engine)
                with self.engine.begin() as c:
                    if not c.execute(sa.select(INFO)).first():
                        c.execute(sa.insert(INFO), [{"key": "format", "value": FORMAT},
                                                    {"key": "version", "value": str(SCHEMA_VERSION)}])
        if self.sqlite:
            with self.engine.connect() as c:  # persistent in the file: readers never block the writer
                if c.exec_driver_sql("PRAGMA journal_mode").scalar() != "wal":
                    c.exec_driver_sql("PRAGMA journal_mode=WAL")

    def _check_schema(self) -> set[str]:
        """-> the edgedet tables present (StoreError when the database is not an edgedet store)."""
        insp = sa.inspect(self.engine)
        names = set(insp.get_table_names())
        ours = names & set(TABLES)
        if names and not ours and not names & OPTUNA_TABLES:
            raise StoreError(f"store {self.shown}: not an edgedet store (it holds other tables: "
                             f"{', '.join(sorted(names)[:5])}); give a new file or an empty database")
        for name in sorted(ours):
            cols = {c["name"] for c in insp.get_columns(name)}
            want = {c.name for c in TABLES[name].columns}
            if cols != want:
                raise StoreError(f"store {self.shown}: table {name} has columns {sorted(cols)}, expected "
                                 f"{sorted(want)} (a foreign store, or one from another edgedet version)")
        if "edgedet_store" in ours:
            with self.engine.connect() as c:
                info = {r.key: r.value for r in c.execute(sa.select(INFO))}
            if info and (info.get("format") != FORMAT or info.get("version") != str(SCHEMA_VERSION)):
                raise StoreError(f"store {self.shown}: format {info.get('format')!r} version {info.get('version')!r}"
                                 f" is not an edgedet store this version reads ({FORMAT} {SCHEMA_VERSION})")
        return ours

    def validate(self, tables: set[str] = frozenset(TABLES)) -> None:
        """Read back and validate every row of `tables` (StoreError on the first bad one)."""
        with self.engine.connect() as c:
            if MEASUREMENTS.name in tables:
                for r in c.execute(sa.select(MEASUREMENTS)).mappings():
                    measurement(r, self.shown)
            if ACCURACY.name in tables:
                for r in c.execute(sa.select(ACCURACY)).mappings():
                    _metrics(r["metrics"], f"store {self.shown}: accuracy row {_show(r['subnet'])}", r["subnet"])
            if CLAIMS.name in tables:
                for r in c.execute(sa.select(CLAIMS)).mappings():
                    claim_row(r, self.shown)

    def optuna_storage(self):
        """Optuna's RDB storage in this database, created once per process (its tables under the store's lock)."""
        if self._optuna is None:
            import optuna

            try:
                kw = {"connect_args": {"timeout": 60}} if self.sqlite else {"pool_pre_ping": True}
                have = set(sa.inspect(self.engine).get_table_names())
                with contextlib.nullcontext() if OPTUNA_TABLES <= have else self.lock():
                    self._optuna = optuna.storages.RDBStorage(self.url, engine_kwargs=kw)
            except (sa.exc.SQLAlchemyError, RuntimeError, ValueError) as e:
                raise StoreError(f"store {self.shown}: Optuna's tables cannot be used: {_first_line(e)}") from None
        return self._optuna

    # ------------------------------------------------------------------------------------------- measurements
    def measurements(self, target_fp: str, runtime_version: str) -> list[Measurement]:
        t = MEASUREMENTS.c
        with self.engine.connect() as c:
            rows = c.execute(sa.select(MEASUREMENTS).where(t.target_fp == target_fp,
                                                           t.runtime_version == runtime_version)
                             .order_by(t.created, t.subnet, t.precision)).mappings().all()
        return [measurement(r, self.shown) for r in rows]

    def measurement(self, target_fp: str, subnet: str, precision: str, runtime_version: str) -> Measurement | None:
        t = MEASUREMENTS.c
        with self.engine.connect() as c:
            row = c.execute(sa.select(MEASUREMENTS).where(
                t.target_fp == target_fp, t.subnet == subnet, t.precision == precision,
                t.runtime_version == runtime_version)).mappings().first()
        return measurement(row, self.shown) if row else None

    def put_measurement(self, target_fp: str, subnet: str, precision: str, runtime_version: str, status: str,
                        latency_ms: float | None = None, record: dict | None = None, ap: dict | None = None,
                        ap_source: str | None = None, device: str = "", compile_s: float | None = None) -> None:
        vals = dict(target_fp=target_fp, subnet=subnet, precision=precision, runtime_version=runtime_version,
                    status=status, latency_ms=latency_ms, record=json.dumps(record) if record else None,
                    ap=json.dumps(ap) if ap else None, ap_source=ap_source, device=device, compile_s=compile_s,
                    created=time.time())
        measurement(vals, self.shown)  # never write what would not read back
        t = MEASUREMENTS.c
        with self.engine.begin() as c:
            c.execute(sa.delete(MEASUREMENTS).where(t.target_fp == target_fp, t.subnet == subnet,
                                                    t.precision == precision, t.runtime_version == runtime_version))
            c.execute(sa.insert(MEASUREMENTS).values(**vals))

    def set_ap(self, target_fp: str, subnet: str, precision: str, runtime_version: str, ap: dict,
               ap_source: str) -> None:
        """Add the artifact's AP to a measured row (its latency and timestamp untouched)."""
        _metrics(json.dumps(ap), f"store {self.shown}: AP of {subnet}@{precision}", subnet)
        t = MEASUREMENTS.c
        with self.engine.begin() as c:
            c.execute(sa.update(MEASUREMENTS).where(
                t.target_fp == target_fp, t.subnet == subnet, t.precision == precision,
                t.runtime_version == runtime_version).values(ap=json.dumps(ap), ap_source=ap_source))

    # ---------------------------------------------------------------------------------------------- accuracy
    def accuracy(self, key: str) -> dict[str, dict]:
        with self.engine.connect() as c:
            rows = c.execute(sa.select(ACCURACY).where(ACCURACY.c.key == key)).mappings().all()
        return {r["subnet"]: _metrics(r["metrics"], f"store {self.shown}: accuracy row {_show(r['subnet'])}",
                                      r["subnet"]) for r in rows}

    def put_accuracy(self, key: str, results: dict[str, dict]) -> None:
        if not results:
            return
        with self.engine.begin() as c:
            c.execute(sa.delete(ACCURACY).where(ACCURACY.c.key == key, ACCURACY.c.subnet.in_(list(results))))
            c.execute(sa.insert(ACCURACY), [dict(key=key, subnet=s, metrics=json.dumps(m), created=time.time())
                                            for s, m in results.items()])

    def close(self) -> None:
        if self._optuna is not None:
            self._optuna.engine.dispose()
        self.engine.dispose()


# ------------------------------------------------------------------------------------------------ validation
def _show(v) -> str:
    return repr(v)[:60]


def _finite(v, what: str, positive: bool = False) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or (positive and v == 0):
        raise StoreError(f"{what} {_show(v)} is not a finite {'positive' if positive else 'non-negative'} number")
    return float(v)


def _json(text, what: str):
    if text is None:
        return None
    if not isinstance(text, str) or len(text) > 1 << 20:
        raise StoreError(f"{what}: not a JSON text of at most 1 MiB")
    try:
        return json.loads(text, parse_constant=float)
    except ValueError:
        raise StoreError(f"{what}: not valid JSON") from None


def _metrics(text, where: str, subnet) -> dict[str, float]:
    """AP metrics (pycocotools names -> numbers in [-1, 1]; -1 where pycocotools has no ground truth)."""
    if not isinstance(subnet, str) or not _SUBNET.match(subnet):
        raise StoreError(f"{where}: subnet id {_show(subnet)} is not of the form p16-r384-w2-d3-q100")
    m = _json(text, where)
    if not isinstance(m, dict) or "AP" not in m or len(m) > 64:
        raise StoreError(f"{where}: AP metrics are not a mapping with an 'AP' entry")
    for k, v in m.items():
        if not isinstance(k, str) or _CONTROL.search(k) or len(k) > 32 or isinstance(v, bool) \
                or not isinstance(v, (int, float)) or not -1 <= v <= 1:
            raise StoreError(f"{where}: AP metric {_show(k)} = {_show(v)} is not a number in [-1, 1]")
    return m


RECORD_NUMBERS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms")


def _record(text, where: str) -> dict | None:
    rec = _json(text, where)
    if rec is None:
        return None
    if not isinstance(rec, dict):
        raise StoreError(f"{where}: the latency record is not a mapping")
    for k in RECORD_NUMBERS:
        _finite(rec.get(k), f"{where}: record {k}", positive=True)
    _finite(rec.get("spread"), f"{where}: record spread")
    if not isinstance(rec.get("noisy"), bool):
        raise StoreError(f"{where}: record noisy {_show(rec.get('noisy'))} is not true/false")
    if isinstance(rec.get("runs"), bool) or not isinstance(rec.get("runs"), int) or rec["runs"] < 1:
        raise StoreError(f"{where}: record runs {_show(rec.get('runs'))} is not a positive integer")
    for k in ("device", "runtime"):
        if not isinstance(rec.get(k, {}), dict):
            raise StoreError(f"{where}: record {k} is not a mapping")
    return rec


def measurement(r, store: str) -> Measurement:
    """A row of edgedet_measurements (a mapping, JSON columns as text) -> Measurement, or StoreError naming the
    row and the field."""
    sub, prec = r["subnet"], r["precision"]
    where = f"store {store}: measurement {_show(sub)}@{_show(prec)}"
    if not isinstance(sub, str) or not _SUBNET.match(sub):
        raise StoreError(f"{where}: subnet id is not of the form p16-r384-w2-d3-q100")
    if prec not in PRECISIONS:
        raise StoreError(f"{where}: precision is not one of {', '.join(PRECISIONS)}")
    status = r["status"]
    if not isinstance(status, str) or len(status) > 2000 or _CONTROL.search(status) or not (
            status == "ok" or status.startswith(("unsupported: ", "error: "))):
        raise StoreError(f"{where}: status {_show(status)} is not 'ok', 'unsupported: ...' or 'error: ...'")
    ok = status == "ok"
    lat = _finite(r["latency_ms"], f"{where}: latency_ms", positive=True) if ok else None
    rec = _record(r["record"], where) if ok else None
    ap = _metrics(r["ap"], where, sub) if r["ap"] is not None else None
    if r["ap_source"] not in AP_SOURCES:
        raise StoreError(f"{where}: ap_source {_show(r['ap_source'])} is not one of artifact, torch, pending")
    dev = r["device"] or ""
    if not isinstance(dev, str) or len(dev) > 255 or _CONTROL.search(dev):
        raise StoreError(f"{where}: device {_show(dev)} is not a printable name")
    cs = r["compile_s"]
    cs = _finite(cs, f"{where}: compile_s") if cs is not None else None
    created = _finite(r["created"], f"{where}: created")
    return Measurement(sub, prec, status, lat, rec, ap, r["ap_source"], dev, cs, created)


CLAIM_STATES = ("queued", "claimed", "done")


def claim_row(r, store: str) -> dict:
    """A row of edgedet_claims, validated -> dict."""
    where = f"store {store}: claim {_show(r['item'])}"
    if not isinstance(r["item"], str) or _CONTROL.search(r["item"]):
        raise StoreError(f"{where}: item is not a printable name")
    if r["state"] not in CLAIM_STATES:
        raise StoreError(f"{where}: state {_show(r['state'])} is not one of {', '.join(CLAIM_STATES)}")
    if r["owner"] is not None and (not isinstance(r["owner"], str) or _CONTROL.search(r["owner"])):
        raise StoreError(f"{where}: owner {_show(r['owner'])} is not a printable name")
    lease = r["lease_until"]
    if lease is not None and (isinstance(lease, bool) or not isinstance(lease, (int, float))
                              or not math.isfinite(lease)):
        raise StoreError(f"{where}: lease_until {_show(lease)} is not a finite time")
    return dict(r)
