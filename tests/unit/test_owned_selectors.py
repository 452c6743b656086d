"""Of the kinds modelfleet does not define, the operator lists and watches only its own objects: the API
server filters them (`settings.watching.label_selectors`), and no handler asks for an object the filter
would hide."""

from __future__ import annotations

from typing import Any

import kopf
from kopf._cogs.structs import references

from modelfleet.controllers import main

OURS = "modelfleet.io"


def handlers() -> list[Any]:
    main.load_handlers()
    registry = kopf.get_default_registry()
    out: list[Any] = []
    for part in (registry._indexing, registry._watching, registry._changing, registry._spawning):
        out.extend(part.get_all_handlers())
    return out


def resource(selector: references.Selector) -> references.Resource:
    """The resource a handler's selector names (group, version and plural are all given here)."""
    assert selector.group is not None
    assert selector.version is not None
    plural = selector.any_name
    assert isinstance(plural, str)
    return references.Resource(
        group=selector.group,
        version=selector.version,
        plural=plural,
        kind=plural.title(),
        singular=plural[:-1],
        namespaced=True,
    )


def test_every_kind_not_ours_is_watched_through_the_owned_selector_and_its_handlers_want_only_ours() -> None:
    settings = kopf.OperatorSettings()
    main.select_owned(settings)
    foreign = [h for h in handlers() if h.selector.group != OURS]
    assert foreign, "the operator watches apps/v1 Deployments, Services, pods... of its own"
    for handler in foreign:
        watched = resource(handler.selector)
        assert list(settings.watching.label_selectors.collect(watched)) == [main.OWNED_SELECTOR], handler
        assert (handler.labels or {}).get("app.kubernetes.io/managed-by") == "modelfleet", handler


def test_the_kinds_modelfleet_defines_are_watched_whole() -> None:
    settings = kopf.OperatorSettings()
    main.select_owned(settings)
    for plural in ("deployments", "models", "modelversions", "monitors", "runtimes", "clusterruntimes"):
        ours = references.Resource(
            group=OURS, version="v1alpha1", plural=plural, kind=plural, singular=plural, namespaced=True
        )
        assert list(settings.watching.label_selectors.collect(ours)) == []
