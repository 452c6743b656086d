"""`type: prometheus` metrics: a PromQL query against a real Prometheus' HTTP API (`/api/v1/query`)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import aiohttp

from modelfleet.analysis import ProviderError
from modelfleet.api.monitor import Metric, MetricType
from modelfleet.providers import Key, Reading, Target
from modelfleet.providers.http import Http

PROMETHEUS_TIMEOUT = 3.0


def prometheus_value(document: Any) -> float | ProviderError:
    """One number from a Prometheus /api/v1/query answer; NaN when it returns no series."""
    if not isinstance(document, dict):
        return ProviderError("prometheus: answer is not a JSON object")
    if document.get("status") != "success":
        return ProviderError(
            f"prometheus: {document.get('errorType', 'error')}: {document.get('error', '')}"[:512]
        )
    data = document.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    try:
        if kind == "scalar":
            return float(result[1])  # type: ignore[index]
        if kind == "vector":
            if not result:
                return math.nan
            if len(result) > 1:
                return ProviderError(f"prometheus: query returned {len(result)} series, expected one")
            return float(result[0]["value"][1])
    except (TypeError, ValueError, IndexError, KeyError):
        return ProviderError("prometheus: malformed answer")
    return ProviderError(f"prometheus: result type {kind} is not a number")


class Prometheus:
    """The provider of `type: prometheus` metrics; each metric names its own server."""

    def __init__(self, http: Http) -> None:
        self.http = http

    def handles(self, metric: Metric) -> bool:
        return metric.type == MetricType.PROMETHEUS and metric.prometheus is not None

    async def query(self, address: str, query: str) -> float | ProviderError:
        """The value of a PromQL query that returns one number; NaN when it returns no series."""
        url = f"{address.rstrip('/')}/api/v1/query"
        try:
            document = await self.http.get_json(url, {"query": query}, PROMETHEUS_TIMEOUT)
        except (aiohttp.ClientError, TimeoutError, ValueError) as error:
            return ProviderError(
                f"prometheus {address} unreachable: {str(error) or type(error).__name__}"[:512]
            )
        return prometheus_value(document)

    async def measure(self, target: Target, metrics: Sequence[Metric], now: datetime) -> Reading:
        queries = [m for m in metrics if m.prometheus is not None]
        answers = await asyncio.gather(
            *(self.query(m.prometheus.address, m.prometheus.query) for m in queries if m.prometheus)
        )
        return Reading(prometheus={m.name: answer for m, answer in zip(queries, answers, strict=True)})

    def forget(self, monitor: Key) -> None:
        return None

    async def close(self) -> None:
        await self.http.close()
