"""The e2e `fleet`: a Model, ModelVersions and a Deployment serving iris-v1 through its router, with the
operator running and a load generator sending real traffic to the router's ClusterIP Service."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from helpers import Fleet

from support.cluster import Cluster


@pytest.fixture
def fleet(cluster: Cluster, namespace: str, operator: Any) -> Iterator[Fleet]:
    fleet = Fleet(cluster, namespace, operator)
    try:
        yield fleet
    finally:
        if fleet.load is not None:
            fleet.load.stop()
        if fleet.watch is not None:
            fleet.watch.stop()
