"""Work shared through the store: every item (a candidate to measure, a group of subnets whose AP to evaluate, a
round's NSGA-II proposals) is done once, by whichever process claims it first, however many searches and workers
share the store.

A claim is a row (scope, item) in edgedet_claims: queued -> claimed (owner, lease_until) -> done. Claiming is one
conditional UPDATE (atomic in SQLite and PostgreSQL), so two processes never hold one item. The owner renews its
leases from a heartbeat thread; a claim whose lease ran out (its owner is gone: killed, lost its network) is taken
over by the next process that asks, and at once when its owner is a dead process of this machine (same boot and PID
namespace, PID gone or reused). Whether an item is done is decided by its result (a final measurement row, cached AP
metrics), not by the claim, so a finished measurement is never repeated even when a claim is taken over.
"""
from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from typing import Callable, Iterable

import sqlalchemy as sa

from .store import CLAIMS, Store, claim_row

LEASE_S = 60.0  # a claim not renewed for this long is taken over (the heartbeat renews every LEASE_S / 4)
Say = Callable[[str], None]


def _proc_start(pid: int) -> str | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _machine() -> str:
    """This kernel and PID namespace: owners that share it can be checked by PID."""
    try:
        boot = open("/proc/sys/kernel/random/boot_id").read().strip()[:8]
        ns = os.readlink("/proc/self/ns/pid").strip("pid:[]")
    except OSError:
        return socket.gethostname()[:40] + "/?"
    return f"{socket.gethostname()[:40]}/{boot}/{ns}"


def owner_id() -> str:
    """`host/boot/pidns:pid:start:random`: who holds a claim, and enough to tell whether it is still alive."""
    return f"{_machine()}:{os.getpid()}:{_proc_start(os.getpid()) or '?'}:{secrets.token_hex(3)}"


def owner_dead(owner: str | None) -> bool:
    """True only when `owner` is certainly a process of this machine that is gone (PID absent or reused)."""
    try:
        machine, pid, start, _ = owner.rsplit(":", 3)
        pid = int(pid)
    except (AttributeError, ValueError):
        return False
    if machine != _machine() or machine.endswith("/?") or start == "?":
        return False
    return _proc_start(pid) != start


class Claims:
    """Claims of one process (`owner`) in one scope of a store."""

    def __init__(self, store: Store, scope: str, lease_s: float = LEASE_S, owner: str | None = None):
        self.store, self.scope, self.lease_s = store, scope[:64], lease_s
        self.owner = owner or owner_id()
        self.mine: set[str] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    # ---------------------------------------------------------------------------------------------------- rows
    def offer(self, items: Iterable[str]) -> None:
        """Queue items that have no row yet (idempotent; safe when several processes offer the same items)."""
        items = list(dict.fromkeys(items))
        if not items:
            return
        now = time.time()
        ins = (sa.dialects.sqlite.insert if self.store.sqlite else sa.dialects.postgresql.insert)(CLAIMS)
        with self.store.engine.begin() as c:
            c.execute(ins.on_conflict_do_nothing(), [dict(scope=self.scope, item=i, state="queued", owner=None,
                                                          lease_until=None, attempts=0, updated=now) for i in items])

    def states(self, items: Iterable[str] | None = None) -> dict[str, dict]:
        """item -> validated row, for `items` (or every item of the scope)."""
        q = sa.select(CLAIMS).where(CLAIMS.c.scope == self.scope)
        if items is not None:
            items = list(items)
            q = q.where(CLAIMS.c.item.in_(items))
        with self.store.engine.connect() as c:
            rows = c.execute(q.order_by(CLAIMS.c.updated, CLAIMS.c.item)).mappings().all()
        return {r["item"]: claim_row(r, self.store.shown) for r in rows}

    def takeable(self, row: dict, now: float) -> bool:
        return row["state"] == "queued" or (row["state"] == "claimed" and row["owner"] != self.owner and (
            row["lease_until"] is None or row["lease_until"] < now or owner_dead(row["owner"])))

    def take(self, items: Iterable[str] | None = None, limit: int = 1, prefix: str = "") -> list[str]:
        """Claim up to `limit` of `items` (in their order; None: any of the scope starting with `prefix`, oldest
        first) that are queued or whose claim expired or whose owner is dead. -> the items now held here."""
        now = time.time()
        items = list(items) if items is not None else None
        rows = self.states(items)
        order = items if items is not None else [i for i in rows if i.startswith(prefix)]
        got = []
        c = CLAIMS.c
        for item in order:
            row = rows.get(item)
            if len(got) >= limit or row is None or not self.takeable(row, now):
                continue
            with self.store.engine.begin() as conn:  # atomic: only one process matches the old state
                res = conn.execute(sa.update(CLAIMS).where(
                    c.scope == self.scope, c.item == item, c.state == row["state"],
                    c.owner.is_(None) if row["owner"] is None else c.owner == row["owner"],
                    c.attempts == row["attempts"]).values(
                    state="claimed", owner=self.owner, lease_until=time.time() + self.lease_s,
                    attempts=row["attempts"] + 1, updated=time.time()))
            if res.rowcount == 1:
                got.append(item)
        with self._lock:
            self.mine.update(got)
        if got:
            self._start_heartbeat()
        return got

    def _set(self, item: str, **vals) -> bool:
        c = CLAIMS.c
        with self.store.engine.begin() as conn:
            res = conn.execute(sa.update(CLAIMS).where(c.scope == self.scope, c.item == item, c.owner == self.owner,
                                                       c.state == "claimed").values(updated=time.time(), **vals))
        with self._lock:
            self.mine.discard(item)
        return res.rowcount == 1

    def finish(self, item: str) -> bool:
        """Mark a held item done. False when the claim was lost (taken over after its lease ran out)."""
        return self._set(item, state="done", lease_until=None)

    def release(self, item: str) -> None:
        """Give a held item back to the queue (not done: another process, or this one, takes it later)."""
        self._set(item, state="queued", owner=None, lease_until=None)

    def requeue(self, items: Iterable[str]) -> None:
        """Queue items again whose claim says done but whose result is missing (removed from the store)."""
        c = CLAIMS.c
        with self.store.engine.begin() as conn:
            conn.execute(sa.update(CLAIMS).where(c.scope == self.scope, c.item.in_(list(items)), c.state == "done")
                         .values(state="queued", owner=None, lease_until=None, updated=time.time()))

    def hold(self, item: str) -> None:
        """Hold `item` for as long as this process runs (presence: a search that workers can see), whatever its
        earlier state."""
        self.offer([item])
        c = CLAIMS.c
        with self.store.engine.begin() as conn:
            conn.execute(sa.update(CLAIMS).where(c.scope == self.scope, c.item == item).values(
                state="claimed", owner=self.owner, lease_until=time.time() + self.lease_s, updated=time.time()))
        with self._lock:
            self.mine.add(item)
        self._start_heartbeat()

    def alive(self, prefix: str) -> list[str]:
        """Items starting with `prefix` held by a live owner other than this process."""
        now = time.time()
        return [i for i, r in self.states().items() if i.startswith(prefix) and r["state"] == "claimed"
                and r["owner"] != self.owner and not self.takeable(r, now)]

    # ------------------------------------------------------------------------------------------------ heartbeat
    def _start_heartbeat(self) -> None:
        if self._beat is None or not self._beat.is_alive():
            self._stop.clear()
            self._beat = threading.Thread(target=self._heartbeat, name="edgedet-claims", daemon=True)
            self._beat.start()

    def _heartbeat(self) -> None:
        c = CLAIMS.c
        while not self._stop.wait(self.lease_s / 4):
            try:
                with self.store.engine.begin() as conn:
                    conn.execute(sa.update(CLAIMS).where(c.scope == self.scope, c.owner == self.owner,
                                                         c.state == "claimed")
                                 .values(lease_until=time.time() + self.lease_s))
            except sa.exc.SQLAlchemyError:
                pass  # the store is busy or away for a moment: the next beat tries again

    def close(self, done: Iterable[str] = ()) -> None:
        """Stop renewing; mark the held items in `done` done and give back every other item still held (queued for
        the others)."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(5)
        done = set(done)
        for item in list(self.mine):
            try:
                if item in done:
                    self.finish(item)
                else:
                    self.release(item)
            except sa.exc.SQLAlchemyError:
                pass  # the lease runs out instead


def share(claims: Claims, items: list[str], done: Callable[[list[str]], set[str]],
          work: Callable[[list[str]], None], limit: int = 1, poll_s: float = 0.3, say: Say | None = None,
          what: str = "items") -> None:
    """Do `items` once among every process sharing the store: claim up to `limit` at a time and run work(claimed)
    here; wait for those other processes hold; take over the claims of dead owners. Returns when done(items) covers
    all of them. `done(items)` -> the subset whose result is in the store; `work` must leave a result for each item
    it completes (an item it gives up on is released to the queue)."""
    left = [i for i in items if i not in done(items)]
    claims.offer(left)
    told = None
    while left:
        mine = claims.take(left, limit)
        if mine:
            run_claimed(claims, mine, done, work)
        else:
            st = claims.states(left)
            fin = done(left)
            claims.offer([i for i in left if i not in st])
            claims.requeue([i for i in left if st.get(i, {}).get("state") == "done" and i not in fin])
            waiting = sorted({st[i]["owner"] for i in left if i in st and st[i]["state"] == "claimed"})
            if say and waiting and waiting != told:
                say(f"waiting for {len(left)} {what} held by {len(waiting)} other process(es)")
                told = waiting
            time.sleep(poll_s)
        fin = done(left)
        left = [i for i in left if i not in fin]


def run_claimed(claims: Claims, mine: list[str], done: Callable[[list[str]], set[str]],
                work: Callable[[list[str]], None]) -> None:
    """work(mine) on items this process holds; then each is marked done if its result is there, else released."""
    try:
        work(mine)
    finally:
        fin = done(mine)
        for i in mine:
            if i in fin:
                claims.finish(i)
            else:
                claims.release(i)
