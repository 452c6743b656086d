"""One asyncio task per object, woken by watch events or when its step asks to come back.

Controllers register a `step(namespace, name) -> seconds | None` coroutine. A loop runs the step, then
sleeps until it is woken (a change of the object or of something it depends on), the returned delay
passes, or `resync` passes. Steps of one object never overlap, so each object has exactly one status
writer. Nothing here matters across restarts: a restarted operator starts every loop afresh from the
objects' status.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

Key = tuple[str, str]
Step = Callable[[str, str], Awaitable[float | None]]

BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)
MIN_GAP = 0.1
"""Seconds between two runs of one object's step, so a burst of events makes one run, not many."""


class Gone(Exception):
    """The object no longer exists: its loop ends."""


class Loops:
    """The loops of one controller."""

    def __init__(self, name: str, step: Step, resync: float = 600.0) -> None:
        self.name = name
        self.step = step
        self.resync = resync
        self.log = logging.getLogger(f"modelfleet.{name}")
        self._tasks: dict[Key, asyncio.Task[None]] = {}
        self._wakers: dict[Key, asyncio.Event] = {}

    def __contains__(self, key: Key) -> bool:
        return key in self._tasks

    def keys(self) -> list[Key]:
        return list(self._tasks)

    def wake(self, namespace: str, name: str) -> None:
        """Run the object's step soon; start its loop if it has none."""
        key = (namespace, name)
        if key not in self._tasks:
            self._wakers[key] = asyncio.Event()
            self._tasks[key] = asyncio.create_task(self._loop(key), name=f"{self.name}:{namespace}/{name}")
        self._wakers[key].set()

    def stop(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        task = self._tasks.pop(key, None)
        self._wakers.pop(key, None)
        if task is not None and task is not asyncio.current_task():
            task.cancel()

    async def stop_all(self) -> None:
        tasks = list(self._tasks.values())
        self._tasks.clear()
        self._wakers.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _loop(self, key: Key) -> None:
        failures = 0
        while self._tasks.get(key) is asyncio.current_task():
            waker = self._wakers[key]
            waker.clear()
            try:
                delay = await self.step(*key)
                failures = 0
            except Gone:
                self._tasks.pop(key, None)
                self._wakers.pop(key, None)
                return
            except asyncio.CancelledError:
                raise
            except Exception:
                delay = BACKOFF[min(failures, len(BACKOFF) - 1)]
                failures += 1
                self.log.exception("%s/%s: step failed, again in %.0fs", key[0], key[1], delay)
            timeout = self.resync if delay is None else max(delay, MIN_GAP)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(waker.wait(), timeout)
            await asyncio.sleep(MIN_GAP)
