"""Faults injected on purpose, so that a test or a demo can make a bad version.

From the environment (`MODELFLEET_FAULT_ERROR_RATE=1.0`, `MODELFLEET_FAULT_LATENCY=300ms`,
`MODELFLEET_FAULT_SHIFT=1`) or the matching command-line flags, which win. They apply to inference
requests only: health and metadata stay truthful, so the pods stay Ready while answering badly.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from modelfleet.api.common import parse_duration

ENV_ERROR_RATE = "MODELFLEET_FAULT_ERROR_RATE"
ENV_LATENCY = "MODELFLEET_FAULT_LATENCY"
ENV_SHIFT = "MODELFLEET_FAULT_SHIFT"


@dataclass(frozen=True)
class Faults:
    error_rate: float = 0.0
    """Share of inference requests answered with 500."""
    latency: float = 0.0
    """Seconds added before every inference answer."""
    shift: int = 0
    """Added to every predicted class, modulo the number of classes: the predictions drift."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.error_rate <= 1.0:
            raise ValueError(f"fault error rate must be between 0 and 1, got {self.error_rate}")
        if self.latency < 0:
            raise ValueError(f"fault latency cannot be negative, got {self.latency}")

    @property
    def any(self) -> bool:
        return self.error_rate > 0 or self.latency > 0 or self.shift != 0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Faults:
        def number(name: str, kind: type[float] | type[int]) -> float:
            text = environ.get(name, "").strip()
            if not text:
                return 0
            try:
                return kind(text)
            except ValueError:
                raise ValueError(f"{name}={text!r} is not a valid {kind.__name__}") from None

        try:
            latency = parse_latency(environ.get(ENV_LATENCY, "").strip() or "0")
        except ValueError as error:
            raise ValueError(f"{ENV_LATENCY}: {error}") from None
        return cls(
            error_rate=number(ENV_ERROR_RATE, float), latency=latency, shift=int(number(ENV_SHIFT, int))
        )


def parse_latency(text: str) -> float:
    """Seconds from `300ms`, `0.3s` or a plain number of seconds (`0.3`)."""
    try:
        return parse_duration(float(text))
    except ValueError:
        return parse_duration(text)
