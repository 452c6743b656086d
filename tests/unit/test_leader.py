"""Leader election: the timing rules, and the elector's loop against an in-memory Lease."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from modelfleet.controllers.leader import (
    EXIT_LEADERSHIP_LOST,
    LeaderElector,
    LeadershipLost,
    LeaseConflict,
    LeaseRecord,
    Observation,
    Timing,
    claim,
    may_acquire,
    micro_time,
    observe,
    pod_of,
    released,
    renewal_overdue,
    run_as_leader,
)

T = Timing(lease_duration=15, renew_deadline=10, retry_period=2)


def held_by(holder: str, renew_time: str = "t0", duration: int = 15) -> LeaseRecord:
    return LeaseRecord(
        holder=holder, lease_duration_seconds=duration, acquire_time="t0", renew_time=renew_time
    )


# ---- timing rules --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("lease", "deadline", "retry", "message"),
    [
        (10, 10, 2, "lease duration (10s) must be longer than the renew deadline (10s)"),
        (15, 2, 2, "renew deadline (2s) must be longer than the retry period (2s)"),
        (15, 10, 0, "retry period must be positive"),
    ],
)
def test_timing_refuses_settings_that_allow_two_leaders(
    lease: float, deadline: float, retry: float, message: str
) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Timing(lease_duration=lease, renew_deadline=deadline, retry_period=retry)


def test_observation_clock_restarts_only_when_the_record_changes() -> None:
    first = observe(None, held_by("a"), now=100)
    same = observe(first, held_by("a"), now=105)
    renewed = observe(same, held_by("a", renew_time="t1"), now=107)
    assert same.observed_at == 100
    assert renewed.observed_at == 107


def test_a_lease_held_by_another_is_taken_only_after_its_duration_without_change() -> None:
    seen = Observation(held_by("a", duration=15), observed_at=100)
    assert not may_acquire(seen, "b", now=114.9, timing=T)
    assert may_acquire(seen, "b", now=115, timing=T)


def test_the_record_duration_wins_over_the_candidate_timing() -> None:
    seen = Observation(held_by("a", duration=60), observed_at=0)
    assert not may_acquire(seen, "b", now=30, timing=T)
    assert may_acquire(seen, "b", now=60, timing=T)


def test_a_free_lease_or_our_own_may_be_written_at_once() -> None:
    assert may_acquire(None, "b", now=0, timing=T)
    assert may_acquire(Observation(held_by(""), observed_at=0), "b", now=0, timing=T)
    assert may_acquire(Observation(held_by("b"), observed_at=0), "b", now=0, timing=T)


def test_an_earlier_container_of_the_same_pod_hands_its_lease_on_at_once() -> None:
    seen = Observation(held_by("op-7d9f.1234_aaaa1111"), observed_at=100)
    assert pod_of("op-7d9f.1234_bbbb2222") == "op-7d9f.1234"
    assert may_acquire(seen, "op-7d9f.1234_bbbb2222", now=100, timing=T, pod="op-7d9f.1234")
    # another pod, or a process outside a pod, still waits the lease out
    assert not may_acquire(seen, "op-55c1.9876_cccc3333", now=100, timing=T, pod="op-55c1.9876")
    assert not may_acquire(seen, "op-7d9f.1234_bbbb2222", now=100, timing=T)


def test_claim_renews_our_own_record_and_counts_takeovers() -> None:
    renewal = claim(held_by("a"), "a", "t9", T)
    assert (renewal.holder, renewal.acquire_time, renewal.renew_time) == ("a", "t0", "t9")
    assert renewal.transitions == 0
    takeover = claim(held_by("a"), "b", "t9", T)
    assert (takeover.holder, takeover.acquire_time, takeover.transitions) == ("b", "t9", 1)
    first = claim(None, "b", "t9", T)
    assert (first.transitions, first.lease_duration_seconds) == (0, 15)
    after_release = claim(released(held_by("a"), "t5"), "b", "t9", T)
    assert (after_release.holder, after_release.transitions) == ("b", 1)


def test_renewal_is_overdue_at_the_renew_deadline() -> None:
    assert not renewal_overdue(last_renewed=100, now=109.9, timing=T)
    assert renewal_overdue(last_renewed=100, now=110, timing=T)


def test_micro_time_has_six_fraction_digits_and_z() -> None:
    assert micro_time(datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)) == "2024-05-01T12:00:00.000000Z"


def test_record_round_trips_through_the_lease_spec() -> None:
    record = LeaseRecord("a", 15, "2024-05-01T12:00:00.000000Z", "2024-05-01T12:00:02.000000Z", 3)
    assert LeaseRecord.from_spec(record.to_spec()) == record
    assert LeaseRecord.from_spec(None) == LeaseRecord()


# ---- the elector against an in-memory Lease -------------------------------------------------------------


class MemoryLease:
    """One Lease with resourceVersion checks, like the API server; `failing` makes every call raise."""

    def __init__(self) -> None:
        self.record: LeaseRecord | None = None
        self.version = 0
        self.failing = False
        self.writes: list[LeaseRecord] = []

    def _check(self) -> None:
        if self.failing:
            raise ConnectionError("connection refused")

    def get(self) -> tuple[LeaseRecord, str] | None:
        self._check()
        return None if self.record is None else (self.record, str(self.version))

    def create(self, record: LeaseRecord) -> str:
        self._check()
        if self.record is not None:
            raise LeaseConflict("already exists")
        return self._store(record)

    def update(self, record: LeaseRecord, resource_version: str) -> str:
        self._check()
        if self.record is None or resource_version != str(self.version):
            raise LeaseConflict("conflict")
        return self._store(record)

    def _store(self, record: LeaseRecord) -> str:
        self.record = record
        self.version += 1
        self.writes.append(record)
        return str(self.version)


class FakeTime:
    """A monotonic clock that advances only when the elector sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.now += seconds
        await asyncio.sleep(0)


def elector(lease: MemoryLease, identity: str, time: FakeTime) -> LeaderElector:
    return LeaderElector(
        lease, identity, T, clock=time.clock, wall=lambda: f"wall-{time.now:.0f}", sleep=time.sleep
    )


def test_first_candidate_creates_the_lease_and_leads() -> None:
    lease, time = MemoryLease(), FakeTime()
    a = elector(lease, "a", time)
    asyncio.run(a.acquire())
    assert a.leading
    assert lease.record is not None
    assert lease.record.holder == "a"


def test_a_lease_that_comes_with_the_installation_is_waited_for_never_created() -> None:
    """The chart makes the Lease in the same release as the operator's Deployment, and the pod may start
    first: with create=False the candidate waits until the Lease exists, then takes it."""
    lease, time = MemoryLease(), FakeTime()
    candidate = LeaderElector(
        lease, "a", T, clock=time.clock, wall=lambda: f"wall-{time.now:.0f}", sleep=time.sleep, create=False
    )

    async def scenario() -> None:
        for _ in range(3):
            assert not await candidate.try_acquire_or_renew()
        assert lease.writes == []  # nothing created
        lease.record = LeaseRecord(holder="")  # as the release renders it: empty
        await candidate.acquire()

    asyncio.run(scenario())
    assert candidate.leading
    assert lease.record is not None
    assert lease.record.holder == "a"


def test_a_second_candidate_waits_while_the_leader_renews() -> None:
    lease, time = MemoryLease(), FakeTime()
    a, b = elector(lease, "a", time), elector(lease, "b", time)

    async def scenario() -> None:
        await a.acquire()
        for _ in range(20):  # 40 s of simulated time: a renews every 2 s, b keeps seeing changes
            assert await a.try_acquire_or_renew()
            assert not await b.try_acquire_or_renew()
            time.now += T.retry_period

    asyncio.run(scenario())
    assert lease.record is not None
    assert lease.record.holder == "a"
    assert not b.leading


def test_a_standby_takes_over_a_lease_that_stopped_being_renewed() -> None:
    lease, time = MemoryLease(), FakeTime()
    a, b = elector(lease, "a", time), elector(lease, "b", time)

    async def scenario() -> float:
        await a.acquire()
        assert not await b.try_acquire_or_renew()  # b sees a's record now
        started = time.now
        await b.acquire()  # a never renews again
        return time.now - started

    waited = asyncio.run(scenario())
    assert T.lease_duration <= waited <= T.lease_duration + T.retry_period
    assert lease.record is not None
    assert (lease.record.holder, lease.record.transitions) == ("b", 1)


def test_a_restarted_container_takes_its_own_pods_lease_without_waiting() -> None:
    lease, time = MemoryLease(), FakeTime()
    first = LeaderElector(lease, "op-1.uid_aaaa", T, clock=time.clock, sleep=time.sleep, same_pod=True)
    restarted = LeaderElector(lease, "op-1.uid_bbbb", T, clock=time.clock, sleep=time.sleep, same_pod=True)
    other_pod = LeaderElector(lease, "op-2.uid_cccc", T, clock=time.clock, sleep=time.sleep, same_pod=True)

    async def scenario() -> float:
        await first.acquire()  # then the container is killed: it never renews nor releases
        assert not await other_pod.try_acquire_or_renew()
        started = time.now
        await restarted.acquire()
        return time.now - started

    assert asyncio.run(scenario()) == 0
    assert lease.record is not None
    assert lease.record.holder == "op-1.uid_bbbb"


def test_the_leader_stops_when_another_holder_appears() -> None:
    lease, time = MemoryLease(), FakeTime()
    a = elector(lease, "a", time)

    async def scenario() -> None:
        await a.acquire()
        assert lease.record is not None
        lease._store(claim(lease.record, "intruder", "w", T))
        await a.hold()

    with pytest.raises(LeadershipLost, match="held by intruder"):
        asyncio.run(scenario())
    assert not a.leading


def test_the_leader_stops_at_the_renew_deadline_when_the_api_is_unreachable() -> None:
    lease, time = MemoryLease(), FakeTime()
    a = elector(lease, "a", time)

    async def scenario() -> float:
        await a.acquire()
        lease.failing = True
        started = time.now
        with pytest.raises(LeadershipLost, match="renew deadline"):
            await a.hold()
        return time.now - started

    stopped_after = asyncio.run(scenario())
    assert T.renew_deadline <= stopped_after < T.lease_duration


def test_a_short_api_outage_is_survived() -> None:
    lease, time = MemoryLease(), FakeTime()
    a = elector(lease, "a", time)

    async def scenario() -> None:
        await a.acquire()
        lease.failing = True
        for _ in range(3):  # 6 s without the API server: below the 10 s deadline
            await time.sleep(T.retry_period)
            assert not await a.try_acquire_or_renew()
        lease.failing = False
        assert await a.try_acquire_or_renew()

    asyncio.run(scenario())
    assert a.leading


def test_release_leaves_the_lease_free_for_the_next_candidate() -> None:
    lease, time = MemoryLease(), FakeTime()
    a, b = elector(lease, "a", time), elector(lease, "b", time)

    async def scenario() -> None:
        await a.acquire()
        assert not await b.try_acquire_or_renew()
        a.release()
        assert await b.try_acquire_or_renew()  # at once, without waiting for the lease duration

    asyncio.run(scenario())
    assert lease.record is not None
    assert lease.record.holder == "b"
    assert not a.leading


def test_run_as_leader_releases_after_a_clean_stop() -> None:
    lease, time = MemoryLease(), FakeTime()
    a = elector(lease, "a", time)
    ran: list[bool] = []

    async def operator(stop_flag: asyncio.Event) -> None:
        ran.append(lease.record is not None and lease.record.holder == "a")

    code = asyncio.run(run_as_leader(a, operator))
    assert code == 0
    assert ran == [True]  # the operator ran only once the Lease was held
    assert lease.record is not None
    assert lease.record.holder == ""


def test_run_as_leader_cancels_the_operator_and_exits_non_zero_when_the_lease_is_lost() -> None:
    lease, time = MemoryLease(), FakeTime()
    a = elector(lease, "a", time)
    cancelled: list[bool] = []

    async def operator(stop_flag: asyncio.Event) -> None:
        assert lease.record is not None
        lease._store(claim(lease.record, "intruder", "w", T))
        try:
            await asyncio.Event().wait()  # runs until cancelled
        except asyncio.CancelledError:
            cancelled.append(stop_flag.is_set())
            raise

    code = asyncio.run(run_as_leader(a, operator))
    assert code == EXIT_LEADERSHIP_LOST
    assert cancelled == [True]
    assert lease.record is not None
    assert lease.record.holder == "intruder"  # a lost Lease is not released over the new holder
