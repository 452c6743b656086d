"""kopf's index gate with many objects: the counting toggle set keeps kopf's semantics, and its waiters
wake when its state changes, not at every toggle added or dropped."""

from __future__ import annotations

import asyncio

from kopf._cogs.aiokits import aiotoggles

from modelfleet.controllers.kopfscale import CountingToggleSet, install


def test_all_is_on_when_empty_and_when_no_toggle_is_off() -> None:
    async def scenario() -> list[bool]:
        gate = CountingToggleSet(all)
        seen = [gate.is_on()]
        first = await gate.make_toggle(name="a")
        second = await gate.make_toggle(True, name="b")
        seen.append(gate.is_on())
        await gate.drop_toggle(first)
        seen.append(gate.is_on())
        await second.turn_to(False)
        seen.append(gate.is_on())
        await second.turn_to(True)
        seen.append(gate.is_on())
        return seen

    assert asyncio.run(scenario()) == [True, False, True, False, True]


def test_any_is_on_with_one_toggle_on() -> None:
    async def scenario() -> list[bool]:
        paused = CountingToggleSet(any)
        seen = [paused.is_on()]
        one = await paused.make_toggle(name="peering")
        seen.append(paused.is_on())
        await one.turn_to(True)
        seen.append(paused.is_on())
        await paused.drop_toggles([one])
        seen.append(paused.is_on())
        return seen

    assert asyncio.run(scenario()) == [False, False, True, False]


def _restart(gate_class: type[aiotoggles.ToggleSet], objects: int) -> int:
    """The shape of a restart, as kopf's watcher and workers do it: for each object of the watch's
    listing the watcher asks whether the gate is already open and adds a toggle; each object's worker
    indexes it (drops its toggle) and waits for the gate. Returns how many toggle states were looked at."""
    looked_at = 0
    toggle_is_on = aiotoggles.Toggle.is_on

    def counted(self: aiotoggles.Toggle) -> bool:
        nonlocal looked_at
        looked_at += 1
        return toggle_is_on(self)

    async def scenario() -> None:
        gate = gate_class(all)
        listing = await gate.make_toggle(name="listing")

        async def worker(mine: aiotoggles.Toggle) -> None:
            await gate.drop_toggle(mine)
            await gate.wait_for(True)

        workers = []
        for i in range(objects):  # the listing streams in while the first objects' workers run
            assert not gate.is_on()  # kopf's watcher, for every new object
            mine = await gate.make_toggle(name=f"object {i}")
            workers.append(asyncio.create_task(worker(mine)))
            await asyncio.sleep(0)
        await asyncio.sleep(0.05)
        assert not any(w.done() for w in workers)  # held while the listing goes on
        await gate.drop_toggle(listing)
        await asyncio.wait_for(asyncio.gather(*workers), 30)

    aiotoggles.Toggle.is_on = counted  # type: ignore[method-assign]
    try:
        asyncio.run(scenario())
    finally:
        aiotoggles.Toggle.is_on = toggle_is_on  # type: ignore[method-assign]
    return looked_at


def test_the_gate_costs_constant_work_per_object_not_work_per_object_squared() -> None:
    objects = 1000
    counting = _restart(CountingToggleSet, objects)
    kopfs = _restart(aiotoggles.ToggleSet, objects)

    assert counting <= 3 * objects  # each toggle looked at when added and when dropped
    assert kopfs >= objects * objects // 4  # kopf's own set looks at every toggle every time


def test_install_makes_kopf_build_counting_sets() -> None:
    original = aiotoggles.ToggleSet
    try:
        assert install()
        assert isinstance(aiotoggles.ToggleSet(all), CountingToggleSet)
        assert install()  # again: still one level
        assert aiotoggles.ToggleSet is CountingToggleSet
    finally:
        aiotoggles.ToggleSet = original  # type: ignore[misc]
