"""A device and everything it answers are untrusted: the agent's replies are checked here before edgedet uses or
prints any of them.

  parse(text)            the last line of the agent's stdout as a JSON object (bounded by the caller), cleaned:
                         strings without control or other non-printable characters (terminal escapes, bidi
                         overrides) and at most MAX_STR characters, lists of at most MAX_ITEMS, objects of at most
                         MAX_ITEMS keys, nesting at most MAX_DEPTH, NaN and infinities as None
  file_list(res, key, allowed)   a list of file names, every one of them among `allowed` (the artifact's own files)
  record(res)            a LatencyRecord whose numbers are finite, non-negative and ordered (min <= p50 <= p90 <= p99)
  mapping(res, key)      a dict field; device_info(res): the probes' structure

A reply that breaks a rule is a DeviceError naming the device, the step and the field.
"""
from __future__ import annotations

import json
import math
from dataclasses import fields

from ..profiler import LatencyRecord
from .base import DeviceError

MAX_STR, MAX_ITEMS, MAX_DEPTH = 2000, 1000, 12
MAX_REPLY_BYTES, MAX_STDERR_BYTES = 4 << 20, 64 << 10  # what is read from a device per command


def text(s: str, limit: int = MAX_STR) -> str:
    """`s` with every non-printable character as '?' (escape sequences cannot reach a terminal), cut at `limit`."""
    s = "".join(c if c.isprintable() else "?" for c in str(s)[:limit + 1])
    return s if len(s) <= limit else s[:limit] + "..."


def clean(v, depth: int = 0):
    """A JSON value with the limits of the module docstring applied (recursively)."""
    if depth > MAX_DEPTH:
        return None
    if isinstance(v, str):
        return text(v)
    if isinstance(v, bool) or v is None or isinstance(v, int):
        return v
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, list):
        return [clean(x, depth + 1) for x in v[:MAX_ITEMS]]
    if isinstance(v, dict):
        return {text(k, 200): clean(x, depth + 1) for k, x in list(v.items())[:MAX_ITEMS]}
    return None


def parse(stdout: str) -> dict | None:
    """The agent's answer: the last non-empty line of stdout as a cleaned JSON object with a string `status`, or
    None when there is none."""
    lines = [x for x in stdout.strip().splitlines() if x.strip()]
    if not lines:
        return None
    try:
        res = json.loads(lines[-1])
    except (ValueError, RecursionError):  # not JSON, too deep, an integer beyond Python's digit limit
        return None
    res = clean(res)
    return res if isinstance(res, dict) and isinstance(res.get("status"), str) else None


def _bad(where: str, what: str) -> DeviceError:
    return DeviceError(f"{where}: the device's reply is not valid: {what}")


def mapping(res: dict, key: str, where: str) -> dict:
    v = res.get(key)
    if not isinstance(v, dict):
        raise _bad(where, f"{key} is not an object")
    return v


def device_info(res: dict, where: str) -> dict:
    """res["info"], the device's probes: an object whose gpus (when present) is a list of objects and whose jetson
    (when present) is an object with power_mode and tegrastats objects or null."""
    info = mapping(res, "info", where)
    gpus, jetson = info.get("gpus"), info.get("jetson")
    if gpus is not None and not (isinstance(gpus, list) and all(isinstance(g, dict) for g in gpus)):
        raise _bad(where, "info.gpus is not a list of objects")
    if jetson is not None and not (isinstance(jetson, dict) and all(
            isinstance(jetson.get(k), (dict, type(None))) for k in ("power_mode", "tegrastats"))):
        raise _bad(where, "info.jetson is not an object (with power_mode and tegrastats objects)")
    return info


def string(res: dict, key: str, where: str, optional: bool = False) -> str | None:
    v = res.get(key)
    if v is None and optional:
        return None
    if not isinstance(v, str):
        raise _bad(where, f"{key} is not a string")
    return v


def file_list(res: dict, key: str, allowed, where: str) -> list[str]:
    """res[key] as a list of names that are all in `allowed` (what edgedet asked about): a device can never make
    edgedet read or send a file of its own choosing."""
    v = res.get(key)
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _bad(where, f"{key} is not a list of file names")
    foreign = [x for x in v if x not in allowed]
    if foreign:
        raise _bad(where, f"{key} names {text(foreign[0], 80)!r}, which is not a file of the artifact")
    return v


NUMBERS = ("p50_ms", "p90_ms", "p99_ms", "mean_ms", "min_ms", "spread", "cooldown_ms", "duration_s")
COUNTS = {"runs": 1, "warmup": 0, "batch": 1}  # field -> smallest valid value


def record(res: dict, where: str) -> LatencyRecord:
    """res["record"] as a LatencyRecord: every field present, numbers finite and >= 0, counts integers,
    min <= p50 <= p90 <= p99, runtime and device objects, note a string."""
    rec = mapping(res, "record", where)
    names = [f.name for f in fields(LatencyRecord)]
    missing = [n for n in names if n not in rec]
    if missing:
        raise _bad(where, f"the record lacks {', '.join(missing)}")
    for k in NUMBERS:
        v = rec[k]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
            raise _bad(where, f"record.{k} is not a finite number >= 0 (got {text(repr(v), 40)})")
    for k, lo in COUNTS.items():
        if isinstance(rec[k], bool) or not isinstance(rec[k], int) or rec[k] < lo:
            raise _bad(where, f"record.{k} is not an integer >= {lo} (got {text(repr(rec[k]), 40)})")
    if not rec["min_ms"] <= rec["p50_ms"] <= rec["p90_ms"] <= rec["p99_ms"]:
        raise _bad(where, "record percentiles are out of order (min <= p50 <= p90 <= p99)")
    if not isinstance(rec["noisy"], bool) or not isinstance(rec["note"], str):
        raise _bad(where, "record.noisy is not true/false or record.note not a string")
    for k in ("runtime", "device"):
        mapping(rec, k, where)
    load = rec["device"].get("load")
    if load is not None and not (isinstance(load, dict) and all(
            v is None or (isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v >= 0)
            for v in load.values())):
        raise _bad(where, "record.device.load is not an object of finite numbers >= 0")
    return LatencyRecord(**{k: rec[k] for k in names})
