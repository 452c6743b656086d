"""Per-version circuit breaker over a sliding time window (pure: the clock is passed in).

Closed: requests flow and each outcome is recorded in one of `buckets` slices of the window. When a
failure brings the window to at least `min_requests` with a failure share of at least `error_rate`, the
circuit opens for `open_for` seconds: `allow` says no. Then one probe request is let through (half-open):
its success closes the circuit with a fresh window, its failure opens it again.
"""

from __future__ import annotations

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half-open"


class CircuitBreaker:
    __slots__ = (
        "_epochs",
        "_errors",
        "_probe_started",
        "_totals",
        "buckets",
        "error_rate",
        "min_requests",
        "open_for",
        "opened_until",
        "state",
        "width",
        "window",
    )

    def __init__(
        self, error_rate: float, min_requests: int, window: float, open_for: float, buckets: int = 10
    ) -> None:
        if not 0 < error_rate <= 1 or min_requests < 1 or window <= 0 or open_for <= 0 or buckets < 1:
            raise ValueError(
                "circuit breaker needs 0 < error_rate <= 1, min_requests >= 1, window and openFor > 0"
            )
        self.error_rate = error_rate
        self.min_requests = min_requests
        self.window = window
        self.open_for = open_for
        self.buckets = buckets
        self.width = window / buckets
        self.state = CLOSED
        self.opened_until = 0.0
        self._probe_started = 0.0
        self._epochs = [-1] * buckets
        self._totals = [0] * buckets
        self._errors = [0] * buckets

    def allow(self, now: float) -> bool:
        """Whether a request may go to this version now (in half-open, only the one probe may)."""
        state = self.state
        if state is CLOSED:
            return True
        if state is OPEN:
            if now < self.opened_until:
                return False
            self.state = HALF_OPEN
            self._probe_started = now
            return True
        # Half-open: one probe at a time; a probe that never reported back is replaced after open_for.
        if now - self._probe_started >= self.open_for:
            self._probe_started = now
            return True
        return False

    def record(self, now: float, ok: bool) -> None:
        """The outcome of one request sent to this version."""
        state = self.state
        if state is HALF_OPEN:
            if ok:
                self._close()
            else:
                self._open(now)
            return
        if state is OPEN:
            return  # a request sent before the circuit opened
        epoch = int(now / self.width)
        slot = epoch % self.buckets
        if self._epochs[slot] != epoch:
            self._epochs[slot] = epoch
            self._totals[slot] = 0
            self._errors[slot] = 0
        self._totals[slot] += 1
        if ok:
            return
        self._errors[slot] += 1
        total, errors = self.counts(now)
        if total >= self.min_requests and errors >= self.error_rate * total:
            self._open(now)

    def counts(self, now: float) -> tuple[int, int]:
        """(requests, failures) recorded within the window ending at `now`."""
        oldest = int(now / self.width) - self.buckets + 1
        total = errors = 0
        for slot in range(self.buckets):
            if self._epochs[slot] >= oldest:
                total += self._totals[slot]
                errors += self._errors[slot]
        return total, errors

    def is_open(self, now: float) -> bool:
        return self.state is OPEN and now < self.opened_until

    def _open(self, now: float) -> None:
        self.state = OPEN
        self.opened_until = now + self.open_for

    def _close(self) -> None:
        self.state = CLOSED
        self._epochs = [-1] * self.buckets
        self._totals = [0] * self.buckets
        self._errors = [0] * self.buckets
