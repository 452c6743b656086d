"""Model servers shared by the process tests (each takes a second or two to start)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from routerkit import Process, model_server


@pytest.fixture(scope="session")
def stable_server() -> Iterator[Process]:
    server = model_server("1")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def failing_server() -> Iterator[Process]:
    server = model_server("2", env={"MODELFLEET_FAULT_ERROR_RATE": "1.0"})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def shifted_server() -> Iterator[Process]:
    server = model_server("3", env={"MODELFLEET_FAULT_SHIFT": "1"})
    yield server
    server.stop()


@pytest.fixture(scope="session")
def slow_server() -> Iterator[Process]:
    server = model_server("4", "--latency", "400ms")
    yield server
    server.stop()
