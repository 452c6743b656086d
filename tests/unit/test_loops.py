"""The per-object loops: wakes coalesce, runs of one object never overlap, delays, failures, Gone, stop,
and the bound on steps running at once. Real asyncio, small real gaps."""

from __future__ import annotations

import asyncio
import functools
import tracemalloc
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import pytest

from modelfleet.controllers.loops import Gone, Loops

GAP = 0.01


def synchronous(test: Callable[[], Coroutine[Any, Any, None]]) -> Callable[[], None]:
    """Run an async test in its own event loop."""

    @functools.wraps(test)
    def run() -> None:
        asyncio.run(test())

    return run


class Recorder:
    """A step that records its runs; `block` holds a run until released."""

    def __init__(self) -> None:
        self.runs: Counter[str] = Counter()
        self.active: set[str] = set()
        self.overlaps = 0
        self.peak = 0
        self.block: asyncio.Event | None = None
        self.results: dict[str, list[float | BaseException | None]] = {}

    async def step(self, namespace: str, name: str) -> float | None:
        if name in self.active:
            self.overlaps += 1
        self.active.add(name)
        self.peak = max(self.peak, len(self.active))
        try:
            self.runs[name] += 1
            if self.block is not None:
                await self.block.wait()
            planned = self.results.get(name)
            result = planned.pop(0) if planned else None
            if isinstance(result, BaseException):
                raise result
            return result
        finally:
            self.active.discard(name)


def loops(recorder: Recorder, concurrency: int = 256) -> Loops:
    return Loops("test", recorder.step, 3600.0, concurrency=concurrency, min_gap=GAP, backoff=(0.02, 0.05))


async def settle(seconds: float = 0.05) -> None:
    await asyncio.sleep(seconds)


@synchronous
async def test_a_burst_of_wakes_makes_one_run() -> None:
    recorder = Recorder()
    subject = loops(recorder)
    for _ in range(50):
        subject.wake("ml", "iris")
    await settle()
    assert recorder.runs["iris"] == 1
    assert ("ml", "iris") in subject
    await subject.stop_all()


@synchronous
async def test_a_wake_while_running_runs_once_more_after_it_and_never_alongside() -> None:
    recorder = Recorder()
    recorder.block = asyncio.Event()
    subject = loops(recorder)
    subject.wake("ml", "iris")
    await settle(0.01)
    for _ in range(5):
        subject.wake("ml", "iris")
    assert recorder.runs["iris"] == 1
    recorder.block.set()
    await settle()
    assert recorder.runs["iris"] == 2
    assert recorder.overlaps == 0
    await subject.stop_all()


@synchronous
async def test_the_delay_a_step_returns_brings_it_back() -> None:
    recorder = Recorder()
    recorder.results["iris"] = [0.03, None]
    subject = loops(recorder)
    subject.wake("ml", "iris")
    await settle(0.01)
    assert recorder.runs["iris"] == 1
    await settle(0.08)
    assert recorder.runs["iris"] == 2  # came back after 0.03 s, then nothing (resync is an hour)
    await settle(0.05)
    assert recorder.runs["iris"] == 2
    await subject.stop_all()


@synchronous
async def test_a_failing_step_backs_off_and_recovers() -> None:
    recorder = Recorder()
    recorder.results["iris"] = [RuntimeError("boom"), RuntimeError("boom"), None]
    subject = loops(recorder)
    subject.wake("ml", "iris")
    await settle(0.2)
    assert recorder.runs["iris"] == 3  # failed, again after 0.02 s, failed, again after 0.05 s, done
    await settle(0.1)
    assert recorder.runs["iris"] == 3
    await subject.stop_all()


@synchronous
async def test_gone_forgets_the_object_and_a_later_wake_starts_it_again() -> None:
    recorder = Recorder()
    recorder.results["iris"] = [Gone()]
    subject = loops(recorder)
    subject.wake("ml", "iris")
    await settle()
    assert ("ml", "iris") not in subject
    subject.wake("ml", "iris")
    await settle()
    assert recorder.runs["iris"] == 2
    await subject.stop_all()


@synchronous
async def test_stop_cancels_a_running_step_and_forgets_the_object() -> None:
    recorder = Recorder()
    recorder.block = asyncio.Event()
    subject = loops(recorder)
    subject.wake("ml", "iris")
    await settle(0.01)
    assert subject.running == 1
    subject.stop("ml", "iris")
    await settle(0.01)
    assert subject.running == 0
    assert ("ml", "iris") not in subject
    recorder.block.set()
    await settle()
    assert recorder.runs["iris"] == 1
    await subject.stop_all()


@synchronous
async def test_stop_then_wake_during_the_cancelled_run_runs_it_again() -> None:
    recorder = Recorder()
    recorder.block = asyncio.Event()
    subject = loops(recorder)
    subject.wake("ml", "iris")
    await settle(0.01)
    subject.stop("ml", "iris")
    subject.wake("ml", "iris")  # recreated under the same name before the cancellation landed
    recorder.block.set()
    await settle()
    assert recorder.runs["iris"] == 2
    assert recorder.overlaps == 0
    await subject.stop_all()


@synchronous
async def test_no_more_than_concurrency_steps_run_at_once_and_every_object_gets_its_turn() -> None:
    recorder = Recorder()
    recorder.block = asyncio.Event()
    subject = loops(recorder, concurrency=4)
    for i in range(20):
        subject.wake("ml", f"d{i}")
    await settle(0.01)
    assert subject.running == 4
    assert subject.waiting == 16
    recorder.block.set()
    await settle(0.1)
    assert recorder.peak == 4
    assert all(recorder.runs[f"d{i}"] == 1 for i in range(20))
    assert subject.running == subject.waiting == 0
    await subject.stop_all()


@synchronous
async def test_resync_runs_an_object_nobody_woke() -> None:
    recorder = Recorder()
    subject = Loops("test", recorder.step, resync=0.03, min_gap=GAP)
    subject.wake("ml", "iris")
    await settle(0.1)
    assert recorder.runs["iris"] >= 3
    await subject.stop_all()


def test_concurrency_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="concurrency"):
        Loops("test", Recorder().step, concurrency=0)


@synchronous
async def test_an_idle_object_costs_a_small_entry_not_a_task() -> None:
    recorder = Recorder()
    subject = loops(recorder, concurrency=64)
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    for i in range(5000):
        subject.wake("modelfleet-bench", f"bench-d{i}")
    # until every run is done (tracemalloc slows them; a busy machine more so), then the loops are idle
    for _ in range(600):
        if sum(recorder.runs.values()) == 5000 and subject.running == 0:
            break
        await settle(0.1)
    await settle(0.1)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    assert sum(recorder.runs.values()) == 5000
    assert subject.running == 0
    per_object = sum(d.size_diff for d in after.compare_to(before, "filename")) / 5000
    assert per_object < 1500, f"{per_object:.0f} bytes per idle object"
    await subject.stop_all()
