"""Bad stores and bad search arguments: a corrupt or foreign search.db, foreign SQLite schemas, hostile rows in a
real store (one hostile value per field of every table), bad --storage URLs and missing drivers, bad search
arguments and space files. Each is one line on stderr, exit 2, and nothing created (no empty output folder)."""
from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from edgedet.search.store import Store, sqlite_url

from .harness import ROOT, Case

TARGET = str(ROOT / "targets" / "local_cpu.yaml")
RECORD = {"p50_ms": 3.0, "p90_ms": 3.2, "p99_ms": 3.5, "mean_ms": 3.1, "min_ms": 2.9, "spread": 0.1, "noisy": False,
          "runs": 10, "device": {}, "runtime": {}}
ROW = dict(target_fp="f" * 16, subnet="p16-r384-w2-d3-q100", precision="fp32", runtime_version="1.0", status="ok",
           latency_ms=3.2, record=json.dumps(RECORD), ap=json.dumps({"AP": 0.3}), ap_source="artifact",
           device="local", compile_s=1.5, created=1.7e9)


def search(*extra: str, out: str = "out") -> list[str]:
    """`edgedet search` with light settings on the default target (the store is opened after the device check)."""
    return ["search", "-t", TARGET, "-o", out, "--data", "{demo_data}", "--val-images", "2", "--max-measurements", "2",
            *extra]


def _db(sb: Path) -> Path:
    (sb / "out").mkdir(exist_ok=True)
    return sb / "out" / "search.db"


def raw(content: bytes | str):
    """OUT/search.db holds these bytes (not a database)."""
    def setup(sb: Path, subst: dict) -> None:
        p = _db(sb)
        p.write_bytes(content.encode() if isinstance(content, str) else content)
    return setup


def sql(*statements: str):
    """OUT/search.db is a SQLite database made by these statements (a foreign schema)."""
    def setup(sb: Path, subst: dict) -> None:
        with sqlite3.connect(_db(sb)) as c:
            for st in statements:
                c.execute(st)
    return setup


def hostile(table: str, **values):
    """OUT/search.db is a real edgedet store with one row of `table` holding a hostile value."""
    def setup(sb: Path, subst: dict) -> None:
        p = _db(sb)
        Store(sqlite_url(p)).close()
        if table == "edgedet_measurements":
            row = dict(ROW, **values)
        elif table == "edgedet_accuracy":
            row = dict(key="k" * 32, subnet="p16-r384-w2-d3-q100", metrics=json.dumps({"AP": 0.3}), created=1.7e9)
            row.update(values)
        else:
            row = dict(scope="s" * 32, item="cand:p16-r384-w2-d3-q100@fp32", state="claimed", owner="h:1:2:3",
                       lease_until=1.7e9, attempts=1, updated=1.7e9)
            row.update(values)
        with sqlite3.connect(p) as c:
            c.execute(f"insert into {table} ({', '.join(row)}) values ({', '.join('?' * len(row))})",
                      list(row.values()))
    return setup


def rec(**kw) -> str:
    r = dict(RECORD)
    for k, v in kw.items():
        if v is ...:
            r.pop(k)
        else:
            r[k] = v
    return json.dumps(r)


RESUME = search("--resume")
CASES = [
    # corrupt or foreign search.db (resumed: the folder exists, nothing may be added to it)
    Case("store-random-bytes", RESUME, setup=raw(bytes(range(256)) * 64), expect_stderr=r"store .*not a database"),
    Case("store-text-file", RESUME, setup=raw("hello, not sqlite\n"), expect_stderr=r"store .*not a database"),
    Case("store-truncated-sqlite", RESUME, setup=raw(b"SQLite format 3\x00" + b"\x10\x00" + b"\x00" * 80),
         expect_stderr=r"store .*(malformed|not a database)"),
    Case("store-is-a-folder", RESUME, setup=lambda sb, s: _db(sb).mkdir(), expect_stderr=r"is a folder"),
    Case("store-foreign-tables", RESUME, setup=sql("create table users (id integer, name text)"),
         expect_stderr=r"not an edgedet store \(it holds other tables: users"),
    Case("store-foreign-measurements-schema", RESUME,
         setup=sql("create table edgedet_measurements (id integer primary key, latency real)"),
         expect_stderr=r"table edgedet_measurements has columns"),
    Case("store-foreign-claims-schema", RESUME, setup=sql("create table edgedet_claims (x text)"),
         expect_stderr=r"table edgedet_claims has columns"),
    Case("store-other-format", RESUME, setup=sql("create table edgedet_store (key varchar(32) primary key, value text)",
                                                 "insert into edgedet_store values ('format', 'someone.else')"),
         expect_stderr=r"format 'someone.else'"),
    Case("store-newer-version", RESUME, setup=sql("create table edgedet_store (key varchar(32) primary key, value text)",
                                                  "insert into edgedet_store values ('format', 'edgedet.store')",
                                                  "insert into edgedet_store values ('version', '99')"),
         expect_stderr=r"version '99'"),
    Case("store-symlink-to-elsewhere", search("--storage", "sqlite:///{sandbox}/link.db"),
         setup=lambda sb, s: (sb / "link.db").symlink_to("/proc/self/status"), expect_stderr=r"store .*"),
]

# hostile rows: one per field of each table
M = "edgedet_measurements"
HOSTILE = [
    ("latency-nan", M, dict(latency_ms=float("nan")), "latency_ms"),
    ("latency-negative", M, dict(latency_ms=-1.0), "latency_ms -1.0"),
    ("latency-zero", M, dict(latency_ms=0.0), "latency_ms 0.0"),
    ("latency-inf", M, dict(latency_ms=float("inf")), "latency_ms inf"),
    ("latency-text", M, dict(latency_ms="fast"), "latency_ms 'fast'"),
    ("record-not-json", M, dict(record="{not json"), "not valid JSON"),
    ("record-a-list", M, dict(record="[1, 2]"), "record is not a mapping"),
    ("record-p90-nan", M, dict(record=rec(p90_ms=float("nan"))), "record p90_ms nan"),
    ("record-p50-missing", M, dict(record=rec(p50_ms=...)), "record p50_ms None"),
    ("record-p99-negative", M, dict(record=rec(p99_ms=-5)), "record p99_ms -5"),
    ("record-spread-inf", M, dict(record=rec(spread=1e999)), "record spread inf"),
    ("record-noisy-text", M, dict(record=rec(noisy="yes")), "record noisy 'yes'"),
    ("record-runs-zero", M, dict(record=rec(runs=0)), "record runs 0"),
    ("record-runs-float", M, dict(record=rec(runs=2.5)), "record runs 2.5"),
    ("record-device-text", M, dict(record=rec(device="x")), "record device is not a mapping"),
    ("record-huge", M, dict(record=json.dumps(dict(RECORD, pad="x" * (1 << 20)))), "at most 1 MiB"),
    ("subnet-path", M, dict(subnet="../../etc/passwd"), "subnet id is not of the form"),
    ("subnet-partial", M, dict(subnet="p16-r384"), "subnet id is not of the form"),
    ("subnet-escape", M, dict(subnet="\x1b[31mp16-r384-w2-d3-q100"), "subnet id is not of the form"),
    ("precision-unknown", M, dict(precision="fp64"), "precision is not one of"),
    ("status-unknown", M, dict(status="pwned"), "status 'pwned'"),
    ("status-newline", M, dict(status="error: a\nsecond line"), "status 'error: a\\\\nsecond line'"),
    ("status-escape", M, dict(status="error: \x1b]0;title\x07"), "status 'error: "),
    ("ap-out-of-range", M, dict(ap=json.dumps({"AP": 5})), "AP metric 'AP' = 5"),
    ("ap-text", M, dict(ap=json.dumps({"AP": "x"})), "AP metric 'AP' = 'x'"),
    ("ap-list", M, dict(ap="[1, 2]"), "not a mapping with an 'AP' entry"),
    ("ap-nan", M, dict(ap='{"AP": NaN}'), "AP metric 'AP' = nan"),
    ("ap-empty", M, dict(ap="{}"), "not a mapping with an 'AP' entry"),
    ("ap-source-unknown", M, dict(ap_source="magic"), "ap_source 'magic'"),
    ("device-escape", M, dict(device="\x1b[2Jdev"), "device '\\\\x1b"),
    ("compile-negative", M, dict(compile_s=-1.0), "compile_s -1.0"),
    ("accuracy-not-json", "edgedet_accuracy", dict(metrics="{"), "accuracy row .*not valid JSON"),
    ("accuracy-out-of-range", "edgedet_accuracy", dict(metrics=json.dumps({"AP": -3})), "AP metric 'AP' = -3"),
    ("accuracy-bad-subnet", "edgedet_accuracy", dict(subnet="x; rm -rf /"), "subnet id 'x; rm -rf /'"),
    ("claim-bad-state", "edgedet_claims", dict(state="weird"), "state 'weird'"),
    ("claim-lease-inf", "edgedet_claims", dict(lease_until=float("inf")), "lease_until inf"),
    ("claim-owner-escape", "edgedet_claims", dict(owner="\x1b[31mx"), "owner '\\\\x1b"),
]
CASES += [Case(f"store-row-{name}", RESUME, setup=hostile(table, **vals), expect_stderr=r"store .*" + msg)
          for name, table, vals, msg in HOSTILE]

# bad --storage URLs and missing drivers (the output folder must not appear)
URL = r"--storage .*"
CASES += [
    Case("url-not-a-url", search("--storage", "notaurl"), expect_stderr=URL + "not a database URL"),
    Case("url-empty", search("--storage", ""), expect_stderr="not a database URL"),
    Case("url-control-chars", search("--storage", "sqlite:///a\nb.db"), expect_stderr="not a database URL"),
    Case("url-mysql", search("--storage", "mysql://u@127.0.0.1/db"), expect_stderr="unsupported database 'mysql'"),
    Case("url-postgres-no-host", search("--storage", "postgresql:///db"), expect_stderr="needs a host"),
    Case("url-unknown-driver", search("--storage", "postgresql+pg8000://u@127.0.0.1/db"),
         expect_stderr="unsupported PostgreSQL driver 'pg8000'"),
    Case("url-missing-driver", search("--storage", "postgresql+psycopg2://u@127.0.0.1/db"),
         expect_stderr=r"driver psycopg2 is not installed: pip install 'edgedet\[postgres\]'"),
    Case("url-sqlite-memory", search("--storage", "sqlite://"), expect_stderr="must be a file"),
    Case("url-sqlite-query", search("--storage", "sqlite:///x.db?mode=ro"), expect_stderr="must be a file"),
    Case("url-sqlite-missing-folder", search("--storage", "sqlite:///{sandbox}/no/such/dir/x.db"),
         expect_stderr="does not exist"),
    Case("url-postgres-refused", search("--storage", "postgresql://u:hunter2@127.0.0.1:1/db"),
         expect_stderr=r"store postgresql\+psycopg://u:\*\*\*@127.0.0.1:1/db: .*(refused|failed)"),
    Case("worker-without-storage", search("--worker"), expect_stderr="--worker needs --storage"),
    Case("worker-bad-url", search("--worker", "--storage", "ftp://x"), expect_stderr="unsupported database 'ftp'"),
]

# bad search arguments and space files
SPACE_OK = "patch: [24]\nresolution: [192]\nwindows: [2]\ndec_layers: [1]\nqueries: [25]\n"


def space(text: str):
    return lambda sb, s: (sb / "space.yaml").write_text(text)


CASES += [
    Case("arg-max-measurements-zero", ["search", "-t", TARGET, "-o", "out", "--max-measurements", "0"],
         expect_stderr="--max-measurements 0: must be an integer >= 1"),
    Case("arg-val-images-negative", search("--val-images", "-3"), expect_stderr="--val-images -3"),
    Case("arg-generations-zero", search("--generations", "0"), expect_stderr="--generations 0"),
    Case("arg-population-one", search("--population", "1"), expect_stderr="--population 1: must be an integer >= 2"),
    Case("arg-runtime-unknown", search("--runtime", "java"), expect_stderr="java"),
    Case("arg-out-is-a-file", search(out="afile"), setup=lambda sb, s: (sb / "afile").write_text("x"),
         expect_stderr="exists and is not a folder"),
    Case("arg-out-has-a-search", search(), setup=raw(b""), expect_stderr="--resume"),
    Case("arg-missing-target", ["search", "-t", "nope.yaml", "-o", "out"], expect_stderr="nope.yaml"),
    Case("arg-missing-checkpoint", search("-c", "nope.safetensors"), expect_stderr="nope.safetensors"),
    Case("arg-missing-data", search("--data", "nodata"), expect_stderr="nodata"),
    Case("space-missing", search("--space", "nope.yaml"), expect_stderr="nope.yaml"),
    Case("space-not-yaml", search("--space", "space.yaml"), setup=space("patch: [24\n"), expect_stderr="not valid YAML"),
    Case("space-a-list", search("--space", "space.yaml"), setup=space("- 1\n- 2\n"), expect_stderr="mapping"),
    Case("space-unknown-knob", search("--space", "space.yaml"), setup=space(SPACE_OK + "depth: [3]\n"),
         expect_stderr="depth"),
    Case("space-patch-not-in-supernet", search("--space", "space.yaml"), setup=space(SPACE_OK.replace("[24]", "[7]")),
         expect_stderr="7"),
    Case("space-empty-list", search("--space", "space.yaml"), setup=space(SPACE_OK.replace("[192]", "[]")),
         expect_stderr="resolution"),
    Case("space-huge", search("--space", "space.yaml"),
         setup=space("".join(f"{k}: {list(range(1, 41))}\n" for k in ("patch", "resolution", "windows", "dec_layers",
                                                                       "queries"))),
         expect_stderr="102400000 combinations"),
    Case("space-negative-value", search("--space", "space.yaml"), setup=space(SPACE_OK.replace("[1]", "[-1]")),
         expect_stderr="dec_layers"),
    Case("space-text-values", search("--space", "space.yaml"), setup=space(SPACE_OK.replace("[25]", "[many]")),
         expect_stderr="queries"),
    Case("space-fits-no-target", ["search", "-t", "t.yaml", "-o", "out", "--space", "space.yaml", "--data",
                                  "{demo_data}"],
         setup=lambda sb, s: ((sb / "space.yaml").write_text(SPACE_OK),
                              (sb / "t.yaml").write_text("name: t\nbackend: onnxruntime\nprecisions: [fp32]\n"
                                                         "max_resolution: 100\n")),
         expect_stderr="no subnet fits target t"),
]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> str:
    """The demo's val set, made here (outside the sandboxes) so that no case generates it in its HOME."""
    from edgedet.data.demo import demo_data

    return str(demo_data())


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_bad_store_or_search_argument(bad, demo, case):
    bad(case, demo_data=demo)


def test_a_store_password_never_reaches_the_terminal(bad, demo):
    r = bad(Case("url-password", search("--storage", "postgresql://me:s3cr3t-pw@127.0.0.1:1/db"),
                 expect_stderr=r"\*\*\*"), demo_data=demo)
    assert "s3cr3t-pw" not in r.stderr + r.stdout
