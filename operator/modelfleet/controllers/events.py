"""Kubernetes Events about modelfleet objects: the one helper every controller posts through.

    from modelfleet.controllers import events
    events.post(body, "Warning", "ImageNotAllowed", "image docker.io/x:1 is not in allowedImages")
    events.post_all(body, decision.of_type(rollout.Event))   # anything with .type, .reason, .message

Events are queued and posted in the background by kopf (in order per object, retried on API
errors), so posting never blocks a handler and never raises for the API's sake. It must run inside
the operator: in a handler, or in a thread a handler started.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal, Protocol, cast

import kopf

from modelfleet.api.common import Resource

EventType = Literal["Normal", "Warning"]

#: The Kubernetes convention: a CamelCase word, e.g. ImageNotAllowed, RolloutPromoted.
REASON_RE = re.compile(r"^[A-Z][A-Za-z0-9]{0,127}$")
#: What kopf and the API server accept as an Event message; longer ones are cut.
MESSAGE_LIMIT = 1024

logger = logging.getLogger(__name__)


class EventLike(Protocol):
    """Anything that describes an Event, e.g. `modelfleet.rollout.Event` or `modelfleet.registry.Notice`."""

    @property
    def type(self) -> str: ...
    @property
    def reason(self) -> str: ...
    @property
    def message(self) -> str: ...


def reference(obj: Mapping[str, Any] | Resource[Any, Any]) -> dict[str, Any]:
    """The parts of an object an Event refers to: apiVersion, kind, name, namespace, uid."""
    if isinstance(obj, Resource):
        meta = obj.metadata
        api_version, kind, name, namespace, uid = (
            obj.api_version,
            obj.kind,
            meta.name,
            meta.namespace,
            meta.uid,
        )
    else:
        metadata = obj.get("metadata") or {}
        api_version, kind = obj.get("apiVersion", ""), obj.get("kind", "")
        name, namespace, uid = (
            metadata.get("name", ""),
            metadata.get("namespace", ""),
            metadata.get("uid", ""),
        )
    if not (api_version and kind and name):
        raise ValueError(
            f"an Event needs apiVersion, kind and metadata.name of its object, got {kind}/{name}"
        )
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {k: v for k, v in (("name", name), ("namespace", namespace), ("uid", uid)) if v},
    }


Send = Callable[..., None]
"""What hands an Event over: `kopf.event(ref, type=..., reason=..., message=...)` unless told."""


def post(
    obj: Mapping[str, Any] | Resource[Any, Any],
    type: EventType,
    reason: str,
    message: str,
    send: Send | None = None,
) -> None:
    """Post one Event about `obj` (a body as read from the API, or a modelfleet.api resource).

    `reason` must be CamelCase; `message` is cut to 1024 characters. A bad type or reason is a bug in
    the caller and raises ValueError.
    """
    if type not in ("Normal", "Warning"):
        raise ValueError(f"event type must be Normal or Warning, not {type!r}")
    if not REASON_RE.match(reason):
        raise ValueError(f"event reason must be a CamelCase word, not {reason!r}")
    text = " ".join(message.split())
    if len(text) > MESSAGE_LIMIT:
        text = text[: MESSAGE_LIMIT - 3] + "..."
    ref = reference(obj)
    try:
        (send if send is not None else kopf.event)(
            cast(kopf.Body, ref), type=type, reason=reason, message=text
        )
    except LookupError:  # no operator context: a unit test or a script
        logger.warning("event not posted (no operator running): %s %s: %s", type, reason, text)
        return
    name = f"{ref['kind']} {ref['metadata'].get('namespace', '')}/{ref['metadata']['name']}"
    logger.log(logging.WARNING if type == "Warning" else logging.INFO, "%s: %s: %s", name, reason, text)


def post_all(
    obj: Mapping[str, Any] | Resource[Any, Any], items: Iterable[EventLike], send: Send | None = None
) -> None:
    """Post each of `items` about `obj`, in order."""
    for item in items:
        if item.type not in ("Normal", "Warning"):
            raise ValueError(f"event type must be Normal or Warning, not {item.type!r}")
        post(obj, "Warning" if item.type == "Warning" else "Normal", item.reason, item.message, send)
