"""The operator's key for the routers' admin tokens: made once by the first operator that finds none, read
by every later one (a restart, the next leader, the loser of a race), kept for the process; while it
cannot be had the operator asks again at most every 30 s and says why, without the key."""

from __future__ import annotations

import base64
import logging
from typing import Any

import pytest

from modelfleet.controllers import kube
from modelfleet.controllers.adminkey import AdminKey

Obj = dict[str, Any]
MADE = bytes(range(7, 39))


class Secrets:
    """The Secrets of the operator's namespace, as the API server answers get and create."""

    def __init__(self, *existing: Obj) -> None:
        self.objects = {obj["metadata"]["name"]: obj for obj in existing}
        self.calls: list[str] = []
        self.refuse: int | None = None
        self.race: Obj | None = None

    def get(self, api_version: str, kind: str, namespace: str, name: str) -> Obj | None:
        assert (api_version, kind, namespace) == ("v1", "Secret", "modelfleet-system")
        self.calls.append(f"get {name}")
        if self.refuse:
            raise kube.ApiError(self.refuse, "secrets is forbidden")
        return self.objects.get(name)

    def create(self, manifest: Obj) -> bool:
        self.calls.append(f"create {manifest['metadata']['name']}")
        if self.race is not None:  # another operator made it between our get and our create
            self.objects[manifest["metadata"]["name"]] = self.race
            return False
        self.objects[manifest["metadata"]["name"]] = manifest
        return True


def secret(key: bytes | str) -> Obj:
    data = key if isinstance(key, str) else base64.b64encode(key).decode()
    return {"metadata": {"name": "modelfleet-router-admin-key"}, "data": {"key": data}}


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def admin_key(store: Secrets, clock: Clock | None = None) -> AdminKey:
    return AdminKey(
        "modelfleet-system",
        get=store.get,
        create=store.create,
        clock=clock or Clock(),
        random=lambda n: MADE[:n],
    )


def test_the_first_operator_makes_the_key_and_keeps_it() -> None:
    store = Secrets()
    key = admin_key(store)

    assert key() == MADE
    assert key() == MADE
    assert store.calls == ["get modelfleet-router-admin-key", "create modelfleet-router-admin-key"]
    made = store.objects["modelfleet-router-admin-key"]
    assert base64.b64decode(made["data"]["key"]) == MADE
    assert made["type"] == "Opaque"
    assert made["metadata"]["namespace"] == "modelfleet-system"
    assert made["metadata"]["labels"]["app.kubernetes.io/component"] == "router-admin-key"
    assert "ownerReferences" not in made["metadata"]  # it outlives releases: uninstalling keeps tokens


def test_a_later_operator_reads_the_key_and_makes_none() -> None:
    existing = bytes(range(200, 240))
    store = Secrets(secret(existing))

    assert admin_key(store)() == existing
    assert store.calls == ["get modelfleet-router-admin-key"]


def test_the_loser_of_a_race_takes_the_winners_key() -> None:
    store = Secrets()
    winner = bytes(range(50, 82))
    store.race = secret(winner)

    assert admin_key(store)() == winner
    assert store.calls == [
        "get modelfleet-router-admin-key",
        "create modelfleet-router-admin-key",
        "get modelfleet-router-admin-key",
    ]


@pytest.mark.parametrize("data", ["not base64!", base64.b64encode(b"short").decode(), ""])
def test_a_key_that_is_not_32_bytes_is_refused_and_never_replaced(
    data: str, caplog: pytest.LogCaptureFixture
) -> None:
    store = Secrets(secret(data))

    with caplog.at_level(logging.WARNING, logger="modelfleet.adminkey"):
        assert admin_key(store)() is None

    assert "create modelfleet-router-admin-key" not in store.calls
    (message,) = [r.getMessage() for r in caplog.records]
    assert (
        "its data.key is not 32 bytes or more; delete the Secret and the operator makes a new key" in message
    )


def test_while_the_key_cannot_be_had_it_is_asked_for_again_every_30_seconds(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Secrets(secret(MADE))
    store.refuse = 403  # the chart's Role for the release namespace is missing
    clock = Clock()
    key = admin_key(store, clock)

    with caplog.at_level(logging.WARNING, logger="modelfleet.adminkey"):
        assert key() is None
        clock.now = 29.0
        assert key() is None
    assert store.calls == ["get modelfleet-router-admin-key"]  # not asked again before 30 s
    assert "the operator may not get or create it (the chart's RBAC for the release namespace)" in (
        caplog.records[0].getMessage()
    )
    assert base64.b64encode(MADE).decode() not in caplog.text

    store.refuse = None
    clock.now = 30.0
    assert key() == MADE
    assert key.loaded == MADE


def test_the_secret_is_named_by_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MODELFLEET_ROUTER_ADMIN_KEY_SECRET", "mf-modelfleet-router-admin-key")
    assert AdminKey.from_environment("ops").name == "mf-modelfleet-router-admin-key"
    monkeypatch.delenv("MODELFLEET_ROUTER_ADMIN_KEY_SECRET")
    assert (AdminKey.from_environment("ops").namespace, AdminKey.from_environment("ops").name) == (
        "ops",
        "modelfleet-router-admin-key",
    )
