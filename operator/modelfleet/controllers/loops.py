"""Per-object reconcile loops, woken by watch events or when their step asks to come back.

Controllers register a `step(namespace, name) -> seconds | None` coroutine. An object's step runs when it
is woken (a change of the object or of something it depends on), when the delay its last run returned
has passed, or when `resync` has passed. Runs of one object never overlap, so each object has exactly one
status writer, and a burst of wakes makes one run, not many.

An idle object costs a small entry and one timer handle, not an asyncio task: an operator with 10,000
Deployments keeps 10,000 entries and runs at most `concurrency` steps at once (a restart wakes every
object together). Nothing here matters across restarts: a restarted operator starts every object afresh
from its status.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

Key = tuple[str, str]
Step = Callable[[str, str], Awaitable[float | None]]

BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
MIN_GAP = 0.1
"""Seconds between two runs of one object's step, so a burst of events makes one run, not many."""
CONCURRENCY = 256
"""Steps of one controller running at once; more objects due wait their turn, first woken first run."""


class Gone(Exception):
    """The object no longer exists: its loop ends."""


class _Entry:
    """What is kept of one object between its runs."""

    __slots__ = ("again", "ended", "failures", "timer", "when")

    def __init__(self) -> None:
        self.again = False
        """Woken while its step was running: run again once it ends."""
        self.ended = float("-inf")
        """When its last run ended (loop time)."""
        self.failures = 0
        self.timer: asyncio.TimerHandle | None = None
        self.when = 0.0
        """When the timer fires (loop time), while there is one."""


class Loops:
    """The loops of one controller."""

    def __init__(
        self,
        name: str,
        step: Step,
        resync: float = 600.0,
        *,
        concurrency: int = CONCURRENCY,
        min_gap: float = MIN_GAP,
        backoff: tuple[float, ...] = BACKOFF,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency}")
        self.name = name
        self.step = step
        self.resync = resync
        self.concurrency = concurrency
        self.min_gap = min_gap
        self.backoff = backoff
        self.log = logging.getLogger(f"modelfleet.{name}")
        self._entries: dict[Key, _Entry] = {}
        self._ready: dict[Key, None] = {}
        """Due to run, in the order they became due (a dict as an ordered set)."""
        self._running: dict[Key, asyncio.Task[None]] = {}

    def __contains__(self, key: Key) -> bool:
        return key in self._entries

    def keys(self) -> list[Key]:
        return list(self._entries)

    @property
    def running(self) -> int:
        """Steps running now."""
        return len(self._running)

    @property
    def waiting(self) -> int:
        """Objects due whose step has not started yet (all `concurrency` slots busy)."""
        return len(self._ready)

    def wake(self, namespace: str, name: str) -> None:
        """Run the object's step soon (at most `min_gap` after its last run ended); start tracking it if
        it is new."""
        key = (namespace, name)
        entry = self._entries.get(key)
        if entry is None:
            entry = self._entries[key] = _Entry()
        if key in self._running:
            entry.again = True
            return
        if key in self._ready:
            return
        earliest = entry.ended + self.min_gap
        if asyncio.get_running_loop().time() >= earliest:
            self._make_ready(key, entry)
        else:
            self._schedule(key, entry, earliest)

    def stop(self, namespace: str, name: str) -> None:
        """Forget the object; a step of it that is running is cancelled (unless it is the caller)."""
        key = (namespace, name)
        entry = self._entries.pop(key, None)
        if entry is not None and entry.timer is not None:
            entry.timer.cancel()
        self._ready.pop(key, None)
        task = self._running.get(key)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def stop_all(self) -> None:
        for entry in self._entries.values():
            if entry.timer is not None:
                entry.timer.cancel()
        self._entries.clear()
        self._ready.clear()
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- scheduling -----------------------------------------------------------------------------------

    def _schedule(self, key: Key, entry: _Entry, when: float) -> None:
        """Run at `when` (loop time), unless a timer already fires sooner."""
        if entry.timer is not None:
            if entry.when <= when:
                return
            entry.timer.cancel()
        entry.when = when
        entry.timer = asyncio.get_running_loop().call_at(when, self._fire, key)

    def _fire(self, key: Key) -> None:
        entry = self._entries.get(key)
        if entry is None:
            return
        entry.timer = None
        if key in self._running:
            entry.again = True
        else:
            self._make_ready(key, entry)

    def _make_ready(self, key: Key, entry: _Entry) -> None:
        if entry.timer is not None:
            entry.timer.cancel()
            entry.timer = None
        self._ready[key] = None
        self._dispatch()

    def _dispatch(self) -> None:
        while self._ready and len(self._running) < self.concurrency:
            key = next(iter(self._ready))
            del self._ready[key]
            self._running[key] = asyncio.create_task(self._run(key), name=f"{self.name}:{key[0]}/{key[1]}")

    async def _run(self, key: Key) -> None:
        entry = self._entries.get(key)
        if entry is not None:
            entry.again = False
        delay: float | None = None
        gone = failed = False
        try:
            delay = await self.step(*key)
        except Gone:
            gone = True
        except asyncio.CancelledError:
            raise
        except Exception:
            failed = True
            failures = entry.failures if entry is not None else 0
            self.log.exception(
                "%s/%s: step failed, again in %.0fs",
                key[0],
                key[1],
                self.backoff[min(failures, len(self.backoff) - 1)],
            )
        finally:
            if self._running.get(key) is asyncio.current_task():
                del self._running[key]
            self._after(key, delay, gone=gone, failed=failed)
            self._dispatch()

    def _after(self, key: Key, delay: float | None, *, gone: bool, failed: bool) -> None:
        """A run ended (or was cancelled): when does the object run next?"""
        entry = self._entries.get(key)  # stopped meanwhile: none, or a new one woken while it ran
        if entry is None:
            return
        if gone and not entry.again:
            del self._entries[key]
            return
        now = asyncio.get_running_loop().time()
        entry.ended = now
        if failed:
            delay = self.backoff[min(entry.failures, len(self.backoff) - 1)]
            entry.failures += 1
        else:
            entry.failures = 0
        wait = self.resync if delay is None else max(delay, self.min_gap)
        self._schedule(key, entry, now + (self.min_gap if entry.again else wait))
        entry.again = False
