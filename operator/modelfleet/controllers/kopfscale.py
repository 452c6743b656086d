"""kopf at scale: the index gate of a (re)started operator in constant time per object.

kopf holds back every handler until all its indexes are filled: each object seen in the watches' first
listings gets a toggle in one `ToggleSet(all)`, dropped once the object is indexed, and every object's
worker waits on the set. kopf 1.45's set computes its state by looking at every toggle and wakes every
waiter whenever a toggle is added or dropped: with N objects that is N wake-ups of N workers, each looking
at N toggles. An operator restarted with 10,000 Deployments (some 80,000 watched objects with the ones
they own) reconciled nothing for over 7 minutes at 100% CPU, inside that loop.

`install()` replaces kopf's `ToggleSet` with one that counts its toggles that are on, so its state is
known at once, and wakes its waiters only when that state changes (or when one of its toggles is turned,
which may be awaited on its own). The semantics stay kopf's: `all` is on with no toggle off (and when
empty), `any` is on with at least one toggle on. Any other function falls back to kopf's own class.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable

from kopf._cogs.aiokits import aiotoggles


class _CountedToggle(aiotoggles.Toggle):
    """A toggle of a `CountingToggleSet`: turning it keeps the set's count right."""

    def __init__(self, state: bool, *, name: str | None, owner: CountingToggleSet) -> None:
        super().__init__(state, name=name, condition=owner._condition)
        self._owner = owner

    async def turn_to(self, __state: bool) -> None:
        async with self._condition:
            state = bool(__state)
            if state != self._state and self in self._owner._toggles:
                self._owner._on += 1 if state else -1
            self._state = state
            self._condition.notify_all()  # rare (pausing), and someone may wait on this toggle alone


_KOPF_TOGGLE_SET = aiotoggles.ToggleSet


class CountingToggleSet(_KOPF_TOGGLE_SET):
    """kopf's `ToggleSet(all)` or `ToggleSet(any)`, with its state in O(1) and waiters woken only when
    the state changes. Another function: kopf's own behaviour."""

    def __init__(self, fn: Callable[[Iterable[bool]], bool]) -> None:
        super().__init__(fn)
        self._on = 0
        self._counted = fn is all or fn is any
        self._all = fn is all

    def _state(self) -> bool:
        if not self._counted:
            return super().is_on()
        if self._all:
            return self._on == len(self._toggles)
        return self._on > 0

    def is_on(self) -> bool:
        return self._state()

    async def wait_for(self, __state: bool) -> None:
        async with self._condition:
            await self._condition.wait_for(lambda: self._state() == bool(__state))

    async def make_toggle(self, __val: bool = False, *, name: str | None = None) -> aiotoggles.Toggle:
        if not self._counted:
            return await super().make_toggle(__val, name=name)
        toggle = _CountedToggle(bool(__val), name=name, owner=self)
        async with self._condition:
            before = self._state()
            self._toggles.add(toggle)
            self._on += 1 if toggle.is_on() else 0
            if self._state() != before:
                self._condition.notify_all()
        return toggle

    async def drop_toggle(self, toggle: aiotoggles.Toggle) -> None:
        await self.drop_toggles([toggle])

    async def drop_toggles(self, toggles: Iterable[aiotoggles.Toggle]) -> None:
        if not self._counted:
            await super().drop_toggles(toggles)
            return
        async with self._condition:
            before = self._state()
            for toggle in toggles:
                if toggle in self._toggles:
                    self._toggles.discard(toggle)
                    self._on -= 1 if toggle.is_on() else 0
            if self._state() != before:
                self._condition.notify_all()


def install() -> bool:
    """Make kopf build its toggle sets as `CountingToggleSet` (it looks the class up in `aiotoggles`
    each time it makes one). Idempotent. False, and kopf left as it is, when kopf's set keeps its toggles
    and condition elsewhere than this module expects (another kopf version)."""
    probe = _KOPF_TOGGLE_SET(all)
    if not isinstance(getattr(probe, "_toggles", None), set) or not isinstance(
        getattr(probe, "_condition", None), asyncio.Condition
    ):
        return False
    aiotoggles.ToggleSet = CountingToggleSet  # type: ignore[misc]
    return True


__all__ = ["CountingToggleSet", "install"]
