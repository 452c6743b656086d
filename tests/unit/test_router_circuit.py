"""The per-version circuit breaker: sliding window, open, half-open probe, close."""

from __future__ import annotations

import pytest

from modelfleet.router.circuit import CLOSED, HALF_OPEN, OPEN, CircuitBreaker


def breaker(**overrides: float) -> CircuitBreaker:
    settings = {"error_rate": 0.5, "min_requests": 10, "window": 10.0, "open_for": 30.0} | overrides
    return CircuitBreaker(
        settings["error_rate"], int(settings["min_requests"]), settings["window"], settings["open_for"]
    )


def test_given_enough_requests_when_half_fail_then_it_opens_and_refuses() -> None:
    circuit = breaker()
    for i in range(5):
        circuit.record(100.0 + i * 0.1, ok=True)
    for i in range(4):
        circuit.record(101.0 + i * 0.1, ok=False)
    assert circuit.state == CLOSED  # 4 of 9: below min_requests and below the rate
    circuit.record(102.0, ok=False)  # 5 of 10 = 0.5
    assert circuit.state == OPEN
    assert not circuit.allow(102.0)
    assert circuit.is_open(102.0)


def test_below_min_requests_it_stays_closed_even_when_everything_fails() -> None:
    circuit = breaker(min_requests=20)
    for i in range(19):
        circuit.record(100.0 + i * 0.01, ok=False)
    assert circuit.state == CLOSED
    assert circuit.allow(100.5)


def test_successes_alone_never_open_it() -> None:
    circuit = breaker(error_rate=0.01, min_requests=1)
    for i in range(1000):
        circuit.record(i * 0.01, ok=True)
    assert circuit.state == CLOSED


def test_failures_older_than_the_window_are_forgotten() -> None:
    circuit = breaker(min_requests=10, window=10.0)
    for i in range(9):
        circuit.record(100.0 + i * 0.1, ok=False)
    assert circuit.counts(101.0) == (9, 9)
    # 20 s later the old failures have slid out: one more failure is 1 of 1, under min_requests.
    circuit.record(121.0, ok=False)
    assert circuit.counts(121.0) == (1, 1)
    assert circuit.state == CLOSED


def test_after_open_for_one_probe_is_let_through_and_its_success_closes_it() -> None:
    circuit = breaker(min_requests=2, open_for=30.0)
    circuit.record(100.0, ok=False)
    circuit.record(100.1, ok=False)
    assert circuit.state == OPEN
    assert not circuit.allow(130.0)  # opened at 100.1, for 30 s
    assert circuit.allow(130.2)  # the probe
    assert circuit.state == HALF_OPEN
    assert not circuit.allow(130.3)  # only one probe at a time
    circuit.record(130.4, ok=True)
    assert circuit.state == CLOSED
    assert circuit.allow(130.5)
    assert circuit.counts(130.5) == (0, 0)  # a fresh window


def test_a_failed_probe_opens_it_again_for_open_for() -> None:
    circuit = breaker(min_requests=1, open_for=5.0)
    circuit.record(10.0, ok=False)
    assert circuit.allow(15.0)
    circuit.record(15.1, ok=False)
    assert circuit.state == OPEN
    assert not circuit.allow(20.0)
    assert circuit.allow(20.1)


def test_a_probe_that_never_reports_is_replaced_after_open_for() -> None:
    circuit = breaker(min_requests=1, open_for=5.0)
    circuit.record(10.0, ok=False)
    assert circuit.allow(15.0)
    assert not circuit.allow(19.0)
    assert circuit.allow(20.0)


def test_late_results_while_open_do_not_change_it() -> None:
    circuit = breaker(min_requests=1, open_for=5.0)
    circuit.record(10.0, ok=False)
    circuit.record(10.5, ok=True)  # a request sent before it opened
    assert circuit.state == OPEN
    assert not circuit.allow(11.0)


@pytest.mark.parametrize(
    "settings",
    [
        {"error_rate": 0.0},
        {"error_rate": 1.5},
        {"min_requests": 0},
        {"window": 0.0},
        {"open_for": -1.0},
    ],
)
def test_nonsense_settings_are_refused(settings: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="circuit breaker needs"):
        breaker(**settings)
